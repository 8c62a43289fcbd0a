"""``nas.load_model``: a bundle's trained PyTorch model, rebuilt from ``arch.json`` and ``model.pt``.

The weights file holds only a ``state_dict``, loaded with ``weights_only=True`` (no pickled code
runs), so the architecture comes from ``arch.json``; weights of another architecture are refused with
a message naming both files and the architecture, instead of PyTorch's list of mismatched keys.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from nas.model import build_model
from nas.spec import ArchSpec


def load_model(arch_path: str | Path, weights_path: str | Path) -> nn.Module:
    """The trained model of a bundle: ``arch.json`` rebuilt by ``build_model``, ``model.pt`` loaded.

    Returns the training-time form (in eval mode, on the CPU); ``nas.model.deployed(model, spec)``
    gives the form that ``model.onnx`` holds. Both compute the same function.
    """
    spec = ArchSpec.from_json(Path(arch_path).read_text())
    model = build_model(spec)
    state = torch.load(Path(weights_path), map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{weights_path} does not hold weights for the architecture in {arch_path} "
                         f"({spec.code}, {spec.widths}): {str(exc).splitlines()[0]}") from exc
    return model.eval()
