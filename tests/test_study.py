"""The study engine end to end on digits with the local agent."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from device_agents import LocalAgent
from nas.errors import UserError
from nas.model import build_model, deployed, export_onnx, spec_seed
from nas.results import dominates
from nas.storage import load_study
from nas.study import (
    CONFIG_ATTR,
    REFERENCE_ATTR,
    MeasurementCache,
    TrialRecord,
    records,
    run_study,
    start_study,
    study_artifacts,
    study_config,
)
from tests.spaces import FAST_SPACE, write_space

NAS = str(Path(sys.executable).with_name("nas"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Studies go to tmp_path/studies, the agent registry to tmp_path/home."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NAS_HOME", str(tmp_path / "home"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return tmp_path


def complete(study):
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def test_study_completes_with_a_non_dominated_pareto_set(workdir):
    start_study("six", write_space(workdir), ["local"], n_trials=6, sampler="random", seed=3)
    study = run_study("six")
    done = complete(study)
    assert len(done) == 6
    for trial in done:
        record = TrialRecord.from_trial(trial)
        assert record.spec.layers and record.data.code == record.spec.code
        chosen = record.chosen("local")
        assert chosen.median_ms > 0 and chosen.runner.fingerprint["machine"]
        assert trial.values[1] == pytest.approx(record.latency_ms("local"))
        if record.data.trained:
            assert 0.1 < record.data.accuracy <= 1.0
            weights = study_artifacts(study).download(record.data.artifacts["weights"], workdir / f"{trial.number}.pt")
            assert torch.load(weights, weights_only=True)

    directions = [d.name.lower() for d in study.directions]
    feasible = [t for t in done if TrialRecord.from_trial(t).feasible]
    front = {t.number for t in study.best_trials}
    brute = {a.number for a in feasible
             if not any(dominates(b.values, a.values, directions) for b in feasible if b is not a)}
    assert front == brute and front


LATENCY_BOUND_SPACE = """
name = "latency-bound"
[backbone]
hidden_layers = [3]
widths = [8, 2048]  # 2048-2048-2048 takes milliseconds, 8-8-8 microseconds
[layers]
kinds = ["dense"]
[training]
epochs = 1
[constraints]
max_latency_ms = 0.2
[measure]
min_runs = 5
min_seconds = 0.02
"""


def test_candidates_breaking_the_latency_bound_are_never_trained(workdir):
    start_study("bound", write_space(workdir, LATENCY_BOUND_SPACE), ["local"], n_trials=3, sampler="random")
    study = load_study("bound")
    shape = {"depth": 3, "l0_kind": "dense", "l1_kind": "dense", "l2_kind": "dense", "out_kind": "dense"}
    for width in (2048, 8, 2048):
        study.enqueue_trial({**shape, "l0_width": width, "l1_width": width, "l2_width": width})
    big, tiny, big_again = records(run_study("bound"))
    for record in (big, big_again):
        assert record.complete and not record.feasible
        assert record.data.infeasible == [f"latency_ms@local {record.latency_ms('local'):.4g} > 0.2"]
        assert not record.data.trained
        assert record.data.train_seconds is None and record.data.artifacts is None
    assert tiny.feasible and tiny.data.trained and tiny.data.train_seconds > 0
    assert big.number not in {t.number for t in study.best_trials}


def test_repeated_spec_is_not_measured_or_trained_again(workdir):
    start_study("cache", write_space(workdir), ["local"], n_trials=3, sampler="random")
    study = load_study("cache")
    params = {"depth": 1, "l0_width": 32, "l0_kind": "toeplitz", "l0_displacement_rank": 2, "out_kind": "dense"}
    for _ in range(2):
        study.enqueue_trial(params)
    first, second = (TrialRecord.from_trial(t) for t in complete(run_study("cache", n_trials=2)))
    assert second.data.repeat_of == first.number and second.values == first.values
    for form in ("fft", "dense"):
        measured, reused = (r.data.agents["local"].forms[form].runner for r in (first, second))
        assert not measured.cached
        # the same runner process produced both: it was not invoked again
        assert (reused.pid, reused.started_at) == (measured.pid, measured.started_at)
    assert second.data.timing is None, "a repeat is neither measured nor trained"


def test_measurement_cache_is_rebuilt_from_storage(workdir):
    """A resumed study (a new process) finds earlier measurements by model content hash."""
    start_study("rebuilt", write_space(workdir), ["local"], n_trials=1, sampler="random")
    trial = TrialRecord.from_trial(complete(run_study("rebuilt"))[0])
    spec = trial.spec
    model = build_model(spec.with_form("fft"), seed=spec_seed(spec.with_form("fft")))
    path = export_onnx(deployed(model, spec), spec.in_features, workdir / "again.onnx")

    study = load_study("rebuilt")
    cache = MeasurementCache(study)
    settings = study_config(study).search_space.measure.settings()
    # a form measured alone waits for the device at the agent's calibrated speed, which the study keeps
    settings = replace(settings, reference_ms=study.user_attrs[REFERENCE_ATTR]["local"])
    result = cache.measure(LocalAgent(), path, settings)
    stored = trial.chosen("local").runner
    assert result.cached and result.pid == stored.pid


def test_sigkill_mid_run_then_resume_keeps_every_complete_trial(workdir):
    space = write_space(workdir, FAST_SPACE.replace("epochs = 3", "epochs = 8"))
    process = subprocess.Popen([NAS, "study", "start", "killed", "--space", str(space), "--trials", "5"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    before = []
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
        try:  # a reader waits while the start creates the storage, and never creates anything itself
            before = complete(load_study("killed"))
        except UserError:  # not there yet
            continue
        if len(before) >= 2:
            break
    assert process.poll() is None, f"study ended before it could be killed: {process.stderr.read()}"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = {t.number: t.values for t in complete(load_study("killed"))}
    assert 2 <= len(before) < 5

    done = subprocess.run([NAS, "study", "resume", "killed"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = {t.number: t.values for t in complete(load_study("killed"))}
    assert len(after) == 5
    assert all(after[number] == values for number, values in before.items())
    assert "Pareto set" in done.stdout


def test_settings_stored_before_they_had_a_version_read_and_resume(workdir):
    """Studies started before StudyConfig stored the same fields as a plain dict, without a version."""
    start_study("older", write_space(workdir), ["local"], n_trials=1, sampler="random")
    study = load_study("older")
    stored = dict(study.user_attrs[CONFIG_ATTR])
    assert stored.pop("schema_version") == 1
    study.set_user_attr(CONFIG_ATTR, stored)
    config = study_config(load_study("older"))
    assert config.agents == ["local"] and config.search_space.name == "fast" and config.n_trials == 1
    assert [o.label for o in config.objectives] == ["accuracy", "latency_ms@local", "params"]
    assert len(complete(run_study("older", n_trials=2))) == 2


def test_settings_of_another_version_are_refused_not_misread(workdir):
    start_study("newer", write_space(workdir), ["local"], n_trials=1, sampler="random")
    study = load_study("newer")
    study.set_user_attr(CONFIG_ATTR, {**study.user_attrs[CONFIG_ATTR], "schema_version": 99})
    with pytest.raises(UserError, match="its settings have schema 99, this version of nas reads 1"):
        run_study("newer")


def test_status_reports_counts_and_best_values(workdir):
    start_study("shown", write_space(workdir), ["local"], n_trials=2, sampler="random")
    run_study("shown")
    done = subprocess.run([NAS, "study", "status", "shown"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 complete" in done.stdout and "accuracy" in done.stdout and "latency_ms@local" in done.stdout


def test_unknown_study_is_one_line(workdir):
    done = subprocess.run([NAS, "study", "resume", "nope"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no study 'nope'" in done.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--space", "digits", "--agent", "nosuch"], "unknown agent 'nosuch'"),
    (["--space", "mnist_shl"], "dataset mnist:~/data/mnist: MNIST file"),
])
def test_bad_agent_or_data_is_refused_before_the_study_exists(workdir, monkeypatch, args, message):
    monkeypatch.setenv("HOME", str(workdir))  # no ~/data/mnist here
    done = subprocess.run([NAS, "study", "start", "x", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (workdir / "studies").exists()
