"""The agent registry's records, without a device: agents.json files of every age keep loading, a
record is written back in the shape it was read, and a damaged one is refused in one line."""

from __future__ import annotations

import copy
import json

import pytest

from device_agents import DEFAULT_CACHE_MB, DEFAULT_COMMAND_TIMEOUT, AgentError, registry

# A record as ``nas agent add`` writes it (taken from an arm64 board's registration).
CURRENT = {
    "added_at": 1796355505.4126809,
    "address": "nasboard@10.231.0.2:22",
    "cache_mb": 100.0,
    "calibration": {
        "at": 1796355505.4000363,
        "iqr_ms": 0.29611324998768396,
        "median_ms": 10.812947499971415,
        "model_peak_kb": 5254,
        "p90_ms": 11.38173299978007,
        "process_peak_kb": 154704,
        "session_ms": 52.76074700032041,
        "slowed": False,
        "unstable": False,
    },
    "command_timeout": 120.0,
    "dft": True,
    "dft_error": None,
    "down_timeout": 300.0,
    "fingerprint": {"boot_id": "d430cd74", "cores": 2, "machine": "aarch64", "onnxruntime": "1.32.0",
                    "providers": ["CPUExecutionProvider"], "temperature_c": {}},
    "fingerprint_key": "c59588490df0163b",
    "kind": "ssh",
    "last_seen": 1796355505.4126809,
    "state": "ok",
    "target": {"host": "10.231.0.2", "key": "/keys/client_ed25519", "port": None, "python": "/usr/bin/python3",
               "threads": None, "user": "nasboard", "workdir": ".nas-agent"},
    "workdir_abs": "/home/nasboard/.nas-agent",
}
# A record of the first versions: no timeouts, no cache size, no work dir, an older calibration.
FIRST = {
    "kind": "ssh",
    "target": {"host": "pi.local", "port": 2222, "user": "pi", "key": None, "python": "python3",
               "workdir": ".nas-agent"},
    "address": "pi@pi.local:2222",
    "added_at": 1700000000.0,
    "last_seen": 1700000000.0,
    "state": "ok",
    "fingerprint": {"machine": "aarch64"},
    "fingerprint_key": "0123456789abcdef",
    "dft": False,
    "dft_error": "DFT not implemented",
    "calibration": {"median_ms": 1.5, "p90_ms": 1.7, "iqr_ms": 0.1, "session_ms": 12.0, "peak_kb": 4096, "at": None},
}


def write_registry(nas_env, agents: dict) -> None:  # noqa: ANN001
    nas_env.nas_home.mkdir(parents=True, exist_ok=True)
    registry.registry_path().write_text(json.dumps({"schema": registry.SCHEMA, "agents": agents}))


def test_a_record_reads_as_typed_fields_and_is_written_back_in_its_shape(nas_env):
    write_registry(nas_env, {"board": copy.deepcopy(CURRENT)})
    record = registry.get_agent("board")
    assert record.fingerprint["machine"] == "aarch64" and record.dft is True and record.state_detail is None
    assert record.calibration.median_ms == CURRENT["calibration"]["median_ms"]
    registry.save_agent("copy", record)
    stored = json.loads(registry.registry_path().read_text())["agents"]
    assert stored["copy"] == CURRENT  # the same keys and values: no fields added, none retyped


def test_records_of_earlier_versions_load_with_the_defaults_they_ran_with(nas_env):
    write_registry(nas_env, {"pi": copy.deepcopy(FIRST)})
    record = registry.list_agents()["pi"]
    assert (record.command_timeout, record.down_timeout, record.cache_mb) == (
        DEFAULT_COMMAND_TIMEOUT, registry.DEFAULT_DOWN_TIMEOUT, DEFAULT_CACHE_MB)
    assert record.workdir_abs is None and record.calibration.model_peak_kb is None
    assert record.calibration.unstable is False
    with registry.open_agent("pi") as agent:  # nothing is contacted before a measurement
        assert (agent.command_timeout, agent.cache_mb, agent.target.port) == (DEFAULT_COMMAND_TIMEOUT,
                                                                              DEFAULT_CACHE_MB, 2222)
    listing = nas_env.run("agent", "list")
    assert listing.exit_code == 0 and "pi@pi.local:2222" in listing.output, listing.output
    removed = nas_env.run("agent", "remove", "pi")
    assert removed.exit_code == 0 and "work dir .nas-agent on pi@pi.local:2222" in removed.output


def test_updates_keep_the_fields_this_version_does_not_know(nas_env):
    write_registry(nas_env, {"pi": copy.deepcopy(FIRST)})
    registry.update_agent("pi", state="unreachable", state_detail="Connection refused")
    stored = json.loads(registry.registry_path().read_text())["agents"]["pi"]
    assert stored["calibration"]["peak_kb"] == 4096 and stored["state"] == "unreachable"
    assert registry.get_agent("pi").state_detail == "Connection refused"


def test_a_damaged_record_is_refused_in_one_line_naming_it(nas_env):
    write_registry(nas_env, {"pi": {**copy.deepcopy(FIRST), "command_timeout": "soon"}})
    with pytest.raises(AgentError, match=r"agent 'pi' in the agent registry .* \(command_timeout: .*fix or delete"):
        registry.get_agent("pi")


def test_a_name_is_checked_before_anything_is_contacted(nas_env):
    write_registry(nas_env, {"pi": copy.deepcopy(FIRST)})
    for name, message in (("pi", "already registered"), ("local", "built-in agent"), ("a b", "invalid agent name")):
        with pytest.raises(AgentError, match=message):
            registry.check_new_name(name)
    assert registry.check_new_name("pi2") == "pi2"
