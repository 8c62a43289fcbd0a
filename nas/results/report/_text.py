"""The report in words: number formats, table columns and count sentences, and the terminal table.

The terminal table and the HTML page show the same columns in the same formats, and the same
sentences explain the set under both; they are defined once here so that the two never drift apart.
"""

from __future__ import annotations

import math
from typing import Any

from nas.results.report._build import FLAGS, Report

CONSTRAINT_TEXT = {
    "max_latency_ms": ("latency", "ms"),
    "max_model_peak_mib": ("model peak memory", "MiB"),
    "max_params": ("parameters", ""),
}


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
