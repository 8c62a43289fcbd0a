"""Where a device is and what runs there: the target the registry stores, resolved through
``~/.ssh/config``; the rule that the work dir stays inside the login's home; what to install when the
device's Python lacks numpy or onnxruntime.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko

from device_agents.errors import AgentError, DeviceError
from device_agents.protocol import RunnerResult

if TYPE_CHECKING:
    from device_agents.ssh._agent import SSHAgent

DEFAULT_WORKDIR = ".nas-agent"  # relative to the login's home directory
DEFAULT_PYTHON = "python3"


@dataclass
class SSHTarget:
    """Where a device is and how to run things on it: what the registry stores (no secrets)."""

    host: str
    port: int | None = None  # None: from ~/.ssh/config, else 22
    user: str | None = None  # None: from ~/.ssh/config, else the local user name
    key: str | None = None  # private key file; None: ~/.ssh/config, ssh-agent, default keys
    python: str = DEFAULT_PYTHON
    workdir: str = DEFAULT_WORKDIR
    threads: int | None = None  # None: the measurement settings decide

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SSHTarget:
        """The target from its registry form; fields this version does not know are ignored."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass
class Resolved:
    """A target with ``~/.ssh/config`` applied: what a connection actually uses."""

    hostname: str
    port: int
    user: str
    keys: list[str]
    proxy: str | None
    hostkey_alias: str | None

    @property
    def address(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def resolve(target: SSHTarget) -> Resolved:
    """Apply ``~/.ssh/config`` (HostName, Port, User, IdentityFile, ProxyCommand, HostKeyAlias), as
    ``ssh`` would, so an alias that works there works here; options given explicitly win."""
    entry: dict[str, Any] = {}
    config_path = Path(os.path.expanduser("~/.ssh/config"))
    if config_path.is_file():
        try:
            entry = paramiko.SSHConfig.from_path(str(config_path)).lookup(target.host)
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise AgentError(f"cannot read {config_path}: {exc}") from exc
    keys = (
        [target.key]
        if target.key
        else [k for k in entry.get("identityfile", []) if Path(k).expanduser().exists()]
    )
    keys = [str(Path(k).expanduser()) for k in keys]
    for key in keys:
        if not Path(key).is_file():
            raise AgentError(f"SSH key {key} does not exist")
    return Resolved(
        hostname=entry.get("hostname", target.host),
        port=int(target.port or entry.get("port", 22)),
        user=target.user or entry.get("user") or getpass.getuser(),
        keys=keys,
        proxy=entry.get("proxycommand") if str(entry.get("proxycommand", "none")).lower() != "none" else None,
        hostkey_alias=entry.get("hostkeyalias"),
    )


# --- the work dir -----------------------------------------------------------------------------------


def check_workdir(workdir: str) -> str:
    """A --workdir that stays inside the login's home: relative (or ``~/...``), without ``..``, so
    that nothing the agent writes or cleans can reach outside it."""
    relative = workdir[2:] if workdir.startswith("~/") else workdir
    if not relative.strip() or relative in ("~", ".") or ".." in relative.split("/"):
        raise AgentError(f"--workdir {workdir!r}: give a folder inside the login's home, without '..'")
    return workdir


def absolute(path: str, home: str) -> str:
    """``path`` on the device made absolute against the login's ``home`` (``~`` and ``~/...`` too):
    commands reach the device quoted, so the shell would not expand ``~`` there."""
    if path in ("~", ""):
        return home
    if path.startswith("~/"):
        path = path[2:]
    return posixpath.normpath(path if path.startswith("/") else posixpath.join(home, path))


def inside(path: str, home: str) -> bool:
    """Whether ``path`` is a folder strictly inside ``home`` (both absolute and normalised)."""
    return path != home and path.startswith(home.rstrip("/") + "/")


# --- what the device must have ----------------------------------------------------------------------


def install_hint(python: str, what: str = "onnxruntime numpy") -> str:
    """How to get ``what`` onto the device for ``python``: the next step a failed check tells the user."""
    return (
        f"install it on the device with '{python} -m pip install {what}' (in a venv on Raspberry Pi OS / "
        "Debian; see docs/agents.md for Termux), or pass --python with an interpreter that has it"
    )


def require_runtime(agent: SSHAgent, probe: RunnerResult) -> None:
    """A DeviceError saying what to install when the device lacks numpy or onnxruntime: registering a
    device that cannot measure would only fail later, in the middle of a study."""
    fingerprint = probe.fingerprint
    python = agent.target.python
    if not fingerprint.get("onnxruntime"):
        raise DeviceError(
            f"agent {agent.name}: onnxruntime is not installed for {python} on the device: "
            + install_hint(python),
            "onnxruntime_missing",
        )
    if not fingerprint.get("numpy"):
        raise DeviceError(
            f"agent {agent.name}: numpy is not installed for {python} on the device: "
            + install_hint(python, "numpy"),
            "numpy_missing",
        )
