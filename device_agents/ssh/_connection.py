"""One persistent SSH connection to a device, re-established whenever it drops.

Connecting applies ``~/.ssh/config``, checks the host key (``hostkeys``) and turns each way it can fail
into a message that says what to do; TCP and SSH keep-alives notice a vanished device within about a
minute instead of the kernel's 15. An operation run through ``retrying`` is retried after a reconnect
with exponential backoff; a device still unreachable ``down_timeout`` seconds after the first failure
raises ``AgentUnreachable`` with the last reason. Every remote command is one ``shlex``-quoted argv
with a deadline. Whoever keeps state about the device (uploads, the serving runner) registers
``on_drop`` to forget it when the connection goes.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import paramiko

from device_agents import hostkeys
from device_agents.base import RunnerDeadline
from device_agents.errors import AgentError, AgentUnreachable, DeviceError, RunnerTimeout
from device_agents.ssh._channel import lost_or_killed, read_channel
from device_agents.ssh._errors import AgentAuthError, ConnectionLost, NotSSH, describe
from device_agents.ssh._target import Resolved, SSHTarget, absolute, inside, resolve

# paramiko logs each failed connection with its traceback; our own line per retry says enough
# (``nas -v`` configures logging and shows them).
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class Connection:
    """The connection of agent ``name`` to ``target``, with its SFTP session, the absolute work dir
    and the device's Python; connected on first use."""

    def __init__(
        self,
        name: str,
        target: SSHTarget,
        trust: hostkeys.TrustPolicy,
        connect_timeout: float,
        command_timeout: float,
        down_timeout: float,
        keepalive: float,
        on_contact: Callable[[str, str | None], None] | None,
        log: Callable[[str], None],
    ) -> None:
        self.name = name
        self.target = target
        self.trust = trust
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.down_timeout = down_timeout
        self.keepalive = keepalive
        self.on_contact = on_contact
        self.log = log
        self._lock = threading.RLock()  # connection state and SFTP
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._resolved: Resolved | None = None
        self._workdir: str | None = None
        self._python: str = target.python
        self._connected_once = False
        self._on_drop: list[Callable[[], None]] = []

    @property
    def address(self) -> str:
        resolved = self._resolved or resolve(self.target)
        return resolved.address

    @property
    def workdir(self) -> str:
        """The work dir's absolute path on the device (connecting, if need be, to learn the home)."""
        self.ensure_connected()
        assert self._workdir is not None
        return self._workdir

    @property
    def python(self) -> str:
        """The device's Python, ``~/...`` expanded at the last connect."""
        return self._python

    def on_drop(self, forget: Callable[[], None]) -> None:
        """Call ``forget`` whenever the connection closes: what was known about the device may be stale."""
        self._on_drop.append(forget)

    # --- connecting -----------------------------------------------------------------------------

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
                    f"speak SSH ({describe(exc)}); check --port"
                ) from None
            raise ConnectionLost(f"cannot connect to {resolved.address}: {describe(exc)}") from None
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
            self.disconnect()
            raise ConnectionLost(f"SFTP to {resolved.address} failed: {describe(exc)}") from None
        self._workdir = absolute(self.target.workdir, home)
        if not inside(self._workdir, home):
            self.disconnect()
            raise AgentError(
                f"agent {self.name}: work dir {self._workdir} is not inside the login's home {home}; "
                "give a --workdir relative to it"
            )
        # "~/venv/bin/python" would reach the device quoted, so expand it here.
        python = self.target.python
        self._python = absolute(python, home) if python.startswith("~/") else python

    def _socket(self, resolved: Resolved) -> Any:
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

    def ensure_connected(self) -> None:
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            if transport is None or not transport.is_active():
                self.disconnect()
                self._connect()

    def disconnect(self) -> None:
        """Close the connection (a dead one too) and tell those registered with ``on_drop``."""
        with self._lock:
            for closable in (self._sftp, self._client):
                if closable is not None:
                    with contextlib.suppress(Exception):  # closing a dead connection may raise anything
                        closable.close()
            self._sftp = self._client = None
            for forget in self._on_drop:
                forget()

    def transport(self) -> paramiko.Transport:
        """The live transport, to open a channel on; a ConnectionLost when there is none."""
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            raise ConnectionLost("the connection closed")
        return transport

    # --- retrying -------------------------------------------------------------------------------

    def retrying(self, operation: Callable[[], Any]) -> tuple[Any, int]:
        """Run ``operation`` (re)connecting as needed; (result, attempts)."""
        attempts, delay, deadline, reason = 0, 0.5, None, ""
        while True:
            attempts += 1
            try:
                self.ensure_connected()
                result = operation()
                self._contact("ok", None)
                return result, attempts
            except ConnectionLost as exc:
                self.disconnect()
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

    # --- remote commands and SFTP ---------------------------------------------------------------

    def exec(self, argv: list[str], deadline: RunnerDeadline) -> tuple[int, str, str]:
        """Run one quoted command; (exit status, stdout, stderr). -1: killed by a signal.
        Past the deadline, a RunnerTimeout (the remote process is left to the caller)."""
        transport = self.transport()
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
                read_channel(channel, transport, self.address, deadline, take, err, poll=0.005)
            except RunnerTimeout:
                channel.close()
                raise RunnerTimeout(
                    f"agent {self.name}: '{shlex.join(argv)[:80]}' {deadline.describe()} on the device") from None
            status = channel.exit_status if channel.exit_status_ready() else -1
            channel.close()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionLost(f"the connection to {self.address} failed: {describe(exc)}") from None
        if status == -1:  # closed without an exit status: the connection died, or the process was killed
            lost_or_killed(transport, self.address)
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    def sftp_call(self, what: str, function: Callable[..., Any], *args: Any) -> Any:
        """``function(sftp, *args)``; a failure that is the device's (no permission, a full disk) is a
        DeviceError that says ``what`` failed, a dropped connection a ConnectionLost."""
        with self._lock:
            if self._sftp is None:
                raise ConnectionLost("the connection closed")
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
                        f"agent {self.name}: could not {what} on the device: {describe(exc)}", "workdir"
                    ) from None
                raise ConnectionLost(f"SFTP to {self.address} failed: {describe(exc)}") from None


def _not_ssh(exc: BaseException) -> bool:
    """paramiko's words for a peer that answered but not with an SSH banner."""
    if type(exc).__name__ == "IncompatiblePeer":
        return True
    words = ("protocol banner", "Indecipherable protocol version", "Invalid SSH banner")
    return isinstance(exc, paramiko.SSHException) and any(word in str(exc) for word in words)
