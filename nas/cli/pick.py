"""``nas pick NAME``: choose a trial and write its deployable bundle."""

from __future__ import annotations

from pathlib import Path

import click

from nas.cli.options import STUDY_NAME, FiniteFloatRange


@click.command()
@click.argument("name", type=STUDY_NAME)
@click.option("--trial", type=int, metavar="N", help="Bundle this trial.")
@click.option("--max-latency-ms", type=FiniteFloatRange(min=0, min_open=True), metavar="X",
              help="Pick the most accurate trial whose median latency on the agent is at most X ms.")
@click.option("--max-model-peak-mib", type=FiniteFloatRange(min=0, min_open=True), metavar="Y",
              help="Pick the most accurate trial whose own peak memory on the agent (not the measuring "
                   "process's) is at most Y MiB "
                   "(with --max-latency-ms: both).")
@click.option("--agent", metavar="A",
              help="Agent the limits and the deployed form refer to (default: the study's first).")
@click.option("--retrain-epochs", type=click.IntRange(min=1), metavar="E",
              help="Retrain the architecture from scratch for E epochs and bundle that model.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Bundle folder (default: studies/NAME/bundles/trial-N).")
@click.option("--storage", metavar="URL", help="Optuna storage URL (default: sqlite:///studies/NAME/study.db).")
def pick(name: str, trial: int | None, max_latency_ms: float | None, max_model_peak_mib: float | None,
         agent: str | None, retrain_epochs: int | None, out: Path | None, storage: str | None) -> None:
    """Pick a trial of study NAME and write a deployable bundle.

    Either --trial N, or limits: the most accurate trained trial within the latency and/or memory
    limits on the agent. The bundle holds model.onnx (the form that measured fastest on the
    agent), model.pt + arch.json (nas.load_model), metrics.json and README.md. The ONNX model is
    checked against PyTorch on the validation data before anything is written.
    """
    from nas.results import choose, default_folder, write_bundle
    from nas.study import open_study

    if trial is not None and (max_latency_ms is not None or max_model_peak_mib is not None):
        raise click.UsageError("give either --trial or limits (--max-latency-ms, --max-model-peak-mib), not both")
    if trial is None and max_latency_ms is None and max_model_peak_mib is None:
        raise click.UsageError("give --trial N, or a limit to pick by (--max-latency-ms X, "
                               "--max-model-peak-mib Y)")
    opened = open_study(name, storage)
    choice = choose(opened, trial=trial, max_latency_ms=max_latency_ms, max_model_peak_mib=max_model_peak_mib,
                    agent=agent)
    record, agent = choice.record, choice.agent
    accuracy, latency, peak = record.data.accuracy, record.latency_ms(agent), record.model_peak_mib(agent)
    figures = [f"accuracy {100 * accuracy:.2f}%" if accuracy is not None else "",
               f"{latency:.3g} ms median on {agent}" if latency is not None else "",
               f"model peak {peak:.1f} MiB" if peak is not None else "",
               f"form {choice.form}"]
    click.echo(f"Picked trial {record.number}: {record.data.code} ({record.data.widths}), "
               + ", ".join(f for f in figures if f) + ("" if choice.on_front else " (not on the Pareto set)"))
    for note in choice.notes:
        click.echo(f"  {note}")
    if retrain_epochs:
        click.echo(f"Retraining from scratch for {retrain_epochs} epochs...")
    folder = out or default_folder(name, record.number)
    bundle = write_bundle(opened, choice, folder, retrain_epochs=retrain_epochs)
    metrics = bundle.metrics
    check = metrics["onnx_check"]
    click.echo(f"ONNX matches PyTorch on {check['samples']} validation samples (max abs diff "
               f"{check['max_abs_diff']:.2g}); ONNX accuracy {100 * metrics['accuracy']['onnx']:.2f}%")
    if metrics["retrain"]:
        r = metrics["retrain"]
        search = r["search_accuracy"]
        searched = "" if search is None else (f" (search: {100 * search:.2f}% after "
                                              f"{r['search_epochs']} epochs)")
        click.echo(f"Retrained {r['epochs']} epochs in {r['seconds']:.1f} s: accuracy "
                   f"{100 * r['accuracy']:.2f}%{searched}")
    click.echo(f"Wrote {bundle.folder}/: model.onnx, model.pt, arch.json, metrics.json, README.md")
