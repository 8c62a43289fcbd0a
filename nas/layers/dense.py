"""The dense baseline: ``nn.Linear``'s maths on the interface every layer here shares."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.layers.base import LinearLayer
from nas.layers.forms import check_form

__all__ = ["Dense"]


class Dense(LinearLayer):
    """``nn.Linear`` (same ``weight``/``bias`` parameters and initialisation) plus :meth:`to_dense`
    and :meth:`deployable`, like the structured layers."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **self._factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.reset_bias()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def to_dense(self) -> Tensor:
        """The weight, shape ``(out_features, in_features)``."""
        return self.weight

    def deployable(self, form: str) -> nn.Module:
        """Itself: a dense layer exports as a ``Gemm`` in every deployed form."""
        check_form(form)
        return self
