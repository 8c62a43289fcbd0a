"""``SSHAgent``: the ``device_agents.base.Agent`` of a device reached over SSH.

It composes the other modules: a ``Connection`` (connecting, retrying, quoted commands, SFTP), the
device's ``ModelCache`` (models and the runner, by content hash) and the serving runner on its own
channel (``RemoteServer``), to which every runner call goes. What is left here is the runner's
lifetime on the device: a runner that overruns its timeout, or whose connection dropped, is killed
there with its whole process group (``runner.py --kill-run``, after reconnecting if need be), so it
never takes the device lock later.
"""

from __future__ import annotations

import dataclasses
import posixpath
import shlex
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko

from device_agents import hostkeys
from device_agents.base import (
    DEFAULT_CACHE_MB,
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_LOCK_TIMEOUT,
    Agent,
    RunnerDeadline,
    file_sha256,
)
from device_agents.errors import AgentError, DeviceError, RunnerTimeout
from device_agents.protocol import MeasureSettings, RunnerResult, parse_runner_output
from device_agents.served import one_request_at_a_time
from device_agents.ssh._channel import RemoteServer
from device_agents.ssh._connection import Connection
from device_agents.ssh._errors import ConnectionLost, describe
from device_agents.ssh._models import ModelCache
from device_agents.ssh._target import SSHTarget


class SSHAgent(Agent):
    """Measures on a device over one persistent SSH connection."""

    def __init__(
        self,
        name: str,
        target: SSHTarget,
        trust: hostkeys.TrustPolicy | None = None,
        connect_timeout: float = 10.0,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        down_timeout: float = 300.0,
        keepalive: float = 10.0,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        cache_mb: float = DEFAULT_CACHE_MB,
        on_contact: Callable[[str, str | None], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.target = target
        self.command_timeout = command_timeout
        self.lock_timeout = lock_timeout
        self.log = log or (lambda message: sys.stderr.write(message + "\n"))
        self._connection = Connection(name, target, trust or hostkeys.TrustPolicy(), connect_timeout=connect_timeout,
                                      command_timeout=command_timeout, down_timeout=down_timeout,
                                      keepalive=keepalive, on_contact=on_contact, log=self.log)
        self._models = ModelCache(self._connection, cache_mb)
        self._fingerprint: dict[str, Any] | None = None
        self._orphans: list[str] = []  # run ids of runners whose connection dropped mid-run
        self._server: RemoteServer | None = None
        self._serve_lock = threading.Lock()  # one request at a time on the server's channel
        self._connection.on_drop(self._forget_server)

    def __repr__(self) -> str:
        return f"SSHAgent({self.name!r}, {self.target.host!r})"

    @property
    def address(self) -> str:
        return self._connection.address

    @property
    def workdir(self) -> str:
        """The work dir's absolute path on the device."""
        return self._connection.workdir

    @property
    def cache_mb(self) -> float:
        return self._models.cache_mb

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._connection.disconnect()

    # --- the Agent interface --------------------------------------------------------------------

    def probe(self, dft_model: Path | None = None) -> RunnerResult:
        """Fingerprint the device; with ``dft_model`` (default: the built-in probe) whether DFT runs."""
        if dft_model is None:
            from device_agents.probe_models import probe_models

            dft_model = probe_models()[0]
        digest = file_sha256(dft_model)

        def operation() -> RunnerResult:
            remote = self._models.upload(dft_model, digest)
            return self._runner_call(["--probe", "--model", remote], self.command_timeout)

        result, _ = self._connection.retrying(operation)
        return self._noted(result)

    def settings_for(self, settings: MeasureSettings) -> MeasureSettings:
        """The settings actually used: the agent's thread count, when registered with one, wins."""
        if self.target.threads and settings.threads != self.target.threads:
            return dataclasses.replace(settings, threads=self.target.threads)
        return settings

    def run_models(self, models: list[Path], args: list[str], timeout: float) -> RunnerResult:
        digests = [file_sha256(model) for model in models]
        started = time.monotonic()

        def upload() -> list[str]:
            files = []
            for model, digest in zip(models, digests, strict=True):
                files += ["--model", self._models.upload(model, digest), "--sha256", digest]
            return files

        def operation() -> RunnerResult:
            files = upload()
            try:
                return self._runner_call([*files, *args], timeout)
            except DeviceError as exc:
                if exc.kind not in ("model_corrupt", "model_missing"):
                    raise
                why = "arrived damaged" if exc.kind == "model_corrupt" else "left the device's model cache"
            self.log(f"agent {self.name}: a model {why}; uploading it again")
            self._models.discard(files[1::4], digests)
            return self._runner_call([*upload(), *args], timeout)

        result, attempts = self._connection.retrying(operation)
        return self._noted(result, attempts=attempts, host_wall_s=time.monotonic() - started)

    def run_checked(self, argv: list[str], timeout: float | None = None) -> str:
        """Run a quoted command on the device (with reconnects); its stdout, or a DeviceError."""

        def operation() -> str:
            status, out, err = self._connection.exec(argv, RunnerDeadline(timeout or self.command_timeout))
            if status != 0:
                raise DeviceError(
                    f"agent {self.name}: {shlex.join(argv)} failed ({status}): {err.strip()[-300:]}"
                )
            return out

        return self._connection.retrying(operation)[0]

    def clean(self) -> tuple[int, int]:
        """Remove the cached models, partial uploads and runners from the work dir: (files, bytes)."""
        return self._models.clean()

    def _noted(self, result: RunnerResult, **host_figures: Any) -> RunnerResult:
        """The one place this module reads a runner result or adds to it: the device's fingerprint is
        kept (``Agent.fingerprint``), and what only the host knows is added."""
        self._fingerprint = result.fingerprint or self._fingerprint
        return result.model_copy(update=host_figures)

    # --- the serving runner ---------------------------------------------------------------------

    def _runner_call(self, args: list[str], timeout: float) -> RunnerResult:
        """Run the runner: ``lock_timeout`` s to get the device lock, then ``timeout`` s; killed past that.

        Requests go to one serving runner per connection (``runner.py --serve``, started on first use),
        which forks a fresh child per measurement: Python and the imports are paid once, not per
        measurement (seconds on a small board). A server that overruns is killed with its children.
        """
        runner = self._models.runner()
        self._kill_orphans()
        lock = posixpath.join(self.workdir, "device.lock")
        python = self._connection.python
        deadline = RunnerDeadline(timeout, self.lock_timeout)
        with one_request_at_a_time(self._serve_lock, deadline, self.name):
            return self._served_call([python, runner, "--serve"], lock, args, deadline)

    def _served_call(self, command: list[str], lock: str, args: list[str], deadline: RunnerDeadline
                     ) -> RunnerResult:
        python = command[0]
        server = self._serving(command)
        try:
            status, out, err = server.request(["--lock", lock, "--lock-timeout", str(self.lock_timeout), *args],
                                              deadline)
        except RunnerTimeout:
            self._server = None
            self._kill_run(server.run_id)
            server.close()
            raise RunnerTimeout(
                f"agent {self.name}: the runner {deadline.describe()} on the device and was killed "
                f"there; if the device is just slow, raise it with 'nas agent set {self.name} --timeout SECONDS'"
            ) from None
        except ConnectionLost:
            self._server = None
            self._orphans.append(server.run_id)  # it may still be running: killed after reconnecting
            raise
        if not server.alive():
            self._server = None
        if status == 127 or (status != 0 and not out.strip() and "not found" in err):
            raise DeviceError(
                f"agent {self.name}: no Python at '{python}' on the device ({err.strip()[-200:]}): install "
                "Python 3.8+ (Raspberry Pi OS / Debian: sudo apt install python3 python3-venv; Termux: pkg "
                "install python) or pass --python PATH",
                "python_missing",
            )
        if status == -1:
            raise DeviceError(
                f"agent {self.name}: the runner was killed on the device (out of memory?) "
                f"{err.strip()[-300:]}",
                "killed",
            )
        if not out.strip():
            raise DeviceError(
                f"agent {self.name}: '{python}' printed no result (exit {status}): "
                f"{err.strip()[-300:]} (is it Python 3.8 or newer?)",
                "internal",
            )
        return parse_runner_output(out, self.name)

    def _serving(self, command: list[str]) -> RemoteServer:
        """The connection's serving runner for ``command`` (started anew if it ended or changed)."""
        if self._server is not None and (self._server.command != command or not self._server.alive()):
            self._server.close()
            self._server = None
        if self._server is None:
            transport = self._connection.transport()
            try:
                self._server = RemoteServer(transport, command, self._connection.connect_timeout, self.address)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise ConnectionLost(f"the connection to {self.address} failed: {describe(exc)}") from None
        return self._server

    def _forget_server(self) -> None:
        """The connection went, and the server's channel with it: the server sees EOF and exits."""
        self._server = None

    def _kill_run(self, run_id: str) -> None:
        """SIGKILL a runner's process group on the device (best effort; retried after a reconnect)."""
        try:
            self._connection.exec([self._connection.python, self._models.runner(), "--kill-run", run_id],
                                  RunnerDeadline(self.command_timeout))
        except (ConnectionLost, AgentError) as exc:
            self._orphans.append(run_id)
            self.log(f"agent {self.name}: could not stop run {run_id} on the device yet: {exc}")

    def _kill_orphans(self) -> None:
        orphans, self._orphans = self._orphans, []
        for run_id in orphans:
            self._kill_run(run_id)
