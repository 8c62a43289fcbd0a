"""The local agent: the on-device runner, run on this host in a fresh subprocess.

It is the default agent, so a study needs no hardware; it measures this machine, which is rarely
the deployment target, so its figures rank candidates for this host only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from device_agents.base import (
    RUNNER_PATH,
    Agent,
    AgentError,
    file_sha256,
    parse_runner_output,
)


class LocalAgent(Agent):
    """Measures on this host with this interpreter's onnxruntime."""

    def __init__(self, name: str = "local", workdir: Path | None = None, timeout: float = 300.0,
                 python: str = sys.executable) -> None:
        from nas.paths import nas_home

        self.name = name
        self.workdir = Path(workdir) if workdir else nas_home() / "agents" / name
        self.timeout = timeout
        self.python = python

    def _run(self, args: list[str], timeout: float | None = None) -> dict[str, Any]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [self.python, str(RUNNER_PATH), "--lock", str(self.workdir / "device.lock"), *args]
        limit = timeout or self.timeout
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=limit, check=False)
        except subprocess.TimeoutExpired as exc:
            raise AgentError(f"agent {self.name}: the runner took longer than {limit:.0f} s") from exc
        return parse_runner_output(done.stdout + done.stderr[-500:] if not done.stdout else done.stdout, self.name)

    def probe(self, dft_model: Path | None = None) -> dict[str, Any]:
        return self._run(["--probe", *(["--model", str(dft_model)] if dft_model else [])])

    def run_models(self, models: list[Path], args: list[str], timeout: float) -> dict[str, Any]:
        files = [part for model in models for part in ("--model", str(model), "--sha256", file_sha256(model))]
        return self._run([*files, *args], max(timeout, self.timeout))
