"""The benchmarks' own arithmetic, on a study made by the real engine."""

from __future__ import annotations

import math

from nas.bench.search import hypervolume_curve
from nas.storage import load_study
from tests.conftest import MADE_STUDY, MADE_TRIALS


def test_the_search_benchmark_reads_the_trial_records(made_study):
    trials = load_study(MADE_STUDY).trials
    curve = hypervolume_curve(trials, latency_ref=1.0, params_ref=math.log10(5e6))
    assert len(curve) == len(trials)
    assert MADE_TRIALS[0][1] == "trained" and curve[0] > 0, "a trained feasible trial has a volume"
    assert all(later >= earlier for earlier, later in zip(curve, curve[1:], strict=False))
    infeasible = next(n for n, (_, what) in enumerate(MADE_TRIALS) if what == "infeasible")
    assert curve[infeasible] == curve[infeasible - 1], "an infeasible trial adds nothing"
    assert curve[-1] == curve[len(MADE_TRIALS) - 1], "nor do failed and running ones"
