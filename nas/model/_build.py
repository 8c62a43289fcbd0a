"""Build the PyTorch model an architecture spec describes, and its deployed forms."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from nas.layers import deploy, make_layer
from nas.spec import ArchSpec

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def build_model(spec: ArchSpec, seed: int | None = None) -> nn.Sequential:
    """An MLP: each spec layer, with the activation between layers (none after the classifier).

    With ``seed`` the initial weights are a function of the seed alone, so the same spec exports to
    the same ONNX bytes and hits the measurement cache.
    """
    generator_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        modules: list[nn.Module] = []
        in_features = spec.in_features
        for index, layer in enumerate(spec.layers):
            modules.append(make_layer(layer.kind, in_features, layer.width, layer.rank))
            if index < len(spec.layers) - 1:
                modules.append(ACTIVATIONS[spec.activation]())
            in_features = layer.width
        return nn.Sequential(*modules)
    finally:
        if seed is not None:
            torch.random.set_rng_state(generator_state)


def spec_seed(spec: ArchSpec) -> int:
    """A seed derived from the architecture, for reproducible untrained models."""
    return int(hashlib.sha256(spec.to_json().encode()).hexdigest()[:8], 16)


def deployed(model: nn.Module, spec: ArchSpec) -> nn.Module:
    """The model in the spec's deployed form ("fft"/"fftmm" keep the generators' spectra, "dense" materialises)."""
    form = spec.form
    if form == "mixed":
        raise ValueError("per-layer deployed forms are not supported yet; use ArchSpec.with_form")
    return model if form == "-" else deploy(model, form)
