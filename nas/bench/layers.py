"""Layer latency: dense vs low-rank vs Toeplitz-like, in PyTorch and onnxruntime, on one thread.

Forward (``torch.no_grad``) and forward+backward medians in PyTorch, forward medians in
onnxruntime for the deployed forms (Toeplitz-like "fft" with ONNX ``DFT`` and "fftmm" with
matrix-product FFTs, one column each; the "dense" form of a Toeplitz-like layer is the same ``Gemm``
graph as the dense layer, so the dense row stands for it). Every number is the median of timed runs
taken after warm-up until both a minimum count and a minimum duration are reached. Exits 1, naming
the miss, unless every ratio in :data:`TARGETS` is met in this run ("best ONNX" is the faster of
the two FFT forms in the same paired run), and the export of a three-hidden-layer width-1024
Toeplitz-like candidate (deploy + ONNX) takes under :data:`EXPORT_TARGET_S` in every form.

Each target ratio is re-measured after the table as the median of interleaved pairs, so that load
from other processes weighs on both sides alike.
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

from nas.cli.options import finite_float
from nas.layers import FORMS, deploy, make_layer
from nas.model import export_onnx

SIZES = (256, 512, 1024, 2048, 4096)
RANKS = (1, 2, 4, 8)
BATCHES = (1, 64)
LOW_RANK = 16
QUICK_SIZES = (1024, 4096)
QUICK_RANKS = (1, 8)
CHECK_ROUNDS = 5


ORT_FORMS = ("ort", "ort_mm")  # the Toeplitz-like fft and fftmm forms in onnxruntime


@dataclass(frozen=True)
class Target:
    """``time(slow) / time(fast) >= ratio`` at one n and batch; each side is (layer, columns), the
    time the fastest of those columns."""

    what: str
    n: int
    batch: int
    slow: tuple[str, tuple[str, ...]]
    fast: tuple[str, tuple[str, ...]]
    ratio: float


TARGETS = (
    Target("PyTorch forward, T1 vs D", 4096, 1, ("D", ("torch_fwd",)), ("T1", ("torch_fwd",)), 8.0),
    Target("PyTorch forward+backward, T1 vs D", 4096, 64, ("D", ("torch_fwdbwd",)), ("T1", ("torch_fwdbwd",)), 5.0),
    Target("best T1 ONNX form vs dense ONNX", 4096, 1, ("D", ("ort",)), ("T1", ORT_FORMS), 15.0),
    Target("best T1 ONNX form vs dense ONNX", 4096, 64, ("D", ("ort",)), ("T1", ORT_FORMS), 2.5),
    Target("best T1 ONNX form vs dense ONNX", 1024, 1, ("D", ("ort",)), ("T1", ORT_FORMS), 1.5),
    Target("best T1 ONNX form vs dense ONNX", 1024, 64, ("D", ("ort",)), ("T1", ORT_FORMS), 1.2),
    Target("best T1 ONNX form vs T1 PyTorch forward (>= 1/3: within 3x)", 4096, 64, ("T1", ("torch_fwd",)),
           ("T1", ORT_FORMS), 1 / 3),
)
EXPORT_TARGET_S = 0.050
EXPORT_WIDTH = 1024
EXPORT_LAYERS = 3


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
    f"D dense, L{LOW_RANK} low-rank k={LOW_RANK}, Tr Toeplitz-like with displacement rank r (ORT fwd: its fft "
    "form with ONNX DFT, ORT fftmm: its matrix-product FFT form; its dense form is the D graph). Median ms; "
    "xD = speed-up over D (for ORT columns: over D's ORT fwd) at the same n and batch."
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
    keep = {(target.n, target.batch, side[0]) for target in TARGETS for side in (target.slow, target.fast)}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="nas-bench-layers-") as tmp:
        for n in sizes:
            for code, kind, rank in layer_kinds(ranks):
                torch.manual_seed(0)
                layer = make_layer(kind, n, n, rank)
                params = sum(p.numel() for p in layer.parameters())
                sessions = {}
                if onnx:
                    progress(f"n={n} {code}: export")
                    forms = {"ort": "fft", "ort_mm": "fftmm"} if kind == "toeplitz" else {"ort": "dense"}
                    for column, form in forms.items():
                        path = export_onnx(deploy(layer, form), n, Path(tmp) / f"{n}-{code}-{form}.onnx")
                        sessions[column] = ort_session(path, threads)
                        path.unlink()
                for batch in BATCHES:
                    progress(f"n={n} {code} batch {batch}")
                    row = Row(n, batch, code, params)
                    fns = timed_calls(layer, sessions, torch.randn(batch, n))
                    for column, fn in fns.items():
                        row.times[column] = measure(fn, min_reps, min_time)
                    if (n, batch, code) in keep:
                        row.fns = fns
                    rows.append(row)
    rows.sort(key=lambda row: (row.n, row.batch))  # stable: layers stay in order
    return rows


def timed_calls(layer: nn.Module, sessions: dict, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """What each column times: PyTorch forward (no autograd), forward+backward, onnxruntime forward per form."""

    def forward() -> None:
        with torch.no_grad():
            layer(x)

    def forward_backward() -> None:
        layer(x).sum().backward()  # gradients accumulate: no zeroing, like a step without the optimizer

    fns: dict[str, Callable[[], object]] = {"torch_fwd": forward, "torch_fwdbwd": forward_backward}
    feed = {"x": x.numpy()}
    for column, session in sessions.items():
        fns[column] = lambda session=session: session.run(None, feed)
    return fns


def check(
    rows: list[Row], rounds: int, min_reps: int, min_time: float, progress: Callable[[str], None]
) -> list[tuple[Target, float | None, bool]]:
    """Each target with its ratio (None if not measured) and whether it is met.

    The ratio is re-measured: ``rounds`` interleaved pairs (slow side, then fast side), the median
    of the per-pair ratios -- so that load from other processes hits both sides alike.
    """
    by_key = {(row.n, row.batch, row.layer): row for row in rows}
    results = []
    for target in TARGETS:
        sides = [(by_key.get((target.n, target.batch, layer)), cols) for layer, cols in (target.slow, target.fast)]
        if any(row is None or not all(c in row.fns for c in columns) for row, columns in sides):
            results.append((target, None, False))
            continue
        progress(f"target: {target.what}, n={target.n} batch {target.batch}")

        def fastest(row: Row, columns: tuple[str, ...]) -> float:
            return min(measure(row.fns[column], min_reps, min_time) for column in columns)

        ratios = [fastest(*sides[0]) / fastest(*sides[1]) for _ in range(rounds)]
        ratio = statistics.median(ratios)
        results.append((target, ratio, ratio >= target.ratio))
    return results


def export_times(rounds: int) -> dict[str, float]:
    """Median seconds to deploy and export a 3-hidden-layer width-1024 Toeplitz-like candidate, per form."""
    from nas.model import build_model, deployed
    from nas.spec import ArchSpec, LayerSpec

    layers = [LayerSpec("toeplitz", EXPORT_WIDTH, 1)] * EXPORT_LAYERS + [LayerSpec("dense", 10)]
    spec = ArchSpec(EXPORT_WIDTH, tuple(layers))
    model = build_model(spec, seed=0)
    samples: dict[str, list[float]] = {form: [] for form in FORMS}
    with tempfile.TemporaryDirectory(prefix="nas-bench-export-") as tmp:
        for _ in range(rounds):
            for form in FORMS:  # interleaved
                started = time.perf_counter()
                export_onnx(deployed(model, spec.with_form(form)), spec.in_features, Path(tmp) / f"{form}.onnx")
                samples[form].append(time.perf_counter() - started)
    return {form: statistics.median(values) for form, values in samples.items()}


COLUMNS = (("torch_fwd", "torch fwd"), ("torch_fwdbwd", "torch fwd+bwd"), ("ort", "ORT fwd"),
           ("ort_mm", "ORT fftmm"))  # fmt: skip


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
            base_column = "ort" if column in ORT_FORMS else column
            line.append("-" if value is None else f"{value * 1e3:.3f}")
            line.append(
                "-"
                if value is None or base is None or base_column not in base.times
                else f"{base.times[base_column] / value:.1f}"
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
    parser.add_argument("--min-time", type=finite_float, default=None, help="seconds per measurement, at least")
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
        progress("export of a candidate")
        exports = export_times(CHECK_ROUNDS) if not args.no_onnx else {}
    wall = time.perf_counter() - started

    header, cells = table_rows(rows)
    title = f"Layer latency, median ms ({environment(args.threads)})"
    print_table(header, cells, title)
    failed = False
    lines = []
    for target, ratio, ok in results:
        failed |= not ok
        measured = "not measured" if ratio is None else f"{ratio:.2f}x (median of {CHECK_ROUNDS} paired runs)"
        lines.append(
            f"{'PASS' if ok else 'FAIL'} {target.what}, n={target.n} "
            f"batch {target.batch}: {measured} (target >= {target.ratio:.2g}x)"
        )
    for form, seconds in exports.items():
        ok = seconds < EXPORT_TARGET_S
        failed |= not ok
        lines.append(
            f"{'PASS' if ok else 'FAIL'} export of a {EXPORT_LAYERS}-hidden-layer width-{EXPORT_WIDTH} T1 candidate, "
            f"{form} form (deploy + ONNX): {seconds * 1e3:.1f} ms (median of {CHECK_ROUNDS}; target < "
            f"{EXPORT_TARGET_S * 1e3:g} ms)"
        )
    if not exports:
        failed = True
        lines.append("FAIL export of a candidate: not measured (--no-onnx)")
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
        missed = [f"{target.what} n={target.n} batch {target.batch}" for target, _, ok in results if not ok]
        missed += [f"export, {form} form" for form, seconds in exports.items() if seconds >= EXPORT_TARGET_S]
        missed = "; ".join(missed) or "export (not measured)"
        print(f"missed: {missed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
