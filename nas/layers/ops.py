"""The few tensor operations the deployed forms are written against, so each is written once.

A deployed layer's ``compute(ops, x)`` runs in PyTorch with :class:`TorchOps` (its ``forward``)
and is written to ONNX by an exporter implementing the same :class:`TensorOps` with graph nodes
(:mod:`nas.export`): the exported graph is the PyTorch computation, operation for operation,
which the tests check in onnxruntime. Shapes passed to :meth:`TensorOps.reshape` use -1 for the
batch dimension; axes are non-negative (ranks are static).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

__all__ = ["TensorOps", "TorchOps"]


class TensorOps(Protocol):
    def constant(self, name: str) -> Any:
        """The module's buffer ``name`` (a tensor, or the ONNX initializer holding it)."""

    def reshape(self, x: Any, shape: Sequence[int]) -> Any: ...

    def transpose(self, x: Any, perm: Sequence[int]) -> Any: ...

    def matmul(self, a: Any, b: Any) -> Any: ...

    def mul(self, a: Any, b: Any) -> Any: ...

    def add(self, a: Any, b: Any) -> Any: ...

    def sub(self, a: Any, b: Any) -> Any: ...

    def concat(self, xs: Sequence[Any], axis: int) -> Any: ...

    def sum(self, x: Any, axis: int) -> Any:
        """Sum over ``axis``, dropping it."""

    def slice_last(self, x: Any, stop: int) -> Any:
        """``x[..., :stop]``."""

    def dft(self, x: Any, axis: int, inverse: bool) -> Any:
        """ONNX ``DFT`` semantics: ``x`` ends in a dimension of 1 (real) or 2 (real, imag); full spectrum out."""


class TorchOps:
    """:class:`TensorOps` on PyTorch tensors; ``constant`` reads ``module``'s buffers."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def constant(self, name: str) -> Tensor:
        return self.module.get_buffer(name)

    def reshape(self, x: Tensor, shape: Sequence[int]) -> Tensor:
        return x.reshape(*shape)

    def transpose(self, x: Tensor, perm: Sequence[int]) -> Tensor:
        return x.permute(*perm)

    def matmul(self, a: Tensor, b: Tensor) -> Tensor:
        return a @ b

    def mul(self, a: Tensor, b: Tensor) -> Tensor:
        return a * b

    def add(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def sub(self, a: Tensor, b: Tensor) -> Tensor:
        return a - b

    def concat(self, xs: Sequence[Tensor], axis: int) -> Tensor:
        return torch.cat(list(xs), axis)

    def sum(self, x: Tensor, axis: int) -> Tensor:
        return x.sum(axis)

    def slice_last(self, x: Tensor, stop: int) -> Tensor:
        return x[..., :stop]

    def dft(self, x: Tensor, axis: int, inverse: bool) -> Tensor:
        z = x[..., 0] if x.shape[-1] == 1 else torch.view_as_complex(x.contiguous())
        z = (torch.fft.ifft if inverse else torch.fft.fft)(z, dim=axis)
        return torch.view_as_real(z)
