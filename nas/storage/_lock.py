"""The storage's creation lock: one process at a time creates a schema or a study; readers wait for it.

Opening an Optuna RDB storage creates its tables, then its version row, then its alembic stamp,
each a check then a write. Two processes doing it at once (two ``nas study start``, or a
``status`` while a ``start`` creates the database) collide at any of these steps, and two starts
of one name both pass the study-exists check. So whatever creates holds this lock exclusively for
the whole creation (schema, study, its settings), and readers take it shared just while they open.

* SQLite: ``flock`` on the database's folder. A lock file would be left behind by every study;
  the folder is there anyway. A creator that fails removes the folders it made: a process that
  was waiting on the removed folder sees that (another inode at the path, or none) and starts
  again, so two processes never hold two locks on "the same" folder.
* PostgreSQL: a transaction-level advisory lock on a connection of its own (shared for readers),
  released when that transaction ends, even if the process dies.
* MySQL: ``GET_LOCK`` (exclusive only; readers take it too, briefly).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from nas.storage._url import StorageError, engine_kwargs, sqlite_path, storage_errors

LOCK_WAIT_S = 600  # a creation takes well under a second; a lock held longer is a stuck process
_ADVISORY_KEY = 0x6E61730053544F52  # "nas\0STOR": the advisory lock's key in every database
_MYSQL_LOCK = "nas.storage._open.create"


@contextlib.contextmanager
def creation_lock(url: URL, exclusive: bool) -> Iterator[list[Path]]:
    """Hold the storage's creation lock; yields the folders made for a new SQLite database (the
    creator removes them again, when empty, if creation fails)."""
    database = sqlite_path(url)
    if database is not None:
        with _folder_lock(database.parent, exclusive) as made:
            yield made
        return
    with _database_lock(url, exclusive):
        yield []


@contextlib.contextmanager
def _folder_lock(folder: Path, exclusive: bool) -> Iterator[list[Path]]:
    """``flock`` on ``folder`` (made first, when exclusive). Yields the folders made here."""
    while True:
        made = _make_folders(folder) if exclusive else []
        try:
            handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # removed by a creator that failed, or (reader) never made
            if not exclusive:
                yield []
                return
            continue
        try:
            _flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, folder)
            if _same_folder(handle, folder):
                yield made
                return
        finally:
            os.close(handle)


def _flock(handle: int, mode: int, folder: Path) -> None:
    """``flock``, waiting at most LOCK_WAIT_S (a stopped process would otherwise hold everyone up)."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise StorageError(f"storage folder {folder}: another process has held its creation lock for "
                                   f"over {LOCK_WAIT_S} s") from None
            time.sleep(0.02)


def _make_folders(folder: Path) -> list[Path]:
    """The missing folders of ``folder`` made, outermost first. Another process may remove an empty
    one meanwhile (a failed creator cleaning up), so a vanished parent is made again."""
    missing = []
    ancestor = folder
    while not ancestor.exists():
        missing.append(ancestor)
        ancestor = ancestor.parent
    made = []
    for path in reversed(missing):
        try:
            path.mkdir()
            made.append(path)
        except FileExistsError:
            pass
        except FileNotFoundError:
            return made + _make_folders(folder)
    return made


def _same_folder(handle: int, folder: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle), os.stat(folder))
    except FileNotFoundError:
        return False


def remove_made(database: Path, made: list[Path]) -> None:
    """Undo a failed creation of a new SQLite database: its files, then the folders made for it
    that are still empty (another study may have been created in them meanwhile)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{database}{suffix}")
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def _database_lock(url: URL, exclusive: bool) -> Iterator[None]:
    """An advisory lock held on a connection of its own while the block runs."""
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, **engine_kwargs(url))
    try:
        with storage_errors(url):
            connection = engine.connect()
        with connection:
            with storage_errors(url):
                release = _take_database_lock(connection, url.get_backend_name(), exclusive)
            try:
                yield
            finally:
                release()
    finally:
        engine.dispose()


def _take_database_lock(connection: sqlalchemy.Connection, backend: str, exclusive: bool) -> Callable[[], None]:
    """Take the lock; the function that releases it."""
    if backend == "postgresql":
        transaction = connection.begin()
        connection.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_S}s'"))
        mode = "" if exclusive else "_shared"
        connection.execute(sqlalchemy.text(f"SELECT pg_advisory_xact_lock{mode}(:key)"), {"key": _ADVISORY_KEY})
        return transaction.rollback  # the transaction holds the lock; it wrote nothing
    got = connection.execute(sqlalchemy.text("SELECT GET_LOCK(:name, :wait)"),
                             {"name": _MYSQL_LOCK, "wait": LOCK_WAIT_S}).scalar()
    if got != 1:
        raise StorageError(f"another process has held the storage's creation lock for over {LOCK_WAIT_S} s")
    return lambda: connection.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:name)"), {"name": _MYSQL_LOCK})
