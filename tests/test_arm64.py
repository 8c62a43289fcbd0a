"""The emulated aarch64 board (qemu-user, its own sshd in a network namespace) as an SSH agent.

Runs in CI as root after ``.ci/run`` brought the board up; elsewhere it skips, saying how to enable
it. Emulation is 20-360x slower than a real board: assert well-formed, ordered results only.
"""

from __future__ import annotations

import pytest

from device_agents import registry
from device_agents.base import MeasureSettings
from nas.records import TrialData
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
    fingerprint = record["fingerprint"]
    assert fingerprint["machine"] == "aarch64"
    assert fingerprint["qemu_cpu"] == "cortex-a72" and "Cortex-A72" in fingerprint["cpu_model"]
    assert fingerprint["onnxruntime"] and record["dft"] is True

    with registry.open_agent(board_agent) as agent:
        small = agent.measure(onnx_models["small"], QUICK)
        large = agent.measure(onnx_models["large"], QUICK)
    for result in (small, large):
        assert result["ok"] and result["fingerprint"]["machine"] == "aarch64"
        latency = result["latency_ms"]
        assert (
            0 < latency["min"] <= latency["median"] <= latency["p90"] and latency["count"] >= QUICK.min_runs
        )
        assert result["memory_kb"]["after_runs"]["peak_kb"] > 0 and result["started_at"] < result["ended_at"]
    assert large["latency_ms"]["median"] > small["latency_ms"]["median"]


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
        assert forms and all(f.runner["fingerprint"]["machine"] == "aarch64" for f in forms.values())
        assert all(f.median_ms > 0 for f in forms.values())
        assert forms["fft"].available  # the ONNX DFT form ran on the board
