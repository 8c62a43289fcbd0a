"""Several workers on one study, as on several machines: a real PostgreSQL (Optuna RDBStorage) and a
real S3-compatible server for the artifacts, each worker in its own working directory, nothing shared
on disk."""

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch
from optuna.trial import TrialState

import nas
from nas.data import load_dataset
from nas.study import TrialData, start_study
from tests.conftest import unavailable
from tests.spaces import write_space

NAS = str(Path(sys.executable).with_name("nas"))
URL = os.environ.get("NAS_TEST_POSTGRES_URL")

pytestmark = [pytest.mark.postgres, pytest.mark.s3]


def test_workers_on_separate_hosts_and_pick_from_a_third(tmp_path, monkeypatch, s3_artifacts):
    if not URL:
        unavailable("needs PostgreSQL: as root, export NAS_TEST_POSTGRES_URL=$(.ci/postgres)")
    hosts = {name: tmp_path / name for name in ("starter", "worker-a", "worker-b", "picker")}
    for folder in hosts.values():
        folder.mkdir()
    monkeypatch.chdir(hosts["starter"])
    monkeypatch.setenv("NAS_HOME", str(tmp_path / "home"))
    name = f"workers-{os.getpid()}"
    # created first, then resumed by the workers (starting them all with --load-if-exists works too)
    start_study(name, write_space(hosts["starter"]), ["local"], n_trials=6, storage=URL, sampler="random",
                artifacts=s3_artifacts)
    workers = [subprocess.Popen([NAS, "study", "resume", name, "--storage", URL], cwd=hosts[host],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for host in ("worker-a", "worker-b")]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs

    study = optuna.load_study(study_name=name, storage=URL)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 6
    assert len({t.number for t in complete}) == len(complete)
    assert len({TrialData.load(t.user_attrs).worker for t in complete}) == 2, "both workers should have run trials"
    data = {t.number: TrialData.load(t.user_attrs) for t in complete}
    by_worker = {data[t.number].worker: t for t in complete if data[t.number].trained}
    assert len(by_worker) == 2, "both workers should have trained trials"
    # The study holds artifact ids, never a host's path; the bytes are in the bucket, not on any host.
    assert str(tmp_path) not in json.dumps([t.user_attrs for t in study.trials])
    assert not any((hosts[host] / "studies").exists() for host in ("worker-a", "worker-b"))
    ids = {d.artifacts["weights"] for d in data.values() if d.trained}
    bucket, _, prefix = s3_artifacts.removeprefix("s3://").partition("/")
    keys = {item["Key"] for item in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    assert {f"{prefix}/{i}" for i in ids} <= keys

    X = load_dataset("digits").X_val
    for trial in by_worker.values():
        out = hosts["picker"] / f"trial-{trial.number}"
        result = subprocess.run([NAS, "pick", name, "--trial", str(trial.number), "--storage", URL, "--out", out],
                                cwd=hosts["picker"], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        assert "ONNX matches PyTorch" in result.stdout
        model = nas.load_model(out / "arch.json", out / "model.pt")
        with torch.no_grad():
            expected = model(X).numpy()
        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: X.numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
        assert json.loads((out / "metrics.json").read_text())["accuracy"]["bundle"] == pytest.approx(
            data[trial.number].accuracy)
    optuna.delete_study(study_name=name, storage=URL)
