"""The study engine: sample, measure before training, train the feasible, store everything.

One candidate, start to finish (``CandidateEvaluator.__call__``):

1. the sampler proposes an architecture spec;
2. the untrained model is exported in each deployed form and measured on every agent first:
   latency does not depend on the weights, and a candidate that breaks a hard constraint is
   recorded as infeasible with its measured values, without minutes of training;
3. the feasible ones are trained and validated;
4. the spec, measurements, fingerprints and artifact ids go into trial user attributes (see
   ``nas.records``); ONNX files and weights into the study's Optuna artifact store (``nas.artifacts``).
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from device_agents.base import Agent, AgentError, AgentUnreachable, MeasureSettings
from device_agents.pool import AgentPool
from device_agents.registry import LOCAL, get_agent
from nas.artifacts import CONFIG_KEY, StudyArtifacts, check_store, normalise_url, open_store, study_artifacts
from nas.data import Dataset, load_dataset
from nas.errors import UserError
from nas.export import ExportError, export_onnx
from nas.measure import MeasurementCache, summarise
from nas.model import build_model, deployed, spec_seed
from nas.names import check_study_name
from nas.space import SearchSpace, load_space, space_from_dict
from nas.spec import ArchSpec
from nas.storage import CONFIG_ATTR, load_study, open_storage, storage_url, study_config, study_dir
from nas.storage_url import check_storage_url
from nas.train import TrainingDiverged, train

SAMPLERS = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


SEED_MAX = 2**32 - 1  # numpy's (and so Optuna's samplers') seed range


def run_seed(seed: int, trials_so_far: int) -> int:
    """The sampler seed of one run of a study: a resumed study samples anew, and stays in 0..SEED_MAX."""
    return (seed + trials_so_far) % (SEED_MAX + 1)


class CandidateEvaluator:
    """The Optuna objective: one trial from sampled spec to stored, trained candidate."""

    def __init__(self, config: dict[str, Any], pool: AgentPool, data: Dataset,
                 cache: MeasurementCache, store: StudyArtifacts) -> None:
        self.config = config
        self.space: SearchSpace = space_from_dict(config["space"])
        self.pool = pool
        self.data = data
        self.cache = cache
        self.store = store
        self.settings = MeasureSettings(**config["measure"])

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        try:
            return self._evaluate(trial)
        except Exception as exc:  # recorded for the report, then handled by optimize(catch=...)
            trial.set_user_attr("fail_reason", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            # a device that was down is worth another try on resume; a model it cannot load is not
            trial.set_user_attr("retryable", isinstance(exc, AgentUnreachable))
            raise

    def _evaluate(self, trial: optuna.Trial) -> tuple[float, ...]:
        clock = _Clock()
        spec = self.space.sample(trial, self.data.in_features, self.data.num_classes)
        earlier = _same_candidate(trial)
        if earlier is not None:
            return _repeat(trial, earlier)
        model = build_model(spec, seed=spec_seed(spec))
        params = sum(p.numel() for p in model.parameters())
        attrs = {"spec": spec.to_dict(), "code": spec.code, "widths": spec.widths, "params": params, "worker": _WORKER}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        clock.lap("sample")

        with tempfile.TemporaryDirectory(prefix="nas-candidate-") as tmp:
            forms = self.space.forms() if spec.has_toeplitz else [spec.form]
            untrained = {form: self._export(model, spec.with_form(form), Path(tmp) / f"{form}.onnx") for form in forms}
            trial.set_user_attr("onnx_bytes", {form: path.stat().st_size for form, path in untrained.items()})
            clock.lap("export")
            measurements = self._measure(trial, untrained)
            clock.lap("measure", device=_device_seconds(measurements))

            winner, figures = self._record_winners(trial, measurements)
            primary = self.config["agents"][0]
            spec = spec.with_form(winner[primary]) if spec.has_toeplitz else spec
            trial.set_user_attr("spec", spec.to_dict())
            violations = self._check_constraints(trial, figures, params)
            trial.set_user_attr("infeasible", violations)
            trial.set_user_attr("trained", not violations)
            accuracy = 0.0
            if not violations:
                accuracy = self._train(trial, model, clock)
                trial.set_user_attr("artifacts", self._save_artifacts(model, spec, set(winner.values())))
                clock.lap("artifacts")
        trial.set_user_attr("timing", clock.laps)

        values = {"accuracy": accuracy, "params": float(params),
                  "onnx_kb": trial.user_attrs["onnx_bytes"][winner[primary]] / 1024.0}
        return tuple(
            values[o["name"]] if o["agent"] is None else figures[o["agent"]][_FIGURE[o["name"]]]
            for o in self.config["objectives"]
        )

    def _export(self, model: torch.nn.Module, spec: ArchSpec, path: Path) -> Path:
        return export_onnx(deployed(model, spec), spec.in_features, path)

    def _record_winners(self, trial: optuna.Trial, measurements: dict[str, dict[str, Any]]
                        ) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
        """Per agent, the deployed form with the lowest median latency, and its figures."""
        winner = {agent: min(by_form, key=lambda form: by_form[form]["latency_ms"]["median"])
                  for agent, by_form in measurements.items()}
        figures = {agent: summarise(measurements[agent][form]) for agent, form in winner.items()}
        trial.set_user_attr("winner", winner)
        trial.set_user_attr("latency_ms", {a: f["median_ms"] for a, f in figures.items()})
        trial.set_user_attr("latency_p90_ms", {a: f["p90_ms"] for a, f in figures.items()})
        trial.set_user_attr("peak_mb", {a: f["peak_mb"] for a, f in figures.items()})
        return winner, figures

    def _train(self, trial: optuna.Trial, model: torch.nn.Module, clock: _Clock) -> float:
        training = self.space.training
        result = train(model, self.data, epochs=training.epochs, batch_size=training.batch_size,
                       optimizer=training.optimizer, learning_rate=training.learning_rate,
                       weight_decay=training.weight_decay, seed=training.seed)
        trial.set_user_attr("accuracy", result.accuracy)
        trial.set_user_attr("train_seconds", result.seconds)
        trial.set_user_attr("epochs", result.epochs)
        clock.lap("train", train=result.seconds)
        return result.accuracy

    def _measure(self, trial: optuna.Trial, files: dict[str, Path]) -> dict[str, dict[str, Any]]:
        """Every form on every agent, the agents in parallel; what was measured is stored even if an agent fails."""

        def on_device(agent: Agent) -> dict[str, Any]:
            return {form: self.cache.measure(agent, path, self.settings) for form, path in files.items()}

        futures = {name: self.pool.call(name, on_device) for name in self.config["agents"]}
        measurements: dict[str, dict[str, Any]] = {}
        errors = []
        for name, future in futures.items():
            try:
                measurements[name] = future.result()
            except AgentError as exc:
                errors.append(exc)
        trial.set_user_attr("measurements", measurements)
        if errors:
            raise errors[0]
        return measurements

    def _check_constraints(self, trial: optuna.Trial, figures: dict[str, dict[str, float]], params: int) -> list[str]:
        """Set each hard constraint (feasible when <= 0) and say which are broken."""
        limits = self.space.constraints
        checks: list[tuple[str, float, float | None]] = [("params", float(params), limits.max_params)]
        for agent, figure in figures.items():
            checks.append((f"latency_ms@{agent}", figure["median_ms"], limits.max_latency_ms))
            checks.append((f"peak_mb@{agent}", figure["peak_mb"], limits.max_peak_mb))
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


_FIGURE = {"latency_ms": "median_ms", "peak_mb": "peak_mb"}
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


def _device_seconds(measurements: dict[str, dict[str, Any]]) -> float:
    """Seconds the devices spent in timed runs (cached results cost none)."""
    return sum(r["latency_ms"]["timed_s"] for forms in measurements.values() for r in forms.values()
               if not r["cached"])


def _same_candidate(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    """An earlier complete trial with exactly these parameters (samplers do propose repeats)."""
    for earlier in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if earlier.params == trial.params:
            return earlier
    return None


def _repeat(trial: optuna.Trial, earlier: optuna.trial.FrozenTrial) -> tuple[float, ...]:
    """Record a repeated candidate as its earlier trial's result: training is seeded, so it would be the same."""
    for key, value in earlier.user_attrs.items():
        if key not in ("worker", "timing", "retry_of"):
            trial.set_user_attr(key, value)
    trial.set_user_attr("repeat_of", earlier.number)
    trial.set_user_attr("worker", _WORKER)
    for key, value in earlier.constraints.items():
        trial.set_constraint(key, value)
    return tuple(earlier.values)


def make_config(space: SearchSpace, space_path: str, agents: list[str], n_trials: int, sampler: str, seed: int,
                artifacts: str) -> dict[str, Any]:
    """Everything ``resume``, ``report`` and ``pick`` need, stored in the study's user attributes."""
    return {
        "space": space.model_dump(mode="json"),
        "space_path": space_path,
        "agents": agents,
        "objectives": space.objective_labels(agents),
        "constraints": space.constraints.model_dump(),
        "n_trials": n_trials,
        "sampler": sampler,
        "seed": seed,
        CONFIG_KEY: artifacts,
        "measure": space.measure.model_dump(),
    }


def start_study(name: str, space_path: str | Path, agents: list[str], n_trials: int, storage: str | None = None,
                sampler: str = "tpe", seed: int = 0, load_if_exists: bool = False,
                artifacts: str | None = None) -> optuna.Study:
    """Create the study (or, with ``load_if_exists``, reuse it) and record its settings.

    Every input is checked before the storage is opened: name, storage URL, space, sampler, seed,
    agents, data, artifacts (a folder or ``s3://bucket/prefix`` for ONNX files and weights;
    default ``studies/NAME/artifacts``).
    """
    check_study_name(name)
    check_storage_url(storage_url(name, storage))
    space = load_space(space_path)
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if not 0 <= seed <= SEED_MAX:
        raise UserError(f"seed {seed} is out of range; allowed: 0..{SEED_MAX}")
    agents = agents or [LOCAL]
    for agent in agents:  # an unknown agent or unloadable data is refused before the study exists
        if agent != LOCAL:
            get_agent(agent)
    load_dataset(space.data.dataset, space.data.val_fraction, space.data.seed)
    artifacts = normalise_url(artifacts or str(study_dir(name) / "artifacts"))
    check_store(artifacts)
    config = make_config(space, str(space_path), agents, n_trials, sampler, seed, artifacts)
    study = optuna.create_study(
        study_name=name, storage=open_storage(name, storage, heartbeat=True),
        directions=[o["direction"] for o in config["objectives"]], load_if_exists=True,
    )
    if CONFIG_ATTR in study.user_attrs and not load_if_exists:
        raise UserError(f"study {name!r} already exists; continue it with 'nas study resume {name}'")
    if CONFIG_ATTR not in study.user_attrs:
        open_store(artifacts, create=True)
        study.set_metric_names([o["label"] for o in config["objectives"]])
        study.set_user_attr(CONFIG_ATTR, config)
    return study


def run_study(name: str, storage: str | None = None, n_trials: int | None = None, timeout: float | None = None,
              on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
              on_start: Callable[[int], None] | None = None) -> optuna.Study:
    """Run trials until the study has its target number of complete trials (or ``timeout``).

    ``n_trials`` raises the target. Killed trials of earlier runs stay out of the count; the
    storage's heartbeat fails them and queues their parameters again once they are stale.
    """
    if timeout is not None and timeout <= 0:
        raise UserError(f"timeout {timeout:g} s: allowed: more than 0 seconds")
    study = load_study(name, storage, heartbeat=True)
    config = study_config(study)
    if n_trials is not None and n_trials != config["n_trials"]:
        config["n_trials"] = n_trials
        study.set_user_attr(CONFIG_ATTR, config)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    remaining = config["n_trials"] - complete
    if on_start:
        on_start(max(remaining, 0))
    if remaining <= 0:
        return study

    space = space_from_dict(config["space"])
    data = load_dataset(space.data.dataset, space.data.val_fraction, space.data.seed)
    study.sampler = SAMPLERS[config["sampler"]](run_seed(config["seed"], len(study.trials)))
    store = study_artifacts(study)  # a worker that cannot reach the artifacts stops before any trial
    _requeue_unreachable(study)
    with AgentPool() as pool:
        for agent in config["agents"]:
            pool.agent(agent)  # open every agent now: an unknown name fails before any trial starts
        evaluator = CandidateEvaluator(config, pool, data, MeasurementCache(study), store)
        callbacks = [optuna.study.MaxTrialsCallback(config["n_trials"], states=(TrialState.COMPLETE,))]
        if on_trial:
            callbacks.append(on_trial)
        study.optimize(evaluator, n_trials=remaining, timeout=timeout, callbacks=callbacks,
                       catch=(AgentError, ExportError, TrainingDiverged),
                       gc_after_trial=False)
    return study


def _requeue_unreachable(study: optuna.Study) -> None:
    """Queue again, once, the candidates whose trial failed because a device was unreachable."""
    retried = {trial.user_attrs.get("retry_of") for trial in study.get_trials(deepcopy=False)}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if trial.user_attrs.get("retryable") and trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})

