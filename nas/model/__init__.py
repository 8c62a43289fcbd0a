"""The model an architecture spec describes: built in PyTorch, exported to ONNX in a deployed form,
trained. Imported on first use (``from nas.model import export_onnx`` does not load the trainer)."""

from device_agents.lazy import lazy_face

_EXPORTS = {
    "ACTIVATIONS": "_build", "build_model": "_build", "deployed": "_build", "spec_seed": "_build",
    "INPUT_NAME": "_export", "OUTPUT_NAME": "_export", "ExportError": "_export", "OnnxOps": "_export",
    "build_onnx": "_export", "export_onnx": "_export",
    "TrainingDiverged": "_train", "TrainResult": "_train", "accuracy": "_train", "train": "_train", "warm_up": "_train",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
