"""Several workers on one study through a real PostgreSQL (Optuna RDBStorage)."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.records import TrialData
from nas.study import start_study
from tests.conftest import unavailable
from tests.spaces import write_space

NAS = str(Path(sys.executable).with_name("nas"))
URL = os.environ.get("NAS_TEST_POSTGRES_URL")

pytestmark = pytest.mark.postgres


def test_two_workers_share_one_study(tmp_path, monkeypatch):
    if not URL:
        unavailable("needs PostgreSQL: as root, export NAS_TEST_POSTGRES_URL=$(.ci/postgres)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NAS_HOME", str(tmp_path / "home"))
    name = f"workers-{os.getpid()}"
    # created once, before the workers start: table creation races otherwise
    start_study(name, write_space(tmp_path), ["local"], n_trials=6, storage=URL, sampler="random")
    workers = [subprocess.Popen([NAS, "study", "resume", name, "--storage", URL], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs

    study = optuna.load_study(study_name=name, storage=URL)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 6
    assert len({t.number for t in complete}) == len(complete)
    assert len({TrialData.load(t.user_attrs).worker for t in complete}) == 2, "both workers should have run trials"
    optuna.delete_study(study_name=name, storage=URL)
