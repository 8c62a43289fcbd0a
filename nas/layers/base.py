"""What every linear layer here shares with ``nn.Linear``, in one place."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LinearLayer"]


class LinearLayer(nn.Module):
    """Base of the layers: ``in_features``, ``out_features``, an optional ``bias``, ``device``/``dtype``.

    Subclasses create their own parameters in ``__init__`` (after calling this one), fill them in
    :meth:`reset_parameters`, and implement ``forward``, :meth:`to_dense` and :meth:`deployable`.
    ``bias`` is a parameter of shape ``(out_features,)`` or, as in ``nn.Linear``, registered as
    ``None``. :meth:`extra_repr` lists the features, the names in :attr:`_repr_fields` and the bias.
    """

    _repr_fields: tuple[str, ...] = ()

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **ranks: int,
    ) -> None:
        """``ranks`` (``rank=k``, ``displacement_rank=r``) are checked to be positive and set as attributes."""
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"features must be positive, got {in_features} -> {out_features}")
        for name, value in ranks.items():
            if value < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1, got {value}")
            setattr(self, name, value)
        self.in_features = in_features
        self.out_features = out_features
        self._factory = {"device": device, "dtype": dtype}
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **self._factory))
        else:
            self.register_parameter("bias", None)

    def reset_bias(self) -> None:
        """``nn.Linear``'s bias initialisation: uniform in +-1/sqrt(in_features)."""
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def to_dense(self) -> Tensor:
        """The effective weight, shape ``(out_features, in_features)``: ``self(x) == x @ W.T + bias``."""
        raise NotImplementedError

    def deployable(self, form: str) -> nn.Module:
        """A module computing the same function in the deployed ``form`` (one of :data:`FORMS`)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        fields = [f"in_features={self.in_features}", f"out_features={self.out_features}"]
        fields += [f"{name}={getattr(self, name)}" for name in self._repr_fields]
        return ", ".join([*fields, f"bias={self.bias is not None}"])
