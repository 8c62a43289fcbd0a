"""Where a trial's time goes on a device: onnxruntime's profiler, node times summed per layer.

``nas report NAME --layers TRIAL`` shows it: the layer that takes most of the time is the one to
make structured (low-rank, Toeplitz-like) next. The profiler adds its own overhead per node, so
compare the shares; the trial's median latency is shown next to them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.table import Table

from device_agents import Agent, MeasureSettings
from nas.errors import UserError
from nas.spec import ArchSpec
from nas.study import OpenedStudy, TrialRecord


def layer_times(agent: Agent, model: Path, spec: ArchSpec, settings: MeasureSettings) -> dict[str, float]:
    """Milliseconds per call spent in each layer of ``spec`` on ``agent`` (onnxruntime's profiler).

    The runner sums node times by the module a node came from (``nas.model.build_model`` puts an
    activation module after every layer but the last); nodes of no module are ``other``.
    """
    names = {}
    for index, layer in enumerate(spec.layers):
        last = index == len(spec.layers) - 1
        label = f"{'out' if last else f'l{index}'} {layer.code}"
        names[str(2 * index)] = label
        names[str(2 * index + 1)] = f"{label} {spec.activation}"
    times: dict[str, float] = {}
    for group, ms in agent.profile(model, settings).layers_ms.items():
        label = names.get(group, "other")
        times[label] = times.get(label, 0.0) + ms
    return times


def layer_table(opened: OpenedStudy, number: int, agent: str | None = None) -> Table:
    """Profile trial ``number`` of a study on ``agent`` (default: the study's first) as a table."""
    from device_agents import registry
    from nas.model import build_model, deployed, export_onnx, spec_seed

    agent = opened.agent(agent)
    trials = opened.study.get_trials(deepcopy=False)
    found = next((t for t in trials if t.number == number), None)
    record = TrialRecord.from_trial(found) if found is not None else None
    if record is None or record.spec is None:
        raise UserError(f"study {opened.name!r} has no trial {number} with an architecture")
    form = record.winner(agent) or record.spec.form
    spec = record.spec.with_form(form) if record.spec.has_toeplitz else record.spec
    settings = opened.space.measure.settings()
    stored = (record.data.artifacts or {}).get("onnx", {}).get(form)
    with tempfile.TemporaryDirectory(prefix="nas-profile-") as tmp, registry.open_agent(agent) as device:
        if stored:  # the trained model; latency does not depend on the weights, so else the untrained one
            model = opened.artifacts.download(stored, Path(tmp) / "model.onnx")
        else:
            model = export_onnx(deployed(build_model(spec, seed=spec_seed(spec)), spec), spec.in_features,
                                Path(tmp) / "model.onnx")
        times = layer_times(device, model, spec, settings)
    total = sum(times.values()) or 1.0
    median = record.latency_ms(agent)
    caption = (f"profiled sum {total:.4f} ms per call"
               + (f"; the trial's median latency {median:.4f} ms" if median is not None else "")
               + " (the profiler adds overhead per node: compare the shares)")
    table = Table("layer", "ms per call", "share", title=f"trial {number} ({spec.code}, {spec.widths}, form {form}) "
                  f"on {agent}", caption=caption, caption_justify="left")
    for label, ms in sorted(times.items(), key=lambda item: -item[1]):
        table.add_row(label, f"{ms:.4f}", f"{ms / total:.0%}")
    return table
