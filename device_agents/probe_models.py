"""Tiny ONNX models built on the host to probe a device: does ``DFT`` run, and a calibration model.

Built with ``onnx.helper`` (no torch needed), written once under ``nas_home()/probe_models`` and
uploaded to devices by content hash like any other model.
"""

from __future__ import annotations

from pathlib import Path

from device_agents._home import nas_home

DFT_OPSET = 18  # what torch's dynamo exporter emits for FFT layers (DFT-17 semantics, axis attribute)


def _save(model, path: Path) -> Path:  # noqa: ANN001 - onnx.ModelProto
    import onnx

    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)
    return path


def dft_model(path: Path, n: int = 16) -> Path:
    """A forward DFT over a real [1, n, 1] signal then its inverse: the ops the FFT layer form uses."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("DFT", ["x"], ["spectrum"], axis=1, onesided=0),
            helper.make_node("DFT", ["spectrum"], ["y"], axis=1, inverse=1),
        ],
        "nas_dft_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", DFT_OPSET)], producer_name="nas")
    model.ir_version = 8
    return _save(model, path)


def mlp_model(path: Path, width: int = 64, depth: int = 2, seed: int = 0) -> Path:
    """A small dense MLP (MatMul + Relu) on a [batch, width] input; larger width = slower."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, current = [], [], "x"
    for layer in range(depth):
        weight = f"w{layer}"
        inits.append(
            numpy_helper.from_array(
                (rng.standard_normal((width, width)) / width**0.5).astype(np.float32), weight
            )
        )
        nodes.append(helper.make_node("MatMul", [current, weight], [f"h{layer}"]))
        nodes.append(helper.make_node("Relu", [f"h{layer}"], [f"a{layer}"]))
        current = f"a{layer}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(
        nodes,
        f"nas_mlp_{width}x{depth}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nas")
    model.ir_version = 8
    return _save(model, path)


def probe_models() -> tuple[Path, Path]:
    """(DFT probe model, calibration model), built once under ``nas_home()``."""
    folder = nas_home() / "probe_models"
    dft = folder / f"dft-opset{DFT_OPSET}.onnx"
    calibration = folder / "calibration-mlp512x4.onnx"
    if not dft.exists():
        dft_model(dft)
    if not calibration.exists():
        mlp_model(calibration, width=512, depth=4)
    return dft, calibration
