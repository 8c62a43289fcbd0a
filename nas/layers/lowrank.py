"""Low-rank linear layers: ``W = U V`` with U of shape (out, k) and V of shape (k, in)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.layers.base import LinearLayer
from nas.layers.forms import check_form

__all__ = ["LowRank"]


class LowRank(LinearLayer):
    """Linear layer whose weight is ``u @ v``, of rank at most ``rank``: ``rank (in + out)`` parameters.

    Computed as two thin products, ``x -> x v^T -> (x v^T) u^T + bias``. ``v`` is initialised like
    ``nn.Linear(in_features, rank)`` and ``u`` with variance ``1 / rank``, so the entries of
    :meth:`to_dense` have ``nn.Linear``'s default variance ``1 / (3 in_features)``.
    """

    _repr_fields = ("rank",)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rank: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype, rank=rank)
        self.u = nn.Parameter(torch.empty(out_features, rank, **self._factory))
        self.v = nn.Parameter(torch.empty(rank, in_features, **self._factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.v, -bound, bound)
        nn.init.uniform_(self.u, -math.sqrt(3.0 / self.rank), math.sqrt(3.0 / self.rank))
        self.reset_bias()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(F.linear(x, self.v), self.u, self.bias)

    def to_dense(self) -> Tensor:
        """The effective weight ``u @ v``, shape ``(out_features, in_features)``."""
        return self.u @ self.v

    def deployable(self, form: str) -> nn.Module:
        """Itself: two ``Gemm`` nodes in every deployed form."""
        check_form(form)
        return self
