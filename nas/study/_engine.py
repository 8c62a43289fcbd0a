"""The study engine: sample, measure before training, train the feasible, store everything.

One candidate, start to finish (``CandidateEvaluator.__call__``):

1. the sampler proposes an architecture spec;
2. the untrained model is exported in each deployed form and measured on every agent first:
   latency does not depend on the weights, and a candidate that breaks a hard constraint is
   recorded as infeasible with its measured values, without minutes of training;
3. the feasible ones are trained and validated;
4. the spec, measurements, fingerprints and artifact ids go into trial user attributes (see
   ``nas.study._records``); ONNX files and weights into the study's artifact store (``nas.storage``).
"""

from __future__ import annotations

import datetime
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from device_agents import LOCAL, Agent, AgentError, AgentPool, get_agent
from nas.data import Dataset
from nas.model import ExportError, TrainingDiverged, build_model, deployed, export_onnx, spec_seed
from nas.space import SearchSpace
from nas.spec import ArchSpec
from nas.storage import StudyArtifacts
from nas.study._config import StudyConfig
from nas.study._forms import MeasurementCache, device_seconds, measure_forms, model_facts
from nas.study._records import RETRY_ATTR, AgentMeasurement, FormMeasurement, TrialData

INTERRUPTED = "interrupted (Ctrl-C)"
CATCH = (AgentError, ExportError, TrainingDiverged)  # a trial that fails with these fails alone: the study goes on


class CandidateEvaluator:
    """The Optuna objective: one trial from sampled spec to stored, trained candidate."""

    def __init__(self, config: StudyConfig, pool: AgentPool, data: Dataset,
                 cache: MeasurementCache, store: StudyArtifacts, references: dict[str, float]) -> None:
        self.config = config
        self.references = references  # agent -> calibrated reference ms (nas.study._reference)
        self.space: SearchSpace = config.search_space
        self.pool = pool
        self.data = data
        self.cache = cache
        self.store = store
        self.settings = self.space.measure.settings()

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        record = TrialData(worker=_WORKER, retry_of=trial.user_attrs.get(RETRY_ATTR))
        try:
            return self._evaluate(trial, record)
        except KeyboardInterrupt:  # Optuna fails the trial and re-raises; say why, and redo it on resume
            record.fail_reason, record.retryable = INTERRUPTED, True
            record.save(trial)
            raise
        except Exception as exc:  # recorded for the report, then handled by optimize(catch=...)
            record.fail_reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            # a device that was down or a runner that hung is worth another try on resume; a model
            # the device cannot load is not
            record.retryable = bool(getattr(exc, "retryable", False))
            record.save(trial)
            raise

    def _evaluate(self, trial: optuna.Trial, record: TrialData) -> tuple[float, ...]:
        clock = _Clock()
        spec = self.space.sample(trial, self.data.in_features, self.data.num_classes)
        trial.set_user_attr("sampled", True)  # its parameters are final: later trials may compare with them
        earlier = _same_candidate(trial)
        if earlier is not None:
            return _repeat(trial, earlier, record)
        model = build_model(spec, seed=spec_seed(spec))
        params = sum(p.numel() for p in model.parameters())
        record.spec, record.code, record.widths, record.params = spec.to_dict(), spec.code, spec.widths, params
        record.save(trial)
        clock.lap("sample")

        with tempfile.TemporaryDirectory(prefix="nas-candidate-") as tmp:
            forms = self.space.forms() if spec.has_toeplitz else [spec.form]
            untrained = {form: self._export(model, spec.with_form(form), Path(tmp) / f"{form}.onnx") for form in forms}
            record.onnx_bytes = {form: path.stat().st_size for form, path in untrained.items()}
            facts = {form: model_facts(path) for form, path in untrained.items()}
            record.weight_bytes = {form: weights for form, (weights, _) in facts.items()}
            clock.lap("export")
            self._measure(trial, record, untrained, {form: ops for form, (_, ops) in facts.items()})
            clock.lap("measure", device=sum(device_seconds(m) for m in record.agents.values()))

            winner = {agent: measured.winner for agent, measured in record.agents.items()}
            primary = self.config.agents[0]
            spec = spec.with_form(winner[primary]) if spec.has_toeplitz else spec
            record.spec = spec.to_dict()
            figures = {agent: measured.chosen for agent, measured in record.agents.items()}
            record.infeasible = self._check_constraints(trial, figures, params)
            record.trained = not record.infeasible
            accuracy = 0.0
            if record.trained:
                accuracy = self._train(record, model, clock)
                record.artifacts = self._save_artifacts(model, spec, set(winner.values()))
                clock.lap("artifacts")
        record.timing = {**clock.laps, "sampler_s": getattr(trial.study.sampler, "seconds", {}).get(trial.number, 0.0)}
        record.save(trial)

        values = {"accuracy": accuracy, "params": float(params),
                  "onnx_kb": record.onnx_bytes[winner[primary]] / 1024.0}
        return tuple(
            values[o.name] if o.agent is None else getattr(figures[o.agent], _FIGURE[o.name])
            for o in self.config.objectives
        )

    def _export(self, model: torch.nn.Module, spec: ArchSpec, path: Path) -> Path:
        return export_onnx(deployed(model, spec), spec.in_features, path)

    def _train(self, record: TrialData, model: torch.nn.Module, clock: _Clock) -> float:
        result = self.space.training.run(model, self.data)
        record.accuracy, record.train_seconds, record.epochs = result.accuracy, result.seconds, result.epochs
        record.test_accuracy = result.test_accuracy
        clock.lap("train", train=result.seconds)
        return result.accuracy

    def _measure(self, trial: optuna.Trial, record: TrialData, files: dict[str, Path],
                 ops: dict[str, set[str]]) -> None:
        """Every form on every agent, the agents in parallel; what was measured is stored even if an agent fails."""
        sizes = record.onnx_bytes
        tie_margin = self.space.measure.tie_margin

        def on_device(agent: Agent) -> AgentMeasurement:
            lacking = {form: reason for form in files if (reason := _lacks(agent.name, ops[form]))}
            return measure_forms(self.cache, agent, files, self.settings, tie_margin, sizes, lacking,
                                 self.references.get(agent.name), record.weight_bytes)

        futures = {name: self.pool.call(name, on_device) for name in self.config.agents}
        errors = []
        for name, future in futures.items():
            try:
                record.agents[name] = future.result()
            except AgentError as exc:
                errors.append(exc)
        record.save(trial)
        if errors:
            raise errors[0]

    def _check_constraints(self, trial: optuna.Trial, figures: dict[str, FormMeasurement], params: int) -> list[str]:
        """Set each hard constraint (feasible when <= 0) and say which are broken."""
        limits = self.space.constraints
        checks: list[tuple[str, float, float | None]] = [("params", float(params), limits.max_params)]
        for agent, figure in figures.items():
            checks.append((f"latency_ms@{agent}", figure.median_ms, limits.max_latency_ms))
            checks.append((f"model_peak_mib@{agent}", figure.model_peak_mib, limits.max_model_peak_mib))
        violations = []
        for key, value, limit in checks:
            if limit is None:
                continue
            trial.set_constraint(key, value - limit)
            if value > limit:
                violations.append(f"{key} {value:.4g} > {limit:g}")
        return violations

    def _save_artifacts(self, model: torch.nn.Module, spec: ArchSpec, forms: set[str]) -> dict[str, Any]:
        """Trained weights and the trained model in each winning form, by content hash."""
        with tempfile.TemporaryDirectory(prefix="nas-artifacts-") as tmp:
            weights = Path(tmp) / "model.pt"
            torch.save(model.state_dict(), weights)
            onnx = {}
            for form in sorted(forms):
                onnx[form] = self.store.upload(
                    self._export(model, spec.with_form(form), Path(tmp) / f"{form}.onnx"), ".onnx")
            return {"weights": self.store.upload(weights, ".pt"), "onnx": onnx}


def _lacks(agent: str, ops: set[str]) -> str | None:
    """Why a model with these ops cannot run on a registered agent (its probe found no DFT), if so."""
    if "DFT" not in ops or agent == LOCAL:
        return None
    if get_agent(agent).dft is False:
        return "the device's onnxruntime cannot run ONNX DFT (found by its probe)"
    return None


_FIGURE = {"latency_ms": "median_ms", "model_peak_mib": "model_peak_mib"}
_WAIT_S = 0.5  # polling interval while a lower-numbered trial trains the same candidate
_SAMPLING_GRACE = datetime.timedelta(seconds=60)  # sampling takes well under a second
_WORKER = f"{socket.gethostname()}:{os.getpid()}"


class _Clock:
    """Wall time per phase, plus the time spent in training and in the device's timed runs."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {"train_s": 0.0, "device_s": 0.0}

    def lap(self, name: str, train: float = 0.0, device: float = 0.0) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.laps["train_s"] += train
        self.laps["device_s"] += device
        self.laps["total"] = now - self.start
        self.last = now


def _same_candidate(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    """An earlier complete trial with exactly these parameters (samplers do propose repeats).

    Two workers must not train one candidate at the same time: while a lower-numbered trial is
    running with these parameters (or has not finished sampling its own), wait for it. Only lower
    numbers are waited for, so two workers never wait for each other. A dead worker's trial is
    failed by the heartbeat, which ends the wait; one killed before its first heartbeat never is,
    so a trial still unsampled after ``_SAMPLING_GRACE`` is taken for dead.
    """
    while True:
        waiting = False
        now = datetime.datetime.now()
        for earlier in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if earlier.state == TrialState.COMPLETE and earlier.params == trial.params:
                return earlier
            if earlier.state != TrialState.RUNNING or earlier.number >= trial.number:
                continue
            sampling = not earlier.user_attrs.get("sampled") and now - earlier.datetime_start < _SAMPLING_GRACE
            if sampling or (earlier.user_attrs.get("sampled") and earlier.params == trial.params):
                waiting = True
        if not waiting:
            return None
        optuna.storages.fail_stale_trials(trial.study)
        time.sleep(_WAIT_S)


def _repeat(trial: optuna.Trial, earlier: optuna.trial.FrozenTrial, record: TrialData) -> tuple[float, ...]:
    """Record a repeated candidate as its earlier trial's result: training is seeded, so it would be the same."""
    taken = TrialData.load(earlier.user_attrs).model_copy(
        update={"repeat_of": earlier.number, "worker": record.worker, "retry_of": record.retry_of, "timing": None})
    taken.save(trial)
    for key, value in earlier.constraints.items():
        trial.set_constraint(key, value)
    return tuple(earlier.values)


