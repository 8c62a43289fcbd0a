"""``nas report NAME``: the Pareto set as a table, plus CSV, JSON, PNG and an offline HTML page."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from nas.cli.options import STUDY_NAME


@click.command()
@click.argument("name", type=STUDY_NAME)
@click.option("--storage", metavar="URL", help="Optuna storage URL (default: sqlite:///studies/NAME/study.db).")
@click.option("--agent", metavar="A",
              help="Agent whose latency and memory the plots show (default: the study's first).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Folder for the report files (default: studies/NAME/report).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "html"]), default="table",
              show_default=True,
              help="What to print: the table, pareto.csv or pareto.json on stdout, or the path of "
                   "report.html. All files are written in every case.")
@click.option("--layers", "layers_of", type=click.IntRange(min=0), metavar="TRIAL",
              help="Instead: measure trial TRIAL on the agent with onnxruntime's profiler and show the time "
                   "per layer (which layer to make structured next).")
def report(name: str, storage: str | None, agent: str | None, out: Path | None, fmt: str,
           layers_of: int | None) -> None:
    """Show the Pareto set of study NAME and write its report files.

    The set holds the feasible complete trials no other trial beats on every objective. Files:
    pareto.csv, trials.csv, pareto.json, pareto.png and report.html (one page, works offline).
    """
    from rich.console import Console

    from nas.results.report import build_report, default_out, render_table, write_report
    from nas.study import open_study

    if layers_of is not None:
        from nas.results import layer_table

        Console().print(layer_table(open_study(name, storage), layers_of, agent))
        return
    result = build_report(open_study(name, storage), agent=agent)
    folder = out or default_out(name)
    paths = write_report(result, folder)
    err = Console(stderr=True)
    for line in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
    if fmt == "table":
        console = Console(width=None if sys.stdout.isatty() else 200)
        console.print(render_table(result))
        console.print(f"\nWrote {', '.join(paths)} to {folder}/", highlight=False)
        return
    if fmt == "html":
        click.echo(paths["report.html"])
    else:
        click.echo(paths[f"pareto.{fmt}"].read_text(), nl=False)
    err.print(f"Wrote {', '.join(paths)} to {folder}/", highlight=False)
