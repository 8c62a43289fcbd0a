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
