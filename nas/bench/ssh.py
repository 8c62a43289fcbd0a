"""Remote measurement overhead over SSH (loopback sshd testbed, warm connection) and cache hits.

Overhead per model is the host's wall time for one ``measure`` minus the device's timed runs (the
runner's ``timed_s``): SSH round trip, Python and onnxruntime start-up, session creation, warm-up,
fingerprint. Targets: median overhead <= 0.5 s; a measurement-cache hit <= 20 ms. Needs root (the
testbed creates a user); ``--arm64`` also times bringing the emulated board up from its cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nas.cli.options import finite_float

OVERHEAD_TARGET_S = 0.5
CACHE_HIT_TARGET_S = 0.020


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nas bench ssh", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="measurements per model")
    parser.add_argument("--min-seconds", type=finite_float, default=0.2, help="runner's minimum timed duration")
    parser.add_argument("--arm64", action="store_true", help="also time the arm64 board's cached set-up")
    args = parser.parse_args(argv)

    from device_agents import MeasureSettings, SSHAgent, SSHTarget, TrustPolicy
    from device_agents.probe_models import mlp_model
    from device_agents.testbeds.loopback import Loopback

    console = Console()
    reason = Loopback.unavailable_reason()
    if reason:
        console.print(f"[red]cannot run[/]: {reason}")
        return 2
    testbed = Loopback()
    was_running = testbed.running()
    info = testbed.up()
    failed = False
    with tempfile.TemporaryDirectory(prefix="nas-bench-ssh-") as tmp:
        os.environ["NAS_HOME"] = str(Path(tmp) / "home")
        models = {
            f"mlp{w}x{d}": mlp_model(Path(tmp) / f"mlp{w}x{d}.onnx", width=w, depth=d)
            for w, d in ((64, 1), (256, 2), (1024, 4))
        }
        settings = MeasureSettings(min_seconds=args.min_seconds)
        target = SSHTarget(
            host=info["host"], port=info["port"], user=info["user"], key=info["key"], python=info["python"]
        )
        agent = SSHAgent("bench", target, trust=TrustPolicy(fingerprint=info["host_key_fingerprint"]))
        started = time.perf_counter()
        agent.probe()
        connect_s = time.perf_counter() - started
        for model in models.values():  # upload once: the warm state a study runs in
            agent.measure(model, settings)

        table = Table(
            "model",
            "device median ms",
            "timed s",
            "wall s",
            "overhead s",
            title=f"SSH measurement overhead ({args.repeat} per model, warm connection)",
        )
        overheads: list[float] = []
        for name, model in models.items():
            for _ in range(args.repeat):
                started = time.perf_counter()
                result = agent.measure(model, settings)
                wall = time.perf_counter() - started
                overhead = wall - result.latency_ms.timed_s
                overheads.append(overhead)
                table.add_row(
                    name,
                    f"{result.latency_ms.median:.3f}",
                    f"{result.latency_ms.timed_s:.3f}",
                    f"{wall:.3f}",
                    f"{overhead:.3f}",
                )
        console.print(table)

        round_trips = []
        for _ in range(10):
            started = time.perf_counter()
            agent.run_checked(["true"])
            round_trips.append(time.perf_counter() - started)

        hits, how = _cache_hits(agent, models["mlp256x2"], settings)
        agent.close()

    median_overhead = statistics.median(overheads)
    median_hit = statistics.median(hits)
    summary = Table("figure", "value", "target", title="summary")
    summary.add_row("new connection + probe", f"{connect_s:.2f} s", "")
    summary.add_row("SSH command round trip, median", f"{1000 * statistics.median(round_trips):.1f} ms", "")
    summary.add_row(
        "overhead per measurement, median", f"{median_overhead:.3f} s", f"<= {OVERHEAD_TARGET_S} s"
    )
    summary.add_row("overhead per measurement, p90", f"{_percentile(overheads, 0.9):.3f} s", "")
    summary.add_row(
        f"cache hit ({how}), median", f"{1000 * median_hit:.2f} ms", f"<= {1000 * CACHE_HIT_TARGET_S:.0f} ms"
    )
    summary.add_row("cache hit, max", f"{1000 * max(hits):.2f} ms", "")
    if args.arm64:
        summary.add_row("arm64 board up (cached rootfs)", _arm64_up(), "")
    console.print(summary)
    if median_overhead > OVERHEAD_TARGET_S:
        console.print(f"[red]MISSED[/]: median overhead {median_overhead:.3f} s > {OVERHEAD_TARGET_S} s")
        failed = True
    if median_hit > CACHE_HIT_TARGET_S:
        console.print(
            f"[red]MISSED[/]: cache hit {1000 * median_hit:.1f} ms > {1000 * CACHE_HIT_TARGET_S:.0f} ms"
        )
        failed = True
    if not was_running:
        testbed.down()
    return 1 if failed else 0


def _cache_hits(agent, model: Path, settings) -> tuple[list[float], str]:  # noqa: ANN001
    """Time lookups of an already-measured key in the study engine's cache (``nas.study.MeasurementCache``)."""
    try:
        from nas.study import MeasurementCache
    except ImportError:
        MeasurementCache = None  # noqa: N806
    hits = []
    if MeasurementCache is not None:
        cache = MeasurementCache()
        first = cache.measure(agent, model, settings)
        assert not first["cached"]
        for _ in range(50):
            started = time.perf_counter()
            result = cache.measure(agent, model, settings)
            hits.append(time.perf_counter() - started)
            assert result.cached
        return hits, "nas.study.MeasurementCache.measure"
    store = {("key", model.name): agent.measure(model, settings)}
    for _ in range(50):
        started = time.perf_counter()
        store.get(("key", model.name))
        hits.append(time.perf_counter() - started)
    return hits, "plain dict lookup"


def _arm64_up() -> str:
    from device_agents.testbeds.arm64 import Arm64Board

    board = Arm64Board()
    reason = board.unavailable_reason()
    if reason or not board.built():
        return f"not measured ({reason or 'board not built: python -m device_agents.testbeds.arm64 up'})"
    was_running = board.running()
    board.down(quiet=True)
    started = time.perf_counter()
    board.up()
    elapsed = time.perf_counter() - started
    if not was_running:
        board.down(quiet=True)
    return f"{elapsed:.1f} s"


if __name__ == "__main__":
    raise SystemExit(main())
