"""The message store behind the ``history`` plugin: SQLite, one writer thread, group commit.

:class:`MessageStore` keeps every stored room and private message in one table.
Writes go through a single writer thread: :meth:`MessageStore.add` queues a row and
waits until the transaction that holds it is committed, and the writer commits
everything queued meanwhile in one transaction (group commit), so a burst of
messages from many clients costs a few transactions, not one each. Reads
(replay, paging) use a second connection, which in WAL mode never waits for the
writer.

Durability: the database runs in WAL mode. With ``synchronous = "normal"`` a
commit is in the operating system's hands when :meth:`add` returns: it survives
the server being killed, not a power cut or kernel crash (the last commits before
one may be lost). With ``"full"`` every commit is also flushed to the disk
(``fsync``) before :meth:`add` returns, and survives those too.

One server at a time: the store holds an advisory lock (``flock``) on ``PATH.lock``
beside the database for as long as it is open, with the holder's pid written in
it; a second store on the same file (another server, in this process or another)
is refused at start with a :class:`~chatkit.UsageError` naming the file and that
pid, instead of two writers refusing each other's message ids.

Errors: a :class:`StoreError`'s text is for the people chatting (no SQL in it);
the detail goes to the log, and to the error's ``__cause__``.

Threads: :meth:`add` and the read methods may be called from any thread; the
writer thread also prunes old rows (retention), in small transactions between
commits. A third thread checkpoints the WAL into the database file every second,
so no commit waits for a checkpoint's disk flush.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from chatkit import MAX_ID, Message, UsageError, fold
from chatkit.builtins.sqlite import check_writable, create_private

if sys.platform != "win32":
    import fcntl

__all__ = [
    "APPLICATION_ID",
    "MAX_ID",
    "MAX_WRITER_FAILURES",
    "MIGRATIONS",
    "NOT_READ",
    "NOT_STORED",
    "SCHEMA_VERSION",
    "MessageStore",
    "StoreError",
    "conversation",
]

log = logging.getLogger(__name__)

APPLICATION_ID = 0x63686B74  # "chkt": marks a SQLite file as a chatkit history database
BUSY_TIMEOUT = 5.0  # seconds to wait for another program's lock before giving up
MAX_BATCH = 1000  # rows committed in one transaction at most
PRUNE_CHUNK = 500  # rows deleted in one transaction by retention, so commits interleave
CHECKPOINT_INTERVAL = 1.0  # seconds between WAL checkpoints (by their own thread)
MAX_WRITER_FAILURES = 3  # unexpected writer errors in a row before the store gives up

# Each migration takes the schema from version N to N + 1 (MIGRATIONS[N]); the
# database's version is PRAGMA user_version. Never change a released step: add one.
MIGRATIONS: list[str] = [
    # 0 -> 1: the messages table.
    """
    CREATE TABLE messages (
        id     INTEGER PRIMARY KEY,  -- the message id: ms since 1970 x 1000 + a counter
        conv   TEXT NOT NULL,        -- '#room' or 'nick1 nick2' (private), case-folded
        room   TEXT,                 -- the room as displayed; NULL for a private message
        nick   TEXT NOT NULL,        -- the sender
        target TEXT,                 -- the recipient of a private message
        text   TEXT NOT NULL,
        action INTEGER NOT NULL DEFAULT 0,
        ts     TEXT NOT NULL         -- UTC ISO 8601 with milliseconds
    );
    CREATE INDEX messages_by_conv ON messages (conv, id);
    """,
    # 1 -> 2: the accounts (folded) of the sender and recipient of a private message,
    # NULL when not identified: private history is shown to those accounts only.
    """
    ALTER TABLE messages ADD COLUMN sender_account TEXT;
    ALTER TABLE messages ADD COLUMN target_account TEXT;
    """,
    # 2 -> 3: notices (IRC's NOTICE), replayed as notices.
    """
    ALTER TABLE messages ADD COLUMN notice INTEGER NOT NULL DEFAULT 0;
    """,
    # 3 -> 4: an account's private messages, whatever its nick was, for its private
    # history to follow it across renames (partial: room messages cost them nothing).
    """
    CREATE INDEX messages_sent_by_account ON messages (sender_account, id)
        WHERE room IS NULL AND sender_account IS NOT NULL;
    CREATE INDEX messages_to_account ON messages (target_account, id)
        WHERE target_account IS NOT NULL;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = "id, room, nick, target, text, action, ts, sender_account, notice"


# What the people chatting are told; the log says what went wrong.
NOT_STORED = "could not store the message; try again"
NOT_READ = "could not read the history; try again"


class StoreError(Exception):
    """A message could not be stored or read; the text says so, for people (no SQL in it).

    The detail, if any, is logged and kept as ``__cause__``.
    """


def conversation(message: Message) -> str:
    """The key a message is filed under: its room, or its two parties (case-folded)."""
    if message.room is not None:
        return fold(message.room)
    return private_conversation(message.nick, message.to or "")


def private_conversation(a: str, b: str) -> str:
    """The key of the private conversation between nicks ``a`` and ``b``."""
    return " ".join(sorted((fold(a), fold(b))))


def _row(
    message: Message, accounts: tuple[str | None, str | None], conv: str | None = None
) -> tuple[object, ...]:
    """The row of ``message``; ``conv``: its :func:`conversation`, if known."""
    sender, target = accounts
    return (
        message.id,
        conversation(message) if conv is None else conv,
        message.room,
        message.nick,
        message.to,
        message.text,
        int(message.action),
        message.ts,
        message.account if sender is None else sender,
        target,
        int(message.notice),
    )


def _check_row(row: tuple[object, ...]) -> None:
    """Raise :class:`StoreError` if SQLite could not take ``row``, before it joins a batch:
    one bad message is refused alone, never the transaction (and the messages) around it."""
    for value in row:
        # The common cases first, a test or two each (this runs for every message stored).
        if type(value) is str:
            if value.isascii():
                continue
        elif type(value) is int:
            if -MAX_ID - 1 <= value <= MAX_ID:
                continue
        elif value is None:
            continue
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise StoreError("the message is not valid Unicode text") from None
        elif isinstance(value, int) and not -MAX_ID - 1 <= value <= MAX_ID:
            raise StoreError("the message has a number too large to store")


def _message(row: Sequence[object]) -> Message:
    id_, room, nick, target, text, action, ts, account, notice = row
    return Message(
        nick=str(nick),
        text=str(text),
        room=None if room is None else str(room),
        to=None if target is None else str(target),
        action=bool(action),
        notice=bool(notice),
        id=int(id_),  # type: ignore[call-overload]
        ts=str(ts),
        account=None if account is None else str(account),
    )


_PENDING = StoreError()  # submit_run()'s placeholder, replaced under its lock


@dataclass
class _Batch:
    """Rows committed together; :attr:`future` completes once they are (or failed)."""

    rows: list[tuple[object, ...]] = field(default_factory=list)
    future: Future[None] = field(default_factory=Future)
    barrier: bool = False
    """A :meth:`MessageStore.flush` marker: no rows are ever added to it."""


class MessageStore:
    """A SQLite database of messages, opened (created, checked, migrated) at construction.

    :param path: The database file, or ``":memory:"`` (nothing survives a restart).
    :param synchronous: ``"normal"`` or ``"full"`` (see the module doc).
    :param keep: Messages kept per room or private conversation; 0 keeps all.
    :param keep_days: Days a message is kept; 0 keeps them forever.
    :param max_batch: Rows committed in one transaction at most.
    :param prune_interval: Seconds between retention passes.
    :param busy_timeout: Seconds to wait for another program's lock on the file.
    :param create_parent: Create the file's directory if it is missing.
    :param on_fatal: Called (on the writer thread, with a reason) if the writer fails
        :data:`MAX_WRITER_FAILURES` times in a row and the store gives up; the
        history plugin then stops the server rather than refuse every message.

    Raises :class:`~chatkit.UsageError` with a clear message if the file cannot be
    opened or created, is in use by another store (see the module doc), locked,
    corrupt, not a chatkit database, or from a newer chatkit.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "normal",
        keep: int = 0,
        keep_days: float = 0,
        max_batch: int = MAX_BATCH,
        prune_interval: float = 60.0,
        busy_timeout: float = BUSY_TIMEOUT,
        create_parent: bool = False,
        migrations: Sequence[str] = MIGRATIONS,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise UsageError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        self.path = str(path)
        """Where the database is (``:memory:`` for none)."""
        self.keep = keep
        self.keep_days = keep_days
        self.max_batch = max_batch
        self.prune_interval = prune_interval
        self._memory = self.path == ":memory:"
        self._write_db = _open(self.path, create_parent, busy_timeout)
        # PATH.lock's descriptor and the database file's (both locked), held until close()
        self._lock_fd: tuple[int, int | None] | None = None
        try:
            if not self._memory:
                self._lock_fd = _take_lock(self.path)
            _prepare(self._write_db, self.path, synchronous, migrations, busy_timeout)
            if self._memory:
                # One connection serves both: an in-memory database is private to it.
                self._read_db = self._write_db
            else:
                self._read_db = _open(self.path, False, busy_timeout)
                self._read_db.execute("PRAGMA query_only = ON")
                # Checkpoints (copying the WAL into the database file, with an fsync)
                # would stall the commit that triggers them by milliseconds: the
                # checkpointer thread runs them instead, beside the writer.
                self._write_db.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            self._write_db.close()
            _release_lock(self._lock_fd)
            raise
        # Synchronize use of the write connection: the writer thread, and close().
        # For ":memory:" it is also the read connection's lock (one connection).
        self._write_lock = threading.Lock()
        # Synchronize use of the read connection (sqlite3 connections are not
        # thread-safe); readers never wait for the writer in WAL mode.
        self._read_lock = self._write_lock if self._memory else threading.Lock()
        # Guards _batches, _closing, _prune_due, _touched and queued; the writer waits
        # on _cond, built on it.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._batches: deque[_Batch] = deque()
        self._touched: set[str] = set()  # conversations written since the last prune
        self._prune_all = True  # the first pass looks at every conversation
        self._prune_due = False  # set by flush(): prune before releasing it
        self._current: _Batch | None = None  # the batch the writer has in hand
        self._failures = 0  # unexpected writer failures since the last commit (writer thread)
        self._on_fatal = on_fatal
        self._closing = False
        self._closed = False  # close() ran (guarded by _cond)
        self.commits = 0
        """Transactions committed by the writer (a metric)."""
        self.commit_seconds = 0.0
        """Seconds spent committing them, in total (a metric: with :attr:`commits`, the
        mean commit latency; written by the writer thread only)."""
        self.queued = 0
        """Messages waiting for their commit (a metric; changes under ``_cond``)."""
        self._thread = threading.Thread(target=self._run, name="chatkit-history", daemon=True)
        self._thread.start()
        self._stop_checkpoints = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if not self._memory:
            # The file as opened, taken here: the thread taking it when it starts missed
            # a deletion before that (its stat failed, and it ended in silence).
            self._checkpointer = threading.Thread(
                target=self._checkpoints,
                args=(_open(self.path, False, busy_timeout), os.stat(self.path)),
                name="chatkit-history-checkpoint",
                daemon=True,
            )
            self._checkpointer.start()

    # -- writing -----------------------------------------------------------------

    def add(self, message: Message, accounts: tuple[str | None, str | None] = (None, None)) -> None:
        """Store ``message`` (``id`` set); return once it is committed.

        Raises :class:`StoreError` if the commit failed (disk full, I/O error...)
        or the store is closed.
        """
        self.submit(message, accounts).result()

    def submit(
        self, message: Message, accounts: tuple[str | None, str | None] = (None, None)
    ) -> Future[None]:
        """Queue ``message`` (``id`` set) for the next commit; return at once.

        ``accounts`` are those of its sender (``None``: the message's own
        :attr:`~chatkit.Message.account`) and, for a private message, its recipient
        (see :meth:`private_page`); a replay shows the sender's.

        The future (shared by every message of the same transaction) completes
        with ``None`` once the message is committed, or with :class:`StoreError`
        if the commit failed. Raises :class:`StoreError` if the store is closed.
        """
        (answer,) = self.submit_run(((message, accounts),))
        if isinstance(answer, StoreError):
            raise answer
        return answer

    def submit_run(
        self, messages: Sequence[tuple[Message, tuple[str | None, str | None]]]
    ) -> list[Future[None] | StoreError]:
        """:meth:`submit` for several messages (``(message, accounts)`` each), under one
        acquisition of the lock: a future for each, or the :class:`StoreError` that
        refuses it alone (a message SQLite could not take). Raises
        :class:`StoreError` if the store is closed."""
        rows: list[tuple[object, ...] | None] = []
        answers: list[Future[None] | StoreError] = []
        room, conv = None, ""  # a run's messages are mostly of one room: folded once
        for message, accounts in messages:
            if message.room is None:
                row = _row(message, accounts)
            else:
                if message.room != room:
                    room, conv = message.room, fold(message.room)
                row = _row(message, accounts, conv)
            try:
                _check_row(row)
            except StoreError as exc:
                rows.append(None)
                answers.append(exc)
                continue
            rows.append(row)
            answers.append(_PENDING)
        with self._lock:
            if self._closing:
                raise StoreError("the history database is closed")
            batches, limit = self._batches, self.max_batch
            batch = batches[-1] if batches else None
            for index, kept in enumerate(rows):
                if kept is None:
                    continue
                if batch is None or batch.barrier or len(batch.rows) >= limit:
                    batch = _Batch()
                    batches.append(batch)
                    self._cond.notify()  # the writer waits only when it has no batch
                batch.rows.append(kept)
                answers[index] = batch.future
                self.queued += 1
        return answers

    def flush(self) -> None:
        """Return once everything queued so far is written and a retention pass done."""
        with self._cond:
            if self._closing:
                return
            batch = _Batch(barrier=True)
            self._batches.append(batch)
            self._prune_due = True
            self._cond.notify()
        batch.future.result()

    def detach_account(self, account: str) -> int:
        """Forget that ``account`` (deleted) sent or received the stored messages: its
        private messages stay their other party's, and whoever registers the name next
        does not see them. Writes what is queued first; returns the rows changed.
        Raises :class:`StoreError` if the database refuses."""
        self.flush()
        changed, last = 0, -1
        try:
            while True:
                # A chunk of ids per transaction (the accounts have no index): the
                # writer commits the messages that arrive meanwhile between two.
                with self._write_lock:
                    db = self._write_db
                    row = db.execute(
                        "SELECT id FROM messages WHERE id > ? ORDER BY id LIMIT 1 OFFSET ?",
                        (last, PRUNE_CHUNK - 1),
                    ).fetchone()
                    end = None if row is None else int(row[0])
                    where, args = (
                        ("id > ?", (last,)) if end is None else ("id > ? AND id <= ?", (last, end))
                    )
                    db.execute("BEGIN")
                    try:
                        for column in ("sender_account", "target_account"):
                            update = f"UPDATE messages SET {column} = NULL WHERE {where}"
                            changed += db.execute(
                                f"{update} AND {column} = ?", (*args, account)
                            ).rowcount
                        db.execute("COMMIT")
                    except BaseException:
                        if db.in_transaction:
                            db.execute("ROLLBACK")
                        raise
                if end is None:
                    return changed
                last = end
        except sqlite3.Error as exc:
            raise StoreError(f"cannot detach account {account!r}: {exc}") from exc

    def close(self) -> None:
        """Write what is queued, stop the writer thread, close the database, release
        its lock file. Idempotent."""
        with self._cond:
            if self._closed:
                return
            # (Also after the store gave up, _closing set: what it holds is released.)
            self._closed = self._closing = True
            self._cond.notify()
        self._thread.join()
        if self._checkpointer is not None:
            self._stop_checkpoints.set()
            self._checkpointer.join()
        with self._write_lock:
            if self._read_db is not self._write_db:
                self._read_db.close()
                with contextlib.suppress(sqlite3.Error):  # leave a short WAL behind
                    self._write_db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._write_db.close()
            _release_lock(self._lock_fd)  # last: the database is closed for good
            self._lock_fd = None

    def _checkpoints(self, db: sqlite3.Connection, start: os.stat_result) -> None:
        """Thread entry point: copy the WAL into the database now and then (never blocks
        the writer: a PASSIVE checkpoint does what it can without waiting), and stop the
        store if the file ``start`` was taken of is deleted or replaced."""
        try:
            trouble = ""  # the last error stat-ing the file, logged once until it ends
            while not self._stop_checkpoints.wait(CHECKPOINT_INTERVAL):
                try:
                    same = _same_file(self.path, start)
                except OSError as exc:  # (EACCES, NFS's ESTALE or EIO: it may pass)
                    if str(exc) != trouble:
                        trouble = str(exc)
                        log.warning("cannot check history database %s: %s", self.path, exc)
                    continue
                trouble = ""
                if not same:
                    # Deleted (its directory too) or replaced: commits would go on into
                    # a file nobody will open again, every message lost on restart.
                    reason = (
                        f"the history database {self.path} was deleted or replaced while "
                        "the server ran; messages stored from now on would be lost"
                    )
                    log.error("%s: stopping", reason)
                    self._fail_everything()
                    if self._on_fatal is not None:
                        self._on_fatal(reason)
                    return
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("checkpoint of the history database %s failed: %s", self.path, exc)
        except OSError as exc:
            log.error("history database %s: %s", self.path, exc)
        finally:
            db.close()

    # -- reading -------------------------------------------------------------------

    def last_id(self) -> int:
        """The greatest stored message id, 0 if none."""
        with self._read_lock:
            row = self._read_db.execute("SELECT max(id) FROM messages").fetchone()
        return int(row[0] or 0)

    def room_page(
        self,
        room: str,
        *,
        before: int | None = None,
        upto: int | None = None,
        after: int | None = None,
        limit: int,
        oldest: bool = False,
    ) -> tuple[list[Message], bool]:
        """The last ``limit`` messages of ``room`` with ids below ``before``, up to
        ``upto`` and above ``after``, oldest first, and whether there are earlier ones
        (above ``after``). With ``oldest``, the first ``limit`` of them instead, and
        whether there are later ones (below ``before``)."""
        return self._page(fold(room), before, upto, limit, after, oldest)

    def private_page(
        self,
        a: str,
        b: str,
        *,
        before: int | None = None,
        upto: int | None = None,
        after: int | None = None,
        limit: int,
        oldest: bool = False,
        account: str | None = None,
        other: str | None = None,
    ) -> tuple[list[Message], bool]:
        """Like :meth:`room_page`, for the private messages between nicks ``a`` and ``b``.

        With ``account`` (``a``'s), those it sent to ``b`` or received from ``b`` under
        any nick of its own (its history follows it across renames), and with ``other``
        (``b``'s account) those between the two accounts under any nicks at all.
        """
        if account is None:
            return self._page(private_conversation(a, b), before, upto, limit, after, oldest)
        # Each way, through its index (messages_sent_by_account, messages_to_account),
        # merged by id. The other party: its account, or its nick as one side of the
        # conversation's key (which also finds what the account said as that nick itself,
        # if it ever held it: its own messages all the same).
        party = f" {fold(b)} "
        pages = [
            self._page(None, before, upto, limit, after, oldest, account=account, party=party,
                       other=other, sent=sent)
            for sent in (True, False)
        ]  # fmt: skip
        found = {message.id or 0: message for page, _ in pages for message in page}
        ids = sorted(found, reverse=not oldest)
        more = any(more for _, more in pages) or len(ids) > limit
        return [found[id_] for id_ in sorted(ids[:limit])], more

    def party_account(self, account: str, nick: str) -> str | None:
        """The account on the other side of ``account``'s latest private message with
        ``nick`` (sent or received under any nick of its own), if it was identified then:
        whose conversation ``nick`` names while nobody identified holds it."""
        folded = fold(nick)
        found: list[tuple[int, str]] = []
        try:
            with self._read_lock:
                for mine, theirs, their_nick in (
                    ("sender_account", "target_account", "target"),
                    ("target_account", "sender_account", "nick"),
                ):
                    # (instr only narrows: the conversation's key may name nick as this
                    # account's own earlier nick; the other side's column must be it,
                    # folded as chatkit folds: chatkit_fold, _open.)
                    row = self._read_db.execute(
                        f"SELECT id, {theirs} FROM messages"
                        f" WHERE room IS NULL AND {mine} = ? AND {theirs} IS NOT NULL"
                        " AND instr(' ' || conv || ' ', ?) > 0"
                        f" AND chatkit_fold({their_nick}) = ? ORDER BY id DESC LIMIT 1",
                        (account, f" {folded} ", folded),
                    ).fetchone()
                    if row is not None:
                        found.append((int(row[0]), str(row[1])))
        except sqlite3.Error as exc:
            log.error("cannot read the history database %s: %s", self.path, exc)
            raise StoreError(NOT_READ) from exc
        return max(found)[1] if found else None

    def _page(
        self,
        conv: str | None,
        before: int | None,
        upto: int | None,
        limit: int,
        after: int | None = None,
        oldest: bool = False,
        *,
        account: str | None = None,
        party: str = "",
        other: str | None = None,
        sent: bool = True,
    ) -> tuple[list[Message], bool]:
        """A page of ``conv``; or, with ``account``, of the private messages it ``sent``
        to (else received from) the account ``other`` or the nick in ``party``
        (`` nick ``, folded: one side of their ``conv``)."""
        high = min(
            before - 1 if before is not None else MAX_ID, upto if upto is not None else MAX_ID
        )
        low = after if after is not None else -1
        order = "ASC" if oldest else "DESC"
        try:
            with self._read_lock:
                if account is not None:
                    mine, theirs = (
                        ("sender_account", "target_account")
                        if sent
                        else ("target_account", "sender_account")
                    )
                    where = (
                        f"room IS NULL AND {mine} = ? AND"
                        f" ({theirs} = ? OR instr(' ' || conv || ' ', ?) > 0)"
                    )
                    args: tuple[object, ...] = (account, other, party)
                else:
                    where, args = "conv = ?", (conv,)
                rows = self._read_db.execute(
                    f"SELECT {_COLUMNS} FROM messages WHERE {where} AND id <= ? AND id > ?"
                    f" ORDER BY id {order} LIMIT ?",
                    (*args, high, low, limit + 1),
                ).fetchall()
        except sqlite3.Error as exc:
            log.error("cannot read the history database %s: %s", self.path, exc)
            raise StoreError(NOT_READ) from exc
        more = len(rows) > limit
        rows = rows[:limit]
        if not oldest:
            rows.reverse()
        return [_message(row) for row in rows], more

    def targets(
        self,
        rooms: Sequence[str],
        nick: str | None,
        *,
        after: int,
        before: int,
        limit: int,
        oldest: bool = False,
        account: str | None = None,
    ) -> list[tuple[str, int, str]]:
        """The conversations with messages of ids between ``after`` and ``before``
        (excluded): those of ``rooms``, and the private ones of ``nick`` (``None``:
        none; with ``account``, only messages it sent or received). Each is ``(room or
        other nick, id, ts)`` of its latest message in the range, ordered by that id:
        the first ``limit`` of them with ``oldest``, else the last. (IRC's
        ``CHATHISTORY TARGETS``.)"""
        found: list[tuple[str, int, str]] = []
        try:
            with self._read_lock:
                convs = sorted({fold(room) for room in rooms})
                rows = []
                for conv in convs:
                    # One seek down the (conv, id) index each: a GROUP BY over them all
                    # read every row in the range (0.6 s for 100 rooms of 10,000, under
                    # the read lock every join's replay waits for).
                    row = self._read_db.execute(
                        "SELECT room, id, ts FROM messages WHERE conv = ? AND id > ?"
                        " AND id < ? ORDER BY id DESC LIMIT 1",
                        (conv, after, before),
                    ).fetchone()
                    if row is not None:
                        rows.append(row)
                if rows:
                    # Each room as it is spelled now (a room emptied and made again
                    # in another case is the same room: #CaseRoom's are #caseroom's).
                    named = {fold(room): room for room in rooms}
                    found += [(named[fold(room)], int(id_), str(ts)) for room, id_, ts in rows]
                if nick is not None:
                    me = fold(nick)
                    columns = "conv, nick, target, sender_account, target_account, id, ts"
                    if account is None:
                        mine = (
                            f"SELECT {columns} FROM messages WHERE room IS NULL"
                            " AND instr(' ' || conv || ' ', ?) > 0 AND id > ? AND id < ?"
                        )
                        args: tuple[object, ...] = (f" {me} ", after, before)
                    else:
                        # Its conversations under any nick: each way through its own
                        # index (an OR of the two was planned as a scan of every row).
                        mine = " UNION ALL ".join(
                            f"SELECT {columns} FROM messages WHERE room IS NULL"
                            f" AND {side} = ? AND id > ? AND id < ?"
                            for side in ("sender_account", "target_account")
                        )
                        args = (account, after, before) * 2
                    rows = self._read_db.execute(
                        "SELECT nick, target, sender_account, target_account, max(id), ts"
                        f" FROM ({mine}) GROUP BY conv",
                        args,
                    ).fetchall()
                    # By the other party: its account, else its nick (the conversations
                    # under earlier nicks of either are one), named as in the latest.
                    latest: dict[str, tuple[str, int, str]] = {}
                    for sender, target, sent_by, sent_to, id_, ts in rows:
                        if account is not None and sent_by == account:
                            other, key = str(target), sent_to
                        elif account is not None:
                            other, key = str(sender), sent_by
                        else:
                            other = str(target if fold(str(sender)) == me else sender)
                            key = None
                        key = f"account {key}" if key else f"nick {fold(other)}"
                        if key not in latest or latest[key][1] < int(id_):
                            latest[key] = (other, int(id_), str(ts))
                    found += latest.values()
        except sqlite3.Error as exc:
            log.error("cannot read the history database %s: %s", self.path, exc)
            raise StoreError(NOT_READ) from exc
        found.sort(key=lambda item: item[1])
        return found[:limit] if oldest else found[-limit:]

    # -- the writer thread -------------------------------------------------------

    def _run(self) -> None:
        """Thread entry point: nothing above catches errors."""
        while True:
            try:
                self._write_loop()
                return
            except Exception:
                # This branch should never run. It's a safety net in case of bugs: the
                # batch in hand fails (its senders are told `not_stored`) and the loop
                # starts again, so one bad batch never stops every later message.
                self._failures += 1
                failures = self._failures
                log.error("the history writer failed (%d in a row)", failures, exc_info=True)
                with self._cond:
                    batch, self._current = self._current, None
                    if batch is not None and batch.rows:
                        self.queued -= len(batch.rows)
                if batch is not None and not batch.future.done():
                    batch.future.set_exception(StoreError(NOT_STORED))
                if failures < MAX_WRITER_FAILURES:
                    continue
            except BaseException:
                log.error("the history writer thread was stopped", exc_info=True)
            # Failing again and again: stop for good, loudly, rather than limp on.
            self._fail_everything()
            if self._on_fatal is not None:
                self._on_fatal("the history writer keeps failing; see the log above")
            return

    def _fail_everything(self) -> None:
        """Close the store: fail every waiting message and refuse new ones."""
        with self._cond:
            self._closing = True
            batches, self._batches = [self._current, *self._batches], deque()
            self._current = None
        for batch in batches:
            if batch is not None and not batch.future.done():
                batch.future.set_exception(StoreError(NOT_STORED))

    def _write_loop(self) -> None:
        """Commit batches in order; prune between them, every ``prune_interval`` seconds
        (and when a flush() asks)."""
        next_prune = time.monotonic()
        while True:
            with self._cond:
                while not self._batches and not self._closing:
                    timeout = next_prune - time.monotonic()
                    if timeout <= 0 or self._prune_due:
                        break
                    self._cond.wait(timeout)
                batch = self._batches.popleft() if self._batches else None
                self._current = batch  # for the safety net in _run()
                if batch is None and self._closing:
                    return
                prune = self._prune_due or time.monotonic() >= next_prune
                if batch is None or not batch.rows:
                    self._prune_due = False  # pruned below (a batch of rows: later, idle)
            if batch is not None and batch.rows:
                self._commit(batch)
                if time.monotonic() >= next_prune:
                    # Due while messages keep coming: a pass now, or a busy server's
                    # keep and keep_days would wait for a quiet moment that may not
                    # come (the pass commits what arrives meanwhile, between chunks).
                    self._prune()
                    next_prune = time.monotonic() + self.prune_interval
                continue
            if prune:
                self._prune()
                next_prune = time.monotonic() + self.prune_interval
            if batch is not None:
                batch.future.set_result(None)  # a flush() barrier: released after the prune

    def _commit(self, batch: _Batch) -> None:
        """Commit ``batch`` in one transaction, then complete its future."""
        failure: StoreError | None = None
        started = time.perf_counter()
        try:
            with self._write_lock:
                db = self._write_db
                db.execute("BEGIN")
                try:
                    db.executemany(
                        "INSERT INTO messages (id, conv, room, nick, target, text, action, ts,"
                        " sender_account, target_account, notice)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        batch.rows,
                    )
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            self.commit_seconds += time.perf_counter() - started
            self.commits += 1
            self._failures = 0
        except Exception as exc:  # sqlite3.Error, or a row SQLite refused to bind
            log.error(
                "cannot write %d message(s) to the history database %s: %s",
                len(batch.rows),
                self.path,
                exc,
            )
            failure = StoreError(NOT_STORED)
            failure.__cause__ = exc
        with self._cond:
            self.queued -= len(batch.rows)
            if failure is None and self.keep > 0:  # (only a count-based prune reads it)
                self._touched.update({str(row[1]) for row in batch.rows})
        if failure is None:
            batch.future.set_result(None)
        else:
            batch.future.set_exception(failure)

    def _prune(self) -> None:
        """One retention pass, in small transactions; errors are logged, never raised."""
        try:
            if self.keep_days > 0:
                cutoff = int((time.time() - self.keep_days * 86400) * 1000) * 1000
                self._delete_chunks("id < ?", (cutoff,))
            if self.keep > 0:
                with self._cond:
                    touched, self._touched = self._touched, set()
                if self._prune_all:
                    self._prune_all = False
                    with self._write_lock:
                        rows = self._write_db.execute(
                            "SELECT DISTINCT conv FROM messages"
                        ).fetchall()
                    touched = {str(row[0]) for row in rows}
                for conv in sorted(touched):
                    # (A first pass may look at every conversation, 300,000 of them:
                    # messages that arrive meanwhile are committed between two.)
                    self._commit_waiting()
                    with self._write_lock:
                        row = self._write_db.execute(
                            "SELECT id FROM messages WHERE conv = ? ORDER BY id DESC"
                            " LIMIT 1 OFFSET ?",
                            (conv, self.keep),
                        ).fetchone()
                    if row is not None:
                        self._delete_chunks("conv = ? AND id <= ?", (conv, row[0]))
        except sqlite3.Error as exc:
            log.error("retention in the history database %s failed: %s", self.path, exc)

    def _commit_waiting(self) -> int:
        """Commit the batches of messages waiting, during a retention pass (the store's
        thread), and return how many rows they held; a flush() barrier waits for the
        pass. Those waiting as it starts only: batches that keep coming faster than they
        commit would hold the pass forever."""
        with self._cond:
            count = len(self._batches)
        rows = 0
        for _ in range(count):
            with self._cond:
                waiting = bool(self._batches) and bool(self._batches[0].rows)
                pending = self._batches.popleft() if waiting else None
            if pending is None:
                break
            rows += len(pending.rows)
            self._commit(pending)
        return rows

    def _delete_chunks(self, where: str, args: tuple[object, ...]) -> None:
        """Delete the rows matching ``where`` a chunk per transaction, committing the
        batches that arrive meanwhile first, so retention never holds up chat. A chunk
        is PRUNE_CHUNK rows more than were committed just before it, so that a pass
        gains on messages that keep coming (at 500 a chunk it fell ever further behind
        a busy room's thousands)."""
        while True:
            chunk = PRUNE_CHUNK + self._commit_waiting()
            with self._write_lock:
                cursor = self._write_db.execute(
                    "DELETE FROM messages WHERE id IN"
                    f" (SELECT id FROM messages WHERE {where} ORDER BY id LIMIT ?)",
                    (*args, chunk),
                )
                deleted = cursor.rowcount
            if deleted:
                log.debug("retention: deleted %d message(s) from %s", deleted, self.path)
            if deleted < chunk:
                return


def _open(path: str, create_parent: bool, busy_timeout: float) -> sqlite3.Connection:
    """Connect to ``path``, turning every way that can fail into a clear :class:`UsageError`."""
    if path != ":memory:":
        file = Path(path)
        try:
            file.stat()
        except FileNotFoundError:
            pass  # (made below, or the directory is missing: said below)
        except OSError as exc:  # a directory on the way the server's user may not enter
            raise UsageError(
                f"cannot open history database {path}: {exc.strerror or exc}; let the "
                "server's user reach it"
            ) from None
        if file.is_dir():
            raise UsageError(f"history database {path} is a directory; give a file name")
        if not file.parent.is_dir():
            if create_parent:
                try:
                    file.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise UsageError(
                        f"cannot create the directory of history database {path}: "
                        f"{exc.strerror or exc}"
                    ) from None
            else:
                raise UsageError(
                    f"cannot open history database {path}: directory {file.parent} does not exist"
                )
    try:
        create_private(path)
        # Autocommit mode (isolation_level=None): transactions are explicit.
        db = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        db.create_function("chatkit_fold", 1, fold, deterministic=True)  # (party_account)
        return db
    except sqlite3.Error as exc:
        raise UsageError(f"cannot open history database {path}: {exc}") from None


def _same_file(path: str, start: os.stat_result) -> bool:
    """Whether ``path`` is still the file ``start`` was taken of (not deleted, nor
    replaced by another: a directory on its path replaced by a file is gone too);
    ``OSError`` if that cannot be told."""
    try:
        now = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return (now.st_dev, now.st_ino) == (start.st_dev, start.st_ino)


def _take_lock(path: str) -> tuple[int, int | None] | None:
    """Lock ``PATH.lock`` (created if missing) and write our pid in it, and lock the
    database file itself; return their descriptors, to hold until :func:`_release_lock`.

    Raises :class:`UsageError` naming the database and the holder's pid if another
    store holds it. ``flock`` locks belong to the open file, so a second store in
    this same process is refused too. No locking on Windows (no ``flock``).
    """
    if sys.platform == "win32":
        return None
    # Beside the file itself: a symlink or another path to it takes the same lock.
    lock = f"{os.path.realpath(path)}.lock"
    try:
        # O_CLOEXEC: a program the server starts must not inherit (and hold) the lock.
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise UsageError(
            f"cannot create {lock}, the lock file of history database {path}: "
            f"{exc.strerror or exc}; check the directory's permissions"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_pid(fd)
        os.close(fd)
        if holder == os.getpid():
            who = f"another server in this process (pid {holder})"
        elif holder is not None:
            who = f"another chatkit server (pid {holder})"
        else:
            who = "another chatkit server"
        raise UsageError(
            f"history database {path} is in use by {who}; stop it, or give this "
            "server another file with --db (or [plugins.history] db)"
        ) from None
    # The database file itself too: a hard link to it is another path, and another lock
    # file, but the same file (two servers' WALs, one per path, would each overwrite
    # what the other committed). (flock: SQLite's own locks are fcntl's, apart. This
    # descriptor is closed only after SQLite's: closing it drops the process's fcntl
    # locks on the file.)
    # A descriptor of it is opened only if no store of this process holds the file (by
    # its inode): closing one would drop that store's SQLite locks.
    try:
        st = os.stat(path)
    except OSError:
        st = None  # (not there: SQLite makes it, and the lock file holds it)
    db_fd = None
    if st is not None:
        inode = (st.st_dev, st.st_ino)
        owner = f"another server in this process (pid {os.getpid()})"
        with _HELD_LOCK:
            if inode not in _HELD:
                try:
                    db_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    os.close(fd)
                    raise UsageError(
                        f"cannot open history database {path}: {exc.strerror or exc}"
                    ) from None
                try:
                    fcntl.flock(db_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(db_fd)  # (no SQLite lock of this process on it: see above)
                    db_fd = None
                    owner = "another chatkit server"
                else:
                    _HELD[inode] = db_fd
        if db_fd is None:
            os.close(fd)
            raise UsageError(
                f"history database {path} is in use by {owner} (under another name for "
                "the same file: a hard link); stop it, or give this server another file "
                "with --db (or [plugins.history] db)"
            )
    # Truncate only once locked: the file may hold the pid of a holder until then.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd, db_fd


def _read_pid(fd: int) -> int | None:
    """The pid the lock's holder wrote, or ``None`` (not written yet, or garbage)."""
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


# The database files this process's stores hold, by inode (device, inode number), to the
# descriptor holding each one's flock: guarded by _HELD_LOCK (stores open on any thread).
_HELD: dict[tuple[int, int], int] = {}
_HELD_LOCK = threading.Lock()


def _release_lock(fds: tuple[int, int | None] | None) -> None:
    """Clear our pid from the lock file and unlock both (by closing them); ``None`` is
    a no-op.

    The file stays: deleting it could let two stores lock two different files.
    """
    if fds is None:
        return
    fd, db_fd = fds
    if db_fd is not None:
        with _HELD_LOCK:
            for inode, held in list(_HELD.items()):
                if held == db_fd:
                    del _HELD[inode]
            os.close(db_fd)
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # while still holding it: never a newer holder's pid
    os.close(fd)


def _prepare(
    db: sqlite3.Connection,
    path: str,
    synchronous: str,
    migrations: Sequence[str],
    busy_timeout: float,
) -> None:
    """Check what the file is, switch to WAL, migrate the schema, run a quick check."""
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if app_id != APPLICATION_ID and (app_id or tables):
            raise UsageError(
                f"{path} is not a chatkit history database (it holds other data); "
                "give another file with --db"
            )
        if version > len(migrations):
            raise UsageError(
                f"history database {path} was written by a newer chatkit (schema version "
                f"{version}; this chatkit knows up to {len(migrations)}); upgrade chatkit "
                "or give another file with --db"
            )
        if path != ":memory:":
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise UsageError(f"history database {path} cannot use WAL mode (got {mode})")
        db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        # Take the write lock once: another program holding it is found now, not
        # at the first message.
        db.execute("BEGIN IMMEDIATE")
        db.execute("COMMIT")
        why = check_writable(db)
        if why is not None:  # (opened read-only: every message would be not_stored)
            raise UsageError(
                f"history database {path} cannot be written ({why}): let the server's user "
                "write it and its directory, or give another file with --db"
            )
        if version < len(migrations):
            migrate(db, migrations)
            if version:
                log.info(
                    "history database %s migrated from schema version %d to %d",
                    path,
                    version,
                    len(migrations),
                )
        problems = [str(row[0]) for row in db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise UsageError(
                f"history database {path} is corrupt ({'; '.join(problems)}); "
                "move it away (or restore a backup) and start again"
            )
    except sqlite3.DatabaseError as exc:
        raise UsageError(_explain(path, exc, busy_timeout)) from None


def migrate(db: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the schema up to ``len(migrations)`` in one transaction; return the old version."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        for step in migrations[version:]:
            for statement in _statements(step):
                db.execute(statement)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {len(migrations)}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return version


def _statements(script: str) -> Iterable[str]:
    # executescript() would commit the transaction; run one statement at a time.
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""


def _explain(path: str, exc: sqlite3.DatabaseError, busy_timeout: float) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return (
            f"history database {path} is locked by another program "
            f"(waited {busy_timeout:g} s); stop it, or give another file with --db"
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (
            f"history database {path} is corrupt or not a SQLite file ({text}); "
            "move it away (or restore a backup) and start again"
        )
    if "readonly" in text or "unable to open" in text:
        return f"cannot write history database {path} ({text}); check its permissions"
    if "full" in text:
        return f"cannot write history database {path}: the disk is full"
    return f"history database {path} cannot be used: {text}"
