"""Hardware-aware architecture search over dense, low-rank and Toeplitz-like layers.

``nas.load_model(arch_path, weights_path)`` rebuilds the trained model of a ``nas pick`` bundle.
It is imported on first use, so that ``import nas.spec`` and friends stay light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_model"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from nas.bundle import load_model

        return load_model
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
