"""The device's model cache, kept over SFTP in the agent's work dir.

Models are uploaded once under their content hash (``WORKDIR/models/<sha256>.onnx``, verified on the
device by the runner's ``--sha256``) and the runner under its own (``WORKDIR/runner-<sha12>.py``), so
a file already there is never sent again, whichever host sent it. An upload goes to a temporary name
and is renamed: a file is never half-written. After each upload the cache is tidied: partial uploads
(``*.part-*``) nobody wrote for ``STALE_PART_S`` were left by a killed client and go, and the least
recently used models (the runner touches a model on each use) beyond ``cache_mb`` MiB are evicted.
What was uploaded is remembered only while the connection lasts: the device may be wiped meanwhile.
"""

from __future__ import annotations

import contextlib
import posixpath
import secrets
from collections.abc import Iterable
from pathlib import Path

import paramiko

from device_agents.base import RUNNER_PATH, file_sha256
from device_agents.ssh._connection import Connection

STALE_PART_S = 600.0  # a partial upload nobody wrote for this long was left by a killed client


class ModelCache:
    """The models and the runner on the device behind ``connection``, at most ``cache_mb`` MiB of models."""

    def __init__(self, connection: Connection, cache_mb: float) -> None:
        self.connection = connection
        self.cache_mb = cache_mb
        self._runner: str | None = None
        self._uploaded: set[str] = set()
        connection.on_drop(self._forget)

    def runner(self) -> str:
        """The runner's path on the device, deployed there first if this version is not."""
        if self._runner is None:
            workdir = self.connection.workdir
            digest = file_sha256(RUNNER_PATH)
            remote = posixpath.join(workdir, f"runner-{digest[:12]}.py")
            self._makedirs(posixpath.join(workdir, "models"))
            if not self._exists(remote, RUNNER_PATH.stat().st_size):
                self._put(RUNNER_PATH, remote)
            self._runner = remote
        return self._runner

    def upload(self, model: Path, digest: str) -> str:
        """The path on the device of ``model`` (whose SHA-256 is ``digest``), uploaded if it is not there."""
        remote = posixpath.join(self.connection.workdir, "models", f"{digest}.onnx")
        if digest not in self._uploaded:
            self.runner()
            if not self._exists(remote, model.stat().st_size):
                self._put(model, remote)
            self._uploaded.add(digest)
        return remote

    def discard(self, remotes: Iterable[str], digests: Iterable[str]) -> None:
        """Remove models that arrived damaged or left the cache, so the next ``upload`` sends them again."""
        for remote in remotes:
            with contextlib.suppress(FileNotFoundError):
                self.connection.sftp_call("remove a damaged model", lambda sftp, path=remote: sftp.remove(path))
        self._uploaded.difference_update(digests)

    def clean(self) -> tuple[int, int]:
        """Remove the cached models, partial uploads and runners from the work dir: (files, bytes).
        ``device.lock`` stays: a runner measuring now holds it, and a new file would not exclude it."""
        connection = self.connection

        def clean(sftp: paramiko.SFTPClient) -> tuple[int, int]:
            files = size = 0
            for folder in (connection.workdir, posixpath.join(connection.workdir, "models")):
                try:
                    entries = sftp.listdir_attr(folder)
                except FileNotFoundError:
                    continue
                for entry in entries:
                    name = entry.filename
                    runner = name.startswith("runner-") and name.endswith(".py")
                    if name.endswith(".onnx") or ".part-" in name or runner:
                        with contextlib.suppress(FileNotFoundError):
                            sftp.remove(posixpath.join(folder, name))
                            files, size = files + 1, size + (entry.st_size or 0)
            return files, size

        result, _ = connection.retrying(lambda: connection.sftp_call("clean the work dir", clean))
        self._forget()
        return result

    def _forget(self) -> None:
        """Forget what was deployed: it is looked for on the device again."""
        self._runner = None
        self._uploaded.clear()

    def _makedirs(self, path: str) -> None:
        def mkdirs(sftp: paramiko.SFTPClient, path: str) -> None:
            parts = path.split("/")
            for depth in range(2, len(parts) + 1):
                prefix = "/".join(parts[:depth])
                try:
                    sftp.stat(prefix)
                except FileNotFoundError:
                    sftp.mkdir(prefix, 0o755)

        self.connection.sftp_call(f"create {path}", mkdirs, path)

    def _exists(self, remote: str, size: int | None = None) -> bool:
        def stat(sftp: paramiko.SFTPClient) -> bool:
            try:
                attrs = sftp.stat(remote)
            except FileNotFoundError:
                return False
            return size is None or attrs.st_size == size

        return self.connection.sftp_call(f"check {remote}", stat)

    def _put(self, local: Path, remote: str) -> None:
        """Upload to a temporary name in the same folder, then rename: never a half-written file.
        Then tidy the work dir (the new file's mtime is the device's clock)."""
        partial = f"{remote}.part-{secrets.token_hex(4)}"

        def put(sftp: paramiko.SFTPClient) -> float:
            try:
                attrs = sftp.put(str(local), partial, confirm=True)
                sftp.posix_rename(partial, remote)
            except Exception:
                with contextlib.suppress(OSError, paramiko.SSHException):
                    sftp.remove(partial)
                raise
            return attrs.st_mtime

        device_now = self.connection.sftp_call(f"upload {local.name}", put)
        self.connection.sftp_call("tidy the work dir", self._tidy, device_now, remote)

    def _tidy(self, sftp: paramiko.SFTPClient, device_now: float, keep: str) -> None:
        """Remove stale partial uploads; evict the least recently used models beyond the cache's cap."""
        workdir = self.connection.workdir
        models = posixpath.join(workdir, "models")
        cached = []
        for folder in (workdir, models):
            for entry in sftp.listdir_attr(folder):
                path = posixpath.join(folder, entry.filename)
                if ".part-" in entry.filename:
                    if (entry.st_mtime or 0) < device_now - STALE_PART_S:
                        sftp.remove(path)
                elif folder == models and entry.filename.endswith(".onnx") and path != keep:
                    cached.append((entry.st_mtime or 0, entry.st_size or 0, path))
        total = sum(size for _, size, _ in cached)
        if keep.startswith(models + "/"):
            total += sftp.stat(keep).st_size or 0
        for _, size, path in sorted(cached):
            if total <= self.cache_mb * 2**20:
                break
            with contextlib.suppress(FileNotFoundError):  # another host evicted it first
                sftp.remove(path)
            total -= size
