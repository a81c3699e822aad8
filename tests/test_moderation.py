"""The moderation plugin through real servers and real SQLite files."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import fill_queues, not_reading

from chatkit import CommandContext, Register, Reject, Say, Server, Session, UsageError, hookimpl
from chatkit.builtins.moderation import CACHE_ENTRIES, Moderation, ModerationStore, matches_who
from chatkit.builtins.moderation.store import APPLICATION_ID, SCHEMA
from chatkit.config import config_from_dict
from chatkit.hub import utc_now
from chatkit.testing import ChatClient, make_config, wait_until

Connect = Callable[..., ChatClient]
Factory = Callable[..., Server]


def moderated(**settings: Any) -> Any:
    return config_from_dict(
        {"server": {"plugins": ["moderation"]}, "plugins": {"moderation": settings}}
    )


def in_den(server: Server, chat_client: Connect) -> tuple[ChatClient, ChatClient]:
    """ann, the operator of #den (its first member), and bob, a member."""
    ann = chat_client(server, "ann")
    ann.say("/join #den")
    ann.expect("notice", text="you are an operator of #den")
    bob = chat_client(server, "bob")
    bob.say("/join #den")
    bob.expect("join", nick="bob", room="#den")
    return ann, bob


def muted_in_den(server: Server, chat_client: Connect) -> tuple[ChatClient, ChatClient]:
    """ann, the operator of #den (its first member), and bob, a member she muted."""
    ann, bob = in_den(server, chat_client)
    ann.say("/mute bob")
    ann.expect("notice", text="ann muted bob!*@*")
    return ann, bob


def test_the_first_to_join_is_an_operator_and_kicks(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """The first to join a room is its operator: /kick removes a member, announced;
    a member who is not an operator gets not_room_operator."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann = chat_client(server, "ann")
    ann.expect("notice", text="you are an operator of #general")
    bob = chat_client(server, "bob")
    bob.say("/kick ann")
    bob.expect("error", code="not_room_operator")
    ann.say("/kick bob spamming")
    frame = bob.expect("leave", nick="bob", room="#general")
    assert frame["reason"] == "kicked by ann: spamming"
    ann.expect("notice", text="ann kicked bob: spamming")
    assert server.hub.who("#general") == ["ann"]
    # A reason is one line, in the notice as in the leave: a line break would print
    # as a line of chat someone else said.
    carl = chat_client(server, "carl")
    ann.say("/kick #general carl bad\n* ann is now known as x")
    assert (
        carl.expect("leave", nick="carl")["reason"] == "kicked by ann: bad * ann is now known as x"
    )
    ann.expect("notice", text="ann kicked carl: bad * ann is now known as x")


def test_rooms_a_guest_operated_are_forgotten_once_emptied(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A guest (no account) first in a room is its operator for as long as the room
    lives; the rooms it created and left, emptied since, are not kept for it (a client
    creating and leaving rooms again and again made its list, walked by every operator
    check of every room it was in, grow without end)."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann = chat_client(server, "ann")
    bob = chat_client(server, "bob")
    bob.say("/join #kept")
    bob.expect("notice", text="you are an operator of #kept")
    ann.say("/join #kept")
    ann.expect("join", nick="ann", room="#kept")
    bob.say("/part #kept")
    ann.expect("leave", nick="bob", room="#kept")
    for i in range(30):
        bob.say(f"/join #gone{i}")
        bob.expect("notice", text=f"you are an operator of #gone{i}")
        bob.say(f"/part #gone{i}")
        bob.expect("leave", nick="bob", room=f"#gone{i}")
    session = server.hub.find("bob")
    assert session is not None
    assert set(session.data["moderation"]) == {"#kept", "#gone29"}
    bob.say("/join #kept")  # still its operator: the room lived on
    bob.expect("join", nick="bob", room="#kept")
    bob.say("/kick #kept ann")
    ann.expect("leave", nick="ann", room="#kept")


def test_two_threads_making_one_guest_an_operator_both_hold(
    chat_server_factory: Factory, chat_client: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its own join as a room's first member and another operator's /op elsewhere, at
    once, each prune the guest's emptied rooms: both grants hold, and neither fails
    (a dict changed under another thread's loop lost one, or raised)."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    chat_client(server, "ann")
    chat_client(server, "bob")
    session = server.hub.find("bob")
    plugin = server.pluginmanager.get_plugin("moderation")
    assert session is not None and isinstance(plugin, Moderation)
    session.data["moderation"] = {"#gone": 123.0}  # a room it operated, emptied since
    real = server.hub.created
    # (Fixed, the lock keeps the second out until the first is done: its wait breaks
    # after half a second, and it goes on.)
    both = threading.Barrier(2, timeout=0.5)

    def created(room: str) -> float | None:  # both have read #gone before either writes
        if room == "#gone" and threading.current_thread().name.startswith("race"):
            with contextlib.suppress(threading.BrokenBarrierError):
                both.wait()
        return real(room)

    monkeypatch.setattr(server.hub, "created", created)
    errors: list[str] = []

    def run(room: str) -> None:
        try:
            plugin._make_connection_operator(session, room)
        except Exception as exc:
            errors.append(repr(exc))

    threads = [
        threading.Thread(target=run, args=(room,), name=f"race{room}")
        for room in ("#general", "#other")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(session.data["moderation"]) == {"#general", "#other"}


def test_an_away_message_is_not_told_where_its_sender_is_muted(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Away text is words said to the rooms one is in: a room where its sender is
    muted is not told of it (a muted spammer's /away reached everyone there); a room
    it may speak in is."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann, bob = muted_in_den(server, chat_client)
    carl = chat_client(server, "carl")
    carl.say("/join #den")
    carl.expect("join", nick="carl", room="#den")
    carl.say("/part #general")
    bob.expect("leave", nick="carl", room="#general")
    bob.say("/away BUY CHEAP STUFF")
    bob.expect("reply", command="away")
    assert ann.expect("away", nick="bob")["text"] == "BUY CHEAP STUFF"  # (#general)
    assert not [f for f in carl.sync() if f["type"] == "away"]
    # Nor by a part and a join again: the join, which carries it, leaves it out.
    bob.say("/part #den")
    carl.expect("leave", nick="bob", room="#den")
    bob.say("/join #den")
    assert "away" not in carl.expect("join", nick="bob", room="#den")
    ann.say("/unmute bob")
    ann.expect("notice", text="ann unmuted bob!*@*")
    bob.say("/away")
    assert carl.expect("away", nick="bob").get("text") is None


def test_ban_and_mute(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A banned nick cannot join (banned); a muted one cannot speak (muted); both lift."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann = chat_client(server, "ann")
    ann.say("/join #den")
    ann.expect("notice", text="you are an operator of #den")
    bob = chat_client(server, "bob")
    before = utc_now()
    ann.say("/ban bob")
    ann.expect("notice", text="ann banned bob!*@*")
    ann.say("/ban BOB")  # nothing changes: nobody is told again
    assert ann.expect("reply", command="ban")["text"] == "bob!*@* is banned in #den already"
    bob.say("/join #den")
    bob.expect("error", code="banned")
    # A modes request names who set each mask, and when (IRC's 367 shows the same).
    bob.send(type="modes", room="#den")
    modes = bob.expect("modes")
    assert modes["bans"] == ["bob!*@*"] and set(modes["set_by"]) == {"bans"}
    setter = modes["set_by"]["bans"]["bob!*@*"]
    assert setter["nick"] == "ann" and before <= setter["ts"] <= utc_now()
    ann.say("/unban bob")
    ann.expect("notice", text="ann unbanned bob!*@*")
    bob.send(type="modes", room="#den")
    assert bob.expect("modes")["set_by"] == {}
    bob.say("/join #den")
    bob.expect("join", nick="bob", room="#den")
    ann.say("/mute bob")
    ann.expect("notice", text="ann muted bob!*@*")
    bob.say("hello?")
    bob.expect("error", code="muted")
    bob.say("/me shouts anyway")  # an action is speaking too
    bob.expect("error", code="muted")
    ann.say("/moderated on")
    ann.expect("notice", text_contains="moderated")
    ann.say("/unmute bob")
    ann.expect("notice", text_contains="unmuted")
    bob.say("/ME shouts")
    bob.expect("error", code="moderated")
    ann.say("/moderated off")
    ann.expect("notice", text_contains="moderated")
    ann.say("/mute bob")
    ann.expect("notice", text="ann muted bob!*@*")
    ann.say("/unmute bob")
    ann.expect("notice", text_contains="unmuted")
    bob.say("hello!")
    assert ann.expect("message", nick="bob")["text"] == "hello!"


def test_a_room_keeps_at_most_max_masks_bans_and_mutes(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Past max_masks bans (and, apart, mutes) a room refuses one more
    (too_many_masks); a mask longer than any client's is bad usage."""
    server = chat_server_factory(config=moderated(max_masks=2), disable=["flood"])
    ann = chat_client(server, "ann")
    for mask in ("b1", "b2"):
        ann.say(f"/ban {mask}")
        ann.expect("notice", text=f"ann banned {mask}!*@*")
    ann.say("/ban b3")
    ann.expect("error", code="too_many_masks")
    ann.say("/mute m1")
    ann.expect("notice", text="ann muted m1!*@*")
    ann.say("/unban b1")
    ann.expect("notice", text="ann unbanned b1!*@*")
    ann.say("/ban b3")
    ann.expect("notice", text="ann banned b3!*@*")
    ann.say("/ban " + "x" * 200)
    ann.expect("error", code="bad_usage", text_contains="at most 111 characters")


def test_a_mask_that_matches_everyone_is_refused(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A ban, a mute or a server ban of a mask matching everyone is bad usage, saying what
    to name instead: *!*@* and the host ban an IRC client builds (*!*@chatkit: every
    user shows at that host); a server ban matching its setter is refused too."""
    server = chat_server_factory(config=moderated(server_operators=["root"]), disable=["flood"])
    root = chat_client(server, "root")
    root.command("/register sesame-seed")
    bob = chat_client(server, "bob")
    for command in ("/ban", "/mute", "/gline"):
        for mask in ("*", "*!*@*", "*!*@chatkit", "*@*", "?*!*"):
            root.say(f"{command} {mask}")
            error = root.expect("error", code="bad_usage")
            assert "matches everyone" in error["text"] and "*!bob@*" in error["text"]
    root.say("/gline ro*")
    assert (
        root.expect("error", code="bad_usage")["text"]
        == "ro*!*@* matches you: you could not log in again"
    )
    root.say("/ban *!*@203.0.113.*")  # an address range: not everyone
    root.expect("notice", text="root banned *!*@203.0.113.*")
    bob.say("hello")  # bob is still there
    assert root.expect("message", nick="bob")["text"] == "hello"
    root.say("/gline")
    assert root.expect("reply", command="gline")["text"] == "server bans: none"


def test_the_cache_of_rooms_asked_about_is_bounded(tmp_path: Path) -> None:
    """Any client may ask about any room's modes (before login too); the store's cache
    of what it read stays within CACHE_ENTRIES, and still answers right."""
    store = ModerationStore(tmp_path / "m.sqlite3")
    store.add("bans", "#kept", "x!*@*")
    for i in range(CACHE_ENTRIES * 2):
        assert store.rows("mutes", f"#r{i}") == []
        assert len(store._cache) <= CACHE_ENTRIES
    assert store.rows("bans", "#kept") == ["x!*@*"]
    store.close()


def test_op_and_deop(chat_server_factory: Factory, chat_client: Connect) -> None:
    """/op makes another member an operator (not a client outside the room); /deop
    takes it back."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann = chat_client(server, "ann")
    ann.expect("notice", text="you are an operator of #general")  # before bob joins
    bob = chat_client(server, "bob")
    carol = chat_client(server, "carol")
    ann.say("/op bob")
    ann.expect("notice", text="ann made bob an operator")
    bob.say("/mute carol")
    bob.expect("notice", text="bob muted carol!*@*")
    ann.say("/deop bob")
    ann.expect("notice", text_contains="removed bob")
    ann.say("/deop bob")  # nothing changes: nobody is told again
    assert ann.expect("reply", command="deop")["text"] == "bob is not an operator of #general"
    bob.say("/unmute carol")
    bob.expect("error", code="not_room_operator")
    carol.say("quiet")
    carol.expect("error", code="muted")
    bob.say("/join #side")
    bob.expect("join", room="#side", nick="bob")
    bob.say("/op #side carol")  # not in #side: a typo would make someone an operator
    assert bob.expect("error", code="not_in_room")["text"] == "carol is not in #side"


def test_identified_operators_and_bans_survive_a_restart(tmp_path: Path) -> None:
    """An identified operator stays one, and bans, mutes and room settings stay, after
    a restart."""
    config = moderated()
    config.plugin_config["history"] = {"db": str(tmp_path / "h.sqlite3")}
    with Server(config=make_config(config)) as first, ChatClient(first.address) as ann:
        ann.login("ann")
        ann.command("/register sesame-seed")
        ann.say("/join #den")
        ann.expect("notice", text="you are an operator of #den")
        ann.say("/ban *!*@127.0.0.2")
        ann.expect("notice", text_contains="banned")
        ann.say("/mute mallory")
        ann.expect("notice", text_contains="muted")
        ann.say("/join #vault")
        ann.expect("notice", text="you are an operator of #vault")
        ann.say("/inviteonly on")
        ann.expect("notice", text="ann made the room invite-only")
    assert (tmp_path / "h.moderation.sqlite3").exists()
    with Server(config=make_config(config)) as second:
        with ChatClient(second.address) as bob:
            bob.login("bob")
            bob.say("/join #den")
            bob.expect("join", nick="bob", room="#den")
            notices = [f["text"] for f in bob.sync() if f["type"] == "notice"]
            assert "you are an operator of #den" not in notices  # ann is, from before
            bob.say("/join #vault")  # still invite-only
            bob.expect("error", code="invite_only")
        with ChatClient(second.address) as mallory:
            mallory.login("mallory")
            mallory.say("/join #den")
            mallory.expect("join", nick="mallory", room="#den")
            mallory.say("hello?")  # still muted
            mallory.expect("error", code="muted")
        # ann back, the first into #vault: told it is its operator (IRC: MODE +o), as
        # one joining a room with members is (its names list, sent first, had no @).
        with ChatClient(second.address) as ann:
            ann.login("ann", password="sesame-seed")
            ann.say("/join #vault")
            ann.expect("join", nick="ann", room="#vault")
            assert ann.expect("notice", mode="+o")["arg"] == "ann"
        # ann identifying in #den, where it is a member already: the room is told.
        with ChatClient(second.address) as guest, ChatClient(second.address) as bob:
            bob.login("bob")
            bob.say("/join #den")
            bob.expect("join", nick="bob", room="#den")
            guest.login("guest")
            guest.say("/join #den")
            guest.expect("join", nick="guest", room="#den")
            guest.say("/identify ann sesame-seed")
            assert bob.expect("notice", mode="+o", room="#den")["arg"] == "ann"
        plugin = second.pluginmanager.get_plugin("moderation")
        assert isinstance(plugin, Moderation)
        assert plugin._store.rows("ops", "#den") == ["ann"]
        assert plugin._store.rows("bans", "#den") == ["*!*@127.0.0.2"]
        assert plugin._store.rows("mutes", "#den") == ["mallory!*@*"]


def test_operators_nobody_registered_are_named_at_start(
    chat_server_factory: Factory, chat_client: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """The accounts of operators and server_operators that are not registered are
    logged as the server starts: whoever registered one first would get its rights."""
    config = moderated(server_operators=["root"], operators={"#ops": ["ann", "bob"]})
    with caplog.at_level("WARNING", logger="chatkit.builtins.moderation"):
        server = chat_server_factory(config=config)
    warned = [r.getMessage() for r in caplog.records if "not registered" in r.getMessage()]
    assert warned and warned[0].startswith("moderation: ann, bob, root, named in")
    # The default room, which everyone joins, has none: its first member would be one.
    assert "moderation: #general, where everyone lands, has no operators" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="chatkit.builtins.moderation"):
        chat_server_factory(config=moderated(operators={"#general": ["ann"]}))
    assert "where everyone lands" not in caplog.text
    ann = chat_client(server, "ann")
    ann.command("/register long-enough-password")
    caplog.clear()
    plugin = server.pluginmanager.get_plugin("moderation")
    assert isinstance(plugin, Moderation)
    with caplog.at_level("WARNING", logger="chatkit.builtins.moderation"):
        plugin._warn_unregistered(server)
    assert "moderation: bob, root, named in" in caplog.text


def test_operators_rooms_and_accounts_are_checked(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A room of operators may leave out its # (as default_room); a bad room or an
    account no nick could be is a startup error naming it."""
    server = chat_server_factory(config=moderated(operators={"ops": ["cat"]}))
    cat = chat_client(server, "cat")
    cat.command("/register sesame-seed")
    cat.say("/join #ops")
    cat.expect("join", nick="cat", room="#ops")
    cat.say("/topicops on")
    cat.expect("notice", text_contains="topic")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"operators": {"no such": ["cat"]}}, "operators names a bad room 'no such'"),
        ({"server_operators": ["bad nick!"]}, "'bad nick!' is no account's name"),
    ]
    for settings, said in cases:
        with pytest.raises(UsageError, match=said):
            chat_server_factory(config=moderated(**settings))


def test_server_operators_kill_and_wall(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A server operator (an account in server_operators) may /wall and /kill; others
    get not_server_operator."""
    server = chat_server_factory(config=moderated(server_operators=["root"]), disable=["flood"])
    root, bob = chat_client(server, "root"), chat_client(server, "bob")
    root.command("/register sesame-seed")
    bob.say("/wall hi")
    bob.expect("error", code="not_server_operator")
    root.say("/wall maintenance at noon")
    bob.expect("notice", text="[root to everyone] maintenance at noon")
    root.say("/kill bob enough")
    bob.expect("notice", text="killed by root: enough")
    bob.wait_closed()
    root.expect("leave", nick="bob")


def test_deop_of_a_server_operator_is_refused_not_announced(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """/deop cannot take a server operator's rights (or a room's operator from the
    config): refused, saying why, with no -o announced (IRC clients showed them without
    @ while they went on setting modes)."""
    config = moderated(server_operators=["root"], operators={"#general": ["ops"]})
    server = chat_server_factory(config=config, disable=["flood"])
    root, ops = chat_client(server, "root"), chat_client(server, "ops")
    for who in (root, ops):
        who.command("/register sesame-seed")
    chat_client(server, "ann")  # (muted below)
    ops.say("/deop root")
    error = ops.expect("error", code="bad_usage")
    assert error["text"] == "root is a server operator: /deop cannot change that"
    root.say("/deop ops")
    error = root.expect("error", code="bad_usage")
    assert error["text"] == (
        "ops is an operator of #general in the server's config: /deop cannot change that"
    )
    root.say("/mute ann")  # both still operators of #general
    root.expect("notice", text="root muted ann!*@*")
    ops.say("/unmute ann")
    ops.expect("notice", text="ops unmuted ann!*@*")
    assert not [f for f in root.sync() if f.get("mode") == "-o"]


def test_a_first_member_who_registers_afterwards_keeps_the_room(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """The first member of a room, not identified, is its operator for that connection;
    once it registers (or identifies), the account is, so it is one again when it comes
    back (it lost the room at its next reconnection or restart, to whoever was there)."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann, bob = in_den(server, chat_client)
    ann.command("/register sesame-seed")
    ann.close()
    bob.expect("leave", nick="ann")
    again = ChatClient(server.address)
    again.login("ann", password="sesame-seed")
    again.say("/join #den")
    again.expect("join", room="#den", nick="ann")
    bob.expect("notice", text="ann is an operator of #den")
    again.say("/mute #den bob")
    again.expect("notice", text="ann muted bob!*@*")
    again.close()


def test_an_operator_no_longer_identified_is_announced_as_no_longer_one(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """An operator by its account that stops being the account (/logout, /drop) is
    announced as no longer one (IRC: MODE -o), so names lists stop showing it; one that
    was not an operator is not announced."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    first, bob = in_den(server, chat_client)
    first.command("/register sesame-seed")
    first.close()
    bob.expect("leave", nick="ann")
    ann = chat_client(server)
    ann.login("ann", password="sesame-seed")  # an operator of #den by its account only
    ann.say("/join #den")
    bob.expect("notice", text="ann is an operator of #den")
    ann.say("/logout")
    ann.expect("reply", command="logout")
    frame = bob.expect("notice", text="ann is no longer an operator of #den")
    assert (frame["mode"], frame["arg"], frame["room"]) == ("-o", "ann", "#den")
    ann.say("/identify sesame-seed")
    ann.expect("reply", command="identify")
    bob.expect("notice", text="ann is an operator of #den")
    ann.say("/drop sesame-seed")
    ann.expect("reply", command="drop")
    bob.expect("notice", text="ann is no longer an operator of #den")
    bob.command("/register bobs-password")  # not an operator: nothing to announce
    bob.say("/logout")
    bob.expect("reply", command="logout")
    bob.sync()  # (its command's hooks, a -o among them, ran before this answer)
    assert not [f for f in ann.sync() if f.get("mode") == "-o"]


def test_a_reload_that_names_or_unnames_operators_is_announced(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A reload whose ``operators`` or ``server_operators`` make an identified member
    an operator of a room it is in, or no longer one, tells the room (IRC: MODE +o,
    -o), so names lists agree; members whose rights did not change are not announced."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann, bob = in_den(server, chat_client)  # ann: #den's first member, its operator
    carl = chat_client(server, "carl")
    carl.command("/register carls-password")
    carl.say("/join #den")
    bob.expect("join", nick="carl", room="#den")
    server.reload(moderated(operators={"#den": ["carl"]}))
    frame = bob.expect("notice", text="carl is an operator of #den")
    assert (frame["mode"], frame["arg"], frame["room"]) == ("+o", "carl", "#den")
    server.reload(moderated(operators={"#den": ["carl"]}, server_operators=["carl"]))
    server.reload(moderated(server_operators=["carl"]))  # still one: as a server operator
    server.reload(moderated())
    bob.expect("notice", text="carl is no longer an operator of #den")
    modes = [(f["room"], f["mode"]) for f in carl.sync() if f.get("mode")]
    # In #den: named, then not (a server operator meanwhile: no change); in #general,
    # a server operator for two reloads. Nobody else's rights changed: not announced.
    assert [m for room, m in modes if room == "#den"] == ["+o", "-o"], modes
    assert [m for room, m in modes if room == "#general"] == ["+o", "-o"], modes
    assert not [f for f in ann.sync() if f.get("mode") and f.get("arg") != "carl"]


def test_a_muted_member_leaves_without_its_words(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A muted member's part or quit reason is words said in the room: the room sees
    the leave without them (part, quit), while one where it may speak sees them."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann, bob = muted_in_den(server, chat_client)
    bob.say("/part #den BUY CHEAP STUFF")
    frame = ann.expect("leave", nick="bob", room="#den")
    assert frame["reason"] == "part"
    bob.say("/join #den")
    ann.expect("join", nick="bob")
    carol = chat_client(server, "carol")  # in #general, where bob may speak
    bob.say("/quit BUY CHEAP STUFF")
    # ann shares #den with bob: one leave for both rooms, without the words; carol,
    # who shares only #general, sees them.
    assert ann.expect("leave", nick="bob")["reason"] == "quit"
    assert carol.expect("leave", nick="bob")["reason"] == "quit: BUY CHEAP STUFF"


def test_irc_kick_ban_and_mute_numerics() -> None:
    """On IRC, KICK #room nick :reason kicks (the kicked client sees KICK); a non-operator's gets 482; joining a room
    that bans you is 474; speaking where you are muted or banned is 404, and a NICK
    then 435."""
    from test_irc_face import SERVER, IrcClient

    from chatkit.faces.irc import IrcFace
    from chatkit.faces.line import LineFace

    config = make_config(moderated())
    config.disable = ["flood"]
    server = Server(
        config=config, faces=[LineFace(), IrcFace(port=0, server_name=SERVER, network="T")]
    )
    with server, ChatClient(server.address) as ann, IrcClient(server.addresses["irc"]) as bob:
        ann.login("ann")
        ann.expect("notice", text="you are an operator of #general")  # before bob joins
        bob.register("bob")
        bob.send("KICK #general ann :no")
        assert "482" in bob.expect(" 482 ")
        ann.say("/join #other")
        ann.expect("join", room="#other", nick="ann")
        bob.send("KICK #nosuch ann", "KICK #other ann", "INVITE")
        bob.expect(f":{SERVER} 403 bob #nosuch :")  # no such room
        bob.expect(f":{SERVER} 442 bob #other :")  # not in it
        bob.expect(f":{SERVER} 461 bob INVITE :")
        ann.say("/join #general")  # back to #general for the lines without a room
        ann.expect("reply", command="join")
        ann.say("/mute #general bob")
        ann.expect("notice", text_contains="muted bob")
        bob.send("PRIVMSG #general :hello?")
        bob.expect(" 404 ")
        bob.send("PRIVMSG ann :may I?")  # a room's mute is no bar to a private message
        assert ann.expect("private", text="may I?")["from"] == "bob"
        bob.send("NICK bobby")  # a new nick is no way out of a mute
        line = bob.expect(" 435 ")
        # <new nick> <room> :why, as solanum and Hybrid send it
        assert line.endswith(
            "435 bob bobby #general :you cannot change your nick while muted in #general"
        )
        bob.send("NICK bob")  # the nick it has: no change, nothing to refuse
        assert not [line for line in bob.sync() if " 435 " in line]
        ann.say("/kick bob go away")
        bob.expect(":ann!ann@chatkit KICK #general bob :go away")
        ann.say("/ban bob")
        ann.expect("notice", text_contains="banned")
        bob.send("JOIN #general")
        bob.expect(" 474 ")
        # A ban silences a member too (404), and IRC's NICK!USER and USER@HOST masks
        # are completed as servers complete them.
        ann.say("/unban bob")
        ann.expect("notice", text_contains="unbanned")
        bob.send("JOIN #general")
        bob.expect(":bob!bob@chatkit JOIN #general")
        ann.say("/unmute bob")
        ann.expect("notice", text_contains="unmuted")
        ann.say("/ban bob!bob")
        assert ann.expect("notice", text_contains="banned")["text"] == "ann banned bob!bob@*"
        bob.send("PRIVMSG #general :still here?")
        bob.expect(f":{SERVER} 404 bob #general :you are banned from #general")
        ann.say("/unban bob!bob@*")
        ann.expect("notice", text_contains="unbanned")
        ann.say("/ban bob@chatkit")
        assert ann.expect("notice", text_contains="banned")["text"] == "ann banned *!bob@chatkit"
        bob.send("PRIVMSG #general :and now?")
        bob.expect(" 404 ")


def test_who_may_invite(chat_server_factory: Factory, chat_client: Connect) -> None:
    """Any member invites to an open room (a notice to the invitee, no announcement);
    someone not in the room gets not_in_room; to an invite-only room, only operators
    invite (not_room_operator), and the room hears of it."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann = chat_client(server, "ann")
    ann.say("/join #den")
    ann.expect("notice", text="you are an operator of #den")
    bob, carol = chat_client(server, "bob"), chat_client(server, "carol")
    bob.say("/join #den")
    bob.expect("join", nick="bob", room="#den")
    bob.say("/invite carol")
    carol.expect("notice", text="bob invites you to #den: /join #den")
    bob.expect("reply", command="invite", text="invited carol to #den")
    carol.say("/invite ann #den")
    assert carol.expect("error", code="not_in_room")["text"] == "you are not in #den"
    ann.say("/inviteonly on")
    bob.expect("notice", text="ann made the room invite-only")
    bob.say("/invite carol")
    bob.expect("error", code="not_room_operator")
    ann.say("/invite carol")
    carol.expect("notice", text="ann invites you to #den: /join #den")
    bob.expect("notice", text="ann invited carol")  # the room hears of this one only
    carol.say("/join #den")
    carol.expect("join", nick="carol", room="#den")


def test_a_new_nick_does_not_slip_out_of_a_ban_or_mute(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """While muted or banned in one of its rooms a client keeps its nick (as IRC's 435),
    and a look-alike nick (a Greek omicron for o) is held to the same masks."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann, bob = muted_in_den(server, chat_client)
    bob.say("/nick bobby")
    error = bob.expect("error", code="muted")
    assert error["text"] == "you cannot change your nick while muted in #den"
    ann.say("/unmute bob")
    ann.expect("notice", text_contains="unmuted")
    bob.say("/nick bobby")
    bob.expect("nick", new="bobby")
    ann.say("/ban bobby")
    ann.expect("notice", text="ann banned bobby!*@*")
    ann.say("/mute b\u03bfbby")  # a look-alike mask holds for the Latin nick too
    ann.expect("notice", text_contains="muted")
    bob.say("still here", room="#den")
    bob.expect("error", code="muted")
    ann.say("/kick bobby")
    bob.expect("leave", nick="bobby", room="#den")
    bob.say("/nick b\u03bfbby")  # not in #den now: free to rename
    bob.expect("nick", new="b\u03bfbby")
    bob.say("/join #den")
    bob.expect("error", code="banned")
    ann.say("/ban [n-r]*")  # a range keeps its letters (rn looks like m, but m is no n-r)
    ann.expect("notice", text_contains="banned")
    mike = chat_client(server, "mike")
    mike.say("/join #den")
    mike.expect("join", nick="mike", room="#den")


def test_a_plugin_command_that_speaks_is_held_to_mutes(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A message a plugin's command sends for its user (hub.say) is refused in a room
    where that user is muted, as a typed one is."""

    class Shout:
        @hookimpl
        def chatkit_register_commands(self, register: Register) -> None:
            def shout(ctx: CommandContext) -> None:
                ctx.hub.say(ctx.client, ctx.room, ctx.args.upper())

            register("shout", shout, help="say it louder", usage="TEXT")

    server = chat_server_factory([Shout()], config=moderated(), disable=["flood"])
    ann, bob = muted_in_den(server, chat_client)
    bob.say("/shout hello", room="#den")
    assert "you are muted in #den" in bob.expect("error", code="dropped")["text"]
    ann.say("/shout fine")
    assert ann.expect("message", nick="ann")["text"] == "FINE"


def test_a_typed_message_is_checked_once(
    chat_server_factory: Factory, chat_client: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typed line's message is checked by chatkit_allow_input and not again by the
    filter; the pass holds for that line only: one a later plugin refused leaves no
    pass behind, so a plugin's command that says the same text after a mute is still
    refused."""

    class Echo:
        @hookimpl
        def chatkit_register_commands(self, register: Register) -> None:
            def echo(ctx: CommandContext) -> None:
                ctx.hub.say(ctx.client, ctx.room, ctx.args)

            register("echo", echo, help="say it as typed", usage="TEXT")

        @hookimpl
        def chatkit_allow_input(self, client: Session, event: object) -> Reject | None:
            # Called after moderation's (registered before it: called after).
            if isinstance(event, Say) and event.text == "blocked":
                return Reject("not that word", "refused_word")
            return None

    checks: list[str] = []
    may_speak = Moderation._may_speak

    def counted(self: Moderation, client: Session, room: str) -> Reject | None:
        checks.append(room)
        return may_speak(self, client, room)

    monkeypatch.setattr(Moderation, "_may_speak", counted)
    server = chat_server_factory([Echo()], config=moderated(), disable=["flood"])
    ann, bob = in_den(server, chat_client)
    checks.clear()
    bob.say("hi", room="#den")
    ann.expect("message", nick="bob", text="hi")
    assert checks == ["#den"]
    bob.say("blocked", room="#den")  # moderation lets it pass, Echo refuses it
    bob.expect("error", code="refused_word")
    ann.say("/mute bob")
    ann.expect("notice", text="ann muted bob!*@*")
    bob.say("/echo blocked", room="#den")
    assert "you are muted in #den" in bob.expect("error", code="dropped")["text"]


def test_an_invitation_left_unused_lapses(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """An invitation into an invite-only room lets its nick in for invite_hours; unused
    by then, it lapses (it is a nick's: whoever took the nick later was not invited)."""
    server = chat_server_factory(config=moderated(invite_hours=0.0002), disable=["flood"])
    ann = chat_client(server, "ann")
    ann.say("/join #den")
    ann.expect("notice", text="you are an operator of #den")
    ann.say("/inviteonly on")
    ann.expect("notice", text="ann made the room invite-only")
    bob = chat_client(server, "bob")
    ann.say("/invite bob")
    bob.expect("notice", text="ann invites you to #den: /join #den")
    plugin = server.pluginmanager.get_plugin("moderation")
    assert isinstance(plugin, Moderation) and plugin._invites("#den") == ["bob!*@*"]
    wait_until(lambda: not plugin._invites("#den"), 10, "the invitation lapsed")
    bob.say("/join #den")
    bob.expect("error", code="invite_only")


def test_invitations_waiting_are_at_most_max_masks(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A room keeps at most max_masks invitations waiting (each a row in the database):
    one more is refused, saying when they go; one of a nick invited already is not."""
    server = chat_server_factory(config=moderated(max_masks=2), disable=["flood"])
    ann = chat_client(server, "ann")
    ann.say("/join #den")
    ann.expect("notice", text="you are an operator of #den")
    ann.say("/inviteonly on")
    ann.expect("notice", text="ann made the room invite-only")
    for nick in ("bob", "carl", "dora"):
        chat_client(server, nick)
    ann.command("/invite bob")
    ann.command("/invite carl")
    ann.command("/invite bob")  # again: still two
    ann.say("/invite dora")
    error = ann.expect("error", code="too_many_masks")
    assert "2 invitations waiting" in error["text"] and "lapse after" in error["text"]


def test_invite_only_rooms_and_lock(chat_server_factory: Factory, chat_client: Connect) -> None:
    """/inviteonly on keeps out whoever was not /invite-d (invite_only); /lock lets only
    identified users speak (room_locked); both are undone."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann = chat_client(server, "ann")
    ann.say("/join #den")
    ann.expect("notice", text="you are an operator of #den")
    bob, carol = chat_client(server, "bob"), chat_client(server, "carol")
    ann.say("/inviteonly on")
    ann.expect("notice", text="ann made the room invite-only")
    bob.say("/join #den")
    bob.expect("error", code="invite_only")
    ann.say("/invite bob")
    bob.expect("notice", text="ann invites you to #den: /join #den")
    reply = ann.expect("reply", command="invite")
    assert (reply["text"], reply["data"]) == (
        "invited bob to #den",
        {"nick": "bob", "room": "#den"},
    )
    bob.say("/join #den")
    bob.expect("join", nick="bob", room="#den")
    ann.say("/invite bob")
    assert ann.expect("error", code="already_in_room")["text"] == "bob is already in #den"
    bob.say("/part #den")  # an invitation lets its nick in once
    bob.expect("leave", nick="bob", room="#den")
    bob.say("/join #den")
    bob.expect("error", code="invite_only")
    ann.say("/invite bob")
    bob.expect("notice", text="ann invites you to #den: /join #den")
    bob.say("/join #den")
    bob.expect("join", nick="bob", room="#den")
    carol.say("/join #den")
    carol.expect("error", code="invite_only")
    ann.say("/inviteonly #den off")
    ann.expect("notice", text_contains="opened the room")
    carol.say("/join #den")
    carol.expect("join", nick="carol", room="#den")
    ann.say("/lock")
    ann.expect("notice", text="ann locked the room")
    carol.say("anyone?")
    carol.expect("error", code="room_locked")
    carol.say("/me waves")
    carol.expect("error", code="room_locked")
    carol.command("/register sesame-seed")
    carol.say("identified now")
    assert ann.expect("message", nick="carol")["text"] == "identified now"
    ann.say("/unlock")
    ann.expect("notice", text="ann unlocked the room")
    bob.say("me too")
    assert ann.expect("message", nick="bob")["text"] == "me too"


def test_an_invite_only_room_its_unidentified_operator_left_is_not_locked_for_good(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """An operator who never identified is one only while connected: once the room is
    empty, nobody could /invite anyone, so the first to join enters and is its operator
    (a room with an identified operator stays closed: see the restart test)."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann = chat_client(server, "ann")
    ann.say("/join #den")
    ann.expect("notice", text="you are an operator of #den")
    ann.say("/inviteonly on")
    ann.expect("notice", text="ann made the room invite-only")
    bob = chat_client(server, "bob")
    bob.say("/join #den")
    bob.expect("error", code="invite_only")  # while ann is there
    ann.say("/part #den")
    ann.expect("leave", room="#den")
    bob.say("/join #den")
    bob.expect("join", nick="bob", room="#den")
    bob.expect("notice", text="you are an operator of #den")


def test_gline_bans_from_the_whole_server(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """/gline disconnects matching clients and refuses their logins (banned) until /ungline;
    /gline alone lists the server's bans, with who set each and when."""
    server = chat_server_factory(config=moderated(server_operators=["root"]), disable=["flood"])
    root, troll = chat_client(server, "root"), chat_client(server, "troll")
    root.command("/register sesame-seed")
    troll.say("/gline root")
    troll.expect("error", code="not_server_operator")
    troll.say("/gline")  # the list too
    troll.expect("error", code="not_server_operator")
    root.say("/gline")
    assert root.expect("reply", command="gline")["text"] == "server bans: none"
    root.say("/gline troll* spam")
    assert "troll" in root.expect("reply", command="gline")["text"]
    troll.expect("notice", text_contains="banned from this server")
    troll.wait_closed()
    root.say("/gline")
    listed = root.expect("reply", command="gline")
    (ban,) = listed["data"]["bans"]
    assert ban["mask"] == "troll*!*@*" and ban["nick"] == "root" and ban["ts"].endswith("Z")
    assert listed["text"] == f"server bans: troll*!*@* (by root, {ban['ts']})"
    again = chat_client(server)
    again.send(type="hello", nick="troll2")
    again.expect("error", code="banned")
    root.say("/ungline troll*")
    root.expect("reply", command="ungline")
    again.login("troll2")


def test_bans_and_mutes_hold_for_a_capital_i_for_an_l(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A ban, a mute and a /gline of a nick hold for its look-alikes as the hub and
    the accounts take them, a capital I for an l among them (aIice is alice: the
    skeleton alone, lowercasing first, made it aiice, and the ban let it in)."""
    server = chat_server_factory(config=moderated(server_operators=["root"]), disable=["flood"])
    root = chat_client(server, "root")
    root.command("/register sesame-seed")
    root.say("/join #den")
    root.expect("join", nick="root", room="#den")
    root.say("/ban #den alice")
    root.expect("notice", text="root banned alice!*@*")
    root.say("/mute #den carol")
    root.expect("notice", text_contains="muted carol")
    root.say("/gline mallory")
    root.expect("reply", command="gline")
    alice = chat_client(server, "aIice")
    alice.say("/join #den")
    alice.expect("error", code="banned")
    carol = chat_client(server, "caroI")
    carol.say("/join #den")
    carol.expect("join", nick="caroI", room="#den")
    carol.say("hi")
    carol.expect("error", code="muted")
    mallory = chat_client(server)
    mallory.send(type="hello", nick="maIlory")
    mallory.expect("error", code="banned")


def test_a_delegated_operator_cannot_ban_the_rooms_owner_out(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """The operator the config names for a room joins it whatever the bans: one it
    made an operator could ban and kick it, and it could neither rejoin nor lift the
    ban nor deop the other (only a server operator could)."""
    server = chat_server_factory(config=moderated(operators={"#den": ["owner"]}), disable=["flood"])
    owner = chat_client(server, "owner")
    owner.command("/register sesame-seed")
    owner.say("/join #den")
    owner.expect("join", nick="owner", room="#den")
    eve = chat_client(server, "eve")
    eve.command("/register eve-sesame")
    eve.say("/join #den")
    eve.expect("join", nick="eve", room="#den")
    owner.say("/op #den eve")  # (by account: it outlives the connection)
    eve.expect("notice", text_contains="eve")
    eve.say("/ban #den owner")
    eve.expect("notice", text_contains="banned owner")
    eve.say("/kick #den owner bye")
    owner.expect("leave", nick="owner", room="#den")
    owner.say("/join #den")
    owner.expect("join", nick="owner", room="#den")
    owner.say("/unban #den owner")
    owner.expect("notice", text_contains="unbanned owner")
    # A delegate made so by /op, banned while away (no /deop of someone offline),
    # stays out: only the owners the config names pass every ban.
    eve.close()
    owner.expect("leave", nick="eve")
    owner.say("/ban #den eve")
    owner.expect("notice", text_contains="banned eve")
    back = ChatClient(server.address)
    back.login("eve", password="eve-sesame")
    back.say("/join #den")
    back.expect("error", code="banned")
    back.close()
    owner.say("/deop #den eve")  # (offline: by its account)
    owner.expect("notice", text_contains="removed eve as an operator")
    owner.say("/deop #den nobody")
    owner.expect("error", code="no_such_nick")


def test_a_ban_holds_for_the_room_a_login_joins(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A hello naming a room its nick (or its account, proven by the hello's
    password) is banned from is logged in but kept out of the room: no join, no
    replay; the same for the default room."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann = chat_client(server, "ann")
    ann.say("/join #den")
    ann.expect("notice", text="you are an operator of #den")
    ann.say("secret plans", room="#den")
    ann.expect("message", text="secret plans")
    mal = chat_client(server, "mal")
    mal.command("/register mals-password")
    mal.say("/quit")
    mal.wait_closed()  # logged out: the nick is free for the login below
    mal.close()
    ann.say("/ban troll", room="#den")
    ann.expect("notice", text_contains="banned troll")
    ann.say("/ban *!mal@*", room="#den")
    ann.expect("notice", text_contains="banned *!mal@*")
    for hello in (
        {"nick": "troll", "room": "#den"},
        {"nick": "mal", "password": "mals-password", "room": "#den"},
    ):
        client = chat_client(server)
        client.send({"type": "hello", **hello})
        assert client.expect("welcome")["rooms"] == []
        assert "banned from #den" in client.expect("error", code="banned")["text"]
        assert not [f for f in client.sync() if f["type"] in ("join", "message")]
        client.close()


def test_a_server_ban_of_an_account_holds_however_it_is_proven(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """/gline of an account refuses a login that proves it with a password, and
    disconnects a client that proves it later with /identify; a /gline of a nick holds
    for its look-alikes too."""
    server = chat_server_factory(config=moderated(server_operators=["root"]), disable=["flood"])
    root, mallory = chat_client(server, "root"), chat_client(server, "mallory")
    root.command("/register sesame-seed")
    mallory.command("/register mallorys-pw")
    mallory.close()
    root.say("/gline *!mallory@* spam")
    root.expect("reply", command="gline")
    again = chat_client(server)
    again.send(type="hello", nick="mallory", password="mallorys-pw")
    again.expect("error", code="banned")
    again.send(type="hello", nick="innocent")
    again.expect("welcome")
    again.say("/identify mallory mallorys-pw")
    again.expect("notice", text="you are banned from this server")
    again.wait_closed()
    root.say("/gline bobby")
    root.expect("reply", command="gline")
    look_alike = chat_client(server)
    look_alike.send(type="hello", nick="b\u03bfbby")  # a Greek omicron
    look_alike.expect("error", code="banned")


def test_brackets_in_a_mask_are_a_nicks_own_characters(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Only * and ? are wildcards: a ban of [troll] holds for the nick [troll] and for
    no one-letter nick; an IPv4 client of a listener on :: matches its IPv4 address."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann = chat_client(server, "ann")
    ann.say("/join #br")
    ann.expect("notice", text="you are an operator of #br")
    ann.say("/ban [troll]", room="#br")
    ann.expect("notice", text_contains="banned")
    troll, t = chat_client(server, "[troll]"), chat_client(server, "t")
    troll.say("/join #br")
    troll.expect("error", code="banned")
    t.say("/join #br")
    t.expect("join", nick="t", room="#br")
    assert matches_who("*!*@127.0.0.1", "x", None, "::ffff:127.0.0.1")
    assert not matches_who("*!*@127.0.0.2", "x", None, "::ffff:127.0.0.1")
    # A mask a regular expression would backtrack on for hours (an operator's *a*a*a...b
    # against every join and message of the room) is matched in linear steps.
    assert not matches_who("*a" * 40 + "b", "a" * 30, "a" * 30, "a" * 30)


def test_identify_does_not_rename_a_client_out_of_a_mute(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """/identify of another account renames to its nick, but not a client held by a
    mute under the nick it has: it is identified, keeps its nick, and stays muted."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    alt = chat_client(server, "altnick")
    alt.command("/register altpass123")
    alt.say("/quit")
    alt.wait_closed()  # logged out: /identify below finds the nick free
    alt.close()
    _ann, bob = muted_in_den(server, chat_client)
    bob.say("/identify altnick altpass123")
    reply = bob.expect("reply", command="identify")
    assert "you keep the nick bob" in reply["text"] and "muted" in reply["text"]
    bob.say("still here", room="#den")
    bob.expect("error", code="muted")


def test_logout_does_not_lift_a_ban_or_mute_of_the_account(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A mute or ban set on an account (``*!bob@*``) holds for the connection that
    proved it after /logout, and after /identify as another account: a client cannot
    step out of it without reconnecting."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    alt = chat_client(server, "altnick")
    alt.command("/register altpass123")
    alt.say("/quit")
    alt.wait_closed()
    alt.close()
    ann, bob = in_den(server, chat_client)
    bob.command("/register bobs-password")
    bob.say("/nick robert")  # (as bob, the nick alone would match: bob!bob@chatkit)
    ann.expect("nick", new="robert")
    ann.say("/mute *!bob@*")
    ann.expect("notice", text="ann muted *!bob@*")
    bob.say("identified", room="#den")
    bob.expect("error", code="muted")
    bob.say("/logout")
    bob.expect("reply", command="logout")
    bob.say("after logout", room="#den")
    bob.expect("error", code="muted")
    bob.say("/identify altnick altpass123")
    bob.expect("reply", command="identify")
    bob.say("as another", room="#den")
    bob.expect("error", code="muted")
    ann.say("/unmute *!bob@*")
    ann.expect("notice", text="ann unmuted *!bob@*")
    ann.say("/ban *!bob@*")
    ann.expect("notice", text="ann banned *!bob@*")
    bob.say("/logout")
    bob.expect("reply", command="logout")
    bob.say("/part #den")
    bob.expect("leave", nick="robert", room="#den")
    bob.say("/join #den")
    bob.expect("error", code="banned")
    carol = chat_client(server, "carol")  # another connection, never bob: not banned
    carol.say("/join #den")
    carol.expect("join", nick="carol", room="#den")


def test_gline_of_an_account_the_operator_proved_before_is_not_refused(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """/gline refuses a mask that matches its operator as it is (it could not log in
    again), not one naming an account it proved before and left."""
    server = chat_server_factory(
        config=moderated(server_operators=["root", "boss"]), disable=["flood"]
    )
    boss = chat_client(server, "boss")
    boss.command("/register boss-password")
    root = chat_client(server, "root")
    root.command("/register root-password")
    root.say("/nick rooty")  # (as root, the nick alone would match: root!root@chatkit)
    root.expect("nick", new="rooty")
    root.command("/identify boss boss-password")  # (keeps the nick rooty: boss is taken)
    root.command("/gline *!root@* the old account")
    root.say("/gline *!boss@*")
    root.expect("error", code="bad_usage")


def test_two_joining_an_empty_room_at_once_make_one_operator(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Two clients joining the same empty rooms at the same moment (a barrier between
    their threads): each room gets exactly one operator, never two (both had found it
    empty before either's join)."""
    server = chat_server_factory(config=moderated(), disable=["flood"], max_rooms=60)
    ann, bob = chat_client(server, "ann"), chat_client(server, "bob")
    rooms = [f"#race{i}" for i in range(40)]
    barrier = threading.Barrier(2)

    def join_all(client: ChatClient) -> None:
        for room in rooms:
            barrier.wait(10)
            client.say(f"/join {room}")

    threads = [threading.Thread(target=join_all, args=(c,)) for c in (ann, bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    ops: dict[str, list[str]] = {room: [] for room in rooms}
    for nick, client in (("ann", ann), ("bob", bob)):
        for frame in client.sync():
            text = str(frame.get("text", ""))
            room = text.removeprefix("you are an operator of ")
            if frame["type"] == "notice" and room in ops:
                ops[room].append(nick)
    assert all(len(who) == 1 for who in ops.values()), ops


def test_a_claim_to_be_first_is_one_joiners_until_it_joins(tmp_path: Path) -> None:
    """A node's store: one claim to an empty room's first membership at a time; the
    same joiner may claim again; released once it joined, another may claim."""
    store = ModerationStore(tmp_path / "m.sqlite3")
    try:
        assert store.claim_first("#new", "1")
        assert not store.claim_first("#new", "2")
        assert store.claim_first("#new", "1")
        store.release_first("#new", "2")  # not its claim: nothing
        assert not store.claim_first("#new", "2")
        store.release_first("#new", "1")
        assert store.claim_first("#new", "2")
    finally:
        store.close()


def test_a_claim_after_the_first_member_joined_finds_it(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A joiner whose claim comes only once the first member has joined and given its
    claim back (the room looked empty to it a moment ago) looks again: not first."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    moderation = server.pluginmanager.get_plugin("moderation")
    assert moderation is not None
    store = moderation.store
    claim = store.claim_first
    arrived, go_on = threading.Event(), threading.Event()
    ann, bob = chat_client(server, "ann"), chat_client(server, "bob")
    bob_token = f":{server.hub.find('bob').id}"  # type: ignore[union-attr]

    def held_claim(room: str, token: str) -> bool:
        if token.endswith(bob_token):
            arrived.set()
            assert go_on.wait(10)  # ann joins, and gives her claim back, meanwhile
        return bool(claim(room, token))

    store.claim_first = held_claim
    bob.say("/join #race")
    assert arrived.wait(10)
    ann.say("/join #race")
    ann.expect("notice", text="you are an operator of #race")
    go_on.set()
    bob.expect("join", nick="bob", room="#race")
    assert not [f for f in bob.sync() if f.get("text") == "you are an operator of #race"]


def test_a_refused_joiner_does_not_keep_a_room_from_its_first_member(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A banned client's /join of an empty room is refused before any claim to be its
    first member: the next to join is its operator; a /gline of a nick holds for a
    rename to it too."""
    server = chat_server_factory(config=moderated(server_operators=["root"]), disable=["flood"])
    ann = chat_client(server, "ann")
    ann.say("/join #den")
    ann.expect("notice", text="you are an operator of #den")
    ann.say("/ban troll", room="#den")
    ann.expect("notice", text_contains="banned troll")
    ann.say("/part #den")
    ann.expect("leave", nick="ann", room="#den")
    troll = chat_client(server, "troll")
    troll.say("/join #den")
    troll.expect("error", code="banned")
    bob = chat_client(server, "bob")
    bob.say("/join #den")
    bob.expect("notice", text="you are an operator of #den")
    root = chat_client(server, "root")
    root.command("/register sesame-seed")
    root.say("/gline badguy")
    root.expect("reply", command="gline")
    bob.say("/nick badguy")
    assert "banned from this server" in bob.expect("error", code="banned")["text"]


def test_the_moderation_file_is_marked_and_another_programs_is_refused(tmp_path: Path) -> None:
    """Its file carries chatkit's mark and schema version: a file of before the marks
    (only moderation's tables) is taken and marked; another database (history's,
    another program's) or a newer one is refused rather than written into."""
    old = tmp_path / "old.sqlite3"
    with contextlib.closing(sqlite3.connect(old)) as db:
        db.executescript(SCHEMA)
        db.execute("INSERT INTO bans VALUES ('#a', 'evil!*@*')")
        db.commit()
        db.execute("ANALYZE")  # (SQLite's own sqlite_stat1 is no foreign table)
    store = ModerationStore(old)
    assert store.rows("bans", "#a") == ["evil!*@*"]
    store.close()
    with contextlib.closing(sqlite3.connect(old)) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID

    other = tmp_path / "other.sqlite3"
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE messages (id INTEGER)")
    with pytest.raises(UsageError, match="is not a chatkit moderation database"):
        ModerationStore(other)
    with contextlib.closing(sqlite3.connect(old)) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(UsageError, match="is from a newer chatkit"):
        ModerationStore(old)


def test_a_version_1_file_keeps_its_bans_and_learns_who_sets_the_next(tmp_path: Path) -> None:
    """A file of schema version 1 (no setters) opens as version 2: its bans stay, with no
    setter known; a ban added now is kept with who set it and when, and goes with it."""
    path = tmp_path / "v1.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA.split("CREATE TABLE IF NOT EXISTS setters")[0])
        db.execute("INSERT INTO bans VALUES ('#a', 'old!*@*')")
        db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        db.execute("PRAGMA user_version=1")
        db.commit()
    store = ModerationStore(path)
    try:
        assert store.rows("bans", "#a") == ["old!*@*"] and store.setters("bans", "#a") == {}
        store.add("bans", "#a", "new!*@*", by="ann", ts="2026-12-03T05:00:00.000Z")
        store.add("bans", "#a", "new!*@*", by="bob", ts="2026-12-03T06:00:00.000Z")  # kept
        assert store.setters("bans", "#a") == {"new!*@*": ("ann", "2026-12-03T05:00:00.000Z")}
        assert store.setters("mutes", "#a") == {}
        assert store.remove("bans", "#a", "new!*@*")
        assert store.setters("bans", "#a") == {}
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    again = ModerationStore(path)  # a version-2 file opens as it is, setters kept
    try:
        again.add("mutes", "#a", "loud!*@*", by="ann", ts="2026-12-03T07:00:00.000Z")
    finally:
        again.close()
    again = ModerationStore(path)
    try:
        assert again.setters("mutes", "#a") == {"loud!*@*": ("ann", "2026-12-03T07:00:00.000Z")}
        assert again.all_setters() == [
            ("mutes", "#a", "loud!*@*", "ann", "2026-12-03T07:00:00.000Z")
        ]
    finally:
        again.close()


def test_a_server_ban_set_during_a_login_or_a_rename_holds(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A /gline that lands between a login's ban check and the login taking effect (its
    sweep of the sessions does not see the client yet), or a rename's, still disconnects
    the client: it is checked again once the nick is its."""

    class Racer:
        """Plays an operator's /gline at the worst moment: right after moderation's check."""

        mask = ""

        @hookimpl
        def chatkit_allow_login(self, client: Session, nick: str) -> None:
            self._gline(nick)

        @hookimpl
        def chatkit_allow_nick(self, client: Session, nick: str) -> None:
            self._gline(nick)

        def _gline(self, nick: str) -> None:
            if self.mask and nick.startswith("evil"):
                mod = server.pluginmanager.get_plugin("moderation")
                assert isinstance(mod, Moderation) and mod.store is not None
                mod.store.add("bans", "*", self.mask, by="root", ts="2026-12-03T05:00:00.000Z")
                mod._disconnect_banned(server.hub.sessions(), self.mask, "root", "")

    racer = Racer()
    server = chat_server_factory(plugins=[racer], config=moderated(), disable=["flood"])
    racer.mask = "evil!*@*"
    evil = chat_client(server)
    evil.send({"type": "hello", "nick": "evil"})
    evil.expect("notice", text="banned from this server by root")
    evil.wait_closed()
    racer.mask = "evil2!*@*"
    sly = chat_client(server, "sly")
    sly.say("/nick evil2")
    sly.expect("notice", text="banned from this server by root")
    sly.wait_closed()


def test_an_operator_of_a_room_that_emptied_is_none_of_the_next_one(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A connection's operator status (not identified) lasts while its room does: a
    guest who was first in #support, left and came back after it emptied and someone
    else made it again, is no operator of the new one (it was: a name claimed ahead of
    whoever set up the room later). A room that lived on meanwhile keeps it its."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    mallory = chat_client(server, "mallory")
    mallory.say("/join #support")
    mallory.expect("notice", text="you are an operator of #support")
    mallory.say("/part #support")
    mallory.expect("leave", room="#support")
    carol = chat_client(server, "carol")
    carol.say("/join #support")
    carol.expect("notice", text="you are an operator of #support")
    mallory.say("/join #support")
    carol.expect("join", nick="mallory", room="#support")
    mallory.say("/kick #support carol")
    mallory.expect("error", code="not_room_operator")
    carol.say("/part #support")
    carol.say("/join #support")  # the room lived on (mallory in it): still carol's
    mallory.expect("join", nick="carol", room="#support")
    carol.say("/kick #support mallory")
    mallory.expect("leave", nick="mallory", room="#support")


def test_operators_act_in_their_room_and_the_muted_set_no_topic(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A room's operator acts on it from inside it, as on IRC (442): one who left does
    not kick, mute or unban from outside; and a member who may not speak in a room
    (muted) may not set its topic, which every member sees and the plugin keeps."""
    server = chat_server_factory(config=moderated(), disable=["flood"])
    ann, bob = muted_in_den(server, chat_client)
    bob.say("/topic #den BUY CHEAP STUFF")
    bob.expect("error", code="muted")
    assert server.hub.topic("#den") is None
    carol = chat_client(server, "carol")
    carol.say("/join #den")
    ann.expect("join", nick="carol", room="#den")
    ann.say("/part #den")
    carol.expect("leave", nick="ann", room="#den")
    ann.say("/unmute #den bob")
    ann.expect("error", code="not_in_room")
    ann.say("/kick #den carol")
    ann.expect("error", code="not_in_room")


@pytest.mark.parametrize("parked", [False, True], ids=["reading-thread", "parked"])
def test_a_killed_client_that_reads_nothing_leaves_at_once(
    chat_server_factory: Factory, chat_client: Connect, parked: bool
) -> None:
    """A client killed while it neither reads nor sends, with lines queued for it that
    its full socket cannot take, leaves the room at once, whether its reader was waiting
    for input or its connection was parked (it stayed logged in, and in the room, until
    it read or sent again: forever for a client that never did)."""
    server = chat_server_factory(
        config=moderated(server_operators=["ann"]),
        disable=["flood"],
        max_sendq=10_000_000,
        idle_park=0.05 if parked else 60.0,  # (else its reader waits in recv())
    )
    ann = chat_client(server, "ann")
    ann.command("/register sesame-seed")
    mute = not_reading(server.address, "mute")
    ann.expect("join", nick="mute")
    fill_queues(server.address, every=ann.sync)
    ann.sync()
    (conn,) = [c for c in server.connections if c.session.nick == "mute"]
    wait_until(lambda: conn.queued_bytes > 0, 10, "a queue for mute")
    if parked:
        wait_until(lambda: server.parked >= 1, 10, "mute's connection parked")
    ann.say("/kill mute enough")
    ann.expect("leave", nick="mute", timeout=5)
    mute.close()


def test_a_capital_i_in_a_mask_with_wildcards_is_an_i() -> None:
    """A mask with wildcards matches by the skeleton alone: /ban Ia* bans no lambda nor
    Larry (read with its I as an l, it was /ban la*), while an exact nick's mask holds
    for its look-alike with a capital I for the l."""
    assert not matches_who("Ia*!*@*", "lambda", None, "192.0.2.1")
    assert not matches_who("BI*!*@*", "blake", None, "192.0.2.1")
    assert matches_who("Ia*!*@*", "iago", None, "192.0.2.1")
    assert matches_who("alice!*@*", "aIice", None, "192.0.2.1")
    assert matches_who("aIice!*@*", "alice", None, "192.0.2.1")
