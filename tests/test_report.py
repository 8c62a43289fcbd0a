"""``nas report``: files produced and well formed, the HTML page renders in headless Chromium."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState, create_trial

from nas.pareto import pareto_front
from nas.report import FILES, build_report, count_lines, write_report
from nas.spec import ArchSpec, LayerSpec
from nas.storage import CONFIG_ATTR, load_study, open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
AGENTS = ["local", "pi4"]
OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize", "agent": None, "label": "accuracy"},
    {"name": "latency_ms", "direction": "minimize", "agent": "local", "label": "latency_ms@local"},
    {"name": "peak_mb", "direction": "minimize", "agent": "local", "label": "peak_mb@local"},
]


def _fingerprint(agent: str) -> dict:
    return {"machine": "aarch64" if agent == "pi4" else "x86_64", "system": "Linux",
            "cpu_model": f"{agent} cpu", "cores": 4, "python": "3.11.2", "onnxruntime": "1.32.0",
            "qemu_cpu": None, "threads": 1,
            "governor": "performance", "freq_mhz": {"cpu0": 1500}, "temperature_c": {}}


def _measurement(median: float, peak_mb: float, agent: str, when: float) -> dict:
    peak_kb = int(peak_mb * 1024)
    latency = {"median": median, "p90": median * 1.2, "min": median * 0.9, "mean": median,
               "iqr": median * 0.05, "count": 50}
    return {"schema": 1, "ok": True, "latency_ms": latency,
            "session_ms": 3.0, "memory_kb": {"after_runs": {"peak_kb": peak_kb, "rss_kb": peak_kb}},
            "fingerprint": _fingerprint(agent), "ended_at": when, "cache_key": f"k{when}", "cached": False}


def synthetic_study(name: str, seed: int = 0, n: int = 24, max_latency_ms: float = 0.8) -> optuna.Study:
    """A study as ``nas study`` writes it: feasible, infeasible (latency), failed and running trials."""
    rng = random.Random(seed)
    directions = [o["direction"] for o in OBJECTIVES]
    study = optuna.create_study(study_name=name, storage=open_storage(name, None), directions=directions)
    space = {"name": "synthetic", "data": {"dataset": "digits"}, "training": {"epochs": 1}}
    study.set_user_attr(CONFIG_ATTR, {
        "space": space, "agents": AGENTS, "objectives": OBJECTIVES,
        "constraints": {"max_latency_ms": max_latency_ms, "max_peak_mb": None, "max_params": None},
        "n_trials": n + 2, "sampler": "tpe", "seed": seed, "artifacts_dir": f"studies/{name}/artifacts",
        "measure": {"threads": 1, "batch": 1},
    })
    for number in range(n):
        width = rng.choice([32, 64, 128])
        hidden = rng.choice([LayerSpec("dense", width), LayerSpec("lowrank", width, rng.choice([4, 8])),
                             LayerSpec("toeplitz", width, rng.choice([1, 2]))])
        spec = ArchSpec(64, (hidden, LayerSpec("dense", 10)))
        if number % 11 == 5:
            study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={
                "spec": spec.to_dict(), "code": spec.code, "widths": spec.widths,
                "fail_reason": "export failed: DFT not supported" if number % 2 else "agent pi4 unreachable",
            }))
            continue
        local = rng.uniform(0.05, 1.2)
        latency = {"local": local, "pi4": local * 1.3}
        peak = {a: rng.uniform(20, 40) for a in AGENTS}
        winner = {a: rng.choice(["fft", "dense"]) if spec.has_toeplitz else "dense" for a in AGENTS}
        violated = {f"latency_ms@{a}": latency[a] - max_latency_ms for a in AGENTS}
        infeasible = any(v > 0 for v in violated.values())
        attrs = {
            "spec": spec.with_form(winner["local"]).to_dict(), "code": spec.code, "widths": spec.widths,
            "params": 64 * width + width * 10, "onnx_bytes": {"fft": 9000 + number, "dense": 30000 + number},
            "measurements": {a: {winner[a]: _measurement(latency[a], peak[a], a, 1000.0 + number)}
                             for a in AGENTS},
            "winner": winner, "latency_ms": latency,
            "latency_p90_ms": {a: v * 1.2 for a, v in latency.items()},
            "peak_mb": peak, "trained": not infeasible,
            "infeasible": [f"{key} {latency[key.split('@')[1]]:.4g} > {max_latency_ms:g}"
                           for key, v in violated.items() if v > 0],
        }
        accuracy = 0.0 if infeasible else rng.uniform(0.7, 0.98)
        if not infeasible:
            attrs.update({"accuracy": accuracy, "train_seconds": 1.5, "epochs": 1})
        study.add_trial(create_trial(
            values=[accuracy, latency["local"], peak["local"]], user_attrs=attrs,
            system_attrs={f"constraints:{key}": v for key, v in violated.items()}))
    study.add_trial(create_trial(state=TrialState.RUNNING))
    return study


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_report_counts_and_set(in_tmp):
    study = synthetic_study("syn")
    result = build_report(study)
    assert {r["trial"] for r in result.pareto} == {t.number for t in pareto_front(study)}
    assert {r["trial"] for r in result.pareto} == {t.number for t in study.best_trials}
    counts = result.counts
    assert counts["trials"] == 25
    assert counts["failed"] == 2 and counts["running"] == 1
    by = counts["infeasible_by"]
    assert 0 < by["latency_ms@local"] < by["latency_ms@pi4"] == counts["infeasible"]
    assert counts["pareto"] + counts["dominated"] + counts["infeasible"] + counts["failed"] + 1 == 25
    lines = " ".join(count_lines(result))
    assert (f"{counts['infeasible']} infeasible (not trained): {by['latency_ms@pi4']} latency on pi4 "
            f"> 0.8 ms, {by['latency_ms@local']} latency on local > 0.8 ms") in lines
    assert "1x export failed: DFT not supported" in lines and "1x agent pi4 unreachable" in lines
    accuracies = [r["accuracy"] for r in result.pareto]
    assert accuracies == sorted(accuracies, reverse=True)
    assert set(result.fingerprints) == set(AGENTS) and not result.warnings


def test_report_files_are_well_formed(in_tmp):
    study = synthetic_study("syn")
    paths = write_report(build_report(study, agent="pi4"), in_tmp / "out")
    assert sorted(p.name for p in paths.values()) == sorted(FILES)
    expected = {t.number for t in pareto_front(study)}

    pareto = pd.read_csv(paths["pareto.csv"])
    assert set(pareto["trial"]) == expected
    for column in ("code", "widths", "form", "params", "onnx_kb", "accuracy", "latency_ms@local",
                   "p90_ms@pi4", "peak_mb@pi4", "form@pi4"):
        assert column in pareto.columns, column
    assert pareto["accuracy"].notna().all() and pareto["latency_ms@pi4"].notna().all()

    trials = pd.read_csv(paths["trials.csv"])
    assert len(trials) == 25 and set(trials["trial"]) == set(range(25))
    assert set(trials["status"]) == {"pareto", "dominated", "infeasible", "failed", "running"}
    assert (trials[trials["status"] == "infeasible"]["latency_ms@pi4"] > 0.8).all()

    document = json.loads(paths["pareto.json"].read_text())
    assert document["study"] == "syn" and document["agent"] == "pi4"
    assert {m["trial"] for m in document["pareto"]} == expected
    member = document["pareto"][0]
    assert set(member["objectives"]) == {"accuracy", "latency_ms@local", "peak_mb@local"}
    assert ArchSpec.from_dict(member["spec"]).code == member["code"]
    assert document["counts"]["failed"] == 2 and document["fingerprints"]["pi4"]["machine"] == "aarch64"

    png = paths["pareto.png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000

    page = paths["report.html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "Plotly.newPlot" in page and "<script src" not in page and "<link" not in page
    assert "aarch64" in page and "latency_ms@local" in page and "Search space" in page
    # Hovering a Pareto point shows its architecture.
    best = document["pareto"][0]
    assert f"layers {best['code']}  widths {best['widths']}" in page


def test_report_cli_formats(in_tmp):
    from nas.cli.report import report as report_command

    synthetic_study("syn")
    runner = CliRunner()
    table = runner.invoke(report_command, ["syn"])
    assert table.exit_code == 0, table.output
    assert "Pareto set of syn" in table.output and "infeasible (not trained)" in table.output
    assert (in_tmp / "studies/syn/report/report.html").exists()
    as_csv = runner.invoke(report_command, ["syn", "--format", "csv", "--out", "elsewhere"])
    assert as_csv.exit_code == 0 and as_csv.stdout.splitlines()[0].startswith("trial,status") is False
    assert as_csv.stdout.splitlines()[0].startswith("trial,code,widths")
    assert (in_tmp / "elsewhere/pareto.csv").exists()
    as_json = runner.invoke(report_command, ["syn", "--format", "json"])
    assert json.loads(as_json.stdout)["study"] == "syn"


def _nas() -> str:
    return str(Path(sys.executable).with_name("nas"))


def test_report_errors_exit_non_zero(in_tmp):
    synthetic_study("syn")
    unknown = subprocess.run([_nas(), "report", "nope"], capture_output=True, text=True)
    assert unknown.returncode != 0 and "no study 'nope'" in unknown.stderr
    agent = subprocess.run([_nas(), "report", "syn", "--agent", "jetson"], capture_output=True, text=True)
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
def test_html_renders_in_headless_chromium(in_tmp):
    study = synthetic_study("syn")
    paths = write_report(build_report(study), in_tmp / "out")
    shot = in_tmp / "shot.png"
    log = chromium_render(paths["report.html"], shot, in_tmp)
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
    study = optuna.create_study(study_name="empty", storage=open_storage("empty", None),
                                directions=["maximize", "minimize"])
    study.set_user_attr(CONFIG_ATTR, {"agents": ["local"], "objectives": OBJECTIVES[:2], "n_trials": 4,
                                      "constraints": {}})
    reason = {"fail_reason": "agent local: no onnxruntime"}
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs=reason))
    study.add_trial(create_trial(state=TrialState.FAIL))
    study.add_trial(create_trial(state=TrialState.WAITING, system_attrs={"failed_trial": 1}))
    result = build_report(study)
    assert result.pareto == [] and result.counts["failed"] == 2
    lines = " ".join(count_lines(result))
    assert "1x agent local: no onnxruntime" in lines and "queued again" in lines and "1 waiting" in lines
    paths = write_report(result, in_tmp / "out")
    assert pd.read_csv(paths["pareto.csv"]).empty
    assert list(pd.read_csv(paths["pareto.csv"]).columns)[:3] == ["trial", "code", "widths"]
    assert len(pd.read_csv(paths["trials.csv"])) == 3
    assert json.loads(paths["pareto.json"].read_text())["pareto"] == []
    assert paths["pareto.png"].stat().st_size > 10_000


def test_report_reads_the_stored_study(in_tmp):
    synthetic_study("syn")
    result = build_report(load_study("syn"))
    assert result.name == "syn" and result.agent == "local"
