"""The report's plots: a PNG (matplotlib) and the interactive figure of the HTML page (plotly).

Both show the same panels (accuracy against latency and against the model's own peak memory on the
focus agent), the same groups of points and the same colours, so the views, points, axis ranges and
legend labels are defined once here and each library only draws them. Both libraries are imported
inside the functions that draw, so that building a report or its table does not load them.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.results.report._build import Report
from nas.results.report._text import _fmt

# Colours shared by the PNG and the HTML page.
PARETO_COLOUR = "#d62728"
DOMINATED_COLOUR = "#8c8c8c"
INFEASIBLE_COLOUR = "#c7c7c7"
LIMIT_COLOUR = "#555555"


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
