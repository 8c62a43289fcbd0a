"""Toeplitz-like linear layers (Sindhwani, Sainath, Kumar, NIPS 2015), multiplied by FFT.

A square n x n matrix M has displacement rank r when ``Z_1 M - M Z_{-1} = G H^T`` with G, H of
shape n x r (``Z_f``: the shift matrix with ``f`` in the top-right corner). We store it as

    M = sum_j Z_1(g_j) Z_{-1}(h_j)

with ``Z_f(v)`` the f-circulant matrix whose first column is ``v`` -- the paper's
``1/2 sum_j Z_1(g_j) Z_{-1}(J h_j)`` up to reparametrisation -- so that 2 r n numbers describe it.
With ``eta = exp(i pi / n)`` and ``D = diag(eta^k)``, circulants are diagonalised by the DFT and
skew-circulants by the DFT after ``D``:

    M x = ifft( sum_j fft(g_j) * fft( conj(D) * ifft( fft(D h_j) * fft(D x) ) ) )

The sum over the r generators happens in the frequency domain, so a batch of b vectors costs
2 (r b + b + r) FFTs of length n (Theorem 3.3 of the paper): O(r n log n) per vector for any n.

The product is written once, in :func:`toeplitz_apply`, against the operations of
:mod:`nas.layers._complex`: training runs it on complex tensors, the deployable "fft" form on
(real, imag) pairs so that it exports to ONNX ``DFT`` nodes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from nas.layers._complex import NATIVE, PAIRS, NativeOps, PairOps, twiddle
from nas.layers.dense import Dense, check_form

__all__ = ["ToeplitzFFT", "ToeplitzLike", "toeplitz_apply", "toeplitz_spectra"]

def toeplitz_spectra(g: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """The spectra ``fft(D h)`` and ``fft(g)`` of generators of shape ``(blocks, r, n)``, complex."""
    n = g.shape[-1]
    return torch.fft.fft(twiddle(n, h.dtype, h.device) * h), torch.fft.fft(g)


def toeplitz_apply(
    x: Tensor,
    d_in: Any,
    d_out: Any,
    hh: Any,
    gg: Any,
    ops: NativeOps | PairOps = NATIVE,
) -> Tensor:
    """``M_k x`` for every block k, from prepared constants; ``x`` is real of shape ``(b, n)``.

    ``d_in`` is ``D`` prepared with ``ops.prepare_scale``; ``d_out`` is ``conj(D)`` and ``hh``,
    ``gg`` are the spectra from :func:`toeplitz_spectra` prepared with ``ops.prepare``. Returns the
    stacked block outputs, real, of shape ``(b, blocks * n)``.
    """
    xf = ops.fft(ops.from_real(x, d_in))  # fft(D x): b FFTs
    u = ops.ifft(ops.mul(xf[:, None, None], hh))  # skew-circulant products, (b, blocks, r, n): r b FFTs
    u = ops.fft(ops.mul(u, d_out))  # back to the circulant frequency domain: r b FFTs
    y = ops.ifft(_sum_generators(ops.mul(u, gg)))  # sum over generators, then b FFTs per block
    return ops.real(y).flatten(1)


def _sum_generators(z: Tensor) -> Tensor:
    # The rank is static: for r = 1 a squeeze (a view; no ReduceSum node in ONNX) does it.
    return z.squeeze(2) if z.shape[2] == 1 else z.sum(2)


class ToeplitzLike(nn.Module):
    """Linear layer whose matrix is Toeplitz-like with displacement rank ``displacement_rank``.

    Drop-in for ``nn.Linear(in_features, out_features, bias)``. The matrix is made of
    ``ceil(out_features / in_features)`` square ``in_features x in_features`` Toeplitz-like blocks
    stacked vertically, each with its own generators, and the output is truncated to
    ``out_features`` rows. So a wide layer (m > n) stacks blocks, and a narrow one (m < n) keeps the
    first m rows of one n x n block; every block has ``2 r n`` parameters and the input is never
    padded. Forward costs O(r n log n) per vector and block, for any n.

    Parameters ``g`` and ``h`` have shape ``(blocks, r, n)``; the weight is
    ``W_k = sum_j Z_1(g[k, j]) Z_{-1}(h[k, j])`` (see the module docstring). They are initialised so
    that the entries of :meth:`to_dense` have the variance of ``nn.Linear``'s default, ``1 / (3 n)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        displacement_rank: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"features must be positive, got {in_features} -> {out_features}")
        if displacement_rank < 1:
            raise ValueError(f"displacement rank must be at least 1, got {displacement_rank}")
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.displacement_rank = displacement_rank
        self.blocks = -(-out_features // in_features)
        shape = (self.blocks, displacement_rank, in_features)
        self.g = nn.Parameter(torch.empty(shape, **factory))
        self.h = nn.Parameter(torch.empty(shape, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Entry (i, k) of sum_j Z_1(g_j) Z_{-1}(h_j) sums r n uncorrelated products g_a h_b, so with
        # g, h iid of variance s^2 its variance is r n s^4; nn.Linear's is 1 / (3 n).
        n, r = self.in_features, self.displacement_rank
        bound = math.sqrt(3.0 / (n * math.sqrt(3.0 * r)))
        nn.init.uniform_(self.g, -bound, bound)
        nn.init.uniform_(self.h, -bound, bound)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(n)
            nn.init.uniform_(self.bias, -bound, bound)

    def _blocks(self, x: Tensor) -> Tensor:
        """Stacked block outputs (no truncation, no bias) for ``x`` of shape ``(b, n)``."""
        n = self.in_features
        hh, gg = toeplitz_spectra(self.g, self.h)
        d = twiddle(n, self.g.dtype, self.g.device)
        return toeplitz_apply(x, d, d.conj(), hh, gg, NATIVE)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        y = self._blocks(x.reshape(-1, self.in_features))[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def to_dense(self) -> Tensor:
        """The effective weight, shape ``(out_features, in_features)``: ``self(x) == x @ W.T + bias``."""
        eye = torch.eye(self.in_features, dtype=self.g.dtype, device=self.g.device)
        return self._blocks(eye)[:, : self.out_features].T

    def deployable(self, form: str) -> nn.Module:
        """A copy computing the same function that exports cleanly to ONNX (opset >= 18).

        ``"fft"`` keeps the generators' spectra (O(r n) numbers) and runs the FFT product on
        (real, imag) pairs, which the dynamo exporter turns into ``DFT`` nodes; ``"dense"`` is a plain
        :class:`~nas.layers.Dense` (an ``nn.Linear``) holding :meth:`to_dense` (a ``Gemm``). Which is faster depends on the device.
        """
        check_form(form)
        if form == "fft":
            return ToeplitzFFT.from_layer(self)
        with torch.no_grad():
            weight = self.to_dense()
        linear = Dense(self.in_features, self.out_features, bias=self.bias is not None,
                       device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"displacement_rank={self.displacement_rank}, bias={self.bias is not None}")


class ToeplitzFFT(nn.Module):
    """Inference-only FFT form of a :class:`ToeplitzLike` layer, exportable to ONNX ``DFT``.

    Holds the precomputed spectra of the generators and of the twiddle factors as real buffers in
    the pair form of :class:`nas.layers._complex.PairOps`; the graph contains only the x-dependent
    FFTs (four ``DFT`` nodes) and never the n x n matrix.
    """

    def __init__(self, in_features: int, out_features: int, spectra: dict[str, Tensor], bias: Tensor | None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        for name, value in spectra.items():
            self.register_buffer(name, value)
        self.register_buffer("bias", bias)

    @classmethod
    @torch.no_grad()
    def from_layer(cls, layer: ToeplitzLike) -> ToeplitzFFT:
        n, dtype, device = layer.in_features, layer.g.dtype, layer.g.device
        # Spectra in float64 whatever the layer's dtype, rounded once at the end.
        hh, gg = toeplitz_spectra(layer.g.double(), layer.h.double())
        d = twiddle(n, torch.float64, device)
        spectra = {"d_in": PAIRS.prepare_scale(d)}
        for name, value in (("d_out", d.conj()), ("hh", hh), ("gg", gg)):
            spectra[f"{name}_a"], spectra[f"{name}_b"] = PAIRS.prepare(value)
        spectra = {name: value.to(dtype).contiguous() for name, value in spectra.items()}
        bias = None if layer.bias is None else layer.bias.detach().clone()
        return cls(n, layer.out_features, spectra, bias)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        y = toeplitz_apply(
            x.reshape(-1, self.in_features),
            self.d_in,
            (self.d_out_a, self.d_out_b),
            (self.hh_a, self.hh_b),
            (self.gg_a, self.gg_b),
            PAIRS,
        )[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def deployable(self, form: str) -> nn.Module:
        check_form(form)
        if form != "fft":
            raise ValueError("this layer is already deployed in the fft form; deploy the ToeplitzLike instead")
        return self

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
