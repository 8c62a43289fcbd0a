"""The report as one HTML page: the interactive plot, the tables, counts, fingerprints and settings.

The page is self-contained (plotly.js inlined, the CSS below), so that it opens offline: copied off
the machine that ran the study, or on one without network access. It shows the terminal table's columns in the same
formats (``nas.results.report._text``) and the interactive version of the PNG.
"""

from __future__ import annotations

import html
import json
from typing import Any

from nas.results.report._build import Report
from nas.results.report._plot import plotly_figure
from nas.results.report._text import _fmt, count_lines, objective_text, table_columns

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
