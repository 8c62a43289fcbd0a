"""Inference-only deployed forms of a Toeplitz-like layer, written once against :mod:`nas.layers.ops`.

Both hold precomputed constants (the generators' spectra, the twiddles, the transform matrices) as
buffers -- O(r n) numbers per block, never the n x n matrix -- and compute
``M x = ifft( sum_j fft(g_j) * fft( conj(D) * ifft( fft(D h_j) * fft(D x) ) ) )`` (see
:mod:`nas.layers.toeplitz`, including the half-length skew product for even n):

- :class:`ToeplitzFFT` ("fft"): four ONNX ``DFT`` nodes; complex numbers as a trailing
  (real, imag) dimension, which is what ``DFT`` reads.
- :class:`ToeplitzMM` ("fftmm"): the whole layer folded by :mod:`nas.layers.fftmm` into five
  ``MatMul`` s with constant matrices (O(r n sqrt n) numbers), plus ``Reshape``/``Transpose``; no
  ``DFT``, so it runs where ``DFT`` is missing or slow, and few nodes, so it is fast at n = 1024.

``forward`` runs ``compute`` with :class:`~nas.layers.ops.TorchOps`; :mod:`nas.export` runs the
same ``compute`` to write the ONNX graph. Their numbers are buffers: count parameters on the
:class:`~nas.layers.ToeplitzLike`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nas.layers import fftmm
from nas.layers.forms import check_form
from nas.layers.ops import TensorOps, TorchOps

__all__ = ["DeployedToeplitz", "ToeplitzFFT", "ToeplitzMM"]


class DeployedToeplitz(nn.Module):
    """Shared shell: features, constant buffers, bias, and ``forward`` through ``compute``."""

    form: str

    def __init__(self, in_features: int, out_features: int, blocks: int, rank: int,
                 constants: dict[str, Tensor], bias: Tensor | None) -> None:  # fmt: skip
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.blocks = blocks
        self.displacement_rank = rank
        for name, value in constants.items():
            self.register_buffer(name, value)
        self.register_buffer("bias", bias)

    @classmethod
    def from_generators(cls, out_features: int, g: Tensor, h: Tensor, bias: Tensor | None) -> DeployedToeplitz:
        """The deployed form of generators ``g``, ``h`` of shape ``(blocks, r, n)``: every constant is
        computed in float64 (numpy) and rounded once to their dtype."""
        blocks, rank, n = g.shape
        as_numpy = {"g": g.detach().double().cpu().numpy(), "h": h.detach().double().cpu().numpy()}
        constants = cls.constants(n, as_numpy["g"], as_numpy["h"])
        dtype = torch.empty((), dtype=g.dtype).numpy().dtype  # rounded by numpy: torch's float64 cast is slow
        constants = {name: torch.from_numpy(np.ascontiguousarray(value, dtype=dtype)).to(g.device)
                     for name, value in constants.items()}  # fmt: skip
        return cls(n, out_features, blocks, rank, constants, bias)

    @staticmethod
    def constants(n: int, g: np.ndarray, h: np.ndarray) -> dict[str, np.ndarray]:
        """Named real arrays (spectra, twiddles, transform matrices) from the generators."""
        raise NotImplementedError

    def compute(self, ops: TensorOps, x: Any) -> Any:
        """``self(x)`` for ``x`` of shape ``(batch, in_features)``, in ``ops``."""
        raise NotImplementedError

    def finish(self, ops: TensorOps, y: Any) -> Any:
        """Block outputs ``(batch, blocks, n)`` to the layer's output: stack, truncate, add the bias."""
        y = ops.reshape(y, (-1, self.blocks * self.in_features))
        if self.blocks * self.in_features != self.out_features:
            y = ops.slice_last(y, self.out_features)
        return y if self.bias is None else ops.add(y, ops.constant("bias"))

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        y = self.compute(TorchOps(self), x.reshape(-1, self.in_features))
        return y.reshape(*lead, self.out_features)

    def deployable(self, form: str) -> nn.Module:
        check_form(form)
        if form != self.form:
            raise ValueError(f"this layer is already deployed in the {self.form} form; deploy the ToeplitzLike instead")
        return self

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"displacement_rank={self.displacement_rank}, bias={self.bias is not None}")  # fmt: skip


def _eta(n: int, inverse: bool = False) -> complex:
    return complex(np.exp((-1j if inverse else 1j) * np.pi / n))


def skew_spectrum(v: np.ndarray) -> np.ndarray:
    """What ``Z_{-1}(v)`` is diagonalised by, for real ``v`` of length L along the last axis.

    ``fft(D v)`` with ``D = diag(eta^j)``, ``eta = exp(i pi / L)``, for odd L; for even L the
    half-length "right-angle" form ``fft(D[:L/2] (v_lo + i v_hi))`` (see :mod:`nas.layers.toeplitz`).
    """
    length = v.shape[-1]
    if length % 2:
        return np.fft.fft(v * _eta(length) ** np.arange(length))
    half = length // 2
    return np.fft.fft((v[..., :half] + 1j * v[..., half:]) * _eta(length) ** np.arange(half))


class ToeplitzFFT(DeployedToeplitz):
    """The "fft" form: ONNX ``DFT`` nodes on ``(..., n, 2)`` (real, imag) data.

    A product with a complex constant c is ``z * A + swap(z) * B`` with ``A = (re c, re c)``,
    ``B = (-im c, im c)`` and ``swap`` a ``MatMul`` by ``[[0, 1], [1, 0]]``.
    """

    form = "fft"

    @staticmethod
    def constants(n: int, g: np.ndarray, h: np.ndarray) -> dict[str, np.ndarray]:
        hh, gg = skew_spectrum(h), np.fft.fft(g)
        length = n if n % 2 else n // 2
        d_in = _eta(n) ** np.arange(length)
        d_out = np.conj(d_in)
        out = {"swap": np.array([[0.0, 1.0], [1.0, 0.0]]), "real": np.array([[1.0], [0.0]])}
        if n % 2:
            out["d_in"] = np.stack([d_in.real, d_in.imag], -1)  # x * d_in for real x: a broadcast Mul
        else:
            out.update(_pair("d_in", d_in))
        for name, value in (("d_out", d_out), ("hh", hh), ("gg", gg)):
            out.update(_pair(name, value))
        return out

    def _cmul(self, ops: TensorOps, z: Any, name: str) -> Any:
        swapped = ops.matmul(z, ops.constant("swap"))
        return ops.add(ops.mul(z, ops.constant(f"{name}_a")), ops.mul(swapped, ops.constant(f"{name}_b")))

    def compute(self, ops: TensorOps, x: Any) -> Any:
        n, blocks, r = self.in_features, self.blocks, self.displacement_rank
        if n % 2:
            z = ops.mul(ops.reshape(x, (-1, n, 1)), ops.constant("d_in"))  # D x, (b, n, 2)
            length = n
        else:  # lo + i hi: the halves are the real and imaginary parts
            length = n // 2
            z = self._cmul(ops, ops.transpose(ops.reshape(x, (-1, 2, length)), (0, 2, 1)), "d_in")
        xf = ops.reshape(ops.dft(z, 1, inverse=False), (-1, 1, 1, length, 2))
        u = self._cmul(ops, ops.dft(self._cmul(ops, xf, "hh"), 3, inverse=True), "d_out")  # (b, k, r, length, 2)
        if n % 2:
            u = ops.matmul(u, ops.constant("real"))  # (b, k, r, n, 1)
        else:
            u = ops.reshape(ops.transpose(u, (0, 1, 2, 4, 3)), (-1, blocks, r, n, 1))
        y = self._cmul(ops, ops.dft(u, 3, inverse=False), "gg")
        y = ops.reshape(y, (-1, blocks, n, 2)) if r == 1 else ops.sum(y, 2)
        y = ops.matmul(ops.dft(y, 2, inverse=True), ops.constant("real"))
        return self.finish(ops, y)


def _pair(name: str, c: np.ndarray) -> dict[str, np.ndarray]:
    return {f"{name}_a": np.stack([c.real, c.real], -1), f"{name}_b": np.stack([-c.imag, c.imag], -1)}


class ToeplitzMM(DeployedToeplitz):
    """The "fftmm" form: five matrix products (:func:`nas.layers.fftmm.layer_matrices`), 11-15 nodes.

    Batch-major data for the column products (one constant matrix on the left, broadcast over the
    batch); for the per-row products the batch moves next to the row (one ``Transpose`` each way),
    so each row's matrix meets all the batch's rows in one GEMM instead of one product per sample.
    """

    form = "fftmm"

    @staticmethod
    def constants(n: int, g: np.ndarray, h: np.ndarray) -> dict[str, np.ndarray]:
        return fftmm.layer_matrices(n, g, h)

    def compute(self, ops: TensorOps, x: Any) -> Any:
        n, blocks, r = self.in_features, self.blocks, self.displacement_rank
        s = fftmm.split(n)
        c, half = s.cols, s.half
        z = ops.matmul(ops.constant("left_in"), ops.reshape(x, (-1, s.rows, c)))  # (b, 2S, C)
        z = ops.transpose(ops.reshape(z, (-1, s.skew, 2 * c)), (1, 0, 2))  # (S, b, 2C)
        z = ops.matmul(z, ops.constant("rows_h"))  # (k r, S, b, 2C)
        z = ops.reshape(ops.transpose(z, (0, 2, 1, 3)), (blocks * r, -1, 2 * s.skew, c))
        z = ops.matmul(ops.constant("left_mid"), z)  # (k r, b, 2H, C)
        if r == 1:
            z = ops.transpose(ops.reshape(z, (blocks, -1, half, 2 * c)), (0, 2, 1, 3))  # (k, H, b, 2C)
        else:  # the r generators' rows side by side: the sum over r is in the product
            z = ops.transpose(ops.reshape(z, (blocks, r, -1, half, 2 * c)), (0, 3, 2, 1, 4))
            z = ops.reshape(z, (blocks, half, -1, r * 2 * c))
        z = ops.matmul(z, ops.constant("rows_g"))  # (k, H, b, 2C)
        z = ops.reshape(ops.transpose(z, (2, 0, 1, 3)), (-1, blocks, 2 * half, c))
        return self.finish(ops, ops.matmul(ops.constant("left_out"), z))  # (b, k, n / C, C)
