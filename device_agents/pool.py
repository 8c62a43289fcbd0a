"""Measure on several agents at once, one job per agent at a time, one agent per machine at a time.

Each agent gets its own single-thread executor, so measurements on different devices overlap and
measurements on one device queue (the runner's device lock also serialises them across hosts).
Agents that share one physical CPU (this host, a loopback sshd, a board emulated here: the same
kernel ``boot_id``) take turns, since each would distort the other's timings::

    with AgentPool() as pool:
        futures = [pool.submit("pi4", model, settings), pool.submit("phone", model, settings)]
        results = [f.result() for f in futures]

A future raises what the agent raised (``AgentUnreachable`` for a device down past its timeout);
the other agents go on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from device_agents.base import Agent
from device_agents.protocol import MeasureSettings


class AgentPool:
    """Agents opened on first use by name, each with one worker thread."""

    def __init__(self, opener: Callable[[str], Agent] | None = None) -> None:
        if opener is None:
            from device_agents.registry import open_agent

            opener = open_agent
        self._opener = opener
        self._agents: dict[str, Agent] = {}
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._machines: dict[str, threading.Lock] = {}  # by kernel boot_id
        self._lock = threading.Lock()
        self._closed = False

    def agent(self, name: str) -> Agent:
        with self._lock:
            if self._closed:
                raise RuntimeError("the agent pool is closed")
            if name not in self._agents:
                self._agents[name] = self._opener(name)
                self._executors[name] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"agent-{name}")
            return self._agents[name]

    def call(self, name: str, function: Callable[[Agent], Any]) -> Future:
        """Run ``function(agent)`` on the agent's worker thread, after the jobs queued before it and
        while no other agent on the same machine runs one."""
        agent = self.agent(name)
        return self._executors[name].submit(self._on_machine, agent, function)

    def _on_machine(self, agent: Agent, function: Callable[[Agent], Any]) -> Any:
        machine = agent.fingerprint().get("boot_id") or f"agent {agent.name}"
        with self._lock:
            lock = self._machines.setdefault(machine, threading.Lock())
        with lock:
            return function(agent)

    def submit(self, name: str, model: Path, settings: MeasureSettings) -> Future:
        return self.call(name, lambda agent: agent.measure(Path(model), settings))

    def measure_all(self, jobs: Iterable[tuple[str, Path, MeasureSettings]]) -> list[Future]:
        """Submit ``(agent name, model, settings)`` jobs; futures in the same order."""
        return [self.submit(name, model, settings) for name, model, settings in jobs]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            executors, agents = list(self._executors.values()), list(self._agents.values())
        for executor in executors:
            executor.shutdown(wait=True, cancel_futures=True)
        for agent in agents:
            agent.close()

    def __enter__(self) -> AgentPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
