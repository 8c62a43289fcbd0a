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

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from device_agents.testbeds._process import (
    alive,
    descendants,
    keygen_argv,
    kill,
    port_open,
    runner_pids,
    sshd_config,
)

USER = "nasloop"
SYSTEM_PYTHON = "/usr/bin/python3"
SSHD = "/usr/sbin/sshd"


class TestbedError(RuntimeError):
    pass


def _run(argv: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise TestbedError(f"{argv[0]} took longer than {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise TestbedError(
            f"{' '.join(argv)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}"
        )
    return done


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Loopback:
    """The loopback sshd testbed; every method is idempotent."""

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

    # --- state ----------------------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        try:
            return int(json.loads(self.statefile.read_text())["port"])
        except (OSError, ValueError, KeyError):
            return None

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid, port = self.pid(), self.port
        return pid is not None and alive(pid) and port is not None and port_open("127.0.0.1", port, 1.0)

    def host_key_fingerprint(self) -> str:
        return _run(["ssh-keygen", "-lf", str(self.host_key) + ".pub"]).stdout.split()[1]

    def info(self) -> dict:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "key": str(self.client_key),
            "python": self.python,
            "bare_python": SYSTEM_PYTHON,
            "home": str(self.home),
            "host_key_fingerprint": self.host_key_fingerprint() if self.host_key.exists() else None,
            "running": self.running(),
        }

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
            _run(
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
        _run(["usermod", "-p", "*", self.user])  # no password, but not locked for key logins
        self.home.mkdir(exist_ok=True)
        os.chown(self.home, entry.pw_uid, entry.pw_gid)
        os.chmod(self.home, 0o755)

    def _keys(self) -> None:
        entry = pwd.getpwnam(self.user)
        if not self.host_key.exists():
            _run(keygen_argv(self.host_key, "nas-loopback-host"))
        self.client_key.parent.mkdir(mode=0o700, exist_ok=True)
        if not self.client_key.exists():
            _run(keygen_argv(self.client_key, "nas-loopback-client"))
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(exist_ok=True)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(Path(str(self.client_key) + ".pub").read_text())
        for path in (ssh_dir, authorized):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(ssh_dir, 0o700)
        os.chmod(authorized, 0o600)

    def _venv(self) -> None:
        check = [self.python, "-c", "import numpy, onnxruntime"]
        if (
            Path(self.python).exists()
            and subprocess.run(check, capture_output=True, timeout=60).returncode == 0
        ):
            return
        shutil.rmtree(self.venv, ignore_errors=True)
        _run([SYSTEM_PYTHON, "-m", "venv", str(self.venv)], timeout=120)
        versions = []
        try:  # the host's versions, so loopback results match local ones
            import numpy
            import onnxruntime

            versions = [f"onnxruntime=={onnxruntime.__version__}", f"numpy=={numpy.__version__}"]
        except ImportError:
            versions = ["onnxruntime", "numpy"]
        try:
            _run(
                [self.python, "-m", "pip", "install", "--quiet", "--only-binary=:all:", *versions],
                timeout=600,
            )
        except TestbedError:
            _run(
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

    def _write_config(self, port: int) -> None:
        self.config.write_text(sshd_config("device_agents/testbeds/loopback.py", port, "127.0.0.1", str(self.host_key),
                                           str(self.pidfile), self.user, extra=("MaxStartups 50", "MaxSessions 50")))

    def start(self) -> dict:
        if self.running():
            return self.info()
        port = self.port or _free_port()
        self._write_config(port)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        _run([SSHD, "-t", "-f", str(self.config)], timeout=30)
        deadline = time.monotonic() + 10
        while True:  # a just-killed sshd's port may linger for a moment
            try:
                _run([SSHD, "-f", str(self.config), "-E", str(self.logfile)], timeout=30)
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
        return self.info()

    def stop(self, kill_sessions: bool = True) -> None:
        """Stop the listening sshd; with ``kill_sessions`` also every process of its connections."""
        pid = self.pid()
        if pid is None or not alive(pid):
            return
        victims = descendants(pid) if kill_sessions else []
        for victim in [pid, *victims]:
            kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.pid() == pid:  # a concurrent start() may have written a new sshd's pid meanwhile
            self.pidfile.unlink(missing_ok=True)

    def runner_pids(self, measuring_only: bool = True) -> list[int]:
        """Runner processes started through this sshd (``measuring_only``: not probes)."""
        return runner_pids(self.pid(), measuring_only)

    def up(self) -> dict:
        self.setup()
        return self.start()

    def down(self) -> None:
        self.stop()

    def purge(self) -> None:
        self.stop()
        try:
            pwd.getpwnam(self.user)
            _run(["userdel", self.user])
        except KeyError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m device_agents.testbeds.loopback", description=__doc__.splitlines()[0]
    )
    parser.add_argument("action", choices=["up", "down", "status", "purge"])
    args = parser.parse_args(argv)
    testbed = Loopback()
    try:
        if args.action == "up":
            info = testbed.up()
            print(json.dumps(info, indent=2))
            print(
                f"register it: nas agent add loop --host 127.0.0.1 --port {info['port']} "
                f"--user {info['user']} --key {info['key']} --python {info['python']} "
                f"--trust-host-key {info['host_key_fingerprint']}",
                file=sys.stderr,
            )
        elif args.action == "down":
            testbed.down()
        elif args.action == "purge":
            testbed.purge()
        else:
            print(json.dumps(testbed.info(), indent=2))
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
