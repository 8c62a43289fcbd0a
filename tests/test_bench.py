"""The benchmarks' own arithmetic, on a study made by the real engine."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nas.bench.search import hypervolume_curve
from nas.storage import load_study
from tests.conftest import MADE_STUDY, MADE_TRIALS


@pytest.fixture(autouse=True)
def _torch_threads():
    """The benchmarks set torch to one thread, as their CLI runs should; give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_search_benchmark_reads_the_trial_records(made_study):
    trials = load_study(MADE_STUDY).trials
    curve = hypervolume_curve(trials, latency_ref=1.0, params_ref=math.log10(5e6))
    assert len(curve) == len(trials)
    assert MADE_TRIALS[0][1] == "trained" and curve[0] > 0, "a trained feasible trial has a volume"
    assert all(later >= earlier for earlier, later in zip(curve, curve[1:], strict=False))
    infeasible = next(n for n, (_, what) in enumerate(MADE_TRIALS) if what == "infeasible")
    assert curve[infeasible] == curve[infeasible - 1], "an infeasible trial adds nothing"
    assert curve[-1] == curve[len(MADE_TRIALS) - 1], "nor do failed and running ones"


def test_the_search_benchmark_runs_end_to_end(tmp_path, monkeypatch):
    """A tiny budget: every sampler's studies run through the real engine and the curves are written."""
    from nas.bench import search
    from tests.spaces import FAST_SPACE

    monkeypatch.setenv("NAS_HOME", str(tmp_path / "nas_home"))
    space = tmp_path / "fast.toml"
    space.write_text(FAST_SPACE)
    code = search.main(["--space", str(space), "--trials", "4", "--seeds", "1", "--out", str(tmp_path / "out")])
    assert code in (0, 1), "0: target met, 1: missed; anything else is the benchmark failing"
    table = (tmp_path / "out" / "search.md").read_text()
    assert all(f"| {name} |" in table for name in ("gp", "tpe", "nsga2", "random")), table
    assert set(json.loads((tmp_path / "out" / "search.json").read_text())["curves"]) == {"gp", "tpe", "nsga2", "random"}
    assert (tmp_path / "out" / "search.png").read_bytes()[:4] == b"\x89PNG"


def test_the_accuracy_benchmark_runs_end_to_end(tmp_path):
    from nas.bench import accuracy

    code = accuracy.main(["--datasets", "digits", "--depths", "1", "--layers", "D,L4,T1", "--seeds", "1",
                          "--epochs", "1", "--out", str(tmp_path)])
    assert code in (0, 1), "0: target met, 1: missed; anything else is the benchmark failing"
    table = (tmp_path / "accuracy.md").read_text()
    assert all(f"| {layer} |" in table for layer in ("D", "L4", "T1")), table
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_the_measure_benchmark_measures_a_slowed_run_again(tmp_path, monkeypatch):
    """Slowed runs are measured again up to three times the repeats, and all of them are returned."""
    from dataclasses import replace

    from device_agents import LocalAgent, MeasureSettings
    from device_agents.probe_models import mlp_model
    from nas.bench.measure import ATTEMPTS, _measure_at_speed

    monkeypatch.setenv("NAS_HOME", str(tmp_path / "nas_home"))
    model = mlp_model(tmp_path / "m.onnx", width=32, depth=1)
    quick = MeasureSettings(warmup=1, min_runs=5, min_seconds=0.02, max_rounds=1, max_wait_seconds=0.05)
    agent = LocalAgent()
    results, figures = _measure_at_speed(agent, model, replace(quick, reference_ms=1e-9), repeats=2)
    assert len(results) == ATTEMPTS * 2 and all(figure.slowed for figure in figures)
    results, figures = _measure_at_speed(agent, model, replace(quick, reference_ms=1e9), repeats=2)
    assert len(results) == 2 and not any(figure.slowed for figure in figures)
