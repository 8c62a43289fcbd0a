"""Storage URLs checked before use: each problem is one line (exit code 2), found in well under a second.

Optuna's RDB storage takes any SQLAlchemy URL; left alone, a typo or a server that is down ends in a
long traceback, after the study folder may already exist. Here the URL is parsed, its backend and
driver are checked, a SQLite file's folder is checked for being creatable, and connecting is given
a short timeout; errors from connecting are turned into one line naming the URL (password hidden).

``postgresql://`` means psycopg 3 (SQLAlchemy's default for that scheme), which the ``postgres``
extra installs; ``postgresql+psycopg2://`` still works where psycopg2 is installed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from nas.errors import UserError

# Optuna's RDB storage supports these; how to get each one's driver
BACKENDS = {
    "sqlite": "part of Python",
    "postgresql": "pip install 'nas-structured[postgres]' (psycopg 3) and use postgresql://",
    "mysql": "pip install PyMySQL and use mysql+pymysql://",
}
CONNECT_TIMEOUT_S = 10


class StorageError(UserError):
    """A storage URL that cannot be used: malformed, unknown backend, missing driver, unreachable."""


def shown(url: str | URL) -> str:
    """The URL as it may be printed: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return str(url)


def check_storage_url(url: str) -> URL:
    """The parsed URL, if its backend is supported, its driver importable and (SQLite) its folder creatable."""
    if not url.strip():
        raise StorageError("empty storage URL; leave --storage out for the default sqlite:///studies/NAME/study.db")
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        raise StorageError(f"storage {url!r} is not a URL; expected e.g. sqlite:///PATH or "
                           "postgresql://USER@HOST/DB") from None
    backend = parsed.get_backend_name()
    if backend not in BACKENDS:
        raise StorageError(f"storage {shown(parsed)}: unknown scheme {parsed.drivername!r}; "
                           f"allowed: {', '.join(f'{b}://' for b in BACKENDS)}")
    try:
        parsed.get_dialect().import_dbapi()
    except sa_exc.NoSuchModuleError:
        raise StorageError(f"storage {shown(parsed)}: unknown driver {parsed.drivername!r}") from None
    except ImportError as exc:
        raise StorageError(f"storage {shown(parsed)}: driver {parsed.get_driver_name()!r} is not installed "
                           f"({exc.name or exc}); {BACKENDS[backend]}") from None
    if backend == "sqlite":
        _check_sqlite_path(parsed)
    return parsed


def sqlite_path(url: str | URL) -> Path | None:
    """The database file of a SQLite URL; None for other backends."""
    parsed = make_url(url)
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None


def _check_sqlite_path(url: URL) -> None:
    if not url.database or url.database == ":memory:":
        raise StorageError(f"storage {url}: an in-memory database would lose the study; use sqlite:///PATH")
    path = Path(url.database)
    if path.is_dir():
        raise StorageError(f"storage {url}: {path} is a folder; name a database file")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise StorageError(f"storage {url}: cannot create {path}: {ancestor} is not a folder")
    writable = path if path.exists() else ancestor
    if not os.access(writable, os.W_OK):
        raise StorageError(f"storage {url}: cannot write to {writable}")


def engine_kwargs(url: URL) -> dict:
    """A connect timeout for network databases (unless the URL sets one), so a dead host fails quickly."""
    if url.get_backend_name() in ("postgresql", "mysql") and "connect_timeout" not in url.query:
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {}


@contextlib.contextmanager
def storage_errors(url: str | URL) -> Iterator[None]:
    """Turn the database's errors while opening the storage into one line naming the URL."""
    try:
        yield
    except sa_exc.DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        raise StorageError(f"storage {shown(url)}: {detail}") from exc
    except sa_exc.SQLAlchemyError as exc:
        raise StorageError(f"storage {shown(url)}: {str(exc).splitlines()[0]}") from exc
