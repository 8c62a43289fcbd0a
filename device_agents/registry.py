"""Named agents: the built-in ``local`` agent and the devices users register.

Registered agents live in ``nas_home()/agents.json`` (no passwords, no keys: only the key file's
path); host keys live in ``nas_home()/known_hosts`` (see ``hostkeys``). ``open_agent(name)`` is the
only thing the study needs from here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from device_agents._home import nas_home
from device_agents.base import DEFAULT_CACHE_MB, DEFAULT_COMMAND_TIMEOUT, Agent, AgentError
from device_agents.local import LocalAgent

LOCAL = "local"
SCHEMA = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CONTACT_EVERY_S = 30.0  # how often a busy agent rewrites its "last seen" time


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


def list_agents() -> dict[str, dict[str, Any]]:
    with _locked(write=False) as data:
        return dict(data["agents"])


def get_agent(name: str) -> dict[str, Any]:
    agents = list_agents()
    if name not in agents:
        known = ", ".join(sorted(agents)) or "none registered"
        raise AgentError(
            f"unknown agent {name!r} (known: {LOCAL}, {known}); "
            f"register it with 'nas agent add {name} --host HOST'"
        )
    return agents[name]


def save_agent(name: str, record: dict[str, Any]) -> None:
    check_name(name)
    if name == LOCAL:
        raise AgentError(f"'{LOCAL}' is the built-in agent for this host; choose another name")
    with _locked(write=True) as data:
        data["agents"][name] = record


def update_agent(name: str, **fields: Any) -> None:
    with _locked(write=True) as data:
        if name in data["agents"]:
            data["agents"][name].update(fields)


def remove_agent(name: str) -> dict[str, Any]:
    with _locked(write=True) as data:
        if name not in data["agents"]:
            raise AgentError(f"unknown agent {name!r}; 'nas agent list' shows the registered ones")
        return data["agents"].pop(name)


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
    kind = record.get("kind", "ssh")
    if kind != "ssh":
        raise AgentError(f"agent {name!r} has kind {kind!r}, which this version does not know")
    from device_agents.ssh import SSHAgent, SSHTarget

    options.setdefault("down_timeout", float(record.get("down_timeout", 300.0)))
    options.setdefault("command_timeout", float(record.get("command_timeout", DEFAULT_COMMAND_TIMEOUT)))
    options.setdefault("cache_mb", float(record.get("cache_mb", DEFAULT_CACHE_MB)))
    options.setdefault("on_contact", _contact_recorder(name))
    # The fingerprint is probed afresh (Agent.fingerprint) rather than taken from the registry, so
    # an upgraded onnxruntime on the device never hits measurements cached for the old one.
    return SSHAgent(name, SSHTarget.from_dict(record["target"]), **options)
