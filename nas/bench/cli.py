"""How fast the CLI answers ``--help`` and usage errors: torch, onnx, Optuna and paramiko are
imported only by the commands that use them.

Each command runs in a fresh interpreter, interleaved with ``python -c "import torch, onnx"`` (what
every command used to import up front, 5-12 s in all) so that both see the same load. Target: each
command's median wall time is at most half that import's (``--ratio``); on an idle machine the
commands take well under a second.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from nas.cli.options import finite_float

TARGET_RATIO = 0.25
BASELINE = "import torch, onnx"
COMMANDS = {
    "nas --help": ["--help"],
    "nas study start --help": ["study", "start", "--help"],
    "nas agent add --help": ["agent", "add", "--help"],
    "nas study start (usage error)": ["study", "start"],
}


def _wall(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=False, timeout=300)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nas bench cli", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command")
    parser.add_argument("--ratio", type=finite_float, default=TARGET_RATIO, help="target: command / torch import")
    args = parser.parse_args(argv)
    cli = [sys.executable, "-c", "from nas.cli import main; main()"]
    baseline: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeat):  # interleaved: every command and the baseline in each round
        baseline.append(_wall([sys.executable, "-c", BASELINE]))
        for name, extra in COMMANDS.items():
            times[name].append(_wall([*cli, *extra]))
    reference = statistics.median(baseline)
    table = Table(title=f"CLI start-up, median of {args.repeat}; python -c '{BASELINE}': {reference:.3f} s")
    for column in ("command", "median s", "max s", "/ torch import", f"<= {args.ratio:g}"):
        table.add_column(column, justify="left" if column == "command" else "right")
    failed = False
    for name, values in times.items():
        ratio = statistics.median(values) / reference
        failed |= ratio > args.ratio
        table.add_row(name, f"{statistics.median(values):.3f}", f"{max(values):.3f}", f"{ratio:.2f}",
                      "[green]yes[/]" if ratio <= args.ratio else "[red]no[/]")
    Console().print(table)
    return 1 if failed else 0
