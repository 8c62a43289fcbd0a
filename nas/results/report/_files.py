"""The report's files: the two CSV tables, pareto.json, and ``write_report``, which writes them all.

The CSV columns are a fixed, ordered list rather than the rows' keys: a script reading the files sees
the same columns from every study, and the rows also hold nested values (the spec, the objective
values) a flat table cannot. pareto.json carries those, with the counts, fingerprints and settings;
a non-finite number, which JSON lacks, is written as null.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from nas.results.report._build import FLAGS, Report
from nas.results.report._html import render_html
from nas.results.report._plot import write_png
from nas.storage import study_dir

FILES = ("pareto.csv", "trials.csv", "pareto.json", "pareto.png", "report.html")
_NOT_IN_PARETO = ("status", "infeasible", "fail_reason")


def csv_columns(agents: list[str]) -> list[str]:
    """The columns of trials.csv, in order (pareto.csv drops status, infeasible and fail_reason)."""
    per_agent = [f"{what}@{a}" for a in agents
                 for what in ("latency_ms", "p90_ms", "ci_ms", "timed_ms", "device_speed", "model_peak_mib",
                              "process_peak_mib", "form")]
    return ["trial", "status", "code", "widths", "form", "params", "onnx_kb", "weight_kb", "accuracy", "test_accuracy",
            *per_agent, *FLAGS, "infeasible", "fail_reason", "epochs", "train_seconds"]


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
    """Where ``nas report NAME`` writes its files unless told otherwise."""
    return study_dir(name) / "report"
