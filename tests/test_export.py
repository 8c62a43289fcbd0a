"""ONNX built from deployed models: self-contained, reproducible, quiet, equal to PyTorch in onnxruntime."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from nas.layers import Dense, LowRank, ToeplitzLike, deploy
from nas.model import ExportError, export_onnx

IN_FEATURES = 100


FORMS = ("fft", "fftmm", "dense")
ALLOWED_FFTMM_OPS = {"MatMul", "Mul", "Add", "Reshape", "Transpose", "Slice", "Gemm", "Relu", "Tanh", "Erf",
                     "Identity"}  # fmt: skip


def make_model() -> nn.Module:
    """Every kind; even and odd widths; Toeplitz-like layers wider (100 -> 257) and narrower (257 -> 64)."""
    torch.manual_seed(0)
    return nn.Sequential(
        ToeplitzLike(IN_FEATURES, 257, displacement_rank=2), nn.ReLU(),
        ToeplitzLike(257, 64, displacement_rank=1), nn.GELU(),
        ToeplitzLike(64, 33, False, displacement_rank=3), nn.Tanh(),
        ToeplitzLike(33, 40, displacement_rank=1), nn.ReLU(),
        LowRank(40, 32, rank=8), nn.ReLU(), Dense(32, 10),
    )  # fmt: skip


def run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    assert [o.name for o in session.get_outputs()] == ["y"]
    return session.run(None, {"x": x})[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return make_model().eval()


@pytest.fixture(scope="module")
def exported(model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("onnx")
    return {form: export_onnx(deploy(model, form), IN_FEATURES, out / f"{form}.onnx") for form in FORMS}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("batch", [1, 5])
def test_onnxruntime_matches_pytorch(model: nn.Module, exported: dict[str, Path], form: str, batch: int) -> None:
    x = torch.randn(batch, IN_FEATURES)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(run(exported[form], x.numpy()), expected, rtol=1e-4, atol=1e-4)


def test_graphs(exported: dict[str, Path]) -> None:
    fft = onnx.load(str(exported["fft"]))
    dense = onnx.load(str(exported["dense"]))
    onnx.checker.check_model(fft, full_check=True)
    fftmm = onnx.load(str(exported["fftmm"]))
    for model in (fft, fftmm, dense):
        onnx.checker.check_model(model, full_check=True)
    fft_ops = [node.op_type for node in fft.graph.node]
    assert fft_ops.count("DFT") == 16  # four per Toeplitz-like layer: only the x-dependent FFTs
    assert max(np.prod(init.dims) for init in fft.graph.initializer) < 257 * 64  # no matrix inside
    assert "DFT" not in [node.op_type for node in dense.graph.node]
    assert {node.op_type for node in fftmm.graph.node} <= ALLOWED_FFTMM_OPS  # runs without DFT
    batch = fft.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")  # dynamic batch axis
    assert fft.opset_import[0].version >= 18
    for path in exported.values():
        assert not path.with_name(path.name + ".data").exists()
        assert not [i for i in onnx.load(str(path)).graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]


def test_export_in_a_fresh_process_is_quiet_and_identical(
    model: nn.Module, exported: dict[str, Path], tmp_path: Path
) -> None:
    torch.save(model, tmp_path / "model.pt")
    code = (
        "import sys, torch; from pathlib import Path; from nas import export_onnx; "
        "from nas.layers import deploy; m = torch.load(sys.argv[1], weights_only=False); "
        "[export_onnx(deploy(m, f), int(sys.argv[2]), Path(sys.argv[3]) / f'{f}.onnx') for f in sys.argv[4:]]"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "model.pt"), str(IN_FEATURES), str(tmp_path), *FORMS],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""  # quiet: usable under a progress bar
    for form in FORMS:  # the same model deployed and exported twice: the same bytes
        assert sha256(tmp_path / f"{form}.onnx") == sha256(exported[form])


@pytest.mark.parametrize("threads", [1, 2])
def test_the_bytes_do_not_depend_on_torch_threads(model: nn.Module, exported: dict[str, Path], tmp_path: Path,
                                                  threads: int) -> None:
    """torch's FFTs round differently on different thread counts; the deployed weights must not."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for form in FORMS:
            path = export_onnx(deploy(model, form), IN_FEATURES, tmp_path / f"{form}.onnx")
            assert sha256(path) == sha256(exported[form]), form
    finally:
        torch.set_num_threads(saved)


def test_fft_forms_are_smaller_than_dense_at_1024(tmp_path: Path) -> None:
    layer = ToeplitzLike(1024, 1024, displacement_rank=1)
    sizes = {form: export_onnx(deploy(layer, form), 1024, tmp_path / f"{form}.onnx").stat().st_size for form in FORMS}
    assert sizes["fft"] * 10 <= sizes["dense"]
    assert sizes["fftmm"] * 5 <= sizes["dense"]  # O(n sqrt n): per-row matrices, 0.56 MB against 4.2 MB


@pytest.mark.parametrize(("n", "m", "r"), [(1024, 1024, 1), (1024, 1024, 8), (4096, 4096, 1), (100, 257, 2)])
def test_fftmm_layer_is_a_few_nodes(n: int, m: int, r: int) -> None:
    """onnxruntime pays a few microseconds per node, about a 1024 x 1024 Gemm at batch 1: the fftmm
    layer is five MatMuls and their Reshapes/Transposes, whatever n and r (was ~156 nodes)."""
    from nas.model import build_onnx

    model = build_onnx(deploy(ToeplitzLike(n, m, displacement_rank=r), "fftmm"), n)
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("MatMul") == 5
    assert len(ops) <= 19  # 5 MatMul, 4 Transpose, <= 7 Reshape, Slice, bias Add, output Identity


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("n", "m"), [(64, 64), (63, 64), (16, 50), (50, 16), (12, 12)])
def test_single_layers_match_in_every_form(tmp_path: Path, form: str, n: int, m: int) -> None:
    torch.manual_seed(n + m)
    x = torch.randn(4, n)
    for kind, layer in (("toeplitz", ToeplitzLike(n, m, displacement_rank=2)), ("lowrank", LowRank(n, m, rank=3)),
                        ("dense", Dense(n, m, bias=False))):  # fmt: skip
        with torch.no_grad():
            expected = layer(x).numpy()
        path = export_onnx(deploy(layer, form), n, tmp_path / f"{kind}.onnx")
        np.testing.assert_allclose(run(path, x.numpy()), expected, rtol=1e-4, atol=1e-5)


def test_no_form_for_unknown_layers(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="Conv1d"):
        export_onnx(nn.Sequential(nn.Conv1d(1, 1, 1)), 8, tmp_path / "model.onnx")


def test_training_layers_must_be_deployed_first(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="deploy"):
        export_onnx(nn.Sequential(ToeplitzLike(8, 8, displacement_rank=1)), 8, tmp_path / "model.onnx")


@pytest.mark.parametrize(("n", "m"), [(64, 64), (63, 63), (64, 16), (16, 50)])
def test_a_toeplitz_layers_dense_form_is_written_transposed(tmp_path: Path, n: int, m: int) -> None:
    """Its weight is built as W^T (contiguous) and written so, with transB=0, and still computes x W^T + b."""
    torch.manual_seed(n)
    layer = ToeplitzLike(n, m, displacement_rank=2)
    path = export_onnx(deploy(layer, "dense"), n, tmp_path / "dense.onnx")
    (gemm,) = [node for node in onnx.load(str(path)).graph.node if node.op_type == "Gemm"]
    assert {a.name: a.i for a in gemm.attribute}["transB"] == 0
    x = torch.randn(3, n)
    with torch.no_grad():
        expected = layer(x).numpy()
    np.testing.assert_allclose(run(path, x.numpy()), expected, rtol=1e-4, atol=1e-5)
