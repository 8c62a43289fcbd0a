"""Complex arithmetic for the training-time FFT layer.

The Toeplitz-like product is written (:func:`nas.layers.toeplitz.toeplitz_apply`) against the
small set of operations of :class:`ComplexOps`; :data:`NATIVE` implements them on torch complex
tensors and ``torch.fft``: fast in eager mode, and autograd flows through it. (The deployed forms
are written against :mod:`nas.layers.ops` instead, so that the same code builds their ONNX graph.)

Every product in the layer multiplies data by a constant (a spectrum or a twiddle vector), so the
constant operand of :meth:`ComplexOps.mul` is *prepared* once.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["NATIVE", "ComplexOps", "NativeOps", "complex_dtype", "twiddle"]


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype matching a real one (float32 -> complex64, float64 -> complex128)."""
    return torch.promote_types(dtype, torch.complex64)


def twiddle(n: int, dtype: torch.dtype, device: torch.device | str | None = None, inverse: bool = False) -> Tensor:
    """``eta**k`` for ``k < n`` with ``eta = exp(i pi / n)`` (its conjugate if ``inverse``), complex.

    ``dtype`` is the real dtype of the layer; the result has the matching complex dtype. Computed in
    float64 and cached per (n, dtype, device): it depends on nothing else.
    """
    device = torch.device("cpu" if device is None else device)
    if torch.compiler.is_compiling():  # never cache a traced (fake) tensor
        return _twiddle(n, inverse, dtype, device)
    return _twiddle_cached(n, inverse, dtype, device)


def _twiddle(n: int, inverse: bool, dtype: torch.dtype, device: torch.device) -> Tensor:
    angle = torch.arange(n, dtype=torch.float64, device=device) * (math.pi / n)
    if inverse:
        angle = -angle
    return torch.polar(torch.ones_like(angle), angle).to(complex_dtype(dtype))


@functools.lru_cache(maxsize=64)
def _twiddle_cached(n: int, inverse: bool, dtype: torch.dtype, device: torch.device) -> Tensor:
    # A normal tensor even when first asked for under inference_mode: training saves it for backward.
    with torch.inference_mode(False), torch.no_grad():
        return _twiddle(n, inverse, dtype, device)


class ComplexOps:
    """The operations the FFT layers are written against; "complex" means the backend's form."""

    #: Whether :meth:`fft_real` keeps only the n // 2 + 1 non-redundant bins.
    onesided: bool

    def prepare(self, c: Tensor) -> Any:
        """A complex constant (a torch complex tensor) in the form :meth:`mul` takes."""
        raise NotImplementedError

    def prepare_scale(self, c: Tensor) -> Any:
        """A complex constant in the form :meth:`from_real` takes."""
        raise NotImplementedError

    def mul(self, z: Any, c: Any) -> Any:
        """``z * c`` for complex ``z`` and a prepared constant ``c``."""
        raise NotImplementedError

    def mul_(self, z: Any, c: Any) -> Any:
        """:meth:`mul`, reusing ``z``'s memory where allowed; ``z`` must be a temporary of the caller."""
        raise NotImplementedError

    def from_real(self, x: Tensor, c: Any) -> Any:
        """``x * c`` for real ``x`` and a constant prepared with :meth:`prepare_scale`."""
        raise NotImplementedError

    def real(self, z: Any) -> Tensor:
        raise NotImplementedError

    def pack_halves(self, x: Tensor) -> Any:
        """Real ``(..., 2m)`` to complex ``(..., m)``: first half the real parts, second the imaginary."""
        raise NotImplementedError

    def unpack_halves(self, z: Any) -> Tensor:
        """Inverse of :meth:`pack_halves`."""
        raise NotImplementedError

    def fft(self, z: Any) -> Any:
        raise NotImplementedError

    def ifft(self, z: Any) -> Any:
        raise NotImplementedError

    def fft_real(self, x: Tensor) -> Any:
        """The spectrum of a real ``x`` (one-sided if :attr:`onesided`)."""
        raise NotImplementedError

    def ifft_real(self, z: Any, n: int) -> Tensor:
        """The real signal of length ``n`` whose spectrum, as :meth:`fft_real` returns it, is ``z``."""
        raise NotImplementedError


class NativeOps(ComplexOps):
    """Torch complex tensors and ``torch.fft``; ``rfft``/``irfft`` for real signals."""

    onesided = True

    def prepare(self, c: Tensor) -> Tensor:
        return c

    def prepare_scale(self, c: Tensor) -> Tensor:
        return c

    def mul(self, z: Tensor, c: Tensor) -> Tensor:
        return z * c

    def mul_(self, z: Tensor, c: Tensor) -> Tensor:
        # In place unless backward needs the old z. Each fresh intermediate of a few MB costs page
        # faults (glibc hands large blocks back to the OS), so reusing one is measurably faster.
        if torch.is_grad_enabled() and c.requires_grad:
            return z * c
        return z.mul_(c)

    def from_real(self, x: Tensor, c: Tensor) -> Tensor:
        return x * c

    def real(self, z: Tensor) -> Tensor:
        return z.real

    def pack_halves(self, x: Tensor) -> Tensor:
        m = x.shape[-1] // 2
        return torch.complex(x[..., :m], x[..., m:])

    def unpack_halves(self, z: Tensor) -> Tensor:
        return torch.cat([z.real, z.imag], -1)

    def fft(self, z: Tensor) -> Tensor:
        return torch.fft.fft(z)

    def ifft(self, z: Tensor) -> Tensor:
        return torch.fft.ifft(z)

    def fft_real(self, x: Tensor) -> Tensor:
        return torch.fft.rfft(x)

    def ifft_real(self, z: Tensor, n: int) -> Tensor:
        return torch.fft.irfft(z, n=n)


NATIVE = NativeOps()
