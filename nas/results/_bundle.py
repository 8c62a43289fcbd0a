"""Write a picked trial's deployable bundle: one folder to copy to the device.

``write_bundle`` writes, into one folder:

``model.onnx``    the trained model in the deployed form that measured fastest on the agent
``model.pt``      the trained weights (``state_dict`` of the model ``build_model(arch)`` makes)
``arch.json``     the architecture spec (``nas.spec.ArchSpec``)
``metrics.json``  accuracy, the check of ONNX against PyTorch, per-agent measurements, fingerprints
``README.md``     how to run the model with onnxruntime on the device

Nothing is written unless the ONNX model's outputs match PyTorch's on the validation data: the files
are made in a staging folder beside ``out`` and moved in only once checked, so a failed pick leaves
no half bundle behind.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from device_agents import file_sha256
from nas.errors import UserError
from nas.model import build_model, deployed
from nas.results._pick import Choice
from nas.results._readme import bundle_readme
from nas.spec import FORMS
from nas.storage import study_dir
from nas.study import OpenedStudy, TrialRecord

BUNDLE_FILES = ("model.onnx", "model.pt", "arch.json", "metrics.json", "README.md")
# ONNX and PyTorch compute the same function in a different order (FFTs in particular): allow float32
# rounding relative to the size of the logits.
RTOL = 1e-4
ATOL = 1e-4


@dataclass
class Bundle:
    """What ``write_bundle`` wrote: the folder, and the content of its metrics.json."""

    folder: Path
    metrics: dict[str, Any]


def default_folder(name: str, trial: int) -> Path:
    """Where ``nas pick`` writes the bundle of ``trial`` unless told otherwise."""
    return study_dir(name) / "bundles" / f"trial-{trial}"


def write_bundle(opened: OpenedStudy, choice: Choice, out: Path, retrain_epochs: int | None = None,
                 form: str | None = None) -> Bundle:
    """Check and write the bundle of ``choice`` into ``out``; ``form`` overrides the winning form."""
    from nas.model import accuracy, export_onnx

    record = choice.record
    form = form or choice.form
    spec = record.spec.with_form(form) if form in FORMS else record.spec
    space, data = opened.space, opened.data
    if data.in_features != spec.in_features:
        raise UserError(f"dataset {space.data.dataset} has {data.in_features} features, trial "
                        f"{record.number} expects {spec.in_features}")
    store = opened.artifacts
    artifacts = record.data.artifacts or {}
    model = build_model(spec)
    with tempfile.TemporaryDirectory(prefix="nas-weights-") as tmp:
        weights = store.download(artifacts["weights"], Path(tmp) / "model.pt")
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    search_accuracy = record.data.accuracy
    retrain = None
    if retrain_epochs:
        model = build_model(spec, seed=space.training.seed)
        result = space.training.run(model, data, epochs=retrain_epochs)
        model.eval()
        retrain = {"epochs": retrain_epochs, "accuracy": result.accuracy, "seconds": result.seconds,
                   "search_epochs": record.data.epochs, "search_accuracy": search_accuracy}

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=out.parent) as tmp:
        staging = Path(tmp)
        onnx_path = staging / "model.onnx"
        stored = (artifacts.get("onnx") or {}).get(form)
        if stored and not retrain:
            store.download(stored, onnx_path)
        else:
            export_onnx(deployed(model, spec), spec.in_features, onnx_path)
        check, onnx_logits = check_onnx(model, onnx_path, data.X_val)
        onnx_accuracy = float(np.mean(onnx_logits.argmax(1) == data.y_val.numpy()))
        torch.save(model.state_dict(), staging / "model.pt")
        (staging / "arch.json").write_text(json.dumps(spec.to_dict(), indent=2, sort_keys=True) + "\n")
        metrics = {
            "schema": 1,
            "study": opened.name,
            "trial": record.number,
            "code": spec.code,
            "widths": spec.widths,
            "form": spec.form,
            "agent": choice.agent,
            "pareto": choice.on_front,
            "notes": choice.notes,
            "params": sum(p.numel() for p in model.parameters()),
            "onnx_bytes": onnx_path.stat().st_size,
            "onnx_sha256": file_sha256(onnx_path),
            "accuracy": {"search": search_accuracy, "bundle": accuracy(model, data.X_val, data.y_val),
                         "onnx": onnx_accuracy},
            "retrain": retrain,
            "onnx_check": check,
            "measurements": _measurement_summary(record),
            "fingerprints": _fingerprints(record),
            "input": {"name": check["input_name"], "shape": ["batch", spec.in_features], "dtype": "float32"},
            "output": {"shape": ["batch", spec.num_classes], "meaning": "class logits (argmax = class)"},
            "data": space.data.model_dump(mode="json"),
            "training": space.training.model_dump(mode="json"),
            "measure": opened.config.measure.model_dump(mode="json"),
        }
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (staging / "README.md").write_text(bundle_readme(metrics))
        out.mkdir(parents=True, exist_ok=True)
        for name in BUNDLE_FILES:
            (staging / name).replace(out / name)
    return Bundle(out, metrics)


def check_onnx(model: nn.Module, onnx_path: Path, X: torch.Tensor) -> tuple[dict[str, Any], np.ndarray]:
    """Compare the ONNX file's outputs with the PyTorch model's on ``X``; raise if they differ.

    Returns the comparison's figures and the ONNX outputs.
    """
    with torch.no_grad():
        expected = model.eval()(X).numpy()
    input_name, got = _onnx_outputs(onnx_path, X.numpy().astype(np.float32))
    if got.shape != expected.shape:
        raise UserError(f"the ONNX model's output has shape {got.shape}, PyTorch's {expected.shape}; "
                        "bundle not written")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    tolerance = ATOL + RTOL * float(np.max(np.abs(expected))) if expected.size else ATOL
    agreement = float(np.mean(got.argmax(1) == expected.argmax(1))) if got.size else 1.0
    if not diff <= tolerance:
        raise UserError(f"the ONNX model's outputs differ from PyTorch's by up to {diff:.3g} on {len(X)} "
                        f"validation samples (tolerance {tolerance:.3g}); bundle not written")
    figures = {"samples": int(len(X)), "max_abs_diff": diff, "tolerance": tolerance,
               "argmax_agreement": agreement, "input_name": input_name}
    return figures, got


def _onnx_outputs(path: Path, X: np.ndarray) -> tuple[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return name, session.run(None, {name: X})[0]


def _measurement_summary(record: TrialRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for agent, measured in record.data.agents.items():
        out[agent] = {"winner": measured.winner, "forms": {},
                      "paired": measured.paired.model_dump(exclude={"runner"}) if measured.paired else None}
        for form, figures in measured.forms.items():
            out[agent]["forms"][form] = {
                **figures.model_dump(exclude={"runner"}),
                "runs": figures.runner.latency_ms.count if figures.runner and figures.runner.latency_ms else None,
                "session_ms": figures.runner.session_ms if figures.runner else None,
            }
    return out


def _fingerprints(record: TrialRecord) -> dict[str, Any]:
    out = {}
    for agent, measured in record.data.agents.items():
        chosen = measured.chosen
        if chosen is not None and chosen.runner is not None and chosen.runner.fingerprint:
            out[agent] = chosen.runner.fingerprint
    return out

