"""``nas report``: files produced and well formed, the HTML page renders in headless Chromium."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState, create_trial

from nas.cli.progress import trial_line
from nas.results import pareto_front
from nas.results.report import FILES, build_report, count_lines, write_report
from nas.spec import ArchSpec
from nas.storage import creating_storage, load_study
from nas.study import (
    CONFIG_ATTR,
    RECORD_ATTR,
    AgentMeasurement,
    FormMeasurement,
    OpenedStudy,
    TrialData,
    open_study,
    study_config,
)
from tests.conftest import MADE_FAILURE, MADE_STUDY, MADE_TRIALS

optuna.logging.set_verbosity(optuna.logging.WARNING)
LABELS = {"accuracy", "latency_ms@local", "model_peak_mib@local"}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path

def test_report_counts_and_set(made_study):
    study = load_study(MADE_STUDY)
    result = build_report(OpenedStudy(study, study_config(study)))
    assert {r["trial"] for r in result.pareto} == {t.number for t in pareto_front(study)}
    assert {r["trial"] for r in result.pareto} == {t.number for t in study.best_trials}
    counts = result.counts
    total = len(MADE_TRIALS) + 2
    assert counts["trials"] == total and counts["failed"] == 1 and counts["running"] == 1
    assert counts["infeasible_by"] == {"latency_ms@local": 1} and counts["infeasible"] == 1
    assert counts["pareto"] + counts["dominated"] + counts["infeasible"] + counts["failed"] + 1 == total
    lines = " ".join(count_lines(result))
    assert "1 infeasible (not trained): 1 latency on local > 0.5 ms" in lines
    assert f"1x {MADE_FAILURE}" in lines
    assert "measured unstable" in lines and "nas agent check" in lines
    accuracies = [r["accuracy"] for r in result.pareto]
    assert accuracies == sorted(accuracies, reverse=True)
    assert set(result.fingerprints) == {"local"} and not result.warnings


def test_report_files_are_well_formed(made_study):
    study = load_study(MADE_STUDY)
    paths = write_report(build_report(OpenedStudy(study, study_config(study)), agent="local"), made_study / "out")
    assert sorted(p.name for p in paths.values()) == sorted(FILES)
    expected = {t.number for t in pareto_front(study)}

    pareto = pd.read_csv(paths["pareto.csv"])
    assert set(pareto["trial"]) == expected
    for column in ("code", "widths", "form", "params", "onnx_kb", "weight_kb", "accuracy", "latency_ms@local",
                   "p90_ms@local", "ci_ms@local", "model_peak_mib@local", "process_peak_mib@local", "form@local",
                   "unstable"):
        assert column in pareto.columns, column
    assert pareto["accuracy"].notna().all() and pareto["latency_ms@local"].notna().all()
    # the model's own peak is a small part of the measuring process's
    assert (pareto["model_peak_mib@local"] < pareto["process_peak_mib@local"] / 4).all()
    # the recorded latency is at the calibrated speed; as timed and the device's speed are kept beside it
    assert (pareto["device_speed@local"] > 0).all() and (pareto["timed_ms@local"] > 0).all()

    trials = pd.read_csv(paths["trials.csv"])
    total = len(MADE_TRIALS) + 2
    assert len(trials) == total and set(trials["trial"]) == set(range(total))
    assert {"pareto", "infeasible", "failed", "running"} <= set(trials["status"])
    assert (trials[trials["status"] == "infeasible"]["latency_ms@local"] > 0.5).all()

    document = json.loads(paths["pareto.json"].read_text())
    assert document["study"] == MADE_STUDY and document["agent"] == "local"
    assert {m["trial"] for m in document["pareto"]} == expected
    member = document["pareto"][0]
    assert set(member["objectives"]) == LABELS
    assert ArchSpec.from_dict(member["spec"]).code == member["code"]
    assert document["counts"]["failed"] == 1 and document["fingerprints"]["local"]["machine"] == platform.machine()

    png = paths["pareto.png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000

    page = paths["report.html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "Plotly.newPlot" in page and "<script src" not in page and "<link" not in page
    assert "model_peak_mib@local" in page and "latency_ms@local" in page and "Search space" in page
    # Hovering a Pareto point shows its architecture.
    best = document["pareto"][0]
    assert f"layers {best['code']}  widths {best['widths']}" in page


def test_trial_lines_show_the_figures_and_flag_unstable_ones(made_study):
    trials = load_study(MADE_STUDY).get_trials(deepcopy=False)
    toeplitz = trial_line(trials[0])
    assert "T2 D" in toeplitz and "ms@local" in toeplitz and "MiB" in toeplitz and "unstable" in toeplitz
    assert "infeasible" in trial_line(trials[3]) and "not trained" in trial_line(trials[3])
    assert MADE_FAILURE in trial_line(trials[len(MADE_TRIALS)])


def test_a_memory_figure_below_the_weights_is_flagged_in_lines_and_tables(in_tmp):
    """A device that read a model's memory below its weights (as the emulated board once did): the
    trial line, the report's counts and its table say so."""
    from nas.cli.report import report as report_command

    objectives = [{"name": "accuracy", "direction": "maximize", "agent": None, "label": "accuracy"},
                  {"name": "model_peak_mib", "direction": "minimize", "agent": "local",
                   "label": "model_peak_mib@local"}]
    with creating_storage("floored", None) as storage:
        study = optuna.create_study(study_name="floored", storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr(CONFIG_ATTR, {"agents": ["local"], "objectives": objectives, "n_trials": 1, "constraints": {}})
    floored = FormMeasurement(median_ms=0.1, p90_ms=0.1, model_peak_mib=0.5, implausible=True)
    record = TrialData(code="D", widths="64-10", params=650, onnx_bytes={"-": 3000}, weight_bytes={"-": 2600},
                       trained=True, accuracy=0.9,
                       agents={"local": AgentMeasurement(forms={"-": floored}, winner="-")})
    study.add_trial(create_trial(values=[0.9, 0.5], user_attrs={RECORD_ATTR: record.model_dump(mode="json")}))
    assert "implausible" in trial_line(study.trials[0])
    result = build_report(OpenedStudy(study, study_config(study)))
    assert result.pareto[0]["implausible"] == "local"
    assert "read a model memory below their own weights (trials 0)" in " ".join(count_lines(result))
    table = CliRunner().invoke(report_command, ["floored"])
    assert "implausible on" in table.output, table.output
    trials = pd.read_csv(write_report(result, in_tmp / "out")["trials.csv"])
    assert list(trials["implausible"]) == ["local"]


def test_report_cli_formats(made_study):
    from nas.cli.report import report as report_command

    runner = CliRunner()
    table = runner.invoke(report_command, [MADE_STUDY])
    assert table.exit_code == 0, table.output
    assert f"Pareto set of {MADE_STUDY}" in table.output and "infeasible (not trained)" in table.output
    assert "unstable on" in table.output
    assert (made_study / f"studies/{MADE_STUDY}/report/report.html").exists()
    as_csv = runner.invoke(report_command, [MADE_STUDY, "--format", "csv", "--out", "elsewhere"])
    assert as_csv.exit_code == 0 and as_csv.stdout.splitlines()[0].startswith("trial,status") is False
    assert as_csv.stdout.splitlines()[0].startswith("trial,code,widths")
    assert (made_study / "elsewhere/pareto.csv").exists()
    as_json = runner.invoke(report_command, [MADE_STUDY, "--format", "json"])
    assert json.loads(as_json.stdout)["study"] == MADE_STUDY


def _nas() -> str:
    return str(Path(sys.executable).with_name("nas"))


def test_report_errors_exit_non_zero(made_study):
    unknown = subprocess.run([_nas(), "report", "nope"], capture_output=True, text=True)
    assert unknown.returncode != 0 and "no study 'nope'" in unknown.stderr
    agent = subprocess.run([_nas(), "report", MADE_STUDY, "--agent", "jetson"], capture_output=True, text=True)
    assert agent.returncode != 0 and "not measured on agent 'jetson'" in agent.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("NAS_REQUIRE_TESTBEDS") != "1",
    reason="headless Chromium not installed (Debian: apt-get install chromium)")


def chromium_render(page: Path, screenshot: Path, tmp: Path) -> str:
    """Load ``page`` in headless Chromium offline, take a screenshot; return Chromium's stderr log."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'chromium-profile'}",
               "--enable-logging=stderr", "--v=0", "--hide-scrollbars", "--window-size=1280,1600",
               "--virtual-time-budget=5000", f"--screenshot={screenshot}", page.resolve().as_uri()]
    env = {**os.environ, "HOME": str(tmp)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


@needs_chromium
def test_html_renders_in_headless_chromium(made_study):
    paths = write_report(build_report(open_study(MADE_STUDY)), made_study / "out")
    shot = made_study / "shot.png"
    log = chromium_render(paths["report.html"], shot, made_study)
    console = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, "\n".join(console)
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1600)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 200, f"screenshot looks blank: {len(colours)} colours"
    # The red Pareto markers of the plot are on the page.
    red = sum(n for n, (r, g, b) in colours if r > 190 and g < 70 and b < 70)
    assert red > 200, "no Pareto markers visible in the screenshot"


@needs_chromium
def test_chromium_check_catches_a_broken_page(in_tmp):
    """The console check is not vacuous: a page with a script error is reported."""
    page = in_tmp / "broken.html"
    page.write_text("<html><body><p>x</p><script>undefinedFunction()</script></body></html>")
    log = chromium_render(page, in_tmp / "broken.png", in_tmp)
    assert any("CONSOLE" in line or "Uncaught" in line for line in log.splitlines())


def test_report_of_a_study_with_nothing_complete(in_tmp):
    """Only failed and running trials: no set, but every file and the reasons."""
    with creating_storage("empty", None) as storage:
        study = optuna.create_study(study_name="empty", storage=storage, directions=["maximize", "minimize"])
    objectives = [{"name": "accuracy", "direction": "maximize", "agent": None, "label": "accuracy"},
                  {"name": "latency_ms", "direction": "minimize", "agent": "local", "label": "latency_ms@local"}]
    study.set_user_attr(CONFIG_ATTR, {"agents": ["local"], "objectives": objectives, "n_trials": 4,
                                      "constraints": {}})
    reason = {RECORD_ATTR: TrialData(fail_reason="agent local: no onnxruntime").model_dump(mode="json")}
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs=reason))
    study.add_trial(create_trial(state=TrialState.FAIL))
    study.add_trial(create_trial(state=TrialState.WAITING, system_attrs={"failed_trial": 1}))
    result = build_report(OpenedStudy(study, study_config(study)))
    assert result.pareto == [] and result.counts["failed"] == 2
    lines = " ".join(count_lines(result))
    assert "1x agent local: no onnxruntime" in lines and "queued again" in lines and "1 waiting" in lines
    paths = write_report(result, in_tmp / "out")
    assert pd.read_csv(paths["pareto.csv"]).empty
    assert list(pd.read_csv(paths["pareto.csv"]).columns)[:3] == ["trial", "code", "widths"]
    assert len(pd.read_csv(paths["trials.csv"])) == 3
    assert json.loads(paths["pareto.json"].read_text())["pareto"] == []
    assert paths["pareto.png"].stat().st_size > 10_000


def test_a_record_of_another_schema_is_refused_not_misread(in_tmp):
    with creating_storage("future", None) as storage:
        study = optuna.create_study(study_name="future", storage=storage)
    study.add_trial(create_trial(value=1.0, user_attrs={RECORD_ATTR: {"schema_version": 99}}))
    with pytest.raises(ValueError, match="trial record schema 99 is not supported"):
        TrialData.load(study.trials[0].user_attrs)


def test_layers_shows_where_the_time_goes(made_study):
    from nas.cli.report import report as report_command

    result = CliRunner().invoke(report_command, [MADE_STUDY, "--layers", "3"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "trial 3 (D D D D, 64-2048-2048-2048-10" in text
    cells = [line.replace("│", " ").split() for line in result.output.splitlines()]
    rows = {" ".join(c[:2]): c for c in cells if c and c[0] in ("l0", "l1", "l2", "out") and len(c) >= 4}
    assert {"l0 D", "l1 D", "l2 D", "out D"} <= set(rows)
    share = {name: int(c[-1].rstrip("%")) for name, c in rows.items() if "relu" not in c}
    # the 2048x2048 layers hold nearly all the work; the 64x2048 one and the classifier little
    assert share["l1 D"] + share["l2 D"] > 60 and share["out D"] < 10, result.output
    missing = CliRunner().invoke(report_command, [MADE_STUDY, "--layers", "99"])
    assert missing.exit_code != 0 and "has no trial 99" in str(missing.exception)
