"""The host's side of a serving runner (``runner.py --serve``): one request's output, line by line.

A request is one JSON list of runner arguments on the server's stdin; the server forks a child that
measures and prints its lines (``{"event": "locked"}``, the result), then the server prints
``{"event": "done", "status": S}`` with the child's exit status (negative: killed by that signal).
The local agent reads the server's pipe, the SSH agent one channel; both collect through this.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator

from device_agents.base import RunnerDeadline
from device_agents.errors import DeviceError
from device_agents.protocol import DONE_MARK


class RequestOutput:
    """The lines of one request, up to its ``done`` event; ``status`` is set once that arrived."""

    def __init__(self, deadline: RunnerDeadline) -> None:
        self.deadline = deadline
        self.out = bytearray()
        self.status: int | None = None
        self._partial = b""

    def feed(self, data: bytes) -> bool:
        """Take more of the server's stdout; True once the request is done."""
        self._partial += data
        while b"\n" in self._partial:
            line, _, self._partial = self._partial.partition(b"\n")
            if line.startswith(DONE_MARK):
                self.status = json.loads(line)["status"]
                return True
            self.out += line + b"\n"
            self.deadline.seen(line)
        return False

    def text(self) -> str:
        """What the child printed (and any unfinished line of a server that ended meanwhile)."""
        return (self.out + self._partial).decode(errors="replace")


@contextlib.contextmanager
def one_request_at_a_time(lock: threading.Lock, deadline: RunnerDeadline, agent: str) -> Iterator[None]:
    """Hold the server's channel for one request; waiting for it counts as waiting for the device."""
    if not lock.acquire(timeout=max(deadline.remaining(), 0.0)):
        raise DeviceError(f"agent {agent}: another measurement on this connection held it too long", "device_busy")
    try:
        yield
    finally:
        lock.release()
