"""What chatkit's SQLite stores (history, accounts, moderation) share."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

__all__ = ["check_writable", "create_private", "immediate"]


def create_private(path: str | Path) -> None:
    """Create ``path`` empty, readable by its owner alone (mode 0600), if it is not there.

    The stores hold private messages and password hashes; SQLite would create the file
    0644 (less the umask), readable by every user of the machine, and gives its ``-wal``
    and ``-shm`` files the database's mode. An empty file is a new database to SQLite.
    A file that exists keeps its mode (the operator's choice); ``:memory:`` is left
    alone, and so is any error (``sqlite3.connect`` reports it in its own words).
    """
    if str(path) == ":memory:":
        return
    # (FileExistsError: there already; another error: sqlite3 says why it cannot be.)
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def check_writable(db: sqlite3.Connection) -> str | None:
    """Why ``db`` (opened with ``isolation_level=None``, no transaction open) cannot be
    written, or ``None`` if it can. SQLite opens a file it may not write read-only
    without a word, and a ``BEGIN IMMEDIATE`` writes nothing: a store would start, and
    fail at its first write. Setting ``user_version`` to what it is writes the file's
    header (and changes nothing)."""
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        db.execute(f"PRAGMA user_version = {int(version)}")
    except sqlite3.Error as exc:
        return str(exc)
    return None


@contextlib.contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on ``db`` (opened with ``isolation_level=None``),
    rolled back on any error, a failed commit too (a full disk, a busy timeout): a
    transaction left open would make every later ``BEGIN`` fail. The caller holds what
    guards ``db``."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
