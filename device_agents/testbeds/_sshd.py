"""What every testbed is: a real, key-only sshd serving one user, and the command line that runs it.

The testbeds differ in where that sshd runs (on 127.0.0.1, or in an emulated board's network
namespace) and how it is built; they share the rest, here: the client key made once and installed as
the user's only authorized key, the sshd config, the pid file, stopping the sshd the way a crash or
a reboot of a real device would (with every process of its connections), what ``status`` reports
and the ``nas agent add`` line ``up`` prints, and ``python -m MODULE up|down|status|purge``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from device_agents.testbeds._process import (
    TestbedError,
    alive,
    descendants,
    keygen_argv,
    kill,
    port_open,
    run,
    runner_pids,
    sshd_config,
)


class SSHDTestbed(ABC):
    """A testbed's sshd; every method is idempotent.

    Subclasses set where things are: ``host`` and ``port`` (where the sshd listens), ``user`` and
    ``home`` (its one login, its home as seen from this host), ``python`` (the interpreter to measure
    with), ``client_key``, ``host_key`` and ``pidfile`` (paths on this host).
    """

    module: ClassVar[str]  # the testbed's module: its command line, and what wrote the sshd config
    label: ClassVar[str]  # names the keys it makes ("nas-loopback-client")
    agent_name: ClassVar[str]  # the name the printed ``nas agent add`` line registers it as
    actions: ClassVar[tuple[str, ...]] = ("up", "down", "status", "purge")

    host: str
    port: int | None
    user: str
    home: Path
    python: str
    client_key: Path
    host_key: Path
    pidfile: Path

    @abstractmethod
    def up(self) -> dict[str, Any]:
        """Set the testbed up (once) and start its sshd; its ``info``."""

    @abstractmethod
    def down(self) -> None:
        """Stop the sshd and take down what ``up`` started."""

    @abstractmethod
    def purge(self) -> None:
        """``down``, then delete everything the testbed made."""

    @abstractmethod
    def _start_sshd(self) -> None:
        """Start the sshd (it is not running) and return once it answers."""

    @abstractmethod
    def _user_ids(self) -> tuple[int, int]:
        """The user's uid and gid, which own its ``~/.ssh``."""

    def _details(self) -> dict[str, Any]:
        """What ``info`` says about this kind of testbed besides how to log in."""
        return {}

    # --- state ----------------------------------------------------------------------------------

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid, port = self.pid(), self.port
        return pid is not None and alive(pid) and port is not None and port_open(self.host, port, 1.0)

    def host_key_fingerprint(self) -> str | None:
        """The sshd's host key fingerprint, as ``--trust-host-key`` takes it; None while there is none."""
        public = Path(str(self.host_key) + ".pub")
        if not public.exists() or not shutil.which("ssh-keygen"):
            return None
        words = run(["ssh-keygen", "-lf", str(public)], check=False).stdout.split()
        return words[1] if len(words) > 1 else None

    def info(self) -> dict[str, Any]:
        """How to reach the testbed (what ``nas agent add`` needs) and whether it is running."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "key": str(self.client_key),
            "python": self.python,
            **self._details(),
            "host_key_fingerprint": self.host_key_fingerprint(),
            "running": self.running(),
        }

    def add_command(self, name: str | None = None) -> str:
        """The ``nas agent add`` line that registers this testbed, ready to paste (tests parse it)."""
        info = self.info()
        port = f" --port {info['port']}" if info["port"] != 22 else ""
        return (f"nas agent add {name or self.agent_name} --host {info['host']}{port} --user {info['user']} "
                f"--key {info['key']} --python {info['python']} --trust-host-key {info['host_key_fingerprint']}")

    # --- set-up ---------------------------------------------------------------------------------

    def _sshd_config(self, port: int, host_key: str, pidfile: str, extra: tuple[str, ...]) -> str:
        """The sshd's config; ``host_key`` and ``pidfile`` as the sshd sees them (a chroot's differ)."""
        origin = self.module.replace(".", "/") + ".py"
        return sshd_config(origin, port, self.host, host_key, pidfile, self.user, extra=extra)

    def _authorize_client(self) -> None:
        """Make the client key once and install it as the user's only authorized key, with the owner
        and modes sshd insists on (it ignores a key file others could write)."""
        self.client_key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.client_key.exists():
            run(keygen_argv(self.client_key, f"{self.label}-client"))
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(Path(str(self.client_key) + ".pub").read_text())
        uid, gid = self._user_ids()
        for path in (self.home, ssh_dir, authorized):
            os.chown(path, uid, gid)
        os.chmod(ssh_dir, 0o700)
        os.chmod(authorized, 0o600)

    # --- run ------------------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Start the sshd unless it runs (after ``stop``, say); the testbed's ``info``."""
        if not self.running():
            self._start_sshd()
        return self.info()

    def stop(self, kill_sessions: bool = True) -> None:
        """Stop the listening sshd; with ``kill_sessions`` also every process of its connections, as a
        crash or a reboot of a real device would."""
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
        """Runner processes started through this sshd (``measuring_only``: not probes or kills)."""
        return runner_pids(self.pid(), measuring_only)

    # --- the command line -----------------------------------------------------------------------

    @classmethod
    def main(cls, argv: list[str] | None = None) -> int:
        """``python -m MODULE ACTION``; a failure is one ``error:`` line and exit status 2."""
        description = (sys.modules[cls.__module__].__doc__ or "").splitlines()[0]
        parser = argparse.ArgumentParser(prog=f"python -m {cls.module}", description=description)
        cls._add_arguments(parser)
        args = parser.parse_args(argv)
        testbed = cls._from_options(args)
        try:
            testbed._act(args.action)
        except TestbedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    @classmethod
    def _add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The command line's arguments: the action; a testbed with options adds them."""
        parser.add_argument("action", choices=cls.actions)

    @classmethod
    def _from_options(cls, args: argparse.Namespace) -> SSHDTestbed:
        return cls()

    def _act(self, action: str) -> None:
        if action == "up":
            print(json.dumps(self._up_report(), indent=2))
            print(f"register it: {self.add_command()}", file=sys.stderr)
        elif action == "down":
            self.down()
        elif action == "purge":
            self.purge()
        else:
            print(json.dumps(self.info(), indent=2))

    def _up_report(self) -> dict[str, Any]:
        """What ``up`` prints: the testbed's ``info`` once it is up."""
        return self.up()
