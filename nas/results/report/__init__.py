"""The Pareto report of a study: a terminal table, CSV and JSON files, a PNG and one offline HTML page,
all from one :class:`Report` built by ``build_report``. Imported on first use."""

from nas._faces import lazy_face

_EXPORTS = {
    "FILES": "_build", "Report": "_build", "build_report": "_build", "count_lines": "_build",
    "default_out": "_build", "plotly_figure": "_build", "render_html": "_build", "render_table": "_build",
    "write_png": "_build", "write_report": "_build",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
