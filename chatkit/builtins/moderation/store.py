"""The moderation plugin's store: operators, bans, mutes, invitations, room flags and
kept topics per room, and who set each ban and mute (and when), in one SQLite file; and
what a store must offer the plugin."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from chatkit import UsageError
from chatkit.builtins.sqlite import check_writable, create_private, immediate

__all__ = ["CACHE_ENTRIES", "COLUMNS", "ModerationStore", "Store"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (room TEXT NOT NULL, account TEXT NOT NULL,
                                PRIMARY KEY (room, account));
CREATE TABLE IF NOT EXISTS bans (room TEXT NOT NULL, mask TEXT NOT NULL,
                                 PRIMARY KEY (room, mask));
CREATE TABLE IF NOT EXISTS mutes (room TEXT NOT NULL, mask TEXT NOT NULL,
                                  PRIMARY KEY (room, mask));
CREATE TABLE IF NOT EXISTS invites (room TEXT NOT NULL, mask TEXT NOT NULL,
                                    PRIMARY KEY (room, mask));
CREATE TABLE IF NOT EXISTS flags (room TEXT NOT NULL, flag TEXT NOT NULL,
                                  PRIMARY KEY (room, flag));
CREATE TABLE IF NOT EXISTS topics (room TEXT PRIMARY KEY, topic TEXT NOT NULL,
                                   nick TEXT NOT NULL, ts TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS setters (kind TEXT NOT NULL, room TEXT NOT NULL,
                                    value TEXT NOT NULL, nick TEXT NOT NULL, ts TEXT NOT NULL,
                                    PRIMARY KEY (kind, room, value));
"""
APPLICATION_ID = 0x63686B6D  # "chkm": marks a SQLite file as a chatkit moderation database
VERSION = 2
"""The schema's version (SQLite's ``user_version``): a newer file is refused. 2 added
``setters``: who set each ban and mute, and when."""
TABLES = {"ops", "bans", "mutes", "invites", "flags", "topics", "setters"}
# Each table's second column: an account (ops), a room flag ("invite": invite-only,
# "lock": only identified clients speak, "moderated": only operators speak, "topic":
# only operators set the topic), or a mask.
COLUMNS = {"ops": "account", "bans": "mask", "mutes": "mask", "invites": "mask", "flags": "flag"}
CACHE_ENTRIES = 4096
"""(table, room) pairs :class:`ModerationStore` keeps in memory at most (rooms in use,
more than any server holds at once; emptied when full)."""


class Store(Protocol):
    """What the ``moderation`` plugin needs of a store: :class:`ModerationStore` (a
    node's SQLite file), or a cluster's (``chatkit.builtins.moderation.shared``)."""

    path: str

    def close(self) -> None: ...
    def rows(self, table: str, room: str) -> list[str]: ...
    def rooms_with(self, table: str, value: str) -> list[str]: ...
    def add(self, table: str, room: str, value: str, by: str = "", ts: str = "") -> None: ...
    def remove(self, table: str, room: str, value: str) -> bool: ...
    def setters(self, table: str, room: str) -> dict[str, tuple[str, str]]: ...
    def topic(self, room: str) -> dict[str, str] | None: ...
    def keep_topic(self, room: str, topic: str, nick: str, ts: str) -> None: ...
    def claim_first(self, room: str, token: str) -> bool: ...
    def release_first(self, room: str, token: str, *, left: bool = False) -> None: ...


FIRST_CLAIM = 2.0
"""Seconds a claim to be an empty room's first member holds at most (:meth:`claim_first`):
a join refused after its claim does not keep the room from having a first member longer."""


class ModerationStore:
    """Operators, bans and mutes per room (folded), in one SQLite file; any thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # Synchronize access to the connection (a connection is not thread-safe) and
        # to the cache of what it holds (every message checks the room's mutes).
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], list[str]] = {}
        # Guards _claims: joiners on their reader threads claim and release.
        self._claims_lock = threading.Lock()
        self._claims: dict[str, tuple[str, float]] = {}  # room -> (token, until, monotonic)
        try:
            create_private(self.path)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                self._prepare()
            except BaseException:
                self._db.close()  # (refused: not left open)
                raise
        except sqlite3.Error as exc:
            raise UsageError(f"moderation: cannot open {self.path}: {exc}") from None

    def _prepare(self) -> None:
        """Check the file is a moderation database of this version or older (a file of
        before the marks, with only moderation's tables, is one), then create what
        is missing and mark it."""
        db = self._db
        (app,) = db.execute("PRAGMA application_id").fetchone()
        (version,) = db.execute("PRAGMA user_version").fetchone()
        tables = {
            name
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if not name.startswith("sqlite_")  # (SQLite's own: ANALYZE's sqlite_stat1)
        }
        if app != APPLICATION_ID and (app != 0 or not tables <= TABLES):
            raise UsageError(
                f"moderation: {self.path} is not a chatkit moderation database (another "
                "program's, or chatkit's history or accounts: give moderation a file of its own)"
            )
        if version > VERSION:
            raise UsageError(f"moderation: {self.path} is from a newer chatkit")
        why = check_writable(db)
        if why is not None:  # (opened read-only: every ban and topic would fail)
            raise UsageError(
                f"moderation: {self.path} cannot be written ({why}): let the server's user "
                "write it and its directory, or give another file (db)"
            )
        if app == APPLICATION_ID and version == VERSION and tables == TABLES:
            return  # (nothing to create)
        db.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version={VERSION}")
        db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def claim_first(self, room: str, token: str) -> bool:
        """Claim to be the first member of ``room`` (empty when asked), for a joiner
        (``token``) until :meth:`release_first` or :data:`FIRST_CLAIM` seconds: False
        if another joiner holds a claim, so two who join an empty room at once are
        not both its first member. In memory: one node's."""
        now = time.monotonic()
        with self._claims_lock:
            held = self._claims.get(room)
            if held is not None and held[1] > now and held[0] != token:
                return False
            self._claims[room] = (token, now + FIRST_CLAIM)
            if len(self._claims) > CACHE_ENTRIES:  # (claims of joins that never finished)
                self._claims = {k: v for k, v in self._claims.items() if v[1] > now}
            return True

    def release_first(self, room: str, token: str, *, left: bool = False) -> None:
        """The joiner ``token`` has joined ``room`` (members see it now), or ``left``
        it: its claim ends."""
        with self._claims_lock:
            held = self._claims.get(room)
            if held is not None and held[0] == token:
                del self._claims[room]

    def rows(self, table: str, room: str) -> list[str]:
        """The accounts (``ops``) or masks (``bans``, ``mutes``) of ``room``."""
        column = COLUMNS[table]
        with self._lock:
            cached = self._cache.get((table, room))
            if cached is None:
                found = self._db.execute(
                    f"SELECT {column} FROM {table} WHERE room = ? ORDER BY 1", (room,)
                ).fetchall()
                if len(self._cache) >= CACHE_ENTRIES:
                    # Any client may ask about any room name (a modes request, before
                    # login too): start over rather than grow without a bound.
                    self._cache.clear()
                cached = self._cache[table, room] = [row[0] for row in found]
        return cached

    def rooms_with(self, table: str, value: str) -> list[str]:
        """The rooms (folded) whose ``table`` holds ``value`` (an account's ``ops``)."""
        column = COLUMNS[table]
        with self._lock:
            found = self._db.execute(
                f"SELECT room FROM {table} WHERE {column} = ? ORDER BY 1", (value,)
            ).fetchall()
        return [str(row[0]) for row in found]

    def add(self, table: str, room: str, value: str, by: str = "", ts: str = "") -> None:
        """Add ``value`` to ``room``'s ``table``; ``by`` (a nick) set it at ``ts`` (ISO
        8601), if given: see :meth:`setters`."""
        with self._lock, immediate(self._db) as db:
            self._cache.pop((table, room), None)
            cursor = db.execute(f"INSERT OR IGNORE INTO {table} VALUES (?, ?)", (room, value))
            if cursor.rowcount and by and ts:
                db.execute(
                    "INSERT OR REPLACE INTO setters VALUES (?, ?, ?, ?, ?)",
                    (table, room, value, by, ts),
                )

    def remove(self, table: str, room: str, value: str) -> bool:
        column = COLUMNS[table]
        with self._lock, immediate(self._db) as db:
            self._cache.pop((table, room), None)
            cursor = db.execute(
                f"DELETE FROM {table} WHERE room = ? AND {column} = ?", (room, value)
            )
            db.execute(
                "DELETE FROM setters WHERE kind = ? AND room = ? AND value = ?",
                (table, room, value),
            )
        return cursor.rowcount > 0

    def setters(self, table: str, room: str) -> dict[str, tuple[str, str]]:
        """Who set each value of ``room``'s ``table`` (a ban's, a mute's mask), and when:
        ``{value: (nick, ts)}``, for those added with ``by`` (not those of before
        version 2)."""
        with self._lock:
            found = self._db.execute(
                "SELECT value, nick, ts FROM setters WHERE kind = ? AND room = ?", (table, room)
            ).fetchall()
        return {str(value): (str(nick), str(ts)) for value, nick, ts in found}

    def topic(self, room: str) -> dict[str, str] | None:
        """The kept topic of ``room``: ``{"topic", "nick", "ts"}``, or ``None``."""
        with self._lock:
            row = self._db.execute(
                "SELECT topic, nick, ts FROM topics WHERE room = ?", (room,)
            ).fetchone()
        return None if row is None else {"topic": row[0], "nick": row[1], "ts": row[2]}

    def keep_topic(self, room: str, topic: str, nick: str, ts: str) -> None:
        """Keep ``topic`` for ``room`` (``""``: forget it)."""
        with self._lock:
            if topic:
                self._db.execute(
                    "INSERT OR REPLACE INTO topics VALUES (?, ?, ?, ?)", (room, topic, nick, ts)
                )
            else:
                self._db.execute("DELETE FROM topics WHERE room = ?", (room,))

    def everything(self) -> tuple[list[tuple[str, str, str]], dict[str, dict[str, str]]]:
        """Every row, as ``(table, room, value)``, and every kept topic by room: for
        copying them elsewhere (:meth:`all_setters` has who set the rows)."""
        rows: list[tuple[str, str, str]] = []
        with self._lock:
            for table, column in COLUMNS.items():
                found = self._db.execute(f"SELECT room, {column} FROM {table}").fetchall()
                rows += [(table, str(room), str(value)) for room, value in found]
            topics = self._db.execute("SELECT room, topic, nick, ts FROM topics").fetchall()
        return rows, {
            str(room): {"topic": topic, "nick": nick, "ts": ts} for room, topic, nick, ts in topics
        }

    def all_setters(self) -> list[tuple[str, str, str, str, str]]:
        """Who set every row that says so, and when: ``(table, room, value, nick, ts)``."""
        with self._lock:
            found = self._db.execute("SELECT kind, room, value, nick, ts FROM setters").fetchall()
        return [(str(t), str(r), str(v), str(n), str(ts)) for t, r, v, n, ts in found]
