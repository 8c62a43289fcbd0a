"""An emulated aarch64 board reachable over SSH, for tests and for trying the tool without hardware.

``python -m device_agents.testbeds.arm64 up|down|status|purge`` (as root). What ``up`` does
(BRIEF section 6):

* enables qemu-user through binfmt_misc (``qemu-user-static``, ``binfmt-support``);
* builds, once, a Debian bookworm arm64 root filesystem with ``mmdebstrap`` (python3 and
  openssh-server) plus aarch64 onnxruntime and numpy wheels fetched on this host with
  ``pip download --platform manylinux_2_28_aarch64 ...`` and installed with ``pip --target``;
  the result is cached under ``/var/cache/nas-arm64`` (``$NAS_ARM64_CACHE``), so a rerun takes seconds;
* bind-mounts a generated Cortex-A72 ``/proc/cpuinfo`` (onnxruntime under qemu 7.2 crashes reading
  the host's x86 one);
* runs the board's own aarch64 sshd inside a network namespace ``nas-arm64`` reached through a veth
  pair, 10.231.0.1 (host) <-> 10.231.0.2 (board), with ``QEMU_CPU=cortex-a72`` in every session
  so onnxruntime takes the code paths a Raspberry Pi 4 would (no SVE/SME).

``down`` stops the sshd, unmounts and deletes the namespace; ``purge`` also deletes the cache.
Emulation is 20-360x slower than the real thing: use it to check that things work, never for speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
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

BUILD_VERSION = "1"  # bump to rebuild cached root filesystems
SUITE = "bookworm"
NETNS = "nas-arm64"
VETH_HOST, VETH_BOARD = "nasarm64h", "nasarm64b"
HOST_ADDR, BOARD_ADDR, PREFIX = "10.231.0.1", "10.231.0.2", 30
BOARD_USER = "nasboard"
BOARD_PYTHON = "/usr/bin/python3"
QEMU_CPU = "cortex-a72"
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")
PACKAGES = ("onnxruntime", "numpy")
SITE = "usr/local/lib/python3.11/dist-packages"  # on the board's sys.path (Debian's python3.11)
SSHD_CONFIG = "/etc/ssh/nas_sshd_config"
SSHD_PID = "run/nas-sshd.pid"
SSHD_LOG = "var/log/nas-sshd.log"
TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "qemu-aarch64-static": "qemu-user-static",
    "update-binfmts": "binfmt-support",
    "ip": "iproute2",
    "ssh-keygen": "openssh-client",
}


class BoardError(RuntimeError):
    pass


def _run(argv: list[str], timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise BoardError(f"{argv[0]} took longer than {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        raise BoardError(
            f"{' '.join(argv)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}"
        )
    return done


def _log(message: str) -> None:
    sys.stderr.write(f"[arm64] {message}\n")
    sys.stderr.flush()


class Arm64Board:
    """The emulated board: build (cached), up, down, status."""

    def __init__(self, cache: Path | None = None) -> None:
        self.cache = Path(cache or os.environ.get("NAS_ARM64_CACHE") or "/var/cache/nas-arm64")
        self.rootfs = self.cache / "rootfs"
        self.wheels = self.cache / "wheels"
        self.state_dir = self.cache / "state"
        self.client_key = self.state_dir / "client_ed25519"

    # --- checks -------------------------------------------------------------------------------

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why the board cannot be set up here, or None."""
        if sys.platform != "linux":
            return "the arm64 board needs Linux"
        if os.geteuid() != 0:
            return "the arm64 board needs root (mounts, network namespaces)"
        missing = [pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)]
        if missing:
            return "missing Debian packages: apt-get install -y " + " ".join(
                sorted(set(missing)) + ["arch-test"]
            )
        return None

    def built(self) -> bool:
        marker = self.rootfs / ".nas-ready"
        return marker.is_file() and marker.read_text().strip() == BUILD_VERSION

    def running(self) -> bool:
        pid = self._sshd_pid()
        return pid is not None and alive(pid) and port_open(BOARD_ADDR, 22, 1.0)

    def info(self) -> dict:
        """How to reach the board (what ``nas agent add`` needs)."""
        return {
            "host": BOARD_ADDR,
            "port": 22,
            "user": BOARD_USER,
            "key": str(self.client_key),
            "python": BOARD_PYTHON,
            "netns": NETNS,
            "rootfs": str(self.rootfs),
            "host_key_fingerprint": self._host_key_fingerprint(),
            "running": self.running(),
            "built": self.built(),
        }

    # --- build (cached) -------------------------------------------------------------------------

    def enable_binfmt(self) -> None:
        binfmt = Path("/proc/sys/fs/binfmt_misc")
        if not (binfmt / "status").exists():
            _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)])
        if not (binfmt / "qemu-aarch64").exists():
            _run(["update-binfmts", "--enable", "qemu-aarch64"])
        entry = (binfmt / "qemu-aarch64").read_text()
        if "enabled" not in entry.splitlines()[0]:
            _run(["update-binfmts", "--enable", "qemu-aarch64"])
        if "flags: " not in entry or "F" not in entry.split("flags: ")[1].split()[0]:
            raise BoardError("binfmt qemu-aarch64 lacks the F flag; install qemu-user-static (not qemu-user)")

    def build(self, force: bool = False) -> float:
        """Build the root filesystem once; returns seconds spent (0 when cached)."""
        if self.built() and not force:
            return 0.0
        if _mounted_under(self.rootfs):
            raise BoardError(f"{self.rootfs} has mounts; run 'down' first")
        started = time.monotonic()
        self.enable_binfmt()
        self.cache.mkdir(parents=True, exist_ok=True)
        self._download_wheels()
        partial = self.cache / "rootfs.partial"
        _remove_tree(partial)
        _log(f"building the {SUITE} arm64 root filesystem with mmdebstrap (a few minutes)...")
        _run(
            [
                "mmdebstrap",
                "--arch=arm64",
                "--variant=minbase",
                "--include=python3,openssh-server",
                SUITE,
                str(partial),
                *_mirrors(),
            ],
            timeout=1800,
        )
        _log("installing the aarch64 onnxruntime and numpy wheels...")
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-index",
                "--find-links",
                str(self.wheels),
                "--only-binary=:all:",
                *_platform_args(),
                "--target",
                str(partial / SITE),
                *PACKAGES,
            ],
            timeout=600,
        )
        _run(["useradd", "--root", str(partial), "--create-home", "--shell", "/bin/sh", BOARD_USER])
        _run(["usermod", "--root", str(partial), "-p", "*", BOARD_USER])  # locked for passwords, keys work
        (partial / "run" / "sshd").mkdir(parents=True, exist_ok=True)
        (partial / SSHD_CONFIG.lstrip("/")).write_text(_sshd_config())
        _remove_tree(self.rootfs)
        partial.rename(self.rootfs)
        (self.rootfs / ".nas-ready").write_text(BUILD_VERSION + "\n")
        elapsed = time.monotonic() - started
        _log(f"root filesystem ready in {elapsed:.0f} s ({self.rootfs})")
        return elapsed

    def _download_wheels(self) -> None:
        marker = self.wheels / ".done"
        if marker.is_file():
            return
        self.wheels.mkdir(parents=True, exist_ok=True)
        _log("downloading aarch64 wheels for onnxruntime and numpy...")
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--only-binary=:all:",
                *_platform_args(),
                "-d",
                str(self.wheels),
                *PACKAGES,
            ],
            timeout=900,
        )
        marker.write_text("\n".join(sorted(p.name for p in self.wheels.glob("*.whl"))) + "\n")

    # --- up / down ------------------------------------------------------------------------------

    def up(self) -> dict:
        reason = self.unavailable_reason()
        if reason:
            raise BoardError(reason)
        if self.running():
            return self.info()
        self.down(quiet=True)
        self.build()
        self.enable_binfmt()
        self._install_keys()
        self._mount()
        self._network()
        self._start_sshd()
        return self.info()

    def stop(self) -> None:
        """Stop the board's sshd and every process of its connections, as a crash or reboot would."""
        pid = self._sshd_pid()
        if pid is None or not alive(pid):
            return
        for victim in [pid, *descendants(pid)]:
            kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        (self.rootfs / SSHD_PID).unlink(missing_ok=True)

    def start(self) -> dict:
        """Start the board's sshd again after ``stop`` (the board must be up otherwise)."""
        if not self.running():
            self._start_sshd()
        return self.info()

    def runner_pids(self, measuring_only: bool = True) -> list[int]:
        """Runner processes started through the board's sshd (``measuring_only``: not probes)."""
        return runner_pids(self._sshd_pid(), measuring_only)

    def add_command(self, name: str = "board") -> str:
        """The ``nas agent add`` line that registers this board, ready to paste."""
        info = self.info()
        return (f"nas agent add {name} --host {info['host']} --user {info['user']} --key {info['key']} "
                f"--python {info['python']} --trust-host-key {info['host_key_fingerprint']}")

    def down(self, quiet: bool = False) -> None:
        """Stop the sshd, unmount, delete the namespace; safe to call any time."""
        pid = self._sshd_pid()
        if pid is not None:
            for victim in [*descendants(pid), pid]:
                kill(victim, signal.SIGKILL)
        for pid_text in _run(["ip", "netns", "pids", NETNS], check=False).stdout.split():
            kill(int(pid_text), signal.SIGKILL)
        for mount in sorted(_mounts_under(self.rootfs), key=len, reverse=True):
            done = _run(["umount", mount], check=False)
            if done.returncode != 0:
                _run(["umount", "-l", mount], check=False)
        _run(["ip", "netns", "delete", NETNS], check=False)
        _run(["ip", "link", "delete", VETH_HOST], check=False)
        pidfile = self.rootfs / SSHD_PID
        if pidfile.exists():
            pidfile.unlink()
        if not quiet:
            _log("board down")

    def purge(self) -> None:
        pid = self._sshd_pid()
        if _mounted_under(self.cache) or (pid is not None and alive(pid)):  # this cache's board is up
            self.down(quiet=True)
        if _mounted_under(self.cache):
            raise BoardError(f"refusing to delete {self.cache}: something is still mounted under it")
        _remove_tree(self.cache)
        _log(f"removed {self.cache}")

    def _install_keys(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.client_key.exists():
            _run(keygen_argv(self.client_key, "nas-arm64-client"))
        home = self.rootfs / "home" / BOARD_USER
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(Path(str(self.client_key) + ".pub").read_text())
        uid, gid = _board_ids(self.rootfs)
        for path in (home, ssh_dir, authorized):
            os.chown(path, uid, gid)
        os.chmod(ssh_dir, 0o700)
        os.chmod(authorized, 0o600)
        (self.rootfs / SSHD_CONFIG.lstrip("/")).write_text(_sshd_config())

    def _mount(self) -> None:
        cpuinfo = self.state_dir / "cpuinfo"
        cpuinfo.write_text(_arm_cpuinfo(os.cpu_count() or 1))
        proc = self.rootfs / "proc"
        _run(["mount", "-t", "proc", "proc", str(proc)])
        _run(["mount", "--bind", str(cpuinfo), str(proc / "cpuinfo")])
        # onnxruntime's cpuinfo reads /sys/devices/system/cpu/{possible,present}; read-only is enough.
        _run(["mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", str(self.rootfs / "sys")])

    def _network(self) -> None:
        routes = _run(["ip", "-4", "route", "show", f"{HOST_ADDR}/{PREFIX}"], check=False).stdout
        if routes.strip():
            raise BoardError(
                f"{HOST_ADDR}/{PREFIX} is already routed on this host ({routes.strip()}); run 'down'"
            )
        _run(["ip", "netns", "add", NETNS])
        _run(["ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_BOARD, "netns", NETNS])
        _run(["ip", "addr", "add", f"{HOST_ADDR}/{PREFIX}", "dev", VETH_HOST])
        _run(["ip", "link", "set", VETH_HOST, "up"])
        _run(["ip", "-n", NETNS, "addr", "add", f"{BOARD_ADDR}/{PREFIX}", "dev", VETH_BOARD])
        _run(["ip", "-n", NETNS, "link", "set", VETH_BOARD, "up"])
        _run(["ip", "-n", NETNS, "link", "set", "lo", "up"])

    def _start_sshd(self) -> None:
        (self.rootfs / "run" / "sshd").mkdir(parents=True, exist_ok=True)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "QEMU_CPU": QEMU_CPU, "LANG": "C.UTF-8"}
        _run(
            [
                "ip",
                "netns",
                "exec",
                NETNS,
                "chroot",
                str(self.rootfs),
                "/usr/sbin/sshd",
                "-f",
                SSHD_CONFIG,
                "-E",
                "/" + SSHD_LOG,
            ],
            env=env,
            timeout=120,
        )
        deadline = time.monotonic() + 90
        while not port_open(BOARD_ADDR, 22, 1.0):
            if time.monotonic() > deadline:
                log = (self.rootfs / SSHD_LOG).read_text()[-800:] if (self.rootfs / SSHD_LOG).exists() else ""
                raise BoardError(f"the board's sshd did not start listening on {BOARD_ADDR}:22: {log}")
            time.sleep(0.3)
        _log(f"board up: ssh -i {self.client_key} {BOARD_USER}@{BOARD_ADDR}")

    def _sshd_pid(self) -> int | None:
        try:
            return int((self.rootfs / SSHD_PID).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _host_key_fingerprint(self) -> str | None:
        pub = self.rootfs / "etc/ssh/ssh_host_ed25519_key.pub"
        if not pub.exists() or not shutil.which("ssh-keygen"):
            return None
        words = _run(["ssh-keygen", "-lf", str(pub)], check=False).stdout.split()
        return words[1] if len(words) > 1 else None


# --- helpers -------------------------------------------------------------------------------------


def _platform_args() -> list[str]:
    args = []
    for platform in WHEEL_PLATFORMS:
        args += ["--platform", platform]
    return args + ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]


def _mirrors() -> list[str]:
    """The Debian mirror this host uses (deb822 or one-line sources), else deb.debian.org."""
    uris = []
    for path in [*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"]:
                uris += [u for u in words[1:] if "security" not in u]
            elif words[:1] == ["deb"] and len(words) > 2 and "security" not in words[1]:
                uris.append(next(w for w in words[1:] if not w.startswith("[")))
    return uris[:1] or ["http://deb.debian.org/debian"]


def _sshd_config() -> str:
    return sshd_config("device_agents/testbeds/arm64.py", 22, BOARD_ADDR, "/etc/ssh/ssh_host_ed25519_key",
                       f"/{SSHD_PID}", BOARD_USER, extra=("MaxSessions 20", f"SetEnv QEMU_CPU={QEMU_CPU}"))


def _arm_cpuinfo(cpus: int) -> str:
    """A Raspberry-Pi-4-like (Cortex-A72) /proc/cpuinfo, one entry per host CPU."""
    entry = (
        "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
        "CPU revision\t: 3\n\n"
    )
    return (
        "".join(entry.format(n=n) for n in range(cpus))
        + "Hardware\t: BCM2835 (emulated)\nModel\t\t: nas-arm64\n"
    )


def _board_ids(rootfs: Path) -> tuple[int, int]:
    for line in (rootfs / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == BOARD_USER:
            return int(fields[2]), int(fields[3])
    raise BoardError(f"user {BOARD_USER} missing from {rootfs}; rebuild with 'purge' then 'up'")


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) if path.exists() else str(path)
    mounts = []
    with open("/proc/mounts") as handle:
        for line in handle:
            target = line.split()[1].replace("\\040", " ")
            if target == prefix or target.startswith(prefix + "/"):
                mounts.append(target)
    return mounts


def _mounted_under(path: Path) -> bool:
    return bool(_mounts_under(path))


def _remove_tree(path: Path) -> None:
    if path.exists():
        if _mounted_under(path):
            raise BoardError(f"refusing to delete {path}: something is mounted under it")
        _run(["rm", "-rf", "--one-file-system", "--", str(path)], timeout=600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m device_agents.testbeds.arm64", description=__doc__.splitlines()[0]
    )
    parser.add_argument("action", choices=["up", "down", "status", "build", "purge"])
    parser.add_argument("--cache", type=Path, default=None, help="cache dir (default /var/cache/nas-arm64)")
    args = parser.parse_args(argv)
    board = Arm64Board(args.cache)
    try:
        if args.action == "up":
            started = time.monotonic()
            info = board.up()
            info["up_seconds"] = round(time.monotonic() - started, 1)
            print(json.dumps(info, indent=2))
            print(f"register it: {board.add_command()}", file=sys.stderr)
        elif args.action == "build":
            print(json.dumps({"build_seconds": round(board.build(), 1)}))
        elif args.action == "down":
            board.down()
        elif args.action == "purge":
            board.purge()
        else:
            print(json.dumps(board.info(), indent=2))
    except BoardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
