"""Reading a small text file a user names: bounded in size, UTF-8, every problem one line."""

from __future__ import annotations

from pathlib import Path


def read_text(path: Path, limit: int) -> str:
    """The file's text, or ValueError saying in one line why it cannot be read.

    At most ``limit`` bytes are read, so a device file (``/dev/zero``) or a huge file is refused
    instead of filling memory.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except IsADirectoryError:
        raise ValueError("is a folder, not a file") from None
    except OSError as exc:
        raise ValueError(f"cannot be read: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise ValueError(f"is larger than {limit // 1024} KiB; is it the right file?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from None
