"""A real sshd on 127.0.0.1: the quickest device to measure on over SSH.

``python -m device_agents.testbeds.loopback up|down|status|purge`` (as root). ``up`` creates, once,
a dedicated locked user (``nasloop``), a client key, the sshd's own host key and a venv built from
``/usr/bin/python3`` with numpy and onnxruntime (the VM's ``python3`` may be a shim other users cannot
read), then starts ``/usr/sbin/sshd`` on a free port (kept across restarts) with password logins off.
It prints how to register it::

    nas agent add loop --host 127.0.0.1 --port PORT --user nasloop --key KEY --python VENV/bin/python \
        --trust-host-key SHA256:...

Everything lives under ``/var/lib/nas-loopback`` (``$NAS_LOOPBACK_DIR``). ``stop(kill_sessions=True)``
also kills the connections' processes, as a crash or a reboot of a real device would.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from device_agents.testbeds._process import TestbedError, keygen_argv, run
from device_agents.testbeds._sshd import SSHDTestbed

USER = "nasloop"
SYSTEM_PYTHON = "/usr/bin/python3"
SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Loopback(SSHDTestbed):
    """The loopback sshd testbed; every method is idempotent."""

    module = "device_agents.testbeds.loopback"
    label = "nas-loopback"
    agent_name = "loop"
    host = "127.0.0.1"

    def __init__(self, base: Path | None = None, user: str = USER) -> None:
        self.base = Path(base or os.environ.get("NAS_LOOPBACK_DIR") or "/var/lib/nas-loopback")
        self.user = user
        self.home = self.base / "home"
        self.venv = self.base / "venv"
        self.python = str(self.venv / "bin" / "python")
        self.client_key = self.base / "client" / "id_ed25519"
        self.host_key = self.base / "ssh_host_ed25519_key"
        self.config = self.base / "sshd_config"
        self.pidfile = self.base / "sshd.pid"
        self.logfile = self.base / "sshd.log"
        self.statefile = self.base / "state.json"

    @staticmethod
    def unavailable_reason() -> str | None:
        if sys.platform != "linux":
            return "the loopback sshd testbed needs Linux"
        if os.geteuid() != 0:
            return "the loopback sshd testbed needs root (it creates a user); run the tests as root"
        if not Path(SSHD).exists():
            return "no sshd: apt-get install -y openssh-server"
        if not Path(SYSTEM_PYTHON).exists():
            return f"no {SYSTEM_PYTHON}: apt-get install -y python3 python3-venv"
        if not shutil.which("useradd") or not shutil.which("ssh-keygen"):
            return "missing useradd or ssh-keygen: apt-get install -y passwd openssh-client"
        return None

    @property
    def port(self) -> int | None:
        """The port it listens on, chosen once and kept across restarts (registrations name it)."""
        try:
            return int(json.loads(self.statefile.read_text())["port"])
        except (OSError, ValueError, KeyError):
            return None

    def _details(self) -> dict[str, Any]:
        return {"bare_python": SYSTEM_PYTHON, "home": str(self.home)}

    # --- setup ----------------------------------------------------------------------------------

    def setup(self) -> None:
        reason = self.unavailable_reason()
        if reason:
            raise TestbedError(reason)
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        self._user()
        self._keys()
        self._venv()

    def _user(self) -> None:
        try:
            entry = pwd.getpwnam(self.user)
        except KeyError:
            run(
                [
                    "useradd",
                    "--system",
                    "--home-dir",
                    str(self.home),
                    "--create-home",
                    "--shell",
                    "/bin/sh",
                    self.user,
                ]
            )
            entry = pwd.getpwnam(self.user)
        if Path(entry.pw_dir) != self.home:
            raise TestbedError(
                f"user {self.user} exists with home {entry.pw_dir}, not {self.home}; "
                f"remove it (userdel {self.user}) or set NAS_LOOPBACK_DIR"
            )
        run(["usermod", "-p", "*", self.user])  # no password, but not locked for key logins
        self.home.mkdir(exist_ok=True)
        os.chown(self.home, entry.pw_uid, entry.pw_gid)
        os.chmod(self.home, 0o755)

    def _keys(self) -> None:
        if not self.host_key.exists():
            run(keygen_argv(self.host_key, f"{self.label}-host"))
        self._authorize_client()

    def _user_ids(self) -> tuple[int, int]:
        entry = pwd.getpwnam(self.user)
        return entry.pw_uid, entry.pw_gid

    def _venv(self) -> None:
        check = [self.python, "-c", "import numpy, onnxruntime"]
        if (
            Path(self.python).exists()
            and subprocess.run(check, capture_output=True, timeout=60).returncode == 0
        ):
            return
        shutil.rmtree(self.venv, ignore_errors=True)
        run([SYSTEM_PYTHON, "-m", "venv", str(self.venv)], timeout=120)
        versions = []
        try:  # the host's versions, so loopback results match local ones
            import numpy
            import onnxruntime

            versions = [f"onnxruntime=={onnxruntime.__version__}", f"numpy=={numpy.__version__}"]
        except ImportError:
            versions = ["onnxruntime", "numpy"]
        try:
            run(
                [self.python, "-m", "pip", "install", "--quiet", "--only-binary=:all:", *versions],
                timeout=600,
            )
        except TestbedError:
            run(
                [
                    self.python,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--only-binary=:all:",
                    "onnxruntime",
                    "numpy",
                ],
                timeout=600,
            )

    # --- run ------------------------------------------------------------------------------------

    def _start_sshd(self) -> None:
        port = self.port or _free_port()
        self.config.write_text(self._sshd_config(port, str(self.host_key), str(self.pidfile),
                                                 extra=("MaxStartups 50", "MaxSessions 50")))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        run([SSHD, "-t", "-f", str(self.config)], timeout=30)
        deadline = time.monotonic() + 10
        while True:  # a just-killed sshd's port may linger for a moment
            try:
                run([SSHD, "-f", str(self.config), "-E", str(self.logfile)], timeout=30)
                break
            except TestbedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.statefile.write_text(json.dumps({"port": port}))
        while not self.running():
            if time.monotonic() > deadline:
                raise TestbedError(f"sshd did not start on 127.0.0.1:{port}; see {self.logfile}")
            time.sleep(0.05)

    def up(self) -> dict[str, Any]:
        self.setup()
        return self.start()

    def down(self) -> None:
        self.stop()

    def purge(self) -> None:
        self.stop()
        try:
            pwd.getpwnam(self.user)
            run(["userdel", self.user])
        except KeyError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(Loopback.main())
