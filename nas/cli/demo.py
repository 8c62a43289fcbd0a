"""``nas demo``: a small study on the bundled digits data with the local agent."""

from __future__ import annotations

import shutil

import click
from rich.console import Console

from nas.names import STUDY_NAME
from nas.storage import study_dir


@click.command()
@click.option("--name", type=STUDY_NAME, default="demo", show_default=True, help="Study name (studies/NAME).")
@click.option("--trials", "n_trials", type=click.IntRange(min=1), default=12, show_default=True)
@click.option("--fresh/--resume", default=True, show_default=True, help="Delete an earlier demo study first.")
@click.pass_context
def demo(ctx: click.Context, name: str, n_trials: int, fresh: bool) -> None:
    """Search the digits space on this machine and print the Pareto set (a few minutes on 2 cores)."""
    from nas.cli.report import report
    from nas.cli.study import resume, start

    if fresh and study_dir(name).exists():
        shutil.rmtree(study_dir(name))
    Console().print(f"[bold]nas demo[/]: {n_trials} trials of search_spaces/digits.toml, measured by the local agent")
    if study_dir(name).exists():
        ctx.invoke(resume, name=name)
    else:
        ctx.invoke(start, name=name, space_path="digits", n_trials=n_trials)
    ctx.invoke(report, name=name)
