"""Low-rank linear layers: ``W = U V`` with U of shape (out, k) and V of shape (k, in)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.layers.dense import check_form

__all__ = ["LowRank"]


class LowRank(nn.Module):
    """Linear layer whose weight is ``u @ v``, of rank at most ``rank``: ``rank (in + out)`` parameters.

    Computed as two thin products, ``x -> x v^T -> (x v^T) u^T + bias``. ``v`` is initialised like
    ``nn.Linear(in_features, rank)`` and ``u`` with variance ``1 / rank``, so the entries of
    :meth:`to_dense` have ``nn.Linear``'s default variance ``1 / (3 in_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"features must be positive, got {in_features} -> {out_features}")
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.u = nn.Parameter(torch.empty(out_features, rank, **factory))
        self.v = nn.Parameter(torch.empty(rank, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.v, -bound, bound)
        nn.init.uniform_(self.u, -math.sqrt(3.0 / self.rank), math.sqrt(3.0 / self.rank))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(F.linear(x, self.v), self.u, self.bias)

    def to_dense(self) -> Tensor:
        """The effective weight ``u @ v``, shape ``(out_features, in_features)``."""
        return self.u @ self.v

    def deployable(self, form: str) -> nn.Module:
        """Itself: two ``MatMul``/``Gemm`` nodes in either deployed form."""
        check_form(form)
        return self

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"rank={self.rank}, bias={self.bias is not None}"
        )
