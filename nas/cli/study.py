"""``nas study start|resume|status``.

Optuna, torch and the exporter are imported inside the commands, so that ``--help`` and usage
errors answer at once.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click
from rich.console import Console

from nas.cli.options import STUDY_NAME, FiniteFloatRange

if TYPE_CHECKING:
    import optuna

# nas.study's SAMPLERS keys, DEFAULT_SAMPLER and SEED_MAX, here so that --help need not import torch (a test
# checks they agree)
SAMPLER_NAMES = ("gp", "nsga2", "random", "tpe")
DEFAULT_SAMPLER = "gp"
SEED_MAX = 2**32 - 1
SAMPLER_HELP = ("gp: Gaussian-process Bayesian optimisation (log expected hypervolume improvement) after "
                "max(4, min(10, trials/8)) random trials, 0.5-1 s per proposal; tpe: multivariate TPE (grouped by "
                "conditional parameters) after as many, 10-15 ms per proposal; nsga2: NSGA-II with a "
                "population of max(4, min(50, trials/4)); random. Each trial's draws are seeded by (seed, trial "
                "number), so parallel workers differ and one worker repeats itself.")

storage_option = click.option("--storage", default=None,
                              help="Optuna storage URL [default: sqlite:///studies/NAME/study.db].")
timeout_option = click.option("--timeout", type=FiniteFloatRange(min=0, min_open=True), default=None,
                              help="Stop starting new trials after this many seconds.")


@click.group()
def study() -> None:
    """Start, resume and inspect search studies."""


@study.command()
@click.argument("name", type=STUDY_NAME)
@click.option("--space", "space_path", required=True, help="Search-space TOML file, or a shipped space's name.")
@click.option("--agent", "agents", multiple=True, help="Agent to measure on (repeatable) [default: local].")
@click.option("--trials", "n_trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="Complete trials to reach.")
@timeout_option
@storage_option
@click.option("--sampler", type=click.Choice(SAMPLER_NAMES), default=DEFAULT_SAMPLER, show_default=True,
              help=SAMPLER_HELP)
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=0, show_default=True,
              help="Sampler seed (each trial derives its own from it and its trial number).")
@click.option("--load-if-exists", is_flag=True, help="Continue a study of this name instead of refusing.")
@click.option("--artifacts", metavar="URL", default=None,
              help="Where ONNX files and weights go: a folder or s3://bucket/prefix (AWS environment "
                   "variables for endpoint and credentials); stored with the study "
                   "[default: studies/NAME/artifacts].")
def start(name: str, space_path: str, agents: tuple[str, ...], n_trials: int, timeout: float | None,
          storage: str | None, sampler: str, seed: int, load_if_exists: bool, artifacts: str | None) -> None:
    """Start a study NAME over a search space, measuring on the given agents."""
    from nas.study import start_study

    start_study(name, space_path, list(agents), n_trials, storage, sampler, seed, load_if_exists, artifacts)
    _run(name, storage, None, timeout)


@study.command()
@click.argument("name", type=STUDY_NAME)
@click.option("--trials", "n_trials", type=click.IntRange(min=1), default=None,
              help="New target of complete trials [default: the one it was started with].")
@timeout_option
@storage_option
def resume(name: str, n_trials: int | None, timeout: float | None, storage: str | None) -> None:
    """Continue study NAME where it stopped; completed trials and measurements are kept."""
    _run(name, storage, n_trials, timeout)


@study.command()
@click.argument("name", type=STUDY_NAME)
@storage_option
def status(name: str, storage: str | None) -> None:
    """Trial counts by state, the Pareto set's size and the best value of each objective."""
    from nas.storage import load_study

    show_status(load_study(name, storage), Console())


def _run(name: str, storage: str | None, n_trials: int | None, timeout: float | None) -> None:
    import optuna

    from nas.cli.progress import StudyProgress
    from nas.study import run_study

    if not click.get_current_context().find_root().obj.get("verbose"):
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # it logs each failed trial with a traceback
    console = Console()
    try:
        with StudyProgress(console) as progress:
            result = run_study(name, storage, n_trials, timeout, on_trial=progress.on_trial,
                               on_start=progress.on_start)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: completed trials are kept; continue with 'nas study resume {name}'")
        sys.exit(130)
    show_status(result, console)
    _say_if_short(result, console)


def _say_if_short(study: optuna.Study, console: Console) -> None:
    """A run that ended before its target (failed trials, --timeout) says how to go on."""
    from optuna.trial import TrialState

    from nas.study import study_config

    target = study_config(study).n_trials
    trials = study.get_trials(deepcopy=False)
    complete = sum(1 for t in trials if t.state == TrialState.COMPLETE)
    if complete < target:
        failed = sum(1 for t in trials if t.state == TrialState.FAIL)
        console.print(f"[yellow]{complete} of {target} trials complete[/] ({failed} failed so far); "
                      f"continue with 'nas study resume {study.study_name}'")


def show_status(study: optuna.Study, console: Console) -> None:
    from optuna.trial import TrialState
    from rich.table import Table

    from nas.results import pareto_front
    from nas.study import records, study_config

    config = study_config(study)
    trials = records(study)
    counts = {state.name.lower(): 0 for state in TrialState}
    for record in trials:
        counts[record.state.lower()] += 1
    infeasible = sum(1 for r in trials if r.complete and not r.feasible)
    front = pareto_front(study)
    console.print(f"study [bold]{study.study_name}[/]: {len(trials)} trials "
                  f"({', '.join(f'{n} {s}' for s, n in counts.items() if n)}; {infeasible} of the complete "
                  f"infeasible), target {config.n_trials} complete; Pareto set: {len(front)} trials")
    table = Table("objective", "direction", "best", "trial")
    for index, objective in enumerate(config.objectives):
        feasible = [r for r in trials if r.feasible]
        if not feasible:
            continue
        pick = max if objective.direction == "maximize" else min
        best = pick(feasible, key=lambda r, i=index: r.values[i])
        table.add_row(objective.label, objective.direction, f"{best.values[index]:.4g}", f"#{best.number}")
    console.print(table)
