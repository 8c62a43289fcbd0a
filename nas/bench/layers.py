"""Layer latency: dense vs low-rank vs Toeplitz-like, in PyTorch and onnxruntime, on one thread.

Forward (``torch.no_grad``) and forward+backward medians in PyTorch, forward medians in
onnxruntime for the deployed forms (Toeplitz-like "fft"; the "dense" form of a Toeplitz-like layer is
the same ``Gemm`` graph as the dense layer, so the dense row stands for it). Every number is the
median of timed runs taken after warm-up until both a minimum count and a minimum duration are
reached. Exits 1, naming the miss, unless in this run:

- Toeplitz-like r=1 forward at n=4096, batch 1, PyTorch is >= 8x faster than dense;
- its forward+backward at n=4096, batch 64, PyTorch is >= 5x faster than dense;
- its "fft" form at n=4096, batch 1, onnxruntime is >= 3x faster than the dense ONNX model.

Each target ratio is re-measured after the table as the median of interleaved (dense, Toeplitz-like)
pairs, so that load from other processes weighs on both sides alike.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from nas.export import export_onnx
from nas.layers import deploy, make_layer

SIZES = (256, 512, 1024, 2048, 4096)
RANKS = (1, 2, 4, 8)
BATCHES = (1, 64)
LOW_RANK = 16
QUICK_SIZES = (1024, 4096)
QUICK_RANKS = (1, 8)
CHECK_ROUNDS = 5


@dataclass(frozen=True)
class Target:
    """``dense / toeplitz(r=1) >= ratio`` for one measurement."""

    what: str
    n: int
    batch: int
    column: str
    ratio: float


TARGETS = (
    Target("PyTorch forward", 4096, 1, "torch_fwd", 8.0),
    Target("PyTorch forward+backward", 4096, 64, "torch_fwdbwd", 5.0),
    Target("onnxruntime fft form vs dense ONNX", 4096, 1, "ort", 3.0),
)


@dataclass
class Row:
    n: int
    batch: int
    layer: str
    params: int
    times: dict[str, float] = field(default_factory=dict)  # column -> median seconds
    fns: dict[str, Callable[[], object]] = field(default_factory=dict, repr=False)


def measure(fn: Callable[[], object], min_reps: int, min_time: float, warmup: int = 3) -> float:
    """Median seconds of ``fn()`` after ``warmup`` calls, timed until ``min_reps`` and ``min_time``."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    clock = time.perf_counter
    started = clock()
    while len(samples) < min_reps or clock() - started < min_time:
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return statistics.median(samples)


def layer_kinds(ranks: tuple[int, ...]) -> list[tuple[str, str, int | None]]:
    """(code, kind, rank) of every layer measured at one size; codes as in architecture specs."""
    kinds: list[tuple[str, str, int | None]] = [("D", "dense", None), (f"L{LOW_RANK}", "lowrank", LOW_RANK)]
    return kinds + [(f"T{r}", "toeplitz", r) for r in ranks]


LEGEND = (
    f"D dense, L{LOW_RANK} low-rank k={LOW_RANK}, Tr Toeplitz-like with displacement rank r (ONNX: its fft "
    "form; its dense form is the D graph). Median ms; xD = speed-up over D at the same n and batch."
)


def ort_session(path: Path, threads: int):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(
    sizes: tuple[int, ...],
    ranks: tuple[int, ...],
    min_reps: int,
    min_time: float,
    threads: int,
    onnx: bool,
    progress: Callable[[str], None],
) -> list[Row]:
    """Measure every layer; rows the targets compare keep their timed callables in ``Row.fns``."""
    keep = {(target.n, target.batch, code) for target in TARGETS for code in ("D", "T1")}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="nas-bench-layers-") as tmp:
        for n in sizes:
            for code, kind, rank in layer_kinds(ranks):
                torch.manual_seed(0)
                layer = make_layer(kind, n, n, rank)
                params = sum(p.numel() for p in layer.parameters())
                session = None
                if onnx:
                    progress(f"n={n} {code}: export")
                    form = "fft" if kind == "toeplitz" else "dense"
                    path = export_onnx(deploy(layer, form), n, Path(tmp) / f"{n}-{code}.onnx")
                    session = ort_session(path, threads)
                    path.unlink()
                for batch in BATCHES:
                    progress(f"n={n} {code} batch {batch}")
                    row = Row(n, batch, code, params)
                    fns = timed_calls(layer, session, torch.randn(batch, n))
                    for column, fn in fns.items():
                        row.times[column] = measure(fn, min_reps, min_time)
                    if (n, batch, code) in keep:
                        row.fns = fns
                    rows.append(row)
    rows.sort(key=lambda row: (row.n, row.batch))  # stable: layers stay in order
    return rows


def timed_calls(layer: nn.Module, session, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """What each column times: PyTorch forward (no autograd), forward+backward, onnxruntime forward."""

    def forward() -> None:
        with torch.no_grad():
            layer(x)

    def forward_backward() -> None:
        layer(x).sum().backward()  # gradients accumulate: no zeroing, like a step without the optimizer

    fns: dict[str, Callable[[], object]] = {"torch_fwd": forward, "torch_fwdbwd": forward_backward}
    if session is not None:
        feed = {"x": x.numpy()}
        fns["ort"] = lambda: session.run(None, feed)
    return fns


def check(
    rows: list[Row], rounds: int, min_reps: int, min_time: float, progress: Callable[[str], None]
) -> list[tuple[Target, float | None, bool]]:
    """Each target with its ratio (None if not measured) and whether it is met.

    The ratio is re-measured: ``rounds`` interleaved pairs (dense, then Toeplitz-like), the median
    of the per-pair ratios -- so that load from other processes hits both sides alike.
    """
    by_key = {(row.n, row.batch, row.layer): row for row in rows}
    results = []
    for target in TARGETS:
        dense = by_key.get((target.n, target.batch, "D"))
        toeplitz = by_key.get((target.n, target.batch, "T1"))
        if dense is None or toeplitz is None or target.column not in dense.fns:
            results.append((target, None, False))
            continue
        progress(f"target: {target.what}")
        ratios = [
            measure(dense.fns[target.column], min_reps, min_time)
            / measure(toeplitz.fns[target.column], min_reps, min_time)
            for _ in range(rounds)
        ]
        ratio = statistics.median(ratios)
        results.append((target, ratio, ratio >= target.ratio))
    return results


COLUMNS = (("torch_fwd", "torch fwd"), ("torch_fwdbwd", "torch fwd+bwd"), ("ort", "ORT fwd"))


def table_rows(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and cells: times in ms plus the speed-up over dense at the same n and batch."""
    dense = {(row.n, row.batch): row for row in rows if row.layer == "D"}
    header = ["n", "batch", "layer", "params"]
    for _, title in COLUMNS:
        header += [title, "xD"]
    cells = []
    for row in rows:
        line = [str(row.n), str(row.batch), row.layer, f"{row.params:,}"]
        for column, _ in COLUMNS:
            value = row.times.get(column)
            base = dense.get((row.n, row.batch))
            line.append("-" if value is None else f"{value * 1e3:.3f}")
            line.append(
                "-"
                if value is None or base is None or column not in base.times
                else f"{base.times[column] / value:.1f}"
            )
        cells.append(line)
    return header, cells


def markdown(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    return "\n".join(lines) + "\n"


def environment(threads: int) -> str:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, {threads} thread(s)"
    )


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str], None]]:
    if not enabled:
        yield lambda _message: None
        return
    try:
        from rich.console import Console
    except ImportError:
        yield lambda message: print(message, file=sys.stderr, flush=True)
        return
    with Console(stderr=True).status("measuring") as status:
        yield lambda message: status.update(f"measuring {message}")


def print_table(header: list[str], cells: list[list[str]], title: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"{title}\n{LEGEND}\n")
        print(markdown(header, cells))
        return
    table = Table(*header, title=title, caption=LEGEND)
    previous = None
    for line in cells:
        if previous is not None and (line[0], line[1]) != previous:
            table.add_section()
        table.add_row(*line)
        previous = (line[0], line[1])
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nas bench layers", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"n in {QUICK_SIZES}, r in {QUICK_RANKS}, fewer repetitions; still checks the targets",
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for PyTorch and onnxruntime")
    parser.add_argument("--min-reps", type=int, default=None, help="timed runs per measurement, at least")
    parser.add_argument("--min-time", type=float, default=None, help="seconds per measurement, at least")
    parser.add_argument("--no-onnx", action="store_true", help="skip onnxruntime (its target then fails)")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    args = parser.parse_args(argv)

    sizes, ranks = (QUICK_SIZES, QUICK_RANKS) if args.quick else (SIZES, RANKS)
    min_reps = args.min_reps or (5 if args.quick else 10)
    min_time = args.min_time if args.min_time is not None else (0.1 if args.quick else 0.25)
    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)

    started = time.perf_counter()
    with _progress(sys.stderr.isatty()) as progress:
        rows = run(sizes, ranks, min_reps, min_time, args.threads, not args.no_onnx, progress)
        results = check(rows, CHECK_ROUNDS, max(3, min_reps // 2), min_time / 2, progress)
    wall = time.perf_counter() - started

    header, cells = table_rows(rows)
    title = f"Layer latency, median ms ({environment(args.threads)})"
    print_table(header, cells, title)
    failed = False
    lines = []
    for target, ratio, ok in results:
        failed |= not ok
        measured = "not measured" if ratio is None else f"{ratio:.1f}x (median of {CHECK_ROUNDS} paired runs)"
        lines.append(
            f"{'PASS' if ok else 'FAIL'} T1 vs D, {target.what}, n={target.n} "
            f"batch {target.batch}: {measured} (target >= {target.ratio:g}x)"
        )
    print("\n".join(lines))
    print(f"took {wall:.0f} s")
    if args.markdown:
        command = "nas bench layers" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
        text = (
            f"Command: `{command}`\n\n{environment(args.threads)}; took {wall:.0f} s.\n\n{LEGEND}\n\n"
            + markdown(header, cells)
            + "\n"
            + "\n".join(f"- {line}" for line in lines)
            + "\n"
        )
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if failed:
        missed = ", ".join(target.what for target, _, ok in results if not ok)
        print(f"missed: {missed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
