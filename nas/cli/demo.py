"""``nas demo [digits|kws]``: a small study on bundled or generated data with the local agent."""

from __future__ import annotations

import shutil

import click
from rich.console import Console

from nas.names import STUDY_NAME
from nas.storage import study_dir

DEMOS = {
    "digits": ("digits", 12, "scikit-learn's 8x8 digits"),
    "kws": ("kws", 8, "keywords synthesised with eSpeak NG (built and cached on first use)"),
}


@click.command()
@click.argument("space", type=click.Choice(sorted(DEMOS)), default="digits")
@click.option("--name", type=STUDY_NAME, default=None, help="Study name (studies/NAME) [default: demo, or demo-kws].")
@click.option("--trials", "n_trials", type=click.IntRange(min=1), default=None,
              help="Complete trials to reach [default: 12 for digits, 8 for kws].")
@click.option("--fresh/--resume", default=True, show_default=True, help="Delete an earlier demo study first.")
@click.pass_context
def demo(ctx: click.Context, space: str, name: str | None, n_trials: int | None, fresh: bool) -> None:
    """Search SPACE (digits or kws) on this machine and print the Pareto set (minutes on 2 cores)."""
    from nas.cli.report import report
    from nas.cli.study import resume, start

    space_name, default_trials, what = DEMOS[space]
    name = name or ("demo" if space == "digits" else f"demo-{space}")
    n_trials = n_trials or default_trials
    if fresh and study_dir(name).exists():
        shutil.rmtree(study_dir(name))
    Console().print(f"[bold]nas demo[/]: {n_trials} trials of search_spaces/{space_name}.toml ({what}), "
                    "measured by the local agent")
    if study_dir(name).exists():
        ctx.invoke(resume, name=name)
    else:
        ctx.invoke(start, name=name, space_path=space_name, n_trials=n_trials)
    ctx.invoke(report, name=name)
