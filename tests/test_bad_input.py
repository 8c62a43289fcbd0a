"""Bad input of every class (data, study names, storage URLs, space files, options) is refused by the
``nas`` entry point with exit code 2 and a short message without a traceback, and creates nothing:
no ``studies/`` folder, no stray SQLite file, no study in PostgreSQL, no file changed.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from nas.data import load_dataset
from nas.model import TrainingDiverged, train
from nas.study import SEED_MAX, TrialData, run_study, start_study
from tests.conftest import unavailable
from tests.spaces import FAST_SPACE, write_space

POSTGRES_URL = os.environ.get("NAS_TEST_POSTGRES_URL")


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory tmp_path/work (studies would go to work/studies), NAS_HOME beside it."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("NAS_HOME", str(tmp_path / "home"))
    return folder


@pytest.fixture
def nas(work: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str]]:
    """``nas(*args)``: run the real entry point (``nas.cli.main``) in-process; (exit code, stderr).

    Any exception other than SystemExit escapes, so a traceback fails the test.
    """
    from nas.cli import main

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["nas", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
        return code, capsys.readouterr().err

    return run


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its content (None for folders)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()[:4096]
            for p in sorted(root.rglob("*")) if not p.is_symlink()}


def assert_refused(result: tuple[int, str], before: dict, root: Path, *fragments: str) -> None:
    code, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 4 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    assert not (root / "work" / "studies").exists()
    assert snapshot(root) == before, "a refused command must create or change nothing"


# --- data ------------------------------------------------------------------------------------------

def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"X_train": rng.random((60, 4)), "y_train": np.arange(60) % 3,
            "X_val": rng.random((20, 4)), "y_val": np.arange(20) % 3}


def _set(key: str, index: tuple, value: float) -> Callable[[dict], None]:
    def edit(a: dict) -> None:
        a[key] = a[key].astype(np.float64)
        a[key][index] = value
    return edit


DATA_CASES = {
    "nan features": (_set("X_train", (5, 1), np.nan), "X_train has 1 non-finite values (NaN, Inf or beyond "
                                                      "float32), e.g. at [5, 1]: nan"),
    "inf in val": (_set("X_val", (3, 0), np.inf), "X_val has 1 non-finite values"),
    "beyond float32": (_set("X_val", (2, 2), 1e300), "X_val has 1 non-finite values"),
    "fractional labels": (_set("y_train", (7,), 0.5), "y_train has 1 labels that are not integers, e.g. [7]: 0.5"),
    "one class": (lambda a: a.update(y_train=np.zeros(60, int), y_val=np.zeros(20, int)), "at least 2 classes"),
    "huge label": (_set("y_val", (4,), 100000), "the largest label is y_val[4] = 100000"),
    "short y_train": (lambda a: a.update(y_train=a["y_train"][:-1]), "y_train has 59 labels but X_train has 60"),
    "long y_train": (lambda a: a.update(y_train=np.append(a["y_train"], 0)), "y_train has 61 labels"),
    "negative label": (_set("y_train", (2,), -1), "y_train has 1 negative labels, e.g. [2]: -1"),
    "one-hot labels": (lambda a: a.update(y_train=np.eye(3)[a["y_train"]]), "one-hot?"),
    "feature mismatch": (lambda a: a.update(X_val=np.ones((20, 5))), "X_val has 5 features per sample but "
                                                                       "X_train has 4"),
    "1-D features": (lambda a: a.update(X_train=np.ones(60)), "X_train has shape (60,)"),
    "empty": (lambda a: a.update(X_train=np.ones((0, 4)), y_train=np.ones(0, int)), "X_train is empty"),
    "tiny validation": (lambda a: a.update(X_val=a["X_val"][:3], y_val=a["y_val"][:3]), "at least 10 are needed"),
    "missing array": (lambda a: a.pop("y_val"), "lacks y_val"),
    "text labels": (lambda a: a.update(y_train=np.array(["a", "b", "c"] * 20)), "expected integer class labels"),
}


def test_good_arrays_load(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", **_arrays())
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert data.num_classes == 3 and data.in_features == 4


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_is_refused_before_the_study_exists(nas, work: Path, case: str) -> None:
    edit, message = DATA_CASES[case]
    arrays = _arrays()
    edit(arrays)
    np.savez(work / "data.npz", **arrays)
    space = write_space(work, FAST_SPACE.replace('dataset = "digits"', f'dataset = "npz:{work / "data.npz"}"'))
    before = snapshot(work.parent)
    assert_refused(nas("study", "start", "d", "--space", space), before, work.parent,
                   f"dataset npz:{work / 'data.npz'}: ", message)


def test_too_small_a_validation_split_is_refused(nas, work: Path) -> None:
    space = write_space(work, FAST_SPACE.replace('dataset = "digits"', 'dataset = "digits"\nval_fraction = 1e-9'))
    before = snapshot(work.parent)
    assert_refused(nas("study", "start", "d", "--space", space), before, work.parent, "y_val has 1 samples")


def test_diverging_training_raises_with_a_reason() -> None:
    data = load_dataset("digits")
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    with pytest.raises(TrainingDiverged, match="training diverged: .* in epoch 1"):
        train(model, data, epochs=2, optimizer="sgd", learning_rate=1e30)


def test_diverging_training_is_a_failed_trial_never_complete(work: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = FAST_SPACE.replace("learning_rate = 0.01", "learning_rate = 1e30\noptimizer = \"sgd\"")
    start_study("div", write_space(work, space), ["local"], n_trials=2, sampler="random")
    study = run_study("div")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("training diverged" in TrialData.load(t.user_attrs).fail_reason for t in study.trials)


# --- study names -----------------------------------------------------------------------------------

BAD_NAMES = ["../x", "../../x", "..", ".", "", "a?b", "a%2Fb", "a/b", "x" * 300, "_x", "a b"]
COMMANDS = [["study", "start", "{}", "--space", "digits"], ["study", "resume", "{}"], ["study", "status", "{}"],
            ["report", "{}"], ["pick", "{}", "--trial", "0"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("name", [*BAD_NAMES, "ABSOLUTE"])
def test_bad_study_names_are_refused_by_every_command(nas, work: Path, command: list[str], name: str) -> None:
    name = str(work.parent / "abs") if name == "ABSOLUTE" else name
    before = snapshot(work.parent)
    assert_refused(nas(*[part.format(name) for part in command]), before, work.parent, "invalid study name")


# --- storage URLs ----------------------------------------------------------------------------------

def _storage_cases(work: Path) -> dict[str, tuple[str, str]]:
    (work / "plain.txt").write_text("not a folder")
    (work / "notdb.db").write_bytes(b"this is not a database " * 100)
    (work / "folder").mkdir()
    return {
        "empty": ("", "empty storage URL"),
        "unparseable": ("nonsense", "is not a URL"),
        "unknown scheme": ("foo://host/db", "unknown scheme 'foo'; allowed: sqlite://, postgresql://, mysql://"),
        "missing driver": ("postgresql+pg8000://u@127.0.0.1/db", "driver 'pg8000' is not installed"),
        "missing mysql driver": ("mysql://u@127.0.0.1/db", "is not installed"),
        "refused": ("postgresql://nas:pw@127.0.0.1:1/db", "Connection refused"),
        "unknown host": ("postgresql://nas:pw@no-such-host.invalid/db", "failed to resolve host"),
        "unwritable path": (f"sqlite:///{work / 'plain.txt' / 'study.db'}", "is not a folder"),
        "not a database": (f"sqlite:///{work / 'notdb.db'}", "file is not a database"),
        "a folder": (f"sqlite:///{work / 'folder'}", "is a folder"),
        "in memory": ("sqlite://", "in-memory"),
    }


STORAGE_CASES = ["empty", "unparseable", "unknown scheme", "missing driver", "missing mysql driver", "refused",
                 "unknown host", "unwritable path", "not a database", "a folder", "in memory"]


@pytest.mark.parametrize("command", [["study", "start", "s", "--space", "digits"], ["study", "resume", "s"],
                                     ["study", "status", "s"], ["report", "s"]], ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("case", STORAGE_CASES)
def test_bad_storage_is_one_line(nas, work: Path, command: list[str], case: str) -> None:
    url, message = _storage_cases(work)[case]
    before = snapshot(work.parent)
    code, err = result = nas(*command, "--storage", url)
    assert_refused(result, before, work.parent, message)
    assert len(err.strip().splitlines()) == 1
    assert "pw" not in err, "passwords are never printed"


def test_missing_postgres_driver_names_the_extra(nas, work: Path) -> None:
    before = snapshot(work.parent)
    assert_refused(nas("study", "status", "s", "--storage", "postgresql+pg8000://u@h/db"), before, work.parent,
                   "pip install 'nas-structured[postgres]'")


def test_a_server_that_never_answers_times_out(nas, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nas.storage._url.CONNECT_TIMEOUT_S", 2)
    with socket.socket() as silent:  # accepts TCP connections (kernel backlog), never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        before = snapshot(work.parent)
        assert_refused(nas("study", "status", "s", "--storage", f"postgresql://u@127.0.0.1:{port}/db"), before,
                       work.parent, "timeout")


def _readme_url() -> str:
    """The test server's URL in the README's form: postgresql://, whatever driver the environment named."""
    if not POSTGRES_URL:
        unavailable("needs PostgreSQL: as root, export NAS_TEST_POSTGRES_URL=$(.ci/postgres)")
    return make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.postgres
def test_readme_postgresql_url_works(nas, work: Path) -> None:
    url, name = _readme_url(), f"readme-form-{os.getpid()}"
    space = write_space(work)
    try:
        code, err = nas("study", "start", name, "--space", space, "--trials", "1", "--storage", url)
        assert code == 0, err
        assert nas("study", "status", name, "--storage", url)[0] == 0
        assert not (work / "studies" / name / "study.db").exists()
    finally:
        if name in optuna.get_all_study_names(url):
            optuna.delete_study(study_name=name, storage=url)


@pytest.mark.postgres
def test_bad_input_creates_no_study_in_postgres(nas, work: Path) -> None:
    url, name = _readme_url(), f"refused-{os.getpid()}"
    space = write_space(work, FAST_SPACE.replace("epochs = 3", "epochs = true"))
    before = snapshot(work.parent)
    assert_refused(nas("study", "start", name, "--space", space, "--storage", url), before, work.parent,
                   "training.epochs")
    assert name not in optuna.get_all_study_names(url)


# --- space files -----------------------------------------------------------------------------------

def _edit(old: str, new: str) -> Callable[[Path], Path]:
    return lambda work: write_space(work, FAST_SPACE.replace(old, new))


def _file(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(work: Path) -> Path:
        (work / name).write_bytes(content)
        return work / name
    return make


EXTRA_OBJECTIVE = '[[objectives]]\nmetric = "accuracy"'
FILE_CASES = {
    "folder": (lambda work: (work / "spaces").mkdir() or work / "spaces", "is a folder"),
    "binary": (_file("b.toml", bytes(range(256))), "is not UTF-8 text"),
    "latin-1": (_file("l.toml", 'name = "café"\n'.encode("latin-1")), "is not UTF-8 text"),
    "device": (lambda work: Path("/dev/zero"), "is larger than 1024 KiB"),
    "empty": (_file("e.toml", b""), "no settings"),
    "comments only": (_file("c.toml", b"# nothing here\n\n"), "no settings"),
    "missing path": (lambda work: Path("spaces/digits.toml"), "no such search-space file"),
    "bool as int": (_edit("epochs = 3", "epochs = true"), "field 'training.epochs'"),
    "string as number": (_edit("widths = [16, 32]", 'widths = ["16", 32]'), "field 'backbone.widths.0'"),
    "bool in list": (_edit("widths = [16, 32]", "widths = [true, 32]"), "field 'backbone.widths.0'"),
    "string as float": (_edit("learning_rate = 0.01", 'learning_rate = "0.01"'), "training.learning_rate"),
    "too wide": (_edit("widths = [16, 32]", "widths = [16, 100000]"), "width 100000 is above 16384"),
    "duplicate objective": (_edit("[measure]", f"{EXTRA_OBJECTIVE}\n[measure]"), "accuracy is listed twice"),
    "duplicate on default agent": (_edit("[measure]", '[[objectives]]\nmetric = "latency_ms"\nagent = "local"\n'
                                         "[measure]"), "latency_ms@local is listed twice"),
    "agent on accuracy": (_edit('metric = "accuracy"', 'metric = "accuracy"\nagent = "local"'),
                          "accuracy is not measured on an agent"),
    "split setting on npz": (_edit('dataset = "digits"', 'dataset = "npz:d.npz"\nval_fraction = 0.3'),
                             "data.val_fraction: npz: datasets bring their own validation split"),
    "infinite learning rate": (_edit("learning_rate = 0.01", "learning_rate = inf"),
                               "field 'training.learning_rate': Input should be a finite number (got inf)"),
    "nan learning rate": (_edit("learning_rate = 0.01", "learning_rate = nan"), "training.learning_rate"),
    "infinite latency bound": (_edit("[measure]", "[constraints]\nmax_latency_ms = inf\n[measure]"),
                               "field 'constraints.max_latency_ms': Input should be a finite number"),
    "nan tie margin": (_edit("[measure]", "[measure]\ntie_margin = nan"), "field 'measure.tie_margin'"),
    "negative infinite weight decay": (_edit("learning_rate = 0.01", "learning_rate = 0.01\nweight_decay = -inf"),
                                       "training.weight_decay"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_bad_space_files_are_refused(nas, work: Path, case: str) -> None:
    make, message = FILE_CASES[case]
    path = make(work)
    before = snapshot(work.parent)
    result = nas("study", "start", "f", "--space", path)
    assert_refused(result, before, work.parent, message)
    assert len(result[1].strip().splitlines()) == 1


def test_only_a_bare_name_means_a_shipped_space(work: Path) -> None:
    from nas.space import load_space

    assert load_space("digits").name == "digits"
    (work / "digits").write_text(FAST_SPACE)  # a file of that name in the working directory wins
    assert load_space("digits").name == "fast"


# --- options ---------------------------------------------------------------------------------------

OPTION_CASES = [
    (["study", "start", "o", "--space", "digits", "--seed", "-1"], "--seed"),
    (["study", "start", "o", "--space", "digits", "--seed", str(SEED_MAX + 1)], "--seed"),
    (["study", "start", "o", "--space", "digits", "--seed", "x"], "--seed"),
    (["study", "start", "o", "--space", "digits", "--timeout", "-5"], "--timeout"),
    (["study", "start", "o", "--space", "digits", "--timeout", "0"], "--timeout"),
    (["study", "start", "o", "--space", "digits", "--trials", "0"], "--trials"),
    (["study", "resume", "o", "--timeout", "0"], "--timeout"),
    (["study", "resume", "o", "--trials", "-3"], "--trials"),
    (["study", "start", "o", "--space", "digits", "--storage", ""], "empty storage URL"),
    *[(["study", "start", "o", "--space", "digits", "--timeout", value], "'--timeout': '"
       f"{value}' is not a finite number") for value in ("nan", "inf", "-inf", "NaN")],
    (["study", "resume", "o", "--timeout", "inf"], "'inf' is not a finite number"),
    (["pick", "o", "--max-latency-ms", "nan"], "'--max-latency-ms': 'nan' is not a finite number"),
    (["pick", "o", "--max-model-peak-mib", "inf"], "'inf' is not a finite number"),
    (["agent", "add", "x", "--host", "h", "--timeout", "inf"], "'--timeout': 'inf' is not a finite number"),
    (["agent", "set", "x", "--down-timeout", "nan"], "'nan' is not a finite number"),
    (["data", "kws", "--val-fraction", "nan"], "'nan' is not a finite number"),
    (["bench", "layers", "--min-time", "nan"], "'nan' is not a finite number"),
]


@pytest.mark.parametrize(("args", "message"), OPTION_CASES, ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_out_of_range_options_are_refused(nas, work: Path, args: list[str], message: str) -> None:
    before = snapshot(work.parent)
    assert_refused(nas(*args), before, work.parent, message)


def test_largest_seed_survives_resume(nas, work: Path) -> None:
    space = write_space(work)
    code, err = nas("study", "start", "big", "--space", space, "--trials", "1", "--seed", str(SEED_MAX),
                    "--sampler", "random")
    assert code == 0, err
    code, err = nas("study", "resume", "big", "--trials", "2")
    assert code == 0, err
    study = optuna.load_study(study_name="big", storage="sqlite:///studies/big/study.db")
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2
