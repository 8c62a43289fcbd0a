"""Trained models (ONNX files, weights) in Optuna's artifact store, so any host can fetch any trial's.

A study's artifacts live at one URL, chosen at ``nas study start --artifacts URL`` and stored in the
study's config: a folder (``FileSystemArtifactStore``; the default, ``studies/NAME/artifacts``) or
``s3://bucket/prefix`` (``Boto3ArtifactStore``; endpoint and credentials come from the usual AWS
environment variables, e.g. ``AWS_ENDPOINT_URL_S3`` for a self-hosted server, never from the study).
Trials record Optuna artifact ids, never host paths, so a worker on another machine that reaches
the same storage and artifacts URLs can report and pick every trial.

Artifacts are content-addressed: each is uploaded to the study under the file name
``<sha256><suffix>``, and identical bytes are looked up by that name before uploading again.
Studies made before this store recorded ``artifacts_dir`` (a local folder) and file names; a file
name is a valid id in a folder store, so they are read the same way.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.artifacts import (
    Boto3ArtifactStore,
    FileSystemArtifactStore,
    download_artifact,
    get_all_artifact_meta,
    upload_artifact,
)
from optuna.artifacts.exceptions import ArtifactNotFound

from device_agents import file_sha256
from nas.errors import UserError


def normalise_url(url: str) -> str:
    """The URL as stored with the study: ``s3://bucket[/prefix]`` or an absolute folder path."""
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise UserError(f"artifacts URL {url!r} names no bucket (expected s3://bucket/prefix)")
        prefix = prefix.strip("/")
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    elif "://" in url:
        raise UserError(f"artifacts URL {url!r} is not supported; allowed: a folder, file:///PATH, s3://bucket/prefix")
    if not url:
        raise UserError("artifacts URL is empty; give a folder or s3://bucket/prefix")
    return str(Path(url).expanduser().resolve())


class PrefixedStore:
    """An Optuna artifact store that keeps every id under a key prefix (the ``/prefix`` of ``s3://bucket/prefix``).

    ``Boto3ArtifactStore`` writes ids at the top of the bucket; a prefix lets several studies or
    projects share one bucket.
    """

    def __init__(self, store: Any, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    def open_reader(self, artifact_id: str) -> IO[bytes]:
        return self.store.open_reader(self.prefix + artifact_id)

    def write(self, artifact_id: str, content_body: IO[bytes]) -> None:
        self.store.write(self.prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(self.prefix + artifact_id)


@contextmanager
def _store_errors(url: str) -> Iterator[None]:
    """Unreachable servers, missing credentials or buckets: one line naming the URL."""
    if not url.startswith("s3://"):  # folder stores raise nothing of their own
        yield
        return
    import botocore.exceptions as aws

    try:
        yield
    except aws.NoCredentialsError as exc:
        raise UserError(f"artifacts {url}: no AWS credentials (set AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY, or a profile)") from exc
    except (aws.BotoCoreError, aws.ClientError) as exc:
        raise UserError(f"artifacts {url}: {str(exc).splitlines()[0]}") from exc


def open_store(url: str, create: bool = False) -> Any:
    """The Optuna artifact store for a (normalised) URL, checked to be reachable from this host.

    ``create`` makes a missing folder (at study start); elsewhere a missing folder means this host
    does not see the study's artifacts, which is said in one line instead of writing a second copy.
    """
    if url.startswith("s3://"):
        try:
            import boto3
        except ImportError as exc:
            raise UserError(f"artifacts {url}: S3 needs boto3 (pip install '.[s3]')") from exc
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        with _store_errors(url):
            client = boto3.client("s3")
            client.head_bucket(Bucket=bucket)
        store = Boto3ArtifactStore(bucket, client=client)
        return PrefixedStore(store, prefix + "/") if prefix else store
    folder = Path(url)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    elif not folder.is_dir():
        raise UserError(f"artifacts folder {folder} does not exist on this host ({socket.gethostname()}): "
                        "share it at the same path, or start the study with --artifacts s3://bucket/prefix "
                        "for workers on several machines")
    return FileSystemArtifactStore(folder)


def check_store(url: str) -> None:
    """Refuse, before a study is created, an artifacts URL this host cannot use."""
    if url.startswith("s3://"):
        open_store(url)
    elif Path(url).exists() and not Path(url).is_dir():
        raise UserError(f"artifacts folder {url} is a file")


class StudyArtifacts:
    """Upload and fetch a study's artifacts by id, through Optuna's ``upload_artifact``/``download_artifact``."""

    def __init__(self, study: optuna.Study, url: str) -> None:
        self.study = study
        self.url = url
        self.store = open_store(url)

    def upload(self, path: Path, suffix: str) -> str:
        """Store the file (unless the same bytes are already stored); returns its artifact id."""
        sha = file_sha256(path)
        name = sha + suffix
        with _store_errors(self.url):
            for meta in get_all_artifact_meta(self.study):
                if meta.filename == name and self._holds(meta.artifact_id, sha):
                    return meta.artifact_id
            with tempfile.TemporaryDirectory(prefix="nas-upload-") as tmp:
                named = Path(tmp) / name  # Optuna records the file's name: the content hash
                shutil.copyfile(path, named)
                return upload_artifact(artifact_store=self.store, file_path=str(named), study_or_trial=self.study)

    def download(self, artifact_id: str, target: Path) -> Path:
        """Fetch an artifact into ``target`` (a new file)."""
        target = Path(target)
        try:
            with _store_errors(self.url):
                download_artifact(artifact_store=self.store, file_path=str(target), artifact_id=artifact_id)
        except ArtifactNotFound as exc:
            target.unlink(missing_ok=True)
            raise UserError(f"artifact {artifact_id} is missing from {self.url}") from exc
        return target

    def _holds(self, artifact_id: str, sha: str) -> bool:
        """Whether the stored artifact is complete: a worker that died mid-upload leaves its record behind."""
        with tempfile.TemporaryDirectory(prefix="nas-check-") as tmp:
            copy = Path(tmp) / "artifact"
            try:
                download_artifact(artifact_store=self.store, file_path=str(copy), artifact_id=artifact_id)
            except ArtifactNotFound:
                return False
            return file_sha256(copy) == sha
