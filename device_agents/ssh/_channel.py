"""What runs on one SSH channel: reading a remote command's output, and the serving runner.

The serving runner (``runner.py --serve``) lives on a channel of its own for as long as the
connection does, and forks a fresh child per measurement request: Python and the numpy and
onnxruntime imports, seconds on a small board, are paid once per connection instead of per
measurement. A server whose channel closes kills its child and exits.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shlex
import time
from collections.abc import Callable

import paramiko

from device_agents.base import RunnerDeadline
from device_agents.errors import RunnerTimeout
from device_agents.served import RequestOutput
from device_agents.ssh._errors import ConnectionLost, describe


def read_channel(channel: paramiko.Channel, transport: paramiko.Transport, address: str, deadline: RunnerDeadline,
                 take: Callable[[bytes], bool], err: bytearray, poll: float) -> bool:
    """Read a command's output into ``take`` (which says when it holds a whole answer) and its stderr
    into ``err``: True once ``take`` does, False when the channel ended first. A dropped connection
    is a ConnectionLost; past the deadline, a RunnerTimeout (the remote process is left to the caller)."""
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
            raise ConnectionLost(f"the connection to {address} dropped during a command")
        if deadline.remaining() <= 0:
            raise RunnerTimeout(deadline.describe())
        if not busy:
            channel.status_event.wait(poll)


def lost_or_killed(transport: paramiko.Transport, address: str) -> int:
    """-1 for a command killed on the device, unless the connection dies too (a crashing sshd kills
    its sessions first): then that, which is retried."""
    grace = time.monotonic() + 2.0
    while transport.is_active() and time.monotonic() < grace:
        time.sleep(0.05)
    if not transport.is_active():
        raise ConnectionLost(f"the connection to {address} dropped during a command")
    return -1


class RemoteServer:
    """``runner.py --serve`` on the device, on one SSH channel: requests in on its stdin, output out.

    ``run_id`` names its process group on the device, so that a server which overran, or whose
    connection dropped, can be killed there (``runner.py --kill-run``) and never takes the device lock
    later.
    """

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
            answered = read_channel(channel, self.transport, self.address, deadline, output.feed, err, poll=0.002)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionLost(f"the connection to {self.address} failed: {describe(exc)}") from None
        if answered:
            status = output.status if output.status >= 0 else lost_or_killed(self.transport, self.address)
        else:  # the server ended first: its exit status, -1 when it has none (killed, or the connection died)
            status = channel.exit_status if channel.exit_status_ready() else -1
            status = status if status != -1 else lost_or_killed(self.transport, self.address)
        return status, output.text(), err.decode(errors="replace")

    def close(self) -> None:
        """Close its stdin and channel: the server kills any child still measuring and exits."""
        with contextlib.suppress(Exception):  # closing on a dead connection may raise anything
            self.channel.shutdown_write()
            self.channel.close()
