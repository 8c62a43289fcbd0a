"""Build a layer by kind, and swap a model's Toeplitz-like layers for a deployed form."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

from nas.layers.dense import Dense
from nas.layers.forms import KINDS, check_form
from nas.layers.lowrank import LowRank
from nas.layers.toeplitz import ToeplitzLike

__all__ = ["deploy", "make_layer"]


def make_layer(kind: str, in_features: int, out_features: int, rank: int | None = None, bias: bool = True) -> nn.Module:
    """A layer of ``kind`` ("dense", "lowrank" or "toeplitz"); ``rank`` is k or the displacement rank r."""
    if kind not in KINDS:
        raise ValueError(f"layer kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "dense":
        if rank is not None:
            raise ValueError(f"a dense layer takes no rank (got rank={rank})")
        return Dense(in_features, out_features, bias=bias)
    if rank is None:
        raise ValueError(f"a {kind} layer needs a rank")
    if kind == "lowrank":
        return LowRank(in_features, out_features, bias, rank=rank)
    return ToeplitzLike(in_features, out_features, bias, displacement_rank=rank)


def deploy(model: nn.Module, form: str) -> nn.Module:
    """A deep copy of ``model`` with every Toeplitz-like layer replaced by its ``deployable(form)``.

    ``form`` is one of :data:`FORMS`: "fft" (ONNX ``DFT``), "fftmm" (FFTs as small matrix
    products) or "dense" (materialised, ``Gemm``). The copy is in eval mode; ``model`` is left
    untouched.
    """
    check_form(form)
    with _one_thread():
        if isinstance(model, ToeplitzLike):
            return model.deployable(form).eval()
        model = copy.deepcopy(model)
        _replace(model, form)
    return model.eval()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Deploy on one thread: torch's FFTs and matrix products round differently with different
    thread counts, and the deployed weights (so the exported bytes) must be the same in every process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _replace(module: nn.Module, form: str) -> None:
    for name, child in module.named_children():
        if isinstance(child, ToeplitzLike):
            setattr(module, name, child.deployable(form))
        else:
            _replace(child, form)
