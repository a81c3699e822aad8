"""Every builtin command, and command dispatch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import HeldStore

from chatkit import CommandContext, CommandError, Register, Server, UsageError, hookimpl
from chatkit.testing import ChatClient, TextClient, wait_until

Connect = Callable[..., ChatClient]


def _private_from(nick: str) -> Callable[[dict[str, Any]], bool]:
    """Matches a ``private`` frame from ``nick`` (``from`` is a Python keyword: no
    ``expect("private", from=nick)``)."""
    return lambda frame: frame["type"] == "private" and frame.get("from") == nick


def test_help_lists_every_command_with_its_plugin(chat_client: Connect) -> None:
    """/help lists each command, its usage and the plugin that provides it."""
    alice = chat_client("alice")
    alice.say("/help")
    reply = alice.expect("reply", command="help")
    names = {c["name"]: c["plugin"] for c in reply["data"]["commands"]}
    assert names == {
        "away": "session",
        "describe": "messaging",
        "drop": "accounts",
        "help": "help",
        "history": "history",
        "identify": "accounts",
        "regain": "accounts",
        "join": "rooms",
        "logout": "accounts",
        "me": "messaging",
        "msg": "messaging",
        "nick": "session",
        "part": "rooms",
        "passwd": "accounts",
        "ping": "session",
        "quit": "session",
        "register": "accounts",
        "rooms": "rooms",
        "vouch": "accounts",
        "resetpass": "accounts",
        "who": "rooms",
        "topic": "rooms",
    }
    assert "/msg NICK TEXT" in reply["text"]


def test_help_explains_one_command(chat_client: Connect) -> None:
    """/help NAME gives that command's usage and help; an unknown name is an error."""
    alice = chat_client("alice")
    alice.say("/help /msg")
    reply = alice.expect("reply")
    assert reply["data"]["usage"] == "NICK TEXT"
    assert reply["data"]["plugin"] == "messaging"
    alice.say("/help nope")
    assert alice.expect("error")["code"] == "unknown_command"


def test_unknown_command(chat_client: Connect) -> None:
    """An unknown /command gets unknown_command and is not sent as a message."""
    alice = chat_client("alice")
    alice.say("/dance")
    error = alice.expect("error")
    assert error["code"] == "unknown_command" and "/help" in error["text"]
    assert not [f for f in alice.sync() if f["type"] == "message"]


def test_double_slash_sends_a_literal_slash(chat_client: Connect) -> None:
    """//text is a message that starts with one slash."""
    alice = chat_client("alice")
    alice.say("//shrug")
    assert alice.expect("message")["text"] == "/shrug"


def test_who_lists_members(chat_client: Connect) -> None:
    """/who lists the nicks in the current room or a named one, sorted ignoring case."""
    carol = chat_client("carol")
    for nick in ("bob", "Alice", "dave"):
        chat_client(nick)
        carol.expect("join", nick=nick)  # the welcome comes first, then the join
    carol.say("/who")
    reply = carol.expect("reply", command="who")
    assert reply["data"] == {
        "room": "#general",
        "nicks": ["Alice", "bob", "carol", "dave"],
        "away": {},
    }
    assert reply["text"] == "#general (4): Alice, bob, carol, dave"
    carol.say("/who #nowhere")
    assert carol.expect("error")["code"] == "no_such_room"


def test_away_is_shown_to_who_and_told_to_whoever_messages(chat_client: Connect) -> None:
    """/away TEXT marks you away: /who shows it and a private message gets it back
    (the message is delivered all the same); /away alone, back."""
    alice, bob = chat_client("alice"), chat_client("bob")
    alice.say("/away at lunch")
    reply = alice.expect("reply", command="away")
    assert (reply["text"], reply["data"]) == ("you are marked away: at lunch", {"away": "at lunch"})
    assert bob.expect("away") == {"type": "away", "nick": "alice", "text": "at lunch"}
    bob.say("/who")
    reply = bob.expect("reply", command="who")
    assert reply["text"] == "#general (2): alice (away), bob"
    assert reply["data"]["away"] == {"alice": "at lunch"}
    bob.say("/msg ALICE are you there?")
    assert alice.expect("private")["text"] == "are you there?"
    bob.expect("private")
    reply = bob.expect("reply", command="msg")
    assert reply["text"] == "alice is away: at lunch"
    assert reply["data"] == {"nick": "alice", "away": "at lunch"}
    alice.say("/away " + "x" * 201)
    assert alice.expect("error")["code"] == "bad_text"
    alice.say("/away")
    assert alice.expect("reply", command="away")["text"] == "you are back"
    assert bob.expect("away") == {"type": "away", "nick": "alice", "text": None}
    alice.say("/away")
    assert alice.expect("reply", command="away")["text"] == "you were not away"
    bob.say("/msg alice back?")
    bob.expect("private")
    assert not [f for f in bob.sync() if f["type"] == "reply"]
    assert not [f for f in alice.sync() if f["type"] == "away"]  # (never one's own)


def test_a_member_away_is_announced_to_its_rooms_and_in_its_joins(
    chat_client: Connect, text_client: Callable[..., TextClient]
) -> None:
    """Going away, changing the message and coming back are each an ``away`` frame to
    those who share a room (once each, however many rooms), not to those who do not;
    a join while away says so (text mode: ``(away: ...)``)."""
    alice, bob, carol = chat_client("alice"), chat_client("bob"), chat_client("carol")
    dan = text_client("dan")
    for who, nick in ((alice, "alice"), (bob, "bob")):
        who.say("/join #dev")
        who.expect("join", nick=nick, room="#dev")
    carol.say("/part #general")
    carol.expect("leave", nick="carol")
    alice.say("/away lunch")
    assert bob.expect("away") == {"type": "away", "nick": "alice", "text": "lunch"}
    dan.expect("* alice is away: lunch")
    alice.say("/away lunch, then a walk")
    assert bob.expect("away")["text"] == "lunch, then a walk"
    carol.say("/join #ops")
    dan.send_line("/join #ops")
    carol.expect("join", nick="carol", room="#ops")
    dan.expect("* dan joined #ops")
    alice.say("/join #ops")
    assert carol.expect("join", nick="alice")["away"] == "lunch, then a walk"
    dan.expect("* alice joined #ops (away: lunch, then a walk)")
    alice.say("/away")
    assert bob.expect("away") == {"type": "away", "nick": "alice", "text": None}
    dan.expect("* alice is back")
    assert carol.expect("away")["nick"] == "alice"
    assert not [f for f in bob.sync() if f["type"] == "away"]  # once, not once a room


def test_nick_renames_and_tells_the_room(chat_client: Connect) -> None:
    """/nick changes the nick and everyone sharing a room sees it."""
    alice, bob = chat_client("alice"), chat_client("bob")
    alice.say("/nick alicia")
    assert bob.expect("nick") == {"type": "nick", "old": "alice", "new": "alicia"}
    assert alice.expect("nick")["new"] == "alicia"
    bob.say("/msg alicia hi")
    assert alice.expect("private")["to"] == "alicia"


def test_nick_errors(chat_client: Connect) -> None:
    """/nick refuses taken and invalid nicks and a missing argument."""
    alice = chat_client("alice")
    chat_client("bob")
    alice.say("/nick BOB")
    assert alice.expect("error")["code"] == "nick_taken"
    alice.say("/nick bad nick")
    assert alice.expect("error")["code"] == "bad_usage"
    alice.say("/nick -x")
    assert alice.expect("error")["code"] == "bad_nick"
    alice.say("/nick ALICE")  # a change of case is allowed
    assert alice.expect("nick")["new"] == "ALICE"


def test_msg_is_private_to_both_parties(chat_client: Connect) -> None:
    """/msg reaches the recipient and the sender, nobody else."""
    alice, bob, carol = chat_client("alice"), chat_client("bob"), chat_client("carol")
    alice.say("/msg BOB psst, bob")
    for client in (alice, bob):
        frame = client.expect("private")
        assert (frame["from"], frame["to"], frame["text"]) == ("alice", "bob", "psst, bob")
        assert isinstance(frame["id"], int)
    assert not [f for f in carol.sync() if f["type"] == "private"]


def test_msg_errors(chat_client: Connect) -> None:
    """/msg to nobody gives no_such_nick; to yourself (any case), bad_usage; without text,
    its usage."""
    alice = chat_client("alice")
    alice.say("/msg ALICE note to self")
    assert alice.expect("error") == {
        "type": "error",
        "code": "bad_usage",
        "text": "you are alice: /msg sends to someone else (see /who)",
    }
    assert not [f for f in alice.sync() if f["type"] == "private"]
    alice.say("/msg ghost hello")
    assert alice.expect("error")["code"] == "no_such_nick"
    alice.say("/msg ghost")
    assert alice.expect("error") == {
        "type": "error",
        "code": "bad_usage",
        "text": "usage: /msg NICK TEXT",
    }


def test_me_sends_an_action(chat_client: Connect) -> None:
    """/me sends a message marked as an action."""
    alice, bob = chat_client("alice"), chat_client("bob")
    alice.say("/me waves")
    frame = bob.expect("message")
    assert frame["action"] is True and frame["text"] == "waves" and frame["nick"] == "alice"
    alice.say("/me")
    assert alice.expect("error")["code"] == "bad_usage"


def test_describe_sends_a_private_action(
    chat_client: Connect, text_client: Callable[..., TextClient]
) -> None:
    """/describe NICK ACTION is /me in private: both sides get a private frame marked
    as an action (a JSON client, and a text client reading the line for it); to oneself
    or without an action it is bad_usage."""
    alice, bob = chat_client("alice"), chat_client("bob")
    carol = text_client("carol")
    alice.say("/describe Bob waves")
    for side in (alice, bob):
        frame = side.expect(_private_from("alice"))
        assert (frame["to"], frame["text"], frame["action"]) == ("bob", "waves", True)
    alice.say("/describe carol bows")
    assert carol.expect("[pm]") == "[pm] * alice -> carol bows"
    carol.send_line("/describe alice smiles")
    assert carol.expect("[pm]") == "[pm] * carol -> alice smiles"
    frame = alice.expect(_private_from("carol"))
    assert frame["action"] is True and frame["text"] == "smiles"
    alice.say("/describe ALICE waves")
    assert alice.expect("error", code="bad_usage")["text"].startswith("you are alice: /describe")
    alice.say("/describe bob")
    alice.expect("error", code="bad_usage")
    alice.say("/describe nobody waves")
    alice.expect("error", code="no_such_nick")


def test_join_part_and_rooms(chat_client: Connect) -> None:
    """/join creates and enters a room, /rooms lists rooms, /part leaves with a reason."""
    alice, bob = chat_client("alice"), chat_client("bob")
    bob.say("/join #Side")
    bob.expect("join", room="#Side")
    alice.say("/join #side")
    join = bob.expect("join", nick="alice")
    assert join["room"] == "#Side"  # the name as first typed; rooms ignore case
    alice.say("now here")  # the current room is the one joined last
    assert bob.expect("message")["room"] == "#Side"
    alice.say("/rooms")
    assert alice.expect("reply", command="rooms")["data"]["rooms"] == {"#general": 2, "#Side": 2}
    alice.say("/part #side gone fishing")
    leave = bob.expect("leave", nick="alice")
    assert leave["room"] == "#Side" and leave["reason"] == "part: gone fishing"
    assert alice.expect("leave")["room"] == "#Side"  # the leaver is told too
    alice.say("/part #side")
    assert alice.expect("error")["code"] == "not_in_room"
    alice.say("back in general")  # current room falls back to a remaining one
    assert bob.expect("message", text="back in general")["room"] == "#general"


def test_join_again_switches_the_current_room(chat_client: Connect) -> None:
    """/join of a room already joined makes it current without a new join."""
    alice = chat_client("alice")
    alice.say("/join #a")
    alice.expect("join", room="#a")
    alice.say("/join #GENERAL")  # (the reply names it as it spells itself)
    assert alice.expect("reply", command="join")["data"]["room"] == "#general"
    alice.say("x")
    assert alice.expect("message")["room"] == "#general"


def test_join_adds_a_missing_hash(chat_client: Connect) -> None:
    """/join side joins #side; /join general is the room one is already in; /who side
    and /part side mean #side too (/part of a word that is no room of one's: a reason)."""
    alice = chat_client("alice")
    alice.say("/join side")
    alice.expect("join", room="#side", nick="alice")
    alice.say("/join general")
    assert alice.expect("reply", command="join")["data"]["room"] == "#general"
    alice.say("/who side")  # /who and /part take a room as /join does
    assert alice.expect("reply", command="who")["data"] == {
        "room": "#side",
        "nicks": ["alice"],
        "away": {},
    }
    alice.say("/part side bye")
    assert alice.expect("leave")["reason"] == "part: bye"
    alice.say("/join side")  # joined again (it had left): a join, no reply
    alice.expect("join", room="#side", nick="alice")
    alice.say("/join general")  # #general is current again
    alice.expect("reply", command="join")
    alice.say("/topic side")  # a room alice is in: its topic, not a topic "side" for #general
    assert alice.expect("reply", command="topic")["text"] == "#side has no topic"
    alice.say("/part side")
    alice.expect("leave")
    alice.say("/part lunch")  # not a room alice is in: the reason for leaving the current one
    leave = alice.expect("leave")
    assert leave["room"] == "#general" and leave["reason"] == "part: lunch"


def test_bad_room_names(chat_client: Connect) -> None:
    """/join refuses empty or long names and spaces, and says what is allowed."""
    alice = chat_client("alice")
    for bad in ["/join #", "/join #" + "x" * 60, "/join x!"]:
        alice.say(bad)
        error = alice.expect("error")
        assert error["code"] == "bad_room", bad
    alice.say("/join #a b")
    assert alice.expect("error")["code"] == "bad_usage"


def test_part_of_the_last_room_leaves_lines_nowhere(chat_client: Connect) -> None:
    """After leaving every room, a plain line says how to join one."""
    alice = chat_client("alice")
    alice.say("/part")
    alice.expect("leave")
    alice.say("hello?")
    error = alice.expect("error")
    assert error["code"] == "not_in_room" and "/join" in error["text"]


def test_quit_closes_with_a_reason(chat_client: Connect) -> None:
    """/quit says bye, closes the connection and tells the room the reason."""
    alice, bob = chat_client("alice"), chat_client("bob")
    bob.say("/quit off to lunch")
    assert bob.expect("reply", command="quit")["text"] == "bye"
    bob.wait_closed()
    assert alice.expect("leave", nick="bob")["reason"] == "quit: off to lunch"


def test_ping_command(text_client: Callable[..., TextClient]) -> None:
    """/ping answers pong, for people on nc."""
    bob = text_client("bob")
    bob.send_line("/ping")
    assert bob.expect("pong") == "pong"


class Failing:
    """Commands that fail in the two ways a handler can."""

    @hookimpl
    def chatkit_register_commands(self, register: Register) -> None:
        register("refuse", self.refuse, help="always refuses")
        register("crash", self.crash, help="always crashes")

    def refuse(self, ctx: CommandContext) -> None:
        raise CommandError("no, and that is final", "refused")

    def crash(self, ctx: CommandContext) -> None:
        raise RuntimeError("boom")


def test_command_errors_reach_the_user_and_crashes_are_contained(
    chat_server_factory: Callable[..., Server],
    chat_client: Connect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A CommandError's text goes to the user; any other error says 'internal error' and logs."""
    server = chat_server_factory(plugins=[Failing()])
    alice = chat_client(server, "alice")
    alice.say("/refuse")
    assert alice.expect("error") == {
        "type": "error",
        "code": "refused",
        "text": "no, and that is final",
    }
    alice.say("/crash")
    assert alice.expect("error") == {
        "type": "error",
        "code": "internal_error",
        "text": "internal error in /crash",
    }
    assert "boom" in caplog.text and "Failing" in caplog.text
    alice.say("still here")
    alice.expect("message", text="still here")


class Clash:
    @hookimpl
    def chatkit_register_commands(self, register: Register) -> None:
        register("who", lambda ctx: None, help="another /who")


def test_a_duplicate_command_name_stops_the_start() -> None:
    """Two plugins registering one command name is a startup error naming both."""
    server = Server(port=0, plugins=[Clash()])
    with pytest.raises(UsageError, match=r"/who is registered by both plugin") as info:
        server.start()
    assert "'rooms'" in str(info.value) and "'Clash'" in str(info.value)


def test_an_away_after_a_rename_comes_after_the_rename(
    chat_server_factory: Callable[..., Server], chat_client: Connect
) -> None:
    """A rename's nick frame waits behind the messages being stored in its rooms; an
    away frame that follows it (it names the new nick) waits behind it too, so the
    others never hear of an away rob before they know bob is rob."""
    store = HeldStore()
    server = chat_server_factory(plugins=[store], disable=["history"])
    alice, bob, carol = (chat_client(server, nick) for nick in ("alice", "bob", "carol"))
    carol.say("storing...")  # (held in #general's lane until its future is done)
    wait_until(lambda: store.held, 5, "the message in its lane")
    bob.say("/nick rob")
    bob.expect("nick", new="rob")
    bob.say("/away lunch")
    bob.expect("reply", command="away")
    store.release()
    alice.expect("away", nick="rob")
    seen = [f["type"] for f in alice.received if f["type"] in ("message", "nick", "away")]
    assert seen == ["message", "nick", "away"]
