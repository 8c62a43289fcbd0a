"""Where a study lives: its Optuna storage URL and its folder.

Studies live under ``studies/NAME/`` relative to the working directory by default: ``study.db``
(SQLite), ``artifacts/`` (the default artifact store, see ``nas.storage.StudyArtifacts``) and
``report/``.
A PostgreSQL URL works the same; the artifacts URL is recorded in the study so that workers,
report and pick find it from any storage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from nas.errors import UserError
from nas.storage._lock import creation_lock, remove_made
from nas.storage._names import check_study_name
from nas.storage._url import check_storage_url, engine_kwargs, shown, sqlite_path, storage_errors

STUDIES_DIR = Path("studies")


def study_dir(name: str) -> Path:
    return STUDIES_DIR / check_study_name(name)


def default_storage(name: str) -> str:
    return f"sqlite:///{study_dir(name) / 'study.db'}"


@contextlib.contextmanager
def creating_storage(name: str, storage: str | None) -> Iterator[optuna.storages.RDBStorage]:
    """The storage, its schema created if it has none, under its creation lock (``nas.storage._lock``)
    until the block ends: what creates a study does it in the block, so that two processes never
    create one schema or one study at once. A new SQLite database whose block fails is removed
    again, with the folders made for it, and nothing of another creator's."""
    url = storage_url(name, storage)
    parsed = check_storage_url(url)
    database = sqlite_path(parsed)
    with creation_lock(parsed, exclusive=True) as made:
        new = database is not None and not database.exists()
        try:
            with storage_errors(url):
                opened = _rdb_storage(url, parsed, heartbeat=True, create=True)
            yield opened
        except BaseException:
            if new:
                remove_made(database, made)
            raise


def open_storage(name: str, storage: str | None, heartbeat: bool = False) -> optuna.storages.RDBStorage:
    """An existing storage (default: the study's SQLite file), opened without creating anything, with
    heartbeats if asked. A storage that does not exist yet, or holds no Optuna schema, is a one-line
    error: only ``nas study start`` creates one.

    Heartbeats let a later ``resume`` (or another worker) fail and re-queue the trial of a worker
    that was killed, instead of leaving it RUNNING forever.
    """
    url = storage_url(name, storage)
    parsed = check_storage_url(url)
    database = sqlite_path(parsed)
    with creation_lock(parsed, exclusive=False):
        if database is not None and not database.exists():
            raise UserError(f"no study {name!r}: {database} does not exist (start it with "
                            f"'nas study start {name} --space FILE')")
        with storage_errors(url):
            if not _has_schema(parsed):
                raise UserError(f"no study {name!r}: storage {shown(url)} holds no Optuna studies yet (start it "
                                f"with 'nas study start {name} --space FILE --storage URL')")
            return _rdb_storage(url, parsed, heartbeat, create=False)


def _rdb_storage(url: str, parsed: URL, heartbeat: bool, create: bool) -> optuna.storages.RDBStorage:
    options: dict[str, Any] = {}
    if heartbeat:
        options = {"heartbeat_interval": 5, "grace_period": 20,
                   "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(parsed), skip_table_creation=not create,
                                         **options)
    if sqlite_path(parsed) is not None:
        _write_ahead_log(storage.engine)
    return storage


def _has_schema(url: URL) -> bool:
    """Whether the database holds Optuna's tables (checked on a connection of its own)."""
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, **engine_kwargs(url))
    try:
        return sqlalchemy.inspect(engine).has_table("studies")
    finally:
        engine.dispose()


def _write_ahead_log(engine: Engine) -> None:
    """SQLite in write-ahead-log mode, synced at checkpoints: a trial writes its record a few times
    and Optuna commits every parameter, each commit an fsync by default (about 5 ms here, 2 ms so).
    A crashed process loses nothing committed; only a power cut can lose the last transactions."""

    def pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened while Optuna set up the tables get the pragmas too


def storage_url(name: str, storage: str | None) -> str:
    """The URL given, or the study's default SQLite file; an empty URL is not the default."""
    return default_storage(name) if storage is None else storage


def load_study(name: str, storage: str | None = None, heartbeat: bool = False) -> optuna.Study:
    """An existing study, or a one-line error naming the storage that was searched."""
    check_study_name(name)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(name, storage, heartbeat))
    except KeyError as exc:
        raise UserError(f"no study {name!r} in {shown(storage_url(name, storage))}") from exc
