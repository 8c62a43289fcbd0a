"""The Pareto set equals a brute-force non-dominated filter, and Optuna's ``best_trials``."""

from __future__ import annotations

import itertools
import random

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from nas.results import disagreement, dominates, is_feasible, non_dominated, pareto_front, pareto_trials
from nas.study import RECORD_ATTR, TrialData

optuna.logging.set_verbosity(optuna.logging.WARNING)
DIRECTIONS = ["maximize", "minimize", "minimize"]


def brute_force(points, directions):
    """Indices not dominated by any other point, written independently of nas.results."""
    sign = [1 if d == "minimize" else -1 for d in directions]
    keep = []
    for i, p in enumerate(points):
        dominated = False
        for j, q in enumerate(points):
            if i == j:
                continue
            pairs = [(s * a, s * b) for s, a, b in zip(sign, q, p, strict=True)]
            if all(a <= b for a, b in pairs) and any(a < b for a, b in pairs):
                dominated = True
        if not dominated:
            keep.append(i)
    return keep


def _study(seed: int, n: int = 60) -> tuple[optuna.Study, list[tuple[int, tuple[float, ...]]]]:
    """A study with known values: complete feasible, infeasible (both ways), failed and running trials.

    Values come from a coarse grid so that ties and exact duplicates occur.
    """
    rng = random.Random(seed)
    study = optuna.create_study(directions=DIRECTIONS)
    feasible = []
    for _ in range(n):
        values = (rng.choice([0.5, 0.7, 0.8, 0.9, 0.95]), rng.choice([0.1, 0.2, 0.5, 1.0]),
                  rng.choice([10.0, 20.0]))
        kind = rng.random()
        if kind < 0.15:
            study.add_trial(create_trial(state=TrialState.FAIL, user_attrs=_record(fail_reason="boom")))
            continue
        if kind < 0.2:
            study.add_trial(create_trial(state=TrialState.RUNNING))
            continue
        # Infeasible trials get unbeatable values so that wrongly including them changes the set.
        infeasible = kind < 0.4
        if infeasible:
            values = (1.0, 0.01, 1.0)
        study.add_trial(create_trial(
            values=list(values),
            user_attrs=_record(infeasible=["latency 2 ms > 1 ms on local"] if infeasible else []),
            system_attrs={"constraints:max_latency_ms": 1.0 if infeasible else -0.5},
        ))
        if not infeasible:
            feasible.append((study.trials[-1].number, values))
    return study, feasible


def _record(**fields: object) -> dict:
    """User attributes holding a trial record with ``fields``, as the study writes them."""
    return {RECORD_ATTR: TrialData(**fields).model_dump(mode="json")}


def test_dominates_follows_directions():
    assert dominates([0.9, 1.0], [0.8, 1.0], ["maximize", "minimize"])
    assert not dominates([0.9, 1.0], [0.9, 1.0], ["maximize", "minimize"])
    assert not dominates([0.9, 2.0], [0.8, 1.0], ["maximize", "minimize"])
    assert dominates([0.8, 1.0], [0.9, 1.0], ["minimize", "minimize"])
    with pytest.raises(ValueError):
        dominates([1.0], [1.0, 2.0], ["minimize", "minimize"])


def test_known_front():
    points = [(0.9, 2.0), (0.8, 1.0), (0.85, 3.0), (0.9, 2.0), (0.7, 0.5), (0.6, 0.5)]
    # (0.85, 3.0) is dominated by (0.9, 2.0); (0.6, 0.5) by (0.7, 0.5); the duplicate (0.9, 2.0) stays.
    assert non_dominated(points, ["maximize", "minimize"]) == [0, 1, 3, 4]


@pytest.mark.parametrize("seed", range(8))
def test_pareto_set_equals_brute_force_and_optuna(seed):
    study, feasible = _study(seed)
    expected = {feasible[i][0] for i in brute_force([v for _, v in feasible], DIRECTIONS)}
    ours = pareto_front(study)
    assert {t.number for t in ours} == expected
    assert expected, "the synthetic study should have a non-empty front"
    assert {t.number for t in study.best_trials} == expected
    assert disagreement(study, ours) is None
    # Nothing infeasible, failed or running is in the set.
    assert all(is_feasible(t) for t in ours)
    # Every feasible trial left out is dominated by a member of the set.
    members = [t.values for t in ours]
    for number, values in feasible:
        if number not in expected:
            assert any(dominates(m, values, DIRECTIONS) for m in members)


def test_all_permutations_of_a_small_set_give_the_same_front():
    points = [(0.9, 1.0, 5.0), (0.9, 1.0, 4.0), (0.8, 0.5, 5.0), (0.95, 2.0, 6.0), (0.8, 0.5, 5.0)]
    expected = {points[i] for i in brute_force(points, DIRECTIONS)}
    for order in itertools.permutations(points):
        assert {order[i] for i in non_dominated(list(order), DIRECTIONS)} == expected


def test_infeasible_by_user_attr_only_is_excluded_and_reported():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(create_trial(values=[0.9, 1.0], system_attrs={"constraints:max_latency_ms": -1.0}))
    study.add_trial(create_trial(values=[0.99, 0.1], user_attrs=_record(infeasible=["params 10 > 5"]),
                                 system_attrs={"constraints:max_latency_ms": -1.0}))
    ours = pareto_trials(study.trials, study.directions)
    assert [t.number for t in ours] == [0]
    assert "only in Optuna's best_trials: [1]" in disagreement(study, ours)
