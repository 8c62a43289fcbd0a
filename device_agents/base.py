"""The abstract device agent: probe a device, measure a model on it.

The study code sees only this interface (like Optuna's ``BaseStorage``); the local agent and the
SSH agent implement it. Both run the same single-file ``runner.py`` on the device and parse its one
JSON line here, in one place.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RUNNER_PATH = Path(__file__).with_name("runner.py")
RUNNER_SCHEMA = 2

# Fingerprint fields that identify the device and its software; frequencies and temperatures change
# from run to run and are recorded with each result but do not invalidate cached measurements.
STABLE_FINGERPRINT_FIELDS = ("machine", "system", "cpu_model", "cores", "python", "onnxruntime", "qemu_cpu")

ERROR_HINTS = {
    "onnxruntime_missing": "install it on the device: python3 -m pip install onnxruntime numpy",
    "numpy_missing": "install it on the device: python3 -m pip install numpy",
    "model_load_failed": "the device's onnxruntime cannot load this model (an old onnxruntime without DFT?)",
    "model_corrupt": "the uploaded model was damaged in transit; it will be uploaded again",
}


class AgentError(Exception):
    """A measurement could not be made; the message is one line a user can act on."""


class AgentUnreachable(AgentError):
    """The device did not answer (network, sshd down, timeout)."""


class DeviceError(AgentError):
    """The device answered but could not do the work (no onnxruntime, model not loadable...)."""

    def __init__(self, message: str, kind: str = "device") -> None:
        super().__init__(message)
        self.kind = kind


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

    def runner_args(self) -> list[str]:
        args = [
            "--threads", str(self.threads), "--batch", str(self.batch), "--warmup", str(self.warmup),
            "--min-runs", str(self.min_runs), "--min-seconds", str(self.min_seconds),
            "--min-sample-ms", str(self.min_sample_ms), "--max-seconds", str(self.max_seconds),
            "--max-spread", str(self.max_spread), "--max-rounds", str(self.max_rounds),
        ]
        if self.pin_cpu is not None:
            args += ["--pin-cpu", str(self.pin_cpu)]
        return args

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_runner_output(stdout: str, agent: str) -> dict[str, Any]:
    """The runner's JSON line as a dict, or a DeviceError with a plain message."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise DeviceError(f"agent {agent}: the runner printed no result (output: {stdout.strip()[-200:]!r})")
    result = json.loads(lines[-1])
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

    @abstractmethod
    def probe(self) -> dict[str, Any]:
        """The device's fingerprint and whether ONNX DFT runs (runner ``--probe``)."""

    @abstractmethod
    def run_models(self, models: list[Path], args: list[str], timeout: float) -> dict[str, Any]:
        """Run the runner on the device with ``models`` (copied there if needed, each passed as
        ``--model PATH --sha256 HASH``) and ``args``; its parsed result."""

    def timeout_for(self, settings: MeasureSettings, models: int = 1) -> float:
        """How long a runner call may take: its time limit per round trip, plus slack."""
        return 60.0 + settings.max_seconds * models

    def measure(self, model: Path, settings: MeasureSettings) -> dict[str, Any]:
        """Measure one model in a fresh process on the device; the runner's parsed result."""
        settings = self.settings_for(settings)
        return self.run_models([Path(model)], settings.runner_args(), self.timeout_for(settings))

    def compare(self, models: list[Path], settings: MeasureSettings) -> dict[str, Any]:
        """Measure several models interleaved in one process (``paired``: per-model figures, ratios)."""
        settings = self.settings_for(settings)
        args = ["--paired", *settings.runner_args()]
        return self.run_models([Path(m) for m in models], args, self.timeout_for(settings, len(models)))

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
