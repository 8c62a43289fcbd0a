"""Shared fixtures: an isolated NAS_HOME and HOME, the ``nas`` CLI in-process, the SSH testbeds.

The testbeds are real: a real sshd on 127.0.0.1 (``loopback``) and an emulated aarch64 board
(``arm64_board``). Both need root; tests using them skip with the reason and how to enable them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

ARM64_HOW = (
    "set NAS_TEST_ARM64=1 and run as root after "
    "'apt-get install -y qemu-user-static binfmt-support mmdebstrap arch-test' and "
    "'python -m device_agents.testbeds.arm64 up' (the first build takes about 4 minutes)"
)


@dataclass
class NasEnv:
    """An isolated user: NAS_HOME (registry, known_hosts) and HOME (~/.ssh) under tmp_path."""

    home: Path  # $HOME
    nas_home: Path  # $NAS_HOME
    run: Callable[..., Result]  # run("agent", "add", ...) -> click Result

    @property
    def known_hosts(self) -> Path:
        return self.nas_home / "known_hosts"


@pytest.fixture
def nas_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NasEnv:
    """A fresh NAS_HOME and HOME (no ssh-agent) and the ``nas`` CLI run in-process."""
    home, nas_home = tmp_path / "home", tmp_path / "nas_home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NAS_HOME", str(nas_home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> Result:
        from nas.cli import cli

        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)

    return NasEnv(home=home, nas_home=nas_home, run=run)


def unavailable(reason: str) -> None:
    """Skip, or fail where the testbeds must be there (``NAS_REQUIRE_TESTBEDS=1``, set by .ci/run)."""
    if os.environ.get("NAS_REQUIRE_TESTBEDS") == "1":
        pytest.fail(f"required testbed missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def loopback() -> Iterator:
    """The loopback sshd testbed, started for the session (and stopped after, if we started it)."""
    from device_agents.testbeds.loopback import Loopback

    reason = Loopback.unavailable_reason()
    if reason:
        unavailable(f"loopback sshd testbed unavailable: {reason}")
    testbed = Loopback()
    was_running = testbed.running()
    testbed.up()
    yield testbed
    if not was_running:
        testbed.down()
    else:
        testbed.start()


@pytest.fixture
def sshd(loopback):  # noqa: ANN001, ANN201
    """The loopback testbed, guaranteed running again after the test (for tests that kill it)."""
    loopback.start()
    yield loopback
    loopback.start()


@pytest.fixture
def add_args() -> Callable[..., list[str]]:
    """``add_args(testbed, name, **{"--option": value})``: the ``nas agent add`` arguments for a
    testbed; a value replaces the option's, None drops it, "" makes it a flag."""

    def build(testbed, name: str = "loop", **overrides: str | None) -> list[str]:  # noqa: ANN001
        info = testbed.info()
        options = {
            "--host": info["host"],
            "--port": str(info["port"]),
            "--user": info["user"],
            "--key": info["key"],
            "--python": info["python"],
            "--trust-host-key": info["host_key_fingerprint"],
        }
        options.update(overrides)
        args = ["agent", "add", name]
        for option, value in options.items():
            if value is not None:
                args += [option] if value == "" else [option, value]
        return args

    return build


@pytest.fixture(scope="session")
def _loop_registration(loopback, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    """``nas agent add loop`` done once per session; tests get a copy of the resulting NAS_HOME."""
    from nas.cli import cli

    folder = tmp_path_factory.mktemp("loop_nas_home")
    info = loopback.info()
    saved = {name: os.environ.get(name) for name in ("NAS_HOME", "HOME", "SSH_AUTH_SOCK")}
    os.environ.update(NAS_HOME=str(folder), HOME=str(tmp_path_factory.mktemp("loop_home")))
    os.environ.pop("SSH_AUTH_SOCK", None)
    try:
        result = CliRunner().invoke(
            cli,
            [
                "agent",
                "add",
                "loop",
                "--host",
                info["host"],
                "--port",
                str(info["port"]),
                "--user",
                info["user"],
                "--key",
                info["key"],
                "--python",
                info["python"],
                "--trust-host-key",
                info["host_key_fingerprint"],
                "--down-timeout",
                "20",
            ],
        )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert result.exit_code == 0, result.output + repr(result.exception)
    return folder


@pytest.fixture
def loop_agent(nas_env: NasEnv, sshd, _loop_registration: Path) -> str:  # noqa: ANN001
    """The loopback device registered as ``loop`` (down timeout 20 s) in the test's NAS_HOME."""
    shutil.copytree(_loop_registration, nas_env.nas_home, dirs_exist_ok=True)
    return "loop"


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two MLPs of very different cost: ``small`` (64 wide, 1 layer) and ``large`` (1024 wide, 4 layers)."""
    from device_agents.probe_models import mlp_model

    folder = tmp_path_factory.mktemp("models")
    return {
        "small": mlp_model(folder / "small.onnx", width=64, depth=1),
        "large": mlp_model(folder / "large.onnx", width=1024, depth=4),
    }


@pytest.fixture(scope="session")
def arm64_board():  # noqa: ANN201
    """The emulated aarch64 board (only with NAS_TEST_ARM64=1, as root; see ARM64_HOW)."""
    from device_agents.testbeds.arm64 import Arm64Board

    if os.environ.get("NAS_TEST_ARM64") != "1":
        unavailable(f"arm64 board tests are off: {ARM64_HOW}")
    reason = Arm64Board.unavailable_reason()
    if reason:
        unavailable(f"arm64 board unavailable: {reason}; {ARM64_HOW}")
    board = Arm64Board()
    was_running = board.running()
    board.up()
    yield board
    if not was_running:
        board.down()


S3_HOW = ("as root after 'make setup', export NAS_TEST_S3_URL=$(.ci/s3); or install moto's standalone server "
          "(pip install 'moto[server]') for the tests to start their own")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3-compatible server's endpoint URL: NAS_TEST_S3_URL (started by .ci/s3), else moto's
    standalone server started here as a separate process on 127.0.0.1 (no in-process mock)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    def answers(url: str) -> bool:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return True
        except OSError:
            return False

    url = os.environ.get("NAS_TEST_S3_URL")
    if url:
        if not answers(url):
            unavailable(f"NAS_TEST_S3_URL={url} does not answer; {S3_HOW}")
        yield url
        return
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        unavailable(f"no S3-compatible server: {S3_HOW}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path_factory.mktemp("s3") / "moto.log").open("wb")
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                unavailable(f"moto_server did not start (see {log.name})")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture
def s3_artifacts(s3_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """``s3://BUCKET/studies``: a fresh bucket on the S3 server, with the AWS environment variables
    (endpoint, test-only credentials, region) set for this process and the workers it starts."""
    import re
    import uuid

    import boto3

    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nas-test-only")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nas-test-only")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    bucket = re.sub(r"[^a-z0-9-]", "-", f"nas-{request.node.name.lower()}")[:40] + f"-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/studies"


MADE_STUDY = "made"
MADE_SPACE = """
name = "made"
[data]
dataset = "digits"
[backbone]
hidden_layers = [1, 3]
widths = [32, 2048]
[layers]
kinds = ["dense", "lowrank", "toeplitz"]
lowrank_ranks = [4]
displacement_ranks = [2]
[training]
epochs = 2
learning_rate = 0.01
[[objectives]]
metric = "accuracy"
[[objectives]]
metric = "latency_ms"
[[objectives]]
metric = "model_peak_mib"
[constraints]
max_latency_ms = 0.5
[measure]
min_runs = 5
min_seconds = 0.02
warmup = 1
max_spread = 1e-6  # no measurement is this steady: every one is flagged unstable, as the report must show
max_rounds = 1
"""
# What each trial of the made study is: (enqueued parameters, what it becomes)
MADE_TRIALS = [
    ({"depth": 1, "l0_width": 32, "l0_kind": "toeplitz", "l0_displacement_rank": 2, "out_kind": "dense"}, "trained"),
    ({"depth": 1, "l0_width": 32, "l0_kind": "dense", "out_kind": "dense"}, "trained"),
    ({"depth": 1, "l0_width": 32, "l0_kind": "lowrank", "l0_rank": 4, "out_kind": "dense"}, "trained"),
    ({"depth": 3, **{f"l{i}_width": 2048 for i in range(3)}, **{f"l{i}_kind": "dense" for i in range(3)},
      "out_kind": "dense"}, "infeasible"),
    ({"depth": 1, "l0_width": 32, "l0_kind": "toeplitz", "l0_displacement_rank": 2, "out_kind": "dense"}, "repeat"),
]
MADE_FAILURE = "agent local: the runner took longer than 300 s"


@pytest.fixture(scope="session")
def _made_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small study made once per session by the real study engine on the local agent.

    Trials 0-4 as MADE_TRIALS says, then trial 5 failed (recorded the way the engine records a
    failure) and trial 6 still running. Report and pick tests read it instead of hand-written
    dictionaries in shapes the study never writes.
    """
    import optuna

    from nas.storage import load_study
    from nas.study import TrialData, run_study, start_study

    root = tmp_path_factory.mktemp("made")
    saved_cwd, saved_home = Path.cwd(), os.environ.get("NAS_HOME")
    os.chdir(root)
    os.environ["NAS_HOME"] = str(root / "nas_home")
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        (root / "space.toml").write_text(MADE_SPACE)
        study = start_study(MADE_STUDY, root / "space.toml", ["local"], n_trials=len(MADE_TRIALS), sampler="random")
        for params, _ in MADE_TRIALS:
            study.enqueue_trial(params)
        run_study(MADE_STUDY)
        study = load_study(MADE_STUDY)
        failed = study.ask()
        TrialData(fail_reason=MADE_FAILURE).save(failed)
        study.tell(failed, state=optuna.trial.TrialState.FAIL)
        study.ask()  # left running
    finally:
        os.chdir(saved_cwd)
        if saved_home is None:
            os.environ.pop("NAS_HOME", None)
        else:
            os.environ["NAS_HOME"] = saved_home
    return root


@pytest.fixture
def made_study(_made_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the made study in the test's own folder (its working directory); the study's name is MADE_STUDY."""
    root = tmp_path / "made"
    shutil.copytree(_made_study, root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("NAS_HOME", str(root / "nas_home"))
    return root
