"""The Pareto report of a study: a terminal table, CSV/JSON files, a PNG and one offline HTML page.

Everything here reads the typed trial records of ``nas.records`` and the study
config (``nas.study.StudyConfig``); nothing is re-measured or re-trained. The Pareto set is
computed by ``nas.results`` over the study's own objectives and cross-checked with Optuna's
``best_trials``.

Files written (``studies/NAME/report/`` by default):

``pareto.csv``   the Pareto set, one row per trial, most accurate first
``trials.csv``   every trial, with its status (pareto, dominated, infeasible, failed, running...)
``pareto.json``  the Pareto set with full architecture specs, the counts, fingerprints and settings
``pareto.png``   accuracy vs latency and vs the model's own peak memory on the chosen agent
``report.html``  one self-contained page (plotly.js inlined: it works offline)
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from device_agents.base import fingerprint_key
from nas.results._pareto import disagreement, is_feasible, pareto_front
from nas.space import ObjectiveLabel
from nas.storage import study_dir
from nas.study import OpenedStudy, StudyConfig, TrialData, TrialRecord

FILES = ("pareto.csv", "trials.csv", "pareto.json", "pareto.png", "report.html")
STATUS_ORDER = ("pareto", "dominated", "infeasible", "failed", "running", "waiting", "pruned")
FLAGS = ("unstable", "slowed", "implausible")  # what a measurement can be flagged with (FormMeasurement)
CONSTRAINT_TEXT = {
    "max_latency_ms": ("latency", "ms"),
    "max_model_peak_mib": ("model peak memory", "MiB"),
    "max_params": ("parameters", ""),
}
# Colours shared by the PNG and the HTML page.
PARETO_COLOUR = "#d62728"
DOMINATED_COLOUR = "#8c8c8c"
INFEASIBLE_COLOUR = "#c7c7c7"
LIMIT_COLOUR = "#555555"


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


# ----------------------------------------------------------------------------------------------
# Building the report


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
                fingerprint = result.get("fingerprint")
                if not fingerprint:
                    continue
                keys.setdefault(agent, set()).add(fingerprint_key(fingerprint))
                when = result.get("ended_at") or 0.0
                if agent not in latest or when >= latest[agent][0]:
                    latest[agent] = (when, fingerprint)
    order = agents + sorted(set(latest) - set(agents))
    return ({a: latest[a][1] for a in order if a in latest},
            {a: len(k) for a, k in keys.items() if len(k) > 1})


# ----------------------------------------------------------------------------------------------
# Formatting shared by the terminal table and the HTML page


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "acc":
        return f"{100 * value:.2f}%"
    if kind == "ms":
        return f"{value:.4f}" if value < 0.1 else f"{value:.3f}" if value < 10 else f"{value:.1f}"
    if kind == "kb":
        return f"{value:,.1f}"
    if kind == "mb":
        return f"{value:.1f}"
    return str(value)


def table_columns(report: Report) -> list[tuple[str, str, str]]:
    """(header, row key, format) for the Pareto table; per-agent columns for every agent."""
    columns = [("#", "trial", "int"), ("layers", "code", "str"), ("widths", "widths", "str")]
    if len(report.agents) <= 1:
        columns.append(("form", "form", "str"))
    columns += [("params", "params", "int"), ("ONNX KiB", "onnx_kb", "kb"), ("accuracy", "accuracy", "acc")]
    if any(row.get("test_accuracy") is not None for row in report.pareto):
        columns.append(("test acc", "test_accuracy", "acc"))
    for name in report.agents:
        if len(report.agents) > 1:
            columns.append((f"form\n{name}", f"form@{name}", "str"))
        columns += [(f"median ms\n{name}", f"latency_ms@{name}", "ms"),
                    (f"p90 ms\n{name}", f"p90_ms@{name}", "ms"),
                    (f"model peak MiB\n{name}", f"model_peak_mib@{name}", "mb")]
    for flag in FLAGS:
        if any(row.get(flag) for row in report.pareto):
            columns.append((f"{flag} on", flag, "str"))
    return columns


def objective_text(report: Report) -> str:
    arrows = {"maximize": "↑", "minimize": "↓"}
    return ", ".join(f"{o.label} {arrows[o.direction]}" for o in report.objectives)


def constraint_text(key: str, limits: dict[str, Any]) -> str:
    """``latency_ms@pi4`` -> ``latency on pi4 > 10 ms`` (the constraint keys ``nas study`` sets)."""
    metric, _, agent = key.partition("@")
    limit = limits.get(f"max_{metric}")
    what, unit = CONSTRAINT_TEXT.get(f"max_{metric}", (metric, ""))
    where = f" on {agent}" if agent else ""
    if limit is None:
        return f"{what}{where}"
    limit_text = f"{limit:,}" if isinstance(limit, int) else f"{limit:g}"
    return f"{what}{where} > {limit_text}{' ' + unit if unit else ''}"


def count_lines(report: Report) -> list[str]:
    """Plain sentences explaining the set: how many trials, which were left out and why."""
    c = report.counts
    target = f" of {c['target']} planned" if c.get("target") else ""
    lines = [f"{c['trials']} trials{target}: {c['complete']} complete, {c['feasible']} feasible, "
             f"{c['pareto']} on the Pareto set, {c['dominated']} dominated."]
    if c["infeasible"]:
        limits = report.constraints
        parts = [f"{n} {constraint_text(key, limits)}" for key, n in c["infeasible_by"].items()]
        lines.append(f"{c['infeasible']} infeasible (not trained): " + ", ".join(parts) + ".")
    if c["failed"]:
        reasons = list(c["failed_by"].items())
        shown = "; ".join(f"{n}x {reason}" for reason, n in reasons[:5])
        more = f"; and {len(reasons) - 5} other reasons" if len(reasons) > 5 else ""
        lines.append(f"{c['failed']} failed: {shown}{more}.")
    unstable = [row["trial"] for row in report.pareto if row.get("unstable")]
    if unstable:
        lines.append(f"{len(unstable)} on the Pareto set measured unstable (spread above the limit after the last "
                     f"round: trials {', '.join(map(str, unstable))}); their latency is less certain: see "
                     "'nas agent check'.")
    slowed = [row["trial"] for row in report.pareto if row.get("slowed")]
    if slowed:
        lines.append(f"{len(slowed)} on the Pareto set measured while the device stayed slower than its calibration "
                     f"(trials {', '.join(map(str, slowed))}); their latency is corrected by the reference ratio "
                     "only: see 'nas agent check'.")
    implausible = [row["trial"] for row in report.pareto if row.get("implausible")]
    if implausible:
        lines.append(f"{len(implausible)} on the Pareto set read a model memory below their own weights (trials "
                     f"{', '.join(map(str, implausible))}); their weights are shown instead: see 'nas agent check'.")
    unfinished = [f"{c[s]} {s}" for s in ("running", "waiting", "pruned") if c[s]]
    if unfinished:
        lines.append("Not finished: " + ", ".join(unfinished) + ".")
    return lines


def render_table(report: Report) -> Any:
    """The Pareto set as a rich table (counts in its caption)."""
    from rich.table import Table

    title = f"Pareto set of {report.name}: {len(report.pareto)} of {report.counts['trials']} trials"
    caption = "\n".join([f"objectives: {objective_text(report)}", *count_lines(report)])
    table = Table(title=title, caption=caption, caption_justify="left", header_style="bold")
    for header, key, kind in table_columns(report):
        table.add_column(header, justify="left" if kind == "str" else "right",
                         no_wrap=key in ("code", "widths"))
    for row in report.pareto:
        table.add_row(*[_fmt(row.get(key), kind) for _, key, kind in table_columns(report)])
    return table


# ----------------------------------------------------------------------------------------------
# Files

_NOT_IN_CSV = ("values", "spec")
_NOT_IN_PARETO = ("status", "infeasible", "fail_reason")


def csv_columns(agents: list[str]) -> list[str]:
    """The columns of trials.csv, in order (pareto.csv drops status, infeasible and fail_reason)."""
    per_agent = [f"{what}@{a}" for a in agents
                 for what in ("latency_ms", "p90_ms", "ci_ms", "timed_ms", "device_speed", "model_peak_mib",
                              "process_peak_mib", "form")]
    return ["trial", "status", "code", "widths", "form", "params", "onnx_kb", "weight_kb", "accuracy", "test_accuracy",
            *per_agent, "unstable", "slowed", "infeasible", "fail_reason", "epochs", "train_seconds"]


def pareto_frame(report: Report) -> pd.DataFrame:
    columns = [c for c in csv_columns(report.agents) if c not in _NOT_IN_PARETO]
    return pd.DataFrame([{c: row.get(c) for c in columns} for row in report.pareto], columns=columns)


def trials_frame(report: Report) -> pd.DataFrame:
    columns = csv_columns(report.agents)
    return pd.DataFrame([{c: row.get(c) for c in columns} for row in report.trials], columns=columns)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def pareto_document(report: Report) -> dict[str, Any]:
    """The content of pareto.json."""
    labels = [o.label for o in report.objectives]
    members = []
    for row in report.pareto:
        member = {k: v for k, v in row.items() if k not in (*_NOT_IN_PARETO, "values")}
        values = row["values"] or []
        same = len(labels) == len(values)
        member["objectives"] = dict(zip(labels, values, strict=True)) if same else values
        members.append(member)
    config = report.config.model_dump(mode="json")
    return _jsonable({
        "schema": 1, "study": report.name, "generated": report.generated, "agent": report.agent,
        "agents": report.agents, "objectives": config["objectives"],
        "constraints": config["constraints"], "counts": report.counts, "warnings": report.warnings,
        "pareto": members,
        "fingerprints": report.fingerprints, "settings": {k: v for k, v in config.items() if k != "space"},
        "space": config["space"],
    })


def write_report(report: Report, out: Path) -> dict[str, Path]:
    """Write every report file into ``out``; their paths by file name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in FILES}
    pareto_frame(report).to_csv(paths["pareto.csv"], index=False)
    trials_frame(report).to_csv(paths["trials.csv"], index=False)
    paths["pareto.json"].write_text(json.dumps(pareto_document(report), indent=2) + "\n")
    write_png(report, paths["pareto.png"])
    paths["report.html"].write_text(render_html(report), encoding="utf-8")
    return paths


def default_out(name: str) -> Path:
    return study_dir(name) / "report"


# ----------------------------------------------------------------------------------------------
# Plots


@dataclass
class _View:
    """One panel: accuracy against ``key`` on the focus agent."""

    key: str
    title: str
    axis: str
    limit: float | None
    limit_text: str


def _views(report: Report) -> list[_View]:
    a = report.agent
    limits = report.constraints
    lat, mem = limits.get("max_latency_ms"), limits.get("max_model_peak_mib")
    return [
        _View(f"latency_ms@{a}", f"Accuracy vs latency on {a}", f"median latency on {a} (ms)", lat,
              f"limit {lat:g} ms" if lat else ""),
        _View(f"model_peak_mib@{a}", f"Accuracy vs the model's peak memory on {a}",
              f"model's own peak memory on {a} (MiB)", mem,
              f"limit {mem:g} MiB" if mem else ""),
    ]


def _points(report: Report, key: str) -> dict[str, list[dict[str, Any]]]:
    """Rows with a value for ``key``, grouped: pareto, dominated, infeasible (trained or not).

    An architecture the sampler proposed again (``repeat_of``) is one point, its row's ``trials``
    saying how many trials it stands for."""
    groups: dict[str, list[dict[str, Any]]] = {g: [] for g in ("pareto", "dominated", "infeasible",
                                                                "untrained")}
    repeats = Counter(row["repeat_of"] for row in report.trials if row.get("repeat_of") is not None)
    for row in report.trials:
        if row.get(key) is None or row["status"] not in ("pareto", "dominated", "infeasible"):
            continue
        if row.get("repeat_of") is not None:
            continue
        row = {**row, "trials": 1 + repeats[row["trial"]]}
        if row["status"] == "infeasible":
            groups["infeasible" if row.get("accuracy") is not None else "untrained"].append(row)
        elif row.get("accuracy") is not None:
            groups[row["status"]].append(row)
    return groups


def _front_in_view(points: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The Pareto members no other member beats on both accuracy and ``key``: the staircase to draw."""
    ordered = sorted(points, key=lambda r: (r[key], -r["accuracy"]))
    front, best = [], -math.inf
    for row in ordered:
        if row["accuracy"] > best:
            front.append(row)
            best = row["accuracy"]
    return front


def _log_scale(values: list[float]) -> bool:
    positive = [v for v in values if v and v > 0]
    return len(positive) > 1 and max(positive) / min(positive) > 30


MIN_SPAN = 0.1  # an axis spans at least 10% of its largest value, so that noise does not look like a trend


def _x_range(values: list[float], limit: float | None) -> tuple[float, float] | None:
    """A linear x range that shows every value (and the limit) and is not narrower than MIN_SPAN."""
    shown = [v for v in values if v is not None] + ([limit] if limit else [])
    if not shown:
        return None
    low, high = min(shown), max(shown)
    span = max(high - low, MIN_SPAN * abs(high), 1e-9)
    pad = 0.06 * span
    middle = (low + high) / 2
    start = middle - span / 2 - pad
    return (max(0.0, start) if low >= 0 else start, middle + span / 2 + pad)


def _near(values: list[float], limit: float | None) -> float | None:
    """The limit, if drawing it keeps the data readable (within 3x of the largest value), else None."""
    shown = [v for v in values if v is not None]
    return limit if limit and shown and limit <= 3 * max(shown) else None


def _axis_title(view: _View, limit: float | None) -> str:
    """The axis title, saying where the limit is when it is too far right to draw."""
    return view.axis if limit or not view.limit else f"{view.axis}; {view.limit_text}, far right of every trial"


def _legend_labels(report: Report) -> dict[str, str]:
    c = report.counts
    return {
        "untrained": "infeasible, not trained (ticks on the x axis)",
        "infeasible": "infeasible, trained",
        "dominated": f"dominated ({c['dominated']})",
        "front": "Pareto front in this view",
        "pareto": f"Pareto set over all objectives ({c['pareto']})",
        "limit": "constraint limit",
    }


def write_png(report: Report, path: Path) -> Path:
    """Accuracy vs latency and vs memory; Pareto points joined, others muted; one legend below."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import PercentFormatter
    from matplotlib.transforms import blended_transform_factory

    label = _legend_labels(report)
    views = _views(report)
    fig, axes = plt.subplots(1, len(views), figsize=(6.2 * len(views), 5.0), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, view in zip(axes[0], views, strict=True):
        groups = _points(report, view.key)
        xs = [r[view.key] for g in groups.values() for r in g]
        limit = _near(xs, view.limit)
        trained = [r for name in ("pareto", "dominated", "infeasible") for r in groups[name]]
        if groups["untrained"]:
            rug = blended_transform_factory(ax.transData, ax.transAxes)
            handles[label["untrained"]] = ax.scatter(
                [r[view.key] for r in groups["untrained"]], [0.025] * len(groups["untrained"]), transform=rug,
                marker="|", s=160, color=INFEASIBLE_COLOUR, linewidths=1.6, zorder=1)
        if groups["infeasible"]:
            handles[label["infeasible"]] = ax.scatter(
                [r[view.key] for r in groups["infeasible"]], [r["accuracy"] for r in groups["infeasible"]],
                marker="x", s=28, color=INFEASIBLE_COLOUR, zorder=1)
        if groups["dominated"]:
            handles[label["dominated"]] = ax.scatter(
                [r[view.key] for r in groups["dominated"]], [r["accuracy"] for r in groups["dominated"]],
                s=26, color=DOMINATED_COLOUR, alpha=0.55, edgecolors="none", zorder=2)
        if groups["pareto"]:
            front = _front_in_view(groups["pareto"], view.key)
            (handles[label["front"]],) = ax.step(
                [r[view.key] for r in front], [r["accuracy"] for r in front], where="post",
                color=PARETO_COLOUR, linewidth=1.4, alpha=0.8, zorder=3)
            handles[label["pareto"]] = ax.scatter(
                [r[view.key] for r in groups["pareto"]], [r["accuracy"] for r in groups["pareto"]],
                s=46, color=PARETO_COLOUR, edgecolors="white", linewidths=0.8, zorder=4)
        if limit:
            handles[label["limit"]] = ax.axvline(limit, color=LIMIT_COLOUR, linestyle="--", linewidth=1, zorder=0)
            ax.annotate(view.limit_text, (limit, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(-3, -4), textcoords="offset points", ha="right", va="top", fontsize=7,
                        color=LIMIT_COLOUR)
        if not xs:
            ax.text(0.5, 0.5, f"no trial measured on {report.agent} yet", ha="center", va="center",
                    transform=ax.transAxes, color="#777777")
        if _log_scale(xs):
            ax.set_xscale("log")
        elif (x_range := _x_range(xs, limit)) is not None:
            ax.set_xlim(*x_range)
        if trained:
            accuracies = [r["accuracy"] for r in trained]
            low, high = min(accuracies), max(accuracies)
            pad = max(high - low, 0.02) * 0.08
            bottom = low - pad - (0.08 * (high - low + 2 * pad) if groups["untrained"] else 0.0)
            ax.set_ylim(bottom, high + pad)
        ax.set_title(view.title, fontsize=11)
        ax.set_xlabel(_axis_title(view, limit))
        ax.set_ylabel("validation accuracy")
        low, high = ax.get_ylim()
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0 if high - low > 0.05 else 1))
        ax.grid(True, color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
        if len(groups["pareto"]) <= 12:
            _label_points(fig, ax, groups["pareto"], trained, view.key)
    suffix = f" (latency and memory on {report.agent})" if len(report.agents) > 1 else ""
    counts = report.counts
    title = f"{report.name}: {counts['pareto']} Pareto trials of {counts['trials']}{suffix}"
    fig.suptitle(title, fontsize=12)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 3),
                   fontsize=8.5, frameon=False)
    fig.tight_layout(rect=(0, 0.1 if handles else 0, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _label_points(fig: Any, ax: Any, rows: list[dict[str, Any]], shown: list[dict[str, Any]],
                  key: str) -> None:
    """Label Pareto points ``#N code``; a label may not cover another label or sit near another point."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    pad = 7 * fig.dpi / 72  # keep labels this far from other points, so that none reads as another's
    points = {r["trial"]: tuple(ax.transData.transform((r[key], r["accuracy"]))) for r in shown}
    labels: list[Any] = []
    offsets = [((5, -10), "left"), ((5, 4), "left"), ((-5, -10), "right"), ((-5, 4), "right"),
               ((5, -18), "left")]
    for row in sorted(rows, key=lambda r: -r["accuracy"]):
        others = [Bbox.from_extents(x - pad, y - pad, x + pad, y + pad)
                  for number, (x, y) in points.items() if number != row["trial"]]
        for index, (offset, align) in enumerate(offsets):
            times = f" ({row['trials']} trials)" if row.get("trials", 1) > 1 else ""
            text = ax.annotate(f"#{row['trial']} {row['code'] or ''}{times}", (row[key], row["accuracy"]),
                               textcoords="offset points", xytext=offset, ha=align, fontsize=7,
                               color="#333333", zorder=5)
            box = text.get_window_extent(renderer)
            if index == len(offsets) - 1 or not any(box.overlaps(other) for other in labels + others):
                labels.append(box)
                break
            text.remove()


def _hover(row: dict[str, Any], report: Report) -> str:
    lines = [f"layers {row['code']}  widths {row['widths']}"]
    if row.get("accuracy") is not None:
        lines.append(f"accuracy {_fmt(row['accuracy'], 'acc')}")
    lines.append(f"params {_fmt(row.get('params'), 'int')}  ONNX {_fmt(row.get('onnx_kb'), 'kb')} KiB")
    for name in report.agents:
        latency, p90 = _fmt(row.get(f"latency_ms@{name}"), "ms"), _fmt(row.get(f"p90_ms@{name}"), "ms")
        peak = _fmt(row.get(f"model_peak_mib@{name}"), "mb")
        lines.append(f"{name}: {latency} ms (p90 {p90}), model peak {peak} MiB, "
                     f"form {row.get(f'form@{name}') or '-'}")
    if row.get("infeasible"):
        lines.append("infeasible: " + row["infeasible"])
    title = f"<b>trial {row['trial']}</b> ({html.escape(row['status'])})"
    if row.get("trials", 1) > 1:
        title += f", {row['trials']} trials (the sampler proposed it again)"
    return "<br>".join([title, *(html.escape(line, quote=False) for line in lines)])


def _trace(report: Report, rows: list[dict[str, Any]], key: str, name: str, legend: bool,
           y: list[float] | None = None, **style: Any) -> Any:
    import plotly.graph_objects as go

    return go.Scatter(x=[r[key] for r in rows], y=y if y is not None else [r["accuracy"] for r in rows],
                      name=name, legendgroup=name, showlegend=legend, hovertemplate="%{text}<extra></extra>",
                      text=[_hover(r, report) for r in rows], **style)


def plotly_figure(report: Report) -> Any:
    """The interactive version of the PNG: hover shows the architecture."""
    from plotly.subplots import make_subplots

    label = _legend_labels(report)
    views = _views(report)
    fig = make_subplots(rows=1, cols=len(views), subplot_titles=[v.title for v in views],
                        horizontal_spacing=0.08)
    shown: set[str] = set()
    for col, view in enumerate(views, start=1):
        groups = _points(report, view.key)

        def add(group: str, rows: list[dict[str, Any]], y: list[float] | None = None, key: str = view.key,
                col: int = col, **style: Any) -> None:
            fig.add_trace(_trace(report, rows, key, label[group], label[group] not in shown, y=y, **style),
                          row=1, col=col)
            shown.add(label[group])

        trained = [r["accuracy"] for g in ("pareto", "dominated", "infeasible") for r in groups[g]]
        if groups["untrained"]:
            floor = (min(trained) - 0.02) if trained else 0.0
            add("untrained", groups["untrained"], y=[floor] * len(groups["untrained"]), mode="markers",
                marker={"symbol": "line-ns-open", "size": 14, "color": INFEASIBLE_COLOUR})
        if groups["infeasible"]:
            add("infeasible", groups["infeasible"], mode="markers",
                marker={"symbol": "x", "size": 7, "color": INFEASIBLE_COLOUR})
        if groups["dominated"]:
            add("dominated", groups["dominated"], mode="markers",
                marker={"size": 8, "color": DOMINATED_COLOUR, "opacity": 0.55})
        if groups["pareto"]:
            add("front", _front_in_view(groups["pareto"], view.key), mode="lines", hoverinfo="skip",
                line={"shape": "hv", "color": PARETO_COLOUR})
            add("pareto", groups["pareto"], mode="markers",
                marker={"size": 11, "color": PARETO_COLOUR, "line": {"color": "white", "width": 1}})
        xs = [r[view.key] for g in groups.values() for r in g]
        limit = _near(xs, view.limit)
        if limit:
            fig.add_vline(x=limit, line_dash="dash", line_color=LIMIT_COLOUR, row=1, col=col,
                          annotation_text=view.limit_text, annotation_position="top left")
        if _log_scale(xs):
            fig.update_xaxes(type="log", row=1, col=col)
        elif (x_range := _x_range(xs, limit)) is not None:
            fig.update_xaxes(range=list(x_range), row=1, col=col)
        fig.update_xaxes(title_text=_axis_title(view, limit), row=1, col=col)
        fig.update_yaxes(title_text="validation accuracy", tickformat=".0%", row=1, col=col)
    fig.update_layout(template="plotly_white", height=480, margin={"l": 60, "r": 20, "t": 60, "b": 60},
                      legend={"orientation": "h", "y": -0.2}, hoverlabel={"align": "left"})
    return fig


# ----------------------------------------------------------------------------------------------
# The HTML page

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1240px;
color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:.9em}.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:6px 10px}
table{border-collapse:collapse;font-size:.86em;margin:.5em 0}
th,td{border-bottom:1px solid #e4e4e4;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f5f5f5;white-space:pre-line}td.s,th.s{text-align:left}
tr:hover td{background:#fafafa}code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f7f7f7;padding:10px;overflow-x:auto}.kv th{text-align:left;width:14em}.kv td{text-align:left}
ul.counts li{margin:.2em 0}details summary{cursor:pointer;color:#1f5fa8}
"""


def _table_html(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]], cls: str = "") -> str:
    def align(kind: str) -> str:
        return "s" if kind == "str" else ""

    head = "".join(f"<th class='{align(kind)}'>{html.escape(h)}</th>" for h, _, kind in columns)
    body = "".join(
        "<tr>" + "".join(f"<td class='{align(kind)}'>{html.escape(_fmt(row.get(key), kind))}</td>"
                         for _, key, kind in columns) + "</tr>"
        for row in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv_html(items: dict[str, Any]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_plain(v))}</td></tr>"
                   for k, v in items.items())
    return f"<table class='kv'>{body}</table>"


def _plain(value: Any) -> str:
    if value is None or value == {} or value == []:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _fingerprints_html(fingerprints: dict[str, dict[str, Any]]) -> str:
    """One table: a row per fingerprint field, a column per agent (the latest fingerprint of each)."""
    if not fingerprints:
        return "<p>No measurements recorded.</p>"
    fields = list(dict.fromkeys(key for fp in fingerprints.values() for key in fp))
    head = "<th class='s'>field</th>" + "".join(f"<th class='s'>{html.escape(a)}</th>" for a in fingerprints)
    body = "".join(
        f"<tr><th class='s'>{html.escape(name)}</th>"
        + "".join(f"<td class='s'>{html.escape(_plain(fp.get(name)))}</td>" for fp in fingerprints.values())
        + "</tr>" for name in fields)
    return f"<table class='kv fp'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: Report) -> str:
    """One self-contained page: plot, tables, counts, fingerprints and settings; works offline."""
    figure = plotly_figure(report).to_html(full_html=False, include_plotlyjs=True,
                                           config={"displaylogo": False, "responsive": True})
    esc = html.escape
    all_columns = [("status", "status", "str"), *table_columns(report),
                   ("infeasible / failure", "why", "str")]
    all_rows = [{**row, "why": row.get("infeasible") or row.get("fail_reason")} for row in report.trials]
    fingerprints = _fingerprints_html(report.fingerprints)
    config = report.config.model_dump(mode="json")
    keys = ("agents", "n_trials", "sampler", "seed", "constraints", "measure", "space_path", "artifacts",
            "artifacts_dir")
    settings = {key: config[key] for key in keys if config[key] is not None}
    settings["objectives"] = objective_text(report)
    warnings = "".join(f"<p class='warn'>{esc(line)}</p>" for line in report.warnings)
    space = json.dumps(config["space"], indent=2) if config["space"] is not None else "(not recorded)"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(report.name)}: Pareto report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<h1>Pareto report: {esc(report.name)}</h1>
<p class="meta">Generated {esc(report.generated)}. Objectives: {esc(objective_text(report))}.
Latency and memory shown for agent <b>{esc(report.agent)}</b>.</p>
{warnings}
<ul class="counts">{"".join(f"<li>{esc(line)}</li>" for line in count_lines(report))}</ul>
<h2>Pareto plot</h2>
<p class="meta">Hover a point for its architecture. Red: the Pareto set over all objectives (the line joins
the members no other member beats in that view); grey: dominated; light grey: infeasible.</p>
{figure}
<h2>Pareto set ({len(report.pareto)} trials, most accurate first)</h2>
{_table_html(report.pareto, table_columns(report), "pareto")}
<p class="meta">Layers: T<i>r</i> Toeplitz-like of displacement rank <i>r</i>, L<i>k</i> low-rank <i>k</i>,
D dense. Form: the deployed form of the Toeplitz-like layers chosen on the agent (fft, fftmm or dense;
measured interleaved; within the tie margin the smaller file). Latency: per call, median and p90 of the
timed samples; model peak: the peak resident set (VmHWM) after the runs above the process before the model
was loaded, i.e. the model's own memory, not the measuring process's. "unstable": still too spread after the
runner's last round; "slowed": the device ran slower than its calibration for the whole wait, so the latency
is corrected by the ratio to the reference workload only; "implausible": the device read the model's memory
below its own weights, which are shown instead. On an emulated board (qemu-user) the model's memory is the
bytes its session holds (counted inside the emulated process), not the peak while loading.</p>
<details><summary>All {len(report.trials)} trials</summary>
{_table_html(all_rows, all_columns, "all")}</details>
<h2>Devices</h2>
<p class="meta">The latest fingerprint each agent reported with its measurements.</p>
{fingerprints}
<h2>Search settings</h2>
{_kv_html(settings)}
<details><summary>Search space</summary><pre>{esc(space)}</pre></details>
</body></html>
"""
