"""Faults at the edges, against the real testbeds: a hung runner is killed on the device, waiting for
the device lock is not measured, cut output is retryable, the work dir stays tidy and bounded, errors
stay one line, and the CLI answers ``--help`` without importing torch."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from device_agents import (
    Agent,
    AgentPool,
    DeviceError,
    MeasureSettings,
    RunnerOutputError,
    RunnerResult,
    RunnerTimeout,
    fingerprint_key,
    parse_runner_output,
    registry,
)
from device_agents.probe_models import mlp_model
from nas.study import TrialData
from tests.spaces import small_space
from tests.test_ssh_agent import QUICK, finish, measuring, study_cli, study_space, trials_by_state, well_formed

pytestmark = pytest.mark.ssh

HUNG = MeasureSettings(warmup=1, min_runs=5, min_seconds=1.5, max_seconds=2.0, max_spread=10.0)


def nas_cli() -> list[str]:
    return [str(Path(sys.executable).with_name("nas"))]


def wait_for_runner(testbed, process: subprocess.Popen | None = None, lock: Path | None = None,  # noqa: ANN001
                    timeout: float = 300) -> int:
    """The pid of a runner process (not the shell around it) measuring on the testbed; with ``lock``
    (its work dir's device lock), once it holds that lock (the runner writes its pid there)."""
    deadline = time.monotonic() + timeout
    while True:
        for pid in testbed.runner_pids():
            if measuring(pid) and (lock is None or _read(lock) == str(pid)):
                time.sleep(0.3)
                return pid
        assert process is None or process.poll() is None, "ended early: " + (process.stdout.read() or "")[-2000:]
        assert time.monotonic() < deadline, "no runner started on the device"
        time.sleep(0.02)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def gone(pid: int, wait: float = 5.0) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its parent counts as gone)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- pure logic, next to the real tests --------------------------------------------------------


@pytest.mark.parametrize("output", ['{"event": "locked"}\n{"schema": 1, "ok": tr', "", "Segmentation fault\n"])
def test_cut_or_foreign_output_is_a_retryable_error(output):
    with pytest.raises(RunnerOutputError) as raised:
        parse_runner_output(output, "board")
    assert raised.value.retryable and "cut or is not its JSON result" in str(raised.value)


def test_fingerprint_key_includes_runner_version_kernel_and_governor():
    base = {"machine": "aarch64", "cores": 4, "runner": "abc", "release": "6.1.0", "governor": "ondemand"}
    for field, other in (("runner", "def"), ("release", "6.6.0"), ("governor", "performance")):
        assert fingerprint_key(base) != fingerprint_key({**base, field: other}), field
    assert fingerprint_key(base) == fingerprint_key({**base, "boot_id": "x", "temperature_c": {"cpu": 50.0}})


class _TimedAgent(Agent):
    def __init__(self, name: str, boot_id: str) -> None:
        self.name, self.boot_id = name, boot_id

    def probe(self) -> RunnerResult:
        return RunnerResult(fingerprint={"boot_id": self.boot_id})

    def run_models(self, models: list[Path], args: list[str], timeout: float) -> RunnerResult:
        started = time.time()
        time.sleep(0.3)
        return RunnerResult(started_at=started, ended_at=time.time())


def test_pool_overlaps_agents_only_on_different_machines():
    agents = {"a": _TimedAgent("a", "boot-1"), "b": _TimedAgent("b", "boot-2"), "c": _TimedAgent("c", "boot-1")}
    with AgentPool(opener=agents.__getitem__) as pool:
        a, b, c = (f.result() for f in pool.measure_all([(n, Path("m.onnx"), QUICK) for n in "abc"]))
    assert a.started_at < b.ended_at and b.started_at < a.ended_at  # two machines: in parallel
    assert a.ended_at <= c.started_at or c.ended_at <= a.started_at  # one machine: in turn


# --- the runner on the device ------------------------------------------------------------------


def test_a_stopped_runner_is_killed_on_timeout_and_frees_the_device(nas_env, loop_agent, sshd, onnx_models):
    outcome: dict = {}
    with registry.open_agent(loop_agent, command_timeout=2.0, log=lambda message: None) as agent:
        agent.measure(onnx_models["small"], QUICK)  # runner and model on the device

        def measure() -> None:
            try:
                outcome["result"] = agent.measure(onnx_models["small"], HUNG)
            except BaseException as exc:  # noqa: BLE001
                outcome["error"] = exc

        worker = threading.Thread(target=measure)
        worker.start()
        pid = wait_for_runner(sshd, lock=Path(agent.workdir, "device.lock"))
        os.kill(pid, signal.SIGSTOP)
        worker.join(timeout=60)
        error = outcome.get("error")
        assert isinstance(error, RunnerTimeout), outcome
        # its own 2 s limit plus the agent's 2 s timeout, counted from getting the device lock
        assert error.retryable and "the runner took longer than 4 s after getting the device lock" in str(error)
        assert "killed there" in str(error) and "nas agent set loop --timeout" in str(error)
        assert gone(pid), "the stopped runner is still on the device"
        started = time.monotonic()
        well_formed(agent.measure(onnx_models["small"], QUICK))  # the device lock is free again
        assert time.monotonic() - started < 30


def test_waiting_for_the_device_lock_does_not_count_against_the_timeout(nas_env, loop_agent, onnx_models):
    short = MeasureSettings(warmup=1, min_runs=5, min_seconds=0.1, max_seconds=1.0, max_spread=10.0)
    with registry.open_agent(loop_agent, command_timeout=2.0) as agent:
        agent.measure(onnx_models["small"], short)
        lock = Path(agent.workdir, "device.lock")
        held = open(lock, "a")  # noqa: SIM115 - released by the timer
        fcntl.flock(held, fcntl.LOCK_EX)
        released = {}

        def release() -> None:
            released["at"] = time.time()
            held.close()

        timer = threading.Timer(5.0, release)  # longer than the 1 + 2 s the measurement may take
        timer.start()
        result = agent.measure(onnx_models["small"], short)
        timer.join()
    well_formed(result)
    assert result.started_at >= released["at"] - 0.5

    with registry.open_agent(loop_agent, lock_timeout=1.0) as agent, open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DeviceError) as raised:
            agent.measure(onnx_models["small"], short)
    assert raised.value.kind == "device_busy" and raised.value.retryable
    assert "device lock was held by pid" in str(raised.value)


def test_cut_runner_output_is_a_retryable_agent_error(nas_env, loop_agent, sshd, onnx_models):
    wrapper = Path(sshd.home, f"cut-{uuid.uuid4().hex[:8]}.sh")
    wrapper.write_text(f'#!/bin/sh\n"{sshd.python}" "$@" | head -c 30\n')
    wrapper.chmod(0o755)
    try:
        with registry.open_agent(loop_agent) as agent:
            agent.target.python = str(wrapper)
            with pytest.raises(RunnerOutputError) as raised:
                agent.measure(onnx_models["small"], QUICK)
    finally:
        wrapper.unlink()
    assert raised.value.retryable and "cut or is not its JSON result" in str(raised.value)


def test_fingerprint_names_the_runner_kernel_and_machine(nas_env, loop_agent):
    from device_agents.runner import runner_version

    fingerprint = registry.get_agent(loop_agent).fingerprint
    assert fingerprint["runner"] == runner_version() and len(fingerprint["runner"]) == 12
    assert fingerprint["release"] == os.uname().release
    assert fingerprint["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert "governor" in fingerprint


@pytest.mark.slow
def test_a_hung_runner_fails_its_trial_retryably_and_resume_redoes_it(nas_env, sshd, add_args, tmp_path):
    assert nas_env.run(*add_args(sshd, "hang", **{"--timeout": "2", "--down-timeout": "5"})).exit_code == 0
    space = tmp_path / "space.toml"
    space.write_text(study_space(min_seconds=1.5) + "max_seconds = 2\n")
    process = study_cli("study", "start", "hung", "--space", str(space), "--agent", "hang", "--trials", "1",
                        "--sampler", "random")
    pid = wait_for_runner(sshd, process, lock=Path(sshd.home, ".nas-agent", "device.lock"))
    os.kill(pid, signal.SIGSTOP)
    output = finish(process, timeout=180)
    failed = trials_by_state("hung").get("FAIL", [])
    assert failed, output[-2000:]
    record = TrialData.load(failed[0].user_attrs)
    assert "took longer than 4 s" in record.fail_reason and "killed" in record.fail_reason and record.retryable
    assert gone(pid), "the hung runner was left on the device"
    assert "0 of 1 trials complete" in output and "nas study resume hung" in output

    resumed = nas_env.run("study", "resume", "hung")
    assert resumed.exit_code == 0, resumed.output + repr(resumed.exception)
    redone = trials_by_state("hung")["COMPLETE"][0]
    assert TrialData.load(redone.user_attrs).retry_of == failed[0].number and redone.params == failed[0].params


# --- the work dir ------------------------------------------------------------------------------


def model_files(workdir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (workdir / "models").glob("*.onnx")}


def test_model_cache_stays_under_its_cap_least_recently_used_first(nas_env, sshd, add_args, tmp_path):
    workdir = Path(sshd.home, f"cache-{uuid.uuid4().hex[:8]}")
    result = nas_env.run(*add_args(sshd, "capped", **{"--cache-mb": "1", "--workdir": workdir.name}))
    assert result.exit_code == 0, result.output + repr(result.exception)
    models = [mlp_model(tmp_path / f"m{seed}.onnx", width=256, depth=1, seed=seed) for seed in range(6)]
    try:
        with registry.open_agent("capped", log=lambda message: None) as agent:
            for index, model in enumerate(models):
                agent.measure(model, QUICK)
                if index == 2:
                    agent.measure(models[0], QUICK)  # used again: now the most recently used
                cached = model_files(workdir)
                assert sum(cached.values()) <= 2**20, cached
                assert f"{agent_digest(model)}.onnx" in cached
            # a model evicted behind the agent's back (another host's upload) is uploaded again
            (workdir / "models" / f"{agent_digest(models[-1])}.onnx").unlink()
            well_formed(agent.measure(models[-1], QUICK))
        assert f"{agent_digest(models[1])}.onnx" not in model_files(workdir)  # least recently used: gone
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


def agent_digest(path: Path) -> str:
    from device_agents import file_sha256

    return file_sha256(path)


def test_stale_partial_uploads_are_removed_and_clean_empties_the_cache(nas_env, loop_agent, onnx_models):
    with registry.open_agent(loop_agent) as agent:
        agent.measure(onnx_models["small"], QUICK)
        workdir = Path(agent.workdir)
    stale, fresh = workdir / "models" / "dead.onnx.part-0000", workdir / "models" / "live.onnx.part-1111"
    for path in (stale, fresh):
        path.write_bytes(b"partial")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    (workdir / "models" / f"{agent_digest(onnx_models['small'])}.onnx").unlink()  # forces an upload
    with registry.open_agent(loop_agent) as agent:
        agent.measure(onnx_models["small"], QUICK)
    assert not stale.exists() and fresh.exists()  # another client may still be writing a fresh one

    result = nas_env.run("agent", "clean", loop_agent)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "removed" in result.output and str(workdir) in result.output
    assert not list((workdir / "models").iterdir()) and not list(workdir.glob("runner-*.py"))
    assert (workdir / "device.lock").exists()  # a runner measuring now may hold it
    with registry.open_agent(loop_agent) as agent:
        well_formed(agent.measure(onnx_models["small"], QUICK))  # redeploys what it needs


@pytest.mark.parametrize("workdir", ["../escape", "a/../../escape", "~", "/tmp/nas-elsewhere"])
def test_a_work_dir_outside_the_home_is_refused(nas_env, sshd, add_args, workdir):
    result = nas_env.run(*add_args(sshd, "outside", **{"--workdir": workdir}))
    assert result.exit_code != 0 and "inside the login's home" in str(result.exception)
    assert registry.list_agents() == {} and not Path("/tmp/nas-elsewhere").exists()


def test_the_runner_writes_nothing_outside_its_work_dir(nas_env, onnx_models, tmp_path, monkeypatch):
    """onnxruntime's telemetry writes ~/.cache/Microsoft on import unless the runner turns it off."""
    home = tmp_path / "device-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with registry.open_agent("local") as agent:
        well_formed(agent.measure(onnx_models["small"], QUICK))
    assert list(home.rglob("*")) == []


# --- one line per problem ----------------------------------------------------------------------


def test_a_port_that_is_not_ssh_fails_at_once_in_one_line(nas_env):
    server = socket.create_server(("127.0.0.1", 0))
    connections = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            connections.append(conn)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    started = time.monotonic()
    done = subprocess.run([*nas_cli(), "agent", "add", "web", "--host", "127.0.0.1", "--port",
                           str(server.getsockname()[1]), "--trust-new-host-key"],
                          capture_output=True, text=True, timeout=60)
    server.close()
    assert done.returncode == 2
    lines = stderr_lines(done.stderr)
    assert len(lines) == 1 and "does not speak SSH" in lines[0] and "--port" in lines[0], done.stderr
    assert len(connections) == 1 and time.monotonic() - started < 15
    assert registry.list_agents() == {}


def test_an_unresolvable_host_fails_at_once_in_one_line(nas_env):
    started = time.monotonic()
    done = subprocess.run([*nas_cli(), "agent", "add", "nowhere", "--host", "no-such-board.invalid",
                           "--trust-new-host-key", "--down-timeout", "300"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = stderr_lines(done.stderr)
    assert len(lines) == 1 and "cannot resolve host name 'no-such-board.invalid'" in lines[0], done.stderr
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("args", [["--help"], ["study", "start", "--help"], ["study", "start"],
                                  ["agent", "add", "x"], ["report", "--help"]])
def test_help_and_usage_errors_import_neither_torch_nor_onnx(args):
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "from nas.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == (0 if "--help" in args else 2), done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert imported and not imported & {"torch", "onnx", "onnxscript", "onnxruntime", "optuna", "paramiko"}


# --- studies -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_interrupted_trial_is_recorded_as_interrupted_and_redone(nas_env, tmp_path):
    from device_agents.testbeds._process import descendants

    space = tmp_path / "space.toml"
    space.write_text(small_space("interrupt", 'kinds = ["dense"]', hidden_layers="[1]", widths="[16]", epochs=1,
                                 min_seconds=3.0))
    process = study_cli("study", "start", "ctrlc", "--space", str(space), "--trials", "2", "--sampler", "random")

    class _Local:  # the local agent's runners: children of the study process
        @staticmethod
        def runner_pids() -> list[int]:
            return descendants(process.pid)

    wait_for_runner(_Local, process)  # measuring, in its own session: Ctrl-C reaches only the study
    process.send_signal(signal.SIGINT)
    output = finish(process, timeout=120)
    assert process.returncode == 130 and "nas study resume ctrlc" in output, output[-2000:]
    failed = trials_by_state("ctrlc")["FAIL"]
    assert [TrialData.load(t.user_attrs).fail_reason for t in failed] == ["interrupted (Ctrl-C)"]
    assert TrialData.load(failed[0].user_attrs).retryable is True
    report = nas_env.run("report", "ctrlc")
    assert "interrupted (Ctrl-C)" in report.output and "no reason recorded" not in report.output


def test_a_repeated_candidate_is_one_point_saying_how_many_trials_it_covers(nas_env, tmp_path):
    from nas.results.report import build_report, plotly_figure, write_png
    from nas.results.report._plot import _points
    from nas.storage import load_study
    from nas.study import open_study, run_study, start_study

    space = tmp_path / "space.toml"
    space.write_text(small_space("repeat", 'kinds = ["dense"]', hidden_layers="[1]", widths="[16]", epochs=1))
    start_study("rep", space, [], 3, sampler="random")
    run_study("rep")  # one architecture in the whole space: trials 1 and 2 repeat trial 0
    study = load_study("rep")
    assert [TrialData.load(t.user_attrs).repeat_of for t in study.trials] == [None, 0, 0]
    report = build_report(open_study("rep"))
    assert report.counts["pareto"] == 3  # the Pareto table still lists every trial
    points = _points(report, "latency_ms@local")["pareto"]
    assert [(p["trial"], p["trials"]) for p in points] == [(0, 3)]
    pareto_traces = [t for t in plotly_figure(report).data if len(t.x) and "3 trials" in str(t.text)]
    assert pareto_traces and all(len(t.x) == 1 for t in pareto_traces)
    assert write_png(report, tmp_path / "pareto.png").stat().st_size > 0


@pytest.mark.slow
def test_demo_again_keeps_the_previous_demo_study(nas_env):
    bundle = Path("studies/demo/bundles/trial-0/model.onnx")
    bundle.parent.mkdir(parents=True)
    bundle.write_bytes(b"picked earlier")
    result = nas_env.run("demo", "--trials", "1")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert bundle.read_bytes() == b"picked earlier"
    assert "studies/demo exists and is kept" in result.output and "demo-2" in result.output
    assert Path("studies/demo-2/study.db").exists()


def test_agent_set_changes_timeouts_and_cache_size_without_contacting_the_device(nas_env, loop_agent, sshd):
    assert registry.get_agent(loop_agent).command_timeout == 120.0
    result = nas_env.run("agent", "set", loop_agent, "--timeout", "7", "--cache-mb", "50")
    assert result.exit_code == 0, result.output
    record = registry.get_agent(loop_agent)
    assert (record.command_timeout, record.cache_mb, record.down_timeout) == (7.0, 50.0, 20.0)
    with registry.open_agent(loop_agent) as agent:
        assert (agent.command_timeout, agent.cache_mb) == (7.0, 50.0)
    for args, message in ((["set", loop_agent], "nothing to set"), (["set", "local", "--timeout", "3"], "built in"),
                          (["set", "nosuch", "--timeout", "3"], "unknown agent"),
                          (["set", loop_agent, "--timeout", "0"], "0")):
        result = nas_env.run("agent", *args)
        assert result.exit_code != 0 and message in (result.output + str(result.exception)), (args, result.output)


def test_the_cli_knows_the_samplers_and_seed_range_without_importing_the_engine():
    from nas.cli.study import DEFAULT_SAMPLER, SAMPLER_NAMES, SEED_MAX
    from nas.study import DEFAULT_SAMPLER as ENGINE_DEFAULT
    from nas.study import SAMPLERS
    from nas.study import SEED_MAX as ENGINE_SEED_MAX

    assert tuple(sorted(SAMPLERS)) == SAMPLER_NAMES and SEED_MAX == ENGINE_SEED_MAX
    assert DEFAULT_SAMPLER == ENGINE_DEFAULT
