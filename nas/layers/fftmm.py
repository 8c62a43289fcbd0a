"""Discrete Fourier transforms as products with small constant matrices (multi-level Cooley-Tukey).

A length-N DFT with N = N_1 N_2 ... N_L is planned as a list of :class:`Step` s that use only
matrix products, element-wise products and reshapes, so that any ONNX runtime runs it with
``MatMul``/``Mul``/``Add``/``Sub``/``Reshape`` (no ``DFT`` node). For M = N_l * R, input index
``j = R j_l + j_r`` and output index ``k = k_l + N_l k_r``:

    X[k_l + N_l k_r] = sum_{j_r} W_R^{j_r k_r} W_M^{j_r k_l} sum_{j_l} W_{N_l}^{j_l k_l} x[R j_l + j_r]

so a stage is a product ``F_{N_l} @ z`` on the data viewed as ``(..., N_l, R)``, a twiddle
``W_M^{k_l j_r}`` element-wise, then the same recursively along the last axis; the last stage is
``z @ F_{N_L}``. The spectrum comes out in *factorised* (digit-reversed) order, ``(k_1, ..., k_L)``
row-major, and is left there: the element-wise spectrum products of the Toeplitz-like layer do not
care about order (their constants are permuted once, :func:`factorised_order`), and the inverse
plan undoes the stages in reverse, reading that order and writing natural order. No transpose.

Two more things fold into the constants: a geometric pre-scale ``w^j`` of the input (the
skew-circulant twiddle) splits as ``w^{R j_l} w^{j_r}`` into the first matrix's columns and the
first twiddle, and likewise a post-scale of the inverse's output. A real input costs two real
products per matrix step instead of four, and a real input of length 2N read as ``lo + i hi``
(the "packed halves" of the half-length skew product) is a first matrix ``[F, iF]`` on the real
data: no split. A real-only output costs two.

Factors are chosen by :func:`factorise`: as few levels as keep every factor at most
:data:`MAX_FACTOR` (picked by measurement in onnxruntime, see docs/benchmarks.md). A length whose
prime factors exceed it keeps that prime as one dense stage: correct, but O(N p) instead of
O(N log N) -- e.g. a prime width is a full N x N DFT matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_FACTOR", "Step", "Transform", "factorise", "factorised_order", "plan"]

#: Largest factor of a planned transform; 2 levels up to 64^2 = 4096, 3 above (measured, onnxruntime CPU).
MAX_FACTOR = 64


@dataclass(frozen=True)
class Step:
    """One step on complex data held as (real, imaginary) arrays, viewed as ``(-1, rows, cols)``.

    ``kind`` is ``"left"`` (``matrix @ z``, matrix ``(out_rows, rows)``), ``"right"``
    (``z @ matrix``, viewed as ``(-1, cols)``; ``rows`` is 1) or ``"twiddle"`` (``z * matrix``,
    matrix ``(rows, cols)``). ``matrix`` is complex (numpy complex128).
    """

    kind: str
    matrix: np.ndarray
    rows: int
    cols: int


@dataclass(frozen=True)
class Transform:
    """A planned DFT: ``steps`` take ``length_in`` numbers per row to ``length_out``.

    ``real_input``: the first step reads real data (two real products, not four).
    ``real_output``: only the real part of the last step is wanted.
    """

    n: int
    factors: tuple[int, ...]
    inverse: bool
    steps: tuple[Step, ...]
    real_input: bool
    real_output: bool

    @property
    def length_in(self) -> int:
        first = self.steps[0]
        return first.matrix.shape[0] if first.kind == "right" else first.matrix.shape[1] * first.cols

    @property
    def length_out(self) -> int:
        return self.n


def factorise(n: int, max_factor: int = MAX_FACTOR) -> tuple[int, ...]:
    """Balanced factors of ``n``, each at most ``max_factor`` where the primes allow, fewest levels."""
    primes = _primes(n)
    if not primes:
        return (1,)
    big = [p for p in primes if p > max_factor]
    small = sorted((p for p in primes if p <= max_factor), reverse=True)
    for levels in range(1, len(small) + 1):
        groups = [1] * levels
        for p in small:  # largest prime first, into the group with the smallest product
            groups[groups.index(min(groups))] *= p
        if max(groups) <= max_factor:
            break
    else:
        groups = []
    return tuple(sorted(groups + big, reverse=True)) if small else tuple(big)


def factorised_order(factors: tuple[int, ...]) -> np.ndarray:
    """``idx`` such that ``spectrum[..., idx]`` is a natural-order spectrum in the plans' factorised order."""
    shape = tuple(factors)
    digits = np.unravel_index(np.arange(int(np.prod(shape))), shape)
    index = np.zeros_like(digits[0])
    scale = 1
    for digit, size in zip(digits, shape, strict=True):
        index = index + scale * digit
        scale *= size
    return index


def plan(
    n: int,
    inverse: bool = False,
    *,
    scale: complex | None = None,
    real_input: bool = False,
    packed: bool = False,
    real_output: bool = False,
    factors: tuple[int, ...] | None = None,
) -> Transform:
    """Plan a length-``n`` DFT (``inverse``: the inverse DFT, 1/n included).

    Forward plans read natural order and write factorised order; inverse plans the reverse.
    ``scale`` = w multiplies the input of a forward plan by ``w^j`` (natural index j), or the output
    of an inverse plan by ``w^j``, at no cost. ``packed`` (forward only): the input is real of length
    2n, ``lo`` then ``hi``, transformed as ``lo + i hi``.
    """
    factors = factorise(n) if factors is None else tuple(factors)
    if int(np.prod(factors)) != n:
        raise ValueError(f"factors {factors} do not multiply to {n}")
    if inverse and packed:
        raise ValueError("only a forward transform reads packed halves")
    steps = _inverse_steps(factors) if inverse else _forward_steps(factors)
    if scale is not None:
        _fold_scale(steps, scale, inverse)
    if packed:
        first = steps[0]
        if first.kind == "left":
            steps[0] = Step("left", np.concatenate([first.matrix, 1j * first.matrix], 1), 2 * first.rows, first.cols)
        else:
            steps[0] = Step("right", np.concatenate([first.matrix, 1j * first.matrix], 0), 1, 2 * first.cols)
    return Transform(n, factors, inverse, tuple(steps), real_input or packed, real_output)


def _levels(factors: tuple[int, ...]) -> list[tuple[int, int]]:
    """(N_l, R_l) per level: the stage's size and the length of what remains after it."""
    out, rest = [], int(np.prod(factors))
    for size in factors:
        rest //= size
        out.append((size, rest))
    return out


def _forward_steps(factors: tuple[int, ...]) -> list[Step]:
    steps = []
    for size, rest in _levels(factors)[:-1]:
        steps += [Step("left", _dft(size), size, rest), Step("twiddle", _twiddle(size, rest), size, rest)]
    size = factors[-1]
    return [*steps, Step("right", _dft(size), 1, size)]  # the DFT matrix is symmetric


def _inverse_steps(factors: tuple[int, ...]) -> list[Step]:
    """The forward steps undone in reverse order: conjugated, each matrix divided by its size."""
    size = factors[-1]
    steps = [Step("right", np.conj(_dft(size)) / size, 1, size)]
    for size, rest in reversed(_levels(factors)[:-1]):
        steps += [Step("twiddle", np.conj(_twiddle(size, rest)), size, rest),
                  Step("left", np.conj(_dft(size)) / size, size, rest)]  # fmt: skip
    return steps


def _fold_scale(steps: list[Step], scale: complex, inverse: bool) -> None:
    """Multiply a forward plan's input (an inverse plan's output) by ``scale**j``, natural index j.

    ``scale^(R j_l + j_r) = scale^(R j_l) scale^(j_r)``: the first (last) matrix takes the first
    factor, the twiddle next to it the second, since that twiddle is diagonal in j_r and commutes
    with the matrix's product over j_l.
    """
    index = 0 if not inverse else len(steps) - 1
    step = steps[index]
    if step.kind == "right":  # a single stage: z @ M, input j on M's rows (output j on its columns)
        powers = scale ** np.arange(step.matrix.shape[0])
        matrix = step.matrix * (powers[None, :] if inverse else powers[:, None])
        steps[index] = Step("right", matrix, step.rows, step.cols)
        return
    size, rest = step.rows, step.cols
    outer, inner = scale ** (rest * np.arange(size)), scale ** np.arange(rest)
    matrix = step.matrix * (outer[:, None] if inverse else outer[None, :])
    steps[index] = Step("left", matrix, size, rest)
    twiddle = steps[index - 1 if inverse else index + 1]
    steps[index - 1 if inverse else index + 1] = Step("twiddle", twiddle.matrix * inner[None, :], size, rest)


def _dft(size: int) -> np.ndarray:
    k = np.arange(size)
    return np.exp(-2j * np.pi * (np.outer(k, k) % size) / size)


def _twiddle(rows: int, rest: int) -> np.ndarray:
    return np.exp(-2j * np.pi * np.outer(np.arange(rows), np.arange(rest)) / (rows * rest))


def _primes(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out
