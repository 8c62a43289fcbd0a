"""Where a study lives: its Optuna storage URL and its folder.

Studies live under ``studies/NAME/`` relative to the working directory by default: ``study.db``
(SQLite), ``artifacts/`` (the default artifact store, see ``nas.artifacts``) and ``report/``.
A PostgreSQL URL works the same; the artifacts URL is recorded in the study so that workers,
report and pick find it from any storage.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from nas.errors import UserError
from nas.names import check_study_name
from nas.storage_url import check_storage_url, engine_kwargs, shown, sqlite_path, storage_errors

STUDIES_DIR = Path("studies")
CONFIG_ATTR = "nas.config"


def study_dir(name: str) -> Path:
    return STUDIES_DIR / check_study_name(name)


def default_storage(name: str) -> str:
    return f"sqlite:///{study_dir(name) / 'study.db'}"


def open_storage(name: str, storage: str | None, heartbeat: bool = False) -> optuna.storages.BaseStorage:
    """An RDB storage for the URL (default: the study's SQLite file), with heartbeats if asked.

    Heartbeats let a later ``resume`` (or another worker) fail and re-queue the trial of a worker
    that was killed, instead of leaving it RUNNING forever.
    """
    url = storage_url(name, storage)
    parsed = check_storage_url(url)
    options: dict[str, Any] = {"heartbeat_interval": 5, "grace_period": 20} if heartbeat else {}
    if heartbeat:
        options["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
    database = sqlite_path(parsed)
    created = None if database is None else _missing_folder(database.parent)
    try:
        if created is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        with storage_errors(url):
            storage = _rdb_storage(url, engine_kwargs(parsed), options)
            if database is not None:
                _write_ahead_log(storage.engine)
            return storage
    except BaseException:
        if created is not None:  # a storage that failed to open leaves nothing behind
            shutil.rmtree(created, ignore_errors=True)
        raise


def _rdb_storage(url: str, kwargs: dict[str, Any], options: dict[str, Any]) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage. Opening a new database creates its schema, check then insert: a second
    process opening it at that moment (``nas study status`` while ``start`` creates it) can hit the
    version row the first one just inserted. The schema then exists, so opening again works."""
    for _ in range(2):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **options)
        except sa_exc.IntegrityError:
            time.sleep(0.2)
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **options)


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


def _missing_folder(folder: Path) -> Path | None:
    """The outermost folder of ``folder`` that does not exist yet (None if it exists)."""
    missing = None
    while not folder.exists():
        missing, folder = folder, folder.parent
    return missing


def load_study(name: str, storage: str | None = None, heartbeat: bool = False) -> optuna.Study:
    """An existing study, or a one-line error naming the storage that was searched."""
    check_study_name(name)
    url = storage_url(name, storage)
    database = sqlite_path(check_storage_url(url))
    if database is not None and not database.exists():
        raise UserError(f"no study {name!r}: {database} does not exist (start it with "
                        f"'nas study start {name} --space FILE')")
    try:
        return optuna.load_study(study_name=name, storage=open_storage(name, storage, heartbeat))
    except KeyError as exc:
        raise UserError(f"no study {name!r} in {shown(url)}") from exc


def study_config(study: optuna.Study) -> dict[str, Any]:
    """The settings the study was started with (search space, agents, objectives, target trials...)."""
    config = study.user_attrs.get(CONFIG_ATTR)
    if config is None:
        raise UserError(f"study {study.study_name!r} was not made by 'nas study start'")
    return config

