"""The SQLite message store on its own: group commit, schema migration, closing."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chatkit import Message, UsageError
from chatkit.builtins.history.store import (
    APPLICATION_ID,
    MAX_WRITER_FAILURES,
    MIGRATIONS,
    NOT_STORED,
    SCHEMA_VERSION,
    MessageStore,
    StoreError,
)
from chatkit.testing import wait_until


def message(i: int, room: str = "#r", text: str | None = None) -> Message:
    return Message("alice", text or f"m{i}", room=room, id=i, ts=f"t{i}")


def test_messages_queued_during_a_commit_share_the_next_one(tmp_path: Path) -> None:
    """Group commit: 50 messages that arrive while the writer is busy cost at most two
    transactions (the one it was starting, and one for all the others); all are kept."""
    store = MessageStore(tmp_path / "h.db")
    threads = [threading.Thread(target=store.add, args=(message(i),)) for i in range(1, 51)]
    with store._write_lock:  # the writer cannot commit until the test lets go
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while store.queued < 50:  # every thread has queued its message
            assert time.monotonic() < deadline, f"only {store.queued} queued"
            time.sleep(0.001)
    for t in threads:
        t.join()
    assert store.commits <= 2
    assert store.queued == 0
    page, more = store.room_page("#r", limit=100)
    assert [m.id for m in page] == list(range(1, 51)) and not more
    store.close()


def test_pages_are_oldest_first_and_say_whether_there_is_more(tmp_path: Path) -> None:
    """room_page returns the last `limit` rows below `before` (or up to `upto`), in order."""
    store = MessageStore(tmp_path / "h.db")
    for i in range(1, 11):
        store.add(message(i))
    store.add(message(11, room="#other"))
    assert [m.id for m in store.room_page("#R", limit=3)[0]] == [8, 9, 10]
    assert store.room_page("#r", limit=3)[1] is True
    assert [m.id for m in store.room_page("#r", before=4, limit=5)[0]] == [1, 2, 3]
    assert store.room_page("#r", before=4, limit=5)[1] is False
    assert [m.id for m in store.room_page("#r", upto=5, limit=2)[0]] == [4, 5]
    assert store.last_id() == 11
    store.close()


def test_pages_from_the_oldest_end_of_a_range(tmp_path: Path) -> None:
    """With `oldest`, the first `limit` rows above `after` (and below `before`), still in
    order, and whether later ones are left (CHATHISTORY AFTER and BETWEEN)."""
    store = MessageStore(tmp_path / "h.db")
    for i in range(1, 11):
        store.add(message(i))
    assert [m.id for m in store.room_page("#r", after=3, limit=2, oldest=True)[0]] == [4, 5]
    assert store.room_page("#r", after=3, limit=2, oldest=True)[1] is True
    page, more = store.room_page("#r", after=3, before=6, limit=5, oldest=True)
    assert [m.id for m in page] == [4, 5] and not more
    assert [m.id for m in store.room_page("#r", after=7, limit=5)[0]] == [8, 9, 10]
    store.close()


def test_a_new_file_gets_the_current_schema_and_our_application_id(tmp_path: Path) -> None:
    """PRAGMA user_version is the schema version; application_id marks the file as ours."""
    MessageStore(tmp_path / "h.db").close()
    with sqlite3.connect(tmp_path / "h.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_older_schema_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    """A file at version 1 opened by a chatkit that knows version 2 is migrated in place."""
    path = tmp_path / "h.db"
    store = MessageStore(path)
    store.add(message(1, text="kept"))
    store.close()
    step = "ALTER TABLE messages ADD COLUMN edited INTEGER NOT NULL DEFAULT 0;"
    newer = MessageStore(path, migrations=[*MIGRATIONS, step])
    assert [m.text for m in newer.room_page("#r", limit=5)[0]] == ["kept"]
    newer.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert db.execute("SELECT edited FROM messages").fetchall() == [(0,)]
    # And the older chatkit now refuses the file rather than misreading it.
    with pytest.raises(UsageError, match="written by a newer chatkit"):
        MessageStore(path)


def test_a_failed_migration_changes_nothing(tmp_path: Path) -> None:
    """A migration step that fails rolls back: the file keeps its version and rows."""
    path = tmp_path / "h.db"
    store = MessageStore(path)
    store.add(message(1))
    store.close()
    with pytest.raises(UsageError, match="cannot be used"):
        MessageStore(path, migrations=[*MIGRATIONS, "ALTER TABLE nosuch ADD COLUMN x;"])
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 1


def test_close_writes_what_is_queued_and_later_adds_fail(tmp_path: Path) -> None:
    """close() is idempotent; add() after it raises StoreError instead of losing silently."""
    store = MessageStore(tmp_path / "h.db")
    store.add(message(1))
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.add(message(2))
    reopened = MessageStore(tmp_path / "h.db")
    assert reopened.last_id() == 1
    reopened.close()


def test_a_duplicate_id_fails_its_batch_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A row SQLite refuses fails its own commit with a StoreError that says so without
    SQL (the log and the cause keep SQLite's words); the next one works."""
    store = MessageStore(tmp_path / "h.db")
    store.add(message(1))
    with pytest.raises(StoreError) as info:
        store.add(message(1))
    assert str(info.value) == NOT_STORED
    assert "UNIQUE constraint failed" in str(info.value.__cause__)
    assert "UNIQUE constraint failed" in caplog.text
    store.add(message(2))
    assert [m.id for m in store.room_page("#r", limit=5)[0]] == [1, 2]
    store.close()


def test_a_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    """One store per file: a second one gets a UsageError naming the file and the pid
    that holds it (written in PATH.lock); once the first closes, the file is free."""
    path = tmp_path / "h.db"
    first = MessageStore(path)
    lock = tmp_path / "h.db.lock"
    assert lock.read_text() == f"{os.getpid()}\n"
    with pytest.raises(UsageError) as info:
        MessageStore(path)
    assert str(info.value) == (
        f"history database {path} is in use by another server in this process "
        f"(pid {os.getpid()}); stop it, or give this server another file with --db "
        "(or [plugins.history] db)"
    )
    first.add(message(1))  # the refused one changed nothing
    first.close()
    assert lock.read_text() == ""
    second = MessageStore(path)
    assert second.last_id() == 1
    # Another path to the same file (a symlink) takes the same lock.
    (tmp_path / "link.db").symlink_to(path)
    with pytest.raises(UsageError, match="in use by another server"):
        MessageStore(tmp_path / "link.db")
    # So does a hard link: another name, another lock file, but the same file; and the
    # refusal leaves the first store's own SQLite locks (fcntl's) where they were.
    os.link(path, tmp_path / "hard.db")
    with pytest.raises(UsageError, match=r"another name for the same file: a hard link"):
        MessageStore(tmp_path / "hard.db")
    second.add(message(2))  # the refused one changed nothing
    locks = Path("/proc/locks").read_text()
    inode = f":{os.stat(path).st_ino} "
    assert any("POSIX" in line and inode in line for line in locks.splitlines()), locks
    second.close()
    third = MessageStore(tmp_path / "hard.db")  # free once the first is closed
    assert third.last_id() == 2
    third.close()


def test_flush_waits_for_a_retention_pass_after_many_rows(tmp_path: Path) -> None:
    """flush() returns once what was queued is written and a retention pass ran, also
    when it comes behind many batches (their commits used to swallow the pass)."""
    store = MessageStore(tmp_path / "h.db", keep=2, prune_interval=3600)
    try:
        store.flush()
        for trial in range(3):
            for n in range(2000):
                store.submit(message(trial * 10000 + n + 1))
            store.flush()
            rows = store._read_db.execute("SELECT count(*) FROM messages").fetchone()[0]
            assert rows == 2, (trial, rows)
    finally:
        store.close()


def test_retention_runs_while_messages_keep_coming(tmp_path: Path) -> None:
    """A retention pass that is due runs between commits: a server never idle keeps to
    `keep` too (the pass waited for an empty queue, and the rows grew without end)."""
    store = MessageStore(tmp_path / "h.db", keep=5, prune_interval=0.05)
    stop = threading.Event()
    sent = 0

    def flood() -> None:
        # Always a batch waiting when the writer looks, as under senders that do not
        # let up; bounded, as readers waiting for their commits bound it in a server.
        nonlocal sent
        while not stop.is_set():
            if store.queued < 2000:
                store.submit(message(sent + 1))
                sent += 1
            else:
                time.sleep(0.0005)  # (not a spin: the writer and the test need the GIL)

    def rows() -> int:
        return int(store._read_db.execute("SELECT count(*) FROM messages").fetchone()[0])

    thread = threading.Thread(target=flood)
    thread.start()
    try:
        # Well past a pass's due time, with most of what was written pruned meanwhile.
        wait_until(lambda: sent > 20_000 and rows() < (sent - store.queued) // 3, timeout=30)
    finally:
        stop.set()
        thread.join()
        store.close()


def test_a_store_held_by_another_process_names_its_pid(tmp_path: Path) -> None:
    """The lock is held across processes: the error names the other process's pid."""
    path = tmp_path / "h.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from chatkit.builtins.history.store import MessageStore;"
            f"s = MessageStore({str(path)!r}); print('open', flush=True); sys.stdin.read();"
            "s.close()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(
            UsageError, match=rf"in use by another chatkit server \(pid {holder.pid}\)"
        ):
            MessageStore(path)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=10) == 0
    MessageStore(path).close()  # released when the other process closed it


def test_memory_store_works_without_a_file(tmp_path: Path) -> None:
    """':memory:' stores and reads through one connection."""
    store = MessageStore(":memory:")
    store.add(message(1))
    assert store.last_id() == 1
    store.close()
    assert not list(tmp_path.iterdir())


def test_a_message_that_is_not_unicode_is_refused_alone(tmp_path: Path) -> None:
    """A lone surrogate (or an id SQLite cannot hold) fails that message at submit();
    the writer goes on storing the next ones."""
    store = MessageStore(tmp_path / "h.db")
    with pytest.raises(StoreError, match="not valid Unicode"):
        store.submit(message(1, text="x\ud800y"))
    with pytest.raises(StoreError, match="not valid Unicode"):
        store.submit(Message("al\udfffice", "hi", room="#r", id=3, ts="t"))
    with pytest.raises(StoreError, match="number"):
        store.submit(Message("alice", "hi", room="#r", id=2**64, ts="t"))
    with pytest.raises(StoreError, match="number"):
        store.submit(Message("alice", "hi", room="#r", id=-(2**64), ts="t"))
    store.add(message(2))
    store.add(message(4, text="h\u00e9llo \U0001f600"))  # not ASCII, but Unicode: stored
    assert [m.text for m in store.room_page("#r", limit=10)[0]] == ["m2", "h\u00e9llo \U0001f600"]
    store.close()


def test_a_run_queues_under_one_lock_and_refuses_a_bad_message_alone(tmp_path: Path) -> None:
    """submit_run(): a future for each message (shared by those committed together,
    split at max_batch), the StoreError of one SQLite could not take, every good row
    stored; a closed store refuses the whole run."""
    store = MessageStore(tmp_path / "h.db", max_batch=3)
    run = [message(1), message(2, text="x\ud800y"), message(3), message(4), message(5)]
    with store._write_lock:  # nothing is committed until every row is queued
        answers = store.submit_run([(m, (None, None)) for m in run])
    first, bad, *rest = answers
    assert isinstance(bad, StoreError) and "not valid Unicode" in str(bad)
    assert rest[0] is first and rest[1] is first  # m1, m3, m4: one transaction
    assert rest[2] is not first  # m5: the next one (max_batch=3)
    for answer in (first, rest[2]):
        assert not isinstance(answer, StoreError)
        answer.result(timeout=5)
    assert [m.id for m in store.room_page("#r", limit=10)[0]] == [1, 3, 4, 5]
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.submit_run([(message(6), (None, None))])


class _BrokenOnce(MessageStore):
    """A store whose commit raises an unexpected (non-SQLite) error a number of times."""

    breaks = 1

    def _commit(self, batch: object) -> None:
        if type(self).breaks > 0:
            type(self).breaks -= 1
            raise RuntimeError("a bug in the writer")
        super()._commit(batch)  # type: ignore[arg-type]


def test_the_writer_survives_a_bug_and_fails_only_the_batch_in_hand(tmp_path: Path) -> None:
    """An unexpected error fails the batch being written; later messages are stored."""
    _BrokenOnce.breaks = 1
    store = _BrokenOnce(tmp_path / "h.db")
    with pytest.raises(StoreError, match=NOT_STORED):
        store.add(message(1))
    store.add(message(2))
    assert [m.id for m in store.room_page("#r", limit=10)[0]] == [2]
    assert store.queued == 0
    store.close()


def test_a_writer_that_keeps_failing_gives_up_loudly(tmp_path: Path) -> None:
    """After MAX_WRITER_FAILURES failures in a row the store closes and calls on_fatal."""
    reasons: list[str] = []
    _BrokenOnce.breaks = MAX_WRITER_FAILURES
    store = _BrokenOnce(tmp_path / "h.db", on_fatal=reasons.append)
    for i in range(MAX_WRITER_FAILURES):
        with pytest.raises(StoreError):
            store.add(message(i + 1))
    store._thread.join(5)
    assert not store._thread.is_alive()
    assert reasons and "keeps failing" in reasons[0]
    with pytest.raises(StoreError, match="closed"):
        store.submit(message(10))
    store.close()
    MessageStore(tmp_path / "h.db").close()  # close() released its file and lock


def test_a_database_whose_directory_became_a_file_stops_the_store(tmp_path: Path) -> None:
    """Its directory moved away and a file put in its place (stat says ENOTDIR, not
    ENOENT): gone too, the store stops, rather than its checkpoints ending in silence
    while the WAL grows."""
    reasons: list[str] = []
    folder = tmp_path / "dd"
    store = MessageStore(folder / "h.db", create_parent=True, on_fatal=reasons.append)
    try:
        store.add(message(1))
        folder.rename(tmp_path / "dd.old")
        folder.touch()
        wait_until(lambda: bool(reasons), 10, "on_fatal")
        assert "deleted or replaced" in reasons[0]
    finally:
        store.close()


def test_a_database_deleted_while_running_stops_the_store(tmp_path: Path) -> None:
    """The file deleted (or its directory) while the server runs: commits would go into
    a file nobody opens again. Within a checkpoint interval the store fails everything
    and calls on_fatal (the server stops) instead of losing messages in silence."""
    reasons: list[str] = []
    folder = tmp_path / "data"
    store = MessageStore(folder / "h.db", create_parent=True, on_fatal=reasons.append)
    try:
        store.add(message(1))
        for name in os.listdir(folder):
            os.unlink(folder / name)
        folder.rmdir()
        wait_until(lambda: bool(reasons), 10, "on_fatal")
        assert "deleted or replaced" in reasons[0]
        with pytest.raises(StoreError):
            store.add(message(2))
    finally:
        store.close()
