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
2 (r b + b + r) FFTs (Theorem 3.3 of the paper): O(r n log n) per vector for any n.

Two refinements keep that count but shorten the transforms, since x, g, h and every
``u_j = Z_{-1}(h_j) x`` are real:

- For even n the skew-circulant products run on FFTs of length n/2. ``Z_{-1}(h) x`` is a
  negacyclic convolution of real sequences, and ``R[t]/(t^n + 1)`` is isomorphic to
  ``C[y]/(y^(n/2) - i)`` by ``p -> p_lo + i p_hi`` (the "right-angle" convolution); with
  ``w = eta^k, k < n/2`` and ``pack(x) = x_lo + i x_hi``:

      u = unpack( conj(w) * ifft( fft(w * pack(h)) * fft(w * pack(x)) ) )

  Odd n uses the formula above.
- The circulant products take real-input spectra (``rfft``/``irfft``).

Training runs :func:`toeplitz_apply` on torch complex tensors (:mod:`nas.layers._complex`). The
deployed forms (:mod:`nas.layers.deployed`: ONNX ``DFT`` nodes, or FFTs as matrix products) hold
the same spectra, precomputed, and are what :mod:`nas.export` writes to ONNX.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from nas.layers._complex import NATIVE, ComplexOps, twiddle
from nas.layers.base import LinearLayer
from nas.layers.dense import Dense
from nas.layers.deployed import ToeplitzFFT, ToeplitzMM
from nas.layers.forms import check_form

__all__ = ["ToeplitzLike", "toeplitz_apply", "toeplitz_constants", "toeplitz_spectra"]


DEPLOYED = {"fft": ToeplitzFFT, "fftmm": ToeplitzMM}


def toeplitz_constants(n: int, dtype: torch.dtype, device: torch.device | str | None) -> tuple[Tensor, Tensor]:
    """The twiddles ``(d_in, d_out)``: ``eta^k`` and its conjugate, complex.

    ``k < n/2`` when n is even (the half-length skew product), ``k < n`` when it is odd.
    """
    d_in, d_out = twiddle(n, dtype, device), twiddle(n, dtype, device, inverse=True)
    return (d_in, d_out) if n % 2 else (d_in[: n // 2], d_out[: n // 2])


def toeplitz_spectra(g: Tensor, h: Tensor, onesided: bool = True) -> tuple[Tensor, Tensor]:
    """The spectra ``(hh, gg)`` of generators of shape ``(blocks, r, n)``, complex.

    ``hh = fft(D h)`` for odd n and ``fft(w * pack(h))`` (length n/2) for even n; ``gg`` is
    ``rfft(g)`` if ``onesided`` else ``fft(g)``, as the backend's ``onesided`` says.
    """
    n = g.shape[-1]
    d_in, _ = toeplitz_constants(n, h.dtype, h.device)
    skew = h if n % 2 else NATIVE.pack_halves(h)
    return torch.fft.fft(d_in * skew), torch.fft.rfft(g) if onesided else torch.fft.fft(g)


def toeplitz_apply(
    x: Tensor,
    d_in: Any,
    d_out: Any,
    hh: Any,
    gg: Any,
    ops: ComplexOps = NATIVE,
) -> Tensor:
    """``M_k x`` for every block k, from prepared constants; ``x`` is real of shape ``(b, n)``.

    ``d_in``, ``d_out`` come from :func:`toeplitz_constants` and ``hh``, ``gg`` from
    :func:`toeplitz_spectra` (with ``onesided=ops.onesided``), each prepared with ``ops.prepare``
    (``d_in`` with ``ops.prepare_scale`` when n is odd). Returns the stacked block outputs, real,
    of shape ``(b, blocks * n)``.
    """
    n = x.shape[-1]
    # u_j = Z_{-1}(h_j) x, real, shape (b, blocks, r, n): 2 b r + b FFTs.
    if n % 2:  # the textbook form
        xf = ops.fft(ops.from_real(x, d_in))  # fft(D x)
        u = ops.real(ops.mul_(ops.ifft(ops.mul(xf[:, None, None], hh)), d_out))
    else:  # the same on FFTs of length n/2 (module docstring)
        xf = ops.fft(ops.mul(ops.pack_halves(x), d_in))
        u = ops.unpack_halves(ops.mul_(ops.ifft(ops.mul(xf[:, None, None], hh)), d_out))
    # sum_j Z_1(g_j) u_j, summed in the frequency domain: b r + b FFTs.
    y = ops.ifft_real(_sum_generators(ops.mul_(ops.fft_real(u), gg)), n)
    return y.flatten(1)


def toeplitz_dense(g: Tensor, h: Tensor) -> Tensor:
    """The blocks ``sum_j Z_1(g_j) Z_{-1}(h_j)`` of generators ``(blocks, r, n)``, shape ``(blocks, n, n)``.

    With ``R = Z_1 W - W Z_{-1} = 2 sum_j g_j (J h_j)^T`` (the displacement equation for this
    parametrisation) the columns obey ``W[:, k+1] = Z_1 W[:, k] - R[:, k]``, so with
    ``V[:, k] = Z_1^{-k} W[:, k]``: ``V[:, k] = W[:, 0] - sum_{t<k} Z_1^{-(t+1)} R[:, t]``, a
    cumulative sum, and ``W[:, 0] = sum_j g_j (*) h_j`` (circular convolution). Built transposed,
    every step runs along contiguous rows: ``Q[t, d] = R[(d + t + 1) mod n, t]`` is a Hankel
    matrix of ``g`` (a view of ``g`` doubled) times ``J h``, ``V^T`` its cumulative sum over rows,
    and row k of ``W^T`` is row k of ``V^T`` rolled by k (a view of ``V^T`` doubled). The result
    is a view, the transpose of that ``W^T`` (O(n^2), about 5 ms at n = 1024 here).
    """
    n, blocks, rank = g.shape[-1], g.shape[0], g.shape[1]
    first = torch.fft.irfft(torch.fft.rfft(g) * torch.fft.rfft(h), n=n).sum(1)  # (blocks, n)
    hankel = torch.cat([g, g], -1).as_strided((blocks, rank, n, n), (rank * 2 * n, 2 * n, 1, 1), 1)
    q = torch.mul(hankel, (2 * h.flip(-1))[..., None])
    q = q.squeeze(1) if rank == 1 else q.sum(1)  # (blocks, n, n): Q[b, t, d]
    vt = _row_cumsum(q).neg_().add_(q).add_(first[:, None, :])  # V^T[k] = W[:, 0] - sum over t < k of Q[t]
    rolled = torch.cat([vt, vt], 2)
    return rolled.as_strided((blocks, n, n), (2 * n * n, 2 * n - 1, 1), n).transpose(1, 2)


def _row_cumsum(q: Tensor, block: int = 16) -> Tensor:
    """Inclusive cumulative sum over the rows of ``(..., n, m)``: products of blocks of 16 rows with a
    triangular matrix, then the blocks' offsets. ``torch.cumsum`` across rows is 4-5x slower here."""
    *lead, n, m = q.shape
    if n % block:
        return torch.cumsum(q, -2)
    triangle = torch.ones(block, block, dtype=q.dtype, device=q.device).tril_()
    within = torch.matmul(triangle, q.reshape(*lead, n // block, block, m))
    totals = within[..., -1, :]
    offsets = torch.cumsum(totals, -2) - totals
    return within.add_(offsets[..., None, :]).reshape(*lead, n, m)


def _sum_generators(z: Tensor) -> Tensor:
    # The rank is static: for r = 1 a squeeze (a view; no ReduceSum node in ONNX) does it.
    return z.squeeze(2) if z.shape[2] == 1 else z.sum(2)


class ToeplitzLike(LinearLayer):
    """Linear layer whose matrix is Toeplitz-like with displacement rank ``displacement_rank``.

    Drop-in for ``nn.Linear(in_features, out_features, bias)``: ``ToeplitzLike(8, 8, False)`` is an
    8 x 8 layer without bias, of displacement rank 1. The matrix is made of
    ``ceil(out_features / in_features)`` square ``in_features x in_features`` Toeplitz-like blocks
    stacked vertically, each with its own generators, and the output is truncated to
    ``out_features`` rows. So a wide layer (m > n) stacks blocks, and a narrow one (m < n) keeps the
    first m rows of one n x n block; every block has ``2 r n`` parameters and the input is never
    padded. Forward costs O(r n log n) per vector and block, for any n.

    Parameters ``g`` and ``h`` have shape ``(blocks, r, n)``; the weight is
    ``W_k = scale * sum_j Z_1(g[k, j]) Z_{-1}(h[k, j])`` (see the module docstring) with the
    constant ``scale = 1 / (n sqrt(3 r))``. The generators start with unit variance, so the entries
    of :meth:`to_dense` have the variance of ``nn.Linear``'s default, ``1 / (3 n)``.

    Why the constant: every entry of ``Z_1(g) Z_{-1}(h)`` sums ``n`` products ``g_a h_b``. Adam and
    its kin move every coordinate by about the learning rate per step whatever its scale, so with
    generators of size ``n^(-1/2)`` and no constant, one step changes each entry by up
    to ``n lr^2`` through the product term alone, which overtakes the entries' own size
    ``(3 n)^(-1/2)`` once ``lr > n^(-3/4)``: at n = 2048 and lr = 0.003 the layer's output grew
    until every ReLU after it died and a net trained to chance. With unit-size generators and the
    scale outside, a step changes the entries by a fraction of about ``lr`` as for ``nn.Linear``.
    """

    _repr_fields = ("displacement_rank",)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        displacement_rank: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype, displacement_rank=displacement_rank)
        self.blocks = -(-out_features // in_features)
        self.scale = 1.0 / (in_features * math.sqrt(3.0 * displacement_rank))
        shape = (self.blocks, displacement_rank, in_features)
        self.g = nn.Parameter(torch.empty(shape, **self._factory))
        self.h = nn.Parameter(torch.empty(shape, **self._factory))
        self._spectra_cache: tuple[Any, ...] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Entry (i, k) of sum_j Z_1(g_j) Z_{-1}(h_j) sums r n uncorrelated products g_a h_b, so with
        # g, h iid of unit variance its variance is r n; times scale^2 that is nn.Linear's 1 / (3 n).
        nn.init.uniform_(self.g, -math.sqrt(3.0), math.sqrt(3.0))
        nn.init.uniform_(self.h, -math.sqrt(3.0), math.sqrt(3.0))
        self.reset_bias()

    def _spectra(self) -> tuple[Tensor, Tensor]:
        """The generators' spectra; reused between calls when no gradient is being recorded.

        Without autograd (``torch.no_grad``, ``inference_mode``, frozen parameters) the spectra are
        cached with a copy of the generators they came from, and recomputed whenever ``g`` or ``h``
        no longer equals that copy. Comparing values (2 r n numbers, far cheaper than the FFTs) is
        the only check every update passes: ``layer.g.data.mul_(2)`` changes neither the
        parameter's identity nor its version counter.
        """
        g, h = self.g, self.h
        tracked = torch.is_grad_enabled() and (g.requires_grad or h.requires_grad)
        if tracked or torch.compiler.is_compiling():
            self._spectra_cache = None
            return toeplitz_spectra(g * self.scale, h, NATIVE.onesided)
        cache = self._spectra_cache
        if cache is None or not (_same(cache[0], g) and _same(cache[1], h)):
            # Normal tensors even under inference_mode: a later call may save them for backward.
            with torch.inference_mode(False), torch.no_grad():
                copies = g.detach().clone(), h.detach().clone()
                cache = self._spectra_cache = (*copies, toeplitz_spectra(g * self.scale, h, NATIVE.onesided))
        return cache[2]

    def _blocks(self, x: Tensor) -> Tensor:
        """Stacked block outputs (no truncation, no bias) for ``x`` of shape ``(b, n)``."""
        hh, gg = self._spectra()
        d_in, d_out = toeplitz_constants(self.in_features, self.g.dtype, self.g.device)
        return toeplitz_apply(x, d_in, d_out, hh, gg, NATIVE)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_spectra_cache"] = None  # never copied or pickled
        return state

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        y = self._blocks(x.reshape(-1, self.in_features))[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def to_dense(self) -> Tensor:
        """The effective weight, shape ``(out_features, in_features)``: ``self(x) == x @ W.T + bias``.

        O(n^2) per block, from the displacement equation rather than n products (:func:`toeplitz_dense`).
        """
        blocks = toeplitz_dense(self.g * self.scale, self.h)
        return blocks.reshape(-1, self.in_features)[: self.out_features]

    def deployable(self, form: str) -> nn.Module:
        """A copy computing the same function in a deployed form, which :mod:`nas.export` writes to ONNX.

        ``"fft"`` keeps the generators' spectra (O(r n) numbers) for four ONNX ``DFT`` nodes;
        ``"fftmm"`` the same product folded into five matrix products with O(r n sqrt n) constants
        (:class:`~nas.layers.ToeplitzMM`, no ``DFT``); ``"dense"`` is a :class:`~nas.layers.Dense`
        holding :meth:`to_dense`, a ``Gemm``. Which one is fastest is a property of the device:
        export them all and measure.
        """
        check_form(form)
        if form in DEPLOYED:
            bias = None if self.bias is None else self.bias.detach().clone()
            return DEPLOYED[form].from_generators(self.out_features, self.g * self.scale, self.h, bias)
        # Built on the meta device: no random initialisation of an n x n weight about to be replaced.
        linear = Dense(self.in_features, self.out_features, self.bias is not None, device="meta")
        with torch.no_grad():
            # W^T copied row by row (W itself would be a transposing copy), held transposed: exported as is
            linear.weight = nn.Parameter(self.to_dense().t().contiguous().t())
            if self.bias is not None:
                linear.bias = nn.Parameter(self.bias.detach().clone())
        return linear


def _same(copy: Tensor, tensor: Tensor) -> bool:
    return (copy.shape, copy.dtype, copy.device) == (tensor.shape, tensor.dtype, tensor.device) and torch.equal(
        copy, tensor
    )
