"""The SSH agent's errors, and how it words what went wrong with a connection.

They sit apart so that the connection (``_connection``) and the channels it opens (``_channel``)
share them without importing each other.
"""

from __future__ import annotations

import socket

from device_agents.errors import AgentError, AgentUnreachable


class AgentAuthError(AgentError):
    """The device refused our credentials; retrying would not help."""


class NotSSH(AgentUnreachable):
    """The port answered but does not speak SSH: a wrong --port, not an outage; never retried."""


class ConnectionLost(Exception):
    """The connection failed or dropped; the operation may be retried after reconnecting."""


def describe(exc: BaseException) -> str:
    """An exception in a few words for a one-line message: a timeout says so, others name their type."""
    text = str(exc).strip()
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"timed out ({text or 'no answer'})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
