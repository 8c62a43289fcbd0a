"""Linear layers the search chooses between: dense, low-rank and Toeplitz-like.

All three share ``nn.Linear``'s interface (:class:`~nas.layers.base.LinearLayer`: ``in_features``,
``out_features``, ``bias``, ``device``/``dtype``) plus ``to_dense()`` (the effective weight) and
``deployable(form)`` (a module computing the same function in a deployed form that
:mod:`nas.export` writes to ONNX). :func:`deploy` applies the latter to a whole model. Nothing
here imports the search: :mod:`nas.spec` builds on :data:`KINDS` and :data:`FORMS`.
"""

from __future__ import annotations

import importlib
from typing import Any

from nas.layers.forms import FORMS, KINDS, check_form

__all__ = [
    "FORMS", "KINDS", "Dense", "DeployedToeplitz", "LinearLayer", "LowRank", "ToeplitzFFT", "ToeplitzLike",
    "ToeplitzMM", "check_form", "deploy", "make_layer",
]  # fmt: skip

# The layers need torch; load them on first use so that nas.spec (plain data) stays light.
_HOMES = {
    "Dense": "dense", "LowRank": "lowrank", "ToeplitzLike": "toeplitz", "LinearLayer": "base",
    "DeployedToeplitz": "deployed", "ToeplitzFFT": "deployed", "ToeplitzMM": "deployed",
    "deploy": "build", "make_layer": "build",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"nas.layers.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'nas.layers' has no attribute {name!r}")
