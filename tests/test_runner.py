"""The on-device runner, run by the local agent in a fresh process."""

import os
import shutil
from pathlib import Path

import pytest
import torch

from device_agents import DeviceError, LocalAgent, MeasureSettings
from nas.model import export_onnx

FAST = MeasureSettings(min_runs=5, min_seconds=0.02, warmup=1)


@pytest.fixture
def agent(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_HOME", str(tmp_path / "home"))
    return LocalAgent()


def mlp(tmp_path: Path, width: int) -> Path:
    model = torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, 10))
    return export_onnx(model, 64, tmp_path / f"mlp{width}.onnx")


def test_measurement_is_well_formed(agent, tmp_path):
    result = agent.measure(mlp(tmp_path, 32), FAST)
    latency = result.latency_ms
    assert latency.count >= 5
    assert 0 < latency.min <= latency.median <= latency.p90
    assert latency.iqr >= 0
    memory = result.memory_kb
    assert memory.after_runs.peak_kb >= memory.after_session.rss_kb > 0
    assert result.session_ms > 0
    assert result.started_at <= result.ended_at
    assert result.fingerprint["machine"] and result.fingerprint["threads"] == 1


def test_bigger_model_is_slower(agent, tmp_path):
    """Compared the paired way: both in one process, interleaved; the ratio's whole interval is below 1."""
    paired = agent.compare([mlp(tmp_path, 16), mlp(tmp_path, 2048)], FAST).paired
    small, big = paired.models
    (ratio,) = paired.ratios
    assert (ratio.a, ratio.b) == (0, 1) and ratio.ci_high < 1.0
    assert small.median < big.median and small.number > big.number


def test_unloadable_model_is_a_plain_error(agent, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(DeviceError, match="could not load the model") as error:
        agent.measure(bad, FAST)
    assert error.value.kind == "model_load_failed"


def test_python_without_onnxruntime_gets_the_install_hint(tmp_path, monkeypatch):
    system_python = shutil.which("python3", path="/usr/bin")
    if system_python is None:
        pytest.skip("no /usr/bin/python3 to stand for a device without onnxruntime")
    monkeypatch.setenv("NAS_HOME", str(tmp_path / "home"))
    agent = LocalAgent(python=system_python)
    try:
        import subprocess

        subprocess.run([system_python, "-c", "import onnxruntime"], check=True, capture_output=True)
        pytest.skip(f"{system_python} has onnxruntime")
    except subprocess.CalledProcessError:
        pass
    with pytest.raises(DeviceError, match="pip install"):
        agent.measure(mlp(tmp_path, 16), FAST)


def test_probe_reports_the_device(agent):
    fingerprint = agent.probe().fingerprint
    assert fingerprint["cores"] >= 1 and fingerprint["onnxruntime"]


# --- the serving runner: one start, a fresh forked process per measurement --------------------------


def _children(pid: int) -> list[int]:
    from device_agents.testbeds._process import descendants

    return descendants(pid)


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def test_each_measurement_is_a_fresh_child_of_one_server(agent, tmp_path):
    model = mlp(tmp_path, 32)
    first, second = agent.measure(model, FAST), agent.measure(model, FAST)
    server = agent._server.process
    assert first.pid != second.pid and server.pid not in (first.pid, second.pid)
    assert agent._server.process is server  # started once
    # each child's peak is its own: the second measurement's model peak is not the first one's leftovers
    assert abs(first.memory_kb.model_peak_kb - second.memory_kb.model_peak_kb) < 1024
    from tests.test_faults import gone

    assert all(gone(pid) for pid in _children(server.pid))  # no child outlives its measurement (reaped)
    agent.close()
    assert server.poll() is not None


def test_a_timeout_kills_the_server_and_its_child_and_the_next_call_starts_anew(tmp_path, monkeypatch):
    from device_agents import RunnerTimeout

    monkeypatch.setenv("NAS_HOME", str(tmp_path / "home"))
    agent = LocalAgent()
    model = mlp(tmp_path, 32)
    agent.probe()
    server = agent._server.process
    slow = MeasureSettings(min_runs=5, min_seconds=30.0, max_seconds=30.0, warmup=1)
    with pytest.raises(RunnerTimeout, match="it was killed"):
        agent.run_models([model], slow.runner_args(), timeout=1.0)
    assert server.poll() is not None and _children(server.pid) == []
    assert agent.measure(model, FAST).ok and agent._server.process is not server
    agent.close()


def test_a_child_killed_mid_measurement_is_reported_and_the_server_goes_on(agent, tmp_path):
    import signal
    import threading
    import time


    model = mlp(tmp_path, 32)
    agent.probe()
    server = agent._server.process
    outcome: dict = {}

    def run() -> None:
        try:
            agent.measure(model, MeasureSettings(min_runs=5, min_seconds=20.0, max_seconds=20.0, warmup=1))
        except DeviceError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    measuring = []
    while not measuring and time.monotonic() < deadline:  # the probe's child may still be exiting
        measuring = [pid for pid in _children(server.pid) if _comm(pid) == "nas-measure"]
        time.sleep(0.02)
    assert measuring, "no child named nas-measure"
    time.sleep(0.3)
    os.kill(measuring[0], signal.SIGKILL)
    thread.join(timeout=30)
    assert "killed by signal 9" in str(outcome.get("error")) and outcome["error"].kind == "killed", outcome
    assert agent.measure(model, FAST).ok and agent._server.process is server


def test_a_killed_host_leaves_no_server_or_measurement_behind(tmp_path):
    """The server notices its stdin close when the host dies, kills its child and exits."""
    import signal
    import subprocess
    import sys
    import time

    from tests.test_faults import gone

    model = mlp(tmp_path, 32)
    script = (
        "import sys\nfrom pathlib import Path\nfrom device_agents.base import MeasureSettings\n"
        "from device_agents.local import LocalAgent\n"
        "agent = LocalAgent(workdir=Path(sys.argv[2]))\nagent.probe()\n"
        "print(agent._server.process.pid, flush=True)\n"
        "agent.measure(Path(sys.argv[1]), MeasureSettings(min_seconds=30.0, max_seconds=30.0))\n"
    )
    host = subprocess.Popen([sys.executable, "-c", script, str(model), str(tmp_path / "agent")],
                            stdout=subprocess.PIPE, text=True)
    server = int(host.stdout.readline())
    deadline = time.monotonic() + 30
    while not (children := _children(server)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert children, "no measurement started"
    host.send_signal(signal.SIGKILL)
    host.wait()
    assert gone(children[0], wait=10) and gone(server, wait=10)


def test_a_forked_child_reports_the_same_model_peak_as_a_fresh_process(agent, tmp_path):
    """Library code the model's kernels page in is not the model's memory: a forked child pages in
    even code its server had, so counting it would make served figures larger than fresh ones."""
    import json
    import subprocess
    import sys

    from device_agents import RUNNER_PATH

    model = mlp(tmp_path, 1024)
    served = agent.measure(model, FAST).memory_kb
    fresh_run = subprocess.run([sys.executable, str(RUNNER_PATH), "--model", str(model), *FAST.runner_args()],
                               capture_output=True, text=True, timeout=120)
    fresh = json.loads(fresh_run.stdout.splitlines()[-1])["memory_kb"]
    assert abs(served.model_peak_kb - fresh["model_peak_kb"]) < 0.1 * fresh["model_peak_kb"] + 256, (served, fresh)
