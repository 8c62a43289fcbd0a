"""Named agents: the built-in ``local`` agent and the devices users register.

Registered agents live in ``nas_home()/agents.json`` (no passwords, no keys: only the key file's
path), one ``AgentRecord`` per name; host keys live in ``nas_home()/known_hosts`` (see ``hostkeys``).
``register`` is ``nas agent add`` without the command line, for scripts and tests as much as for
the CLI. ``open_agent(name)`` is the only thing the study needs from here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device_agents._home import nas_home
from device_agents.base import DEFAULT_CACHE_MB, DEFAULT_COMMAND_TIMEOUT, Agent, fingerprint_key
from device_agents.errors import AgentError
from device_agents.local import LocalAgent
from device_agents.protocol import MeasureSettings, RunnerResult

if TYPE_CHECKING:
    from device_agents.hostkeys import TrustPolicy
    from device_agents.ssh import SSHTarget

LOCAL = "local"
SCHEMA = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CONTACT_EVERY_S = 30.0  # how often a busy agent rewrites its "last seen" time
DEFAULT_DOWN_TIMEOUT = 300.0  # seconds a registered agent keeps reconnecting before a measurement fails
CALIBRATION_SETTINGS = MeasureSettings(warmup=3, min_runs=10, min_seconds=0.2, max_seconds=30.0)


class Calibration(BaseModel):
    """The calibration model as measured at registration: how fast the device was then."""

    model_config = ConfigDict(extra="ignore")  # early versions also wrote ``peak_kb``

    median_ms: float
    p90_ms: float
    iqr_ms: float
    session_ms: float | None = None
    unstable: bool = False
    slowed: bool = False
    model_peak_kb: int | float | None = None  # as the runner read it: whole KiB for a resident peak
    process_peak_kb: int | float | None = None
    at: float | None = None


class AgentRecord(BaseModel):
    """What the registry keeps per agent: how to reach and drive it, and what it was when last seen.

    Records written by earlier versions may lack fields; they get the defaults those versions
    behaved by. Only the fields a record was given are written (see ``save_agent``), so the file keeps
    the shape it always had.
    """

    model_config = ConfigDict(extra="ignore")

    kind: str = "ssh"
    target: dict[str, Any]  # an SSHTarget's to_dict(), as a dict: reading the registry needs no paramiko
    address: str | None = None  # user@host:port as resolved at registration
    workdir_abs: str | None = None
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT
    down_timeout: float = DEFAULT_DOWN_TIMEOUT
    cache_mb: float = DEFAULT_CACHE_MB
    added_at: float | None = None
    last_seen: float | None = None
    state: str | None = None  # the last contact: "ok", "unreachable", "error" or "auth"
    state_detail: str | None = None
    fingerprint: dict[str, Any] = Field(default_factory=dict)
    fingerprint_key: str | None = None
    dft: bool | None = None  # whether the device's onnxruntime runs ONNX DFT; None: never probed
    dft_error: str | None = None
    calibration: Calibration | None = None


def registry_path() -> Path:
    return nas_home() / "agents.json"


def check_name(name: str) -> str:
    """Agent names are plain words: letters, digits, '.', '_', '-' (they name folders and cache keys)."""
    if not NAME_PATTERN.match(name or ""):
        raise AgentError(
            f"invalid agent name {name!r}: use letters, digits, '.', '_' or '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return name


@contextlib.contextmanager
def locked_json(path: Path, write: bool, what: str) -> Iterator[dict[str, Any]]:
    """A JSON file's contents under a file lock (threads and processes alike); written back
    atomically when ``write``. ``what`` names the file in the error an unreadable one gives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        try:
            data = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError) as exc:
            raise AgentError(f"{what} {path} is unreadable ({exc}); fix or delete it") from exc
        yield data
        if write:
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
            tmp.replace(path)


@contextlib.contextmanager
def _locked(write: bool) -> Iterator[dict[str, Any]]:
    """The registry's contents under its file lock; written back atomically when ``write``."""
    with locked_json(registry_path(), write, "the agent registry") as data:
        data.setdefault("schema", SCHEMA)
        data.setdefault("agents", {})
        yield data


def list_agents() -> dict[str, AgentRecord]:
    with _locked(write=False) as data:
        return {name: _parsed(name, record) for name, record in data["agents"].items()}


def get_agent(name: str) -> AgentRecord:
    agents = list_agents()
    if name not in agents:
        known = ", ".join(sorted(agents)) or "none registered"
        raise AgentError(
            f"unknown agent {name!r} (known: {LOCAL}, {known}); "
            f"register it with 'nas agent add {name} --host HOST'"
        )
    return agents[name]


def check_new_name(name: str) -> str:
    """A name an agent can be registered under: well formed, not ``local``, not taken."""
    check_name(name)
    if name == LOCAL:
        raise AgentError(f"'{LOCAL}' is the built-in agent for this host; choose another name")
    if name in list_agents():
        raise AgentError(f"agent {name!r} is already registered; remove it first with 'nas agent remove {name}'")
    return name


def save_agent(name: str, record: AgentRecord) -> None:
    """Store ``record`` as ``name``: the fields it was given, so that a record keeps its shape."""
    check_name(name)
    if name == LOCAL:
        raise AgentError(f"'{LOCAL}' is the built-in agent for this host; choose another name")
    with _locked(write=True) as data:
        data["agents"][name] = record.model_dump(mode="json", exclude_unset=True)


def update_agent(name: str, **fields: Any) -> None:
    """Set some of ``name``'s fields in place, leaving the others as they are on disk."""
    with _locked(write=True) as data:
        if name in data["agents"]:
            data["agents"][name].update(fields)


def remove_agent(name: str) -> AgentRecord:
    with _locked(write=True) as data:
        if name not in data["agents"]:
            raise AgentError(f"unknown agent {name!r}; 'nas agent list' shows the registered ones")
        return _parsed(name, data["agents"].pop(name))


def _parsed(name: str, record: dict[str, Any]) -> AgentRecord:
    try:
        return AgentRecord.model_validate(record)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "the record"
        raise AgentError(
            f"agent {name!r} in the agent registry {registry_path()} is unreadable ({where}: {error['msg']}); "
            "fix or delete it"
        ) from None


# --- registering ----------------------------------------------------------------------------------


def register(
    name: str,
    target: SSHTarget,
    trust: TrustPolicy,
    *,
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
    down_timeout: float = DEFAULT_DOWN_TIMEOUT,
    cache_mb: float = DEFAULT_CACHE_MB,
    progress: Callable[[str], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> AgentRecord:
    """Register the device at ``target`` as ``name``: connect (host keys as ``trust`` says), probe it,
    deploy the runner, check that it can measure, calibrate it, and save the record, which is returned.

    Each step is told to ``progress`` in a line; reconnects and other warnings go to ``log`` (default:
    stderr). A wrong address fails within seconds, not after ``down_timeout``: nothing is registered
    that was never reached.
    """
    from device_agents.probe_models import probe_models
    from device_agents.ssh import SSHAgent, check_workdir, require_runtime

    check_new_name(name)
    check_workdir(target.workdir)
    tell = progress or (lambda line: None)
    dft_model, calibration_model = probe_models()
    with SSHAgent(name, target, trust=trust, down_timeout=min(down_timeout, 10.0), log=log,
                  command_timeout=command_timeout, cache_mb=cache_mb) as ssh:
        tell(f"connecting to {ssh.address} ...")
        probe = ssh.probe(dft_model)
        require_runtime(ssh, probe)
        tell(f"runner deployed to {ssh.workdir}; calibrating ...")
        calibration = ssh.measure(calibration_model, CALIBRATION_SETTINGS)
        workdir_abs = ssh.workdir
        address = ssh.address
    now = time.time()
    record = AgentRecord(
        kind="ssh",
        target=target.to_dict(),
        address=address,
        workdir_abs=workdir_abs,
        command_timeout=command_timeout,
        down_timeout=down_timeout,
        cache_mb=cache_mb,
        added_at=now,
        last_seen=now,
        state="ok",
        **_probed(probe),
        calibration=_calibration(calibration),
    )
    save_agent(name, record)
    return record


def note_probe(name: str, probe: RunnerResult) -> None:
    """Record a fresh probe of agent ``name`` (``nas agent check``): its fingerprint, DFT, seen now."""
    update_agent(name, **_probed(probe), last_seen=time.time(), state="ok")


# What the registry keeps of the runner's results: the one place this module reads them.


def _probed(probe: RunnerResult) -> dict[str, Any]:
    return {
        "fingerprint": probe.fingerprint,
        "fingerprint_key": fingerprint_key(probe.fingerprint),
        "dft": probe.dft,
        "dft_error": probe.dft_error,
    }


def _calibration(result: RunnerResult) -> Calibration:
    latency, memory = result.latency_ms, result.memory_kb
    return Calibration(
        median_ms=latency.median,
        p90_ms=latency.p90,
        iqr_ms=latency.iqr,
        session_ms=result.session_ms,
        unstable=latency.unstable,
        slowed=latency.slowed,
        model_peak_kb=memory.model_peak_kb,
        process_peak_kb=memory.after_runs.peak_kb,
        at=result.ended_at,
    )


# --- opening --------------------------------------------------------------------------------------


def _contact_recorder(name: str):  # noqa: ANN202 - a callback
    """Record each agent's state and last contact, rewriting the file at most every 30 s when unchanged."""
    last = {"state": None, "at": 0.0}

    def record(state: str, detail: str | None) -> None:
        now = time.time()
        if state == last["state"] and now - last["at"] < CONTACT_EVERY_S:
            return
        last.update(state=state, at=now)
        fields: dict[str, Any] = {"state": state, "state_detail": detail}
        if state == "ok":
            fields["last_seen"] = now
        update_agent(name, **fields)

    return record


def open_agent(name: str, **options: Any) -> Agent:
    """An agent ready to measure, by its registered name (``local`` is built in).

    ``options`` go to the agent's constructor (e.g. ``down_timeout=...`` for an SSH agent).
    """
    if name == LOCAL:
        return LocalAgent()
    record = get_agent(name)
    if record.kind != "ssh":
        raise AgentError(f"agent {name!r} has kind {record.kind!r}, which this version does not know")
    from device_agents.ssh import SSHAgent, SSHTarget

    options.setdefault("down_timeout", record.down_timeout)
    options.setdefault("command_timeout", record.command_timeout)
    options.setdefault("cache_mb", record.cache_mb)
    options.setdefault("on_contact", _contact_recorder(name))
    # The fingerprint is probed afresh (Agent.fingerprint) rather than taken from the registry, so
    # an upgraded onnxruntime on the device never hits measurements cached for the old one.
    return SSHAgent(name, SSHTarget.from_dict(record.target), **options)
