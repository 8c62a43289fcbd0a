"""The Pareto report of a study: a terminal table, CSV and JSON files, a PNG and one offline HTML page,
all from one :class:`Report` built by ``build_report``. Imported on first use.

Files written (``studies/NAME/report/`` by default):

``pareto.csv``   the Pareto set, one row per trial, most accurate first
``trials.csv``   every trial, with its status (pareto, dominated, infeasible, failed, running...)
``pareto.json``  the Pareto set with full architecture specs, the counts, fingerprints and settings
``pareto.png``   accuracy vs latency and vs the model's own peak memory on the chosen agent
``report.html``  one self-contained page (plotly.js inlined: it works offline)

Inside: ``_build`` (the report model), ``_text`` (formats shared by the table and the page, and the
terminal table), ``_files`` (CSV, JSON, ``write_report``), ``_plot`` (the PNG and the interactive
figure) and ``_html`` (the page).
"""

from device_agents.lazy import lazy_face

_EXPORTS = {
    "Report": "_build", "build_report": "_build",
    "count_lines": "_text", "render_table": "_text",
    "FILES": "_files", "default_out": "_files", "write_report": "_files",
    "plotly_figure": "_plot", "write_png": "_plot",
    "render_html": "_html",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
