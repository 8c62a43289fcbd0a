"""Export a model to one self-contained, reproducible ONNX file.

``torch.onnx.export(..., dynamo=True)`` is the only exporter that handles the FFT form of
Toeplitz-like layers (ONNX ``DFT``, opset >= 18). Export a model after
:func:`nas.layers.deploy`: training-time Toeplitz-like layers use complex tensors, which the
exporter refuses.

The file is reproducible: the exporter's per-node metadata (stack traces with file paths and line
numbers, FX node dumps) is dropped, so the same graph with the same weights gives the same bytes
wherever and whenever it is exported, and content hashes can address it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx.numpy_helper
import torch
from torch import nn

from nas.layers import ToeplitzLike

__all__ = ["ExportError", "export_like", "export_onnx"]

INPUT_NAME = "x"
OUTPUT_NAME = "y"
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")


def _reuse_op_registry() -> None:
    """Build torch's ATen-to-ONNX op registry once per process instead of once per export.

    ``torch.onnx.export`` rebuilds it from onnxscript's torchlib on every call (about 1 s of the
    1.3 s a small model takes here); a study exports two forms per trial, so this is most of the
    engine's overhead. The registry is read-only during an export, so sharing it is safe. Guarded:
    a torch without this internal hook simply exports at the slower speed.
    """
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:  # pragma: no cover - other torch versions
        return
    registry = _registration.ONNXRegistry
    build = registry.__dict__.get("from_torchlib")
    if not isinstance(build, classmethod) or getattr(build.__func__, "_nas_cached", False):
        return
    built: dict[tuple[type, int], object] = {}

    def from_torchlib(cls, opset_version=_registration._constants.TORCHLIB_OPSET):
        key = (cls, opset_version)
        if key not in built:
            built[key] = build.__func__(cls, opset_version)
        return built[key]

    from_torchlib._nas_cached = True
    registry.from_torchlib = classmethod(from_torchlib)


_reuse_op_registry()


class ExportError(RuntimeError):
    """The exporter failed. ``log`` holds what it printed on the way."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


def export_onnx(module: nn.Module, in_features: int, path: Path, opset: int = 18, *, verbose: bool = False) -> Path:
    """Export ``module`` (input ``(batch, in_features)``) to the single ONNX file ``path``; return it.

    Input ``"x"`` has a dynamic batch axis, output ``"y"``. Weights are stored inside the file (no
    ``.onnx.data`` beside it). The module is traced in eval mode, on its own device and dtype, and
    left as it was. The exporter's output is swallowed unless ``verbose`` (and shown if it fails).
    """
    if any(isinstance(m, ToeplitzLike) for m in module.modules()):
        raise ExportError("the model has training-time Toeplitz-like layers: export nas.layers.deploy(model, form)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    reference = next(iter(module.parameters()), None)
    if reference is None:
        reference = next(iter(module.buffers()), torch.empty(0))
    # Batch 2, not 1: torch.export specialises a size-1 dimension and the axis would not stay dynamic.
    example = torch.zeros(2, in_features, dtype=reference.dtype, device=reference.device)
    training = module.training
    module.eval()
    try:
        with _quiet(verbose) as chatter:
            try:
                program = torch.onnx.export(
                    module,
                    (example,),
                    dynamo=True,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    opset_version=opset,
                    external_data=False,
                    verbose=verbose,
                )
            except Exception as exc:
                summary = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
                raise ExportError(
                    f"ONNX export of {type(module).__name__} failed: {summary}", chatter.getvalue()
                ) from exc
    finally:
        module.train(training)
    model = program.model_proto
    _strip_metadata(model)
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    onnx.save_model(model, path, save_as_external_data=False)
    return path


def export_like(template: Path, module: nn.Module, in_features: int, path: Path) -> Path:
    """Export ``module`` by reusing ``template``, an export of the same architecture with other weights.

    The exporter names initializers after ``state_dict`` keys, so swapping their values is all a
    retrained model needs, in milliseconds instead of the second a trace takes. The result is
    checked against ``module`` in onnxruntime; if an initializer was folded into something the swap
    cannot reach, the outputs differ and the model is exported afresh instead.
    """
    model = onnx.load(template)
    state = {name: tensor.detach().cpu() for name, tensor in module.state_dict().items()}
    for initializer in model.graph.initializer:
        if initializer.name in state:
            value = state[initializer.name].numpy()
            initializer.CopyFrom(onnx.numpy_helper.from_array(value, initializer.name))
    onnx.save_model(model, path, save_as_external_data=False)
    if _matches(path, module, in_features):
        return path
    return export_onnx(module, in_features, path)


def _matches(path: Path, module: nn.Module, in_features: int) -> bool:
    import onnxruntime

    x = torch.randn(3, in_features, generator=torch.Generator().manual_seed(0))
    reference = next(iter(module.parameters()))
    with torch.no_grad():
        expected = module.eval()(x.to(reference)).cpu().numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: x.numpy().astype(expected.dtype)})[0]
    scale = max(1.0, float(abs(expected).max()))
    return got.shape == expected.shape and float(abs(got - expected).max()) <= 1e-4 * scale


def _strip_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's provenance (stack traces, paths, FX dumps): keep graph and weights only."""
    del model.metadata_props[:]
    model.doc_string = ""
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        graph.doc_string = ""
        for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
            del value.metadata_props[:]
            value.doc_string = ""
        for node in graph.node:
            _name_by_module(node)
            del node.metadata_props[:]
            node.doc_string = ""
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)
    for function in model.functions:
        del function.metadata_props[:]
        for node in function.node:
            del node.metadata_props[:]
            node.doc_string = ""


def _name_by_module(node: onnx.NodeProto) -> None:
    """Prefix a node's name with the top-level module it came from (``/0/node_mul_7``).

    The exporter's name scopes go with the rest of the metadata; this keeps the one fact a profile
    needs (which layer a node belongs to) in a reproducible form.
    """
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = [part.strip(" '\"") for part in prop.value.strip("[]").split(",")]
            if len(scopes) > 1 and scopes[1]:
                node.name = f"/{scopes[1]}/{node.name}"
            return


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[io.StringIO]:
    """Capture the exporter's prints, warnings and log records unless ``verbose``."""
    chatter = io.StringIO()
    if verbose:
        yield chatter
        return
    # torch attaches its own handlers to some of these loggers: swap them all for one into ``chatter``.
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    saved = [(logger.level, logger.propagate, logger.handlers[:]) for logger in loggers]
    handler = logging.StreamHandler(chatter)
    try:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
            logger.propagate = False
            logger.handlers[:] = [handler]
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(chatter),
            contextlib.redirect_stderr(chatter),
        ):
            warnings.simplefilter("ignore")
            yield chatter
    finally:
        for logger, (level, propagate, handlers) in zip(loggers, saved, strict=True):
            logger.setLevel(level)
            logger.propagate = propagate
            logger.handlers[:] = handlers
