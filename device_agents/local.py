"""The local agent: the on-device runner, run on this host, a fresh forked process per measurement.

It is the default agent, so a study needs no hardware; it measures this machine, which is rarely
the deployment target, so its figures rank candidates for this host only.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from device_agents._home import nas_home
from device_agents.base import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_LOCK_TIMEOUT,
    RUNNER_PATH,
    Agent,
    RunnerDeadline,
    file_sha256,
)
from device_agents.errors import DeviceError, RunnerTimeout
from device_agents.protocol import RunnerResult, parse_runner_output
from device_agents.served import RequestOutput, one_request_at_a_time


class LocalAgent(Agent):
    """Measures on this host with this interpreter's onnxruntime, through one serving runner.

    The server (``runner.py --serve``) is started on first use and forks a fresh child per
    measurement; it leads its own session, so a timeout kills it with everything it started (the
    next call starts another), and it exits when this agent closes or this process ends.
    """

    def __init__(self, name: str = "local", workdir: Path | None = None,
                 command_timeout: float = DEFAULT_COMMAND_TIMEOUT, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
                 python: str = sys.executable) -> None:
        self.name = name
        self.workdir = Path(workdir) if workdir else nas_home() / "agents" / name
        self.command_timeout = command_timeout
        self.lock_timeout = lock_timeout
        self.python = python
        self._server: _Server | None = None
        self._serve_lock = threading.Lock()  # one request at a time on the server's pipe

    def _run(self, args: list[str], deadline: RunnerDeadline) -> RunnerResult:
        with one_request_at_a_time(self._serve_lock, deadline, self.name):
            return self._served_call(args, deadline)

    def _served_call(self, args: list[str], deadline: RunnerDeadline) -> RunnerResult:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = ["--lock", str(self.workdir / "device.lock"), "--lock-timeout", str(self.lock_timeout), *args]
        if self._server is None or not self._server.alive():
            self._server = _Server([self.python, str(RUNNER_PATH), "--serve"])
        try:
            stdout, stderr, status = self._server.request(argv, deadline)
        except RunnerTimeout:
            self.close()
            raise RunnerTimeout(f"agent {self.name}: the runner {deadline.describe()}; it was killed") from None
        if status is not None and status < 0:
            raise DeviceError(f"agent {self.name}: the runner was killed by signal {-status} (out of memory?) "
                              f"{stderr.strip()[-300:]}", "killed")
        return parse_runner_output(stdout if stdout.strip() else stdout + stderr[-500:], self.name)

    def probe(self, dft_model: Path | None = None) -> RunnerResult:
        deadline = RunnerDeadline(self.command_timeout, self.lock_timeout)
        return self._run(["--probe", *(["--model", str(dft_model)] if dft_model else [])], deadline)

    def run_models(self, models: list[Path], args: list[str], timeout: float) -> RunnerResult:
        files = [part for model in models for part in ("--model", str(model), "--sha256", file_sha256(model))]
        return self._run([*files, *args], RunnerDeadline(timeout, self.lock_timeout))

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


class _Server:
    """A serving runner in a session of its own, and its output read line by line."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, start_new_session=True)
        self.chunks: queue.Queue[bytes | None] = queue.Queue()
        self.stderr = bytearray()
        threading.Thread(target=_chunks, args=(self.process.stdout, self.chunks), daemon=True).start()
        threading.Thread(target=_collect, args=(self.process.stderr, self.stderr), daemon=True).start()

    def alive(self) -> bool:
        return self.process.poll() is None

    def request(self, argv: list[str], deadline: RunnerDeadline) -> tuple[str, str, int | None]:
        """One request's output up to its ``done`` event: (stdout, stderr, the child's exit status:
        negative for a signal, None when the server itself ended)."""
        self.stderr.clear()  # what it wrote before this request was someone else's
        output = RequestOutput(deadline)
        with contextlib.suppress(OSError):  # a server that died since its last request: its output says why
            self.process.stdin.write(json.dumps(argv).encode() + b"\n")
            self.process.stdin.flush()
        while True:
            try:
                chunk = self.chunks.get(timeout=max(0.0, min(deadline.remaining(), 1.0)))
            except queue.Empty:
                if deadline.remaining() <= 0:
                    raise RunnerTimeout(deadline.describe()) from None
                continue
            if chunk is None:
                self.process.wait()
            if chunk is None or output.feed(chunk):
                return output.text(), self.stderr.decode(errors="replace"), output.status

    def stop(self) -> None:
        """Close its stdin (an idle server exits), then kill its whole session."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=2.0)
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)  # any child still measuring
        self.process.wait()


def _chunks(stream: IO[bytes], chunks: queue.Queue[bytes | None]) -> None:
    for line in iter(stream.readline, b""):
        chunks.put(line)
    chunks.put(None)


def _collect(stream: IO[bytes], sink: bytearray) -> None:
    for line in iter(stream.readline, b""):
        sink += line
