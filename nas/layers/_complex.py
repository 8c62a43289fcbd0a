"""Complex arithmetic for the FFT layers, in two interchangeable representations.

The Toeplitz-like product is written once (:func:`nas.layers.toeplitz.toeplitz_apply`) against the
small set of operations of :class:`ComplexOps`, implemented twice:

- :data:`NATIVE` works on torch complex tensors and ``torch.fft``. Training uses it: fast in eager
  mode, and autograd flows through it.
- :data:`PAIRS` works on real tensors holding the real and imaginary parts as two *planes* (a
  dimension of size 2 before the last). No complex tensor reaches any op but the FFTs themselves
  (``view_as_complex`` right before, ``view_as_real`` right after): the shape
  ``torch.onnx.export(dynamo=True)`` turns into ONNX ``DFT`` nodes.

Every product in the layer multiplies data by a constant (a spectrum or a twiddle vector), so the
constant operand of :meth:`ComplexOps.mul` is *prepared* once: a complex tensor for
:data:`NATIVE`; for :data:`PAIRS` the two real tensors ``(A, B)`` with ``z * c == z * A +
swap(z) * B`` -- two multiplies and an add in the exported graph instead of splitting and
re-stacking the planes.

Index dimensions from the front (``z[:, None]``, ``.sum(2)``) so the same code is valid for both
representations; planes only add a dimension of size 2 before the last.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["NATIVE", "PAIRS", "ComplexOps", "NativeOps", "PairOps", "complex_dtype", "twiddle"]


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


class PairOps(ComplexOps):
    """Real tensors with complex numbers as planes: ``z[..., 0, :]`` real, ``z[..., 1, :]`` imaginary.

    :meth:`fft` and :meth:`ifft` interleave the planes into the (real, imag) pairs ONNX ``DFT``
    reads and back (``Transpose`` nodes that onnxruntime's optimiser may move or cancel); every
    other op works on contiguous rows. Spectra are full: one-sided DFTs save nothing in
    onnxruntime 1.32, whose real-input DFT costs as much as the complex one.
    """

    onesided = False

    def prepare(self, c: Tensor) -> tuple[Tensor, Tensor]:
        """``(A, B) = ([re c, re c], [-im c, im c])`` as planes: ``z * c == z * A + swap(z) * B``."""
        a = torch.stack([c.real, c.real], -2).contiguous()
        b = torch.stack([-c.imag, c.imag], -2).contiguous()
        return a, b

    def prepare_scale(self, c: Tensor) -> Tensor:
        """``[re c, im c]`` as planes."""
        return torch.stack([c.real, c.imag], -2).contiguous()

    def mul(self, z: Tensor, c: tuple[Tensor, Tensor]) -> Tensor:
        a, b = c
        return z * a + self.swap(z) * b

    def mul_(self, z: Tensor, c: tuple[Tensor, Tensor]) -> Tensor:
        return self.mul(z, c)  # exported graphs stay functional

    @staticmethod
    def swap(z: Tensor) -> Tensor:
        """(real, imag) -> (imag, real)."""
        return torch.flip(z, dims=(-2,))

    def from_real(self, x: Tensor, c: Tensor) -> Tensor:
        return x.unsqueeze(-2) * c

    def real(self, z: Tensor) -> Tensor:
        return z[..., 0, :]

    def pack_halves(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (2, x.shape[-1] // 2))  # the halves are the planes: a reshape

    def unpack_halves(self, z: Tensor) -> Tensor:
        return z.flatten(-2)

    def fft(self, z: Tensor) -> Tensor:
        return self._dft(z, torch.fft.fft)

    def ifft(self, z: Tensor) -> Tensor:
        return self._dft(z, torch.fft.ifft)

    def fft_real(self, x: Tensor) -> Tensor:
        return torch.view_as_real(torch.fft.fft(x)).transpose(-1, -2)

    def ifft_real(self, z: Tensor, n: int) -> Tensor:
        return self.real(self.ifft(z))

    @staticmethod
    def _dft(z: Tensor, transform: Callable[[Tensor], Tensor]) -> Tensor:
        pairs = z.transpose(-1, -2).contiguous()
        return torch.view_as_real(transform(torch.view_as_complex(pairs))).transpose(-1, -2)


NATIVE = NativeOps()
PAIRS = PairOps()
