"""The SSH agent: measure on a board or phone reached over SSH (paramiko).

One persistent connection per agent (TCP and SSH keep-alives), models uploaded once by SFTP under
their content hash and verified on the device by the runner (``--sha256``), the runner itself
deployed under its own hash. Every remote command is one ``shlex``-quoted argv with a timeout, and
nothing is written outside the agent's work dir. A dropped connection is re-established with
exponential backoff and the operation retried; a device still unreachable ``down_timeout`` seconds
after the first failure raises ``AgentUnreachable`` with the last reason.

Work dir layout on the device (always a folder inside the login's home)::

    WORKDIR/runner-<sha12>.py     the runner, one file per version
    WORKDIR/models/<sha256>.onnx  uploaded models: a cache of at most ``cache_mb`` MiB, the least
                                  recently used (the runner touches a model on each use) evicted first
    WORKDIR/device.lock           the runner's flock: one measurement at a time per device

Measurements go to one serving runner per connection (``runner.py --serve`` on one channel), which
forks a fresh child per measurement: Python and the numpy and onnxruntime imports, seconds on a
small board, are paid once per connection. A runner that overruns its timeout, or whose connection
dropped, is killed on the device with its whole process group (``runner.py --kill-run``), so it
never takes the device lock later; a server whose connection closed kills its child and exits. Partial
uploads (``*.part-*``) left by a killed client are removed once nothing has written them for a while.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import logging
import os
import posixpath
import secrets
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from device_agents import hostkeys
from device_agents.base import (
    DEFAULT_CACHE_MB,
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_LOCK_TIMEOUT,
    RUNNER_PATH,
    Agent,
    AgentError,
    AgentUnreachable,
    DeviceError,
    MeasureSettings,
    RunnerDeadline,
    RunnerResult,
    RunnerTimeout,
    file_sha256,
    parse_runner_output,
)
from device_agents.served import RequestOutput, one_request_at_a_time

DEFAULT_WORKDIR = ".nas-agent"  # relative to the login's home directory
DEFAULT_PYTHON = "python3"
STALE_PART_S = 600.0  # a partial upload nobody wrote for this long was left by a killed client
# paramiko logs each failed connection with its traceback; our own line per retry says enough
# (``nas -v`` configures logging and shows them).
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class AgentAuthError(AgentError):
    """The device refused our credentials; retrying would not help."""


class NotSSH(AgentUnreachable):
    """The port answered but does not speak SSH: a wrong --port, not an outage; never retried."""


class _ConnectionLost(Exception):
    """The connection failed or dropped; the operation may be retried after reconnecting."""


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
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass
class _Resolved:
    hostname: str
    port: int
    user: str
    keys: list[str]
    proxy: str | None
    hostkey_alias: str | None

    @property
    def address(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def resolve(target: SSHTarget) -> _Resolved:
    """Apply ``~/.ssh/config`` (HostName, Port, User, IdentityFile, ProxyCommand, HostKeyAlias);
    options given explicitly win."""
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
    return _Resolved(
        hostname=entry.get("hostname", target.host),
        port=int(target.port or entry.get("port", 22)),
        user=target.user or entry.get("user") or getpass.getuser(),
        keys=keys,
        proxy=entry.get("proxycommand") if str(entry.get("proxycommand", "none")).lower() != "none" else None,
        hostkey_alias=entry.get("hostkeyalias"),
    )


def install_hint(python: str, what: str = "onnxruntime numpy") -> str:
    return (
        f"install it on the device with '{python} -m pip install {what}' (in a venv on Raspberry Pi OS / "
        "Debian; see docs/agents.md for Termux), or pass --python with an interpreter that has it"
    )


class SSHAgent(Agent):
    """Measures on a device over one persistent SSH connection."""

    def __init__(
        self,
        name: str,
        target: SSHTarget,
        trust: hostkeys.TrustPolicy | None = None,
        connect_timeout: float = 10.0,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        down_timeout: float = 300.0,
        keepalive: float = 10.0,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        cache_mb: float = DEFAULT_CACHE_MB,
        on_contact: Callable[[str, str | None], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.target = target
        self.trust = trust or hostkeys.TrustPolicy()
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.down_timeout = down_timeout
        self.keepalive = keepalive
        self.lock_timeout = lock_timeout
        self.cache_mb = cache_mb
        self.on_contact = on_contact
        self.log = log or (lambda message: sys.stderr.write(message + "\n"))
        self._lock = threading.RLock()  # connection state and SFTP
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._resolved: _Resolved | None = None
        self._workdir: str | None = None
        self._python: str = target.python
        self._runner: str | None = None
        self._uploaded: set[str] = set()
        self._fingerprint: dict[str, Any] | None = None
        self._connected_once = False
        self._orphans: list[str] = []  # run ids of runners whose connection dropped mid-run
        self._server: _RemoteServer | None = None
        self._serve_lock = threading.Lock()  # one request at a time on the server's channel

    def __repr__(self) -> str:
        return f"SSHAgent({self.name!r}, {self.target.host!r})"

    # --- connection -----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        resolved = self._resolved or resolve(self.target)
        return resolved.address

    @property
    def workdir(self) -> str:
        self._ensure_connected()
        assert self._workdir is not None
        return self._workdir

    def _connect(self) -> None:
        resolved = self._resolved = resolve(self.target)
        client = paramiko.SSHClient()
        known_name = hostkeys.prepare(
            client, resolved.hostname, resolved.port, self.trust, resolved.hostkey_alias
        )
        try:
            sock = self._socket(resolved)
            client.connect(
                resolved.hostname,
                resolved.port,
                username=resolved.user,
                key_filename=resolved.keys or None,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
                allow_agent=True,
                look_for_keys=not resolved.keys,
                sock=sock,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise hostkeys.describe_bad_key(known_name, exc) from None
        except hostkeys.HostKeyError:
            client.close()
            raise
        except paramiko.PasswordRequiredException as exc:
            client.close()
            raise AgentAuthError(
                f"agent {self.name}: the SSH key {', '.join(resolved.keys)} is encrypted; "
                f"load it into ssh-agent (ssh-add) and try again ({exc})"
            ) from None
        except socket.gaierror as exc:
            client.close()
            raise AgentUnreachable(
                f"agent {self.name}: cannot resolve host name {resolved.hostname!r} ({exc.strerror or exc}); "
                "check --host or ~/.ssh/config"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            keys = ", ".join(resolved.keys) if resolved.keys else "ssh-agent and ~/.ssh/id_* keys"
            raise AgentAuthError(
                f"agent {self.name}: {resolved.address} refused our SSH key ({keys}): {exc}. Put the public "
                f"key in ~{resolved.user}/.ssh/authorized_keys on the device (ssh-copy-id) or pass --key PATH"
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            if not self._connected_once and _not_ssh(exc):  # later, a sshd restarting can look like this
                raise NotSSH(
                    f"agent {self.name}: {resolved.hostname}:{resolved.port} accepted the connection but does not "
                    f"speak SSH ({_describe(exc)}); check --port"
                ) from None
            raise _ConnectionLost(f"cannot connect to {resolved.address}: {_describe(exc)}") from None
        self._connected_once = True
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(max(1, int(self.keepalive)))
        self._client = client
        try:
            self._sftp = client.open_sftp()
            self._sftp.get_channel().settimeout(self.command_timeout)
            home = self._sftp.normalize(".")
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._disconnect()
            raise _ConnectionLost(f"SFTP to {resolved.address} failed: {_describe(exc)}") from None
        self._workdir = _absolute(self.target.workdir, home)
        if not _inside(self._workdir, home):
            self._disconnect()
            raise AgentError(
                f"agent {self.name}: work dir {self._workdir} is not inside the login's home {home}; "
                "give a --workdir relative to it"
            )
        # "~/venv/bin/python" would reach the device quoted, so expand it here.
        python = self.target.python
        self._python = _absolute(python, home) if python.startswith("~/") else python

    def _socket(self, resolved: _Resolved) -> Any:
        """A TCP socket with keep-alive and a user timeout, so a vanished device drops the connection
        within about a minute instead of the kernel's 15; or the ProxyCommand's pipe."""
        if resolved.proxy:
            return paramiko.ProxyCommand(resolved.proxy)
        sock = socket.create_connection((resolved.hostname, resolved.port), timeout=self.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(max(self.keepalive * 3, 30) * 1000)
            )
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 15)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
        return sock

    def _ensure_connected(self) -> None:
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            if transport is None or not transport.is_active():
                self._disconnect()
                self._connect()

    def _disconnect(self) -> None:
        with self._lock:
            for closable in (self._sftp, self._client):
                if closable is not None:
                    with contextlib.suppress(Exception):  # closing a dead connection may raise anything
                        closable.close()
            self._sftp = self._client = None
            self._runner = None
            self._server = None  # its channel went with the connection: the server sees EOF and exits
            self._uploaded.clear()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._disconnect()

    def _retrying(self, operation: Callable[[], Any]) -> tuple[Any, int]:
        """Run ``operation`` (re)connecting as needed; (result, attempts)."""
        attempts, delay, deadline, reason = 0, 0.5, None, ""
        while True:
            attempts += 1
            try:
                self._ensure_connected()
                result = operation()
                self._contact("ok", None)
                return result, attempts
            except _ConnectionLost as exc:
                self._disconnect()
                reason = str(exc)
                now = time.monotonic()
                deadline = deadline or now + self.down_timeout
                if now + delay > deadline:
                    message = (
                        f"agent {self.name}: device {self.address} unreachable for {self.down_timeout:.0f} s "
                        f"after {attempts} attempts; last error: {reason}"
                    )
                    self._contact("unreachable", reason)
                    raise AgentUnreachable(message) from None
                self.log(f"agent {self.name}: {reason}; reconnecting in {delay:.1f} s")
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
            except AgentError as exc:
                self._contact("error" if not isinstance(exc, AgentAuthError) else "auth", str(exc))
                raise

    def _contact(self, state: str, detail: str | None) -> None:
        if self.on_contact is not None:
            try:
                self.on_contact(state, detail)
            except Exception as exc:  # noqa: BLE001 - bookkeeping must never fail a measurement
                self.log(f"agent {self.name}: could not record its state: {exc}")

    # --- remote commands ------------------------------------------------------------------------

    def _exec(self, argv: list[str], deadline: RunnerDeadline) -> tuple[int, str, str]:
        """Run one quoted command; (exit status, stdout, stderr). -1: killed by a signal.
        Past the deadline, a RunnerTimeout (the remote process is left to the caller)."""
        client = self._client
        transport = client.get_transport() if client else None
        if transport is None or not transport.is_active():
            raise _ConnectionLost("the connection closed")
        out, err = bytearray(), bytearray()

        def take(chunk: bytes) -> bool:
            out.extend(chunk)
            deadline.seen(out)
            return False  # whole when the command ends

        try:
            channel = transport.open_session(timeout=self.connect_timeout)
            channel.exec_command(shlex.join(argv))
            channel.shutdown_write()
            try:
                _read_channel(channel, transport, self.address, deadline, take, err, poll=0.005)
            except RunnerTimeout:
                channel.close()
                raise RunnerTimeout(
                    f"agent {self.name}: '{shlex.join(argv)[:80]}' {deadline.describe()} on the device") from None
            status = channel.exit_status if channel.exit_status_ready() else -1
            channel.close()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise _ConnectionLost(f"the connection to {self.address} failed: {_describe(exc)}") from None
        if status == -1:  # closed without an exit status: the connection died, or the process was killed
            _lost_or_killed(transport, self.address)
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    def _sftp_call(self, what: str, function: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            if self._sftp is None:
                raise _ConnectionLost("the connection closed")
            try:
                return function(self._sftp, *args)
            except FileNotFoundError:
                raise
            except PermissionError as exc:
                raise DeviceError(
                    f"agent {self.name}: no permission to {what} on the device ({exc}); "
                    "choose a writable --workdir",
                    "workdir",
                ) from None
            except (OSError, EOFError, paramiko.SSHException) as exc:
                if self._client and self._client.get_transport() and self._client.get_transport().is_active():
                    raise DeviceError(
                        f"agent {self.name}: could not {what} on the device: {_describe(exc)}", "workdir"
                    ) from None
                raise _ConnectionLost(f"SFTP to {self.address} failed: {_describe(exc)}") from None

    def _makedirs(self, path: str) -> None:
        def mkdirs(sftp: paramiko.SFTPClient, path: str) -> None:
            parts = path.split("/")
            for depth in range(2, len(parts) + 1):
                prefix = "/".join(parts[:depth])
                try:
                    sftp.stat(prefix)
                except FileNotFoundError:
                    sftp.mkdir(prefix, 0o755)

        self._sftp_call(f"create {path}", mkdirs, path)

    def _put(self, local: Path, remote: str) -> None:
        """Upload to a temporary name in the same folder, then rename: never a half-written file.
        Then tidy the work dir (the new file's mtime is the device's clock)."""
        partial = f"{remote}.part-{secrets.token_hex(4)}"

        def put(sftp: paramiko.SFTPClient) -> float:
            try:
                attrs = sftp.put(str(local), partial, confirm=True)
                sftp.posix_rename(partial, remote)
            except Exception:
                with contextlib.suppress(OSError, paramiko.SSHException):
                    sftp.remove(partial)
                raise
            return attrs.st_mtime

        device_now = self._sftp_call(f"upload {local.name}", put)
        self._sftp_call("tidy the work dir", self._tidy, device_now, remote)

    def _tidy(self, sftp: paramiko.SFTPClient, device_now: float, keep: str) -> None:
        """Remove stale partial uploads; evict the least recently used models beyond the cache's cap."""
        models = posixpath.join(self.workdir, "models")
        cached = []
        for folder in (self.workdir, models):
            for entry in sftp.listdir_attr(folder):
                path = posixpath.join(folder, entry.filename)
                if ".part-" in entry.filename:
                    if (entry.st_mtime or 0) < device_now - STALE_PART_S:
                        sftp.remove(path)
                elif folder == models and entry.filename.endswith(".onnx") and path != keep:
                    cached.append((entry.st_mtime or 0, entry.st_size or 0, path))
        total = sum(size for _, size, _ in cached)
        if keep.startswith(models + "/"):
            total += sftp.stat(keep).st_size or 0
        for _, size, path in sorted(cached):
            if total <= self.cache_mb * 2**20:
                break
            with contextlib.suppress(FileNotFoundError):  # another host evicted it first
                sftp.remove(path)
            total -= size

    def _exists(self, remote: str, size: int | None = None) -> bool:
        def stat(sftp: paramiko.SFTPClient) -> bool:
            try:
                attrs = sftp.stat(remote)
            except FileNotFoundError:
                return False
            return size is None or attrs.st_size == size

        return self._sftp_call(f"check {remote}", stat)

    def _deploy_runner(self) -> str:
        if self._runner is None:
            digest = file_sha256(RUNNER_PATH)
            remote = posixpath.join(self.workdir, f"runner-{digest[:12]}.py")
            self._makedirs(posixpath.join(self.workdir, "models"))
            if not self._exists(remote, RUNNER_PATH.stat().st_size):
                self._put(RUNNER_PATH, remote)
            self._runner = remote
        return self._runner

    def _upload(self, model: Path, digest: str) -> str:
        remote = posixpath.join(self.workdir, "models", f"{digest}.onnx")
        if digest not in self._uploaded:
            self._deploy_runner()
            if not self._exists(remote, model.stat().st_size):
                self._put(model, remote)
            self._uploaded.add(digest)
        return remote

    def _runner_call(self, args: list[str], timeout: float) -> RunnerResult:
        """Run the runner: ``lock_timeout`` s to get the device lock, then ``timeout`` s; killed past that.

        Requests go to one serving runner per connection (``runner.py --serve``, started on first use),
        which forks a fresh child per measurement: Python and the imports are paid once, not per
        measurement (seconds on a small board). A server that overruns is killed with its children.
        """
        runner = self._deploy_runner()
        self._kill_orphans()
        lock = posixpath.join(self.workdir, "device.lock")
        python = self._python
        deadline = RunnerDeadline(timeout, self.lock_timeout)
        with one_request_at_a_time(self._serve_lock, deadline, self.name):
            return self._served_call([python, runner, "--serve"], lock, args, deadline)

    def _served_call(self, command: list[str], lock: str, args: list[str], deadline: RunnerDeadline
                     ) -> RunnerResult:
        python = command[0]
        server = self._serving(command)
        try:
            status, out, err = server.request(["--lock", lock, "--lock-timeout", str(self.lock_timeout), *args],
                                              deadline)
        except RunnerTimeout:
            self._server = None
            self._kill_run(server.run_id)
            server.close()
            raise RunnerTimeout(
                f"agent {self.name}: the runner {deadline.describe()} on the device and was killed "
                f"there; if the device is just slow, raise it with 'nas agent set {self.name} --timeout SECONDS'"
            ) from None
        except _ConnectionLost:
            self._server = None
            self._orphans.append(server.run_id)  # it may still be running: killed after reconnecting
            raise
        if not server.alive():
            self._server = None
        if status == 127 or (status != 0 and not out.strip() and "not found" in err):
            raise DeviceError(
                f"agent {self.name}: no Python at '{python}' on the device ({err.strip()[-200:]}): install "
                "Python 3.8+ (Raspberry Pi OS / Debian: sudo apt install python3 python3-venv; Termux: pkg "
                "install python) or pass --python PATH",
                "python_missing",
            )
        if status == -1:
            raise DeviceError(
                f"agent {self.name}: the runner was killed on the device (out of memory?) "
                f"{err.strip()[-300:]}",
                "killed",
            )
        if not out.strip():
            raise DeviceError(
                f"agent {self.name}: '{python}' printed no result (exit {status}): "
                f"{err.strip()[-300:]} (is it Python 3.8 or newer?)",
                "internal",
            )
        return parse_runner_output(out, self.name)

    def _serving(self, command: list[str]) -> _RemoteServer:
        """The connection's serving runner for ``command`` (started anew if it ended or changed)."""
        if self._server is not None and (self._server.command != command or not self._server.alive()):
            self._server.close()
            self._server = None
        if self._server is None:
            client = self._client
            transport = client.get_transport() if client else None
            if transport is None or not transport.is_active():
                raise _ConnectionLost("the connection closed")
            try:
                self._server = _RemoteServer(transport, command, self.connect_timeout, self.address)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise _ConnectionLost(f"the connection to {self.address} failed: {_describe(exc)}") from None
        return self._server

    def _kill_run(self, run_id: str) -> None:
        """SIGKILL a runner's process group on the device (best effort; retried after a reconnect)."""
        try:
            self._exec([self._python, self._deploy_runner(), "--kill-run", run_id],
                       RunnerDeadline(self.command_timeout))
        except (_ConnectionLost, AgentError) as exc:
            self._orphans.append(run_id)
            self.log(f"agent {self.name}: could not stop run {run_id} on the device yet: {exc}")

    def _kill_orphans(self) -> None:
        orphans, self._orphans = self._orphans, []
        for run_id in orphans:
            self._kill_run(run_id)

    def clean(self) -> tuple[int, int]:
        """Remove the cached models, partial uploads and runners from the work dir: (files, bytes).
        ``device.lock`` stays: a runner measuring now holds it, and a new file would not exclude it."""

        def clean(sftp: paramiko.SFTPClient) -> tuple[int, int]:
            files = size = 0
            for folder in (self.workdir, posixpath.join(self.workdir, "models")):
                try:
                    entries = sftp.listdir_attr(folder)
                except FileNotFoundError:
                    continue
                for entry in entries:
                    name = entry.filename
                    runner = name.startswith("runner-") and name.endswith(".py")
                    if name.endswith(".onnx") or ".part-" in name or runner:
                        with contextlib.suppress(FileNotFoundError):
                            sftp.remove(posixpath.join(folder, name))
                            files, size = files + 1, size + (entry.st_size or 0)
            return files, size

        result, _ = self._retrying(lambda: self._sftp_call("clean the work dir", clean))
        self._runner = None
        self._uploaded.clear()
        return result

    # --- the Agent interface --------------------------------------------------------------------

    def probe(self, dft_model: Path | None = None) -> RunnerResult:
        """Fingerprint the device; with ``dft_model`` (default: the built-in probe) whether DFT runs."""
        if dft_model is None:
            from device_agents.probe_models import probe_models

            dft_model = probe_models()[0]
        digest = file_sha256(dft_model)

        def operation() -> RunnerResult:
            remote = self._upload(dft_model, digest)
            return self._runner_call(["--probe", "--model", remote], self.command_timeout)

        result, _ = self._retrying(operation)
        self._fingerprint = result.fingerprint
        return result

    def settings_for(self, settings: MeasureSettings) -> MeasureSettings:
        """The settings actually used: the agent's thread count, when registered with one, wins."""
        if self.target.threads and settings.threads != self.target.threads:
            return dataclasses.replace(settings, threads=self.target.threads)
        return settings

    def run_models(self, models: list[Path], args: list[str], timeout: float) -> RunnerResult:
        digests = [file_sha256(model) for model in models]
        started = time.monotonic()

        def upload() -> list[str]:
            files = []
            for model, digest in zip(models, digests, strict=True):
                files += ["--model", self._upload(model, digest), "--sha256", digest]
            return files

        def operation() -> RunnerResult:
            files = upload()
            try:
                return self._runner_call([*files, *args], timeout)
            except DeviceError as exc:
                if exc.kind not in ("model_corrupt", "model_missing"):
                    raise
                why = "arrived damaged" if exc.kind == "model_corrupt" else "left the device's model cache"
            self.log(f"agent {self.name}: a model {why}; uploading it again")
            for remote in files[1::4]:
                with contextlib.suppress(FileNotFoundError):
                    self._sftp_call("remove a damaged model", lambda sftp, path=remote: sftp.remove(path))
            self._uploaded.difference_update(digests)
            return self._runner_call([*upload(), *args], timeout)

        result, attempts = self._retrying(operation)
        self._fingerprint = result.fingerprint or self._fingerprint
        result.attempts, result.host_wall_s = attempts, time.monotonic() - started
        return result

    def run_checked(self, argv: list[str], timeout: float | None = None) -> str:
        """Run a quoted command on the device (with reconnects); its stdout, or a DeviceError."""

        def operation() -> str:
            status, out, err = self._exec(argv, RunnerDeadline(timeout or self.command_timeout))
            if status != 0:
                raise DeviceError(
                    f"agent {self.name}: {shlex.join(argv)} failed ({status}): {err.strip()[-300:]}"
                )
            return out

        return self._retrying(operation)[0]


class _RemoteServer:
    """``runner.py --serve`` on the device, on one SSH channel: requests in on its stdin, output out."""

    def __init__(self, transport: paramiko.Transport, command: list[str], timeout: float, address: str) -> None:
        self.command = command
        self.run_id = secrets.token_hex(8)
        self.address = address
        self.transport = transport
        self.channel = transport.open_session(timeout=timeout)
        self.channel.exec_command(shlex.join([*command, "--run-id", self.run_id]))

    def alive(self) -> bool:
        return not (self.channel.closed or self.channel.exit_status_ready())

    def request(self, argv: list[str], deadline: RunnerDeadline) -> tuple[int, str, str]:
        """(status, stdout, stderr) of one request: the child's exit status (-1: killed by a signal),
        or the server's own when it ended first (127: no such Python)."""
        channel, output, err = self.channel, RequestOutput(deadline), bytearray()
        try:
            with contextlib.suppress(OSError):  # a server that already ended: its status says why
                channel.sendall(json.dumps(argv).encode() + b"\n")
            answered = _read_channel(channel, self.transport, self.address, deadline, output.feed, err, poll=0.002)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise _ConnectionLost(f"the connection to {self.address} failed: {_describe(exc)}") from None
        if answered:
            status = output.status if output.status >= 0 else _lost_or_killed(self.transport, self.address)
        else:  # the server ended first: its exit status, -1 when it has none (killed, or the connection died)
            status = channel.exit_status if channel.exit_status_ready() else -1
            status = status if status != -1 else _lost_or_killed(self.transport, self.address)
        return status, output.text(), err.decode(errors="replace")

    def close(self) -> None:
        """Close its stdin and channel: the server kills any child still measuring and exits."""
        with contextlib.suppress(Exception):  # closing on a dead connection may raise anything
            self.channel.shutdown_write()
            self.channel.close()


def _read_channel(channel: paramiko.Channel, transport: paramiko.Transport, address: str, deadline: RunnerDeadline,
                  take: Callable[[bytes], bool], err: bytearray, poll: float) -> bool:
    """Read a command's output into ``take`` (which says when it holds a whole answer) and its stderr
    into ``err``: True once ``take`` does, False when the channel ended first. A dropped connection
    is a _ConnectionLost; past the deadline, a RunnerTimeout (the remote process is left to the caller)."""
    while True:
        busy = False
        while channel.recv_ready():
            if take(channel.recv(1 << 16)):
                return True
            busy = True
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(1 << 16)
            busy = True
        if channel.closed or (channel.exit_status_ready() and channel.eof_received):
            if not (channel.recv_ready() or channel.recv_stderr_ready()):
                return False
            continue
        if not transport.is_active():
            raise _ConnectionLost(f"the connection to {address} dropped during a command")
        if deadline.remaining() <= 0:
            raise RunnerTimeout(deadline.describe())
        if not busy:
            channel.status_event.wait(poll)


def _lost_or_killed(transport: paramiko.Transport, address: str) -> int:
    """-1 for a command killed on the device, unless the connection dies too (a crashing sshd kills
    its sessions first): then that, which is retried."""
    grace = time.monotonic() + 2.0
    while transport.is_active() and time.monotonic() < grace:
        time.sleep(0.05)
    if not transport.is_active():
        raise _ConnectionLost(f"the connection to {address} dropped during a command")
    return -1


def require_runtime(agent: SSHAgent, probe: RunnerResult) -> None:
    """A DeviceError saying what to install when the device lacks numpy or onnxruntime."""
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


def _absolute(workdir: str, home: str) -> str:
    if workdir in ("~", ""):
        return home
    if workdir.startswith("~/"):
        workdir = workdir[2:]
    return posixpath.normpath(workdir if workdir.startswith("/") else posixpath.join(home, workdir))


def _inside(path: str, home: str) -> bool:
    """Whether ``path`` is a folder strictly inside ``home`` (both absolute and normalised)."""
    return path != home and path.startswith(home.rstrip("/") + "/")


def check_workdir(workdir: str) -> str:
    """A --workdir that stays inside the login's home: relative (or ``~/...``), without ``..``."""
    relative = workdir[2:] if workdir.startswith("~/") else workdir
    if not relative.strip() or relative in ("~", ".") or ".." in relative.split("/"):
        raise AgentError(f"--workdir {workdir!r}: give a folder inside the login's home, without '..'")
    return workdir


def _not_ssh(exc: BaseException) -> bool:
    """paramiko's words for a peer that answered but not with an SSH banner."""
    if type(exc).__name__ == "IncompatiblePeer":
        return True
    words = ("protocol banner", "Indecipherable protocol version", "Invalid SSH banner")
    return isinstance(exc, paramiko.SSHException) and any(word in str(exc) for word in words)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"timed out ({text or 'no answer'})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
