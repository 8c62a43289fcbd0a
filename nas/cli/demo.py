"""``nas demo``: a small study on the bundled digits data with the local agent.

An earlier demo study is never deleted (it may hold bundles picked into it): a new demo gets the
next free name (``demo-2``, ``demo-3``...) and says so; ``--resume`` continues the latest one.
"""

from __future__ import annotations

import click
from rich.console import Console

from nas.names import STUDY_NAME


@click.command()
@click.option("--name", type=STUDY_NAME, default="demo", show_default=True, help="Study name (studies/NAME).")
@click.option("--trials", "n_trials", type=click.IntRange(min=1), default=12, show_default=True)
@click.option("--resume", "resume_", is_flag=True, help="Continue the latest demo study instead of starting one.")
@click.pass_context
def demo(ctx: click.Context, name: str, n_trials: int, resume_: bool) -> None:
    """Search the digits space on this machine and print the Pareto set (a few minutes on 2 cores)."""
    from nas.cli.report import report
    from nas.cli.study import resume, start
    from nas.storage import study_dir

    taken = [name, *(f"{name}-{n}" for n in range(2, 1000))]
    existing = [candidate for candidate in taken if study_dir(candidate).exists()]
    console = Console()
    if resume_ and existing:
        latest = existing[-1]
        console.print(f"[bold]nas demo[/]: continuing studies/{latest}")
        ctx.invoke(resume, name=latest)
        ctx.invoke(report, name=latest)
        return
    fresh = next(candidate for candidate in taken if not study_dir(candidate).exists())
    if fresh != name:
        console.print(f"studies/{name} exists and is kept; this demo is [bold]{fresh}[/] "
                      f"(continue the last one with 'nas demo --resume')")
    console.print(f"[bold]nas demo[/]: {n_trials} trials of search_spaces/digits.toml in studies/{fresh}, "
                  "measured by the local agent")
    ctx.invoke(start, name=fresh, space_path="digits", n_trials=n_trials)
    ctx.invoke(report, name=fresh)
