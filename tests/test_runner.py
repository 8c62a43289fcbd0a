"""The on-device runner, run by the local agent in a fresh process."""

import shutil
from pathlib import Path

import pytest
import torch

from device_agents.base import DeviceError, MeasureSettings
from device_agents.local import LocalAgent
from nas.export import export_onnx

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
    latency = result["latency_ms"]
    assert latency["count"] >= 5
    assert 0 < latency["min"] <= latency["median"] <= latency["p90"]
    assert latency["iqr"] >= 0
    memory = result["memory_kb"]
    assert memory["after_runs"]["peak_kb"] >= memory["after_session"]["rss_kb"] > 0
    assert result["session_ms"] > 0
    assert result["started_at"] <= result["ended_at"]
    assert result["fingerprint"]["machine"] and result["fingerprint"]["threads"] == 1


def test_bigger_model_is_slower(agent, tmp_path):
    """Compared the paired way: both in one process, interleaved; the ratio's whole interval is below 1."""
    paired = agent.compare([mlp(tmp_path, 16), mlp(tmp_path, 2048)], FAST)["paired"]
    small, big = paired["models"]
    (ratio,) = paired["ratios"]
    assert (ratio["a"], ratio["b"]) == (0, 1) and ratio["ci_high"] < 1.0
    assert small["median"] < big["median"] and small["number"] > big["number"]


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
    fingerprint = agent.probe()["fingerprint"]
    assert fingerprint["cores"] >= 1 and fingerprint["onnxruntime"]
