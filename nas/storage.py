"""Where a study lives: its Optuna storage URL and its folder.

Studies live under ``studies/NAME/`` relative to the working directory by default: ``study.db``
(SQLite), ``artifacts/`` (the default artifact store, see ``nas.artifacts``) and ``report/``.
A PostgreSQL URL works the same; the artifacts URL is recorded in the study so that workers,
report and pick find it from any storage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from nas.errors import UserError

STUDIES_DIR = Path("studies")
CONFIG_ATTR = "nas.config"


def study_dir(name: str) -> Path:
    return STUDIES_DIR / name


def default_storage(name: str) -> str:
    return f"sqlite:///{study_dir(name) / 'study.db'}"


def open_storage(name: str, storage: str | None, heartbeat: bool = False) -> optuna.storages.BaseStorage:
    """An RDB storage for the URL (default: the study's SQLite file), with heartbeats if asked.

    Heartbeats let a later ``resume`` (or another worker) fail and re-queue the trial of a worker
    that was killed, instead of leaving it RUNNING forever.
    """
    url = storage or default_storage(name)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"heartbeat_interval": 5, "grace_period": 20} if heartbeat else {}
    if heartbeat:
        options["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
    return optuna.storages.RDBStorage(url, **options)


def load_study(name: str, storage: str | None = None, heartbeat: bool = False) -> optuna.Study:
    """An existing study, or a one-line error naming the storage that was searched."""
    url = storage or default_storage(name)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise UserError(f"no study {name!r}: {url.removeprefix('sqlite:///')} does not exist (start it with "
                        f"'nas study start {name} --space FILE')")
    try:
        return optuna.load_study(study_name=name, storage=open_storage(name, storage, heartbeat))
    except KeyError as exc:
        raise UserError(f"no study {name!r} in {url}") from exc


def study_config(study: optuna.Study) -> dict[str, Any]:
    """The settings the study was started with (search space, agents, objectives, target trials...)."""
    config = study.user_attrs.get(CONFIG_ATTR)
    if config is None:
        raise UserError(f"study {study.study_name!r} was not made by 'nas study start'")
    return config

