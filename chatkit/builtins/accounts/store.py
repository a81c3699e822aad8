"""The account store behind the ``accounts`` plugin: SQLite, one connection, one lock.

Accounts are few and change rarely (a registration, a password change), so one
connection guarded by a lock serves every thread; each change is its own
transaction. The file is separate from the history database (its own
``application_id``), kept beside it by default.

Passwords never reach this module: it stores the argon2 hash the plugin made.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from chatkit import UsageError, fold, shown_skeleton, skeleton
from chatkit.builtins.sqlite import check_writable, create_private, immediate

__all__ = ["APPLICATION_ID", "Account", "AccountStore", "Store"]

APPLICATION_ID = 0x63686B61  # "chka": marks a SQLite file as a chatkit accounts database

# Each step takes the schema from version N to N + 1 (PRAGMA user_version).
MIGRATIONS: list[str] = [
    # 0 -> 1: accounts and the invitations of `registration = invite`.
    """
    CREATE TABLE accounts (
        name    TEXT PRIMARY KEY,  -- the registered nick, case-folded
        nick    TEXT NOT NULL,     -- the nick as it was registered
        hash    TEXT NOT NULL,     -- argon2 hash of the password
        email   TEXT,
        created REAL NOT NULL      -- seconds since 1970
    );
    CREATE TABLE invites (
        name    TEXT PRIMARY KEY,  -- the nick invited to register, case-folded
        inviter TEXT NOT NULL,     -- the account that invited it
        created REAL NOT NULL
    );
    """,
    # 1 -> 2: each account's look-alike key (chatkit.skeleton of its nick), so that a nick
    # that only looks like a registered one (Cyrillic a, Greek o) needs its password too.
    # Not unique: two look-alike accounts registered before this version both stay.
    """
    ALTER TABLE accounts ADD COLUMN skeleton TEXT;
    UPDATE accounts SET skeleton = chatkit_skeleton(nick);
    CREATE INDEX accounts_skeleton ON accounts (skeleton);
    """,
    # 2 -> 3: each account's second look-alike key (chatkit.shown_skeleton: case kept, so
    # that aIice, a capital I for the l, is kept from alice both ways).
    """
    ALTER TABLE accounts ADD COLUMN shown TEXT;
    UPDATE accounts SET shown = chatkit_shown_skeleton(nick);
    CREATE INDEX accounts_shown ON accounts (shown);
    """,
    # 3 -> 4: that key with case folded after the capital I is an l (chatkit_look): an
    # account's owner may show its nick in any case, so Alice's account (shown as alice)
    # must be kept out by aIice's as alice's is.
    """
    UPDATE accounts SET shown = chatkit_look(nick);
    """,
]


def look(nick: str) -> str:
    """``nick``'s second look-alike key: its :func:`chatkit.skeleton` once a capital
    ``I`` is an ``l`` (:func:`chatkit.shown_skeleton`), so ``aIice``'s is ``alice``."""
    return skeleton(shown_skeleton(nick))


def looks(nick: str) -> tuple[str, str]:
    """``nick``'s two look-alike keys, its :func:`chatkit.skeleton` and :func:`look`: two
    nicks look alike if a key of one is a key of the other. (An account's owner may show
    its nick in any case, so both are folded: ``Alice``'s account, shown as ``alice``,
    looks like ``aIice``. All capitals, ``NEIL`` looks like ``nell`` too.)"""
    return skeleton(nick), look(nick)


@dataclass(frozen=True)
class Account:
    """One registered nick."""

    name: str
    """The account's key: the registered nick, case-folded (``chatkit.fold``)."""
    nick: str
    """The nick as registered."""
    hash: str
    """The argon2 hash of its password."""
    email: str | None
    """The address given at registration, if any."""


class Store(Protocol):
    """What the ``accounts`` plugin needs of a store: :class:`AccountStore` (a node's
    SQLite file), or the cluster's (``chatkit.builtins.accounts.shared``)."""

    path: str

    def close(self) -> None: ...
    def get(self, name: str) -> Account | None: ...
    def find(self, nick: str) -> Account | None: ...
    def create(self, account: Account) -> bool: ...
    def set_hash(self, name: str, hash: str, *, old: str | None = None) -> None: ...
    def delete(self, name: str) -> None: ...
    def invite(self, name: str, inviter: str) -> None: ...
    def invites_by(self, inviter: str) -> int: ...
    def invited(self, name: str) -> bool: ...


class AccountStore:
    """A SQLite file of accounts, opened (created, migrated) at construction.

    :param path: The database file, or ``":memory:"`` (nothing survives a restart).

    Raises :class:`~chatkit.UsageError` if the file cannot be opened or is not a
    chatkit accounts database. Every method may be called from any thread.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        """The file, as given."""
        # Synchronize access to the connection (a connection is not thread-safe).
        self._lock = threading.Lock()
        try:
            create_private(self.path)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._prepare()
        except sqlite3.Error as exc:
            raise UsageError(f"accounts: cannot open {self.path}: {exc}") from None

    def _prepare(self) -> None:
        db = self._db
        (app,) = db.execute("PRAGMA application_id").fetchone()
        (version,) = db.execute("PRAGMA user_version").fetchone()
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app != APPLICATION_ID and (app != 0 or tables):
            raise UsageError(f"accounts: {self.path} is not a chatkit accounts database")
        if version > len(MIGRATIONS):
            raise UsageError(f"accounts: {self.path} is from a newer chatkit")
        if self.path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=5000")
        why = check_writable(db)
        if why is not None:  # (opened read-only: every /register and /passwd would fail)
            raise UsageError(
                f"accounts: {self.path} cannot be written ({why}): let the server's user "
                "write it and its directory, or give another file (db)"
            )
        db.create_function("chatkit_skeleton", 1, skeleton, deterministic=True)
        db.create_function("chatkit_shown_skeleton", 1, shown_skeleton, deterministic=True)
        db.create_function("chatkit_look", 1, look, deterministic=True)
        for step in range(version, len(MIGRATIONS)):
            db.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={step + 1}")
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute("COMMIT")

    def close(self) -> None:
        """Close the file. Idempotent."""
        with self._lock:
            self._db.close()

    def get(self, name: str) -> Account | None:
        """The account called ``name`` (folded), or ``None``."""
        with self._lock:
            row = self._db.execute(
                "SELECT name, nick, hash, email FROM accounts WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else Account(*row)

    def find(self, nick: str) -> Account | None:
        """The account whose nick ``nick`` is, or looks like (:func:`looks`), or
        ``None``: the account of that very name first, else the oldest look-alike."""
        keys = looks(nick)
        with self._lock:
            row = self._db.execute(
                "SELECT name, nick, hash, email FROM accounts"
                " WHERE name = ? OR skeleton IN (?, ?) OR shown IN (?, ?)"
                " ORDER BY name = ? DESC, created LIMIT 1",
                (fold(nick), *keys, *keys, fold(nick)),
            ).fetchone()
        return None if row is None else Account(*row)

    def create(self, account: Account) -> bool:
        """Add ``account`` and use up its invitation; False if its name is taken, or
        a look-alike of it (:func:`looks`)."""
        (like, shown), now = looks(account.nick), time.time()
        with self._lock:
            try:
                with immediate(self._db) as db:
                    if db.execute(
                        "SELECT 1 FROM accounts WHERE skeleton IN (?, ?) OR shown IN (?, ?)",
                        (like, shown, like, shown),
                    ).fetchone():
                        return False
                    db.execute(
                        "INSERT INTO accounts (name, nick, hash, email, created, skeleton, shown)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (account.name, account.nick, account.hash, account.email, now, like, shown),
                    )
                    db.execute("DELETE FROM invites WHERE name = ?", (account.name,))
            except sqlite3.IntegrityError:
                return False
        return True

    def set_hash(self, name: str, hash: str, *, old: str | None = None) -> None:
        """Replace the password hash of account ``name`` (with ``old``: only if it is
        still that one, as a rehash at login must not undo a ``/passwd`` meanwhile)."""
        with self._lock:
            if old is None:
                self._db.execute("UPDATE accounts SET hash = ? WHERE name = ?", (hash, name))
            else:
                self._db.execute(
                    "UPDATE accounts SET hash = ? WHERE name = ? AND hash = ?", (hash, name, old)
                )

    def delete(self, name: str) -> None:
        """Delete account ``name`` (and the invitations it gave)."""
        with self._lock, immediate(self._db) as db:
            db.execute("DELETE FROM accounts WHERE name = ?", (name,))
            db.execute("DELETE FROM invites WHERE inviter = ?", (name,))

    def invite(self, name: str, inviter: str) -> None:
        """Let nick ``name`` (folded) register; ``inviter`` is the account inviting."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO invites (name, inviter, created) VALUES (?, ?, ?)",
                (name, inviter, time.time()),
            )

    def invites_by(self, inviter: str) -> int:
        """How many invitations account ``inviter`` has open."""
        with self._lock:
            (count,) = self._db.execute(
                "SELECT count(*) FROM invites WHERE inviter = ?", (inviter,)
            ).fetchone()
        return int(count)

    def invited(self, name: str) -> bool:
        """Whether nick ``name`` (folded) was invited to register."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM invites WHERE name = ?", (name,)).fetchone()
        return row is not None

    def everything(self) -> tuple[list[tuple[Account, float]], list[tuple[str, str]]]:
        """Every account with its creation time (oldest first), and every invitation
        (the nick, folded; the inviting account): for copying them elsewhere."""
        with self._lock:
            accounts = self._db.execute(
                "SELECT name, nick, hash, email, created FROM accounts ORDER BY created"
            ).fetchall()
            invites = self._db.execute("SELECT name, inviter FROM invites").fetchall()
        return [(Account(*row[:4]), float(row[4])) for row in accounts], [
            (str(name), str(inviter)) for name, inviter in invites
        ]
