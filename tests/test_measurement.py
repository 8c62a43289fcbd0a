"""Measurements a user can trust, on real agents (this host and the loopback sshd).

The model's own memory follows its weights; latency resolves microseconds and says when it is
unstable; the form choice is paired, interleaved and has a tie margin; a form the device cannot run
is recorded as unavailable, not a failure.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from device_agents import registry
from device_agents.base import MeasureSettings
from device_agents.probe_models import mlp_model
from device_agents.runner import parse_args
from nas.export import export_onnx
from nas.measure import MeasurementCache, measure_forms, model_facts
from nas.model import build_model, deployed
from nas.spec import ArchSpec, LayerSpec

QUICK = MeasureSettings(warmup=2, min_runs=10, min_seconds=0.05, max_rounds=2)
PAIRED = MeasureSettings(warmup=2, min_runs=20, min_seconds=0.2, max_rounds=2)


@pytest.fixture(params=["local", "loop"])
def agent(request, tmp_path, monkeypatch):
    """An open agent: this host, or the loopback sshd registered as ``loop``."""
    if request.param == "loop":
        request.getfixturevalue("loop_agent")
    else:
        monkeypatch.setenv("NAS_HOME", str(tmp_path / "nas_home"))
    with registry.open_agent(request.param) as opened:
        yield opened


def _export(folder: Path, spec: ArchSpec, name: str) -> Path:
    model = build_model(spec, seed=0)
    return export_onnx(deployed(model, spec), spec.in_features, folder / f"{name}.onnx")


def _square(width: int, kind: str = "dense", rank: int | None = None) -> ArchSpec:
    """``width`` features -> a ``width``-wide layer -> 10 classes."""
    return ArchSpec(width, (LayerSpec(kind, width, rank), LayerSpec("dense", 10)))


def test_model_peak_follows_the_weights_not_the_process(agent, tmp_path):
    models = {"dense256": _export(tmp_path, _square(256), "dense256"),
              "dense2048": _export(tmp_path, _square(2048), "dense2048"),
              "toeplitz2048": _export(tmp_path, _square(2048, "toeplitz", 2), "toeplitz2048")}
    peak = {name: agent.measure(path, QUICK)["memory_kb"]["model_peak_kb"] * 1024 for name, path in models.items()}
    weights = {name: model_facts(path)[0] for name, path in models.items()}
    assert peak["dense2048"] - peak["dense256"] >= 0.8 * (weights["dense2048"] - weights["dense256"]), (peak, weights)
    assert peak["toeplitz2048"] < peak["dense2048"] / 10, peak


def test_latency_is_per_call_from_samples_of_many_calls(agent, tmp_path):
    tiny = mlp_model(tmp_path / "tiny.onnx", width=16, depth=1)
    latency = agent.measure(tiny, QUICK)["latency_ms"]
    # a call of a 16-wide layer takes microseconds: one sample must hold many of them to last 1 ms;
    # the sizing may run in one of this VM's slow phases (the host slows the vCPU 2-3x for seconds),
    # so a timed sample is only required to last a quarter of that
    assert latency["number"] > 10
    assert latency["median"] * latency["number"] >= 0.25
    assert latency["min"] <= latency["ci_low"] <= latency["median"] <= latency["ci_high"]
    assert latency["median"] < 0.2, "the figure is per call, not per sample"


def test_a_spread_above_the_limit_is_flagged_unstable(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_HOME", str(tmp_path / "nas_home"))
    model = mlp_model(tmp_path / "m.onnx", width=64, depth=1)
    with registry.open_agent("local") as local:
        strict = local.measure(model, MeasureSettings(min_runs=10, min_seconds=0.02, max_spread=1e-9, max_rounds=2))
        loose = local.measure(model, MeasureSettings(min_runs=10, min_seconds=0.02, max_spread=10.0, max_rounds=2))
    assert strict["latency_ms"]["unstable"] and strict["latency_ms"]["rounds"] == 2
    assert not loose["latency_ms"]["unstable"] and loose["latency_ms"]["rounds"] == 1


def test_the_same_model_as_two_forms_is_a_tie(agent, tmp_path):
    model = mlp_model(tmp_path / "a.onnx", width=256, depth=1)
    twin = tmp_path / "b.onnx"
    shutil.copy(model, twin)
    measured = measure_forms(MeasurementCache(), agent, {"fft": model, "dense": twin}, PAIRED, tie_margin=0.03,
                             sizes={"fft": 100, "dense": 50})
    paired = measured.paired
    assert sorted(paired.tied) == ["dense", "fft"], paired
    assert measured.winner == "dense", "on a tie the smaller file wins"
    ratio = paired.ratios[0]
    assert ratio.ci_low <= 1.03 and ratio.ci_high >= 0.97, ratio


def test_a_known_2x_gap_is_chosen_right_every_time(agent, tmp_path):
    """Twice the work (two layers against one): the slow form has the smaller file, so a tie would pick
    it; only the paired ratio gets this right."""
    files = {"fft": mlp_model(tmp_path / "slow.onnx", width=384, depth=2),
             "dense": mlp_model(tmp_path / "fast.onnx", width=384, depth=1)}
    for _ in range(3):
        measured = measure_forms(MeasurementCache(), agent, files, PAIRED, tie_margin=0.03,
                                 sizes={"fft": 1, "dense": 2})
        assert measured.winner == "dense", measured.paired
        ratio = next(r for r in measured.paired.ratios if {r.a, r.b} == {"fft", "dense"})
        slow_over_fast = ratio.ratio if ratio.a == "fft" else 1 / ratio.ratio
        assert 1.3 < slow_over_fast < 2.6, ratio


def _future_opset_model(path: Path) -> Path:
    """A model whose opset no onnxruntime knows: what an old runtime meets with a new exporter."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "future",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 99)])
    path.write_bytes(model.SerializeToString())
    return path


def test_a_form_the_device_cannot_load_is_unavailable_not_a_failure(agent, tmp_path):
    files = {"fft": _future_opset_model(tmp_path / "future.onnx"),
             "dense": mlp_model(tmp_path / "ok.onnx", width=16, depth=1)}
    measured = measure_forms(MeasurementCache(), agent, files, QUICK, tie_margin=0.03)
    assert measured.winner == "dense" and measured.paired is None
    assert not measured.forms["fft"].available and "could not load" in measured.forms["fft"].reason
    assert measured.forms["dense"].available and measured.forms["dense"].median_ms > 0


def test_runner_defaults_are_the_settings_defaults():
    """One default per knob: the runner's own match MeasureSettings', which the space file takes."""
    from nas.space import Measure

    runner = vars(parse_args(["--model", "m.onnx"]))
    for name, value in MeasureSettings().to_dict().items():
        assert runner[name] == value, name
    assert Measure().settings() == MeasureSettings()


def test_a_device_without_dft_gets_another_form_and_the_trial_goes_on(loop_agent, nas_env):
    """``nas agent add`` recorded that the device has no DFT: the fft form is not even tried there."""
    from nas.records import TrialRecord
    from nas.storage import load_study
    from nas.study import run_study, start_study
    from tests.spaces import write_space

    registry.update_agent(loop_agent, dft=False)
    start_study("nodft", write_space(nas_env.home.parent), [loop_agent], n_trials=1, sampler="random")
    load_study("nodft").enqueue_trial({"depth": 1, "l0_width": 32, "l0_kind": "toeplitz",
                                       "l0_displacement_rank": 2, "out_kind": "dense"})
    (trial,) = run_study("nodft").get_trials(deepcopy=False)
    record = TrialRecord.from_trial(trial)
    assert record.complete, record.data.fail_reason
    forms = record.data.agents[loop_agent].forms
    assert not forms["fft"].available and "DFT" in forms["fft"].reason and not forms["fft"].runner
    assert forms["dense"].available and record.winner(loop_agent) != "fft"
    assert record.spec.form == record.winner(loop_agent)


def test_agent_check_counts_unstable_measurements_and_says_what_to_do(nas_env):
    from nas.cli.agent import _steadying_advice

    check = nas_env.run("agent", "check", "local", "--repeat", "2")
    assert check.exit_code == 0, check.output
    text = " ".join(check.output.split())
    assert "of 2 measurements unstable" in text and "model" in text
    advice = _steadying_advice({"governor": "powersave", "temperature_c": {"cpu-thermal": 81.0}, "cores": 2,
                                "threads": 2}, None)
    assert "governor is 'powersave'" in advice and "cpu-thermal 81 C" in advice
    assert "2 threads on 2 cores" in advice and "idle" in advice
    assert "governor" not in _steadying_advice({"governor": "performance", "cores": 4, "threads": 1}, None)
