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
import sys
import time
from pathlib import Path
from typing import Any

from device_agents.testbeds._process import TestbedError, alive, descendants, kill, port_open, run
from device_agents.testbeds._sshd import SSHDTestbed

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


class BoardError(TestbedError):
    """A problem of the board itself (its build, mounts, network), beyond a failed command."""


def _log(message: str) -> None:
    sys.stderr.write(f"[arm64] {message}\n")
    sys.stderr.flush()


class Arm64Board(SSHDTestbed):
    """The emulated board: build (cached), up, down, status."""

    module = "device_agents.testbeds.arm64"
    label = "nas-arm64"
    agent_name = "board"
    actions = ("up", "down", "status", "build", "purge")
    host = BOARD_ADDR
    port = 22
    user = BOARD_USER
    python = BOARD_PYTHON

    def __init__(self, cache: Path | None = None) -> None:
        self.cache = Path(cache or os.environ.get("NAS_ARM64_CACHE") or "/var/cache/nas-arm64")
        self.rootfs = self.cache / "rootfs"
        self.wheels = self.cache / "wheels"
        self.state_dir = self.cache / "state"
        self.client_key = self.state_dir / "client_ed25519"
        self.home = self.rootfs / "home" / BOARD_USER
        self.host_key = self.rootfs / "etc/ssh/ssh_host_ed25519_key"  # made by the openssh-server package
        self.pidfile = self.rootfs / SSHD_PID

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

    def info(self) -> dict[str, Any]:
        """How to reach the board (what ``nas agent add`` needs), and whether it is built."""
        return {**super().info(), "built": self.built()}

    def _details(self) -> dict[str, Any]:
        return {"netns": NETNS, "rootfs": str(self.rootfs)}

    # --- build (cached) -------------------------------------------------------------------------

    def enable_binfmt(self) -> None:
        binfmt = Path("/proc/sys/fs/binfmt_misc")
        if not (binfmt / "status").exists():
            run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)])
        if not (binfmt / "qemu-aarch64").exists():
            run(["update-binfmts", "--enable", "qemu-aarch64"])
        entry = (binfmt / "qemu-aarch64").read_text()
        if "enabled" not in entry.splitlines()[0]:
            run(["update-binfmts", "--enable", "qemu-aarch64"])
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
        run(
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
        run(
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
        run(["useradd", "--root", str(partial), "--create-home", "--shell", "/bin/sh", BOARD_USER])
        run(["usermod", "--root", str(partial), "-p", "*", BOARD_USER])  # locked for passwords, keys work
        (partial / "run" / "sshd").mkdir(parents=True, exist_ok=True)
        (partial / SSHD_CONFIG.lstrip("/")).write_text(self._board_sshd_config())
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
        run(
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

    def up(self) -> dict[str, Any]:
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

    def down(self, quiet: bool = False) -> None:
        """Stop the sshd, unmount, delete the namespace; safe to call any time."""
        pid = self.pid()
        if pid is not None:
            for victim in [*descendants(pid), pid]:
                kill(victim, signal.SIGKILL)
        for pid_text in run(["ip", "netns", "pids", NETNS], check=False).stdout.split():
            kill(int(pid_text), signal.SIGKILL)
        for mount in sorted(_mounts_under(self.rootfs), key=len, reverse=True):
            done = run(["umount", mount], check=False)
            if done.returncode != 0:
                run(["umount", "-l", mount], check=False)
        run(["ip", "netns", "delete", NETNS], check=False)
        run(["ip", "link", "delete", VETH_HOST], check=False)
        if self.pidfile.exists():
            self.pidfile.unlink()
        if not quiet:
            _log("board down")

    def purge(self) -> None:
        pid = self.pid()
        if _mounted_under(self.cache) or (pid is not None and alive(pid)):  # this cache's board is up
            self.down(quiet=True)
        if _mounted_under(self.cache):
            raise BoardError(f"refusing to delete {self.cache}: something is still mounted under it")
        _remove_tree(self.cache)
        _log(f"removed {self.cache}")

    def _install_keys(self) -> None:
        self._authorize_client()
        (self.rootfs / SSHD_CONFIG.lstrip("/")).write_text(self._board_sshd_config())

    def _user_ids(self) -> tuple[int, int]:
        for line in (self.rootfs / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == BOARD_USER:
                return int(fields[2]), int(fields[3])
        raise BoardError(f"user {BOARD_USER} missing from {self.rootfs}; rebuild with 'purge' then 'up'")

    def _board_sshd_config(self) -> str:
        """The board's sshd config, with its paths as the chrooted sshd sees them."""
        return self._sshd_config(22, "/etc/ssh/ssh_host_ed25519_key", f"/{SSHD_PID}",
                                 extra=("MaxSessions 20", f"SetEnv QEMU_CPU={QEMU_CPU}"))

    def _mount(self) -> None:
        cpuinfo = self.state_dir / "cpuinfo"
        cpuinfo.write_text(_arm_cpuinfo(os.cpu_count() or 1))
        proc = self.rootfs / "proc"
        run(["mount", "-t", "proc", "proc", str(proc)])
        run(["mount", "--bind", str(cpuinfo), str(proc / "cpuinfo")])
        # onnxruntime's cpuinfo reads /sys/devices/system/cpu/{possible,present}; read-only is enough.
        run(["mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", str(self.rootfs / "sys")])

    def _network(self) -> None:
        routes = run(["ip", "-4", "route", "show", f"{HOST_ADDR}/{PREFIX}"], check=False).stdout
        if routes.strip():
            raise BoardError(
                f"{HOST_ADDR}/{PREFIX} is already routed on this host ({routes.strip()}); run 'down'"
            )
        run(["ip", "netns", "add", NETNS])
        run(["ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_BOARD, "netns", NETNS])
        run(["ip", "addr", "add", f"{HOST_ADDR}/{PREFIX}", "dev", VETH_HOST])
        run(["ip", "link", "set", VETH_HOST, "up"])
        run(["ip", "-n", NETNS, "addr", "add", f"{BOARD_ADDR}/{PREFIX}", "dev", VETH_BOARD])
        run(["ip", "-n", NETNS, "link", "set", VETH_BOARD, "up"])
        run(["ip", "-n", NETNS, "link", "set", "lo", "up"])

    def _start_sshd(self) -> None:
        (self.rootfs / "run" / "sshd").mkdir(parents=True, exist_ok=True)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "QEMU_CPU": QEMU_CPU, "LANG": "C.UTF-8"}
        run(
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

    # --- the command line -----------------------------------------------------------------------

    @classmethod
    def _add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super()._add_arguments(parser)
        parser.add_argument("--cache", type=Path, default=None, help="cache dir (default /var/cache/nas-arm64)")

    @classmethod
    def _from_options(cls, args: argparse.Namespace) -> Arm64Board:
        return cls(args.cache)

    def _act(self, action: str) -> None:
        if action == "build":
            print(json.dumps({"build_seconds": round(self.build(), 1)}))
        else:
            super()._act(action)

    def _up_report(self) -> dict[str, Any]:
        """``up``'s info and how long it took: a cold build takes minutes, a cached one seconds."""
        started = time.monotonic()
        info = self.up()
        info["up_seconds"] = round(time.monotonic() - started, 1)
        return info


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
        run(["rm", "-rf", "--one-file-system", "--", str(path)], timeout=600)


if __name__ == "__main__":
    sys.exit(Arm64Board.main())
