"""Samplers sized to the study's budget, seeded per trial, and one candidate trained once at a time."""

from __future__ import annotations

import datetime
import threading
import time

import optuna
import pytest

from nas.study import _engine as engine
from nas.study import make_sampler, nsga2_population, startup_trials
from nas.study._engine import _same_candidate

CHOICES = [str(i) for i in range(8)]


def _propose(study: optuna.Study) -> optuna.Trial:
    trial = study.ask()
    for name in "abcd":
        trial.suggest_categorical(name, CHOICES)
    return trial


def _run(sampler_name: str, n_trials: int, seed: int = 0) -> list[dict[str, str]]:
    """Proposals of ``sampler_name`` on a two-objective toy problem, each told at once."""
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=make_sampler(sampler_name, seed, n_trials))
    proposals = []
    for _ in range(n_trials):
        trial = _propose(study)
        values = [int(v) for v in trial.params.values()]
        study.tell(trial, [sum(values), max(values) - min(values)])
        proposals.append(trial.params)
    return proposals


def test_sizes_follow_the_budget() -> None:
    assert [nsga2_population(n) for n in (8, 12, 40, 400)] == [4, 4, 10, 50]
    assert [startup_trials(n) for n in (8, 12, 40, 80, 400)] == [4, 4, 5, 10, 10]


@pytest.mark.parametrize("name", ["tpe", "gp", "nsga2"])
def test_a_short_study_stops_sampling_at_random(name: str) -> None:
    # Optuna's defaults (50 random trials for NSGA-II, 10 for TPE) made a 12-trial study a random search.
    guided, random = _run(name, 12), _run("random", 12)
    start = nsga2_population(12) if name == "nsga2" else startup_trials(12)
    assert guided[:start] == random[:start]  # the same seeded random start
    assert guided[start:] != random[start:]


def test_one_worker_repeats_itself() -> None:
    assert _run("tpe", 8, seed=5) == _run("tpe", 8, seed=5)
    assert _run("tpe", 8, seed=5) != _run("tpe", 8, seed=6)


def test_workers_starting_together_propose_different_candidates() -> None:
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"])
    workers = [optuna.load_study(study_name="s", storage=storage, sampler=make_sampler("tpe", 0, 20))
               for _ in range(2)]
    first = [_propose(worker) for worker in workers]  # both ask before either finishes
    assert first[0].number != first[1].number
    assert first[0].params != first[1].params


def test_a_running_candidate_is_waited_for_not_trained_twice() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    params = dict.fromkeys("abcd", "1")
    study.enqueue_trial(params)
    study.enqueue_trial(params)
    first, second = _propose(study), _propose(study)
    for trial in (first, second):
        trial.set_user_attr("sampled", True)
    assert second.params == first.params

    def finish_first() -> None:
        time.sleep(1.0)
        study.tell(first, [1.0, 2.0])

    threading.Thread(target=finish_first).start()
    started = time.perf_counter()
    earlier = _same_candidate(second)
    assert earlier is not None and earlier.number == first.number
    assert time.perf_counter() - started >= 0.9


def test_a_lower_trial_still_sampling_is_waited_for() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial(dict.fromkeys("abcd", "1"))
    study.enqueue_trial(dict.fromkeys("abcd", "2"))
    first = study.ask()  # no parameters yet, not marked sampled
    second = _propose(study)
    second.set_user_attr("sampled", True)

    def sample_first() -> None:
        time.sleep(1.0)
        for name in "abcd":
            first.suggest_categorical(name, CHOICES)
        first.set_user_attr("sampled", True)

    threading.Thread(target=sample_first).start()
    started = time.perf_counter()
    assert _same_candidate(second) is None  # it waited for the first to be sampled: different parameters
    assert time.perf_counter() - started >= 0.9


def test_a_trial_left_unsampled_by_a_dead_worker_is_not_waited_for_ever(monkeypatch) -> None:
    # A worker killed between creating a trial and its first heartbeat leaves it RUNNING for good.
    monkeypatch.setattr(engine, "_SAMPLING_GRACE", datetime.timedelta(seconds=1))
    study = optuna.create_study(directions=["maximize", "minimize"])
    dead = study.ask()
    second = _propose(study)
    second.set_user_attr("sampled", True)
    assert dead.number < second.number
    started = time.perf_counter()
    assert _same_candidate(second) is None
    assert 0.5 <= time.perf_counter() - started < 30
