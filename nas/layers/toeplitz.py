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

  On (real, imag) planes ``pack`` and ``unpack`` are mere reshapes. Odd n uses the formula above.
- The circulant products take real-input spectra: ``rfft``/``irfft`` in PyTorch; in ONNX full
  ``DFT`` nodes, because onnxruntime's one-sided DFT is no faster.

The product is written once, in :func:`toeplitz_apply`, against the operations of
:mod:`nas.layers._complex`: training runs it on complex tensors, the deployable "fft" form on
real and imaginary planes so that it exports to ONNX ``DFT`` nodes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from nas.layers._complex import NATIVE, PAIRS, ComplexOps, twiddle
from nas.layers.dense import Dense, check_form

__all__ = ["ToeplitzFFT", "ToeplitzLike", "toeplitz_apply", "toeplitz_constants", "toeplitz_spectra"]


_TO_DENSE_NUMBERS = 1 << 22


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
        self.scale = 1.0 / (in_features * math.sqrt(3.0 * displacement_rank))
        shape = (self.blocks, displacement_rank, in_features)
        self.g = nn.Parameter(torch.empty(shape, **factory))
        self.h = nn.Parameter(torch.empty(shape, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self._spectra_cache: tuple[Any, ...] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Entry (i, k) of sum_j Z_1(g_j) Z_{-1}(h_j) sums r n uncorrelated products g_a h_b, so with
        # g, h iid of unit variance its variance is r n; times scale^2 that is nn.Linear's 1 / (3 n).
        nn.init.uniform_(self.g, -math.sqrt(3.0), math.sqrt(3.0))
        nn.init.uniform_(self.h, -math.sqrt(3.0), math.sqrt(3.0))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def _spectra(self) -> tuple[Tensor, Tensor]:
        """The generators' spectra; reused between calls when no gradient is being recorded.

        Without autograd (``torch.no_grad``, ``inference_mode``, frozen parameters) the spectra are
        cached until ``g`` or ``h`` changes: another tensor, or an in-place update (optimizer steps,
        ``load_state_dict``, ``reset_parameters``), which bumps the tensor's version counter.
        """
        g, h = self.g, self.h
        tracked = torch.is_grad_enabled() and (g.requires_grad or h.requires_grad)
        if tracked or torch.compiler.is_compiling():
            self._spectra_cache = None
            return toeplitz_spectra(g * self.scale, h, NATIVE.onesided)
        key = (g._version, h._version, g.data_ptr(), h.data_ptr())
        cache = self._spectra_cache
        if cache is None or cache[0] is not g or cache[1] is not h or cache[2] != key:
            # Normal tensors even under inference_mode: a later call may save them for backward.
            with torch.inference_mode(False), torch.no_grad():
                cache = self._spectra_cache = (g, h, key, toeplitz_spectra(g * self.scale, h, NATIVE.onesided))
        return cache[3]

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
        """The effective weight, shape ``(out_features, in_features)``: ``self(x) == x @ W.T + bias``."""
        n = self.in_features
        eye = torch.eye(n, dtype=self.g.dtype, device=self.g.device)
        # Columns in chunks: the intermediates hold chunk * blocks * r * n numbers.
        chunk = max(1, _TO_DENSE_NUMBERS // (self.blocks * self.displacement_rank * n))
        columns = [self._blocks(eye[i : i + chunk]) for i in range(0, n, chunk)]
        return torch.cat(columns)[:, : self.out_features].T

    def deployable(self, form: str) -> nn.Module:
        """A copy computing the same function that exports cleanly to ONNX (opset >= 18).

        ``"fft"`` keeps the generators' spectra (O(r n) numbers) and runs the FFT product on real
        and imaginary planes, which the dynamo exporter turns into four ``DFT`` nodes. ``"dense"``
        is a :class:`~nas.layers.Dense` (an ``nn.Linear``) holding :meth:`to_dense`, a ``Gemm``.
        Which one is faster is a property of the device: export both and measure.
        """
        check_form(form)
        if form == "fft":
            return ToeplitzFFT.from_layer(self)
        with torch.no_grad():
            weight = self.to_dense()
        linear = Dense(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            linear.weight.copy_(weight)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"displacement_rank={self.displacement_rank}, bias={self.bias is not None}"
        )


class ToeplitzFFT(nn.Module):
    """Inference-only FFT form of a :class:`ToeplitzLike` layer, exportable to ONNX ``DFT``.

    Holds the precomputed spectra of the generators and the twiddle factors as real buffers, in
    the plane form of :class:`nas.layers._complex.PairOps` (for even n, 6 r n numbers per block and
    4 n twiddles), so the graph has only the x-dependent FFTs (four ``DFT`` nodes) and never the
    n x n matrix. Its numbers are buffers: count parameters on the :class:`ToeplitzLike`.
    """

    def __init__(self, in_features: int, out_features: int, constants: dict[str, Any], bias: Tensor | None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self._names = tuple(constants)
        for name, value in constants.items():
            # A prepared constant is a tensor or an (A, B) pair of tensors: one buffer each.
            for index, tensor in enumerate(value if isinstance(value, tuple) else (value,)):
                self.register_buffer(f"{name}_{index}" if isinstance(value, tuple) else name, tensor)
        self.register_buffer("bias", bias)

    def _constant(self, name: str) -> Any:
        if name in self._buffers:
            return self._buffers[name]
        return self._buffers[f"{name}_0"], self._buffers[f"{name}_1"]

    @classmethod
    @torch.no_grad()
    def from_layer(cls, layer: ToeplitzLike) -> ToeplitzFFT:
        n, dtype, device = layer.in_features, layer.g.dtype, layer.g.device
        # Everything in float64 whatever the layer's dtype, rounded once at the end.
        d_in, d_out = toeplitz_constants(n, torch.float64, device)
        hh, gg = toeplitz_spectra(layer.g.double() * layer.scale, layer.h.double(), PAIRS.onesided)
        constants = {
            "d_in": PAIRS.prepare_scale(d_in) if n % 2 else PAIRS.prepare(d_in),
            "d_out": PAIRS.prepare(d_out),
            "hh": PAIRS.prepare(hh),
            "gg": PAIRS.prepare(gg),
        }
        constants = {name: _to(value, dtype) for name, value in constants.items()}
        bias = None if layer.bias is None else layer.bias.detach().clone()
        return cls(n, layer.out_features, constants, bias)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        d_in, d_out, hh, gg = (self._constant(name) for name in self._names)
        y = toeplitz_apply(x.reshape(-1, self.in_features), d_in, d_out, hh, gg, PAIRS)[:, : self.out_features]
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


def _to(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, tuple):
        return tuple(_to(item, dtype) for item in value)
    return value.to(dtype).contiguous()
