"""A package's public face, imported on first use: ``from nas.study import TrialData`` loads the
record module only, not the engine and torch behind it, and ``from device_agents import AgentError``
not paramiko and pydantic, so light commands (``nas study status``, ``--help``) stay light while every
caller imports from the package, never from its inner files. Here, in the lowest layer, so that
``device_agents`` and every ``nas`` package share it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_face(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps each public name to the
    private module (relative to the package) that defines it."""

    def attribute(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def names() -> list[str]:
        return sorted(exports)

    return attribute, names
