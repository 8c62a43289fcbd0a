"""The local agent: the on-device runner, run on this host in a fresh subprocess.

It is the default agent, so a study needs no hardware; it measures this machine, which is rarely
the deployment target, so its figures rank candidates for this host only. The runner gets a
session of its own, so a timeout kills everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from device_agents.base import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_LOCK_TIMEOUT,
    RUNNER_PATH,
    Agent,
    RunnerDeadline,
    RunnerTimeout,
    file_sha256,
    parse_runner_output,
)


class LocalAgent(Agent):
    """Measures on this host with this interpreter's onnxruntime."""

    def __init__(self, name: str = "local", workdir: Path | None = None,
                 command_timeout: float = DEFAULT_COMMAND_TIMEOUT, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
                 python: str = sys.executable) -> None:
        from nas.paths import nas_home

        self.name = name
        self.workdir = Path(workdir) if workdir else nas_home() / "agents" / name
        self.command_timeout = command_timeout
        self.lock_timeout = lock_timeout
        self.python = python

    def _run(self, args: list[str], deadline: RunnerDeadline) -> dict[str, Any]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [self.python, str(RUNNER_PATH), "--lock", str(self.workdir / "device.lock"),
                   "--lock-timeout", str(self.lock_timeout), *args]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        out, err = bytearray(), bytearray()
        readers = [threading.Thread(target=_drain, args=(stream, sink, deadline), daemon=True)
                   for stream, sink in ((process.stdout, out), (process.stderr, err))]
        for reader in readers:
            reader.start()
        while True:
            try:
                process.wait(timeout=max(0.0, min(deadline.remaining(), 0.1)))
                break
            except subprocess.TimeoutExpired:
                if deadline.remaining() <= 0:
                    os.killpg(process.pid, signal.SIGKILL)  # the runner leads its own session
                    process.wait()
                    raise RunnerTimeout(f"agent {self.name}: the runner {deadline.describe()}; it was killed") from None
        for reader in readers:
            reader.join()
        stdout = out.decode(errors="replace")
        return parse_runner_output(stdout if stdout.strip() else stdout + err.decode(errors="replace")[-500:],
                                   self.name)

    def probe(self, dft_model: Path | None = None) -> dict[str, Any]:
        deadline = RunnerDeadline(self.command_timeout, self.lock_timeout)
        return self._run(["--probe", *(["--model", str(dft_model)] if dft_model else [])], deadline)

    def run_models(self, models: list[Path], args: list[str], timeout: float) -> dict[str, Any]:
        files = [part for model in models for part in ("--model", str(model), "--sha256", file_sha256(model))]
        return self._run([*files, *args], RunnerDeadline(timeout, self.lock_timeout))


def _drain(stream: IO[bytes], sink: bytearray, deadline: RunnerDeadline) -> None:
    for line in iter(stream.readline, b""):
        sink += line
        deadline.seen(line)
