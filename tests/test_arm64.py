"""The emulated aarch64 board (qemu-user, its own sshd in a network namespace) as an SSH agent.

Runs in CI as root after ``.ci/run`` brought the board up; elsewhere it skips, saying how to enable
it. Emulation is 20-360x slower than a real board: assert well-formed, ordered results only.
"""

from __future__ import annotations

import pytest

from device_agents import MeasureSettings, registry
from nas.study import TrialData
from tests.spaces import small_space

pytestmark = [pytest.mark.arm64, pytest.mark.slow]

QUICK = MeasureSettings(warmup=1, min_runs=5, min_seconds=0.1, max_seconds=20.0, max_spread=10.0)


@pytest.fixture
def board_agent(nas_env, arm64_board, add_args) -> str:  # noqa: ANN001
    result = nas_env.run(*add_args(arm64_board, "board", **{"--down-timeout": "30"}))
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "aarch64" in result.output
    return "board"


def test_add_reports_aarch64_and_measures_in_order(nas_env, board_agent, onnx_models):
    record = registry.get_agent(board_agent)
    fingerprint = record.fingerprint
    assert fingerprint["machine"] == "aarch64"
    assert fingerprint["qemu_cpu"] == "cortex-a72" and "Cortex-A72" in fingerprint["cpu_model"]
    assert fingerprint["onnxruntime"] and record.dft is True

    with registry.open_agent(board_agent) as agent:
        small = agent.measure(onnx_models["small"], QUICK)
        large = agent.measure(onnx_models["large"], QUICK)
    for result in (small, large):
        assert result.ok and result.fingerprint["machine"] == "aarch64"
        latency = result.latency_ms
        assert (
            0 < latency.min <= latency.median <= latency.p90 and latency.count >= QUICK.min_runs
        )
        assert result.memory_kb.after_runs.peak_kb > 0 and result.started_at < result.ended_at
    assert large.latency_ms.median > small.latency_ms.median


ARM64_SPACE = small_space("arm64-fast", """
kinds = ["toeplitz"]
displacement_ranks = [1, 2]
forms = ["fft", "dense"]
""", widths="[32]", hidden_layers="[1]", epochs=1, min_seconds=0.05)


def test_a_small_study_on_the_arm64_board_completes(nas_env, board_agent, tmp_path):
    from nas.storage import load_study

    space = tmp_path / "space.toml"
    space.write_text(ARM64_SPACE)
    result = nas_env.run(
        "study",
        "start",
        "arm",
        "--space",
        str(space),
        "--agent",
        board_agent,
        "--trials",
        "2",
        "--sampler",
        "random",
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    trials = load_study("arm").get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 2, [TrialData.load(t.user_attrs).fail_reason for t in trials]
    for trial in complete:
        forms = TrialData.load(trial.user_attrs).agents[board_agent].forms
        assert forms and all(f.runner.fingerprint["machine"] == "aarch64" for f in forms.values())
        assert all(f.median_ms > 0 for f in forms.values())
        assert forms["fft"].available  # the ONNX DFT form ran on the board
        weights = TrialData.load(trial.user_attrs).weight_bytes
        for form, figures in forms.items():  # the device's own figure, before the floor
            assert figures.runner.memory_kb.model_peak_kb * 1024 >= weights[form], (form, figures.runner)
            assert not figures.implausible and figures.memory_method == "held"


# --- the model's own memory on the board ------------------------------------------------------------

def _forms(folder, spec):  # noqa: ANN001, ANN202
    """Each deployed form of ``spec``'s untrained model, exported as the study does: {form: path}."""
    from nas.model import build_model, deployed, export_onnx, spec_seed

    model = build_model(spec, seed=spec_seed(spec))
    forms = ("fft", "fftmm", "dense") if spec.has_toeplitz else ("-",)
    return {form: export_onnx(deployed(model, spec.with_form(form) if spec.has_toeplitz else spec),
                              spec.in_features, folder / f"{spec.code.replace(' ', '_')}-{form}.onnx")
            for form in forms}


def test_the_board_reads_every_model_at_least_at_its_weights(board_agent, tmp_path):
    """The issue's candidate (kws-shaped ``L64 T2 L8 D``, whose fft and dense forms read 0.0 MiB under the
    resident-peak method) and a 2048-wide dense model: under qemu-user the figure is the bytes the
    session holds, never below the initializers, so nothing is floored or flagged."""
    from nas.spec import ArchSpec, LayerSpec
    from nas.study import form_measurement, model_facts

    kws = ArchSpec(1280, (LayerSpec("lowrank", 256, 64), LayerSpec("toeplitz", 256, 2), LayerSpec("lowrank", 256, 8),
                          LayerSpec("dense", 12)))
    dense = ArchSpec(2048, (LayerSpec("dense", 2048), LayerSpec("dense", 10)))
    files = {**{f"kws {form}": path for form, path in _forms(tmp_path, kws).items()},
             "dense2048": _forms(tmp_path, dense)["-"]}
    with registry.open_agent(board_agent) as agent:
        for name, path in files.items():
            result = agent.measure(path, QUICK)
            memory, weights = result.memory_kb, model_facts(path)[0]
            assert result.fingerprint["emulator"] == "qemu-user"
            assert memory.method == "held" and memory.model_peak_kb == memory.held_kb, memory
            assert memory.model_peak_kb * 1024 >= weights, (name, memory, weights)
            assert not form_measurement(result, weight_bytes=weights).implausible


def test_dense_against_toeplitz_memory_points_the_same_way_as_on_the_local_agent(board_agent, tmp_path):
    """One 2048-wide Toeplitz-like layer in its dense form (16 MiB of weights) against its
    fft form (200 KiB): the board's held bytes and this host's resident peak rank them alike."""
    from nas.spec import ArchSpec, LayerSpec

    files = _forms(tmp_path, ArchSpec(2048, (LayerSpec("toeplitz", 2048, 2), LayerSpec("dense", 10))))
    ratios = {}
    for name in ("local", board_agent):
        with registry.open_agent(name) as agent:
            memory = {form: agent.measure(files[form], QUICK).memory_kb.model_peak_kb
                      for form in ("dense", "fft")}
        ratios[name] = memory["dense"] / memory["fft"]
    assert ratios["local"] > 4 and ratios[board_agent] > 4, ratios


# --- faults on the board -------------------------------------------------------------------------


def test_up_prints_a_ready_to_paste_agent_add_line(nas_env, arm64_board):
    import shlex
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "device_agents.testbeds.arm64", "up"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "nas agent add" in line]
    assert len(lines) == 1 and "--trust-host-key SHA256:" in lines[0]
    command = shlex.split(lines[0].split(": ", 1)[1])
    assert command[:3] == ["nas", "agent", "add"]
    result = nas_env.run(*command[1:])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert registry.get_agent(command[3]).fingerprint["machine"] == "aarch64"


def test_a_stopped_runner_on_the_board_is_killed_and_the_board_measures_again(board_agent, arm64_board,
                                                                               onnx_models):
    import os
    import signal
    import threading

    from device_agents import RunnerTimeout
    from tests.test_faults import gone, wait_for_runner

    hung = MeasureSettings(warmup=1, min_runs=5, min_seconds=4.0, max_seconds=5.0, max_spread=10.0)
    outcome: dict = {}
    with registry.open_agent(board_agent, command_timeout=10.0, log=lambda message: None) as agent:
        agent.measure(onnx_models["small"], QUICK)

        def measure() -> None:
            try:
                outcome["result"] = agent.measure(onnx_models["small"], hung)
            except BaseException as exc:  # noqa: BLE001
                outcome["error"] = exc

        worker = threading.Thread(target=measure)
        worker.start()
        pid = wait_for_runner(arm64_board, lock=arm64_board.rootfs / agent.workdir.lstrip("/") / "device.lock")
        os.kill(pid, signal.SIGSTOP)
        worker.join(timeout=180)
        assert isinstance(outcome.get("error"), RunnerTimeout), outcome
        assert gone(pid, wait=30), "the stopped runner is still on the board"
        result = agent.measure(onnx_models["small"], QUICK)
    assert result.ok and result.fingerprint["machine"] == "aarch64"


def test_a_board_outage_prints_one_line_per_retry_and_no_traceback(nas_env, board_agent, arm64_board,
                                                                    onnx_models):
    import time

    from tests.test_faults import wait_for_runner
    from tests.test_ssh_agent import finish, study_cli

    process = study_cli("agent", "check", board_agent, "--model", str(onnx_models["small"]), "--repeat", "3")
    wait_for_runner(arm64_board)
    arm64_board.stop()
    try:
        time.sleep(6)
    finally:
        arm64_board.start()
    output = finish(process, timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "paramiko" not in output.lower()
    retries = [line for line in output.splitlines() if "reconnecting in" in line]
    assert retries and all(line.startswith(f"agent {board_agent}: ") for line in retries)
    assert "3 measurements" in output


def _in_work_dir(path, folder) -> bool:  # noqa: ANN001
    """Whether ``path`` is (inside) an agent's work dir under ``folder``: one holding ``models/``."""
    while path != folder:
        if (path / "models").is_dir():
            return True
        path = path.parent
    return False


def _snapshot(folders: list) -> dict:
    """(mtime, size) of every file and the folders under ``folders``, outside agents' work dirs."""
    found = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if _in_work_dir(path, folder):
                continue
            try:
                stat = path.lstat()
            except OSError:
                continue
            found[str(path)] = None if path.is_dir() else (stat.st_mtime_ns, stat.st_size)
    return found


def test_a_study_on_the_board_writes_nothing_outside_its_work_dir(nas_env, board_agent, arm64_board, tmp_path):
    rootfs = arm64_board.rootfs
    folders = [rootfs / "home" / "nasboard", rootfs / "tmp"]
    before = _snapshot(folders)
    space = tmp_path / "space.toml"
    space.write_text(ARM64_SPACE)
    result = nas_env.run("study", "start", "tidy", "--space", str(space), "--agent", board_agent,
                         "--trials", "1", "--sampler", "random")
    assert result.exit_code == 0, result.output + repr(result.exception)
    after = _snapshot(folders)
    changed = {path for path in set(before) | set(after) if before.get(path, "new") != after.get(path, "gone")}
    assert not changed, sorted(changed)  # onnxruntime's telemetry wrote ~/.cache/Microsoft and /tmp/.ses
