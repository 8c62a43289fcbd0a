"""Per-trial overhead of the study engine on the demo space.

A trial is timed from Optuna's ask to its tell. Engine overhead is everything in it but training, the
device's timed runs and the sampler's own computation of the proposal (the search, shown in its own
column: the default GP sampler takes 0.5-1 s, TPE 10-15 ms): storage bookkeeping, building and
exporting the candidate, starting each measurement and creating its sessions, artifact writing. The
target is under 10% of trial time, summed over the trials that were trained. What a study run pays
once before its first trial (opening the storage and the agents, calibrating them, torch importing
its compiler stack) is printed on its own line: it does not grow with the number of trials.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from pathlib import Path

import optuna
from rich.console import Console
from rich.table import Table

TARGET = 0.10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nas bench overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--space", default="digits")
    parser.add_argument("--sampler", default=None, help="the study's sampler [default: the CLI's default]")
    args = parser.parse_args(argv)

    from nas.study import TrialData, run_study, start_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="nas-bench-") as tmp:
        os.environ.setdefault("NAS_HOME", str(Path(tmp) / "home"))
        storage = f"sqlite:///{tmp}/study.db"
        started = time.perf_counter()
        sampler = {"sampler": args.sampler} if args.sampler else {}
        start_study("bench", args.space, ["local"], args.trials, storage=storage, artifacts=str(Path(tmp) / "art"),
                    **sampler)
        began = datetime.datetime.now()
        study = run_study("bench", storage=storage)
        wall = time.perf_counter() - started

    table = Table("trial", "code", "total s", "train s", "device s", "sampler s", "export s", "overhead s",
                  "overhead %",
                  title=f"engine overhead per trial ({args.space}, local agent, {args.sampler or 'default'} sampler)")
    sums = {"total": 0.0, "overhead": 0.0, "sampler": 0.0}
    for trial in study.trials:
        data = TrialData.load(trial.user_attrs)
        timing = data.timing
        if not timing or not data.trained or trial.datetime_complete is None:
            continue
        # from Optuna's ask (the sampler's proposal) to its tell: the whole trial as the study sees it
        total = (trial.datetime_complete - trial.datetime_start).total_seconds()
        overhead = total - timing["train_s"] - timing["device_s"] - timing["sampler_s"]
        sums["total"] += total
        sums["overhead"] += overhead
        sums["sampler"] += timing["sampler_s"]
        table.add_row(str(trial.number), data.code or "?", f"{total:.2f}", f"{timing['train_s']:.2f}",
                      f"{timing['device_s']:.2f}", f"{timing['sampler_s']:.2f}", f"{timing['export']:.2f}",
                      f"{overhead:.2f}", f"{100 * overhead / total:.1f}")
    console.print(table)
    if not sums["total"]:
        console.print("[red]no trained trial to measure[/]")
        return 1
    ratio = sums["overhead"] / sums["total"]
    first = min((t.datetime_start for t in study.trials if t.datetime_start), default=None)
    if first is not None:
        startup = (first - began).total_seconds()
        console.print(f"start-up before the first trial (once per study run): {startup:.1f} s")
    console.print(f"study wall time {wall:.1f} s for {args.trials} trials; the sampler's proposals "
                  f"{100 * sums['sampler'] / sums['total']:.1f}% of trained-trial time; engine overhead "
                  f"{100 * ratio:.1f}% (target < {100 * TARGET:.0f}%)")
    if ratio >= TARGET:
        console.print(f"[red]MISSED[/]: engine overhead {100 * ratio:.1f}% >= {100 * TARGET:.0f}%")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
