"""How fast the CLI answers ``--help`` and usage errors: torch, onnx, Optuna and paramiko are
imported only by the commands that use them.

Each command runs in a fresh interpreter, interleaved with a bare ``python -c pass`` so that both
see the same load. Target: the median of each command is at most 1 s of wall time (what it took
before: 5-12 s, importing torch and the exporter up front).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

TARGET_S = 1.0
COMMANDS = {
    "nas --help": ["--help"],
    "nas study start --help": ["study", "start", "--help"],
    "nas agent add --help": ["agent", "add", "--help"],
    "nas study start (usage error)": ["study", "start"],
}


def _wall(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=False, timeout=120)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nas bench cli", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per command")
    args = parser.parse_args(argv)
    cli = [sys.executable, "-c", "from nas.cli import main; main()"]
    baseline: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeat):  # interleaved: every command and the baseline in each round
        baseline.append(_wall([sys.executable, "-c", "pass"]))
        for name, extra in COMMANDS.items():
            times[name].append(_wall([*cli, *extra]))
    table = Table(title=f"CLI start-up, median of {args.repeat} (bare python: {statistics.median(baseline):.3f} s)")
    for column in ("command", "median s", "max s", "x bare python", f"<= {TARGET_S:g} s"):
        table.add_column(column, justify="left" if column == "command" else "right")
    failed = False
    for name, values in times.items():
        median = statistics.median(values)
        ok = median <= TARGET_S
        failed |= not ok
        table.add_row(name, f"{median:.3f}", f"{max(values):.3f}", f"{median / statistics.median(baseline):.1f}",
                      "[green]yes[/]" if ok else "[red]no[/]")
    Console().print(table)
    return 1 if failed else 0
