"""Inference-only deployed forms of a Toeplitz-like layer, written once against :mod:`nas.layers.ops`.

Both hold precomputed constants (the generators' spectra, the twiddles, the transform matrices) as
buffers -- O(r n) numbers per block, never the n x n matrix -- and compute
``M x = ifft( sum_j fft(g_j) * fft( conj(D) * ifft( fft(D h_j) * fft(D x) ) ) )`` (see
:mod:`nas.layers.toeplitz`, including the half-length skew product for even n):

- :class:`ToeplitzFFT` ("fft"): four ONNX ``DFT`` nodes; complex numbers as a trailing
  (real, imag) dimension, which is what ``DFT`` reads.
- :class:`ToeplitzMM` ("fftmm"): every transform planned by :mod:`nas.layers.fftmm` as small
  matrix products, real and imaginary parts as separate tensors; only ``MatMul``, ``Mul``,
  ``Add``/``Sub``, ``Reshape`` and one ``Concat``, so it runs where ``DFT`` is missing or slow.

``forward`` runs ``compute`` with :class:`~nas.layers.ops.TorchOps`; :mod:`nas.export` runs the
same ``compute`` to write the ONNX graph. Their numbers are buffers: count parameters on the
:class:`~nas.layers.ToeplitzLike`.
"""

from __future__ import annotations

import functools
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
    def from_spectra(cls, out_features: int, hh: Tensor, gg: Tensor, bias: Tensor | None,
                     dtype: torch.dtype) -> DeployedToeplitz:  # fmt: skip
        """The layer with the full spectra ``hh``, ``gg`` (shape ``(blocks, r, ...)``, complex128, from
        :func:`~nas.layers.toeplitz.toeplitz_spectra`); every constant is computed in float64 and
        rounded once to ``dtype``."""
        blocks, rank, n = gg.shape
        constants = cls.constants(n, hh.cpu().numpy(), gg.cpu().numpy())
        constants = {name: torch.as_tensor(np.ascontiguousarray(value), dtype=dtype, device=gg.device)
                     for name, value in constants.items()}  # fmt: skip
        return cls(n, out_features, blocks, rank, constants, bias)

    @staticmethod
    def constants(n: int, hh: np.ndarray, gg: np.ndarray) -> dict[str, np.ndarray]:
        """Named real arrays from the spectra ``hh`` (of D h, or of the packed halves) and ``gg`` (of g)."""
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


class ToeplitzFFT(DeployedToeplitz):
    """The "fft" form: ONNX ``DFT`` nodes on ``(..., n, 2)`` (real, imag) data.

    A product with a complex constant c is ``z * A + swap(z) * B`` with ``A = (re c, re c)``,
    ``B = (-im c, im c)`` and ``swap`` a ``MatMul`` by ``[[0, 1], [1, 0]]``.
    """

    form = "fft"

    @staticmethod
    def constants(n: int, hh: np.ndarray, gg: np.ndarray) -> dict[str, np.ndarray]:
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
    """The "fftmm" form: each transform a :func:`nas.layers.fftmm.plan`, the spectra in factorised order.

    Four planned transforms per layer: the input's (length n/2 from packed halves for even n, with
    the twiddle D folded in), the skew products' inverse (D's conjugate folded in), the circulant
    products' forward (real input) and the output's inverse (real output only).
    """

    form = "fftmm"

    @staticmethod
    @functools.lru_cache(maxsize=32)
    def plans(n: int) -> dict[str, fftmm.Transform]:
        half = n // 2
        if n % 2:
            skew = {"x": fftmm.plan(n, scale=_eta(n), real_input=True),
                    "u": fftmm.plan(n, inverse=True, scale=_eta(n, inverse=True), real_output=True)}  # fmt: skip
        else:
            skew = {"x": fftmm.plan(half, scale=_eta(n), packed=True),
                    "u": fftmm.plan(half, inverse=True, scale=_eta(n, inverse=True))}  # fmt: skip
        return {**skew, "v": fftmm.plan(n, real_input=True), "y": fftmm.plan(n, inverse=True, real_output=True)}

    @classmethod
    def constants(cls, n: int, hh: np.ndarray, gg: np.ndarray) -> dict[str, np.ndarray]:
        plans = cls.plans(n)
        out = {}
        for name, transform in plans.items():
            for index, step in enumerate(transform.steps):
                out[f"{name}{index}_re"], out[f"{name}{index}_im"] = step.matrix.real, step.matrix.imag
        hh = hh[..., fftmm.factorised_order(plans["x"].factors)]
        gg = gg[..., fftmm.factorised_order(plans["v"].factors)]
        for name, value in (("hh", hh), ("gg", gg)):
            out[f"{name}_re"], out[f"{name}_im"] = value.real, value.imag
        return out

    def compute(self, ops: TensorOps, x: Any) -> Any:
        n, blocks, r = self.in_features, self.blocks, self.displacement_rank
        plans = self.plans(n)
        re, im = self._transform(ops, "x", plans["x"], x, None, (1, 1))  # (b, 1, 1, length)
        re, im = _cmul(ops, re, im, ops.constant("hh_re"), ops.constant("hh_im"))  # (b, k, r, length)
        re, im = self._transform(ops, "u", plans["u"], re, im, (blocks, r))
        u = re if im is None else ops.concat([re, im], 3)  # even n: unpack the halves
        re, im = self._transform(ops, "v", plans["v"], u, None, (blocks, r))
        re, im = _cmul(ops, re, im, ops.constant("gg_re"), ops.constant("gg_im"))
        if r > 1:
            re, im = ops.sum(re, 2), ops.sum(im, 2)
        y, _ = self._transform(ops, "y", plans["y"], re, im, (blocks,))
        return self.finish(ops, y)

    @staticmethod
    def _transform(ops: TensorOps, name: str, transform: fftmm.Transform, re: Any, im: Any | None,
                   lead: tuple[int, ...]) -> tuple[Any, Any | None]:  # fmt: skip
        """Run a planned transform on rows of ``(re, im)`` (``im`` None: real); result ``(-1, *lead, n)``."""
        last = len(transform.steps) - 1
        for index, step in enumerate(transform.steps):
            mr, mi = ops.constant(f"{name}{index}_re"), ops.constant(f"{name}{index}_im")
            view = (-1, step.cols) if step.kind == "right" else (-1, step.rows, step.cols)
            re = ops.reshape(re, view)
            im = None if im is None else ops.reshape(im, view)
            if step.kind == "twiddle":
                re, im = _cmul(ops, re, im, mr, mi)
                continue

            def product(m: Any, z: Any, kind: str = step.kind) -> Any:
                return ops.matmul(m, z) if kind == "left" else ops.matmul(z, m)

            real_only = index == last and transform.real_output
            if im is None:
                re, im = product(mr, re), None if real_only else product(mi, re)
            elif real_only:
                re, im = ops.sub(product(mr, re), product(mi, im)), None
            else:
                re, im = (ops.sub(product(mr, re), product(mi, im)), ops.add(product(mr, im), product(mi, re)))
        shape = (-1, *lead, transform.n)
        return ops.reshape(re, shape), None if im is None else ops.reshape(im, shape)


def _cmul(ops: TensorOps, re: Any, im: Any, cr: Any, ci: Any) -> tuple[Any, Any]:
    """``(re + i im) * (cr + i ci)``."""
    return (ops.sub(ops.mul(re, cr), ops.mul(im, ci)), ops.add(ops.mul(re, ci), ops.mul(im, cr)))
