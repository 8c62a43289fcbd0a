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
    def from_generators(cls, out_features: int, g: Tensor, h: Tensor, bias: Tensor | None) -> DeployedToeplitz:
        """The deployed form of generators ``g``, ``h`` of shape ``(blocks, r, n)``: every constant is
        computed in float64 (numpy) and rounded once to their dtype."""
        blocks, rank, n = g.shape
        as_numpy = {"g": g.detach().double().cpu().numpy(), "h": h.detach().double().cpu().numpy()}
        constants = cls.constants(n, as_numpy["g"], as_numpy["h"])
        constants = {name: torch.as_tensor(np.ascontiguousarray(value), dtype=g.dtype, device=g.device)
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
    """The "fftmm" form: each transform a :func:`nas.layers.fftmm.plan`, the spectra in factorised order.

    The skew-circulant products as in the "fft" form: the input's transform (length n/2 from packed
    halves for even n, the twiddle D folded in) and the products' inverse (D's conjugate folded in).
    For even n = 2m the circulant products ``Z_1(g) u`` then run at half length, by the Chinese
    remainder theorem on ``R[t]/(t^n - 1) = R[t]/(t^m - 1) x R[t]/(t^m + 1)``: with
    ``u± = u_lo ± u_hi`` and ``g± = g_lo ± g_hi``, ``y± = Z_{±1}(g±) u±`` (a cyclic product of
    length m, real input and output, and a negacyclic one, itself the half-length right-angle
    product) and ``y = [(y+ + y-) / 2, (y+ - y-) / 2]``. Since the skew inverse gives u as
    ``u_lo + i u_hi``, ``u±`` are one ``Add`` and one ``Sub``: half the matrix products of a
    length-n real transform pair, and no unpacking. Odd n transforms u at full length.
    """

    form = "fftmm"

    @staticmethod
    @functools.lru_cache(maxsize=32)
    def plans(n: int) -> dict[str, fftmm.Transform]:
        """The planned transforms by name: x, u (skew); v, y (odd n) or p, q, s, t (even n; cyclic and
        negacyclic halves)."""
        if n % 2:
            return {"x": fftmm.plan(n, scale=_eta(n), real_input=True),
                    "u": fftmm.plan(n, inverse=True, scale=_eta(n, inverse=True), real_output=True),
                    "v": fftmm.plan(n, real_input=True),
                    "y": fftmm.plan(n, inverse=True, real_output=True)}  # fmt: skip
        m = n // 2
        plans = {"x": fftmm.plan(m, scale=_eta(n), packed=True),
                 "u": fftmm.plan(m, inverse=True, scale=_eta(n, inverse=True)),
                 "p": fftmm.plan(m, real_input=True),
                 "q": fftmm.plan(m, inverse=True, real_output=True)}  # fmt: skip
        if m % 2:  # the negacyclic half in the textbook form
            plans["s"] = fftmm.plan(m, scale=_eta(m), real_input=True)
            plans["t"] = fftmm.plan(m, inverse=True, scale=_eta(m, inverse=True), real_output=True)
        else:
            plans["s"] = fftmm.plan(m // 2, scale=_eta(m), packed=True)
            plans["t"] = fftmm.plan(m // 2, inverse=True, scale=_eta(m, inverse=True))
        return plans

    @classmethod
    def constants(cls, n: int, g: np.ndarray, h: np.ndarray) -> dict[str, np.ndarray]:
        plans = cls.plans(n)
        out = {}
        for name, transform in plans.items():
            for index, step in enumerate(transform.steps):
                out[f"{name}{index}_re"], out[f"{name}{index}_im"] = step.matrix.real, step.matrix.imag
        spectra = {"hh": (skew_spectrum(h), "x")}
        if n % 2:
            spectra["gg"] = (np.fft.fft(g), "v")
        else:
            lo, hi = g[..., : n // 2], g[..., n // 2 :]
            spectra["gp"] = (np.fft.fft(lo + hi) / 2, "p")  # the 1/2 of the recombination, folded in
            spectra["gm"] = (skew_spectrum(lo - hi) / 2, "s")
        for name, (value, plan) in spectra.items():
            value = value[..., fftmm.factorised_order(plans[plan].factors)]
            out[f"{name}_re"], out[f"{name}_im"] = value.real, value.imag
        return out

    def compute(self, ops: TensorOps, x: Any) -> Any:
        n, blocks, r = self.in_features, self.blocks, self.displacement_rank
        plans = self.plans(n)
        re, im = self._transform(ops, "x", plans["x"], x, None, (1, 1))  # (b, 1, 1, length)
        re, im = self._product(ops, "hh", re, im, None)  # (b, k, r, length)
        re, im = self._transform(ops, "u", plans["u"], re, im, (blocks, r))
        if n % 2:
            y, _ = self._circulant(ops, "v", "y", "gg", re, plans)
            return self.finish(ops, y)
        plus, _ = self._circulant(ops, "p", "q", "gp", ops.add(re, im), plans)  # (b, k, m)
        re, im = self._circulant(ops, "s", "t", "gm", ops.sub(re, im), plans)
        minus = re if im is None else ops.concat([re, im], 2)  # even m: unpack the halves
        return self.finish(ops, ops.concat([ops.add(plus, minus), ops.sub(plus, minus)], 2))

    def _product(self, ops: TensorOps, name: str, re: Any, im: Any, sum_axis: int | None) -> tuple[Any, Any]:
        """Times the spectra ``name`` (shape ``(k, r, length)``), then summed over r unless ``sum_axis`` is None."""
        re, im = _cmul(ops, re, im, ops.constant(f"{name}_re"), ops.constant(f"{name}_im"))
        if sum_axis is not None and self.displacement_rank > 1:
            re, im = ops.sum(re, 2), ops.sum(im, 2)
        return re, im

    def _circulant(self, ops: TensorOps, forward: str, inverse: str, spectra: str, u: Any,
                   plans: dict[str, fftmm.Transform]) -> tuple[Any, Any | None]:  # fmt: skip
        """``sum_j`` of one f-circulant product of the real ``(b, k, r, L)`` rows ``u``; ``(b, k, L)``."""
        blocks, r = self.blocks, self.displacement_rank
        re, im = self._transform(ops, forward, plans[forward], u, None, (blocks, r))
        re, im = self._product(ops, spectra, re, im, 2)
        return self._transform(ops, inverse, plans[inverse], re, im, (blocks,))

    @staticmethod
    def _transform(ops: TensorOps, name: str, transform: fftmm.Transform, re: Any, im: Any | None,
                   lead: tuple[int, ...]) -> tuple[Any, Any | None]:  # fmt: skip
        """Run a planned transform on rows of ``(re, im)`` (``im`` None: real); result ``(-1, *lead, n)``."""
        last = len(transform.steps) - 1
        shape = None
        for index, step in enumerate(transform.steps):
            mr, mi = ops.constant(f"{name}{index}_re"), ops.constant(f"{name}{index}_im")
            view = (-1, step.cols) if step.kind == "right" else (-1, step.rows, step.cols)
            if view != shape:  # a left step and its twiddle share one view: one Reshape node less
                re = ops.reshape(re, view)
                im = None if im is None else ops.reshape(im, view)
                shape = view
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
            if step.kind != "twiddle" and (step.rows if step.kind == "left" else 1) != step.matrix.shape[0]:
                shape = None  # the step changed the row count (packed input, real output)
        shape = (-1, *lead, transform.n)
        return ops.reshape(re, shape), None if im is None else ops.reshape(im, shape)


def _cmul(ops: TensorOps, re: Any, im: Any, cr: Any, ci: Any) -> tuple[Any, Any]:
    """``(re + i im) * (cr + i ci)``."""
    return (ops.sub(ops.mul(re, cr), ops.mul(im, ci)), ops.add(ops.mul(re, ci), ops.mul(im, cr)))
