"""The names of layer kinds and deployed forms: the layers define them, :mod:`nas.spec` builds on them.

Plain data without torch, so that reading specs (reports, the CLI) does not import it.
"""

from __future__ import annotations

__all__ = ["FORMS", "KINDS", "check_form"]

#: Layer kinds the search chooses between.
KINDS: tuple[str, ...] = ("dense", "lowrank", "toeplitz")
#: Deployed forms of a Toeplitz-like layer: ONNX ``DFT`` nodes, FFTs as matrix products, a dense ``Gemm``.
FORMS: tuple[str, ...] = ("fft", "fftmm", "dense")


def check_form(form: str) -> None:
    """Raise ``ValueError`` unless ``form`` is one of :data:`FORMS`."""
    if form not in FORMS:
        raise ValueError(f"deployed form {form!r} is not one of {', '.join(FORMS)}")
