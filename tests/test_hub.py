"""Chat behaviour: logins, nicks, rooms and routing, through a real server."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from conftest import HeldStore

from chatkit import Drop, Frame, Message, Reject, Server, Session, hookimpl
from chatkit.events import Say
from chatkit.hub import Hub, IdClock, valid_nick, valid_room
from chatkit.testing import ChatClient, TextClient, run_server, wait_until

Connect = Callable[..., ChatClient]
Factory = Callable[..., Server]


def test_login_sends_welcome_and_joins_the_default_room(chat_client: Connect) -> None:
    """A client that says hello gets a welcome and its own join to #general."""
    alice = chat_client()
    welcome = alice.login("alice")
    assert welcome["nick"] == "alice"
    assert welcome["rooms"] == ["#general"]
    assert welcome["server"] == "chatkit"
    join = alice.expect("join")
    assert join["room"] == "#general" and join["nick"] == "alice"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", join["ts"])


def test_a_hello_may_name_the_room_to_join_instead(chat_client: Connect) -> None:
    """``"room"`` in the hello joins that room instead of the default one (its '#' may
    be left out); a bad one is told after the welcome and the login stands, in no room."""
    watcher = chat_client("watcher")
    bot = chat_client()
    assert bot.login("bot", room="ops")["rooms"] == ["#ops"]
    bot.expect("join", room="#ops", nick="bot")
    lost = chat_client()
    lost.send(type="hello", nick="lost", room="#bad room")
    assert lost.expect("welcome")["rooms"] == []
    error = lost.expect("error", code="bad_room")
    assert error["text"].startswith("cannot join #bad room: bad room name")
    lost.say("/join #fine")
    lost.expect("join", room="#fine", nick="lost")
    joins = [f["nick"] for f in watcher.sync() if f["type"] == "join"]
    assert "bot" not in joins and "lost" not in joins  # #general saw neither


def test_others_see_a_join(chat_client: Connect) -> None:
    """Members of the room are told when someone joins."""
    alice = chat_client("alice")
    chat_client("bob")
    alice.expect("join", nick="bob", room="#general")


def test_nick_clash_gets_an_error_and_another_try_works(chat_client: Connect) -> None:
    """A taken nick (in any case) is refused with nick_taken; the client may try again."""
    chat_client("alice")
    other = chat_client()
    other.send(type="hello", nick="ALICE")
    assert other.expect("error")["code"] == "nick_taken"
    assert other.login("alice2")["nick"] == "alice2"


def test_bad_nicks_are_refused_with_the_rule(chat_client: Connect) -> None:
    """Nicks with spaces, control characters, or of the wrong length get bad_nick."""
    client = chat_client()
    for nick in ["", "a b", "x" * 33, "1abc", "-x", "a\u0007"]:
        client.send(type="hello", nick=nick)
        error = client.expect("error")
        assert error["code"] == "bad_nick"
        assert "letters, digits" in error["text"]
    assert client.login("a" * 32)["nick"] == "a" * 32


def test_hello_twice_is_an_error(chat_client: Connect) -> None:
    """A second hello is refused: /nick renames."""
    alice = chat_client("alice")
    alice.send(type="hello", nick="other")
    assert alice.expect("error")["code"] == "bad_frame"


def test_say_before_login_is_an_error(chat_client: Connect) -> None:
    """Messages before hello get not_logged_in; login still works afterwards."""
    client = chat_client()
    client.send(type="say", text="hi")
    assert client.expect("error")["code"] == "not_logged_in"
    client.login("late")


def test_messages_reach_every_member_the_sender_included(chat_client: Connect) -> None:
    """A room message goes to every member, the sender's copy confirming it."""
    alice, bob, carol = chat_client("alice"), chat_client("bob"), chat_client("carol")
    alice.say("hello all")
    frames = [c.expect("message") for c in (alice, bob, carol)]
    assert {f["text"] for f in frames} == {"hello all"}
    assert len({f["id"] for f in frames}) == 1
    assert frames[0]["nick"] == "alice" and frames[0]["room"] == "#general"
    assert "action" not in frames[0]


def test_messages_do_not_reach_other_rooms(chat_client: Connect) -> None:
    """A message in one room is not delivered to clients who are not in it."""
    alice, bob = chat_client("alice"), chat_client("bob")
    alice.say("/join #side")
    alice.expect("join", room="#side")
    alice.say("only here", room="#side")
    alice.expect("message", text="only here")
    assert not [f for f in bob.sync() if f["type"] == "message"]


def test_saying_in_a_room_you_are_not_in_is_refused(chat_client: Connect) -> None:
    """say to a room the client has not joined gives not_in_room."""
    alice = chat_client("alice")
    alice.say("hi", room="#elsewhere")
    assert alice.expect("error")["code"] == "not_in_room"


def test_ids_are_unique_and_increasing(chat_server_factory: Factory, chat_client: Connect) -> None:
    """Message ids grow in the order the room receives the messages."""
    alice = chat_client(chat_server_factory(disable=["flood"]), "alice")
    for i in range(50):
        alice.say(f"m{i}")
    ids = [alice.expect("message")["id"] for _ in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50


def test_id_clock_is_time_ordered() -> None:
    """Ids are milliseconds * 1000 plus a counter, and the ts matches the id."""
    clock = IdClock()
    first, ts = clock.next()
    second, _ = clock.next()
    assert second > first
    assert ts.endswith("Z") and len(ts) == len("2026-01-01T00:00:00.000Z")


def test_a_message_queued_before_a_ping_arrives_before_the_pong(chat_client: Connect) -> None:
    """Ordering promise: an event that reached the hub is queued before a later pong."""
    alice, bob = chat_client("alice"), chat_client("bob")
    alice.say("first")
    alice.expect("message", text="first")  # the hub has handled it
    frames = bob.sync()
    assert [f["text"] for f in frames if f["type"] == "message"] == ["first"]


def test_every_member_sees_the_same_order(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Messages from several senders reach every member in one order, the id order."""
    server = chat_server_factory(disable=["flood"])
    clients = [chat_client(server, f"user{i}") for i in range(4)]
    for round_ in range(25):
        for c in clients:
            c.say(f"{c.nick}-{round_}")
    seen = []
    for c in clients:
        seen.append([c.expect("message")["id"] for _ in range(100)])
    assert all(s == seen[0] for s in seen)
    assert seen[0] == sorted(seen[0])


def test_leave_is_announced_on_disconnect(chat_client: Connect) -> None:
    """Closing the socket announces a leave with a reason to the room."""
    alice, bob = chat_client("alice"), chat_client("bob")
    bob.close()
    leave = alice.expect("leave", nick="bob")
    assert leave["room"] == "#general"
    assert leave["reason"] == "connection closed"


def test_a_nick_is_free_again_after_its_owner_left(chat_client: Connect) -> None:
    """Logging out frees the nick."""
    alice, bob = chat_client("alice"), chat_client("bob")
    bob.close()
    alice.expect("leave", nick="bob")
    chat_client("bob")


def test_text_and_json_clients_talk_to_each_other(
    chat_client: Connect, text_client: Callable[..., TextClient]
) -> None:
    """nc users and JSON programs share rooms; each sees the other's lines in its mode."""
    alice = chat_client("alice")
    bob = text_client("bob")
    alice.expect("join", nick="bob")
    bob.send_line("hello from nc")
    assert alice.expect("message")["text"] == "hello from nc"
    alice.say("hi bob")
    assert bob.expect("<alice>") == "[#general] <alice> hi bob"


def test_announce_reaches_a_room(chat_server: Server, chat_client: Connect) -> None:
    """hub.announce sends a notice to a room's members (for plugins)."""
    alice = chat_client("alice")
    chat_server.hub.announce("maintenance at noon", room="#general")
    assert alice.expect("notice")["text"] == "maintenance at noon"
    chat_server.hub.announce("to everyone")
    assert alice.expect("notice")["text"] == "to everyone"


def test_deliver_to_sessions_reaches_them_renamed_since_not_logged_out(
    chat_server: Server, chat_client: Connect
) -> None:
    """A relay hands over the sessions it found (Hub.deliver(sessions=...)): one renamed
    after the look-up still gets the frame, as the nick it has now would not; one logged
    out gets nothing. (By nick, a rename in between lost a cluster's private message.)"""
    hub = chat_server.hub
    ben, carl = chat_client("ben"), chat_client("carl")
    found, gone = hub.find("ben"), hub.find("carl")
    assert found is not None and gone is not None
    ben.say("/nick rob")
    ben.expect("nick", new="rob")
    carl.close()
    wait_until(lambda: hub.find("carl") is None, 10, "carl's logout")
    frame = Frame("private", nick="ann", to="ben", text="by nick")
    hub.deliver([frame], nicks=["ben"])  # the nick found: nobody has it now
    hub.deliver([Frame("private", nick="ann", to="ben", text="by session")], sessions=[found, gone])
    got = [f["text"] for f in ben.sync() if f["type"] == "private"]
    assert got == ["by session"]


def test_deliver_to_rooms_goes_behind_their_lanes(
    chat_server_factory: Callable[..., Server], chat_client: Connect
) -> None:
    """A relay's frames for a room's members (rooms=: another node's member away,
    identified, renamed) go behind what the rooms' lanes hold: after that member's join
    posted before them, which waits there behind a message being stored (they came
    first, and a page then had an away from someone not yet in the room)."""
    store = HeldStore()
    server = chat_server_factory(plugins=[store], disable=["history"])
    alice, carol = chat_client(server, "alice"), chat_client(server, "carol")
    carol.say("storing...")
    wait_until(lambda: store.held, 5, "the message in its lane")
    hub = server.hub
    hub.deliver([Frame("join", room="#general", nick="zed", ts="t")], room="#general")
    hub.deliver([Frame("away", nick="zed", text="lunch")], rooms=["#general"])
    store.release()
    alice.expect("away", nick="zed")
    seen = [f["type"] for f in alice.received if f["type"] in ("message", "join", "away")]
    assert seen[-3:] == ["message", "join", "away"]


def test_name_rules() -> None:
    """Nick validation says what is allowed."""
    assert valid_nick("Zoë_1", 32) is None
    assert valid_nick("a b", 32) is not None
    assert valid_nick("한글", 32) is None
    assert valid_nick("NickServ", 32) is not None  # IRC clients send it passwords
    # ... nor one that looks like it (Cyrillic і, a digit 1 for an l): its NOTICEs
    # asking for passwords would pass for the service's.
    assert valid_nick("N\u0456ckServ", 32) is not None
    assert valid_nick("G1obal", 32) is not None
    assert valid_nick("NickServe", 32) is None


@pytest.mark.parametrize("blank", ["\u115f", "\u1160", "\u3164", "\uffa0"])
def test_a_letter_that_shows_as_nothing_is_no_part_of_a_name(blank: str) -> None:
    """The Hangul fillers are letters to str.isalnum but show as nothing: "boss" with
    one would pass for "boss". No nick or room name has them."""
    assert valid_nick(f"boss{blank}", 32) is not None
    assert valid_nick(f"{blank}boss", 32) is not None
    assert valid_room(f"#den{blank}", 50) is not None


def test_look_alike_nicks_are_taken(chat_client: Connect) -> None:
    """Beside alice_k and bob, names spelled with Cyrillic, Greek, fullwidth or
    mathematical letters, or a capital I for the l, that look the same are refused with
    nick_taken, saying why."""
    alice, bob = chat_client("alice_k"), chat_client("bob")
    for nick in ("аlice_k", "ａｌｉｃｅ_ｋ", "𝐚𝐥𝐢𝐜𝐞_𝐤", "aIice_k", "bοb", "BOB"):
        other = chat_client()
        other.send(type="hello", nick=nick)
        error = other.expect("error")
        assert error["code"] == "nick_taken", nick
        assert "alice_k" in error["text"] or "bob" in error["text"].lower()
    alice.say("/nick bοb")
    assert "looks like 'bob'" in alice.expect("error", code="nick_taken")["text"]
    bob.close()
    alice.expect("leave", nick="bob")
    alice.say("/nick bοb")  # free once bob has left
    assert alice.expect("nick")["new"] == "bοb"


def test_a_says_room_may_leave_out_its_hash(chat_client: Connect) -> None:
    """A say's room is taken as a hello's and /join's: its # may be left out, and an
    empty one is the current room; one it is not in is named with its #."""
    alice, bob = chat_client("alice"), chat_client("bob")
    alice.send(type="say", room="general", text="no hash")
    assert bob.expect("message", text="no hash")["room"] == "#general"
    alice.send(type="say", room="", text="empty")
    assert bob.expect("message", text="empty")["room"] == "#general"
    alice.send(type="say", room="dev", text="x")
    assert alice.expect("error", code="not_in_room")["text"].startswith("you are not in #dev;")


def test_fullwidth_nicks_are_shown_in_their_plain_form(chat_client: Connect) -> None:
    """A nick is kept in NFKC: fullwidth letters log in as plain ones."""
    carol = chat_client()
    assert carol.login("ｃａｒｏｌ")["nick"] == "carol"


def test_look_alike_rooms_are_refused(chat_client: Connect) -> None:
    """A new room that looks like one in use (or like the default room) is bad_room;
    a fullwidth name is the same room."""
    alice = chat_client("alice")
    alice.say("/join #ｇｅｎｅｒａｌ")  # (fullwidth: #general itself, which it is in)
    for room in ("#gеneral", "#generaI"):  # Cyrillic e; a capital I for the l
        alice.say(f"/join {room}")
        assert "looks like '#general'" in alice.expect("error", code="bad_room")["text"]
    alice.say("/join #ops")
    alice.expect("join", room="#ops")
    alice.say("/join #οps")  # Greek omicron
    assert "looks like '#ops'" in alice.expect("error", code="bad_room")["text"]
    alice.say("/part #ops")
    alice.expect("leave", room="#ops")
    alice.say("/join #οps")  # #ops is gone: the name is free
    alice.expect("join", room="#οps")
    # A login into a look-alike room: the welcome names no room, and says why.
    zed = chat_client()
    assert zed.login("zed", room="#gеneral")["rooms"] == []
    assert "looks like '#general'" in zed.expect("error", code="bad_room")["text"]


def test_a_pasted_message_reaches_text_and_json_members_whole(
    chat_client: Connect, text_client: Callable[..., TextClient]
) -> None:
    """A message of three lines arrives as one frame in JSON, and as three prefixed lines
    in text mode; a bidi override in it is replaced by default."""
    alice, bob = chat_client("alice"), chat_client("bob")
    nc = text_client("carol")
    alice.say("one\ntwo\n\u202ethree")
    assert bob.expect("message", nick="alice")["text"] == "one\ntwo\n\ufffdthree"
    nc.expect("[#general] <alice> one")
    nc.expect("[#general] <alice> two")
    nc.expect("[#general] <alice> \ufffdthree")


def test_an_nc_paste_of_fifteen_lines_is_delivered_whole(
    chat_server_factory: Factory, chat_client: Connect, text_client: Callable[..., TextClient]
) -> None:
    """Flood control on (the default): fifteen lines pasted at once from nc all arrive."""
    alice = chat_client("alice")
    nc = text_client("carol")
    nc.send_raw(b"".join(b"line %d\n" % i for i in range(15)))
    for i in range(15):
        assert alice.expect("message", nick="carol")["text"] == f"line {i}"


def test_quitting_shows_once_to_who_shared_several_rooms(
    chat_client: Connect, text_client: Callable[..., TextClient]
) -> None:
    """One who quits from several rooms is one leave (naming the shared rooms) per viewer."""
    alice, bob = chat_client("alice"), chat_client("bob")
    nc = text_client("carol")
    for client in (alice, bob):
        client.say("/join #dev")
        client.expect("join", room="#dev", nick=client.nick)
    nc.send_line("/join #dev")
    nc.expect("carol joined #dev")
    bob.say("/quit lunch")
    leave = alice.expect("leave", nick="bob")
    assert leave["rooms"] == ["#general", "#dev"] and leave["reason"] == "quit: lunch"
    assert [f for f in alice.sync() if f["type"] == "leave"] == []
    nc.expect("* bob left #general, #dev (quit: lunch)")


def test_a_client_is_in_at_most_max_rooms_rooms(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A /join beyond max_rooms is too_many_rooms; after a /part one more fits."""
    server = chat_server_factory(max_rooms=3)
    ann = chat_client(server, "ann")
    for room in ("#a", "#b"):
        ann.say(f"/join {room}")
        ann.expect("join", nick="ann", room=room)
    ann.say("/join #c")
    ann.expect("error", code="too_many_rooms", text_contains="/part one to join #c")
    ann.say("/join #a")  # one it is in already: made current, no error
    ann.say("/part #b")
    ann.say("/join #c")
    ann.expect("join", nick="ann", room="#c")


class _Picky:
    """Vetoes a line saying "veto", drops one saying "drop": two ways a message of a
    run is refused."""

    @hookimpl
    def chatkit_allow_input(self, client: Session, event: object) -> Reject | None:
        if isinstance(event, Say) and event.text == "veto":
            return Reject("vetoed", "vetoed")
        return None

    @hookimpl
    def chatkit_filter_message(self, client: Session, message: Message) -> Drop | None:
        return Drop("dropped") if message.text == "drop" else None


class _StoreOnly:
    """Refuses to store a message saying "unstored"; no veto or filter hook, so a burst
    is posted under one acquisition of the lock."""

    @hookimpl
    def chatkit_store_message(self, client: Session, message: Message) -> Drop | None:
        return Drop("unstored") if message.text == "unstored" else None


class _PickyStore(_Picky, _StoreOnly):
    """:class:`_Picky`, and refuses to store a message saying "unstored"."""


@pytest.mark.parametrize("stored", [False, True], ids=["unstored", "stored"])
def test_a_burst_answers_each_line_in_order_refusals_included(
    chat_server_factory: Factory, chat_client: Connect, stored: bool
) -> None:
    """A burst read at once goes through the hub as a run (``Hub.say_run``); a line
    refused in the middle of it (a veto, a filter, a room one is not in, a store's
    refusal) is answered in its place, and every other line is delivered, in order."""
    picky = _PickyStore() if stored else _Picky()
    server = chat_server_factory(plugins=[picky], disable=["flood"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    lines = ["one", "veto", "two", "drop", "three", ("#nowhere", "four"), "five", "unstored"]
    lines += ["six"]
    alice.send_raw(
        b"".join(
            json.dumps(
                {"type": "say", "text": line}
                if isinstance(line, str)
                else {"type": "say", "room": line[0], "text": line[1]}
            ).encode()
            + b"\n"
            for line in lines
        )
    )
    answers = [
        f["text"] if f["type"] == "message" else f["code"]
        for f in alice.sync()
        if f["type"] in ("message", "error")
    ]
    store = ["not_stored"] if stored else ["unstored"]
    expected = ["one", "vetoed", "two", "dropped", "three", "not_in_room", "five", *store, "six"]
    assert answers == expected
    heard = [f["text"] for f in bob.sync() if f["type"] == "message"]
    refusals = ("vetoed", "dropped", "not_in_room", "not_stored")
    assert heard == [answer for answer in expected if answer not in refusals]


class _Bouncer:
    """Takes its sender out of the room on "part me" (a filter), and disconnects it on
    "bye" (a veto): what a hook may do in the middle of a burst."""

    hub: Hub

    @hookimpl
    def chatkit_server_start(self, server: Server) -> None:
        self.hub = server.hub

    @hookimpl
    def chatkit_allow_input(self, client: Session, event: object) -> Reject | None:
        if isinstance(event, Say) and event.text == "bye":
            client.disconnect("bounced")
            return Reject("bounced", "bounced")
        return None

    @hookimpl
    def chatkit_filter_message(self, client: Session, message: Message) -> Drop | None:
        if message.text == "part me":
            self.hub.part(client, message.room or "", by="bouncer")
            return Drop("parted")
        return None


def test_a_hook_acting_on_the_sender_mid_burst_spares_the_lines_before(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """The messages of a burst before the one whose hook takes the sender out of the room
    are delivered (each was posted before the next one's hooks ran); those after it are
    refused. One whose veto disconnects the sender ends the burst: nothing after it is
    read."""
    server = chat_server_factory(plugins=[_Bouncer()], disable=["flood"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.send_raw(
        b"".join(
            b'{"type":"say","text":"%s"}\n' % t for t in (b"one", b"two", b"part me", b"three")
        )
    )
    answers = [
        f.get("code", f.get("text")) for f in alice.sync() if f["type"] in ("message", "error")
    ]
    assert answers == ["dropped", "not_in_room"]  # (out of the room: no copy of one, two)
    assert [f["text"] for f in bob.sync() if f["type"] == "message"] == ["one", "two"]
    carol = chat_client(server, "carol")
    carol.send_raw(
        b"".join(b'{"type":"say","text":"%s"}\n' % t for t in (b"one", b"bye", b"two", b"three"))
    )
    frames: list[dict[str, Any]] = []

    def carol_left() -> bool:
        frames.extend(bob.sync())
        return any(f["type"] == "leave" and f["nick"] == "carol" for f in frames)

    wait_until(carol_left, what="carol's leave")
    assert [f["text"] for f in frames if f["type"] == "message"] == ["one"]


class _Order:
    """Records the veto, filter and store hooks' calls, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def chatkit_allow_input(self, client: Session, event: object) -> None:
        if isinstance(event, Say):
            self.calls.append(f"allow {event.text}")

    @hookimpl
    def chatkit_filter_message(self, client: Session, message: Message) -> None:
        self.calls.append(f"filter {message.text}")

    @hookimpl
    def chatkit_store_message(self, client: Session, message: Message) -> None:
        self.calls.append(f"store {message.text}")


def test_a_burst_calls_each_messages_hooks_before_the_next_ones(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A burst's messages go through the veto, filter and store hooks one message after
    another, as lines sent one by one do."""
    order = _Order()
    server = chat_server_factory(plugins=[order], disable=["flood"])
    alice = chat_client(server, "alice")
    alice.send_raw(b'{"type":"say","text":"a"}\n{"type":"say","text":"b"}\n')
    assert [f["text"] for f in alice.sync() if f["type"] == "message"] == ["a", "b"]
    mine = [call for call in order.calls if call.split()[1] in ("a", "b")]
    assert mine == ["allow a", "filter a", "store a", "allow b", "filter b", "store b"]


@pytest.mark.parametrize("stored", [False, True], ids=["unstored", "stored"])
def test_a_burst_posted_at_once_answers_each_refusal_in_its_place(
    chat_server_factory: Factory, chat_client: Connect, stored: bool
) -> None:
    """With no veto or filter hook, a burst goes through under one acquisition of the
    lock; a line for a room one is not in, and one a store refuses, are still answered
    in their places, and the others are delivered in order."""
    plugins = [_StoreOnly()] if stored else []
    server = chat_server_factory(plugins=plugins, disable=["flood", "history"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    lines = [
        {"type": "say", "text": "one"},
        {"type": "say", "room": "#nowhere", "text": "lost"},
        {"type": "say", "text": "two"},
        {"type": "say", "text": "unstored"},
        {"type": "say", "text": "three"},
    ]
    alice.send_raw(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    answers = [
        f["text"] if f["type"] == "message" else f["code"]
        for f in alice.sync()
        if f["type"] in ("message", "error")
    ]
    unstored = "not_stored" if stored else "unstored"
    assert answers == ["one", "not_in_room", "two", unstored, "three"]
    heard = [f["text"] for f in bob.sync() if f["type"] == "message"]
    assert heard == (["one", "two", "three"] if stored else ["one", "two", "unstored", "three"])


class _Heard:
    """Records ``chatkit_on_message``'s calls: (room, text)."""

    def __init__(self) -> None:
        self.heard: list[tuple[str | None, str]] = []

    @hookimpl
    def chatkit_on_message(self, client: Session, message: Message) -> None:
        self.heard.append((message.room, message.text))


def test_a_burst_to_two_rooms_keeps_each_rooms_order_and_its_hooks_order(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """With nothing to store, a burst's messages are published to their rooms at once
    (nothing waits in their lanes): each room's members get them in order, and
    ``chatkit_on_message`` runs for each, in the order they were sent."""
    heard = _Heard()
    server = chat_server_factory(plugins=[heard], disable=["flood", "history"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    for client, nick in ((alice, "alice"), (bob, "bob")):
        client.say("/join #b")
        client.expect("join", nick=nick, room="#b")
    alice.sync()
    lines = [("#general" if i % 3 else "#b", f"m{i}") for i in range(12)]
    alice.send_raw(
        b"".join(
            json.dumps({"type": "say", "room": room, "text": text}).encode() + b"\n"
            for room, text in lines
        )
    )
    alice.sync()  # her burst is handled: bob's sync comes after it
    frames = bob.sync()
    for room in ("#general", "#b"):
        got = [f["text"] for f in frames if f["type"] == "message" and f["room"] == room]
        assert got == [text for where, text in lines if where == room]
    wait_until(lambda: len(heard.heard) >= len(lines), what="every on_message")
    assert heard.heard == lines


class _SlowReplay:
    """Holds carol's join (of ``room``, or of any) while it reads her replay, until
    released; her replay is then a notice saying "replayed"."""

    def __init__(self, room: str | None = None) -> None:
        self.room = room
        self.entered = threading.Event()
        self.release = threading.Event()

    @hookimpl
    def chatkit_room_replay(self, client: Session, room: str, last_id: int) -> list[Frame] | None:
        if client.nick != "carol" or self.room not in (None, room):
            return None
        self.entered.set()
        assert self.release.wait(10)
        return [Frame("notice", text="replayed")]


def test_a_burst_waits_behind_a_join_reading_its_replay(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A burst sent while a join waits in the room's lane for its replay is not
    published around it: everyone gets the join before the burst, and the joiner gets
    its replay, then every message of the burst, none missing, none twice."""
    slow = _SlowReplay()
    server = chat_server_factory(plugins=[slow], disable=["flood", "history"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    bob.sync()
    carol = chat_client(server)
    carol.send(type="hello", nick="carol")
    assert slow.entered.wait(10)
    before = server.hub.messages
    alice.send_raw(b"".join(b'{"type":"say","text":"m%d"}\n' % i for i in range(5)))
    wait_until(lambda: server.hub.messages == before + 5, what="the burst posted")
    slow.release.set()
    alice.sync()  # her burst is delivered: the others' syncs come after it
    burst = [f"m{i}" for i in range(5)]
    carol_saw = [
        f.get("text", f"join {f.get('nick')}")
        for f in carol.sync()
        if f["type"] in ("join", "notice", "message")
    ]
    assert carol_saw == ["join carol", "replayed", *burst]
    bob_saw = [
        f.get("text", f"join {f.get('nick')}")
        for f in bob.sync()
        if f["type"] in ("join", "message")
    ]
    assert bob_saw == ["join carol", *burst]


class _Answers:
    """A bot's ``chatkit_on_message``: "!ping" is answered with "pong!" in its room, and
    "!note" with "note" in #b, both said as the sender (``Hub.say``, not deferred)."""

    def __init__(self) -> None:
        self.hub: Hub | None = None
        self.heard: list[str] = []

    @hookimpl
    def chatkit_server_start(self, server: Server) -> None:
        self.hub = server.hub

    @hookimpl
    def chatkit_on_message(self, client: Session, message: Message) -> None:
        assert self.hub is not None
        self.heard.append(message.text)
        if message.text == "!ping":
            self.hub.say(client, message.room, "pong!")
        elif message.text == "!note":
            self.hub.say(client, "#b", "note")


@pytest.mark.parametrize(
    "lines",
    [
        [("#general", "!ping"), ("#b", "x"), ("#general", "y")],
        [("#general", "!note"), ("#b", "x")],
    ],
    ids=["reply-in-its-room", "say-in-the-waiting-room"],
)
def test_a_hook_saying_more_waits_for_the_rest_of_the_burst(
    chat_server_factory: Factory, chat_client: Connect, lines: list[tuple[str, str]]
) -> None:
    """A burst whose first message is published at once and whose later ones take lane
    entries (a join waits in #b): a ``chatkit_on_message`` hook that says more, behind
    those entries, runs once the reader has delivered them, so nothing waits forever;
    every message and answer arrives, each room's in order, and the hooks run in the
    order of the lines (the answer's own from within the hook that said it)."""
    slow, answers = _SlowReplay("#b"), _Answers()
    server = chat_server_factory(plugins=[slow, answers], disable=["flood", "history"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    for client, nick in ((alice, "alice"), (bob, "bob")):
        client.say("/join #b")
        client.expect("join", nick=nick, room="#b")
    carol = chat_client(server, "carol")
    carol.say("/join #b")
    assert slow.entered.wait(10)
    alice.sync()
    bob.sync()
    before = server.hub.messages
    alice.send_raw(
        b"".join(
            json.dumps({"type": "say", "room": room, "text": text}).encode() + b"\n"
            for room, text in lines
        )
    )
    wait_until(lambda: server.hub.messages >= before + len(lines), what="the burst posted")
    slow.release.set()
    alice.sync()  # her reader is not stuck
    frames = bob.sync()
    said = [text for _room, text in lines]
    answer = {"!ping": ("#general", "pong!"), "!note": ("#b", "note")}[said[0]]
    for room in ("#general", "#b"):
        got = [f["text"] for f in frames if f["type"] == "message" and f["room"] == room]
        mine = [text for where, text in lines if where == room]
        assert got == mine + ([answer[1]] if answer[0] == room else [])
    assert answers.heard == [said[0], answer[1], *said[1:]]  # (the answer's, from within)


class _Warner:
    """A filter that answers "warn" with "warning" in the room, said at once
    (``Hub.say``) by the sender or by another client, before letting it through."""

    def __init__(self, speaker: str) -> None:
        self.speaker = speaker
        self.hub: Hub | None = None

    @hookimpl
    def chatkit_server_start(self, server: Server) -> None:
        self.hub = server.hub

    @hookimpl
    def chatkit_filter_message(self, client: Session, message: Message) -> None:
        if message.text == "warn":
            assert self.hub is not None
            who = client if self.speaker == "sender" else self.hub.find(self.speaker)
            assert who is not None
            self.hub.say(who, message.room, "warning")


@pytest.mark.parametrize("speaker", ["sender", "bob"])
@pytest.mark.parametrize("history", [False, True], ids=["unstored", "stored"])
def test_a_filter_saying_into_the_room_mid_burst_does_not_wait_for_itself(
    chat_server_factory: Factory, chat_client: Connect, speaker: str, history: bool
) -> None:
    """A line that takes the general way (a ``\\u`` escape) leaves the reader a message
    to settle; a filter of the next line that says into that room waits for it to be
    delivered, which only this reader does: it settles it first, instead of waiting
    for itself forever. Everyone gets the three messages in order."""
    server = chat_server_factory(
        plugins=[_Warner(speaker)], disable=["flood"] if history else ["flood", "history"]
    )
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.sync()
    bob.sync()
    alice.send_raw(b'{"type":"say","text":"\\u0078"}\n{"type":"say","text":"warn"}\n')
    alice.sync()
    heard = [(f["nick"], f["text"]) for f in bob.sync() if f["type"] == "message"]
    warner = "alice" if speaker == "sender" else "bob"
    assert heard == [("alice", "x"), (warner, "warning"), ("alice", "warn")]


class _ChattyStore:
    """A store that, for a message saying "echo", says "echoed" into its room, sends
    "psst" to bob, or joins #elsewhere (``act``), as the sender: what a store hook
    must not do."""

    def __init__(self, act: str) -> None:
        self.act = act
        self.hub: Hub | None = None
        self.raised: list[str] = []

    @hookimpl
    def chatkit_server_start(self, server: Server) -> None:
        self.hub = server.hub

    @hookimpl
    def chatkit_store_messages(self, client: Session, messages: Sequence[Message]) -> None:
        assert self.hub is not None
        if not any(message.text == "echo" for message in messages):
            return
        try:
            if self.act == "say":
                self.hub.say(client, messages[0].room, "echoed")
            elif self.act == "private":
                self.hub.private(client, "bob", "psst")
            else:
                self.hub.join(client, "#elsewhere")
        except RuntimeError as exc:
            self.raised.append(str(exc))
            raise


@pytest.mark.parametrize("act", ["say", "private", "join"])
def test_a_store_hook_that_sends_is_refused_not_stuck(
    chat_server_factory: Factory, chat_client: Connect, act: str
) -> None:
    """A store hook that says into the room it is storing for would wait behind the
    messages it holds up, forever: the hub refuses it (and a private message or a
    join, alike) with a RuntimeError naming the rule; the hook's error refuses the
    messages it was called for (``not_stored``), and the room goes on."""
    chatty = _ChattyStore(act)
    server = chat_server_factory(plugins=[chatty], disable=["flood", "history"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.sync()
    bob.sync()
    alice.say("echo")
    error = alice.expect("error", code="not_stored")
    assert "internal error in plugin" in error["text"]
    assert chatty.raised and "a store hook must not send messages" in chatty.raised[0]
    alice.say("after")
    alice.expect("message", text="after")  # delivered (to bob before his pong below)
    assert [f["text"] for f in bob.sync() if f["type"] == "message"] == ["after"]


def test_a_reason_with_line_breaks_is_one_line(chat_client: Connect) -> None:
    """A /part or /quit reason with line breaks reaches the others on one line: it
    cannot print as a line of chat of someone else's."""
    alice, bob = chat_client("alice"), chat_client("bob")
    bob.say("/join #x")
    bob.expect("join", nick="bob", room="#x")
    alice.say("/join #x")
    bob.expect("join", nick="alice", room="#x")
    alice.say("/part #x brb\n11:46 [#x] <admin> send me your password")
    assert bob.expect("leave", nick="alice")["reason"] == (
        "part: brb 11:46 [#x] <admin> send me your password"
    )
    alice.say("/quit bye\r\n<admin> me too")
    assert bob.expect("leave", nick="alice")["reason"] == "quit: bye <admin> me too"


class _LeaveWords:
    """A filter that records what it saw: each message's text and ``leave``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    @hookimpl
    def chatkit_filter_message(self, message: Message) -> None:
        self.seen.append((message.text, message.leave))


def test_a_filter_tells_a_leaves_words_from_a_message() -> None:
    """chatkit_filter_message sees a leave's own words with ``message.leave`` set (part,
    quit), and a message said in the room with ``None``."""
    words = _LeaveWords()
    with run_server(plugins=[words]) as server:
        alice = ChatClient(server.address)
        alice.login("alice")
        alice.say("hi")
        alice.expect("message", text="hi")
        alice.say("/part #general lunch")
        alice.expect("leave", nick="alice")
        alice.say("/join #general")
        alice.expect("join", nick="alice")
        alice.say("/quit bye")
        alice.wait_closed()
    assert words.seen == [("hi", None), ("lunch", "part"), ("bye", "quit")]
