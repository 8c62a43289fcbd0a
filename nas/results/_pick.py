"""Which trial ``nas pick`` bundles: the one asked for, or the most accurate one within limits.

``choose`` takes ``--trial N`` as given, once it is sure the trial can be bundled (complete, trained,
measured on the agent), or else the most accurate trained feasible trial whose latency and model
memory on the agent meet the limits. A limit is about one device, while the Pareto set is over all
the study's objectives, so the pick may lie off the set, or a member of the set may miss a limit: the
:class:`Choice` carries notes that say so. When nothing meets the limits, the error names the closest
trial and by how much it misses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.errors import UserError
from nas.results._pareto import dominates, is_feasible, pareto_front
from nas.study import OpenedStudy, TrialRecord


@dataclass
class Choice:
    """The picked trial, on which agent, and what the user should know about the choice."""

    trial: FrozenTrial
    record: TrialRecord
    agent: str
    on_front: bool
    notes: list[str] = field(default_factory=list)

    @property
    def form(self) -> str:
        """The deployed form that measured fastest on the agent ("-" without Toeplitz-like layers)."""
        winner = self.record.winner(self.agent)
        return winner or (self.record.spec.form if self.record.spec else "-")


def choose(opened: OpenedStudy, trial: int | None = None, max_latency_ms: float | None = None,
           max_model_peak_mib: float | None = None, agent: str | None = None) -> Choice:
    """The trial to bundle: ``trial`` itself, or the most accurate trained trial within the limits."""
    study, agent = opened.study, opened.agent(agent)
    front = pareto_front(study)
    on_front = {t.number for t in front}
    if trial is not None:
        return _choose_number(study, trial, agent, front)
    if max_latency_ms is None and max_model_peak_mib is None:
        raise UserError("give --trial N, or a limit to pick by (--max-latency-ms X, --max-model-peak-mib Y)")

    limits = [(what, limit, unit, getter) for what, limit, unit, getter in (
        ("latency", max_latency_ms, "ms", lambda r: r.latency_ms(agent)),
        ("model peak memory", max_model_peak_mib, "MiB", lambda r: r.model_peak_mib(agent)),
    ) if limit is not None]
    wanted = " and ".join(f"{what} <= {limit:g} {unit}" for what, limit, unit, _ in limits) + f" on {agent}"
    candidates = [(t, TrialRecord.from_trial(t)) for t in study.get_trials(deepcopy=False)
                  if is_feasible(t)]
    candidates = [(t, r) for t, r in candidates if r.data.trained and r.data.accuracy is not None]
    if not candidates:
        raise UserError(f"study {study.study_name!r} has no trained feasible trial yet "
                        f"({len(study.trials)} trials); run 'nas study resume {study.study_name}'")
    meeting, misses = [], {}
    for frozen, record in candidates:
        problems = []
        for what, limit, unit, getter in limits:
            value = getter(record)
            if value is None:
                problems.append((math.inf, f"not measured on {agent}"))
            elif value > limit:
                problems.append(((value - limit) / limit,
                                 f"{what} {value:.3g} {unit} > {limit:g} {unit}, {value - limit:.3g} {unit} "
                                 f"({100 * (value - limit) / limit:.0f}%) over"))
        if problems:
            misses[frozen.number] = problems
        else:
            meeting.append((frozen, record))
    if not meeting:
        frozen, record = min(candidates, key=lambda c: (max(p[0] for p in misses[c[0].number]),
                                                        -c[1].data.accuracy))
        worst = "; ".join(text for _, text in misses[frozen.number])
        raise UserError(f"no trained trial meets {wanted} ({len(candidates)} checked); "
                        f"closest: {_describe(record, agent)}: {worst}")
    frozen, record = max(meeting, key=lambda c: (c[1].data.accuracy, c[0].number in on_front,
                                                 -(c[1].latency_ms(agent) or math.inf), -c[0].number))
    notes = [f"meets {wanted}"]
    excluded = [(t, r) for t, r in candidates if t.number in on_front and t.number in misses]
    for t, r in sorted(excluded, key=lambda c: -c[1].data.accuracy):
        notes.append(f"excluded {_describe(r, agent)}: " + "; ".join(text for _, text in misses[t.number]))
    if frozen.number not in on_front:
        notes.append(f"trial {frozen.number} is not on the Pareto set over the study's objectives: "
                     "every more accurate trial misses the limits")
    return Choice(frozen, record, agent, frozen.number in on_front, notes)


def _choose_number(study: optuna.Study, number: int, agent: str, front: list[FrozenTrial]) -> Choice:
    trials = study.get_trials(deepcopy=False)
    found = next((t for t in trials if t.number == number), None)
    if found is None:
        span = f"trials 0-{trials[-1].number}" if trials else "no trials"
        raise UserError(f"study {study.study_name!r} has no trial {number} ({span})")
    record = TrialRecord.from_trial(found)
    if found.state != TrialState.COMPLETE:
        reason = record.data.fail_reason
        raise UserError(f"trial {number} did not complete (state {found.state.name}"
                        f"{': ' + reason if reason else ''}); pick a complete trial ('nas report "
                        f"{study.study_name}' lists them)")
    if record.data.infeasible or not record.data.artifacts:
        why = "; ".join(record.data.infeasible) or "it has no stored weights"
        raise UserError(f"trial {number} was not trained: {why}")
    if record.winner(agent) is None:
        raise UserError(f"trial {number} was not measured on agent {agent!r}")
    notes = []
    on_front = any(t.number == number for t in front)
    if not on_front and is_feasible(found):
        dominator = _dominator(found, study, front)
        if dominator is not None:
            notes.append(f"trial {number} is not on the Pareto set: trial {dominator.number} is at least "
                         "as good on every objective")
    return Choice(found, record, agent, on_front, notes)


def _describe(record: TrialRecord, agent: str) -> str:
    code = record.data.code or (record.spec.code if record.spec else "?")
    parts = [f"trial {record.number} ({code}"]
    if record.data.accuracy is not None:
        parts.append(f", accuracy {100 * record.data.accuracy:.2f}%")
    if record.latency_ms(agent) is not None:
        parts.append(f", {record.latency_ms(agent):.3g} ms")
    if record.model_peak_mib(agent) is not None:
        parts.append(f", model peak {record.model_peak_mib(agent):.1f} MiB")
    return "".join(parts) + ")"


def _dominator(trial: FrozenTrial, study: optuna.Study, front: list[FrozenTrial]) -> FrozenTrial | None:
    return next((other for other in front if dominates(other.values, trial.values, study.directions)), None)
