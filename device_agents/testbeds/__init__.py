"""Testbeds: real SSH devices on this machine, for the tests and for users without hardware.

* ``loopback``: a real sshd on 127.0.0.1 with a dedicated user and a venv (x86_64, fast).
* ``arm64``: an emulated aarch64 board (qemu-user, Debian arm64 root filesystem, its own sshd in a
  network namespace). Slow, but the code paths of a real ARM device.

Both need root; both are run as ``python -m device_agents.testbeds.NAME up|down|status``.
"""
