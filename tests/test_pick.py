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

import nas
from nas.data import load_dataset
from nas.errors import UserError
from nas.model import build_model
from nas.results import choose, write_bundle
from nas.spec import FORMS, ArchSpec, LayerSpec
from nas.storage import load_study
from nas.study import TrialRecord, open_study, study_artifacts
from tests.conftest import MADE_FAILURE, MADE_STUDY, MADE_TRIALS

optuna.logging.set_verbosity(optuna.logging.WARNING)
NAME = MADE_STUDY
TRAINED = [n for n, (_, what) in enumerate(MADE_TRIALS) if what in ("trained", "repeat")]


@pytest.fixture
def at_root(made_study) -> Path:
    return made_study


def _record(number: int) -> TrialRecord:
    return TrialRecord.from_trial(load_study(NAME).trials[number])


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
    return _record(number).data.accuracy


def _onnx_logits(path: Path, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})[0]


def test_bundle_round_trips_in_the_chosen_form(at_root, capsys, monkeypatch):
    out = at_root / "bundle0"
    record = _record(0)
    form = record.winner("local")
    code, stdout, stderr = nas_cli(capsys, monkeypatch, "pick", NAME, "--trial", "0", "--out", out)
    assert code == 0, stderr
    assert "Picked trial 0: T2 D (64-32-10)" in stdout and f"form {form}" in stdout
    assert "ONNX matches PyTorch on 359 validation samples" in stdout
    files = ["model.onnx", "model.pt", "arch.json", "metrics.json", "README.md"]
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    # The bundled ONNX is the chosen form (DFT nodes for fft), and nas.load_model gives the same outputs.
    assert ("DFT" in {node.op_type for node in onnx.load(out / "model.onnx").graph.node}) == (form == "fft")
    model = nas.load_model(out / "arch.json", out / "model.pt")
    X = load_dataset("digits").X_val
    with torch.no_grad():
        expected = model(X).numpy()
    got = _onnx_logits(out / "model.onnx", X.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trial"] == 0 and metrics["form"] == form
    # whether trial 0 is on the front depends on the latencies measured; Optuna's own front decides
    assert metrics["pareto"] == (0 in {t.number for t in load_study(NAME).best_trials})
    assert metrics["accuracy"]["bundle"] == pytest.approx(_accuracy(0))
    assert metrics["accuracy"]["onnx"] == pytest.approx(_accuracy(0), abs=0.01)
    assert metrics["onnx_check"]["max_abs_diff"] < 1e-3 and metrics["retrain"] is None
    measured = metrics["measurements"]["local"]
    assert measured["forms"][form]["median_ms"] == record.latency_ms("local")
    assert measured["forms"][form]["model_peak_mib"] == record.model_peak_mib("local")
    assert set(measured["paired"]["forms"]) == set(FORMS) and measured["paired"]["ratios"]
    assert metrics["fingerprints"]["local"]["machine"] == record.chosen("local").runner.fingerprint["machine"]
    readme = (out / "README.md").read_text()
    assert 'ort.InferenceSession("model.onnx"' in readme and '{"x": x}' in readme
    assert "divided by 16" in readme and f"deployed form: `{form}`" in readme
    assert f"the model's own peak memory {record.model_peak_mib('local'):.1f} MiB" in readme


def test_fft_bundle_round_trips(at_root):
    opened = open_study(NAME)
    out = at_root / "bundle-fft"
    bundle = write_bundle(opened, choose(opened, trial=0), out, form="fft")
    assert bundle.metrics["form"] == "fft"
    assert "DFT" in {node.op_type for node in onnx.load(out / "model.onnx").graph.node}
    X = load_dataset("digits").X_val
    with torch.no_grad():
        expected = nas.load_model(out / "arch.json", out / "model.pt")(X).numpy()
    np.testing.assert_allclose(_onnx_logits(out / "model.onnx", X.numpy()), expected, rtol=1e-4, atol=1e-4)


def test_stored_onnx_is_reused_and_round_trips(at_root, capsys, monkeypatch):
    out = at_root / "bundle1"
    code, stdout, stderr = nas_cli(capsys, monkeypatch, "pick", NAME, "--trial", "1", "--out", out)
    assert code == 0, stderr
    study = load_study(NAME)
    stored = _record(1).data.artifacts["onnx"]["-"]
    fetched = study_artifacts(study).download(stored, out.parent / "stored.onnx")
    assert (out / "model.onnx").read_bytes() == fetched.read_bytes()
    model = nas.load_model(str(out / "arch.json"), str(out / "model.pt"))
    X = torch.rand(17, 64)
    with torch.no_grad():
        np.testing.assert_allclose(_onnx_logits(out / "model.onnx", X.numpy()), model(X).numpy(),
                                   rtol=1e-5, atol=1e-5)


def _expected(figure: dict[int, float], limit: float, front: set[int]) -> int:
    """What pick must choose: the most accurate within the limit, then on the front, faster, earlier."""
    latency = {n: _record(n).latency_ms("local") for n in figure}
    meeting = [n for n, value in figure.items() if value <= limit]
    return max(meeting, key=lambda n: (_accuracy(n), n in front, -latency[n], -n))


def test_pick_by_limits_takes_the_most_accurate_within_them(at_root, capsys, monkeypatch):
    latencies = {n: _record(n).latency_ms("local") for n in TRAINED}
    front = {t.number for t in load_study(NAME).best_trials}
    for limit in sorted(set(latencies.values())):
        choice = choose(open_study(NAME), max_latency_ms=limit)
        assert choice.record.number == _expected(latencies, limit, front), limit
        excluded = {n for n in latencies if n in front and latencies[n] > limit}
        for n in excluded:
            assert any(note.startswith(f"excluded trial {n} ") for note in choice.notes), choice.notes
    # The model's own memory too.
    peaks = {n: _record(n).model_peak_mib("local") for n in TRAINED}
    limit = min(peaks.values())
    expected = _expected(peaks, limit, front)
    out = at_root / "bundle-limits"
    code, stdout, stderr = nas_cli(capsys, monkeypatch, "pick", NAME, "--max-latency-ms", "1",
                                   "--max-model-peak-mib", repr(limit), "--agent", "local", "--out", out)
    assert code == 0, stderr
    assert f"Picked trial {expected}" in stdout
    assert f"meets latency <= 1 ms and model peak memory <= {limit:g} MiB on local" in stdout
    assert json.loads((out / "metrics.json").read_text())["trial"] == expected


def test_retrain_reports_new_and_search_accuracy(at_root, capsys, monkeypatch):
    out = at_root / "bundle-retrained"
    code, stdout, stderr = nas_cli(capsys, monkeypatch, "pick", NAME, "--trial", "2", "--retrain-epochs", "3",
                                   "--out", out)
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    retrain = metrics["retrain"]
    assert retrain["epochs"] == 3 and retrain["search_epochs"] == 2
    assert retrain["search_accuracy"] == pytest.approx(_accuracy(2))
    assert metrics["accuracy"]["bundle"] == pytest.approx(retrain["accuracy"])
    new, old = 100 * retrain["accuracy"], 100 * _accuracy(2)
    assert f"accuracy {new:.2f}% (search: {old:.2f}% after 2 epochs)" in stdout
    # The bundled weights are the retrained ones, not the search's.
    study = load_study(NAME)
    weights = study_artifacts(study).download(_record(2).data.artifacts["weights"], out.parent / "searched.pt")
    searched = torch.load(weights, weights_only=True)
    bundled = torch.load(out / "model.pt", weights_only=True)
    assert any(not torch.equal(searched[k], bundled[k]) for k in searched)
    X = load_dataset("digits").X_val
    with torch.no_grad():
        expected = nas.load_model(out / "arch.json", out / "model.pt")(X).numpy()
    np.testing.assert_allclose(_onnx_logits(out / "model.onnx", X.numpy()), expected, rtol=1e-4, atol=1e-4)


def test_onnx_that_does_not_match_is_refused_and_nothing_written(at_root):
    opened = open_study(NAME)
    choice = choose(opened, trial=2)
    wrong = _record(1).data.artifacts["onnx"]["-"]  # another trial's model, same shapes
    artifacts = {**choice.record.data.artifacts, "onnx": {"-": wrong}}
    choice.record.data = choice.record.data.model_copy(update={"artifacts": artifacts})
    out = at_root / "bundle-mismatch"
    with pytest.raises(UserError, match="ONNX model's outputs differ from PyTorch's"):
        write_bundle(opened, choice, out)
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
    (["pick", NAME, "--trial", "99"], f"study '{NAME}' has no trial 99 (trials 0-6)"),
    (["pick", NAME, "--trial", "5"], f"trial 5 did not complete (state FAIL: {MADE_FAILURE}"),
    (["pick", NAME, "--trial", "6"], "trial 6 did not complete (state RUNNING)"),
    (["pick", NAME, "--trial", "3"], "trial 3 was not trained: latency_ms@local"),
    (["pick", NAME, "--max-latency-ms", "1e-6"],
     f"no trained trial meets latency <= 1e-06 ms on local ({len(TRAINED)} checked); closest: trial"),
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
    assert done.stderr.strip() == f"error: study '{NAME}' has no trial 42 (trials 0-6)"
