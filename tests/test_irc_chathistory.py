"""IRCv3 draft/chathistory on top of the history plugin, through real sockets.

Written from the specification (https://ircv3.net/specs/extensions/chathistory):
``CHATHISTORY LATEST|BEFORE|AFTER|AROUND|BETWEEN target selector... limit`` with
``msgid=`` and ``timestamp=`` selectors; the reply is a ``chathistory`` batch, in
chronological order, empty when nothing matches; errors are ``FAIL CHATHISTORY``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_irc_face import SERVER, IrcClient

from chatkit import Server
from chatkit.faces.irc import IrcFace
from chatkit.faces.line import LineFace
from chatkit.testing import ChatClient, make_config

CAPS = "batch server-time message-tags draft/chathistory"


@pytest.fixture
def make_server() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(**kwargs: Any) -> Server:
        server = Server(
            config=make_config(**kwargs),
            faces=[LineFace(), IrcFace(port=0, server_name=SERVER, network="TestNet")],
        )
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()


@pytest.fixture
def chat(make_server: Callable[..., Server]) -> Iterator[tuple[Server, list[dict[str, Any]]]]:
    """A server whose #general holds messages m0 ... m9 from a JSON user (their frames)."""
    server = make_server()
    with ChatClient(server.addresses["line"]) as jay:
        jay.login("jay")
        said = []
        for i in range(10):
            jay.say(f"m{i}")
            said.append(jay.expect("message", text=f"m{i}"))
        yield server, said


def history(client: IrcClient, command: str) -> tuple[str, list[str]]:
    """Send ``command``; the batch's opening line and the texts of its PRIVMSGs."""
    client.send(command)
    start = client.expect("BATCH +")
    ref = start.split()[2][1:]
    lines = client.until(f"BATCH -{ref}")[:-1]
    texts = []
    for line in lines:
        assert f"batch={ref}" in line, line
        texts.append(line.rsplit(" :", 1)[1])
    return start, texts


def test_offered_with_history_and_absent_without(make_server: Callable[..., Server]) -> None:
    """CAP LS offers draft/chathistory and ISUPPORT says CHATHISTORY=N and the message
    reference types when history is on; without it the capability is refused and the
    command unknown."""
    server = make_server()
    with IrcClient(server.addresses["irc"]) as alice:
        alice.send("CAP LS 302")
        assert "draft/chathistory" in alice.expect("CAP * LS")
        lines = alice.register("alice", caps=CAPS)
        isupport = " ".join(line for line in lines if " 005 " in line)
        assert "CHATHISTORY=500" in isupport
        assert "MSGREFTYPES=msgid,timestamp" in isupport
    plain = make_server(disable=["history"])
    with IrcClient(plain.addresses["irc"]) as bob:
        bob.send("CAP LS 302")
        assert "draft/chathistory" not in bob.expect("CAP * LS")
        bob.send("CAP REQ :draft/chathistory")
        bob.expect("CAP * NAK :draft/chathistory")
        lines = bob.register("bob", caps="batch")
        assert "CHATHISTORY=" not in " ".join(lines)
        bob.send("CHATHISTORY LATEST #general * 10")
        bob.expect(f":{SERVER} 421 bob CHATHISTORY :Unknown command")


def test_a_client_that_asks_for_history_is_not_replayed_it_on_join(
    chat: tuple[Server, list[dict[str, Any]]],
) -> None:
    """With draft/chathistory a client fetches what it lacks, so a join (the login's,
    a JOIN) replays nothing (the spec's SHOULD NOT: it would see the lines twice); a
    client without it gets the replay, as before, and so does one that drops it."""
    server, _said = chat
    with IrcClient(server.addresses["irc"]) as fetcher, IrcClient(server.addresses["irc"]) as old:
        fetcher.register("fetcher", caps=CAPS)
        fetcher.send("PART #general", "JOIN #general,#other")
        lines = fetcher.until("366 fetcher #other") + fetcher.sync()
        assert not [line for line in lines if "BATCH" in line or "PRIVMSG" in line], lines
        old.register("old", caps="batch server-time message-tags")
        assert "PRIVMSG #general :m9" in " ".join(old.sync())
        fetcher.send("CAP REQ :-draft/chathistory")
        fetcher.expect("CAP fetcher ACK")
        fetcher.send("PART #general")
        fetcher.send("JOIN #general")
        fetcher.expect("PRIVMSG #general :m9")


def test_every_subcommand_with_msgid_selectors(chat: tuple[Server, list[dict[str, Any]]]) -> None:
    """LATEST, BEFORE, AFTER, AROUND and BETWEEN (both ways) select what the spec says,
    oldest first, each message tagged with its msgid and time."""
    server, said = chat
    ids = [str(frame["id"]) for frame in said]
    with IrcClient(server.addresses["irc"]) as alice:
        alice.register("alice", caps=CAPS)
        alice.sync()  # (no replay batch: a draft/chathistory client asks)
        start, texts = history(alice, "CHATHISTORY LATEST #general * 3")
        assert start.endswith(" chathistory #general")
        assert texts == ["m7", "m8", "m9"]
        assert history(alice, f"CHATHISTORY LATEST #general msgid={ids[7]} 10")[1] == ["m8", "m9"]
        assert history(alice, f"CHATHISTORY BEFORE #general msgid={ids[5]} 2")[1] == ["m3", "m4"]
        assert history(alice, f"CHATHISTORY AFTER #general msgid={ids[5]} 2")[1] == ["m6", "m7"]
        assert history(alice, f"CHATHISTORY AROUND #general msgid={ids[5]} 4")[1] == [
            "m4",
            "m5",
            "m6",
            "m7",
        ]
        # Near the end, the messages before fill the page.
        assert history(alice, f"CHATHISTORY AROUND #general msgid={ids[9]} 3")[1] == [
            "m7",
            "m8",
            "m9",
        ]
        forwards = f"CHATHISTORY BETWEEN #general msgid={ids[1]} msgid={ids[8]} 3"
        assert history(alice, forwards)[1] == ["m2", "m3", "m4"]
        backwards = f"CHATHISTORY BETWEEN #general msgid={ids[8]} msgid={ids[1]} 3"
        assert history(alice, backwards)[1] == ["m5", "m6", "m7"]
        everything = history(
            alice, f"CHATHISTORY BETWEEN #general msgid={ids[1]} msgid={ids[8]} 50"
        )
        assert everything[1] == [f"m{i}" for i in range(2, 8)]
        alice.send("CHATHISTORY LATEST #general * 1")
        line = alice.expect("PRIVMSG #general :m9")
        assert f"msgid={ids[9]}" in line and f"time={said[9]['ts']}" in line
        assert line.split(" ", 2)[1] == ":jay!jay@chatkit"


def test_timestamp_selectors_and_empty_batches(chat: tuple[Server, list[dict[str, Any]]]) -> None:
    """timestamp= selectors bound by time; a request that matches nothing is an empty
    batch; a limit above CHATHISTORY=N is served up to N."""
    server, said = chat
    ids = [str(frame["id"]) for frame in said]
    with IrcClient(server.addresses["irc"]) as alice:
        alice.register("alice", caps=CAPS)
        alice.sync()
        early, late = "2000-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z"
        assert history(alice, f"CHATHISTORY AFTER #general timestamp={early} 2")[1] == [
            "m0",
            "m1",
        ]
        assert history(alice, f"CHATHISTORY BEFORE #general timestamp={late} 2")[1] == [
            "m8",
            "m9",
        ]
        assert history(alice, f"CHATHISTORY BEFORE #general timestamp={early} 5")[1] == []
        assert history(alice, f"CHATHISTORY AFTER #general msgid={ids[9]} 5")[1] == []
        between = f"CHATHISTORY BETWEEN #general timestamp={early} timestamp={late} 100000"
        assert history(alice, between)[1] == [f"m{i}" for i in range(10)]
        # A message's own time: AFTER it leaves it out, BEFORE the next time keeps it.
        first_ts = said[0]["ts"]
        assert "m0" not in history(alice, f"CHATHISTORY AFTER #general timestamp={first_ts} 20")[1]
        # The epoch itself (a client's "from the beginning"): nothing before it, all after.
        epoch = "1970-01-01T00:00:00.000Z"
        assert history(alice, f"CHATHISTORY BEFORE #general timestamp={epoch} 5")[1] == []
        assert history(alice, f"CHATHISTORY AFTER #general timestamp={epoch} 1")[1] == ["m0"]
        assert history(alice, f"CHATHISTORY AROUND #general timestamp={epoch} 2")[1] == ["m0", "m1"]


def test_errors_are_fail_replies_and_the_connection_goes_on(
    chat: tuple[Server, list[dict[str, Any]]],
) -> None:
    """Unknown subcommands, missing parameters, bad selectors or limits, and targets the
    client may not read get FAIL CHATHISTORY; the connection stays usable."""
    server, _said = chat
    with IrcClient(server.addresses["irc"]) as alice:
        alice.register("alice", caps=CAPS)
        alice.sync()
        alice.send("CHATHISTORY FROBNICATE #general * 5")
        alice.expect(f":{SERVER} FAIL CHATHISTORY INVALID_PARAMS FROBNICATE :")
        alice.send("CHATHISTORY LATEST #general")
        alice.expect(f":{SERVER} FAIL CHATHISTORY NEED_MORE_PARAMS LATEST :")
        alice.send("CHATHISTORY BEFORE #general bogus=1 5")
        alice.expect(f":{SERVER} FAIL CHATHISTORY INVALID_PARAMS BEFORE bogus=1 :")
        alice.send("CHATHISTORY BEFORE #general * 5")  # * is for LATEST only
        alice.expect(f":{SERVER} FAIL CHATHISTORY INVALID_PARAMS BEFORE * :")
        alice.send("CHATHISTORY LATEST #general * 0")
        alice.expect(f":{SERVER} FAIL CHATHISTORY INVALID_PARAMS LATEST 0 :")
        alice.send("CHATHISTORY AFTER #general timestamp=yesterday 5")
        alice.expect("FAIL CHATHISTORY INVALID_PARAMS AFTER timestamp=yesterday :")
        alice.send("CHATHISTORY LATEST #elsewhere * 5")
        line = alice.expect(f":{SERVER} FAIL CHATHISTORY INVALID_TARGET LATEST #elsewhere :")
        assert "Messages could not be retrieved: " in line  # and why
        alice.send("CHATHISTORY LATEST bad!nick * 5")
        alice.expect("FAIL CHATHISTORY INVALID_TARGET LATEST bad!nick :")
        assert not [line for line in alice.sync() if "BATCH" in line]
        assert history(alice, "CHATHISTORY LATEST #general * 1")[1] == ["m9"]


def test_private_conversations_are_a_nick_target(make_server: Callable[..., Server]) -> None:
    """With private history on, CHATHISTORY with a nick as target returns the private
    conversation, batched under the other's nick. (Without accounts: with them, only a
    nick identified to its account reads its private history; tests/test_accounts.py.)"""
    from chatkit import Config

    config = Config()
    config.plugin_config["history"] = {"private": True}
    server = make_server(config=config, disable=["accounts"])
    with IrcClient(server.addresses["irc"]) as alice, ChatClient(server.addresses["line"]) as jay:
        alice.register("alice", caps=CAPS)
        jay.login("jay")
        jay.send({"type": "say", "text": "/msg alice psst"})
        alice.expect("PRIVMSG alice :psst")
        start, texts = history(alice, "CHATHISTORY LATEST jay * 10")
        assert start.endswith(" chathistory jay") and texts == ["psst"]
        # Its own message, and a nick changed since only in case: still jay's batch.
        alice.send("PRIVMSG jay :back")
        jay.expect("private", text="back")
        alice.send("NICK ALICE")
        alice.expect(":alice!alice@chatkit NICK ALICE")
        start, texts = history(alice, "CHATHISTORY LATEST jay * 1")
        assert start.endswith(" chathistory jay") and texts == ["back"]


def targets(client: IrcClient, command: str) -> list[tuple[str, str]]:
    """Send a ``CHATHISTORY TARGETS`` command; its batch's (target, time) pairs."""
    client.send(command)
    start = client.expect("BATCH +")
    assert start == f":{SERVER} BATCH {start.split()[2]} draft/chathistory-targets"
    ref = start.split()[2][1:]
    found = []
    for line in client.until(f"BATCH -{ref}")[:-1]:
        tags, source, command_, sub, target, when = line.split(" ")
        assert (tags, source, command_, sub) == (
            f"@batch={ref}",
            f":{SERVER}",
            "CHATHISTORY",
            "TARGETS",
        )
        found.append((target, when))
    return found


def test_targets_lists_conversations_with_their_latest_message(
    make_server: Callable[..., Server],
) -> None:
    """CHATHISTORY TARGETS timestamp=A timestamp=B limit (draft/chathistory): the rooms
    one is in and one's private conversations with messages between A and B, each with
    its latest message's time, in a draft/chathistory-targets batch, latest last; the
    limit counts from A; rooms one is not in are never listed; bad parameters FAIL."""
    from chatkit import Config

    config = Config()
    config.plugin_config["history"] = {"private": True}
    server = make_server(config=config, disable=["accounts", "flood"])
    with (
        IrcClient(server.addresses["irc"]) as alice,
        ChatClient(server.addresses["line"]) as jay,
        ChatClient(server.addresses["line"]) as kim,
    ):
        alice.register("alice", caps=CAPS)
        jay.login("jay")
        kim.login("kim")
        alice.send("JOIN #dev")
        alice.expect(f":{SERVER} 366 alice #dev ")
        kim.say("/join #secret")
        kim.expect("join", room="#secret")
        kim.say("in a room alice is not in")
        kim.expect("message", room="#secret")
        jay.say("/join #dev")
        jay.expect("join", room="#dev")
        jay.say("#dev first")
        dev_first = jay.expect("message", room="#dev")
        time.sleep(0.002)  # times are in milliseconds: the next message's must be later
        jay.say("/join #general")
        jay.say("hello general")
        general = jay.expect("message", text="hello general")
        jay.send({"type": "say", "text": "/msg alice psst"})
        private = jay.expect("private", text="psst")
        alice.expect("PRIVMSG alice :psst")
        start, end = "timestamp=2000-01-01T00:00:00Z", "timestamp=2100-01-01T00:00:00Z"
        found = targets(alice, f"CHATHISTORY TARGETS {start} {end} 10")
        epoch = "timestamp=1970-01-01T00:00:00Z"
        assert targets(alice, f"CHATHISTORY TARGETS {epoch} {end} 10") == found
        assert found == [
            ("#dev", dev_first["ts"]),
            ("#general", general["ts"]),
            ("jay", private["ts"]),
        ]
        assert targets(alice, f"CHATHISTORY TARGETS {start} {end} 2") == found[:2]
        assert targets(alice, f"CHATHISTORY TARGETS {end} {start} 2") == found[1:]
        # Between two times: only what has messages then (both ends included).
        at = f"timestamp={general['ts']}"
        assert targets(alice, f"CHATHISTORY TARGETS {at} {end} 10") == found[1:]
        assert targets(alice, f"CHATHISTORY TARGETS {start} timestamp=2001-01-01T00:00:00Z 9") == []
        alice.send(f"CHATHISTORY TARGETS msgid={general['id']} {end} 10")
        alice.expect(f":{SERVER} FAIL CHATHISTORY INVALID_PARAMS TARGETS msgid={general['id']} :")
        alice.send(f"CHATHISTORY TARGETS {start} {end}")
        alice.expect(f":{SERVER} FAIL CHATHISTORY NEED_MORE_PARAMS TARGETS :")
        alice.send(f"CHATHISTORY TARGETS {start} {end} none")
        alice.expect(f":{SERVER} FAIL CHATHISTORY INVALID_PARAMS TARGETS none :")
        # A JSON client asks the same with a history_targets frame (message ids).
        kim.send({"type": "history_targets", "limit": 5})
        assert [t["target"] for t in kim.expect("history_targets")["targets"]] == [
            "#secret",
            "#general",
        ]
