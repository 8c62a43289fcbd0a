"""A Toeplitz-like layer as five matrix products: a two-level Cooley-Tukey factorisation, folded.

The layer computes ``y = sum_j Z_1(g_j) Z_{-1}(h_j) x`` (see :mod:`nas.layers.toeplitz`) as
``F^-1 diag(fft g_j) F  D^-1 F^-1 diag(fft(D h_j)) F D x``. With a length L = S C viewed as an
``S x C`` array (index ``j = C j_1 + j_2``), a DFT is a product ``F_S @ z`` on the columns, a
twiddle ``W_L^{k_1 j_2}``, then ``z @ F_C`` on each row; the spectrum comes out in factorised order
``k = k_1 + S k_2``. Everything between two column products acts on one row ``k_1`` at a time --
the twiddle, ``F_C``, the spectrum, ``F_C^-1``, the inverse twiddle, the row part of ``D`` -- so it
folds into one complex ``C x C`` matrix per row (and per generator), applied as one batched
``MatMul``. Between the two circulant products, the inverse's column product, ``D^-1``'s column
part and the next forward column product fold into one matrix. So a layer is

    column product -> per-row products (h) -> column product -> per-row products (g) -> column product

five ``MatMul`` s, with complex numbers as real 2 x 2 blocks ``[[re, -im], [im, re]]`` inside the
constant matrices, so no node ever splits real and imaginary parts. The sum over the displacement
rank is inside the second per-row product (its rows are the r generators' rows side by side).

Real data pays half: for even n the skew product runs at length n/2 on ``x_lo + i x_hi`` and hands
back ``u_lo + i u_hi``, which *is* u in natural order; the circulant product of real u keeps only
the rows ``k_1 <= S/2`` of its spectrum (the others are their conjugates) and the last column
product takes the real part. Constants: O(r n C) numbers with C = min(sqrt n, 32) (per-row
matrices) instead of the O(r n) of the fft form: about 4 r n C floats, e.g. 0.56 MB at n = 1024
and 2.3 MB at n = 4096 per
generator pair, against 4 MB and 64 MB for dense. Node count is what this form is for: onnxruntime
spends a few microseconds per node, about what a 1024 x 1024 ``Gemm`` costs at batch 1, so a few
big products beat many small ones (docs/benchmarks.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_COLS", "Split", "layer_matrices", "real_block", "split"]

#: Longest row. Measured in onnxruntime (one thread, T1 layer, docs/benchmarks.md): rows of 32 beat
#: 64 by about 25 % at batch 1 for n = 2048 and 4096 and tie at batch 64, with half the constants.
MAX_COLS = 32


@dataclass(frozen=True)
class Split:
    """How a width n is viewed: input rows ``n // cols``, skew rows ``skew`` (complex), circulant rows
    ``rows`` of which ``half`` are kept, each row ``cols`` long."""

    n: int
    cols: int
    skew: int
    rows: int

    @property
    def half(self) -> int:
        return self.rows // 2 + 1


def split(n: int) -> Split:
    """Rows of about sqrt(n) (the column and row products then cost about the same), at most
    :data:`MAX_COLS` long."""
    length = n // 2 if n % 2 == 0 else n  # the skew product's length (packed halves for even n)
    divisors = [d for d in range(1, min(length, MAX_COLS) + 1) if length % d == 0]
    cols = min(divisors, key=lambda d: (abs(math.log(d) - math.log(n) / 2), d))
    return Split(n, cols, length // cols, n // cols)


def real_block(a: np.ndarray, inp: str, out: str) -> np.ndarray:
    """The real matrix of ``z -> a @ z`` (``a`` complex, leading axes batched) on complex vectors stored
    as ``"planar"`` (all real parts, then all imaginary), ``"interleaved"`` (re, im per entry) or
    ``"real"`` (input: imaginary part zero; output: real part only)."""
    p, q = a.shape[-2:]
    blocks = np.empty((*a.shape[:-2], 2, p, 2, q))  # (out part, out index, in part, in index)
    blocks[..., 0, :, 0, :], blocks[..., 0, :, 1, :] = a.real, -a.imag
    blocks[..., 1, :, 0, :], blocks[..., 1, :, 1, :] = a.imag, a.real
    if inp == "real":
        blocks = blocks[..., :1, :]
    elif inp == "interleaved":
        blocks = np.swapaxes(blocks, -1, -2)
    if out == "real":
        blocks = blocks[..., :1, :, :, :]
    elif out == "interleaved":
        blocks = np.swapaxes(blocks, -4, -3)
    lead = a.shape[:-2]
    return blocks.reshape(*lead, blocks.shape[-4] * blocks.shape[-3], blocks.shape[-2] * blocks.shape[-1])


def layer_matrices(n: int, g: np.ndarray, h: np.ndarray) -> dict[str, np.ndarray]:
    """The five real matrices of the layer with generators ``g``, ``h`` of shape ``(blocks, r, n)``.

    ``left_in`` ``(2 S, n / C)``, ``rows_h`` ``(blocks r, S, 2C, 2C)``, ``left_mid`` ``(2 H, 2 S)``,
    ``rows_g`` ``(blocks, H, r 2C, 2C)``, ``left_out`` ``(n / C, 2 H)`` for the :func:`split` C, S, H.
    Rows of the per-row products are ``(re, im)`` planar; the column products' rows interleaved.
    """
    blocks, rank, _ = g.shape
    s = split(n)
    c, length = s.cols, s.skew * s.cols
    eta = np.exp(1j * np.pi / n)
    even = n % 2 == 0
    # Skew product: D x (D = eta^j) transformed at length `length`; x packed as lo + i hi for even n.
    col = eta ** (c * np.arange(s.skew))
    left_in = real_block(_dft(s.skew) * col[None, :], "planar" if even else "real", "interleaved")
    row = eta ** np.arange(c)
    hh = np.fft.fft((h[..., : n // 2] + 1j * h[..., n // 2 :] if even else h) * eta ** np.arange(length))
    rows_h = _rows(hh.reshape(blocks * rank, length), s.skew, c, row, s.skew)
    skew_inverse = real_block(np.conj(_dft(s.skew) * col[None, :]).T / s.skew, "interleaved",
                              "planar" if even else "real")  # fmt: skip
    # Circulant product of real u: the spectrum's first H column rows only.
    forward = real_block(_dft(s.rows)[: s.half], "real", "interleaved")
    gg = np.fft.fft(g).reshape(blocks * rank, n)
    rows_g = _rows(gg, s.rows, c, np.ones(c), s.half)  # (blocks r, H, 2C, 2C)
    rows_g = rows_g.reshape(blocks, rank, s.half, 2 * c, 2 * c).transpose(0, 2, 1, 3, 4)
    weights = np.where((np.arange(s.half) == 0) | (2 * np.arange(s.half) == s.rows), 1.0, 2.0)
    left_out = real_block(np.conj(_dft(s.rows))[:, : s.half] * weights / s.rows, "interleaved", "real")
    return {"left_in": left_in, "rows_h": rows_h, "left_mid": forward @ skew_inverse,
            "rows_g": rows_g.reshape(blocks, s.half, rank * 2 * c, 2 * c), "left_out": left_out}  # fmt: skip


def _rows(spectra: np.ndarray, rows: int, cols: int, scale: np.ndarray, keep: int) -> np.ndarray:
    """Per-row real matrices (right products on planar rows) of ``scale * twiddle * F_C diag(spectrum)
    F_C^-1 * conj(twiddle * scale)``, rows ``k_1 < keep``, for spectra ``(batch, rows cols)`` in
    natural order; ``(batch, keep, 2C, 2C)``."""
    k1 = np.arange(keep)
    twiddle = np.exp(-2j * np.pi * np.outer(k1, np.arange(cols)) / (rows * cols)) * scale
    fc = _dft(cols)
    spectrum = spectra.reshape(-1, cols, rows)[:, :, :keep].transpose(0, 2, 1)  # [.., k1, k2] = spectra[k1 + rows k2]
    forward = twiddle[:, :, None] * fc  # (keep, j2, k2)
    inverse = np.conj(forward).transpose(0, 2, 1) / cols  # (keep, k2, j2)
    p = (forward * spectrum[:, :, None, :]) @ inverse  # z @ p per row: z' = z_re p_re - z_im p_im + i(...)
    out = np.empty((*p.shape[:2], 2, cols, 2, cols))
    out[:, :, 0, :, 0], out[:, :, 0, :, 1], out[:, :, 1, :, 0], out[:, :, 1, :, 1] = p.real, p.imag, -p.imag, p.real
    return out.reshape(*p.shape[:2], 2 * cols, 2 * cols)


def _dft(size: int) -> np.ndarray:
    k = np.arange(size)
    return np.exp(-2j * np.pi * (np.outer(k, k) % size) / size)
