"""``nas demo [digits|kws]``: a small study on bundled or generated data with the local agent.

An earlier demo study is never deleted (it may hold bundles picked into it): a new demo gets the
next free name (``demo-2``, ``demo-3``...) and says so; ``--resume`` continues the latest one.
"""

from __future__ import annotations

import click
from rich.console import Console

from nas.cli.options import STUDY_NAME

DEMOS = {
    "digits": ("digits", 12, "scikit-learn's 8x8 digits"),
    "kws": ("kws", 8, "keywords synthesised with eSpeak NG (built and cached on first use)"),
}


@click.command()
@click.argument("space", type=click.Choice(sorted(DEMOS)), default="digits")
@click.option("--name", type=STUDY_NAME, default=None, help="Study name (studies/NAME) [default: demo, or demo-kws].")
@click.option("--trials", "n_trials", type=click.IntRange(min=1), default=None,
              help="Complete trials to reach [default: 12 for digits, 8 for kws].")
@click.option("--resume", "resume_", is_flag=True, help="Continue the latest demo study instead of starting one.")
@click.pass_context
def demo(ctx: click.Context, space: str, name: str | None, n_trials: int | None, resume_: bool) -> None:
    """Search SPACE (digits or kws) on this machine and print the Pareto set (minutes on 2 cores)."""
    from nas.cli.report import report
    from nas.cli.study import resume, start
    from nas.storage import study_dir

    space_name, default_trials, what = DEMOS[space]
    name = name or ("demo" if space == "digits" else f"demo-{space}")
    n_trials = n_trials or default_trials
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
                      f"(continue the last one with 'nas demo {space} --resume')")
    console.print(f"[bold]nas demo[/]: {n_trials} trials of search_spaces/{space_name}.toml ({what}) in "
                  f"studies/{fresh}, measured by the local agent")
    ctx.invoke(start, name=fresh, space_path=space_name, n_trials=n_trials)
    ctx.invoke(report, name=fresh)
