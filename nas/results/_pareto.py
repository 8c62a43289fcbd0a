"""The Pareto set of a study: the feasible complete trials no other feasible trial dominates.

Plain logic over objective values and directions, so that the report and ``pick`` share one
definition and tests can check it against a brute-force filter and Optuna's ``best_trials``.

A trial is *feasible* when it completed, every constraint Optuna knows for it is <= 0
(``trial.set_constraint``) and it carries no ``infeasible`` lines in its user attributes (see
``nas.study.TrialData``). Trial ``a`` *dominates* ``b`` when it is at least as good on every objective and
strictly better on one; equal points do not dominate each other, so ties all stay in the set.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.study import TrialData

Direction = str | StudyDirection


def _minimize(direction: Direction) -> bool:
    if isinstance(direction, StudyDirection):
        if direction == StudyDirection.NOT_SET:
            raise ValueError("objective direction is not set")
        return direction == StudyDirection.MINIMIZE
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"direction {direction!r} is not 'minimize' or 'maximize'")
    return direction == "minimize"


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[Direction]) -> bool:
    """Whether point ``a`` dominates point ``b`` under ``directions``."""
    if not len(a) == len(b) == len(directions):
        raise ValueError(f"{len(a)} and {len(b)} values for {len(directions)} objectives")
    better = False
    for x, y, direction in zip(a, b, directions, strict=True):
        if not _minimize(direction):
            x, y = -x, -y
        if x > y:
            return False
        better = better or x < y
    return better


def non_dominated(points: Sequence[Sequence[float]], directions: Sequence[Direction]) -> list[int]:
    """Indices of the points no other point dominates, in input order (O(n^2), fine for studies)."""
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p, directions) for j, q in enumerate(points) if j != i)]


def is_feasible(trial: FrozenTrial) -> bool:
    """Completed, within every Optuna constraint and without recorded constraint violations."""
    return (trial.state == TrialState.COMPLETE and trial.values is not None
            and all(value <= 0.0 for value in trial.constraints.values())
            and not TrialData.load(trial.user_attrs).infeasible)


def pareto_trials(trials: Sequence[FrozenTrial], directions: Sequence[Direction]) -> list[FrozenTrial]:
    """The Pareto set of ``trials`` (feasible ones only), in trial order."""
    feasible = [trial for trial in trials if is_feasible(trial)]
    return [feasible[i] for i in non_dominated([trial.values for trial in feasible], directions)]


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The study's Pareto set, over its own objective directions."""
    return pareto_trials(study.get_trials(deepcopy=False), study.directions)


def disagreement(study: optuna.Study, ours: Sequence[FrozenTrial]) -> str | None:
    """A line saying how ``ours`` differs from Optuna's ``best_trials``; None when they agree.

    They can only differ when a trial's ``infeasible`` lines and its Optuna constraints disagree,
    i.e. when something other than ``nas study`` wrote the trial.
    """
    theirs = {trial.number for trial in study.best_trials}
    mine = {trial.number for trial in ours}
    if theirs == mine:
        return None
    parts = []
    if mine - theirs:
        parts.append(f"only here: {sorted(mine - theirs)}")
    if theirs - mine:
        parts.append(f"only in Optuna's best_trials: {sorted(theirs - mine)}")
    return "Pareto set differs from Optuna's best_trials (" + "; ".join(parts) + ")"
