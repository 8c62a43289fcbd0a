"""Process and socket helpers shared by the testbeds (Linux /proc)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from pathlib import Path


class TestbedError(RuntimeError):
    """A testbed could not be set up, started or stopped; its command line prints it as one line."""


def run(argv: list[str], timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a set-up command with its output captured: when it fails or overruns, a TestbedError
    carrying the end of what it printed, which is what says why."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise TestbedError(f"{argv[0]} took longer than {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        raise TestbedError(
            f"{' '.join(argv)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}"
        )
    return done


def sshd_config(origin: str, port: int, address: str, host_key: str, pidfile: str, user: str,
                extra: tuple[str, ...] = ()) -> str:
    """A key-only sshd config for one user: no passwords, no PAM, no root, SFTP in-process."""
    return "\n".join([
        f"# written by {origin}",
        f"Port {port}",
        f"ListenAddress {address}",
        f"HostKey {host_key}",
        f"PidFile {pidfile}",
        "AuthorizedKeysFile .ssh/authorized_keys",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PermitRootLogin no",
        f"AllowUsers {user}",
        "UseDNS no",
        "Subsystem sftp internal-sftp",
        *extra,
        "",
    ])


def keygen_argv(path: Path, comment: str) -> list[str]:
    """``ssh-keygen`` making a passphrase-less ed25519 key at ``path``."""
    return ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]


def port_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH")
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def kill(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, sig)


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (read from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def runner_pids(sshd_pid: int | None, measuring_only: bool = True) -> list[int]:
    """Runner processes started through the sshd ``sshd_pid`` (``measuring_only``: not probes or kills)."""
    found = []
    for child in descendants(sshd_pid) if sshd_pid else []:
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # the runner itself: its path is one argument (a shell's -c string holds the whole command line)
        if any(b"/runner-" in arg and arg.endswith(b".py") for arg in argv) and not (
            measuring_only and (b"--probe" in argv or b"--kill-run" in argv)
        ):
            found.append(child)
    return found
