"""What a running study shows: a progress bar with ETA and one line per finished trial."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def trial_line(trial: FrozenTrial) -> str:
    """``#3  T2 D  64-256-10  acc 0.962  latency 0.041 ms (fft)  ...`` for one finished trial."""
    attrs = trial.user_attrs
    head = f"#{trial.number:<3} {attrs.get('code', '?'):<14} {attrs.get('widths', ''):<16}"
    if trial.state == TrialState.FAIL:
        return f"{head} [red]failed[/]: {attrs.get('fail_reason', 'see the log')}"
    latency = "  ".join(
        f"{ms:.3f} ms@{agent} ({attrs.get('winner', {}).get(agent, '-')})"
        for agent, ms in attrs.get("latency_ms", {}).items()
    )
    if attrs.get("infeasible"):
        return f"{head} [yellow]infeasible[/] ({'; '.join(attrs['infeasible'])})  {latency}  not trained"
    test = f" (test {attrs['test_accuracy']:.3f})" if attrs.get("test_accuracy") is not None else ""
    return f"{head} acc {attrs.get('accuracy', 0):.3f}{test}  {latency}  params {attrs.get('params', 0):,}"


class StudyProgress:
    """Pass ``on_start`` and ``on_trial`` to ``nas.study.run_study``; use as a context manager."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=self.console, transient=True,
        )
        self.task = None

    def __enter__(self) -> StudyProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_start(self, remaining: int) -> None:
        self.task = self.progress.add_task("trials", total=remaining)

    def on_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.progress.console.print(trial_line(trial), highlight=False, soft_wrap=True)
        if self.task is not None:
            self.progress.advance(self.task)
