"""Named agents: the built-in ``local`` agent and the devices users register.

``open_agent(name)`` is the only thing the study needs from here.
"""

from __future__ import annotations

from device_agents.base import Agent, AgentError
from device_agents.local import LocalAgent

LOCAL = "local"


def open_agent(name: str) -> Agent:
    """An agent ready to measure, by its registered name."""
    if name == LOCAL:
        return LocalAgent()
    raise AgentError(f"unknown agent {name!r}: register it with 'nas agent add {name} --host HOST'")
