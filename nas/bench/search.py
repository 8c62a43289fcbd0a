"""The search's value over guessing: hypervolume of the feasible front against trials, per sampler.

Runs the same space (default ``kws``) on the local agent with the default sampler (GP), TPE,
NSGA-II and random search, several seeds each, the same number of trials, and computes after every trial
the hypervolume of the feasible complete trials. Objectives are normalised against a fixed
reference point: ``1 - accuracy`` (reference 1), latency over the space's ``max_latency_ms``
(reference 1) and ``log10(params)`` over that of the largest candidate (reference 1). Target:
the default sampler's mean curve reaches random search's final mean hypervolume (within a 1 %
tie margin) within half the trials (exit code 1 when it does not). With one seed every sampler
starts from the same random candidates (each trial's draws are seeded by seed and trial number).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from rich.console import Console
from rich.table import Table

from nas.study import DEFAULT_SAMPLER

SAMPLER_NAMES = ("gp", "tpe", "nsga2", "random")
TIE_MARGIN = 0.01  # latency is measured anew in every study: within 1 % counts as reached


def _normalised(trial: optuna.trial.FrozenTrial, latency_ref: float, params_ref: float) -> np.ndarray | None:
    from nas.study import TrialRecord

    record = TrialRecord.from_trial(trial)
    data = record.data
    if trial.state != optuna.trial.TrialState.COMPLETE or data.infeasible or data.accuracy is None:
        return None
    latency = record.latency_ms(next(iter(data.agents)))
    return np.array([1.0 - data.accuracy, min(latency / latency_ref, 1.0),
                     min(math.log10(max(data.params, 1)) / params_ref, 1.0)])


def hypervolume_curve(trials: list[optuna.trial.FrozenTrial], latency_ref: float, params_ref: float) -> list[float]:
    """Hypervolume of the feasible points among the first n trials, for n = 1..len(trials)."""
    from optuna._hypervolume import compute_hypervolume  # Optuna's WFG implementation

    points, curve = [], []
    for trial in sorted(trials, key=lambda t: t.number):
        point = _normalised(trial, latency_ref, params_ref)
        if point is not None:
            points.append(point)
        curve.append(float(compute_hypervolume(np.array(points), np.ones(3))) if points else 0.0)
    return curve


def _largest_params(space_path: str) -> float:
    """log10 of the parameter count of the largest candidate (every layer dense at the widest width)."""
    from nas.space import load_space

    space = load_space(space_path)
    data = space.data.load()
    widths = [data.in_features] + [max(space.backbone.widths)] * max(space.backbone.hidden_layers)
    params = sum(a * b + b for a, b in zip(widths, [*widths[1:], data.num_classes], strict=True))
    return math.log10(params)


def _space_file(space_path: str, epochs: int | None, folder: Path) -> str:
    """The space itself, or a copy with fewer training epochs for a reduced budget."""
    if epochs is None:
        return space_path
    from nas.space import resolve_space_path

    lines = [line for line in resolve_space_path(space_path).read_text().splitlines()
             if not line.strip().startswith("epochs")]
    lines.insert(lines.index("[training]") + 1, f"epochs = {epochs}")
    path = folder / "space.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nas bench search", description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="kws", help="search space (file or shipped name)")
    parser.add_argument("--trials", type=int, default=40, help="complete trials per study")
    parser.add_argument("--seeds", type=int, default=5, help="studies per sampler")
    parser.add_argument("--samplers", default=",".join(SAMPLER_NAMES), help="comma-separated")
    parser.add_argument("--epochs", type=int, default=None, help="override the space's training epochs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"), help="folder for search.png and .md")
    args = parser.parse_args(argv)

    import torch

    from nas.space import load_space
    from nas.study import run_study, start_study

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    console = Console()
    samplers = args.samplers.split(",")
    started = time.perf_counter()
    curves: dict[str, list[list[float]]] = {name: [] for name in samplers}
    with tempfile.TemporaryDirectory(prefix="nas-bench-search-") as tmp:
        os.environ.setdefault("NAS_HOME", str(Path(tmp) / "home"))
        space_path = _space_file(args.space, args.epochs, Path(tmp))
        space = load_space(space_path)
        latency_ref = space.constraints.max_latency_ms or 10.0
        params_ref = _largest_params(space_path)
        for seed in range(args.seeds):  # interleaved, so that load from other processes weighs on every sampler
            for name in samplers:
                study_name = f"{name}-{seed}"
                storage = f"sqlite:///{tmp}/{study_name}.db"
                start_study(study_name, space_path, ["local"], args.trials, storage=storage, sampler=name,
                            seed=seed, artifacts=str(Path(tmp) / "artifacts"))
                study = run_study(study_name, storage=storage)
                curve = hypervolume_curve(study.get_trials(deepcopy=False), latency_ref, params_ref)
                curves[name].append(curve[: args.trials])
                console.print(f"{study_name}: final hypervolume {curve[-1]:.4f} "
                              f"({time.perf_counter() - started:.0f} s so far)")
    wall = time.perf_counter() - started
    n = min(len(c) for cs in curves.values() for c in cs)
    mean = {name: np.mean([c[:n] for c in cs], axis=0) for name, cs in curves.items()}
    std = {name: np.std([c[:n] for c in cs], axis=0) for name, cs in curves.items()}
    checkpoints = sorted({max(1, n // 4), max(1, n // 2), max(1, 3 * n // 4), n})
    table = Table("sampler", *[f"HV @ {k}" for k in checkpoints], title="mean hypervolume (sd) vs trials")
    for name in samplers:
        table.add_row(name, *[f"{mean[name][k - 1]:.4f} ({std[name][k - 1]:.4f})" for k in checkpoints])
    console.print(table)
    _plot(mean, std, args.out / "search.png")
    budget = (f"space {args.space}, {args.trials} trials, {args.seeds} seeds, epochs {args.epochs or 'as the space'}, "
              f"{wall:.0f} s")
    md = [f"`nas bench search {' '.join(argv if argv is not None else sys.argv[1:])}` ({budget})", "",
          "| sampler | " + " | ".join(f"HV @ {k}" for k in checkpoints) + " |",
          "|---|" + "---|" * len(checkpoints)]
    md += [f"| {name} | " + " | ".join(f"{mean[name][k - 1]:.4f} ± {std[name][k - 1]:.4f}" for k in checkpoints)
           + " |" for name in samplers]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search.md").write_text("\n".join(md) + "\n")
    console.print(budget)
    if "random" not in mean:
        return 0
    target = mean["random"][-1]
    reached = {name: next((k + 1 for k, value in enumerate(curve) if value >= target * (1 - TIE_MARGIN)), None)
               for name, curve in mean.items()}
    for name in samplers:
        console.print(f"{name} reaches random's final hypervolume {target:.4f} (1 % tie margin) at trial "
                      f"{reached[name]}")
    (args.out / "search.json").write_text(json.dumps({"curves": curves, "reached": reached}))
    if DEFAULT_SAMPLER not in mean:
        return 0
    console.print(f"default sampler ({DEFAULT_SAMPLER}): trial {reached[DEFAULT_SAMPLER]} (target <= {n // 2})")
    if reached[DEFAULT_SAMPLER] is None or reached[DEFAULT_SAMPLER] > n // 2:
        console.print("[red]MISSED[/]: the default sampler did not reach random's final hypervolume in half the trials")
        return 1
    return 0


def _plot(mean: dict[str, np.ndarray], std: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in mean.items():
        x = np.arange(1, len(curve) + 1)
        ax.plot(x, curve, label=name)
        ax.fill_between(x, curve - std[name], curve + std[name], alpha=0.2)
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (normalised objectives)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
