"""The README.md of a bundle: the template ``bundle_readme.md`` filled from the bundle's metrics.

The README is for whoever deploys the model, who may not have this project: it says what the model
is, its accuracy and measured figures, and how to run it with onnxruntime alone. Its text is a
template shipped with the package (``string.Template``: the Python code in it keeps its braces);
only the list of figures, whose lines depend on what was measured, is written here.
"""

from __future__ import annotations

from importlib import resources
from string import Template
from typing import Any

TEMPLATE = "bundle_readme.md"
_PREPROCESSING = {
    "digits": "scikit-learn's 8x8 digits, flattened to 64 values and divided by 16 (range 0-1)",
    "mnist": "28x28 MNIST images, flattened to 784 values and divided by 255 (range 0-1)",
}
_FORM_NOTES = {
    "fft": "the FFT form of the Toeplitz-like layers (ONNX `DFT`, opset 18: needs onnxruntime >= 1.16)",
    "fftmm": "the FFT form of the Toeplitz-like layers written as small matrix products (`MatMul`, `Mul`, "
             "`Add`/`Sub`, `Reshape`: any ONNX runtime)",
    "dense": "the Toeplitz-like layers materialised as dense matrices (plain `Gemm`)",
}


def bundle_readme(metrics: dict[str, Any]) -> str:
    """The bundle's README: what it is, its figures, how to run it with onnxruntime."""
    dataset = (metrics.get("data") or {}).get("dataset", "?")
    template = Template(resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8"))
    return template.substitute(
        study=metrics["study"], trial=metrics["trial"], code=metrics["code"], widths=metrics["widths"],
        params=f"{metrics['params']:,}", figures="\n".join(_figures(metrics)),
        input_name=metrics["input"]["name"], n_in=metrics["input"]["shape"][1], threads=_threads(metrics),
        preprocessing=_PREPROCESSING.get(dataset.split(":")[0], f"preprocessed like the training data ({dataset})"),
    )


def _threads(metrics: dict[str, Any]) -> int:
    """The threads the model was measured with: the README's example session uses as many."""
    return (metrics.get("measure") or {}).get("threads", 1)


def _figures(metrics: dict[str, Any]) -> list[str]:
    """The README's list of figures: accuracy, a retraining, the measurement, the form, the ONNX check."""
    agent = metrics["agent"]
    forms = metrics["measurements"].get(agent, {}).get("forms", {})
    measured = forms.get(metrics["form"]) or next(iter(forms.values()), {})
    measure = metrics.get("measure") or {}
    threads = _threads(metrics)
    acc = metrics["accuracy"]
    searched = f", {100 * acc['search']:.2f}% at search time" if acc.get("search") is not None else ""
    lines = [f"- validation accuracy: {100 * acc['onnx']:.2f}% (this ONNX file){searched}"]
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
    if metrics["form"] in _FORM_NOTES:
        lines.append(f"- deployed form: `{metrics['form']}`, {_FORM_NOTES[metrics['form']]}, the faster one on "
                     f"`{agent}`")
    check = metrics["onnx_check"]
    lines.append(f"- ONNX checked against PyTorch on {check['samples']} validation samples: max abs "
                 f"difference {check['max_abs_diff']:.2g}")
    return lines
