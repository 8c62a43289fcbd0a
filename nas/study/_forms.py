"""Measure a candidate's deployed forms on an agent and choose one, through the study's measurement cache.

Per agent: every form alone in a fresh runner process (its latency and its own memory), then, when
more than one form runs there, all of them interleaved in one process (``Agent.compare``); the
choice is made on those paired ratios with a tie margin, and a tie goes to the smaller file. A form
the device cannot run (no ``DFT``, an opset its onnxruntime does not know, a load failure) is
recorded as unavailable there and the others go on.

The cache key is (model content hashes, the agent's stable fingerprint, runner settings), so an
identical candidate, or the same candidate in a resumed study, is never measured twice. The cache
lives in the study's storage: it is rebuilt on start from the runner results kept in each trial's
record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import onnx
import optuna

from device_agents import MEMORY_METHOD, Agent, DeviceError, MeasureSettings, RunnerResult, file_sha256, fingerprint_key
from nas.spec import FORMS
from nas.study._records import AgentMeasurement, FormMeasurement, Paired, PairedRatio, TrialData

# runner errors that mean "this model cannot run on this device", not "the device is in trouble"
UNAVAILABLE_KINDS = ("model_load_failed", "run_failed", "unsupported_input")
KIB_PER_MIB = 1024.0


def cache_key(model_sha256: str, agent: Agent, settings: MeasureSettings) -> str:
    """Measurements are reused when the model, the device and the settings are the same, and the model's
    memory is read the same way (studies resumed across a change of method measure again)."""
    settings = agent.settings_for(settings)
    payload = json.dumps([model_sha256, fingerprint_key(agent.fingerprint()), settings.to_dict(),
                          f"memory-{MEMORY_METHOD}"], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class MeasurementCache:
    """Runner results by cache key, filled from the study's trial records and from new measurements."""

    def __init__(self, study: optuna.Study | None = None) -> None:
        self._entries: dict[str, RunnerResult] = {}
        for trial in study.get_trials(deepcopy=False) if study else ():
            for measured in TrialData.load(trial.user_attrs).agents.values():
                for result in _results(measured):
                    if result.cache_key:
                        self._entries.setdefault(result.cache_key, result)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> RunnerResult | None:
        return self._entries.get(key)

    def measure(self, agent: Agent, model: Path, settings: MeasureSettings) -> RunnerResult:
        """The cached result for this model on this agent, or a fresh measurement (then cached)."""
        key = cache_key(file_sha256(model), agent, settings)
        return self._cached(key, lambda: agent.measure(model, settings))

    def compare(self, agent: Agent, models: list[Path], settings: MeasureSettings) -> RunnerResult:
        """The cached paired measurement of these models (in this order), or a fresh one."""
        key = cache_key("paired:" + ",".join(file_sha256(m) for m in models), agent, settings)
        return self._cached(key, lambda: agent.compare(models, settings))

    def _cached(self, key: str, run: Callable[[], RunnerResult]) -> RunnerResult:
        hit = self._entries.get(key)
        if hit is not None:
            return hit.model_copy(update={"cached": True})
        result = run().model_copy(update={"cache_key": key, "cached": False})
        self._entries[key] = result
        return result


def model_facts(path: Path) -> tuple[int, set[str]]:
    """The bytes of a model's weights (its initializers) and the op types it uses."""
    model = onnx.load(str(path), load_external_data=False)
    weights = sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    return weights, {node.op_type for node in model.graph.node}


def form_measurement(result: RunnerResult, reference_ms: float | None = None,
                     weight_bytes: int | None = None) -> FormMeasurement:
    """The figures of one runner result (per call, MiB).

    With the agent's calibrated ``reference_ms`` (``nas.study._reference``) the latency is the paired ratio
    model / reference times it: the model's latency at the device's undisturbed speed. Without it,
    or from a runner without the reference, it is the median as timed.

    ``weight_bytes`` (the model's initializers) is a floor: a session holds at least its weights, so
    a device figure below them is wrong (a process that freed other memory meanwhile, an emulator's
    own allocations); it is flagged ``implausible`` and the weights are used instead, so that such a
    model neither looks free on the memory objective nor passes a memory limit it does not meet.
    """
    latency, memory, paired = result.latency_ms, result.memory_kb, result.latency_ms.reference
    median, low, high, p90, spread = latency.median, latency.ci_low, latency.ci_high, latency.p90, latency.spread
    speed = None
    raw, floor = memory.model_peak_kb / KIB_PER_MIB, (weight_bytes or 0) / 2**20
    if reference_ms and paired:
        speed = reference_ms / paired.median
        median, low, high = (value * reference_ms for value in (paired.ratio, paired.ci_low, paired.ci_high))
        p90, spread = p90 * speed, paired.spread
    return FormMeasurement(
        median_ms=median, p90_ms=p90, ci_low_ms=low, ci_high_ms=high, timed_median_ms=latency.median,
        device_speed=speed, spread=spread, unstable=latency.unstable, slowed=latency.slowed,
        calls_per_sample=latency.number, model_peak_mib=max(raw, floor), implausible=raw < floor,
        memory_method=memory.method, process_peak_mib=memory.after_runs.peak_kb / KIB_PER_MIB, runner=result,
    )


def choose_form(result: RunnerResult, forms: list[str], sizes: dict[str, int], tie_margin: float
                ) -> tuple[str, Paired]:
    """The form to deploy from a paired measurement of ``forms`` (in the order measured).

    The fastest by median, unless another form is not shown slower than it by more than
    ``tie_margin`` (the lower end of its paired ratio's 95 % interval is within the margin): then
    the smallest file among the tied ones (then the order of ``nas.spec.FORMS``). Noise widens the
    interval and so makes a tie, never a wrong winner.
    """
    medians = {form: model.median for form, model in zip(forms, result.paired.models, strict=True)}
    ratios = [PairedRatio(a=forms[r.a], b=forms[r.b], ratio=r.ratio, ci_low=r.ci_low, ci_high=r.ci_high)
              for r in result.paired.ratios]
    fastest = min(forms, key=lambda form: medians[form])
    tied = [form for form in forms if form == fastest or _ratio_low(ratios, form, fastest) <= 1.0 + tie_margin]
    winner = min(tied, key=lambda form: (sizes.get(form, 0), _order(form)))
    return winner, Paired(forms=forms, median_ms=medians, ratios=ratios, tied=tied, runner=result)


def _ratio_low(ratios: list[PairedRatio], a: str, b: str) -> float:
    """The lower end of the interval of latency(a) / latency(b)."""
    for entry in ratios:
        if (entry.a, entry.b) == (a, b):
            return entry.ci_low
        if (entry.a, entry.b) == (b, a):
            return 1.0 / entry.ci_high
    raise KeyError((a, b))


def _order(form: str) -> int:
    return FORMS.index(form) if form in FORMS else len(FORMS)


def measure_forms(cache: MeasurementCache, agent: Agent, files: dict[str, Path], settings: MeasureSettings,
                  tie_margin: float, sizes: dict[str, int] | None = None,
                  unavailable: dict[str, str] | None = None, reference_ms: float | None = None,
                  weights: dict[str, int] | None = None) -> AgentMeasurement:
    """Every form of one candidate on ``agent`` and the one to deploy there.

    ``unavailable`` names forms known beforehand not to run there (with why); a form whose model
    the device cannot load or run is added to them. An agent where no form runs is a DeviceError.
    ``reference_ms``: the agent's calibration, see ``form_measurement``; the runner measures each
    form alone at (near) that speed when the device gets there within the wait, else marks it ``slowed``.
    ``weights``: each form's initializer bytes, the floor of its memory (``form_measurement``).
    """
    unavailable = dict(unavailable or {})
    alone = replace(settings, reference_ms=reference_ms)
    sizes = sizes or {form: path.stat().st_size for form, path in files.items()}
    forms: dict[str, FormMeasurement] = {}
    for form, path in files.items():
        if form in unavailable:
            forms[form] = FormMeasurement(available=False, reason=unavailable[form])
            continue
        try:
            forms[form] = form_measurement(cache.measure(agent, path, alone), reference_ms, (weights or {}).get(form))
        except DeviceError as exc:
            if exc.kind not in UNAVAILABLE_KINDS:
                raise
            forms[form] = FormMeasurement(available=False, reason=str(exc).splitlines()[0])
    runs = [form for form in files if forms[form].available]
    if not runs:
        why = "; ".join(f"{form}: {forms[form].reason}" for form in files)
        raise DeviceError(f"agent {agent.name}: no deployed form of this candidate runs there ({why})", "no_form")
    if len(runs) == 1:
        return AgentMeasurement(forms=forms, winner=runs[0])
    winner, paired = choose_form(cache.compare(agent, [files[f] for f in runs], settings), runs, sizes, tie_margin)
    return AgentMeasurement(forms=forms, winner=winner, paired=paired)


def device_seconds(measured: AgentMeasurement) -> float:
    """Seconds the device spent in timed runs for this candidate (cached results cost none)."""
    return sum(result.timed_s for result in _results(measured) if not result.cached)


def _results(measured: AgentMeasurement) -> list[RunnerResult]:
    """The runner results one agent's measurement of a candidate holds: each form's, the paired one."""
    results = [form.runner for form in measured.forms.values()]
    results += [measured.paired.runner] if measured.paired else []
    return [result for result in results if result is not None]
