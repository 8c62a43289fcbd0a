"""Complex arithmetic for the FFT layers, in two interchangeable representations.

The Toeplitz-like product is written once (``nas.layers.toeplitz``) against a tiny set of
operations -- ``fft``, ``ifft``, ``mul``, ``from_real``, ``real`` -- provided by two backends:

- :data:`NATIVE` works on torch complex tensors. It is what training uses: fast in eager mode and
  autograd flows through ``torch.fft``.
- :data:`PAIRS` works on real tensors holding the real and imaginary parts as two planes (a
  dimension of size 2 before the last). No complex tensor reaches any op but the FFTs themselves
  (``view_as_complex`` right before, ``view_as_real`` right after), which is the shape
  ``torch.onnx.export(dynamo=True)`` turns into ONNX ``DFT`` nodes.

Every product in the layer multiplies data by a constant (a spectrum or a twiddle vector). The
constant operand of ``mul`` is *prepared* once with ``prepare``: a complex tensor for
:data:`NATIVE`, and for :data:`PAIRS` the two real tensors ``(A, B)`` with ``z * c == z * A +
swap(z) * B`` -- two multiplies and an add in the exported graph instead of splitting and
re-stacking the planes.

Index dimensions from the front (``X[:, None]``, ``.sum(2)``) so the same code is valid for both
representations; the plane representation only adds a dimension of size 2 before the last.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["NATIVE", "PAIRS", "NativeOps", "PairOps", "complex_dtype", "twiddle"]


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


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype matching a real one (float32 -> complex64, float64 -> complex128)."""
    return torch.promote_types(dtype, torch.complex64)


def twiddle(n: int, dtype: torch.dtype, device: torch.device | str | None = None, inverse: bool = False) -> Tensor:
    """``eta**k`` for ``k < n`` with ``eta = exp(i pi / n)`` (its conjugate if ``inverse``), complex.

    ``dtype`` is the real dtype of the layer; the result is the matching complex dtype. Computed in
    float64 and cached per (n, dtype, device): it depends on nothing else.
    """
    device = torch.device("cpu" if device is None else device)
    if torch.compiler.is_compiling():  # never cache a traced (fake) tensor
        return _twiddle(n, inverse, dtype, device)
    return _twiddle_cached(n, inverse, dtype, device)


class NativeOps:
    """Complex tensors, ``torch.fft`` directly. For training and eager inference."""

    @staticmethod
    def prepare(c: Tensor) -> Tensor:
        """A complex constant in the form :meth:`mul` takes (here: itself)."""
        return c

    @staticmethod
    def prepare_scale(c: Tensor) -> Tensor:
        """A complex constant in the form :meth:`from_real` takes (here: itself)."""
        return c

    @staticmethod
    def from_real(x: Tensor, c: Tensor) -> Tensor:
        """``x * c`` for a real ``x`` and a complex ``c``: a complex tensor."""
        return x * c

    @staticmethod
    def mul(z: Tensor, c: Tensor) -> Tensor:
        return z * c

    @staticmethod
    def fft(z: Tensor) -> Tensor:
        return torch.fft.fft(z)

    @staticmethod
    def ifft(z: Tensor) -> Tensor:
        return torch.fft.ifft(z)

    @staticmethod
    def real(z: Tensor) -> Tensor:
        return z.real


class PairOps:
    """Real tensors holding complex numbers as planes: ``z[..., 0, :]`` real, ``z[..., 1, :]`` imaginary.

    Complex dtypes appear only inside :meth:`fft` / :meth:`ifft`, which interleave the planes into
    the (real, imag) pairs ONNX ``DFT`` reads and back (two ``Transpose`` nodes). Planes keep every
    elementwise op on contiguous rows of length n: onnxruntime runs those several times faster than
    ops that broadcast over, or swap within, a trailing pair axis.
    """

    @staticmethod
    def prepare(c: Tensor) -> tuple[Tensor, Tensor]:
        """``(A, B) = ([re c, re c], [-im c, im c])`` as planes, so that ``z * c == z * A + swap(z) * B``."""
        a = torch.stack([c.real, c.real], -2).contiguous()
        b = torch.stack([-c.imag, c.imag], -2).contiguous()
        return a, b

    @staticmethod
    def prepare_scale(c: Tensor) -> Tensor:
        """A complex constant in the form :meth:`from_real` takes: ``[re c, im c]`` as planes."""
        return torch.stack([c.real, c.imag], -2).contiguous()

    @staticmethod
    def from_real(x: Tensor, c: Tensor) -> Tensor:
        """``x * c`` for a real ``x`` of shape ``(..., n)``: planes of shape ``(..., 2, n)``."""
        return x.unsqueeze(-2) * c

    @staticmethod
    def mul(z: Tensor, c: tuple[Tensor, Tensor]) -> Tensor:
        a, b = c
        return z * a + PairOps.swap(z) * b

    @staticmethod
    def swap(z: Tensor) -> Tensor:
        """(real, imag) -> (imag, real)."""
        return torch.flip(z, dims=(-2,))

    @staticmethod
    def fft(z: Tensor) -> Tensor:
        return PairOps._dft(z, torch.fft.fft)

    @staticmethod
    def ifft(z: Tensor) -> Tensor:
        return PairOps._dft(z, torch.fft.ifft)

    @staticmethod
    def _dft(z: Tensor, transform: Callable[[Tensor], Tensor]) -> Tensor:
        pairs = z.transpose(-1, -2).contiguous()
        return torch.view_as_real(transform(torch.view_as_complex(pairs))).transpose(-1, -2)

    @staticmethod
    def real(z: Tensor) -> Tensor:
        return z[..., 0, :]


NATIVE = NativeOps()
PAIRS = PairOps()
