"""Start a study and run its trials: the study's lifecycle, around the engine (``nas.study._engine``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from device_agents import LOCAL, AgentPool, get_agent
from nas.errors import UserError
from nas.model import warm_up
from nas.space import load_space
from nas.storage import (
    check_storage_url,
    check_store,
    check_study_name,
    creating_storage,
    normalise_url,
    open_store,
    storage_url,
    study_dir,
)
from nas.study._config import CONFIG_ATTR, StudyConfig
from nas.study._engine import CATCH, CandidateEvaluator
from nas.study._forms import MeasurementCache
from nas.study._loader import open_study
from nas.study._records import RETRY_ATTR, TrialData
from nas.study._reference import study_references
from nas.study._samplers import DEFAULT_SAMPLER, SAMPLERS, make_sampler

SEED_MAX = 2**32 - 1  # numpy's (and so Optuna's samplers') seed range


def start_study(name: str, space_path: str | Path, agents: list[str], n_trials: int, storage: str | None = None,
                sampler: str = DEFAULT_SAMPLER, seed: int = 0, load_if_exists: bool = False,
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
    data = space.data.load()
    space.check_data(data.in_features, data.num_classes, str(space_path))
    artifacts = normalise_url(artifacts or str(study_dir(name) / "artifacts"))
    check_store(artifacts)
    config = StudyConfig.create(space, str(space_path), agents, n_trials, sampler, seed, artifacts)
    with creating_storage(name, storage) as opened:  # one creator at a time: the existence check holds
        existed = name in optuna.get_all_study_names(opened)
        study = optuna.create_study(study_name=name, storage=opened, load_if_exists=True,
                                    directions=[o.direction for o in config.objectives])
        if CONFIG_ATTR in study.user_attrs:
            if not load_if_exists:
                raise UserError(f"study {name!r} already exists; continue it with 'nas study resume {name}'")
            return study
        try:
            open_store(artifacts, create=True)
            study.set_metric_names([o.label for o in config.objectives])
            config.save(study)
        except BaseException:  # a study made here without its settings would block the name
            if not existed:
                optuna.delete_study(study_name=name, storage=opened)
            raise
    return study


def run_study(name: str, storage: str | None = None, n_trials: int | None = None, timeout: float | None = None,
              on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
              on_start: Callable[[int], None] | None = None) -> optuna.Study:
    """Run trials until the study has its target number of complete trials (or ``timeout``).

    ``n_trials`` raises the target. Killed trials of earlier runs stay out of the count; the
    storage's heartbeat fails them and queues their parameters again once they are stale.
    """
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise UserError(f"timeout {timeout:g} s: allowed: a finite number of seconds above 0")
    opened = open_study(name, storage, heartbeat=True)
    study, config = opened.study, opened.config
    if n_trials is not None and n_trials != config.n_trials:
        config.n_trials = n_trials
        config.save(study)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    remaining = config.n_trials - complete
    if on_start:
        on_start(max(remaining, 0))
    if remaining <= 0:
        return study

    study.sampler = make_sampler(config.sampler, config.seed, config.n_trials)
    store = opened.artifacts  # a worker that cannot reach the artifacts stops before any trial
    _requeue_retryable(study)
    with AgentPool() as pool:
        for agent in config.agents:
            pool.agent(agent)  # open every agent now: an unknown name fails before any trial starts
        references = study_references(study, pool, config.agents, opened.space.measure.settings())
        evaluator = CandidateEvaluator(config, pool, opened.data, MeasurementCache(study), store, references)
        warm_up()
        callbacks = [optuna.study.MaxTrialsCallback(config.n_trials, states=(TrialState.COMPLETE,))]
        if on_trial:
            callbacks.append(on_trial)
        study.optimize(evaluator, n_trials=remaining, timeout=timeout, callbacks=callbacks, catch=CATCH,
                       gc_after_trial=False)
    return study


def _requeue_retryable(study: optuna.Study) -> None:
    """Queue again, once, the candidates whose trial failed for a passing reason (a device
    unreachable, a runner that hung and was killed, an interrupted run)."""
    retried = {TrialData.load(trial.user_attrs).retry_of for trial in study.get_trials(deepcopy=False)}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if TrialData.load(trial.user_attrs).retryable and trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number})

