"""The device side: measure ONNX models on this host or on boards and phones reached over SSH.

The lower layer of the project: it imports nothing from ``nas``. What the search side uses is here:
the abstract :class:`Agent` and ``open_agent`` (the local agent, or a registered SSH agent), the
registry (``register``, ``get_agent``...), the runner's protocol (``MeasureSettings``, the typed
``RunnerResult``), the errors a measurement can end with, hashing and fingerprints, and the tool's
home folder. ``device_agents/runner.py`` is the one file copied to devices. Imported on first use.
"""

from device_agents.lazy import lazy_face

_EXPORTS = {
    "nas_home": "_home",
    "DEFAULT_CACHE_MB": "base", "DEFAULT_COMMAND_TIMEOUT": "base", "DEFAULT_LOCK_TIMEOUT": "base",
    "RUNNER_PATH": "base", "STABLE_FINGERPRINT_FIELDS": "base", "Agent": "base", "RunnerDeadline": "base",
    "file_sha256": "base", "fingerprint_key": "base",
    "AgentError": "errors", "AgentUnreachable": "errors", "DeviceError": "errors", "RunnerOutputError": "errors",
    "RunnerTimeout": "errors",
    "MEMORY_METHOD": "protocol", "RUNNER_SCHEMA": "protocol", "MeasureSettings": "protocol",
    "RunnerResult": "protocol", "parse_runner_output": "protocol",
    "CALIBRATION_SETTINGS": "registry", "LOCAL": "registry", "NAME_PATTERN": "registry", "AgentRecord": "registry",
    "check_name": "registry", "get_agent": "registry", "list_agents": "registry", "locked_json": "registry",
    "open_agent": "registry", "register": "registry", "remove_agent": "registry", "save_agent": "registry",
    "update_agent": "registry",
    "AgentPool": "pool",
    "LocalAgent": "local",
    "TrustPolicy": "hostkeys",
    "SSHAgent": "ssh", "SSHTarget": "ssh",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
