"""The abstract device agent: probe a device, measure a model on it.

The study code sees only this interface (like Optuna's ``BaseStorage``); the local agent and the
SSH agent implement it. Both run the same single-file ``runner.py`` on the device and parse its one
JSON line here, in one place.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RUNNER_PATH = Path(__file__).with_name("runner.py")
RUNNER_SCHEMA = 3

# Fingerprint fields that identify the device and its software; frequencies and temperatures change
# from run to run and are recorded with each result but do not invalidate cached measurements.
# The runner's own version, the kernel release and the CPU governor change results too.
STABLE_FINGERPRINT_FIELDS = (
    "machine", "system", "cpu_model", "cores", "python", "onnxruntime", "qemu_cpu", "emulator", "runner", "release",
    "governor",
)
LOCKED_MARK = b'{"event": "locked"}'  # the runner's line once it holds the device lock
DEFAULT_COMMAND_TIMEOUT = 120.0
DEFAULT_LOCK_TIMEOUT = 600.0
DEFAULT_CACHE_MB = 100.0  # the device's model cache (SSH agents)

ERROR_HINTS = {
    "onnxruntime_missing": "install it on the device: python3 -m pip install onnxruntime numpy",
    "numpy_missing": "install it on the device: python3 -m pip install numpy",
    "model_load_failed": "the device's onnxruntime cannot load this model (an old onnxruntime without DFT?)",
    "model_corrupt": "the uploaded model was damaged in transit; it will be uploaded again",
    "device_busy": "another measurement held the device that long; is a runner stuck on the device?",
}
RETRYABLE_KINDS = {"device_busy"}


class AgentError(Exception):
    """A measurement could not be made; the message is one line a user can act on."""

    retryable = False  # whether ``nas study resume`` redoes a candidate that failed with it


class AgentUnreachable(AgentError):
    """The device did not answer (network, sshd down, timeout)."""

    retryable = True


class RunnerTimeout(AgentError):
    """The runner overran its timeout and was killed on the device; another try may well work."""

    retryable = True


class RunnerOutputError(AgentError):
    """The runner's output was cut or is not its JSON result (a killed runner, a dropped stream)."""

    retryable = True


class DeviceError(AgentError):
    """The device answered but could not do the work (no onnxruntime, model not loadable...)."""

    def __init__(self, message: str, kind: str = "device") -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.kind in RETRYABLE_KINDS


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


@dataclass(frozen=True)
class MeasureSettings:
    """How to measure: the runner's knobs (the one place their defaults live). Part of the cache key."""

    threads: int = 1
    batch: int = 1
    warmup: int = 5
    min_runs: int = 20
    min_seconds: float = 0.2
    min_sample_ms: float = 1.0
    max_seconds: float = 60.0
    max_spread: float = 0.25
    max_rounds: int = 3
    pin_cpu: int | None = None
    speed_tolerance: float = 0.3  # a round run this much slower than the calibration is set aside ...
    max_wait_seconds: float = 2.0  # ... for up to this long (then the least slowed round, marked ``slowed``)
    reference_ms: float | None = None  # the agent's calibration (``nas.reference``), set per agent by the host

    def runner_args(self) -> list[str]:
        args = [
            "--threads", str(self.threads), "--batch", str(self.batch), "--warmup", str(self.warmup),
            "--min-runs", str(self.min_runs), "--min-seconds", str(self.min_seconds),
            "--min-sample-ms", str(self.min_sample_ms), "--max-seconds", str(self.max_seconds),
            "--max-spread", str(self.max_spread), "--max-rounds", str(self.max_rounds),
            "--speed-tolerance", str(self.speed_tolerance), "--max-wait-seconds", str(self.max_wait_seconds),
        ]
        if self.pin_cpu is not None:
            args += ["--pin-cpu", str(self.pin_cpu)]
        if self.reference_ms is not None:
            args += ["--reference-ms", repr(self.reference_ms)]
        return args

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_runner_output(stdout: str, agent: str) -> dict[str, Any]:
    """The runner's JSON result as a dict; a DeviceError with a plain message when it failed, a
    (retryable) RunnerOutputError when there is no whole result line."""
    results = []
    for line in stdout.splitlines():
        try:
            parsed = json.loads(line) if line.startswith("{") else None
        except ValueError:
            continue
        if isinstance(parsed, dict) and "event" not in parsed:
            results.append(parsed)
    if not results:
        raise RunnerOutputError(
            f"agent {agent}: the runner's output was cut or is not its JSON result (output: {stdout.strip()[-200:]!r})"
        )
    result = results[-1]
    if result.get("schema") != RUNNER_SCHEMA:
        raise DeviceError(f"agent {agent}: runner schema {result.get('schema')} is not {RUNNER_SCHEMA}; redeploy it")
    if not result.get("ok"):
        kind = result.get("error_kind", "internal")
        hint = ERROR_HINTS.get(kind)
        raise DeviceError(f"agent {agent}: {result.get('error')}" + (f" ({hint})" if hint else ""), kind)
    return result


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
    def probe(self) -> dict[str, Any]:
        """The device's fingerprint and whether ONNX DFT runs (runner ``--probe``)."""

    @abstractmethod
    def run_models(self, models: list[Path], args: list[str], timeout: float) -> dict[str, Any]:
        """Run the runner on the device with ``models`` (copied there if needed, each passed as
        ``--model PATH --sha256 HASH``) and ``args``; its parsed result."""

    def timeout_for(self, settings: MeasureSettings, models: int = 1) -> float:
        """How long a runner call may work once it holds the device lock: the measurement's own time
        limit per model, plus the agent's command timeout."""
        return self.command_timeout + settings.max_seconds * models

    def measure(self, model: Path, settings: MeasureSettings) -> dict[str, Any]:
        """Measure one model in a fresh process on the device; the runner's parsed result."""
        settings = self.settings_for(settings)
        return self.run_models([Path(model)], settings.runner_args(), self.timeout_for(settings))

    def compare(self, models: list[Path], settings: MeasureSettings) -> dict[str, Any]:
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
        return self.run_models([], args, self.timeout_for(settings))["calibration"]["reference_ms"]

    def profile(self, model: Path, settings: MeasureSettings) -> dict[str, Any]:
        """Measure one model with onnxruntime's profiler on: adds ``layers_ms`` (ms per call per layer)."""
        settings = self.settings_for(settings)
        return self.run_models([Path(model)], ["--profile", *settings.runner_args()], self.timeout_for(settings))

    def settings_for(self, settings: MeasureSettings) -> MeasureSettings:
        """The settings a measurement will really use (an agent may pin its own thread count)."""
        return settings

    def fingerprint(self) -> dict[str, Any]:
        """The device fingerprint, probed once per agent object."""
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = self.probe()["fingerprint"]
        return self._fingerprint

    def close(self) -> None:  # noqa: B027 - optional hook, most agents hold nothing
        """Release connections; the default has none."""

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
