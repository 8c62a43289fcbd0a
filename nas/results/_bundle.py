"""Pick a trial and write a deployable bundle; load a bundled model back.

``choose`` finds the trial: the one asked for (``--trial N``), or the most accurate trained trial
that meets the latency/memory limits on an agent. ``write_bundle`` writes, into one folder:

``model.onnx``    the trained model in the deployed form that measured fastest on the agent
``model.pt``      the trained weights (``state_dict`` of the model ``build_model(arch)`` makes)
``arch.json``     the architecture spec (``nas.spec.ArchSpec``)
``metrics.json``  accuracy, the check of ONNX against PyTorch, per-agent measurements, fingerprints
``README.md``     how to run the model with onnxruntime on the device

Nothing is written unless the ONNX model's outputs match PyTorch's on the validation data.
``load_model(arch_path, weights_path)`` rebuilds the trained ``nn.Module`` from the two files.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from device_agents.base import file_sha256
from nas.errors import UserError
from nas.model import build_model, deployed
from nas.results._pareto import dominates, is_feasible, pareto_front
from nas.spec import FORMS, ArchSpec
from nas.storage import study_dir
from nas.study import OpenedStudy, TrialRecord

__all__ = ["Choice", "choose", "load_model", "write_bundle"]

BUNDLE_FILES = ("model.onnx", "model.pt", "arch.json", "metrics.json", "README.md")
# ONNX and PyTorch compute the same function in a different order (FFTs in particular): allow float32
# rounding relative to the size of the logits.
RTOL = 1e-4
ATOL = 1e-4


@dataclass
class Choice:
    """The picked trial, on which agent, and what the user should know about the choice."""

    trial: FrozenTrial
    record: TrialRecord
    agent: str
    on_front: bool
    notes: list[str] = field(default_factory=list)

    @property
    def form(self) -> str:
        """The deployed form that measured fastest on the agent ("-" without Toeplitz-like layers)."""
        winner = self.record.winner(self.agent)
        return winner or (self.record.spec.form if self.record.spec else "-")


def load_model(arch_path: str | Path, weights_path: str | Path) -> nn.Module:
    """The trained model of a bundle: ``arch.json`` rebuilt by ``build_model``, ``model.pt`` loaded.

    Returns the training-time form (in eval mode, on the CPU); ``nas.model.deployed(model, spec)``
    gives the form that ``model.onnx`` holds. Both compute the same function.
    """
    spec = ArchSpec.from_json(Path(arch_path).read_text())
    model = build_model(spec)
    state = torch.load(Path(weights_path), map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{weights_path} does not hold weights for the architecture in {arch_path} "
                         f"({spec.code}, {spec.widths}): {str(exc).splitlines()[0]}") from exc
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Choosing


def _describe(record: TrialRecord, agent: str) -> str:
    code = record.data.code or (record.spec.code if record.spec else "?")
    parts = [f"trial {record.number} ({code}"]
    if record.data.accuracy is not None:
        parts.append(f", accuracy {100 * record.data.accuracy:.2f}%")
    if record.latency_ms(agent) is not None:
        parts.append(f", {record.latency_ms(agent):.3g} ms")
    if record.model_peak_mib(agent) is not None:
        parts.append(f", model peak {record.model_peak_mib(agent):.1f} MiB")
    return "".join(parts) + ")"


def _dominator(trial: FrozenTrial, study: optuna.Study, front: list[FrozenTrial]) -> FrozenTrial | None:
    return next((other for other in front if dominates(other.values, trial.values, study.directions)), None)


def choose(opened: OpenedStudy, trial: int | None = None, max_latency_ms: float | None = None,
           max_model_peak_mib: float | None = None, agent: str | None = None) -> Choice:
    """The trial to bundle: ``trial`` itself, or the most accurate trained trial within the limits."""
    study, agent = opened.study, opened.agent(agent)
    front = pareto_front(study)
    on_front = {t.number for t in front}
    if trial is not None:
        return _choose_number(study, trial, agent, front)
    if max_latency_ms is None and max_model_peak_mib is None:
        raise UserError("give --trial N, or a limit to pick by (--max-latency-ms X, --max-model-peak-mib Y)")

    limits = [(what, limit, unit, getter) for what, limit, unit, getter in (
        ("latency", max_latency_ms, "ms", lambda r: r.latency_ms(agent)),
        ("model peak memory", max_model_peak_mib, "MiB", lambda r: r.model_peak_mib(agent)),
    ) if limit is not None]
    wanted = " and ".join(f"{what} <= {limit:g} {unit}" for what, limit, unit, _ in limits) + f" on {agent}"
    candidates = [(t, TrialRecord.from_trial(t)) for t in study.get_trials(deepcopy=False)
                  if is_feasible(t)]
    candidates = [(t, r) for t, r in candidates if r.data.trained and r.data.accuracy is not None]
    if not candidates:
        raise UserError(f"study {study.study_name!r} has no trained feasible trial yet "
                        f"({len(study.trials)} trials); run 'nas study resume {study.study_name}'")
    meeting, misses = [], {}
    for frozen, record in candidates:
        problems = []
        for what, limit, unit, getter in limits:
            value = getter(record)
            if value is None:
                problems.append((math.inf, f"not measured on {agent}"))
            elif value > limit:
                problems.append(((value - limit) / limit,
                                 f"{what} {value:.3g} {unit} > {limit:g} {unit}, {value - limit:.3g} {unit} "
                                 f"({100 * (value - limit) / limit:.0f}%) over"))
        if problems:
            misses[frozen.number] = problems
        else:
            meeting.append((frozen, record))
    if not meeting:
        frozen, record = min(candidates, key=lambda c: (max(p[0] for p in misses[c[0].number]),
                                                        -c[1].data.accuracy))
        worst = "; ".join(text for _, text in misses[frozen.number])
        raise UserError(f"no trained trial meets {wanted} ({len(candidates)} checked); "
                        f"closest: {_describe(record, agent)}: {worst}")
    frozen, record = max(meeting, key=lambda c: (c[1].data.accuracy, c[0].number in on_front,
                                                 -(c[1].latency_ms(agent) or math.inf), -c[0].number))
    notes = [f"meets {wanted}"]
    excluded = [(t, r) for t, r in candidates if t.number in on_front and t.number in misses]
    for t, r in sorted(excluded, key=lambda c: -c[1].data.accuracy):
        notes.append(f"excluded {_describe(r, agent)}: " + "; ".join(text for _, text in misses[t.number]))
    if frozen.number not in on_front:
        notes.append(f"trial {frozen.number} is not on the Pareto set over the study's objectives: "
                     "every more accurate trial misses the limits")
    return Choice(frozen, record, agent, frozen.number in on_front, notes)


def _choose_number(study: optuna.Study, number: int, agent: str, front: list[FrozenTrial]) -> Choice:
    trials = study.get_trials(deepcopy=False)
    found = next((t for t in trials if t.number == number), None)
    if found is None:
        span = f"trials 0-{trials[-1].number}" if trials else "no trials"
        raise UserError(f"study {study.study_name!r} has no trial {number} ({span})")
    record = TrialRecord.from_trial(found)
    if found.state != TrialState.COMPLETE:
        reason = record.data.fail_reason
        raise UserError(f"trial {number} did not complete (state {found.state.name}"
                        f"{': ' + reason if reason else ''}); pick a complete trial ('nas report "
                        f"{study.study_name}' lists them)")
    if record.data.infeasible or not record.data.artifacts:
        why = "; ".join(record.data.infeasible) or "it has no stored weights"
        raise UserError(f"trial {number} was not trained: {why}")
    if record.winner(agent) is None:
        raise UserError(f"trial {number} was not measured on agent {agent!r}")
    notes = []
    on_front = any(t.number == number for t in front)
    if not on_front and is_feasible(found):
        dominator = _dominator(found, study, front)
        if dominator is not None:
            notes.append(f"trial {number} is not on the Pareto set: trial {dominator.number} is at least "
                         "as good on every objective")
    return Choice(found, record, agent, on_front, notes)


# ----------------------------------------------------------------------------------------------
# Writing the bundle


@dataclass
class Bundle:
    folder: Path
    metrics: dict[str, Any]


def default_folder(name: str, trial: int) -> Path:
    return study_dir(name) / "bundles" / f"trial-{trial}"


def _onnx_outputs(path: Path, X: np.ndarray) -> tuple[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return name, session.run(None, {name: X})[0]


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


def _measurement_summary(record: TrialRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for agent, measured in record.data.agents.items():
        out[agent] = {"winner": measured.winner, "forms": {},
                      "paired": measured.paired.model_dump(exclude={"runner"}) if measured.paired else None}
        for form, figures in measured.forms.items():
            out[agent]["forms"][form] = {
                **figures.model_dump(exclude={"runner"}),
                "runs": figures.runner.get("latency_ms", {}).get("count"),
                "session_ms": figures.runner.get("session_ms"),
            }
    return out


def _fingerprints(record: TrialRecord) -> dict[str, Any]:
    out = {}
    for agent, measured in record.data.agents.items():
        chosen = measured.chosen
        if chosen is not None and chosen.runner.get("fingerprint"):
            out[agent] = chosen.runner["fingerprint"]
    return out


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


_PREPROCESSING = {
    "digits": "scikit-learn's 8x8 digits, flattened to 64 values and divided by 16 (range 0-1)",
    "mnist": "28x28 MNIST images, flattened to 784 values and divided by 255 (range 0-1)",
}


def bundle_readme(metrics: dict[str, Any]) -> str:
    """The bundle's README: what it is, its figures, how to run it with onnxruntime."""
    agent = metrics["agent"]
    forms = metrics["measurements"].get(agent, {}).get("forms", {})
    measured = forms.get(metrics["form"]) or next(iter(forms.values()), {})
    dataset = (metrics.get("data") or {}).get("dataset", "?")
    prep = _PREPROCESSING.get(dataset.split(":")[0], f"preprocessed like the training data ({dataset})")
    measure = metrics.get("measure") or {}
    threads = measure.get("threads", 1)
    n_in = metrics["input"]["shape"][1]
    input_name = metrics["input"]["name"]
    acc = metrics["accuracy"]
    searched = f", {100 * acc['search']:.2f}% at search time" if acc.get("search") is not None else ""
    lines = [
        f"# {metrics['study']}, trial {metrics['trial']}: `{metrics['code']}` ({metrics['widths']})",
        "",
        f"An MLP with layers `{metrics['code']}` (T*r*: Toeplitz-like of displacement rank *r*, "
        f"L*k*: low-rank *k*, D: dense), {metrics['params']:,} parameters, picked from study "
        f"`{metrics['study']}`.",
        "",
        f"- validation accuracy: {100 * acc['onnx']:.2f}% (this ONNX file){searched}",
    ]
    if metrics.get("retrain"):
        r = metrics["retrain"]
        lines.append(f"- retrained from scratch for {r['epochs']} epochs (search: {r['search_epochs']}): "
                     f"{100 * r['accuracy']:.2f}%")
    if measured:
        lines.append(f"- on `{agent}`: median {measured['median_ms']:.3g} ms, "
                     f"p90 {measured['p90_ms']:.3g} ms, "
                     f"the model's own peak memory {measured['model_peak_mib']:.1f} MiB "
                     f"(batch {measure.get('batch', 1)}, {threads} "
                     f"thread{'s' if threads != 1 else ''}; latency does not depend on the weights)")
    form_note = {
        "fft": "the FFT form of the Toeplitz-like layers (ONNX `DFT`, opset 18: needs onnxruntime >= 1.16)",
        "fftmm": "the FFT form of the Toeplitz-like layers written as small matrix products (`MatMul`, `Mul`, "
                 "`Add`/`Sub`, `Reshape`: any ONNX runtime)",
        "dense": "the Toeplitz-like layers materialised as dense matrices (plain `Gemm`)",
    }
    if metrics["form"] in form_note:
        lines.append(f"- deployed form: `{metrics['form']}`, {form_note[metrics['form']]}, the faster one on "
                     f"`{agent}`")
    lines += [
        f"- ONNX checked against PyTorch on {metrics['onnx_check']['samples']} validation samples: max abs "
        f"difference {metrics['onnx_check']['max_abs_diff']:.2g}",
        "",
        "## Files",
        "",
        f"- `model.onnx`: the model to deploy; input `{input_name}`, float32 of shape (batch, {n_in}); "
        "output: class logits",
        "- `model.pt` + `arch.json`: the trained PyTorch model, "
        "`nas.load_model(\"arch.json\", \"model.pt\")`",
        "- `metrics.json`: accuracy, the ONNX check, every measurement and device fingerprint",
        "",
        "## Run it on the device",
        "",
        "```sh",
        "python3 -m pip install onnxruntime numpy",
        "```",
        "",
        "```python",
        "import numpy as np",
        "import onnxruntime as ort",
        "",
        "options = ort.SessionOptions()",
        f"options.intra_op_num_threads = {threads}  # as measured",
        "session = ort.InferenceSession(\"model.onnx\", sess_options=options,",
        "                               providers=[\"CPUExecutionProvider\"])",
        f"x = np.zeros((1, {n_in}), dtype=np.float32)  # {prep}",
        f"logits = session.run(None, {{\"{input_name}\": x}})[0]",
        "print(logits.argmax(axis=1))",
        "```",
        "",
        "In PyTorch (with this project installed):",
        "",
        "```python",
        "import nas",
        "",
        "model = nas.load_model(\"arch.json\", \"model.pt\")  # eval mode, CPU",
        "```",
        "",
    ]
    return "\n".join(lines)
