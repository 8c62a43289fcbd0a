"""The host's side of the runner's wire protocol, taken from ``runner.py`` itself.

The runner is one file shipped to devices, so it cannot import the project; the project imports
it instead. Its schema number, event names, measurement knobs and their defaults, and the memory
method's version are defined there once; here they become the host's :class:`MeasureSettings`
(the knobs as a frozen dataclass, part of every cache key) and the marks the agents look for in the
runner's output. The runner's one JSON result line is parsed here, and only here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from device_agents import runner
from device_agents.errors import ERROR_HINTS, DeviceError, RunnerOutputError

RUNNER_SCHEMA = runner.SCHEMA
MEMORY_METHOD = runner.MEMORY_METHOD
LOCKED_MARK = json.dumps({"event": runner.LOCKED_EVENT}).encode()  # the whole line
DONE_MARK = json.dumps({"event": runner.DONE_EVENT}).encode()[:-1]  # the line's start: a status follows


class _Knobs:
    """What MeasureSettings does with its fields (which are the runner's ``MEASURE_KNOBS``)."""

    def runner_args(self) -> list[str]:
        """The runner's options for these settings (knobs left at None are not passed)."""
        args = []
        for name, *_ in runner.MEASURE_KNOBS:
            value = getattr(self, name)
            if value is not None:
                args += ["--" + name.replace("_", "-"), repr(value)]
        return args

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


MeasureSettings = dataclasses.make_dataclass(
    "MeasureSettings",
    [(name, kind if default is not None else kind | None, dataclasses.field(default=default))
     for name, kind, default, _ in runner.MEASURE_KNOBS],
    bases=(_Knobs,), frozen=True)
MeasureSettings.__module__ = __name__
MeasureSettings.__doc__ = (
    "How to measure: the runner's knobs (``runner.MEASURE_KNOBS``: threads, batch, warmup, min_runs, min_seconds, "
    "min_sample_ms, max_seconds, max_spread, max_rounds, pin_cpu, speed_tolerance, max_wait_seconds, reference_ms), "
    "with the runner's defaults. Part of the measurement cache key.")


class _Part(BaseModel):
    """A part of the runner's result. Fields a runner of another version adds are kept as they are,
    so that a result stored with a trial reads back whole."""

    model_config = ConfigDict(extra="allow", serialize_by_alias=True, validate_by_name=True)


class Reference(_Part):
    """The reference workload timed in alternation with the model: how fast the device ran meanwhile."""

    ratio: float  # median over pairs of model / reference
    ci_low: float
    ci_high: float
    median: float  # the reference's own median, ms
    spread: float  # IQR / median of the ratio
    calibrated_ms: float | None = None  # the calibration the runner compared against


class Latency(_Part):
    """One model's timed samples: per-call figures in ms and how they were got."""

    median: float
    p90: float
    min: float
    mean: float
    iqr: float
    ci_low: float  # 95 % interval of the median
    ci_high: float
    count: int  # samples in the round used
    number: int = 1  # calls per sample
    spread: float = 0.0  # IQR / median
    rounds: int = 1
    timed_s: float = 0.0
    unstable: bool = False  # still too spread after the last round
    slowed: bool = False  # the device stayed slower than its calibration for the whole wait
    reference: Reference | None = None


class ProcessMemory(_Part):
    """The runner process's memory at one moment, KiB."""

    peak_kb: int  # VmHWM
    rss_kb: int  # VmRSS
    file_kb: int | None = None  # RssFile
    heap_kb: int | None = None  # what malloc has handed out (glibc)


class Memory(_Part):
    """The model's own memory (``model_peak_kb``, read by ``method``) and the process readings behind it."""

    model_peak_kb: float
    method: str = "peak"  # "peak": resident peak on a device; "held": bytes malloc holds, under emulation
    method_version: int = 1
    resident_peak_kb: float | None = None
    held_kb: float | None = None
    peak_reset: bool = False
    code_kb: float = 0.0  # library code paged in meanwhile, not counted
    baseline: ProcessMemory | None = None
    before_session: ProcessMemory | None = None
    after_session: ProcessMemory | None = None
    after_runs: ProcessMemory


class PairRatio(_Part):
    """Models ``a`` and ``b`` (indices in the order measured): median over rounds of a / b."""

    a: int
    b: int
    ratio: float
    ci_low: float
    ci_high: float


class PairedModels(_Part):
    """Several models measured interleaved in one process."""

    models: list[Latency]
    ratios: list[PairRatio]
    timed_s: float = 0.0
    clock: str = "wall"


class Calibration(_Part):
    """The device's undisturbed speed on the reference workload."""

    reference_ms: float
    rounds: int = 0
    number: int = 1
    spread: float = 0.0


class RunnerResult(_Part):
    """The runner's one result line, and what the host adds to it (attempts, cache key)."""

    schema_: int = Field(RUNNER_SCHEMA, alias="schema")
    ok: bool = True
    pid: int | None = None
    server_pid: int | None = None  # the serving runner the measuring child was forked from
    started_at: float | None = None
    ended_at: float | None = None
    latency_ms: Latency | None = None  # a measurement
    session_ms: float | None = None
    memory_kb: Memory | None = None
    layers_ms: dict[str, float] | None = None  # --profile: ms per call per layer
    paired: PairedModels | None = None  # --paired
    calibration: Calibration | None = None  # --calibrate
    fingerprint: dict[str, Any] | None = None
    dft: bool | None = None  # --probe with a DFT model: whether it ran
    dft_error: str | None = None
    killed: list[int] | None = None  # --kill-run
    error_kind: str | None = None
    error: str | None = None
    attempts: int | None = None  # host: connection attempts it took (SSH)
    host_wall_s: float | None = None  # host: wall time of the call
    cache_key: str | None = None  # host: the study's measurement cache
    cached: bool = False

    @property
    def timed_s(self) -> float:
        """Seconds the device spent in timed runs for this result."""
        if self.paired is not None:
            return self.paired.timed_s
        return self.latency_ms.timed_s if self.latency_ms is not None else 0.0


def parse_runner_output(stdout: str, agent: str) -> RunnerResult:
    """The runner's result line, typed; a DeviceError with a plain message when it failed, a
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
    return RunnerResult.model_validate(result)
