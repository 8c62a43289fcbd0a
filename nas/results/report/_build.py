"""The report model: one :class:`Report` built from a study, which every output reads.

The rows, counts and device fingerprints are computed here once, so that the terminal table, the
files, the plots and the page cannot disagree. Everything reads the typed trial records of
``nas.study`` and the study config (``nas.study.StudyConfig``); nothing is re-measured or re-trained.
The Pareto set is computed by ``nas.results`` over the study's own objectives and cross-checked with
Optuna's ``best_trials``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from device_agents import fingerprint_key
from nas.results._pareto import disagreement, is_feasible, pareto_front
from nas.space import ObjectiveLabel
from nas.study import OpenedStudy, StudyConfig, TrialData, TrialRecord

STATUS_ORDER = ("pareto", "dominated", "infeasible", "failed", "running", "waiting", "pruned")
FLAGS = ("unstable", "slowed", "implausible")  # what a measurement can be flagged with (FormMeasurement)


@dataclass
class Report:
    """Everything the outputs show, computed once from the study."""

    name: str
    config: StudyConfig
    agent: str
    agents: list[str]
    objectives: list[ObjectiveLabel]
    trials: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    counts: dict[str, Any]
    fingerprints: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    generated: str = ""

    @property
    def constraints(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.constraints.model_dump().items() if v is not None}


def build_report(opened: OpenedStudy, agent: str | None = None) -> Report:
    """The report of a study, its latency and memory shown for ``agent`` (default: the primary)."""
    study, config = opened.study, opened.config
    agents = config.agents
    focus = opened.agent(agent) if agent or agents else "local"
    objectives = config.objectives
    trials = study.get_trials(deepcopy=False)
    front = pareto_front(study)
    on_front = {trial.number for trial in front}
    rows = [_row(trial, on_front, agents, focus) for trial in trials]
    pareto = sorted((row for row in rows if row["status"] == "pareto"),
                    key=lambda r: (-(r["accuracy"] if r["accuracy"] is not None else -math.inf),
                                   _or_inf(r.get(f"latency_ms@{focus}")), r["trial"]))
    warnings = [line for line in [disagreement(study, front)] if line]
    fingerprints, changed = _fingerprints(trials, agents)
    warnings += [f"agent {name} reported {count} different device fingerprints during the study: "
                 "its results may not be comparable" for name, count in changed.items()]
    if not objectives:
        warnings.append("the study config lists no objectives; the Pareto set uses Optuna's directions")
    return Report(
        name=study.study_name, config=config, agent=focus, agents=agents, objectives=objectives,
        trials=rows, pareto=pareto, counts=_counts(trials, rows, config), fingerprints=fingerprints,
        warnings=warnings, generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else value


def _status(trial: FrozenTrial, on_front: set[int]) -> str:
    if trial.state == TrialState.COMPLETE:
        if not is_feasible(trial):
            return "infeasible"
        return "pareto" if trial.number in on_front else "dominated"
    return {TrialState.FAIL: "failed"}.get(trial.state, trial.state.name.lower())


def _row(trial: FrozenTrial, on_front: set[int], agents: list[str], focus: str) -> dict[str, Any]:
    """One flat row per trial: the columns of trials.csv and of the tables."""
    record = TrialRecord.from_trial(trial)
    data = record.data
    form = record.winner(focus)
    if form is None and len(data.onnx_bytes) == 1:
        form = next(iter(data.onnx_bytes))
    size = data.onnx_bytes.get(form)
    row: dict[str, Any] = {
        "trial": trial.number,
        "status": _status(trial, on_front),
        "code": data.code or (record.spec.code if record.spec else None),
        "widths": data.widths or (record.spec.widths if record.spec else None),
        "form": form,
        "params": data.params,
        "onnx_kb": None if size is None else size / 1024.0,
        "weight_kb": None if data.weight_bytes.get(form) is None else data.weight_bytes[form] / 1024.0,
        "accuracy": data.accuracy,
        "test_accuracy": data.test_accuracy,
    }
    flagged: dict[str, list[str]] = {flag: [] for flag in FLAGS}  # flag -> the agents whose measurement has it
    for name in agents:
        chosen = record.chosen(name)
        row[f"latency_ms@{name}"] = chosen.median_ms if chosen else None
        row[f"p90_ms@{name}"] = chosen.p90_ms if chosen else None
        row[f"ci_ms@{name}"] = (f"{chosen.ci_low_ms:.4g}-{chosen.ci_high_ms:.4g}"
                                if chosen and chosen.ci_low_ms is not None else None)
        row[f"timed_ms@{name}"] = chosen.timed_median_ms if chosen else None  # at the speed the device ran then
        row[f"device_speed@{name}"] = chosen.device_speed if chosen else None
        row[f"model_peak_mib@{name}"] = chosen.model_peak_mib if chosen else None
        row[f"process_peak_mib@{name}"] = chosen.process_peak_mib if chosen else None
        row[f"form@{name}"] = record.winner(name)
        for flag, names in flagged.items():
            if chosen and getattr(chosen, flag):
                names.append(name)
    row.update({flag: ", ".join(names) or None for flag, names in flagged.items()})
    row.update({
        "infeasible": "; ".join(data.infeasible) or None,
        "fail_reason": data.fail_reason,
        "repeat_of": data.repeat_of,
        "epochs": data.epochs,
        "train_seconds": data.train_seconds,
        "values": list(trial.values) if trial.values is not None else None,
        "spec": data.spec,
    })
    return row


def _violated(trial: FrozenTrial) -> list[str]:
    """The constraints a trial violates: Optuna's constraint keys, else its ``infeasible`` lines."""
    keys = [key for key, value in trial.constraints.items() if value > 0]
    if keys:
        return keys
    return [line.split()[0] if line.split() else line for line in TrialData.load(trial.user_attrs).infeasible]


def _fail_reason(trial: FrozenTrial, retried: set[int]) -> str:
    reason = (TrialData.load(trial.user_attrs).fail_reason or "").strip()
    if reason:
        return reason.splitlines()[0]
    if trial.number in retried:
        return "its worker stopped (killed, crashed or lost its heartbeat); the trial was queued again"
    return "no reason recorded (the worker was killed or crashed?)"


def _counts(trials: list[FrozenTrial], rows: list[dict[str, Any]], config: StudyConfig) -> dict[str, Any]:
    statuses = Counter(row["status"] for row in rows)
    infeasible_by: Counter[str] = Counter()
    failed_by: Counter[str] = Counter()
    retried = {t.system_attrs.get("failed_trial") for t in trials} - {None}
    for trial, row in zip(trials, rows, strict=True):
        if row["status"] == "infeasible":
            infeasible_by.update(_violated(trial) or ["unknown"])
        elif row["status"] == "failed":
            failed_by[_fail_reason(trial, retried)] += 1
    return {
        "trials": len(trials),
        "target": config.n_trials,
        "complete": sum(1 for t in trials if t.state == TrialState.COMPLETE),
        "feasible": statuses["pareto"] + statuses["dominated"],
        **{status: statuses[status] for status in STATUS_ORDER},
        "infeasible_by": dict(infeasible_by.most_common()),
        "failed_by": dict(failed_by.most_common()),
    }


def _fingerprints(trials: list[FrozenTrial], agents: list[str]) -> tuple[dict[str, dict], dict[str, int]]:
    """The latest fingerprint per agent, and the agents whose stable fingerprint changed."""
    latest: dict[str, tuple[float, dict[str, Any]]] = {}
    keys: dict[str, set[str]] = {}
    for trial in trials:
        for agent, measured in TrialData.load(trial.user_attrs).agents.items():
            for form in measured.forms.values():
                result = form.runner
                fingerprint = result.fingerprint if result is not None else None
                if not fingerprint:
                    continue
                keys.setdefault(agent, set()).add(fingerprint_key(fingerprint))
                when = result.ended_at or 0.0
                if agent not in latest or when >= latest[agent][0]:
                    latest[agent] = (when, fingerprint)
    order = agents + sorted(set(latest) - set(agents))
    return ({a: latest[a][1] for a in order if a in latest},
            {a: len(k) for a, k in keys.items() if len(k) > 1})
