"""``nas pick``: choosing a trial, the bundle round trip, and one clear error per failure case."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

import nas
from nas.artifacts import StudyArtifacts, study_artifacts
from nas.bundle import choose, write_bundle
from nas.data import load_dataset
from nas.errors import UserError
from nas.export import export_onnx
from nas.model import build_model, deployed
from nas.spec import ArchSpec, LayerSpec
from nas.storage import CONFIG_ATTR, load_study, open_storage
from nas.train import train

optuna.logging.set_verbosity(optuna.logging.WARNING)
NAME = "picks"
MAX_LATENCY = 1.0
SPACE = {"name": "picks", "data": {"dataset": "digits"}, "training": {"epochs": 1, "learning_rate": 0.01}}
# number: (spec, winning form, latency ms, peak MiB, what happened)
PLAN = {
    0: (ArchSpec(64, (LayerSpec("toeplitz", 32, 2), LayerSpec("dense", 10))), "fft", 0.015, 27.0, "trained"),
    1: (ArchSpec(64, (LayerSpec("dense", 32), LayerSpec("dense", 10))), "-", 0.020, 28.0, "trained+onnx"),
    2: (ArchSpec(64, (LayerSpec("lowrank", 32, 4), LayerSpec("dense", 10))), "-", 0.030, 29.0, "trained"),
    3: (ArchSpec(64, (LayerSpec("toeplitz", 32, 1), LayerSpec("dense", 10))), "fft", 2.0, 27.0, "infeasible"),
    4: (None, None, None, None, "failed"),
    5: (None, None, None, None, "running"),
}


def _measurement(median: float, peak_mb: float) -> dict:
    latency = {"median": median, "p90": median * 1.1, "min": median * 0.9, "mean": median, "iqr": 0.001,
               "count": 30}
    fingerprint = {"machine": "x86_64", "cpu_model": "test cpu", "cores": 2, "onnxruntime": ort.__version__}
    return {"schema": 1, "ok": True, "latency_ms": latency, "session_ms": 2.0,
            "memory_kb": {"after_runs": {"peak_kb": int(peak_mb * 1024), "rss_kb": 1}},
            "fingerprint": fingerprint, "cache_key": "k", "cached": False}


def _objective(name: str, direction: str, agent: str | None) -> dict:
    label = f"{name}@{agent}" if agent else name
    return {"name": name, "direction": direction, "agent": agent, "label": label}


@pytest.fixture(scope="module")
def study_root(tmp_path_factory) -> Path:
    """A study written the way ``nas study`` writes it, with real trained weights (1 epoch on digits)."""
    root = tmp_path_factory.mktemp("pick")
    storage = f"sqlite:///{root}/studies/{NAME}/study.db"
    study = optuna.create_study(study_name=NAME, storage=open_storage(NAME, storage),
                                directions=["maximize", "minimize", "minimize"])
    artifacts = root / "studies" / NAME / "artifacts"
    study.set_user_attr(CONFIG_ATTR, {
        "space": SPACE, "agents": ["local"], "n_trials": 6, "sampler": "random", "seed": 0,
        "objectives": [_objective("accuracy", "maximize", None),
                       _objective("latency_ms", "minimize", "local"),
                       _objective("peak_mb", "minimize", "local")],
        "constraints": {"max_latency_ms": MAX_LATENCY, "max_peak_mb": None, "max_params": None},
        "artifacts": str(artifacts), "measure": {"threads": 1, "batch": 1},
    })
    artifacts.mkdir()
    store = StudyArtifacts(study, str(artifacts))
    data = load_dataset("digits")
    for number, (spec, form, latency, peak, what) in PLAN.items():
        if what == "failed":
            reason = "agent local: the runner took longer than 300 s"
            study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": reason}))
            continue
        if what == "running":
            study.add_trial(create_trial(state=TrialState.RUNNING))
            continue
        spec = spec.with_form(form) if spec.has_toeplitz else spec
        attrs = {"spec": spec.to_dict(), "code": spec.code, "widths": spec.widths, "winner": {"local": form},
                 "onnx_bytes": {form: 1000}, "measurements": {"local": {form: _measurement(latency, peak)}},
                 "latency_ms": {"local": latency}, "latency_p90_ms": {"local": latency * 1.1},
                 "peak_mb": {"local": peak}, "infeasible": [], "trained": what != "infeasible"}
        accuracy = 0.0
        if what == "infeasible":
            attrs["infeasible"] = [f"latency_ms@local {latency:.4g} > {MAX_LATENCY:g}"]
        else:
            model = build_model(spec, seed=number)
            attrs["params"] = sum(p.numel() for p in model.parameters())
            accuracy = train(model, data, epochs=1, learning_rate=0.01, seed=number).accuracy
            weights = root / "w.pt"
            torch.save(model.state_dict(), weights)
            attrs.update({"accuracy": accuracy, "epochs": 1, "train_seconds": 0.1,
                          "artifacts": {"weights": store.upload(weights, ".pt"), "onnx": {}}})
            if what == "trained+onnx":
                path = export_onnx(deployed(model, spec), 64, root / "m.onnx")
                attrs["artifacts"]["onnx"] = {form: store.upload(path, ".onnx")}
        study.add_trial(create_trial(values=[accuracy, latency, peak], user_attrs=attrs,
                                     system_attrs={"constraints:latency_ms@local": latency - MAX_LATENCY}))
    return root


@pytest.fixture
def at_root(study_root, monkeypatch) -> Path:
    monkeypatch.chdir(study_root)
    return study_root


def nas_cli(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """Run ``nas ARGS`` in-process through the real entry point; (exit code, stdout, stderr)."""
    from nas.cli import main

    monkeypatch.setattr(sys, "argv", ["nas", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def _accuracy(number: int) -> float:
    return load_study(NAME).trials[number].user_attrs["accuracy"]


def _onnx_logits(path: Path, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})[0]


def test_fft_bundle_round_trips(at_root, capsys, monkeypatch):
    out = at_root / "bundle0"
    code, stdout, stderr = nas_cli(capsys, monkeypatch, "pick", NAME, "--trial", "0", "--out", out)
    assert code == 0, stderr
    assert "Picked trial 0: T2 D (64-32-10)" in stdout and "form fft" in stdout
    assert "ONNX matches PyTorch on 359 validation samples" in stdout
    files = ["model.onnx", "model.pt", "arch.json", "metrics.json", "README.md"]
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    # The bundled ONNX is the FFT form (DFT nodes), and nas.load_model gives the same outputs.
    assert "DFT" in {node.op_type for node in onnx.load(out / "model.onnx").graph.node}
    model = nas.load_model(out / "arch.json", out / "model.pt")
    X = load_dataset("digits").X_val
    with torch.no_grad():
        expected = model(X).numpy()
    got = _onnx_logits(out / "model.onnx", X.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trial"] == 0 and metrics["form"] == "fft" and metrics["pareto"] is True
    assert metrics["accuracy"]["bundle"] == pytest.approx(_accuracy(0))
    assert metrics["accuracy"]["onnx"] == pytest.approx(_accuracy(0), abs=0.01)
    assert metrics["onnx_check"]["max_abs_diff"] < 1e-3 and metrics["retrain"] is None
    assert metrics["measurements"]["local"]["forms"]["fft"]["median_ms"] == 0.015
    assert metrics["fingerprints"]["local"]["cpu_model"] == "test cpu"
    readme = (out / "README.md").read_text()
    assert 'ort.InferenceSession("model.onnx"' in readme and '{"x": x}' in readme
    assert "divided by 16" in readme and "deployed form: `fft`" in readme


def test_stored_onnx_is_reused_and_round_trips(at_root, capsys, monkeypatch):
    out = at_root / "bundle1"
    code, stdout, stderr = nas_cli(capsys, monkeypatch, "pick", NAME, "--trial", "1", "--out", out)
    assert code == 0, stderr
    study = load_study(NAME)
    stored = study.trials[1].user_attrs["artifacts"]["onnx"]["-"]
    fetched = study_artifacts(study).download(stored, at_root / "stored.onnx")
    assert (out / "model.onnx").read_bytes() == fetched.read_bytes()
    model = nas.load_model(str(out / "arch.json"), str(out / "model.pt"))
    X = torch.rand(17, 64)
    with torch.no_grad():
        np.testing.assert_allclose(_onnx_logits(out / "model.onnx", X.numpy()), model(X).numpy(),
                                   rtol=1e-5, atol=1e-5)


def test_pick_by_limits_takes_the_most_accurate_within_them(at_root, capsys, monkeypatch):
    latencies = {n: plan[2] for n, plan in PLAN.items() if plan[4].startswith("trained")}
    for limit in (0.016, 0.025, 0.04):
        meeting = [n for n, latency in latencies.items() if latency <= limit]
        expected = max(meeting, key=lambda n: (_accuracy(n), -latencies[n]))
        choice = choose(load_study(NAME), max_latency_ms=limit)
        assert choice.record.number == expected, limit
        front = {t.number for t in load_study(NAME).best_trials}
        excluded = {n for n in latencies if n in front and latencies[n] > limit}
        for n in excluded:
            assert any(note.startswith(f"excluded trial {n} ") for note in choice.notes), choice.notes
    # Memory too: only trial 0 uses at most 27.5 MiB.
    out = at_root / "bundle-limits"
    code, stdout, stderr = nas_cli(capsys, monkeypatch, "pick", NAME, "--max-latency-ms", "0.04",
                                   "--max-memory-mb", "27.5", "--agent", "local", "--out", out)
    assert code == 0, stderr
    assert "Picked trial 0" in stdout
    assert "meets latency <= 0.04 ms and peak memory <= 27.5 MiB on local" in stdout
    assert json.loads((out / "metrics.json").read_text())["trial"] == 0


def test_retrain_reports_new_and_search_accuracy(at_root, capsys, monkeypatch):
    out = at_root / "bundle-retrained"
    code, stdout, stderr = nas_cli(capsys, monkeypatch, "pick", NAME, "--trial", "2", "--retrain-epochs", "3",
                                   "--out", out)
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    retrain = metrics["retrain"]
    assert retrain["epochs"] == 3 and retrain["search_epochs"] == 1
    assert retrain["search_accuracy"] == pytest.approx(_accuracy(2))
    assert metrics["accuracy"]["bundle"] == pytest.approx(retrain["accuracy"])
    new, old = 100 * retrain["accuracy"], 100 * _accuracy(2)
    assert f"accuracy {new:.2f}% (search: {old:.2f}% after 1 epochs)" in stdout
    # The bundled weights are the retrained ones, not the search's.
    study = load_study(NAME)
    weights = study_artifacts(study).download(study.trials[2].user_attrs["artifacts"]["weights"],
                                              at_root / "searched.pt")
    searched = torch.load(weights, weights_only=True)
    bundled = torch.load(out / "model.pt", weights_only=True)
    assert any(not torch.equal(searched[k], bundled[k]) for k in searched)
    X = load_dataset("digits").X_val
    with torch.no_grad():
        expected = nas.load_model(out / "arch.json", out / "model.pt")(X).numpy()
    np.testing.assert_allclose(_onnx_logits(out / "model.onnx", X.numpy()), expected, rtol=1e-4, atol=1e-4)


def test_onnx_that_does_not_match_is_refused_and_nothing_written(at_root):
    study = load_study(NAME)
    choice = choose(study, trial=2)
    wrong = study.trials[1].user_attrs["artifacts"]["onnx"]["-"]  # another trial's model, same shapes
    choice.record.attrs = {**choice.record.attrs,
                           "artifacts": {**choice.record.attrs["artifacts"], "onnx": {"-": wrong}}}
    out = at_root / "bundle-mismatch"
    with pytest.raises(UserError, match="ONNX model's outputs differ from PyTorch's"):
        write_bundle(study, choice, out)
    assert not out.exists()


def test_load_model_rejects_weights_of_another_architecture(at_root, tmp_path):
    spec = ArchSpec(64, (LayerSpec("dense", 16), LayerSpec("dense", 10)))
    (tmp_path / "arch.json").write_text(spec.to_json())
    torch.save(build_model(ArchSpec(64, (LayerSpec("dense", 32), LayerSpec("dense", 10)))).state_dict(),
               tmp_path / "model.pt")
    with pytest.raises(ValueError, match="does not hold weights for the architecture"):
        nas.load_model(tmp_path / "arch.json", tmp_path / "model.pt")


@pytest.mark.parametrize("args, message", [
    (["pick", "nope", "--trial", "0"], "no study 'nope'"),
    (["pick", NAME, "--trial", "99"], "study 'picks' has no trial 99 (trials 0-5)"),
    (["pick", NAME, "--trial", "4"],
     "trial 4 did not complete (state FAIL: agent local: the runner took longer"),
    (["pick", NAME, "--trial", "5"], "trial 5 did not complete (state RUNNING)"),
    (["pick", NAME, "--trial", "3"], "trial 3 was not trained: latency_ms@local 2 > 1"),
    (["pick", NAME, "--max-latency-ms", "0.01"],
     "no trained trial meets latency <= 0.01 ms on local (3 checked); closest: trial 0 (T2 D"),
    (["pick", NAME, "--max-latency-ms", "0.01"], "latency 0.015 ms > 0.01 ms, 0.005 ms (50%) over"),
    (["pick", NAME, "--max-latency-ms", "1", "--agent", "pi4"],
     "was not measured on agent 'pi4'; its agents: local"),
    (["pick", NAME], "give --trial N, or a limit to pick by"),
    (["pick", NAME, "--trial", "0", "--max-latency-ms", "1"], "give either --trial or limits"),
])
def test_errors_exit_non_zero_with_their_message(at_root, capsys, monkeypatch, args, message):
    code, stdout, stderr = nas_cli(capsys, monkeypatch, *args)
    assert code != 0
    assert message in stderr, stderr
    assert not list(at_root.glob("studies/*/bundles"))


def test_console_script_reports_an_unknown_trial(at_root):
    done = subprocess.run([str(Path(sys.executable).with_name("nas")), "pick", NAME, "--trial", "42"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: study 'picks' has no trial 42 (trials 0-5)"


@pytest.mark.slow
def test_report_and_pick_on_a_real_study(tmp_path, monkeypatch, capsys):
    """End to end with the study engine and the local agent: 2 trials, one forced Toeplitz-like."""
    from nas.study import run_study, start_study
    from tests.spaces import write_space

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NAS_HOME", str(tmp_path / "home"))
    study = start_study("real", write_space(tmp_path), ["local"], n_trials=2, sampler="random", seed=1)
    study.enqueue_trial({"depth": 1, "l0_width": 32, "l0_kind": "toeplitz", "l0_displacement_rank": 2,
                         "out_kind": "dense"})
    run_study("real")
    code, stdout, stderr = nas_cli(capsys, monkeypatch, "report", "real")
    assert code == 0, stderr
    assert "Pareto set of real" in stdout and "T2 D" in stdout
    assert (tmp_path / "studies/real/report/report.html").exists()
    code, stdout, stderr = nas_cli(capsys, monkeypatch, "pick", "real", "--trial", "0")
    assert code == 0, stderr
    bundle = tmp_path / "studies/real/bundles/trial-0"
    model = nas.load_model(bundle / "arch.json", bundle / "model.pt")
    X = load_dataset("digits").X_val
    with torch.no_grad():
        expected = model(X).numpy()
    np.testing.assert_allclose(_onnx_logits(bundle / "model.onnx", X.numpy()), expected, rtol=1e-4, atol=1e-4)
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert metrics["code"] == "T2 D" and metrics["form"] in ("fft", "fftmm", "dense")
    assert metrics["accuracy"]["bundle"] == pytest.approx(load_study("real").trials[0].user_attrs["accuracy"])
