"""The abstract device agent: probe a device, measure a model on it.

The study code sees only this interface (like Optuna's ``BaseStorage``); the local agent and the
SSH agent implement it. Both run the same single-file ``runner.py`` on the device and parse its
one JSON line in one place (``device_agents.protocol``).
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from device_agents.protocol import LOCKED_MARK, MeasureSettings, RunnerResult

RUNNER_PATH = Path(__file__).with_name("runner.py")

# Fingerprint fields that identify the device and its software; frequencies and temperatures change
# from run to run and are recorded with each result but do not invalidate cached measurements.
# The runner's own version, the kernel release and the CPU governor change results too.
STABLE_FINGERPRINT_FIELDS = (
    "machine", "system", "cpu_model", "cores", "python", "onnxruntime", "qemu_cpu", "emulator", "runner", "release",
    "governor",
)
DEFAULT_COMMAND_TIMEOUT = 120.0
DEFAULT_LOCK_TIMEOUT = 600.0
DEFAULT_CACHE_MB = 100.0  # the device's model cache (SSH agents)

class RunnerDeadline:
    """When to give up on one runner call: ``lock_timeout`` seconds to get the device lock, then
    ``timeout`` seconds of work. Waiting behind other measurements must not eat this one's time."""

    def __init__(self, timeout: float, lock_timeout: float = 0.0) -> None:
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self.started = time.monotonic()
        self.locked_at: float | None = None

    def seen(self, output: bytes) -> None:
        """Note the runner's output so far (it says when it holds the device lock)."""
        if self.locked_at is None and LOCKED_MARK in output:
            self.locked_at = time.monotonic()

    def remaining(self) -> float:
        if self.locked_at is None:
            return self.started + self.lock_timeout + self.timeout - time.monotonic()
        return self.locked_at + self.timeout - time.monotonic()

    def describe(self) -> str:
        if self.locked_at is None and self.lock_timeout:
            return f"did not get the device lock within {self.lock_timeout:.0f} s"
        after = " after getting the device lock" if self.lock_timeout else ""
        return f"took longer than {self.timeout:.0f} s{after}"


def fingerprint_key(fingerprint: dict[str, Any]) -> str:
    """A short hash of the stable part of a device fingerprint."""
    stable = {name: fingerprint.get(name) for name in STABLE_FINGERPRINT_FIELDS}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Agent(ABC):
    """A device that measures ONNX models. Implementations must be safe to call from one thread each."""

    name: str
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT  # seconds a runner may work once it holds the lock
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT  # seconds it may wait for the device lock first

    @abstractmethod
    def probe(self) -> RunnerResult:
        """The device's fingerprint and whether ONNX DFT runs (runner ``--probe``)."""

    @abstractmethod
    def run_models(self, models: list[Path], args: list[str], timeout: float) -> RunnerResult:
        """Run the runner on the device with ``models`` (copied there if needed, each passed as
        ``--model PATH --sha256 HASH``) and ``args``; its parsed result."""

    def timeout_for(self, settings: MeasureSettings, models: int = 1) -> float:
        """How long a runner call may work once it holds the device lock: the measurement's own time
        limit per model, plus the agent's command timeout."""
        return self.command_timeout + settings.max_seconds * models

    def measure(self, model: Path, settings: MeasureSettings) -> RunnerResult:
        """Measure one model in a fresh process on the device; the runner's parsed result."""
        settings = self.settings_for(settings)
        return self.run_models([Path(model)], settings.runner_args(), self.timeout_for(settings))

    def compare(self, models: list[Path], settings: MeasureSettings) -> RunnerResult:
        """Measure several models interleaved in one process (``paired``: per-model figures, ratios)."""
        settings = self.settings_for(settings)
        args = ["--paired", *settings.runner_args()]
        return self.run_models([Path(m) for m in models], args, self.timeout_for(settings, len(models)))

    def calibrate(self, settings: MeasureSettings, seconds: float) -> float:
        """The device's undisturbed time for the runner's reference workload, ms per call.

        Measurements carry the paired ratio model / reference; times this figure, they give a latency
        at the device's own speed whatever it was doing meanwhile (runner ``--calibrate``).
        """
        settings = self.settings_for(settings)
        args = ["--calibrate", "--calibrate-seconds", str(seconds), *settings.runner_args()]
        return self.run_models([], args, self.timeout_for(settings)).calibration.reference_ms

    def profile(self, model: Path, settings: MeasureSettings) -> RunnerResult:
        """Measure one model with onnxruntime's profiler on: adds ``layers_ms`` (ms per call per layer)."""
        settings = self.settings_for(settings)
        return self.run_models([Path(model)], ["--profile", *settings.runner_args()], self.timeout_for(settings))

    def settings_for(self, settings: MeasureSettings) -> MeasureSettings:
        """The settings a measurement will really use (an agent may pin its own thread count)."""
        return settings

    def fingerprint(self) -> dict[str, Any]:
        """The device fingerprint, probed once per agent object."""
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = self.probe().fingerprint
        return self._fingerprint

    def close(self) -> None:  # noqa: B027 - optional hook, most agents hold nothing
        """Release connections; the default has none."""

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
