"""The history plugin through real servers, real SQLite files and real `chatkit` processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CHATKIT, ServeProcess

from chatkit import Config, Message, Server, UsageError
from chatkit.builtins.history import History, serve_db
from chatkit.builtins.history.store import MessageStore
from chatkit.config import config_from_dict
from chatkit.testing import ChatClient, TextClient, wait_until

Connect = Callable[..., ChatClient]
Factory = Callable[..., Server]


def history_config(**settings: Any) -> Config:
    return config_from_dict({"plugins": {"history": settings}})


def plugin(server: Server) -> History:
    found = server.pluginmanager.get_plugin("history")
    assert isinstance(found, History)
    return found


def messages(frames: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    return [
        (f["type"], f["text"], bool(f.get("history")))
        for f in frames
        if f["type"] in ("message", "private")
    ]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite3"


def test_joining_replays_the_room_before_live_messages(
    chat_server_factory: Factory, chat_client: Connect, db: Path
) -> None:
    """A joiner gets its join, the last messages (ids, times, marked history), then live ones."""
    config = history_config(db=str(db), replay=3, private=True)
    server = chat_server_factory(config=config, disable=["flood"])
    alice, carol = chat_client(server, "alice"), chat_client(server, "carol")
    sent = []
    for i in range(5):
        alice.say(f"m{i}")
        sent.append(alice.expect("message"))
    alice.say("/msg carol psst")  # private: never in a room's replay
    alice.expect("private")
    carol.expect("private")
    bob = chat_client(server, "bob")
    alice.say("live")
    bob.expect("message", text="live")
    frames = bob.received[1:]  # after the welcome
    assert len(frames) == 6
    assert frames[0]["type"] == "join" and frames[0]["nick"] == "bob"
    replayed = frames[1:4]
    assert [(f["id"], f["ts"], f["text"]) for f in replayed] == [
        (s["id"], s["ts"], s["text"]) for s in sent[2:]
    ]
    assert all(f["history"] is True and f["room"] == "#general" for f in replayed)
    # first: the id the page before goes on from.
    assert frames[4] == {
        "type": "history", "room": "#general", "count": 3, "more": True, "first": sent[2]["id"]
    }  # fmt: skip
    assert frames[5]["text"] == "live" and "history" not in frames[5]


def test_a_new_room_and_an_empty_history_replay_nothing(
    chat_client: Connect,
) -> None:
    """Nothing stored for a room: no history frames at all, not even the closing one."""
    alice = chat_client("alice")
    alice.say("/join #new")
    frames = alice.sync()
    assert [f["type"] for f in frames] == ["join", "join"]  # #general at login, then #new


def test_replay_on_join_of_another_room(chat_client: Connect) -> None:
    """/join replays that room only."""
    alice, bob = chat_client("alice"), chat_client("bob")
    alice.say("/join #dev")
    alice.say("in dev", room="#dev")
    alice.say("in general", room="#general")
    alice.expect("message", text="in general")
    bob.sync()
    bob.say("/join #dev")
    assert messages(bob.sync()) == [("message", "in dev", True)]


def test_text_mode_shows_history_distinctly(chat_client: Connect, text_client: Any) -> None:
    """nc users see replayed lines with their date and time, then a closing line."""
    alice = chat_client("alice")
    alice.say("before you came")
    ts = alice.expect("message")["ts"]
    bob: TextClient = text_client("bob")
    bob.expect(f"[#general] {ts[:10]} {ts[11:16]} <alice> before you came")
    bob.expect("*** 1 earlier message of #general above")
    alice.say("now")
    bob.expect("[#general] <alice> now")


def test_history_command_pages(chat_server_factory: Factory, chat_client: Connect) -> None:
    """/history [#room] [N] returns the last N; errors give the usage."""
    server = chat_server_factory(config=history_config(max_page=5, replay=0), disable=["flood"])
    alice = chat_client(server, "alice")
    for i in range(7):
        alice.say(f"m{i}")
    alice.sync()
    alice.say("/history 2")
    assert messages(alice.sync()) == [("message", "m5", True), ("message", "m6", True)]
    alice.say("/history #general")  # page defaults to 50, capped at max_page
    frames = alice.sync()
    assert [t for _, t, _ in messages(frames)] == ["m2", "m3", "m4", "m5", "m6"]
    assert frames[-1] == {
        "type": "history", "room": "#general", "count": 5, "more": True, "first": frames[0]["id"]
    }  # fmt: skip
    for bad in ("/history 6", "/history 0", "/history #a #b", "/history #general x y"):
        alice.say(bad)
        assert alice.expect("error")["code"] == "bad_usage", bad
    alice.say("/history #elsewhere")
    assert alice.expect("error")["code"] == "not_in_room"


def test_text_mode_pages_back_with_before(
    chat_server_factory: Factory, chat_client: Connect, text_client: Any
) -> None:
    """A page with more before it says, in text mode, the command for the page before
    (its oldest id): /history #room N before ID, which goes on from there to the first."""
    server = chat_server_factory(config=history_config(max_page=3, replay=0), disable=["flood"])
    alice = chat_client(server, "alice")
    for i in range(5):
        alice.say(f"m{i}")
    ids = [alice.expect("message", text=f"m{i}")["id"] for i in range(5)]
    bob: TextClient = text_client(server, "bob")
    bob.send_line("/history 3")
    hint = f"*** 3 earlier messages of #general above; earlier ones: /history #general 3 before {ids[2]}"
    bob.expect(hint)
    bob.send_line(f"/history #general 3 before {ids[2]}")
    bob.expect("<alice> m1")
    bob.expect("*** 2 earlier messages of #general above")  # the first: no more
    for bad in ("/history before x", "/history 3 before 1e3", "/history before " + "9" * 30):
        bob.send_line(bad)
        assert "bad_usage" in bob.expect("error"), bad
    # A nick called before: /history before 3 is its conversation (an id is never 3).
    bob.send_line("/history before 3")
    assert "your private history with before" in bob.expect("error")
    bob.send_line("/history before " + "9" * 5000)  # (no int() of 5,000 digits)
    assert "bad_usage" in bob.expect("error")


def test_a_room_made_again_in_another_case_replays_under_its_name_now(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A room emptied and made again spelled in another case is the same room: its
    replay, pages and history_targets name it as it is spelled now."""
    server = chat_server_factory(disable=["flood"])
    gina = chat_client(server, "gina")
    gina.say("/join #CaseRoom")
    gina.expect("join", room="#CaseRoom")
    gina.say("in CaseRoom", room="#CaseRoom")
    gina.expect("message", text="in CaseRoom")
    gina.say("/part #CaseRoom")
    gina.expect("leave", room="#CaseRoom")
    hank = chat_client(server, "hank")
    hank.say("/join #caseroom")
    hank.expect("join", room="#caseroom")
    replayed = hank.expect("message", text="in CaseRoom")
    assert replayed["room"] == "#caseroom" and replayed["history"] is True
    assert hank.expect("history")["room"] == "#caseroom"
    hank.send({"type": "history", "room": "#caseroom"})
    assert hank.expect("message", text="in CaseRoom")["room"] == "#caseroom"
    hank.send({"type": "history_targets"})
    targets = hank.expect("history_targets")["targets"]
    assert "#caseroom" in [t["target"] for t in targets]
    assert "#CaseRoom" not in [t["target"] for t in targets]


def test_history_frame_scrolls_back_with_before(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """JSON clients page back with `before` until `more` is false; every message once."""
    server = chat_server_factory(disable=["flood"])
    alice = chat_client(server, "alice")
    for i in range(12):
        alice.say(f"m{i}")
    alice.sync()
    seen: list[str] = []
    before = None
    while True:
        request: dict[str, Any] = {"type": "history", "room": "#general", "limit": 5}
        if before is not None:
            request["before"] = before
        alice.send(request)
        page = alice.sync()
        texts = [t for _, t, _ in messages(page)]
        seen = texts + seen
        end = page[-1]
        assert end["type"] == "history" and end["count"] == len(texts)
        if not end["more"]:
            break
        before = page[0]["id"]
    assert seen == [f"m{i}" for i in range(12)]


def test_history_frame_after_around_and_oldest(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """`after` bounds a page from below, `oldest` takes its first messages instead of its
    last, `around` centres a page on a message; pages always come oldest first."""
    server = chat_server_factory(disable=["flood"])
    alice = chat_client(server, "alice")
    for i in range(10):
        alice.say(f"m{i}")
    ids = [frame["id"] for frame in alice.sync() if frame["type"] == "message"]

    def page(**fields: Any) -> list[str]:
        alice.send({"type": "history", "room": "#general", **fields})
        return [t for _, t, _ in messages(alice.sync())]

    assert page(after=ids[5], limit=2) == ["m8", "m9"]
    assert page(after=ids[5], limit=2, oldest=True) == ["m6", "m7"]
    assert page(after=ids[1], before=ids[4], limit=9, oldest=True) == ["m2", "m3"]
    assert page(around=ids[5], limit=3) == ["m4", "m5", "m6"]
    # Near either end the other side fills the page.
    assert page(around=ids[9], limit=4) == ["m6", "m7", "m8", "m9"]
    assert page(around=ids[0], limit=4) == ["m0", "m1", "m2", "m3"]
    assert page(around=ids[8], limit=5) == ["m5", "m6", "m7", "m8", "m9"]
    alice.send({"type": "history", "around": ids[5], "before": ids[6]})
    assert "'around' goes alone" in alice.expect("error", code="bad_frame")["text"]
    alice.send({"type": "history", "oldest": 1})
    assert "'oldest' must be true or false" in alice.expect("error")["text"]


@pytest.mark.parametrize(
    ("request_", "code", "text"),
    [
        ({"limit": 0}, "bad_frame", "'limit' must be 1 to 500"),
        ({"limit": 501}, "bad_frame", "'limit' must be 1 to 500"),
        ({"limit": "5"}, "bad_frame", "'limit' must be 1 to 500"),
        ({"before": "x"}, "bad_frame", "'before' must be a message id"),
        ({"before": True}, "bad_frame", "'before' must be a message id"),
        ({"before": 2**64}, "bad_frame", "'before' must be a message id"),
        ({"after": -1}, "bad_frame", "'after' must be a message id"),
        ({"around": "x"}, "bad_frame", "'around' must be a message id"),
        ({"room": "#general", "with": "bob"}, "bad_frame", "not both"),
        ({"room": 5}, "bad_frame", "strings"),
        ({"room": ""}, "bad_frame", "'room' is a room name"),
        ({"room": "#nowhere"}, "not_in_room", "you are not in #nowhere"),
        ({"room": "nowhere"}, "not_in_room", "you are not in #nowhere"),
        ({"with": "no body"}, "bad_usage", "no such room or nick"),
    ],
)
def test_bad_history_frames_get_clear_errors(
    chat_client: Connect, request_: dict[str, Any], code: str, text: str
) -> None:
    """Each bad field of a history frame is named in the error; the connection goes on."""
    alice = chat_client("alice")
    alice.send({"type": "history", **request_})
    error = alice.expect("error")
    assert error["code"] == code and text in error["text"]
    alice.send(type="history")
    assert alice.expect("history")["count"] == 0
    alice.send(type="history", room="general")  # (its "#" may be left out)
    assert alice.expect("history")["room"] == "#general"


def test_private_history_only_for_its_two_parties(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """With private = true (and no accounts), /history NICK and {"with": NICK} show the
    conversation between you and NICK only."""
    server = chat_server_factory(config=history_config(private=True), disable=["accounts"])
    alice, bob, carol = (chat_client(server, nick) for nick in ("alice", "bob", "carol"))
    alice.say("/msg bob one")
    bob.expect("private")
    bob.say("/msg ALICE two")
    alice.expect("private", text="two")
    alice.say("/msg carol other")
    carol.expect("private")
    for client in (alice, bob, carol):
        client.sync()
    alice.say("/history bob")
    assert messages(alice.sync()) == [("private", "one", True), ("private", "two", True)]
    bob.send({"type": "history", "with": "Alice"})
    frames = bob.sync()
    assert [(f["from"], f["to"], f["text"]) for f in frames[:-1]] == [
        ("alice", "bob", "one"),
        ("bob", "alice", "two"),  # the recipient as its nick is spelled
    ]
    assert frames[-1] == {
        "type": "history", "with": "Alice", "count": 2, "more": False, "first": frames[0]["id"]
    }  # fmt: skip
    carol.say("/history bob")  # carol was never part of it
    assert messages(carol.sync()) == []
    carol.say("/history alice")
    assert messages(carol.sync()) == [("private", "other", True)]


@pytest.mark.parametrize("settings", [{}, {"private": False}], ids=["default", "false"])
def test_private_messages_are_not_stored_by_default(
    chat_server_factory: Factory,
    chat_client: Connect,
    text_client: Callable[..., TextClient],
    settings: dict[str, Any],
) -> None:
    """By default without accounts (a nick's next holder could read them), and with
    private = false, private messages are delivered but never stored."""
    server = chat_server_factory(config=history_config(**settings), disable=["accounts"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.say("/msg bob secret")
    assert bob.expect("private")["text"] == "secret"
    alice.expect("private")
    alice.say("/history bob")
    assert messages(alice.sync()) == []
    assert plugin(server)._store.last_id() == 0
    # The empty page says why: nothing is kept (the web page shows it).
    alice.send({"type": "history", "with": "bob"})
    end = alice.expect("history")
    assert (end["with"], end["count"], end["more"], end["stored"]) == ("bob", 0, False, False)
    carol = text_client(server, "carol")
    carol.send_line("/history alice")
    carol.expect("this server does not keep private messages: no history of your conversation")


def test_private_false_hides_what_an_earlier_run_stored(
    chat_server_factory: Factory, chat_client: Connect, db: Path
) -> None:
    """A server restarted with private = false on a file an earlier run kept private
    messages in shows none of them: by nick alone, they would go to the nick's holder."""
    first = chat_server_factory(
        config=history_config(db=str(db), private=True), disable=["accounts"]
    )
    alice, bob = chat_client(first, "alice"), chat_client(first, "bob")
    alice.say("/msg bob the launch code is 1234")
    bob.expect("private")
    alice.close()
    bob.close()
    first.shutdown()
    second = chat_server_factory(config=history_config(db=str(db)), disable=["accounts"])
    impostor = chat_client(second, "bob")
    impostor.say("/history alice")
    assert messages(impostor.sync()) == []
    impostor.send({"type": "history", "with": "alice"})
    end = impostor.expect("history")
    assert (end["count"], end["stored"]) == (0, False)


def test_history_survives_a_restart(chat_client: Connect, db: Path) -> None:
    """A restarted server replays what the last one stored; new ids come after the old ones."""
    config = history_config(db=str(db), private=True)
    config.disable = ["accounts"]  # private history by nick: tests/test_accounts.py has accounts
    with Server(port=0, config=config) as first:
        alice, bob = chat_client(first, "alice"), chat_client(first, "bob")
        alice.say("before the restart")
        old = alice.expect("message")
        alice.say("/msg bob kept too")
        alice.expect("private")
        bob.close()
    with Server(port=0, config=config) as second:
        bob = chat_client(second, "bob")
        frames = bob.sync()
        assert messages(frames) == [("message", "before the restart", True)]
        assert [f["id"] for f in frames if f["type"] == "message"] == [old["id"]]
        bob.say("after")
        assert bob.expect("message")["id"] > old["id"]
        alice = chat_client(second, "alice")
        alice.sync()
        alice.say("/history bob")
        assert messages(alice.sync()) == [("private", "kept too", True)]


def test_ids_stay_above_stored_ones_when_the_clock_went_back(
    chat_client: Connect, db: Path
) -> None:
    """A stored id from the future (a clock that went back since): new ids still exceed it."""
    future = (int(time.time()) + 3600) * 1000 * 1000
    store = MessageStore(db)
    store.add(Message("old", "from the future", room="#general", id=future, ts="2099"))
    store.close()
    with Server(port=0, config=history_config(db=str(db))) as server:
        alice = chat_client(server, "alice")
        alice.say("now")
        assert alice.expect("message", text="now")["id"] > future


def test_retention_by_count_per_room(
    chat_server_factory: Factory, chat_client: Connect, db: Path
) -> None:
    """keep = N keeps the last N messages of each room; other rooms are untouched."""
    server = chat_server_factory(config=history_config(db=str(db), keep=3), disable=["flood"])
    alice = chat_client(server, "alice")
    alice.say("/join #quiet")
    alice.say("stays", room="#quiet")
    for i in range(6):
        alice.say(f"m{i}", room="#general")
    alice.sync()
    plugin(server)._store.flush()  # waits for a retention pass
    with sqlite3.connect(db) as check:
        rows = check.execute("SELECT conv, text FROM messages ORDER BY id").fetchall()
    assert rows == [("#quiet", "stays"), ("#general", "m3"), ("#general", "m4"), ("#general", "m5")]


def test_retention_by_age(chat_server_factory: Factory, chat_client: Connect, db: Path) -> None:
    """keep_days drops older messages at start and as time goes on."""
    two_days_ago = int((time.time() - 2 * 86400) * 1000) * 1000
    store = MessageStore(db)
    store.add(Message("old", "ancient", room="#general", id=two_days_ago, ts="then"))
    store.close()
    server = chat_server_factory(config=history_config(db=str(db), keep_days=1))
    plugin(server)._store.flush()
    alice = chat_client(server, "alice")
    assert messages(alice.sync()) == []


def test_a_message_that_cannot_be_stored_is_not_delivered(
    chat_server_factory: Factory, chat_client: Connect, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full database: the sender is told (not_stored) without SQL, nobody receives it, the
    log says why; once there is room again, chat goes on."""
    server = chat_server_factory(config=history_config(db=str(db)))
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    store = plugin(server)._store
    with store._write_lock:  # SQLite's own limit stands in for a full disk: SQLITE_FULL
        pages = store._write_db.execute("PRAGMA page_count").fetchone()[0]
        store._write_db.execute(f"PRAGMA max_page_count = {pages}")
    alice.say("x" * 5000)
    error = alice.expect("error")
    assert error == {
        "type": "error",
        "code": "not_stored",
        "text": "message not delivered: could not store the message; try again",
        "room": "#general",
    }
    assert f"cannot write 1 message(s) to the history database {db}" in caplog.text
    assert "database or disk is full" in caplog.text
    assert messages(bob.sync()) == []
    with store._write_lock:
        store._write_db.execute("PRAGMA max_page_count = 1000000")
    alice.say("room again")
    assert bob.expect("message")["text"] == "room again"


def test_text_that_is_not_unicode_stops_nobody(chat_client: Connect) -> None:
    """A lone surrogate in a say frame, a room name or a /quit reason is refused
    (bad_encoding) where it enters; the history writer and everyone's chat go on."""
    alice, bob = chat_client("alice"), chat_client("bob")
    for frame in (
        {"type": "say", "room": "#general", "text": "x\ud800y"},
        {"type": "say", "room": "#x\ud800", "text": "hi"},
        {"type": "say", "text": "/quit bye\ud800"},
        {"type": "say", "text": "/join #a\udc00"},
    ):
        alice.send(frame)
        assert alice.expect("error")["code"] == "bad_encoding"
    alice.say("still here")
    bob.expect("message", text="still here")
    bob.say("me too")
    bob.expect("message", text="me too")
    assert [f["text"] for f in alice.sync() if f["type"] == "message"] == ["still here", "me too"]


def test_a_history_writer_that_keeps_failing_stops_the_server(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A writer failing again and again (a bug) stops the server loudly, instead of
    refusing every message from then on; one failure alone only fails its messages."""
    server = chat_server_factory()
    alice = chat_client(server, "alice")
    store = plugin(server)._store

    def broken(batch: object) -> None:
        raise RuntimeError("a bug in the writer")

    store._commit = broken  # type: ignore[method-assign]
    alice.say("one")
    assert alice.expect("error")["code"] == "not_stored"
    assert server.failure is None
    alice.say("two")
    assert alice.expect("error")["code"] == "not_stored"
    alice.say("three")  # the third failure in a row stops the server, which may close
    # alice's connection before her reader hands her the error: one or the other comes.
    last = alice.expect(lambda f: f["type"] in ("error", "notice"))
    assert last.get("code") == "not_stored" or last["text"] == "server shutting down"
    assert server._stop_event.wait(5)
    assert server.failure is not None and "history" in server.failure


def test_pages_fit_in_the_send_queue(chat_server_factory: Factory, chat_client: Connect) -> None:
    """Long messages make shorter pages (a quarter of max_sendq): asking for many never
    gets the asker cut off as a slow consumer."""
    server = chat_server_factory(disable=["flood"], max_sendq=64 * 1024)
    alice = chat_client(server, "alice")
    for i in range(12):
        alice.say(f"m{i} " + "x" * 4000)
        if i % 4 == 3:
            alice.sync()  # read the echoes: 12 at once would overflow the 64 KiB queue
    alice.say("/history 12")
    frames = alice.sync()
    texts = [t.split()[0] for _, t, _ in messages(frames)]
    assert texts == ["m9", "m10", "m11"]  # 4 KB each: three fit in 16 KiB
    assert frames[-1] == {
        "type": "history", "room": "#general", "count": 3, "more": True, "first": frames[0]["id"]
    }  # fmt: skip


def test_a_replay_that_cannot_be_read_is_a_notice(
    chat_server_factory: Factory, chat_client: Connect, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """If the history cannot be read, the joiner is told (the log says why), joins anyway,
    and chat goes on."""
    server = chat_server_factory(config=history_config(db=str(db)))
    alice = chat_client(server, "alice")
    alice.say("before")
    alice.expect("message")
    store = plugin(server)._store
    with store._read_lock:
        store._read_db.close()  # any read now fails inside SQLite's module
    bob = chat_client(server, "bob")
    notice = bob.expect("notice")
    assert notice["text"] == "no history for #general: could not read the history; try again"
    alice.say("after")
    assert bob.expect("message")["text"] == "after"
    bob.say("/history")
    error = bob.expect("error")
    assert error["code"] == "internal_error" and "SQL" not in error["text"]
    assert (error["request"], error["room"]) == ("history", "#general")  # which page failed
    bob.command("/register bobs-password")  # (private history is shown to accounts)
    bob.send({"type": "history", "with": "alice"})
    assert bob.expect("error", code="internal_error")["with"] == "alice"
    assert "cannot read the history database" in caplog.text


def test_no_plugin_history_turns_it_off(chat_server_factory: Factory, chat_client: Connect) -> None:
    """Without the plugin: no replay, no /history, no history frame."""
    server = chat_server_factory(disable=["history"])
    alice = chat_client(server, "alice")
    alice.say("said")
    alice.sync()
    bob = chat_client(server, "bob")
    assert messages(bob.sync()) == []
    bob.say("/history")
    assert bob.expect("error")["code"] == "unknown_command"
    bob.send(type="history")
    assert bob.expect("error")["code"] == "bad_frame"


# -- bad databases -----------------------------------------------------------------


def make_directory(tmp_path: Path) -> Path:
    path = tmp_path / "history.sqlite3"
    path.mkdir()
    return path


def missing_directory(tmp_path: Path) -> Path:
    return tmp_path / "no" / "such" / "history.sqlite3"


def make_text_file(tmp_path: Path) -> Path:
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"hello, I am a text file\n" * 100)
    return path


def make_foreign(tmp_path: Path) -> Path:
    path = tmp_path / "history.sqlite3"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE accounts (id INTEGER)")
    return path


def make_newer(tmp_path: Path) -> Path:
    path = tmp_path / "history.sqlite3"
    MessageStore(path).close()
    with sqlite3.connect(path) as newer:
        newer.execute("PRAGMA user_version = 99")
    return path


def make_corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "history.sqlite3"
    store = MessageStore(path)
    for i in range(300):  # several pages of rows and index
        store.add(Message("a", f"message {i} " + "x" * 200, room="#r", id=i + 1, ts="t"))
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page : 5 * page] = b"\xff" * (2 * page)  # wreck pages 4 and 5
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (make_directory, "is a directory"),
        (missing_directory, "does not exist"),
        (make_text_file, "corrupt or not a SQLite file"),
        (make_foreign, "is not a chatkit history database"),
        (make_newer, "was written by a newer chatkit (schema version 99"),
        (make_corrupt, "is corrupt"),
    ],
    ids=["directory", "missing-directory", "not-sqlite", "foreign", "newer", "corrupt"],
)
def test_bad_database_files_stop_the_start_with_a_clear_error(
    tmp_path: Path, prepare: Callable[[Path], Path], message: str
) -> None:
    """Every kind of bad file gives a UsageError naming the file and what is wrong."""
    path = prepare(tmp_path)
    server = Server(port=0, config=history_config(db=str(path)))
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        server.start()
    assert str(path) in str(info.value)
    server.shutdown()


def test_a_locked_database_stops_the_start(tmp_path: Path, db: Path) -> None:
    """Another program holding the file's lock: a clear error after busy_timeout."""
    MessageStore(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        server = Server(port=0, config=history_config(db=str(db), busy_timeout=0.1))
        with pytest.raises(UsageError, match="is locked by another program"):
            server.start()
        server.shutdown()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_second_server_on_the_same_file_is_refused(db: Path) -> None:
    """Two embedded servers on one database file: the second raises UsageError naming the
    file and the first one's pid, and the first goes on; after it stops the file is free."""
    with Server(port=0, config=history_config(db=str(db))) as first:
        second = Server(port=0, config=history_config(db=str(db)))
        with pytest.raises(UsageError, match=re.escape(f"history database {db} is in use")) as info:
            second.start()
        assert f"(pid {os.getpid()})" in str(info.value)
        second.shutdown()
        assert plugin(first)._store.last_id() == 0  # still open and working
    with Server(port=0, config=history_config(db=str(db))):
        pass


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"replay": -1}, "replay must be a number of at least 0"),
        ({"replay": 2.5}, "replay must be a whole number"),
        ({"replay": 600}, "replay (600) is more than max_page"),
        ({"synchronous": "off"}, "synchronous must be 'normal' or 'full'"),
        ({"private": "yes"}, "private must be true or false"),
        ({"db": ""}, "db must be a file name"),
        ({"keep_day": 3}, "unknown setting(s) keep_day"),
    ],
)
def test_bad_settings_are_named(settings: dict[str, Any], message: str) -> None:
    """A bad [plugins.history] value stops the start and names the setting."""
    server = Server(port=0, config=history_config(**{"db": ":memory:", **settings}))
    with pytest.raises(UsageError, match=re.escape(message)):
        server.start()
    server.shutdown()


# -- the command line ------------------------------------------------------------------


def test_an_embedded_server_keeps_history_in_memory(chat_client: Connect) -> None:
    """A `Server` in a program, given no database, keeps history in memory: it never
    replays, or writes to, the user's files."""
    with Server(port=0) as server:
        assert plugin(server)._store.path == ":memory:"
        alice = chat_client(server, "alice")
        alice.say("only here")
        alice.expect("message")
        bob = chat_client(server, "bob")
        assert messages(bob.sync()) == [("message", "only here", True)]
    assert not (Path(os.environ["XDG_DATA_HOME"]) / "chatkit").exists()


def _data(name: str) -> Path:
    return Path(os.environ["XDG_DATA_HOME"]) / "chatkit" / name


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "history-127.0.0.1-9090.sqlite3"),
        ({"host": "0.0.0.0", "port": 6667}, "history-0.0.0.0-6667.sqlite3"),
        ({"host": "::1", "port": 9090}, "history-__1-9090.sqlite3"),
        ({"port": 0}, None),
    ],
)
def test_serve_db_is_one_file_per_address(settings: dict[str, Any], expected: str | None) -> None:
    """Without a config file, a served server's history file is named by its host and
    port; port 0 (picked at start) keeps history in memory."""
    config = Config(**settings)
    assert serve_db(config) == (str(_data(expected)) if expected else ":memory:")


def test_serve_db_of_a_config_file_is_derived_from_its_path(tmp_path: Path) -> None:
    """With a config file, the file is the identity: its name and a hash of its absolute
    path, so two chatkit.toml in two directories are two servers."""
    one, two = tmp_path / "a" / "chatkit.toml", tmp_path / "b" / "chatkit.toml"
    first = serve_db(Config(source=one, port=0))
    assert re.fullmatch(re.escape(str(_data("history-chatkit-"))) + r"[0-9a-f]{8}\.sqlite3", first)
    assert first == serve_db(Config(source=one, port=4000))  # the port is not its identity
    assert first != serve_db(Config(source=two))


def test_serve_keeps_one_file_per_address_and_says_where(serve: type[ServeProcess]) -> None:
    """`chatkit serve` on a port keeps history in history-HOST-PORT.sqlite3 in the data
    directory, says where, and a server on another port keeps its own."""
    with socket.socket() as probe:  # a port free a moment ago; the server takes it next
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve("--port", str(port))
    try:
        assert server.address[1] == port
        history_line = server.proc.stdout.readline() if server.proc.stdout else ""
        expected = _data(f"history-127.0.0.1-{port}.sqlite3")
        assert history_line == f"history: {expected}\n"
        assert expected.is_file()
    finally:
        code, _out, _err = server.stop()
    assert code == 0
    assert not _data("history.sqlite3").exists()


def test_serve_on_port_0_says_history_is_in_memory(serve: type[ServeProcess]) -> None:
    """`chatkit serve --port 0` (no identity to come back to) keeps history in memory and
    says so; two of them run side by side."""
    first, second = serve(), serve()
    for server in (first, second):
        line = server.proc.stdout.readline() if server.proc.stdout else ""
        assert line == "history: in memory only, gone when the server stops (--db FILE keeps it)\n"
    for server in (first, second):
        code, _out, _err = server.stop()
        assert code == 0


def test_serve_with_a_config_file_keeps_the_file_derived_from_it(
    serve: type[ServeProcess], tmp_path: Path
) -> None:
    """`chatkit serve --config FILE` keeps history in the file serve_db derives from it."""
    config = tmp_path / "team.toml"
    config.write_text("[server]\nport = 0\n")
    server = serve("--config", str(config))
    line = server.proc.stdout.readline() if server.proc.stdout else ""
    code, _out, _err = server.stop()
    assert code == 0
    expected = serve_db(Config(source=config))
    assert "history-team-" in expected
    assert line == f"history: {expected}\n" and Path(expected).is_file()


def test_serve_with_a_bad_db_exits_2(tmp_path: Path) -> None:
    """--db naming a corrupt file: exit status 2 and the reason, no traceback."""
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\0garbage" * 1000)
    result = subprocess.run(
        [CHATKIT, "serve", "--port", "0", "--db", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"Error: history database {bad} is corrupt or not a SQLite file" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_a_database_in_use_exits_2(serve: type[ServeProcess], db: Path) -> None:
    """A second `chatkit serve` on the file of a running one: exit status 2, a message
    naming the file and the first server's pid; the first one goes on."""
    first = serve("--db", str(db))
    result = subprocess.run(
        [CHATKIT, "serve", "--port", "0", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert (
        f"Error: history database {db} is in use by another chatkit server "
        f"(pid {first.proc.pid})" in result.stderr
    )
    assert "Traceback" not in result.stderr
    with socket.create_connection(first.address, timeout=5):
        pass
    code, _out, _err = first.stop()
    assert code == 0


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_sigkill_mid_burst_loses_nothing_any_client_received(
    tmp_path: Path, synchronous: str, serve: type[ServeProcess]
) -> None:
    """Kill -9 a real server while clients send: every message any client received is
    replayed, with its id and text, by the restarted server."""
    db = tmp_path / "history.sqlite3"
    config = tmp_path / "chatkit.toml"
    config.write_text(f'[plugins.history]\nsynchronous = "{synchronous}"\n')
    args = ("--db", str(db), "--no-plugin", "flood", "--config", str(config))
    server = serve(*args)
    watcher = ChatClient(server.address)
    watcher.login("watcher")
    senders = [ChatClient(server.address) for _ in range(6)]
    for i, sender in enumerate(senders):
        sender.login(f"sender{i}")
    received: dict[int, str] = {}  # id -> text, from every client's copy
    done = threading.Event()

    def blast(client: ChatClient, n: int) -> None:
        for k in range(2000):
            if done.is_set():
                return
            try:
                client.say(f"s{n}-{k} " + "x" * 2000)
            except OSError:
                return  # the server is gone

    threads = [threading.Thread(target=blast, args=(s, n)) for n, s in enumerate(senders)]
    for t in threads:
        t.start()
    while len(received) < 300:  # kill once the burst is well under way
        frame = watcher.expect("message", timeout=10)
        received[frame["id"]] = frame["text"]
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    done.set()
    for t in threads:
        t.join(timeout=10)
    for client in [watcher, *senders]:  # everything that reached any client before the kill
        frames = []
        while (last := client.receive(timeout=5)) is not None:  # None at EOF
            frames.append(last)
        received.update({f["id"]: f["text"] for f in frames if f["type"] == "message"})
        client.close()
    restarted = serve(*args)
    try:
        reader = ChatClient(restarted.address)
        reader.login("reader")
        replayed: dict[int, str] = {}
        before = None
        while True:  # scroll back through everything the restarted server has
            request: dict[str, Any] = {"type": "history", "room": "#general", "limit": 500}
            if before is not None:
                request["before"] = before
            reader.send(request)
            end = reader.expect("history", timeout=20)
            page = [f for f in reader.received if f.get("history")]
            replayed.update({f["id"]: f["text"] for f in page})
            if not end["more"]:
                break
            before = min(replayed)
        missing = {i: t for i, t in received.items() if replayed.get(i) != t}
        assert not missing, f"{len(missing)} received messages were not replayed"
        assert len(received) >= 300
    finally:
        restarted.stop()


def test_a_join_during_a_burst_sees_no_gap_and_no_duplicate(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """While alice sends a numbered burst, bob joins: his replay and the live messages after
    it are one unbroken run of alice's numbers, whatever the moment he joined."""
    server = chat_server_factory(config=history_config(replay=500), disable=["flood"])
    alice = chat_client(server, "alice")
    bob = chat_client(server)
    burst = 3000
    alice.send_raw(b"".join(b'{"type":"say","text":"n%d"}\n' % i for i in range(burst)))
    alice.expect("message", text="n20")  # the burst is under way
    bob.login("bob")
    bob.expect("message", text=f"n{burst - 1}", timeout=30)
    frames = [f for f in bob.received if f["type"] == "message" and f["nick"] == "alice"]
    numbers = [int(f["text"][1:]) for f in frames]
    replayed = [f for f in frames if f.get("history")]
    assert replayed, "bob joined after n20, so his replay holds messages"
    assert frames[: len(replayed)] == replayed  # the replay comes first
    assert numbers == list(range(numbers[0], burst))  # in order, none missing, none twice


def test_messages_of_a_client_that_leaves_at_once_are_delivered(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A client that sends a burst and closes its socket at once: every line it sent is
    stored and delivered (the reader settles them before logging it out)."""
    server = chat_server_factory(disable=["flood"])
    bob = chat_client(server, "bob")
    alice = chat_client(server, "alice")
    alice.send_raw(b"".join(b'{"type":"say","text":"m%d"}\n' % i for i in range(200)))
    alice.sock.shutdown(socket.SHUT_WR)  # gone: the server reads the lines, then the end
    leave = bob.expect("leave", nick="alice", timeout=20)
    texts = [f["text"] for f in bob.received if f["type"] == "message"]
    assert texts == [f"m{i}" for i in range(200)]
    assert leave["reason"] == "connection closed"


def test_runs_of_stored_messages_reach_text_and_json_members_in_order(
    chat_server_factory: Factory, chat_client: Connect, text_client: Any
) -> None:
    """Stored messages leave in runs (one piece per member): nc users and JSON clients both
    get every message of a burst, in order, each on its own line."""
    server = chat_server_factory(disable=["flood"])
    nc: TextClient = text_client(server, "nc")
    json_member = chat_client(server, "member")
    alice = chat_client(server, "alice")
    alice.send_raw(b"".join(b'{"type":"say","text":"n%d"}\n' % i for i in range(300)))
    json_member.expect("message", text="n299", timeout=20)
    texts = [f["text"] for f in json_member.received if f["type"] == "message"]
    assert texts == [f"n{i}" for i in range(300)]
    lines = [nc.expect("<alice>") for _ in range(300)]
    assert lines == [f"[#general] <alice> n{i}" for i in range(300)]


def test_hello_chooses_the_replay(chat_client: Connect) -> None:
    """hello's replay gives the last N (0: none) and since only newer messages, for the
    room the login joins; a bad value is bad_frame naming the field."""
    alice = chat_client("alice")
    for i in range(5):
        alice.say(f"m{i}")
    ids = [alice.expect("message")["id"] for _ in range(5)]

    def replayed(**choice: Any) -> list[str]:
        bob = chat_client()
        bob.send(type="hello", nick="bob", **choice)
        bob.expect("welcome")
        frames = bob.sync()
        bob.close()
        alice.expect("leave", nick="bob")
        return [f["text"] for f in frames if f.get("history")]

    assert replayed() == [f"m{i}" for i in range(5)]
    assert replayed(replay=2) == ["m3", "m4"]
    assert replayed(replay=0) == []
    assert replayed(since=ids[2]) == ["m3", "m4"]
    assert replayed(since=ids[2], replay=1) == ["m4"]
    assert replayed(since=ids[4]) == []
    for bad in ({"replay": -1}, {"replay": "5"}, {"since": True}, {"since": 2**64}):
        carol = chat_client()
        carol.send(type="hello", nick="carol", **bad)
        error = carol.expect("error")
        assert error["code"] == "bad_frame" and next(iter(bad)) in error["text"]


def test_hello_rooms_rejoins_them_with_since_and_later_joins_replay_as_any(
    chat_client: Connect,
) -> None:
    """A reconnect's hello names its rooms: the login joins them in order (the last is
    the current one), each replaying only what came after `since`; a room joined later
    replays its last page as any join does (since is the login's joins'). `room` and
    `rooms` together are bad_frame; a bad name is an error after the welcome."""
    alice = chat_client("alice")
    for room in ("#a", "#b", "#c"):
        alice.say(f"/join {room}")
        alice.expect("join", room=room, nick="alice")
        alice.say("old", room=room)
    alice.sync()
    seen = max(f["id"] for f in alice.received if f.get("text") == "old")
    for room in ("#a", "#b", "#c"):
        alice.say("new", room=room)
    alice.sync()
    bob = chat_client()
    bob.send(type="hello", nick="bob", since=seen, rooms=["#a", "b", "#bad room"])
    welcome = bob.expect("welcome")
    assert welcome["rooms"] == ["#a", "#b"]
    error = bob.expect("error")
    assert (error["code"], error["room"]) == ("bad_room", "#bad room")
    bob.expect("join", room="#b", nick="bob")
    frames = bob.sync()
    replays = [(f["room"], f["text"]) for f in bob.received if f.get("history") and "text" in f]
    assert replays == [("#a", "new"), ("#b", "new")], frames
    bob.say("here")  # no room named: the current one, the last joined
    assert alice.expect("message", nick="bob")["room"] == "#b"
    bob.say("/join #c")
    bob.expect("join", room="#c", nick="bob")
    bob.sync()
    later = [f["text"] for f in bob.received if f.get("history") and f.get("room") == "#c"]
    assert later == ["old", "new"]  # its last page, not only what came after since
    carol = chat_client()
    carol.send(type="hello", nick="carol", room="#a", rooms=["#b"])
    assert carol.expect("error")["code"] == "bad_frame"


def test_a_hostile_hello_rooms_list_costs_what_it_asks(
    chat_server_factory: Callable[..., Server], chat_client: Connect
) -> None:
    """Two new look-alike names: the second is refused before the welcome (which names
    only rooms joined), and the rooms after it are still joined; a name twice is once,
    past max_rooms too; bad names are ten errors and one for the rest; each room costs
    a line of flood control, as a /join would."""
    server = chat_server_factory(max_rooms=3)
    mallory = chat_client(server)
    rooms = ["#t\u0435st", "#test", "#other", "#a", "#A", "#other"]  # (a Cyrillic e)
    mallory.send(type="hello", nick="mallory", rooms=rooms)
    assert mallory.expect("welcome")["rooms"] == ["#t\u0435st", "#other", "#a"]
    mallory.expect("join", room="#a", nick="mallory")
    mallory.sync()
    assert [f["code"] for f in mallory.received if f["type"] == "error"] == ["bad_room"]
    trudy = chat_client(server)  # past max_rooms: one error, naming only rooms not joined
    trudy.send(type="hello", nick="trudy", rooms=["#a", "#b", "#c", "#A", "#d", "#d", "#e"])
    trudy.expect("join", room="#c", nick="trudy")
    trudy.sync()
    errors = [f["text"] for f in trudy.received if f["type"] == "error"]
    assert errors == ["cannot join #d, #e: 3 rooms at most (max_rooms)"], errors
    eve = chat_client(server)
    eve.send(type="hello", nick="eve", rooms=[f"#bad{i}!" for i in range(30)] + ["#ok"])
    assert eve.expect("welcome")["rooms"] == ["#ok"]
    eve.expect("join", room="#ok", nick="eve")
    eve.sync()
    errors = [f["text"] for f in eve.received if f["type"] == "error"]
    assert len(errors) == 11 and errors[-1] == "and 20 more rooms not joined", errors
    strict = chat_server_factory(
        config=Config(plugin_config={"flood": {"rate": 0.001, "burst": 3}})
    )
    bob = chat_client(strict)
    rooms = [f"#r{i}" for i in range(8)]  # three lines: the hello's, one a four rooms
    bob.send(type="hello", nick="bob", rooms=rooms)
    bob.expect("join", room="#r7", nick="bob")
    bob.say("one")  # the hello's own line, given back at login
    bob.say("two")
    assert bob.expect("error")["code"] == "rate_limited"


def test_chatkit_join_replay_zero_shows_no_history(chat_client: Connect) -> None:
    """`chatkit join --replay 0` in a script prints no replayed message."""
    alice = chat_client("alice")
    alice.say("earlier")
    alice.expect("message")
    port = alice.sock.getpeername()[1]
    out = subprocess.run(
        [CHATKIT, "join", "--port", str(port), "--nick", "bot", "--replay", "0"],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    assert "earlier" not in out.stdout
    out = subprocess.run(
        [CHATKIT, "join", "--port", str(port), "--nick", "bot2"],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "earlier" in out.stdout


def test_a_shutdown_delivers_every_message_it_stored(
    chat_server_factory: Factory, tmp_path: Path
) -> None:
    """Stopping a server whose senders do not let up: each message it stored reaches
    the reader that stays (none is stored and never sent, to be resent after the
    restart as a duplicate)."""
    db = tmp_path / "h.db"
    server = chat_server_factory(config=history_config(db=str(db)), disable=["flood"])
    address = server.address
    got: set[int] = set()

    def connect(nick: str) -> socket.socket:
        sock = socket.create_connection(address, timeout=10)
        sock.sendall(b'{"type":"hello","nick":"%s"}\n' % nick.encode())
        return sock

    def read(sock: socket.socket, ids: set[int] | None) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while data := sock.recv(1 << 20):
                *lines, buffer = (buffer + data).split(b"\n")
                for line in lines:
                    if ids is not None and line.startswith(b'{"type":"message"'):
                        ids.add(json.loads(line)["id"])

    receiver = connect("rx")
    reading = threading.Thread(target=read, args=(receiver, got))
    reading.start()
    senders = [connect(f"tx{i}") for i in range(3)]
    threads = [threading.Thread(target=read, args=(sock, None)) for sock in senders]
    burst = b'{"type":"say","text":"flood"}\n' * 200

    def send(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock.sendall(burst)

    threads += [threading.Thread(target=send, args=(sock,), daemon=True) for sock in senders]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(got) > 3000, timeout=30)
    server.shutdown()
    reading.join(10)
    assert not reading.is_alive()
    for sock in [receiver, *senders]:
        sock.close()
    with sqlite3.connect(db) as con:
        stored = {row[0] for row in con.execute("SELECT id FROM messages")}
    assert stored and not stored - got, f"{len(stored - got)} stored, never sent"


def test_a_message_said_as_the_server_stops_is_refused(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Once the server is stopping (hub.stopping, the shutdown's first step), a message
    is refused with closing, neither stored nor sent: what was accepted before is
    delivered before the shutdown notice."""
    server = chat_server_factory(disable=["flood"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    server.hub.stopping = True
    alice.say("too late")
    assert alice.expect("error", code="closing")["text"] == "the server is shutting down: not sent"
    alice.say("/msg bob too late")
    alice.expect("error", code="closing")
    server.hub.stopping = False
    alice.say("in time")
    assert bob.expect("message", nick="alice")["text"] == "in time"
    assert plugin(server)._store.room_page("#general", limit=5)[0][-1].text == "in time"
    assert len(plugin(server)._store.room_page("#general", limit=5)[0]) == 1
