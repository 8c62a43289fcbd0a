"""The SSH agent: measure on a board or phone reached over SSH (paramiko).

One persistent connection per agent (TCP and SSH keep-alives), models uploaded once by SFTP under
their content hash and verified on the device by the runner (``--sha256``), the runner itself
deployed under its own hash. Every remote command is one ``shlex``-quoted argv with a timeout, and
nothing is written outside the agent's work dir. A dropped connection is re-established with
exponential backoff and the operation retried; a device still unreachable ``down_timeout`` seconds
after the first failure raises ``AgentUnreachable`` with the last reason.

Work dir layout on the device (always a folder inside the login's home)::

    WORKDIR/runner-<sha12>.py     the runner, one file per version
    WORKDIR/models/<sha256>.onnx  uploaded models: a cache of at most ``cache_mb`` MiB, the least
                                  recently used (the runner touches a model on each use) evicted first
    WORKDIR/device.lock           the runner's flock: one measurement at a time per device

Measurements go to one serving runner per connection (``runner.py --serve`` on one channel), which
forks a fresh child per measurement: Python and the numpy and onnxruntime imports, seconds on a
small board, are paid once per connection. A runner that overruns its timeout, or whose connection
dropped, is killed on the device with its whole process group (``runner.py --kill-run``), so it
never takes the device lock later; a server whose connection closed kills its child and exits. Partial
uploads (``*.part-*``) left by a killed client are removed once nothing has written them for a while.

The modules, lowest first: ``_errors`` (the agent's errors), ``_target`` (where the device is, the
work-dir rule, install hints), ``_channel`` (reading a channel; the serving runner on one),
``_connection`` (connecting, retrying, quoted commands, SFTP), ``_models`` (the model cache) and
``_agent`` (``SSHAgent``, composing them). What other packages use is imported from here.
"""

from device_agents.ssh._agent import SSHAgent
from device_agents.ssh._errors import AgentAuthError, NotSSH
from device_agents.ssh._models import STALE_PART_S
from device_agents.ssh._target import (
    DEFAULT_PYTHON,
    DEFAULT_WORKDIR,
    SSHTarget,
    check_workdir,
    install_hint,
    require_runtime,
    resolve,
)

__all__ = [
    "DEFAULT_PYTHON",
    "DEFAULT_WORKDIR",
    "STALE_PART_S",
    "AgentAuthError",
    "NotSSH",
    "SSHAgent",
    "SSHTarget",
    "check_workdir",
    "install_hint",
    "require_runtime",
    "resolve",
]
