"""Artifacts through Optuna's artifact store: folders and a real S3-compatible server, reuse by content,
one-line errors, and studies made before the store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import optuna
import pytest
from optuna.trial import TrialState, create_trial

from device_agents import file_sha256
from nas.errors import UserError
from nas.storage import StudyArtifacts, normalise_url
from nas.study import CONFIG_ATTR, RECORD_ATTR, TrialData, run_study, start_study
from tests.spaces import write_space

NAS = str(Path(sys.executable).with_name("nas"))
optuna.logging.set_verbosity(optuna.logging.WARNING)


def nas(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NAS, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(params=["folder", "s3"])
def store_url(request, tmp_path) -> str:
    if request.param == "s3":
        return request.getfixturevalue("s3_artifacts")
    (tmp_path / "artifacts").mkdir()
    return str(tmp_path / "artifacts")


def stored_objects(url: str) -> list[str]:
    """What the store holds, listed behind Optuna's back."""
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        listing = boto3.client("s3").list_objects_v2(Bucket=bucket)
        keys = [item["Key"] for item in listing.get("Contents", [])]
        assert all(key.startswith(prefix + "/") for key in keys), keys
        return keys
    return sorted(p.name for p in Path(url).iterdir())


def test_same_bytes_are_stored_once_and_come_back_whole(store_url, tmp_path):
    study = optuna.create_study()
    store = StudyArtifacts(study, store_url)
    one, two = tmp_path / "one.onnx", tmp_path / "two.onnx"
    one.write_bytes(b"model one" * 1000)
    two.write_bytes(b"model two" * 1000)
    first = store.upload(one, ".onnx")
    assert store.upload(one, ".onnx") == first
    second = store.upload(two, ".onnx")
    assert second != first
    assert len(stored_objects(store_url)) == 2
    assert store.download(first, tmp_path / "back.onnx").read_bytes() == one.read_bytes()
    names = {meta.artifact_id: meta.filename for meta in optuna.artifacts.get_all_artifact_meta(study)}
    assert names == {first: file_sha256(one) + ".onnx", second: file_sha256(two) + ".onnx"}


def test_an_upload_that_never_finished_is_not_reused(store_url, tmp_path):
    study = optuna.create_study()
    store = StudyArtifacts(study, store_url)
    path = tmp_path / "w.pt"
    path.write_bytes(b"weights" * 100)
    lost = store.upload(path, ".pt")
    store.store.remove(lost)  # its worker died after Optuna recorded the artifact, before the bytes landed
    again = store.upload(path, ".pt")
    assert again != lost
    assert store.download(again, tmp_path / "back.pt").read_bytes() == path.read_bytes()
    with pytest.raises(UserError, match=f"artifact {lost} is missing from"):
        store.download(lost, tmp_path / "lost.pt")
    assert not (tmp_path / "lost.pt").exists()


@pytest.mark.parametrize(("url", "expected"), [
    ("s3://bucket/a/b/", "s3://bucket/a/b"),
    ("s3://bucket", "s3://bucket"),
    ("file:///srv/art", "/srv/art"),
])
def test_artifact_urls_are_normalised(url, expected):
    assert normalise_url(url) == expected


@pytest.mark.parametrize(("artifacts", "message"), [
    ("gs://bucket/x", "artifacts URL 'gs://bucket/x' is not supported; allowed: a folder, file:///PATH, s3://"),
    ("s3:///x", "names no bucket"),
    ("space.toml", "is a file"),
])
def test_bad_artifacts_url_is_one_line_and_creates_nothing(tmp_path, artifacts, message):
    space = write_space(tmp_path)
    result = nas(tmp_path, "study", "start", "bad", "--space", space, "--artifacts", artifacts)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "studies").exists()


def test_missing_bucket_is_one_line_and_creates_nothing(s3_artifacts, tmp_path):
    space = write_space(tmp_path)
    url = "s3://no-such-bucket-for-nas/x"
    result = nas(tmp_path, "study", "start", "nobucket", "--space", space, "--artifacts", url)
    assert result.returncode == 2, result.stderr
    assert f"error: artifacts {url}: " in result.stderr and "Not Found" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "studies").exists()


def test_a_worker_that_cannot_see_the_artifacts_folder_stops_before_any_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_HOME", str(tmp_path / "home"))
    storage = f"sqlite:///{tmp_path}/shared.db"
    folder = tmp_path / "only-on-host-a"
    start_study("hosts", write_space(tmp_path), ["local"], 2, storage=storage, artifacts=str(folder))
    assert folder.is_dir()
    folder.rmdir()  # host B: the folder is not there
    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    result = nas(elsewhere, "study", "resume", "hosts", "--storage", storage)
    assert result.returncode == 2, result.stderr
    assert f"artifacts folder {folder} does not exist on this host" in result.stderr
    assert "--artifacts s3://bucket/prefix" in result.stderr
    assert not optuna.load_study(study_name="hosts", storage=storage).trials
    assert not folder.exists() and not (elsewhere / "studies").exists()


def test_study_made_before_the_artifact_store_is_still_resumed_and_picked(tmp_path, monkeypatch):
    """Old studies recorded ``artifacts_dir`` and files named ``<sha256><suffix>``: resume adds new
    artifacts to that folder, and pick reads old and new ones."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NAS_HOME", str(tmp_path / "home"))
    storage = f"sqlite:///{tmp_path}/old/study.db"
    folder = tmp_path / "old" / "artifacts"
    start_study("old", write_space(tmp_path), ["local"], 1, storage=storage, sampler="random", artifacts=str(folder))
    study = run_study("old", storage=storage)
    first = study.trials[0]
    data = TrialData.load(first.user_attrs)
    assert data.trained
    # Rewrite it as older versions stored it: files named by content hash, the folder as artifacts_dir.
    names = {}
    for form, artifact_id in [("weights", data.artifacts["weights"]), *data.artifacts["onnx"].items()]:
        names[form] = file_sha256(folder / artifact_id) + (".pt" if form == "weights" else ".onnx")
        (folder / names[form]).write_bytes((folder / artifact_id).read_bytes())
    old = data.model_copy(update={"artifacts": {"weights": names.pop("weights"), "onnx": names}})
    config = dict(study.user_attrs[CONFIG_ATTR])
    config["artifacts_dir"] = config.pop("artifacts")
    study.set_user_attr(CONFIG_ATTR, config)
    study.add_trial(create_trial(
        params=first.params, distributions=first.distributions, values=first.values,
        user_attrs={**first.user_attrs, RECORD_ATTR: old.model_dump(mode="json")},
        system_attrs={k: v for k, v in first.system_attrs.items() if k.startswith("constraints")}))

    result = nas(tmp_path, "study", "resume", "old", "--storage", storage, "--trials", "3")
    assert result.returncode == 0, result.stderr
    new = optuna.load_study(study_name="old", storage=storage).trials[2]
    assert new.state == TrialState.COMPLETE
    assert (folder / TrialData.load(new.user_attrs).artifacts["weights"]).is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for number in (1, 2):
        out = elsewhere / f"bundle{number}"
        result = nas(elsewhere, "pick", "old", "--trial", number, "--storage", storage, "--out", out)
        assert result.returncode == 0, result.stderr
        assert "ONNX matches PyTorch" in result.stdout
    metrics = json.loads((elsewhere / "bundle1" / "metrics.json").read_text())
    assert metrics["accuracy"]["bundle"] == pytest.approx(data.accuracy)
