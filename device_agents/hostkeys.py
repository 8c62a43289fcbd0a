"""Host-key policy for SSH agents: what OpenSSH's ``StrictHostKeyChecking=yes`` does, plus an
explicit way to trust a new device.

Keys are looked up in the user's ``~/.ssh/known_hosts`` and in the tool's own ``known_hosts`` under
``nas_home()`` (the only file this module writes). A known key that matches is accepted; a key that
differs from a known one is always refused; an unknown key is refused with its SHA256 fingerprint
unless the user passed that exact fingerprint (``--trust-host-key SHA256:...``) or asked to accept
whatever is presented (``--trust-new-host-key``). Never ``paramiko.AutoAddPolicy``.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from device_agents._home import nas_home
from device_agents.errors import AgentError


class HostKeyError(AgentError):
    """The device's host key is unknown or changed; connecting would not be safe."""


class HostKeyUnknown(HostKeyError):
    def __init__(self, message: str, fingerprint: str) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint


class HostKeyChanged(HostKeyError):
    pass


def key_fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint: ``SHA256:`` + unpadded base64 of the key blob's digest."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def normalize_fingerprint(text: str) -> str:
    """Accept ``SHA256:abc``, ``sha256:abc=`` or a bare ``abc`` (as ``ssh-keygen -lf`` prints it)."""
    text = text.strip()
    if text.lower().startswith("sha256:"):
        text = text[7:]
    return "SHA256:" + text.rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    """The name a key is filed under in known_hosts (OpenSSH's and paramiko's convention)."""
    return host if port == 22 else f"[{host}]:{port}"


def user_known_hosts() -> Path:
    return Path(os.path.expanduser("~/.ssh/known_hosts"))


def tool_known_hosts() -> Path:
    return nas_home() / "known_hosts"


def _load(path: Path) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    if path.is_file():
        try:
            keys.load(str(path))
        except (OSError, paramiko.SSHException) as exc:
            raise HostKeyError(f"cannot read known-hosts file {path}: {exc}") from exc
    return keys


def known_keys(name: str) -> list[tuple[paramiko.PKey, Path]]:
    """Every key recorded for ``name`` (hashed entries included), with the file it came from."""
    found = []
    for path in (user_known_hosts(), tool_known_hosts()):
        entry = _load(path).lookup(name)
        if entry:
            found.extend((key, path) for key in entry.values())
    return found


def remember(name: str, key: paramiko.PKey) -> Path:
    """Append ``name key`` to the tool's known_hosts (never the user's own file)."""
    path = tool_known_hosts()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(line)
    return path


def _warn(message: str) -> None:
    sys.stderr.write(message + "\n")


@dataclass
class TrustPolicy:
    """How to treat a host key not found in any known_hosts file."""

    fingerprint: str | None = None  # --trust-host-key SHA256:...
    trust_new: bool = False  # --trust-new-host-key
    warn: Callable[[str], None] = _warn


class _Policy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko when no key of the presented type is known for the host."""

    def __init__(self, name: str, trust: TrustPolicy) -> None:
        self.name = name
        self.trust = trust

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        presented = key_fingerprint(key)
        known = known_keys(self.name)
        if known:  # the host is known, but not with this key (another type): a changed key
            raise changed_error(self.name, key, known)
        if self.trust.fingerprint:
            wanted = normalize_fingerprint(self.trust.fingerprint)
            if wanted != presented:
                raise HostKeyUnknown(
                    f"host {self.name} presents host key {presented}, not the {wanted} given to "
                    "--trust-host-key; refusing to connect (check the fingerprint on the device with "
                    "'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub')",
                    presented,
                )
        elif self.trust.trust_new:
            self.trust.warn(
                f"WARNING: trusting the NEW host key {presented} ({key.get_name()}) of {self.name} without "
                "verification (--trust-new-host-key); it is now recorded and any change will be refused"
            )
        else:
            raise HostKeyUnknown(
                f"unknown host key for {self.name}: {presented} ({key.get_name()}); if that is the "
                "device's key (on the device: 'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub'), "
                f"run again with --trust-host-key {presented}",
                presented,
            )
        remember(self.name, key)


def changed_error(name: str, key: paramiko.PKey, known: list[tuple[paramiko.PKey, Path]]) -> HostKeyChanged:
    old = ", ".join(sorted({f"{k.get_name()} {key_fingerprint(k)} in {path}" for k, path in known}))
    files = sorted({str(path) for _, path in known})
    fixes = "; ".join(f"ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(f)}" for f in files)
    return HostKeyChanged(
        f"HOST KEY CHANGED for {name}: it presents {key.get_name()} {key_fingerprint(key)} but we know "
        f"{old}. Someone may be intercepting the connection; refusing to connect. If the device was "
        f"reinstalled and you trust the new key, delete the old one ({fixes}) and add the agent again"
    )


def prepare(
    client: paramiko.SSHClient, host: str, port: int, trust: TrustPolicy, alias: str | None = None
) -> str:
    """Load the known keys for ``host:port`` (or ``alias``, ssh_config's HostKeyAlias) into ``client``
    and install the policy; returns the name keys are filed under.

    Loading them makes paramiko ask the server for a key type we know (as OpenSSH does) and raise
    ``BadHostKeyException`` on a mismatch; ``describe_bad_key`` turns that into a clear message.
    """
    name = alias or known_hosts_name(host, port)
    store = client.get_host_keys()
    for key, _ in known_keys(name):
        store.add(known_hosts_name(host, port), key.get_name(), key)
    client.set_missing_host_key_policy(_Policy(name, trust))
    return name


def describe_bad_key(name: str, exc: paramiko.BadHostKeyException) -> HostKeyChanged:
    return changed_error(name, exc.key, known_keys(name) or [(exc.expected_key, tool_known_hosts())])
