"""Write a deployed model to one self-contained, reproducible ONNX file, straight from its weights.

No tracing: the graph is built node by node with the ``onnx`` package's helpers. Dense layers are
a ``Gemm``, low-rank layers two; activations are their ONNX operators; a deployed Toeplitz-like
layer (:class:`~nas.layers.ToeplitzFFT`, :class:`~nas.layers.ToeplitzMM`) runs its own
``compute`` against :class:`OnnxOps`, the same code that is its PyTorch ``forward``, so the graph
is that computation operation for operation, with the precomputed constants as initializers.
This takes milliseconds where ``torch.onnx.export`` took 0.3-1.5 s per model, and nothing else
needs the torch exporter.

The file is reproducible: names are positional (``0.weight``, ``n12``), there is no timestamp or
provenance, so the same model with the same weights gives the same bytes and content hashes can
address it. Export a model after :func:`nas.layers.deploy`: a training-time Toeplitz-like layer
has no single graph (choose its form first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from torch import Tensor, nn

from nas.layers import Dense, DeployedToeplitz, LowRank, ToeplitzLike

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "ExportError", "OnnxOps", "build_onnx", "export_onnx"]

INPUT_NAME = "x"
OUTPUT_NAME = "y"
#: IR version 8 (onnxruntime >= 1.14) carries opset 18; older runtimes on devices can load it.
IR_VERSION = 8


class ExportError(RuntimeError):
    """The model cannot be written to ONNX (a layer without an ONNX form)."""


class OnnxOps:
    """:class:`nas.layers.ops.TensorOps` that appends ONNX nodes; values are tensor names."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype  # of the model's numbers, for the constants the exporter adds itself
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        self._by_shape: dict[tuple, list[str]] = {}  # equal constants (e.g. one width's DFT matrices) stored once
        self.prefix = ""
        self.module: nn.Module | None = None

    # -- bookkeeping ---------------------------------------------------------------------------
    def node(self, op: str, inputs: Sequence[str], **attributes: object) -> str:
        name = f"n{len(self.nodes)}"
        # the node (not its output) is named after its top-level module (``/0/n12``): a profile groups by it
        layer = self.prefix.split(".")[0]
        node_name = f"/{layer}/{name}" if layer else name
        self.nodes.append(helper.make_node(op, list(inputs), [name], name=node_name, **attributes))
        return name

    def initializer(self, name: str, value: np.ndarray) -> str:
        if name in self.initializers:
            return name
        value = np.ascontiguousarray(value)
        same_shape = self._by_shape.setdefault((value.dtype.str, value.shape), [])
        for other in same_shape:  # compared, not hashed: hashing every weight cost more than the export
            if np.array_equal(self.initializers[other], value):
                return other
        same_shape.append(name)
        self.initializers[name] = value
        return name

    def tensor(self, name: str, value: Tensor) -> str:
        """A module tensor as an initializer named after its place in the model (``0.weight``)."""
        return self.initializer(f"{self.prefix}{name}", value.detach().cpu().numpy())

    def _ints(self, values: Sequence[int]) -> str:
        key = "_".join(str(v).replace("-", "m") for v in values)
        return self.initializer(f"i64_{key}", np.array(values, dtype=np.int64))

    # -- TensorOps -----------------------------------------------------------------------------
    def constant(self, name: str) -> str:
        return self.tensor(name, self.module.get_buffer(name))

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.node("Reshape", [x, self._ints(shape)])

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        return self.node("Transpose", [x], perm=list(perm))

    def matmul(self, a: str, b: str) -> str:
        return self.node("MatMul", [a, b])

    def mul(self, a: str, b: str) -> str:
        return self.node("Mul", [a, b])

    def add(self, a: str, b: str) -> str:
        return self.node("Add", [a, b])

    def sub(self, a: str, b: str) -> str:
        return self.node("Sub", [a, b])

    def concat(self, xs: Sequence[str], axis: int) -> str:
        return self.node("Concat", list(xs), axis=axis)

    def sum(self, x: str, axis: int) -> str:
        return self.node("ReduceSum", [x, self._ints([axis])], keepdims=0)

    def slice_last(self, x: str, stop: int) -> str:
        return self.node("Slice", [x, self._ints([0]), self._ints([stop]), self._ints([-1])])

    def dft(self, x: str, axis: int, inverse: bool) -> str:
        return self.node("DFT", [x], axis=axis, inverse=int(inverse), onesided=0)

    # -- modules -------------------------------------------------------------------------------
    def module_graph(self, module: nn.Module, x: str, prefix: str = "") -> str:
        """Append ``module`` applied to ``x``; return the output's name."""
        self.prefix, self.module = prefix, module
        if isinstance(module, nn.Sequential):
            for name, child in module.named_children():
                x = self.module_graph(child, x, f"{prefix}{name}.")
            return x
        if isinstance(module, ToeplitzLike):
            raise ExportError("the model has training-time Toeplitz-like layers: export nas.layers.deploy(model, form)")
        if isinstance(module, DeployedToeplitz):
            return module.compute(self, x)
        if isinstance(module, (Dense, nn.Linear)):
            return self._gemm(x, "weight", module.bias)
        if isinstance(module, LowRank):
            return self._gemm(self._gemm(x, "v", None), "u", module.bias)
        if isinstance(module, nn.ReLU):
            return self.node("Relu", [x])
        if isinstance(module, nn.Tanh):
            return self.node("Tanh", [x])
        if isinstance(module, nn.GELU) and module.approximate == "none":
            return self._gelu(x)
        if isinstance(module, nn.Identity):
            return x
        raise ExportError(f"no ONNX form for {type(module).__name__} layers")

    def _gemm(self, x: str, weight: str, bias: Tensor | None) -> str:
        """``x W^T + b``. A weight held as the transpose of a contiguous ``W^T`` (the dense form of a
        Toeplitz-like layer is built that way) is written as ``W^T`` with ``transB=0``: no n x n copy."""
        value = self.module.get_parameter(weight)
        transposed = value.dim() == 2 and not value.is_contiguous() and value.t().is_contiguous()
        inputs = [x, self.tensor(weight, value.t() if transposed else value)]
        if bias is not None:
            inputs.append(self.tensor("bias", bias))
        return self.node("Gemm", inputs, transB=0 if transposed else 1)

    def _gelu(self, x: str) -> str:
        """``x/2 * (1 + erf(x / sqrt 2))`` (opset 18 has no ``Gelu``)."""
        dtype = self.dtype
        half = self.initializer(f"{dtype}_half", np.array(0.5, dtype=dtype))
        one = self.initializer(f"{dtype}_one", np.array(1.0, dtype=dtype))
        root = self.initializer(f"{dtype}_rsqrt2", np.array(1 / math.sqrt(2), dtype=dtype))
        erf = self.node("Erf", [self.mul(x, root)])
        return self.mul(self.mul(x, half), self.add(erf, one))


def build_onnx(module: nn.Module, in_features: int, opset: int = 18) -> onnx.ModelProto:
    """The ONNX model of ``module`` for input ``"x"`` of shape ``(batch, in_features)``, output ``"y"``."""
    reference = next(iter(module.parameters()), None)
    if reference is None:
        reference = next(iter(module.buffers()), None)
    dtype = np.dtype(np.float32) if reference is None else reference.detach().cpu().numpy().dtype
    ops = OnnxOps(dtype)
    output = ops.module_graph(module, INPUT_NAME)
    ops.nodes.append(helper.make_node("Identity", [output], [OUTPUT_NAME], name="output"))
    out_features = _out_features(module)
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    model = helper.make_model(
        helper.make_graph(
            ops.nodes,
            "nas",
            [helper.make_tensor_value_info(INPUT_NAME, elem, ["batch", in_features])],
            [helper.make_tensor_value_info(OUTPUT_NAME, elem, ["batch", out_features])],
        ),
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="nas",
    )
    model.ir_version = IR_VERSION
    for name, value in ops.initializers.items():  # straight into the model: large weights copied once
        tensor = model.graph.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(value.dtype)
        tensor.dims.extend(value.shape)
        tensor.raw_data = value.tobytes()
    return model


def export_onnx(module: nn.Module, in_features: int, path: Path, opset: int = 18) -> Path:
    """Write ``module`` (input ``(batch, in_features)``) to the single ONNX file ``path``; return it.

    Input ``"x"`` has a dynamic batch axis, output ``"y"``. Weights are stored inside the file (no
    ``.onnx.data`` beside it). The module is not run or changed.
    """
    path = Path(path)
    model = build_onnx(module, in_features, opset)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path


def _out_features(module: nn.Module) -> int | str:
    for layer in reversed(list(module.modules())):
        if hasattr(layer, "out_features"):
            return layer.out_features
    return "features"
