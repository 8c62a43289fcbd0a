"""Hardware-aware architecture search over dense, low-rank and Toeplitz-like layers.

``nas.load_model(arch_path, weights_path)`` rebuilds the trained model of a ``nas pick`` bundle;
``nas.export_onnx(module, in_features, path)`` writes a deployed model to ONNX. Both are imported on
first use, so that ``import nas.spec`` and friends stay light. ``docs/architecture.md`` maps the
packages.
"""

from device_agents.lazy import lazy_face

_EXPORTS = {"load_model": "results", "export_onnx": "model"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
