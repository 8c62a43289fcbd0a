"""Dense, low-rank and Toeplitz-like layers, checked against the displacement equation and explicit sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from nas.layers import Dense, LowRank, ToeplitzFFT, ToeplitzLike, ToeplitzMM, deploy, fftmm, make_layer

SIZES = (64, 100, 257, 512)
RANKS = (1, 2, 4)


def f_circulant(v: torch.Tensor, f: float) -> torch.Tensor:
    """Z_f(v), built entry by entry: first column v, wrapped entries above the diagonal times f."""
    n = v.shape[0]
    i = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    return v[(i - k) % n] * torch.where(i >= k, 1.0, f).to(v.dtype)


def shift(n: int, f: float) -> torch.Tensor:
    """Z_f: ones on the subdiagonal, f in the top-right corner."""
    e1 = torch.zeros(n, dtype=torch.float64)
    e1[1 % n] = 1.0
    return f_circulant(e1, f)


def explicit_weight(layer: ToeplitzLike) -> torch.Tensor:
    """scale * sum_j Z_1(g_j) Z_{-1}(h_j) per block, stacked and truncated, without any FFT."""
    g, h = layer.g.detach().double() * layer.scale, layer.h.detach().double()
    blocks = [
        sum(f_circulant(g[k, j], 1.0) @ f_circulant(h[k, j], -1.0) for j in range(layer.displacement_rank))
        for k in range(layer.blocks)
    ]
    return torch.cat(blocks)[: layer.out_features]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("r", RANKS)
def test_displacement_rank(n: int, r: int) -> None:
    layer = ToeplitzLike(n, n, displacement_rank=r, dtype=torch.float64)
    w = layer.to_dense().detach()
    residual = shift(n, 1.0) @ w - w @ shift(n, -1.0)
    s = torch.linalg.svdvals(residual)
    assert s[r - 1] / s[0] > 1e-6  # random generators: rank exactly r
    assert s[r] / s[0] < 1e-10


@pytest.mark.parametrize(("n", "r"), [(64, 2), (100, 1), (257, 4)])
def test_to_dense_matches_explicit_circulant_products(n: int, r: int) -> None:
    layer = ToeplitzLike(n, n, displacement_rank=r, dtype=torch.float64)
    assert relative_error(layer.to_dense(), explicit_weight(layer)) < 1e-12


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("r", RANKS)
def test_forward_matches_dense_weight(n: int, r: int) -> None:
    layer64 = ToeplitzLike(n, n, displacement_rank=r, dtype=torch.float64)
    layer32 = ToeplitzLike(n, n, displacement_rank=r)
    layer32.load_state_dict({k: v.float() for k, v in layer64.state_dict().items()})
    x = torch.randn(8, n, dtype=torch.float64)
    reference = x @ layer64.to_dense().T + layer64.bias
    assert relative_error(layer64(x), reference) <= 1e-10
    assert relative_error(layer32(x.float()), reference) <= 1e-4
    w32 = layer32.to_dense()
    assert relative_error(layer32(x.float()), x.float() @ w32.T + layer32.bias) <= 1e-4


@pytest.mark.parametrize("r", RANKS)
@pytest.mark.parametrize(("n", "m"), [(8, 8), (4, 9), (9, 4)])
def test_gradcheck(n: int, m: int, r: int) -> None:
    layer = ToeplitzLike(n, m, displacement_rank=r, dtype=torch.float64)
    x = torch.randn(3, n, dtype=torch.float64, requires_grad=True)
    params = {name: p.detach().clone().requires_grad_() for name, p in layer.named_parameters()}

    def fn(x: torch.Tensor, g: torch.Tensor, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return functional_call(layer, {"g": g, "h": h, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(fn, (x, params["g"], params["h"], params["bias"]))


def test_circulant_is_rank_one() -> None:
    n = 37
    c = torch.randn(n, dtype=torch.float64)
    layer = ToeplitzLike(n, n, displacement_rank=1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        layer.g.zero_()[0, 0] = c / layer.scale
        layer.h.zero_()[0, 0, 0] = 1.0  # Z_{-1}(e_1) = I
    target = f_circulant(c, 1.0)
    assert torch.equal(target[:, 0], c)
    assert (layer.to_dense() - target).abs().max() < 1e-13


@pytest.mark.parametrize("n", [16, 33])
def test_toeplitz_is_rank_two(n: int) -> None:
    # T = C + S with C circulant, S skew-circulant: c_k + s_k = t_k, c_k - s_k = t_{k-n}.
    t = torch.randn(2 * n - 1, dtype=torch.float64)  # t[k + n - 1] is the entry on diagonal k
    i = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    target = t[i - k + n - 1]
    below = t[n - 1 :]  # t_0 .. t_{n-1}
    above = torch.cat([torch.zeros(1, dtype=torch.float64), t[: n - 1]])  # t_{k-n} for k = 1..n-1
    c = (below + above) / 2
    s = (below - above) / 2
    c[0] = s[0] = t[n - 1] / 2
    layer = ToeplitzLike(n, n, displacement_rank=2, bias=False, dtype=torch.float64)
    e1 = torch.zeros(n, dtype=torch.float64)
    e1[0] = 1.0
    with torch.no_grad():
        layer.g.copy_(torch.stack([c, e1])[None] / layer.scale)
        layer.h.copy_(torch.stack([e1, s])[None])
    assert (layer.to_dense() - target).abs().max() < 1e-13


@pytest.mark.parametrize(("n", "m"), [(64, 300), (300, 64)])
def test_rectangular(n: int, m: int) -> None:
    layer = ToeplitzLike(n, m, displacement_rank=2, dtype=torch.float64)
    assert layer.blocks == math.ceil(m / n)
    w = layer.to_dense()
    assert w.shape == (m, n)
    assert relative_error(w, explicit_weight(layer)) < 1e-12
    x = torch.randn(2, 3, n, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (2, 3, m)
    assert relative_error(y, x @ w.T + layer.bias) <= 1e-10
    layer32 = layer.float()
    assert relative_error(layer32(x.float()), x @ w.T + layer.bias.double()) <= 1e-4


@pytest.mark.parametrize(("n", "m", "r"), [(64, 64, 1), (64, 64, 4), (64, 300, 2), (300, 64, 3)])
def test_parameter_counts(n: int, m: int, r: int) -> None:
    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(ToeplitzLike(n, m, displacement_rank=r)) == math.ceil(m / n) * 2 * r * n + m
    assert count(ToeplitzLike(n, m, displacement_rank=r, bias=False)) == math.ceil(m / n) * 2 * r * n
    assert count(LowRank(n, m, rank=16)) == 16 * (m + n) + m
    assert count(LowRank(n, m, rank=16, bias=False)) == 16 * (m + n)
    assert count(Dense(n, m)) == n * m + m


@pytest.mark.parametrize(
    "layer",
    [
        lambda: ToeplitzLike(256, 256, displacement_rank=1),
        lambda: ToeplitzLike(256, 512, displacement_rank=4),
        lambda: LowRank(256, 512, rank=16),
    ],
    ids=["toeplitz-r1", "toeplitz-r4-wide", "lowrank"],
)
def test_initial_weight_variance_is_linear_default(layer) -> None:
    layer = layer()
    variance = layer.to_dense().detach().var().item()
    assert variance == pytest.approx(1 / (3 * 256), rel=0.25)
    bound = 1 / math.sqrt(256)
    assert layer.bias.abs().max() <= bound


def test_low_rank() -> None:
    layer = LowRank(40, 30, rank=5, dtype=torch.float64)
    w = layer.to_dense()
    assert w.shape == (30, 40)
    assert torch.linalg.matrix_rank(w) == 5
    x = torch.randn(4, 40, dtype=torch.float64)
    assert relative_error(layer(x), x @ w.T + layer.bias) < 1e-12
    assert "rank=5" in repr(layer)


def test_make_layer() -> None:
    assert type(make_layer("dense", 8, 4)) is Dense
    assert isinstance(make_layer("lowrank", 8, 4, rank=2), LowRank)
    layer = make_layer("toeplitz", 8, 4, rank=3, bias=False)
    assert isinstance(layer, ToeplitzLike)
    assert layer.displacement_rank == 3
    assert layer.bias is None
    assert "displacement_rank=3" in repr(layer)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("conv", 8, 4), "kind 'conv'"),
        (("lowrank", 8, 4), "needs a rank"),
        (("toeplitz", 8, 4), "needs a rank"),
        (("dense", 8, 4, 3), "takes no rank"),
        (("toeplitz", 8, 4, 0), "at least 1"),
        (("lowrank", 8, 4, 0), "at least 1"),
    ],
)
def test_make_layer_errors(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_layer(*args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "m", "r"), [(64, 64, 1), (100, 257, 2), (257, 30, 4)])
def test_deployable_forms_compute_the_same_function(dtype: torch.dtype, n: int, m: int, r: int) -> None:
    layer = ToeplitzLike(n, m, displacement_rank=r, dtype=dtype)
    x = torch.randn(5, n, dtype=dtype)
    expected = layer(x)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    fft = layer.deployable("fft")
    fftmm_form = layer.deployable("fftmm")
    dense = layer.deployable("dense")
    assert isinstance(fft, ToeplitzFFT)
    assert isinstance(fftmm_form, ToeplitzMM)
    assert isinstance(dense, Dense)
    # The fft form keeps O(r n) numbers, never the matrix.
    assert max(b.numel() for b in fft.buffers()) <= 4 * r * n * layer.blocks
    for deployed in (fft, fftmm_form, dense):
        assert relative_error(deployed(x), expected) < tolerance
        assert deployed(x).dtype == dtype
    with pytest.raises(ValueError, match="form"):
        layer.deployable("sparse")


def test_dense_and_low_rank_deploy_as_themselves() -> None:
    for layer in (Dense(8, 4), LowRank(8, 4, rank=2)):
        assert layer.deployable("fft") is layer
        assert layer.deployable("dense") is layer


def test_deploy_replaces_nested_toeplitz_layers_in_a_copy() -> None:
    model = nn.Sequential(
        ToeplitzLike(32, 48, displacement_rank=2),
        nn.ReLU(),
        nn.Sequential(LowRank(48, 48, rank=4), ToeplitzLike(48, 10, displacement_rank=1)),
        Dense(10, 3),
    )
    x = torch.randn(6, 32)
    expected = model(x)
    for form, kind in (("fft", ToeplitzFFT), ("fftmm", ToeplitzMM), ("dense", Dense)):
        deployed = deploy(model, form)
        assert not any(isinstance(m, ToeplitzLike) for m in deployed.modules())
        assert isinstance(deployed[0], kind) and isinstance(deployed[2][1], kind)
        assert isinstance(deployed[2][0], LowRank) and deployed[2][0] is not model[2][0]
        assert relative_error(deployed(x), expected) < 1e-5
    assert isinstance(model[0], ToeplitzLike)  # the original is untouched
    assert isinstance(deploy(ToeplitzLike(8, 8, displacement_rank=1), "fft"), ToeplitzFFT)
    with pytest.raises(ValueError, match="form"):
        deploy(model, "onnx")


def test_cached_spectra_follow_parameter_updates() -> None:
    layer = ToeplitzLike(64, 64, displacement_rank=2)
    x = torch.randn(3, 64)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    with torch.no_grad():
        before = layer(x)
        layer.g.mul_(2.0)
        assert relative_error(layer(x), x @ layer.to_dense().T + layer.bias) < 1e-5
    layer(x).pow(2).sum().backward()
    optimizer.step()
    with torch.inference_mode():
        after = layer(x)
        assert relative_error(after, x @ layer.to_dense().T + layer.bias) < 1e-5
    assert not torch.allclose(before, after)
    layer.load_state_dict(ToeplitzLike(64, 64, displacement_rank=2).state_dict())
    with torch.no_grad():
        assert relative_error(layer(x), x @ layer.to_dense().T + layer.bias) < 1e-5
    # Training after an inference-mode call still works (no inference tensors kept for autograd).
    layer(x).sum().backward()
    assert layer.g.grad is not None and torch.isfinite(layer.g.grad).all()


def test_input_gradient_through_frozen_layer_after_inference() -> None:
    layer = ToeplitzLike(32, 32, displacement_rank=2).requires_grad_(False)
    x = torch.randn(2, 32, requires_grad=True)
    with torch.inference_mode():
        layer(x.detach())
    layer(x).pow(2).sum().backward()
    w = layer.to_dense()
    y = x.detach() @ w.T + layer.bias
    assert relative_error(x.grad, 2 * y @ w) < 1e-5


def test_dtype_conversion_keeps_float64_accuracy() -> None:
    layer = ToeplitzLike(100, 100, displacement_rank=2)
    x = torch.randn(4, 100)
    layer(x)  # float32 constants first
    layer = layer.double()
    x = x.double()
    assert relative_error(layer(x), x @ explicit_weight(layer).T + layer.bias) <= 1e-10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda(dtype: torch.dtype) -> None:
    layer = ToeplitzLike(100, 150, displacement_rank=2, dtype=dtype)
    x = torch.randn(4, 100, dtype=dtype)
    expected = layer(x)
    layer = layer.cuda()
    y = layer(x.cuda())
    assert y.device.type == "cuda"
    assert relative_error(y.cpu(), expected) < 1e-5
    for form in ("fft", "dense"):
        assert relative_error(layer.deployable(form)(x.cuda()).cpu(), expected) < 1e-5
    y.sum().backward()
    assert layer.g.grad.device.type == "cuda"


def test_drop_in_for_linear() -> None:
    layer = ToeplitzLike(8, 8, False)  # the third positional argument is bias, as for nn.Linear
    assert layer.bias is None and "bias" not in dict(layer.named_parameters())
    assert "bias" in layer._parameters  # registered as None, like nn.Linear(bias=False)
    assert layer.displacement_rank == 1
    assert repr(layer) == "ToeplitzLike(in_features=8, out_features=8, displacement_rank=1, bias=False)"
    low = LowRank(8, 4, False, rank=2, dtype=torch.float64)
    assert low.bias is None and low.u.dtype == torch.float64
    assert repr(low) == "LowRank(in_features=8, out_features=4, rank=2, bias=False)"
    assert Dense(8, 4).weight.shape == nn.Linear(8, 4).weight.shape
    assert set(Dense(8, 4).state_dict()) == set(nn.Linear(8, 4).state_dict())
    assert ToeplitzLike(6, 4, device="meta").g.device.type == "meta"
    for bad, match in (
        (lambda: ToeplitzLike(0, 4), "features"),
        (lambda: LowRank(4, 4, rank=0), "rank must be at least 1"),
        (lambda: ToeplitzLike(4, 4, displacement_rank=0), "displacement rank must be at least 1"),
    ):
        with pytest.raises(ValueError, match=match):
            bad()


@pytest.mark.parametrize("mode", ["grad", "no_grad", "inference_mode", "eval"])
def test_in_place_data_changes_reach_forward_and_to_dense(mode: str) -> None:
    layer = ToeplitzLike(64, 96, displacement_rank=2, dtype=torch.float64)
    x = torch.randn(3, 64, dtype=torch.float64)
    context = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode,
               "eval": torch.no_grad}[mode]  # fmt: skip
    if mode == "eval":
        layer.eval()
    for change in (lambda: layer.g.data.mul_(2.0), lambda: layer.h.data[0, 1].add_(0.5)):
        with context():
            before_y, before_w = layer(x).detach().clone(), layer.to_dense().detach().clone()
        change()
        with context():
            after_y, after_w = layer(x).detach(), layer.to_dense().detach()
        assert not torch.allclose(before_w, after_w) and not torch.allclose(before_y, after_y)
        assert relative_error(after_w, explicit_weight(layer)) < 1e-12
        assert relative_error(after_y, x @ explicit_weight(layer).T + layer.bias.detach()) < 1e-12


@pytest.mark.parametrize("n", [1, 2, 3, 12, 64, 100, 257, 1024, 4096])
def test_fftmm_split_keeps_rows_near_sqrt_n(n: int) -> None:
    s = fftmm.split(n)
    length = n // 2 if n % 2 == 0 else n
    assert s.cols * s.skew == length and s.cols * s.rows == n
    assert s.cols <= fftmm.MAX_COLS
    if n in (1024, 4096):
        assert s.cols == 32  # 32 x 32 and 128 x 32: the sizes the benchmarks chose


def test_fftmm_real_blocks_are_complex_products() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))
    z = rng.standard_normal(4) + 1j * rng.standard_normal(4)
    stored = {"planar": lambda v: np.concatenate([v.real, v.imag]),
              "interleaved": lambda v: np.stack([v.real, v.imag], -1).ravel(), "real": lambda v: v.real}  # fmt: skip
    for inp in ("planar", "interleaved"):
        for out in ("planar", "interleaved", "real"):
            np.testing.assert_allclose(fftmm.real_block(a, inp, out) @ stored[inp](z), stored[out](a @ z))
    np.testing.assert_allclose(fftmm.real_block(a, "real", "planar") @ z.real, stored["planar"](a @ z.real))
