"""Opening and creating study storages from several processes at once, on SQLite and PostgreSQL.

Each race starts its processes together: they import everything first, then wait at a gate that
the test opens once all of them are ready, so that they reach the storage within milliseconds of
one another (two plain processes opening one fresh SQLite URL so failed 11 times in 20).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from nas.errors import UserError
from nas.storage import load_study, open_storage
from nas.storage._lock import creation_lock
from nas.study import CONFIG_ATTR, start_study
from tests.conftest import unavailable
from tests.spaces import write_space

POSTGRES_URL = os.environ.get("NAS_TEST_POSTGRES_URL")
RACERS = 4

ROUNDS = 3  # races per test, in the same processes (a race lost once in a while is still a bug)

# One racer: import, then in each round say it is ready, wait for that round's gate, start its study
# there and print what happened.
_RACER = """
import os, pathlib, sys, time
from nas.data import load_dataset
from nas.errors import UserError
from nas.study import start_study

space, gate, join, *entries = sys.argv[1:]
load_dataset("digits")  # loaded once before the gates: the race is on the storage, not the data
for index, entry in enumerate(entries):
    name, _, storage = entry.partition("@")
    pathlib.Path(f"{gate}-{index}.{os.getpid()}").touch()
    while not pathlib.Path(f"{gate}-{index}").exists():
        time.sleep(0.001)
    try:
        start_study(name, space, ["local"], 1, storage=storage or None, sampler="random", load_if_exists=join == "1")
        print("created", flush=True)
    except UserError as exc:
        print(f"refused: {exc}", flush=True)
"""


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NAS_HOME", str(tmp_path / "home"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return tmp_path


Start = tuple[str, str | None]  # a study's name and its storage URL (None: the default)


def race(work: Path, rounds: list[list[Start]], join: bool = False) -> list[list[str]]:
    """``start_study`` for each (name, storage) of a round in its own process, all at once, round after
    round (racer i does start i of every round); each round's output lines, in racer order."""
    space = write_space(work)
    gate = work / f"gate-{uuid.uuid4().hex[:8]}"
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(space), str(gate), "1" if join else "0",
                                *[f"{starts[index][0]}@{starts[index][1] or ''}" for starts in rounds]], cwd=work,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for index in range(len(rounds[0]))]
    deadline = time.monotonic() + 300
    for index in range(len(rounds)):
        while len(list(work.glob(f"{gate.name}-{index}.*"))) < len(racers):
            assert time.monotonic() < deadline, "the racers did not get ready"
            assert all(racer.poll() is None for racer in racers), [racer.communicate() for racer in racers]
            time.sleep(0.01)
        Path(f"{gate}-{index}").touch()
    outputs = [racer.communicate(timeout=300) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), outputs
    lines = [out.strip().splitlines() for out, _ in outputs]
    return [[each[index] for each in lines] for index in range(len(rounds))]


@pytest.fixture
def fresh_postgres() -> Iterator[Callable[[], str]]:
    """``fresh_postgres()``: the URL of a new, empty PostgreSQL database (no Optuna schema); every one
    made is dropped after the test."""
    if not POSTGRES_URL:
        unavailable("needs PostgreSQL: as root, export NAS_TEST_POSTGRES_URL=$(.ci/postgres)")
    server = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    made: list[str] = []

    def fresh() -> str:
        made.append(f"nas_fresh_{uuid.uuid4().hex[:12]}")
        with server.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{made[-1]}"'))
        return make_url(POSTGRES_URL).set(database=made[-1]).render_as_string(hide_password=False)

    try:
        yield fresh
    finally:
        with server.connect() as connection:
            for database in made:
                connection.execute(sqlalchemy.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
        server.dispose()


def fresh_storages(work: Path, backend: str, request: pytest.FixtureRequest) -> list[str]:
    """A new storage per round: a SQLite file in a folder that does not exist yet, or an empty database."""
    if backend == "sqlite":
        return [f"sqlite:///{work / f'shared-{index}' / 'studies.db'}" for index in range(ROUNDS)]
    fresh = request.getfixturevalue("fresh_postgres")
    return [fresh() for _ in range(ROUNDS)]


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_simultaneous_starts_of_different_studies_all_succeed(work: Path, backend: str,
                                                              request: pytest.FixtureRequest) -> None:
    urls = fresh_storages(work, backend, request)
    names = [f"s{index}" for index in range(RACERS)]
    assert race(work, [[(name, url) for name in names] for url in urls]) == [["created"] * RACERS] * ROUNDS
    for url in urls:
        assert sorted(optuna.get_all_study_names(url)) == names
        assert all(CONFIG_ATTR in load_study(name, url).user_attrs for name in names)


@pytest.mark.parametrize("backend", BACKENDS)
def test_simultaneous_starts_of_one_name_create_it_once(work: Path, backend: str,
                                                        request: pytest.FixtureRequest) -> None:
    urls = fresh_storages(work, backend, request)
    refusal = "refused: study 'same' already exists; continue it with 'nas study resume same'"
    for outputs in race(work, [[("same", url)] * RACERS for url in urls]):
        assert sorted(outputs) == ["created"] + [refusal] * (RACERS - 1), outputs
    assert all(optuna.get_all_study_names(url) == ["same"] for url in urls)


def test_simultaneous_starts_of_one_name_with_load_if_exists_join_it(work: Path) -> None:
    """On the default storage, whose folder ``studies/NAME/`` each of them would make."""
    names = [f"joined-{index}" for index in range(ROUNDS)]
    assert race(work, [[(name, None)] * RACERS for name in names], join=True) == [["created"] * RACERS] * ROUNDS
    for name in names:
        study = load_study(name)
        assert optuna.get_all_study_names(study._storage) == [name] and CONFIG_ATTR in study.user_attrs
        files = {p.name for p in (work / "studies" / name).iterdir() if p.is_file()}
        assert files <= {"study.db", "study.db-wal", "study.db-shm"}, "the creation lock leaves no file behind"


def test_a_reader_waits_for_the_creator_and_creates_nothing(work: Path) -> None:
    """``nas study status`` while a start holds the creation lock: it waits, then says the study is not
    there, and neither makes the database nor writes into it."""
    database = work / "studies" / "late" / "study.db"
    url = make_url(f"sqlite:///{database}")
    with creation_lock(url, exclusive=True):
        database.write_bytes(b"")  # the creator has just made the file, and no schema yet
        status = subprocess.Popen([str(Path(sys.executable).with_name("nas")), "study", "status", "late"],
                                  cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        assert status.poll() is None, "a reader must wait while the storage is being created"
    _, err = status.communicate(timeout=60)
    assert status.returncode == 2 and "no study 'late'" in err and "holds no Optuna studies yet" in err, err
    assert database.read_bytes() == b"", "the reader wrote into the storage"


@pytest.mark.postgres
def test_a_reader_of_an_empty_postgres_database_creates_no_schema(work: Path, fresh_postgres) -> None:
    url = fresh_postgres()
    with pytest.raises(UserError, match="holds no Optuna studies yet"):
        load_study("nothing", url)
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_a_failed_start_removes_the_storage_it_made_and_nothing_else(work: Path, monkeypatch) -> None:
    """A new SQLite file and its folders go; a shared file made by another start keeps its study."""

    def broken_store(*_args: object, **_kwargs: object) -> None:  # fault injection: the artifact store fails
        raise OSError("disk full")

    space = write_space(work)
    shared = f"sqlite:///{work / 'shared' / 'studies.db'}"
    start_study("first", space, ["local"], 1, storage=shared, sampler="random")
    monkeypatch.setattr("nas.study._run.open_store", broken_store)
    with pytest.raises(OSError, match="disk full"):
        start_study("second", space, ["local"], 1, storage=shared, sampler="random")
    assert optuna.get_all_study_names(shared) == ["first"]
    assert CONFIG_ATTR in load_study("first", shared).user_attrs
    with pytest.raises(OSError, match="disk full"):
        start_study("alone", space, ["local"], 1, sampler="random")
    assert sorted(p.name for p in (work / "studies").iterdir()) == ["first"], "only first's artifacts are there"


def test_open_storage_never_creates_a_database(work: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        open_storage("absent", None)
    assert not (work / "studies").exists()
