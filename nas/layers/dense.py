"""The dense baseline: ``nn.Linear`` with the interface every layer here shares."""

from __future__ import annotations

from torch import Tensor, nn

from nas.spec import FORMS

__all__ = ["Dense", "check_form"]


class Dense(nn.Linear):
    """``nn.Linear`` plus :meth:`to_dense` and :meth:`deployable`, like the structured layers."""

    def to_dense(self) -> Tensor:
        """The weight, shape ``(out_features, in_features)``."""
        return self.weight

    def deployable(self, form: str) -> nn.Module:
        """Itself: a dense layer exports as a ``Gemm`` in either deployed form."""
        check_form(form)
        return self


def check_form(form: str) -> None:
    """Raise ``ValueError`` unless ``form`` is a deployed form ("fft" or "dense")."""
    if form not in FORMS:
        raise ValueError(f"deployed form {form!r} is not one of {', '.join(FORMS)}")
