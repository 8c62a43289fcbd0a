"""The SSH agent against a real sshd on 127.0.0.1 (the loopback testbed): registering, host keys,
measuring, the device lock, hostile names, and a device that goes away."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paramiko
import pytest

from device_agents import (
    RUNNER_SCHEMA,
    AgentError,
    AgentPool,
    AgentUnreachable,
    DeviceError,
    MeasureSettings,
    file_sha256,
    registry,
)
from device_agents.hostkeys import HostKeyChanged, HostKeyUnknown, TrustPolicy, key_fingerprint
from device_agents.ssh import AgentAuthError, SSHTarget
from nas.study import TrialData
from tests.spaces import small_space

pytestmark = pytest.mark.ssh

QUICK = MeasureSettings(warmup=2, min_runs=10, min_seconds=0.1, max_seconds=10.0, max_spread=10.0)


def well_formed(result: dict) -> None:
    assert result.schema_ == RUNNER_SCHEMA and result.ok is True
    latency = result.latency_ms
    assert 0 < latency.min <= latency.median <= latency.p90
    assert latency.count >= QUICK.min_runs and latency.iqr >= 0
    assert result.session_ms > 0
    for stage in ("baseline", "after_session", "after_runs"):
        assert getattr(result.memory_kb, stage).peak_kb >= getattr(result.memory_kb, stage).rss_kb > 0
    assert result.started_at < result.ended_at
    fingerprint = result.fingerprint
    assert fingerprint["machine"] and fingerprint["onnxruntime"] and fingerprint["cores"] >= 1


def never_overlap(results: list[dict]) -> None:
    intervals = sorted((r.started_at, r.ended_at) for r in results)
    for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
        assert start >= end, f"measurements overlapped: {intervals}"


# --- registering --------------------------------------------------------------------------------


def test_add_then_measure_two_models_the_larger_is_slower(nas_env, loop_agent, onnx_models):
    record = registry.get_agent(loop_agent)
    assert record.fingerprint["machine"] == "x86_64" and record.dft is True
    assert record.calibration.median_ms > 0 and record.state == "ok"
    assert "password" not in str(record).lower()

    listing = nas_env.run("agent", "list")
    assert listing.exit_code == 0 and "loop" in listing.output and "x86_64" in listing.output

    with registry.open_agent(loop_agent) as agent:
        small = agent.measure(onnx_models["small"], QUICK)
        large = agent.measure(onnx_models["large"], QUICK)
    for result in (small, large):
        well_formed(result)
        assert result.attempts == 1 and result.host_wall_s > 0
    assert large.latency_ms.median > 3 * small.latency_ms.median
    assert large.memory_kb.after_session.peak_kb > small.memory_kb.after_session.peak_kb


def test_check_and_remove(nas_env, loop_agent):
    check = nas_env.run("agent", "check", loop_agent, "--repeat", "5")
    assert check.exit_code == 0, check.output
    assert "5 measurements" in check.output and "spread" in check.output
    removed = nas_env.run("agent", "remove", loop_agent)
    assert removed.exit_code == 0 and loop_agent not in registry.list_agents()
    with pytest.raises(AgentError, match="unknown agent"):
        registry.open_agent(loop_agent)


def test_a_script_registers_a_device_without_the_command_line(nas_env, sshd):
    info = sshd.info()
    target = SSHTarget(host=info["host"], port=info["port"], user=info["user"], key=info["key"],
                       python=info["python"])
    trust = TrustPolicy(fingerprint=info["host_key_fingerprint"])
    steps: list[str] = []
    record = registry.register("scripted", target, trust, down_timeout=20.0, progress=steps.append)
    assert steps == [f"connecting to {record.address} ...", f"runner deployed to {record.workdir_abs}; calibrating ..."]
    assert record == registry.get_agent("scripted") and record.down_timeout == 20.0
    assert record.fingerprint["machine"] == "x86_64" and record.calibration.median_ms > 0
    stored = json.loads(registry.registry_path().read_text())["agents"]["scripted"]
    assert sorted(stored) == ["added_at", "address", "cache_mb", "calibration", "command_timeout", "dft", "dft_error",
                              "down_timeout", "fingerprint", "fingerprint_key", "kind", "last_seen", "state", "target",
                              "workdir_abs"]
    with pytest.raises(AgentError, match="already registered"):
        registry.register("scripted", target, trust)


def test_unknown_host_key_is_refused_showing_its_fingerprint(nas_env, sshd, add_args):
    result = nas_env.run(*add_args(sshd, **{"--trust-host-key": None}))
    assert isinstance(result.exception, HostKeyUnknown)
    assert sshd.host_key_fingerprint() in str(result.exception)
    assert "--trust-host-key" in str(result.exception)
    assert registry.list_agents() == {} and not nas_env.known_hosts.exists()


def test_trust_host_key_wrong_fingerprint_fails_right_one_works(nas_env, sshd, add_args):
    wrong = "SHA256:" + "A" * 43
    result = nas_env.run(*add_args(sshd, **{"--trust-host-key": wrong}))
    assert isinstance(result.exception, HostKeyUnknown)
    assert sshd.host_key_fingerprint() in str(result.exception) and wrong in str(result.exception)
    assert registry.list_agents() == {}

    result = nas_env.run(*add_args(sshd))
    assert result.exit_code == 0, repr(result.exception)
    assert nas_env.known_hosts.read_text().count("ssh-ed25519") == 1


def test_trust_new_host_key_is_said_loudly(nas_env, sshd, add_args):
    result = nas_env.run(*add_args(sshd, **{"--trust-host-key": None, "--trust-new-host-key": ""}))
    assert result.exit_code == 0, repr(result.exception)
    assert "WARNING" in result.output and sshd.host_key_fingerprint() in result.output


@pytest.mark.parametrize("where", ["tool", "user-hashed"])
def test_changed_host_key_is_always_refused(nas_env, sshd, add_args, where):
    key_file = nas_env.home / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)], check=True)
    impostor = paramiko.Ed25519Key.from_private_key_file(str(key_file))
    name = f"[127.0.0.1]:{sshd.port}"
    line = f"{name} {impostor.get_name()} {impostor.get_base64()}\n"
    if where == "tool":
        nas_env.nas_home.mkdir(parents=True, exist_ok=True)
        nas_env.known_hosts.write_text(line)
    else:
        user_file = nas_env.home / ".ssh" / "known_hosts"
        user_file.write_text(line)
        subprocess.run(["ssh-keygen", "-H", "-f", str(user_file)], check=True, capture_output=True)
    for trust in ({}, {"--trust-host-key": None, "--trust-new-host-key": ""}):
        result = nas_env.run(*add_args(sshd, **trust))
        assert isinstance(result.exception, HostKeyChanged), repr(result.exception)
        message = str(result.exception)
        assert "HOST KEY CHANGED" in message and key_fingerprint(impostor) in message
        assert sshd.host_key_fingerprint() in message and "ssh-keygen -R" in message
    assert registry.list_agents() == {}


def test_known_key_in_users_hashed_known_hosts_is_accepted(nas_env, sshd, add_args):
    user_file = nas_env.home / ".ssh" / "known_hosts"
    public = (Path(str(sshd.host_key) + ".pub").read_text().split())[:2]
    user_file.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(public)}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(user_file)], check=True, capture_output=True)
    result = nas_env.run(*add_args(sshd, **{"--trust-host-key": None}))
    assert result.exit_code == 0, repr(result.exception)
    assert not nas_env.known_hosts.exists()  # nothing new to remember


def test_host_alias_from_ssh_config_and_python_in_the_device_home(nas_env, sshd, add_args):
    info = sshd.info()
    (nas_env.home / ".ssh" / "config").write_text(
        f"Host testboard\n  HostName 127.0.0.1\n  Port {info['port']}\n  User {info['user']}\n"
        f"  IdentityFile {info['key']}\n"
    )
    link = Path(info["home"], f"py-{uuid.uuid4().hex[:8]}")
    link.write_text(f'#!/bin/sh\nexec {info["python"]} "$@"\n')
    link.chmod(0o755)
    try:
        result = nas_env.run(
            *add_args(
                sshd,
                "viaconfig",
                **{
                    "--host": "testboard",
                    "--port": None,
                    "--user": None,
                    "--key": None,
                    "--python": f"~/{link.name}",
                },
            )
        )
    finally:
        link.unlink()
    assert result.exit_code == 0, repr(result.exception)
    assert registry.get_agent("viaconfig").address == f"{info['user']}@127.0.0.1:{info['port']}"


def test_wrong_ssh_key_gives_a_clear_error(nas_env, sshd, add_args):
    stranger = nas_env.home / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    started = time.monotonic()
    result = nas_env.run(*add_args(sshd, **{"--key": str(stranger)}))
    assert isinstance(result.exception, AgentAuthError), repr(result.exception)
    assert "refused our SSH key" in str(result.exception) and str(stranger) in str(result.exception)
    assert "authorized_keys" in str(result.exception)
    assert time.monotonic() - started < 10  # not retried as if the device were down
    assert registry.list_agents() == {}


def test_device_without_onnxruntime_fails_at_add_with_the_install_hint(nas_env, sshd, add_args):
    bare = sshd.info()["bare_python"]
    result = nas_env.run(*add_args(sshd, **{"--python": bare}))
    assert isinstance(result.exception, DeviceError), repr(result.exception)
    message = str(result.exception)
    assert "onnxruntime is not installed" in message and f"{bare} -m pip install onnxruntime" in message
    assert registry.list_agents() == {}


def test_device_without_python_fails_at_add_with_the_install_hint(nas_env, sshd, add_args):
    result = nas_env.run(*add_args(sshd, **{"--python": "/opt/no-such/python3"}))
    assert isinstance(result.exception, DeviceError), repr(result.exception)
    assert "no Python at '/opt/no-such/python3'" in str(result.exception)
    assert "install Python" in str(result.exception)


def test_cli_errors_are_one_line_with_exit_code_2(nas_env, sshd, add_args):
    done = subprocess.run(
        [str(Path(sys.executable).with_name("nas")), *add_args(sshd, **{"--trust-host-key": None})],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unknown host key" in errors[0] and "Traceback" not in done.stderr


# --- measuring ----------------------------------------------------------------------------------


def test_concurrent_requests_to_one_device_never_overlap(nas_env, loop_agent, sshd, add_args, onnx_models):
    # A second registration of the same device: two connections, as from two hosts or workers.
    assert nas_env.run(*add_args(sshd, "loop2")).exit_code == 0
    results: list[dict] = []
    errors: list[BaseException] = []
    first = registry.open_agent(loop_agent)

    def hammer(agent, count: int) -> None:  # noqa: ANN001
        try:
            for _ in range(count):
                results.append(agent.measure(onnx_models["small"], QUICK))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [
        threading.Thread(target=hammer, args=(first, 2)),
        threading.Thread(target=hammer, args=(first, 2)),
    ]
    with AgentPool() as pool:  # the pool: one job per agent at a time, agents concurrently
        futures = pool.measure_all(
            [
                ("loop", onnx_models["small"], QUICK),
                ("loop2", onnx_models["small"], QUICK),
                ("loop2", onnx_models["large"], QUICK),
            ]
        )
        for thread in threads:
            thread.start()
        results.extend(future.result(timeout=60) for future in futures)
        for thread in threads:
            thread.join(timeout=60)
    first.close()
    assert not errors, errors
    assert len(results) == 7
    never_overlap(results)


def test_pool_never_measures_two_agents_on_one_machine_at_the_same_time(nas_env, loop_agent, onnx_models):
    # The loopback sshd runs on this host: same kernel, same boot_id, same CPU as the local agent.
    slow = MeasureSettings(warmup=1, min_runs=5, min_seconds=1.0, max_seconds=5.0, max_spread=10.0)
    with AgentPool() as pool:
        futures = pool.measure_all(
            [("local", onnx_models["small"], slow), (loop_agent, onnx_models["small"], slow)] * 2
        )
        results = [future.result(timeout=60) for future in futures]
    assert len({r.fingerprint["boot_id"] for r in results}) == 1
    never_overlap(results)


HOSTILE = "x; touch /tmp/nas-pwned-$$ `touch /tmp/nas-pwned-bq` $(rm -rf ~) 'q\" *"


def test_shell_metacharacters_do_no_harm(nas_env, sshd, add_args, onnx_models, tmp_path):
    home = Path(sshd.home)
    sentinel = home / "sentinel"
    sentinel.write_text("still here")
    pwned_before = set(Path("/tmp").glob("nas-pwned*"))
    home_before = set(home.iterdir())

    # Agent names are plain words: a hostile one is refused before anything runs.
    result = nas_env.run(*add_args(sshd, "evil; rm -rf ~"))
    assert isinstance(result.exception, AgentError) and "invalid agent name" in str(result.exception)

    # A hostile work dir and model file name are quoted (or never reach a shell), and work.
    result = nas_env.run(*add_args(sshd, "metachar", **{"--workdir": f"w {HOSTILE}"}))
    assert result.exit_code == 0, repr(result.exception)
    model = tmp_path / f"model {HOSTILE}.onnx".replace("/", "_")
    model.write_bytes(onnx_models["small"].read_bytes())
    with registry.open_agent("metachar") as agent:
        well_formed(agent.measure(model, QUICK))
        assert agent.workdir == f"{home}/w {HOSTILE}"
    assert Path(home, f"w {HOSTILE}", "models").is_dir()

    # A hostile --python is one (missing) program, not a command line.
    result = nas_env.run(
        *add_args(sshd, "metachar2", **{"--python": f"{sshd.python}; touch /tmp/nas-pwned-py"})
    )
    assert isinstance(result.exception, DeviceError) and "no Python at" in str(result.exception)

    assert sentinel.read_text() == "still here"
    assert set(Path("/tmp").glob("nas-pwned*")) == pwned_before
    assert set(home.iterdir()) - home_before <= {home / f"w {HOSTILE}".split("/")[0]}
    shutil.rmtree(home / f"w {HOSTILE}".split("/")[0])


def test_nothing_is_written_outside_the_work_dir(nas_env, sshd, add_args, onnx_models):
    home = Path(sshd.home)
    workdir = home / f"tidy-{uuid.uuid4().hex[:8]}"
    before = set(home.rglob("*"))
    result = nas_env.run(*add_args(sshd, "tidy", **{"--workdir": workdir.name}))
    assert result.exit_code == 0, repr(result.exception)
    with registry.open_agent("tidy") as agent:
        agent.measure(onnx_models["small"], QUICK)
    new = set(home.rglob("*")) - before
    assert new and all(path.is_relative_to(workdir) for path in new), new
    names = sorted(p.name for p in workdir.iterdir())
    assert names[:2] == ["device.lock", "models"] and names[2].startswith("runner-") and len(names) == 3
    assert all(p.suffix == ".onnx" and len(p.stem) == 64 for p in (workdir / "models").iterdir())
    shutil.rmtree(workdir)


def test_a_model_damaged_on_the_device_is_uploaded_again(nas_env, loop_agent, onnx_models):
    with registry.open_agent(loop_agent) as agent:
        agent.measure(onnx_models["small"], QUICK)
        remote = Path(agent.workdir, "models", file_sha256(onnx_models["small"]) + ".onnx")
    good = onnx_models["small"].read_bytes()
    for damage in (b"garbage", good[:-1] + bytes([good[-1] ^ 1])):  # wrong size; same size, wrong bytes
        remote.write_bytes(damage)
        with registry.open_agent(loop_agent, log=lambda message: None) as agent:
            well_formed(agent.measure(onnx_models["small"], QUICK))
        assert remote.read_bytes() == good


# --- a device that goes away --------------------------------------------------------------------


def test_sshd_killed_during_a_measurement_is_retried_after_restart(nas_env, loop_agent, sshd, onnx_models):
    settings = MeasureSettings(warmup=1, min_runs=5, min_seconds=2.0, max_seconds=10.0, max_spread=10.0)
    outcome: dict = {}
    with registry.open_agent(
        loop_agent, log=lambda message: outcome.setdefault("log", []).append(message)
    ) as agent:
        agent.measure(onnx_models["small"], QUICK)  # warm connection, model uploaded

        def measure() -> None:
            try:
                outcome["result"] = agent.measure(onnx_models["small"], settings)
            except BaseException as exc:  # noqa: BLE001
                outcome["error"] = exc

        worker = threading.Thread(target=measure)
        worker.start()
        time.sleep(1.0)  # the runner is in its timed runs now
        sshd.stop(kill_sessions=True)  # like a crash: the connection and the runner die
        time.sleep(1.5)
        sshd.start()
        worker.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    well_formed(result)
    assert result.attempts >= 2 and any("reconnecting" in line for line in outcome["log"])
    assert registry.get_agent(loop_agent).state == "ok"


def test_device_kept_down_raises_unreachable_within_the_timeout(nas_env, loop_agent, sshd, onnx_models):
    with registry.open_agent(loop_agent, down_timeout=3.0, log=lambda message: None) as agent:
        agent.measure(onnx_models["small"], QUICK)
        sshd.stop(kill_sessions=True)
        started = time.monotonic()
        with pytest.raises(AgentUnreachable) as raised:
            agent.measure(onnx_models["small"], QUICK)
        elapsed = time.monotonic() - started
    assert elapsed < 3.0 + 10.0
    message = str(raised.value)
    assert f"127.0.0.1:{sshd.port}" in message and "unreachable for 3 s" in message
    assert "Connection refused" in message
    record = registry.get_agent(loop_agent)
    assert record.state == "unreachable" and "refused" in record.state_detail
    listing = nas_env.run("agent", "list")
    assert "unreachable" in listing.output


# --- studies measuring over SSH -----------------------------------------------------------------

def study_space(min_seconds: float) -> str:
    return small_space("ssh-fast", 'kinds = ["dense", "lowrank"]\nlowrank_ranks = [2, 4]', hidden_layers="[1]",
                       epochs=1, min_seconds=min_seconds)


def study_cli(*args: str) -> subprocess.Popen:
    """The real ``nas`` CLI in a subprocess (environment and cwd from ``nas_env``).

    Ctrl-C is restored to Python's default in it: a test run started in the background of a
    non-interactive shell (``nohup ... &``) inherits SIGINT ignored, and a user's terminal never is.
    """
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("nas")), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"the study did not finish within {timeout} s: {output[-2000:]}")
    return output


def measuring(pid: int) -> bool:
    """Whether ``pid`` is a runner measuring a model (not a probe, not the shell around a runner): a
    runner started with ``--model``, or a serving runner's child named for a measurement."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    # the runner itself, not the shell around it (whose one -c argument holds the whole command line)
    runner = any(a.endswith(b"runner.py") or b"/runner-" in a for a in argv)
    return runner and (b"--model" in argv or name in ("nas-measure", "nas-compare"))


def wait_for_measurement(testbed, process: subprocess.Popen, timeout: float = 120) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not any(measuring(pid) for pid in testbed.runner_pids()):
        assert process.poll() is None, (
            "the study ended before measuring: " + (process.stdout.read() or "")[-2000:]
        )
        assert time.monotonic() < deadline, "no measurement started on the device"
        time.sleep(0.05)
    time.sleep(0.3)  # well inside the timed runs (min_seconds 1.5)


def trials_by_state(name: str) -> dict[str, list]:
    from nas.storage import load_study

    trials: dict[str, list] = {}
    for trial in load_study(name).get_trials(deepcopy=False):
        trials.setdefault(trial.state.name, []).append(trial)
    return trials


@pytest.mark.slow
def test_a_study_on_the_loopback_agent_completes_though_sshd_is_killed_mid_measurement(
    nas_env, loop_agent, sshd, tmp_path
):
    space = tmp_path / "space.toml"
    space.write_text(study_space(min_seconds=1.5))
    process = study_cli(
        "study",
        "start",
        "s2",
        "--space",
        str(space),
        "--agent",
        loop_agent,
        "--trials",
        "2",
        "--sampler",
        "random",
    )
    wait_for_measurement(sshd, process)
    sshd.stop(kill_sessions=True)
    time.sleep(1.5)
    sshd.start()
    output = finish(process)
    assert process.returncode == 0, output[-2000:]
    assert "reconnecting" in output
    trials = trials_by_state("s2")
    assert len(trials.get("COMPLETE", [])) == 2 and not trials.get("FAIL"), output[-2000:]
    measured = [TrialData.load(t.user_attrs).agents[loop_agent] for t in trials["COMPLETE"]]
    runs = [form.runner for m in measured for form in m.forms.values()]
    runs += [m.paired.runner for m in measured if m.paired]  # the interleaved run of the forms, if any
    assert runs and all(r.fingerprint["machine"] == "x86_64" for r in runs)
    assert sum(r.attempts for r in runs) > len(runs), output[-3000:]  # one was retried


@pytest.mark.slow
def test_device_kept_down_fails_the_trial_and_resume_redoes_it(nas_env, sshd, add_args, tmp_path):
    assert nas_env.run(*add_args(sshd, "flaky", **{"--down-timeout": "3"})).exit_code == 0
    space = tmp_path / "space.toml"
    space.write_text(study_space(min_seconds=1.5))
    process = study_cli(
        "study",
        "start",
        "s3",
        "--space",
        str(space),
        "--agent",
        "flaky",
        "--trials",
        "1",
        "--sampler",
        "random",
    )
    wait_for_measurement(sshd, process)
    sshd.stop(kill_sessions=True)
    output = finish(process, timeout=120)
    failed = trials_by_state("s3").get("FAIL", [])
    assert failed, output[-2000:]
    reason = TrialData.load(failed[0].user_attrs).fail_reason
    assert "flaky" in reason and "unreachable for 3 s" in reason and "Connection refused" in reason
    assert "unreachable" in output

    sshd.start()
    resumed = nas_env.run("study", "resume", "s3")  # in-process: torch is already imported here
    assert resumed.exit_code == 0, resumed.output + repr(resumed.exception)
    trials = trials_by_state("s3")
    assert len(trials.get("COMPLETE", [])) == 1, resumed.output
    redone = trials["COMPLETE"][0]
    assert TrialData.load(redone.user_attrs).retry_of == failed[0].number
    assert redone.params == failed[0].params, "resume must redo the candidate whose device was down"


def test_measurements_share_one_serving_runner_each_in_a_fresh_child(nas_env, loop_agent, sshd, onnx_models):
    """One server per connection (Python and the imports paid once), a fresh forked child per measurement."""
    with registry.open_agent(loop_agent) as agent:
        results = [agent.measure(onnx_models[name], QUICK) for name in ("small", "large", "small")]
        server = results[0].server_pid
        assert [r.server_pid for r in results] == [server] * 3
        assert len({r.pid for r in results}) == 3 and server not in {r.pid for r in results}
        argv = Path(f"/proc/{server}/cmdline").read_bytes().split(b"\0")
        assert b"--serve" in argv and b"--run-id" in argv
        # the small model's peak is its own in each child, not what the large one left behind
        small = [r.memory_kb.model_peak_kb for r in results[::2]]
        assert results[1].memory_kb.model_peak_kb > max(small)
    deadline = time.monotonic() + 10  # closing the agent closes the channel: the server exits
    while Path(f"/proc/{server}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{server}").exists() or "Z" in Path(f"/proc/{server}/stat").read_text().split(")")[1][:3]
