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

from nas.study import AgentMeasurement, TrialRecord


def trial_line(trial: FrozenTrial) -> str:
    """``#3  T2 D  64-256-10  acc 0.962  0.041 ms@local (fft) 0.8 MiB  ...`` for one finished trial.

    A latency still too spread after the runner's last round is marked ``unstable``, one measured
    while the device stayed slower than its calibration ``slowed``; a form the agent cannot run is named.
    """
    record = TrialRecord.from_trial(trial)
    data = record.data
    head = f"#{trial.number:<3} {data.code or '?':<14} {data.widths or '':<16}"
    if trial.state == TrialState.FAIL:
        return f"{head} [red]failed[/]: {data.fail_reason or 'see the log'}"
    latency = "  ".join(agent_figures(agent, measured) for agent, measured in data.agents.items())
    if data.infeasible:
        return f"{head} [yellow]infeasible[/] ({'; '.join(data.infeasible)})  {latency}  not trained"
    test = f" (test {data.test_accuracy:.3f})" if data.test_accuracy is not None else ""
    return f"{head} acc {data.accuracy or 0:.3f}{test}  {latency}  params {data.params or 0:,}"


def agent_figures(agent: str, measured: AgentMeasurement) -> str:
    """One agent's part of a trial line: the chosen form's latency and memory, and what to doubt."""
    chosen = measured.chosen
    if chosen is None:
        return f"-@{agent}"
    text = f"{chosen.median_ms:.4g} ms@{agent} ({measured.winner}) {chosen.model_peak_mib:.1f} MiB"
    if chosen.unstable:
        text += f" [yellow]unstable[/] (spread {chosen.spread:.0%})"
    if chosen.slowed:
        text += f" [yellow]slowed[/] (device at {chosen.device_speed or 0:.2f}x its calibrated speed)"
    if chosen.implausible:
        text += " [yellow]implausible[/] (memory read below the weights, which are shown)"
    missing = [form for form, figures in measured.forms.items() if not figures.available]
    if missing:
        text += f" [dim]{', '.join(missing)} unavailable[/]"
    return text


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
