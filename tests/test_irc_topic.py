"""Room topics: the hub keeps one per room; /topic, IRC TOPIC, and 332/333 on join."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_irc_face import SERVER, IrcClient

from chatkit import Server
from chatkit.faces.irc import IrcFace
from chatkit.faces.line import LineFace
from chatkit.testing import ChatClient, TextClient, make_config


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server(
        config=make_config(disable=["history"]),
        faces=[LineFace(), IrcFace(port=0, server_name=SERVER, network="TestNet")],
    )
    server.start()
    yield server
    server.shutdown()


def test_topics_are_shared_by_every_face(server: Server) -> None:
    """/topic from a JSON client reaches IRC as TOPIC; IRC's TOPIC reaches JSON clients
    as a topic frame; TOPIC #room and /topic show it; an empty topic clears it."""
    with IrcClient(server.addresses["irc"]) as alice, ChatClient(server.addresses["line"]) as jay:
        alice.register("alice", caps="server-time")
        jay.login("jay")
        alice.sync()
        jay.say("/topic")
        assert jay.expect("reply", command="topic")["text"] == "#general has no topic"
        jay.say("/topic Release on Friday")
        frame = jay.expect("topic")
        assert (frame["room"], frame["topic"], frame["nick"]) == (
            "#general",
            "Release on Friday",
            "jay",
        )
        line = alice.expect(" TOPIC #general :")
        assert line.endswith(":jay!jay@chatkit TOPIC #general :Release on Friday")
        assert line.startswith(f"@time={frame['ts']} ")
        alice.send("TOPIC #general")
        alice.expect(f":{SERVER} 332 alice #general :Release on Friday")
        assert alice.expect(" 333 ").startswith(f":{SERVER} 333 alice #general jay!jay@chatkit ")
        alice.send("TOPIC #general :\x02Ship\x02 it")
        assert jay.expect("topic", nick="alice")["topic"] == "Ship it"
        alice.expect(":alice!alice@chatkit TOPIC #general :Ship it")
        jay.say("/topic")
        reply = jay.expect("reply", command="topic")
        assert reply["data"]["topic"] == "Ship it" and reply["data"]["nick"] == "alice"
        alice.send("TOPIC #general :")
        assert jay.expect("topic", nick="alice")["topic"] == ""
        alice.send("TOPIC #general")
        alice.expect(f":{SERVER} 331 alice #general :No topic is set")


def test_joining_a_room_with_a_topic_sends_332_and_333(server: Server) -> None:
    """An IRC client joining a room with a topic gets 332 and 333 with its join; TOPIC
    for a room one is not in gets 442, for no room 403; a JSON client's /topic - clears."""
    with IrcClient(server.addresses["irc"]) as alice, ChatClient(server.addresses["line"]) as jay:
        jay.login("jay")
        jay.say("/join #dev")
        jay.expect("join", room="#dev")
        jay.say("/topic #dev Builds are green")
        jay.expect("topic", room="#dev")
        lines = alice.register("alice")
        alice.send("TOPIC #dev :mine now")
        alice.expect(f":{SERVER} 442 alice #dev :")
        alice.send("TOPIC #nowhere :x")
        alice.expect(f":{SERVER} 403 alice #nowhere :")
        alice.send("JOIN #dev")
        joined = alice.until(f":{SERVER} 366 alice #dev :")
        # In the order RFC 2812 (3.2.1) and the modern docs give: JOIN, the topic, names.
        assert [line.split()[1] for line in joined] == ["JOIN", "332", "333", "353", "366"]
        assert joined[0] == ":alice!alice@chatkit JOIN #dev"
        assert joined[1] == f":{SERVER} 332 alice #dev :Builds are green"
        assert joined[2].startswith(f":{SERVER} 333 alice #dev jay!jay@chatkit ")
        assert not [line for line in lines if " 332 " in line]  # #general has none
        jay.say("/topic #dev -")
        alice.expect(":jay!jay@chatkit TOPIC #dev :")
        alice.send("TOPIC #dev")
        alice.expect(f":{SERVER} 331 alice #dev :No topic is set")
        long = "x" * 391
        alice.send(f"TOPIC #dev :{long}")
        alice.expect("NOTICE alice :error [bad_text]")


def test_a_joiner_of_another_face_gets_the_rooms_topic_after_its_join(server: Server) -> None:
    """A JSON client joining a room with a topic gets the ``topic`` frame right after its
    ``join`` (as an IRC client gets 332); a text-mode client reads it as a line; a room
    with no topic sends none."""
    address = server.addresses["line"]
    with ChatClient(address) as jay, ChatClient(address) as kim, TextClient(address) as tom:
        jay.login("jay")
        jay.say("/join #dev")
        jay.expect("join", room="#dev")
        jay.say("/topic #dev Builds are green")
        jay.expect("topic", room="#dev")
        kim.login("kim")
        kim.sync()
        kim.say("/join #dev")
        kim.expect("join", room="#dev", nick="kim")
        frames = kim.sync()
        assert [f["type"] for f in frames] == ["topic"]
        assert (frames[0]["room"], frames[0]["topic"], frames[0]["nick"]) == (
            "#dev",
            "Builds are green",
            "jay",
        )
        assert frames[0]["join"] is True  # the topic the joiner finds
        kim.say("/join #quiet")
        kim.expect("join", room="#quiet", nick="kim")
        assert [f["type"] for f in kim.sync()] == []
        tom.send_line("tom")
        tom.expect("* tom joined #general")
        tom.send_line("/join #dev")
        tom.expect("* tom joined #dev")
        tom.expect("* topic of #dev: Builds are green (set by jay)")  # found, not set now


def test_topic_and_away_lengths_are_limits() -> None:
    """max_topic and max_away are limits like the others: a longer topic or away text
    is bad_text on every face, and IRC's ISUPPORT says TOPICLEN and AWAYLEN."""
    server = Server(
        config=make_config(disable=["history"], max_topic=10, max_away=5),
        faces=[LineFace(), IrcFace(port=0, server_name=SERVER, network="TestNet")],
    )
    with (
        server,
        IrcClient(server.addresses["irc"]) as alice,
        ChatClient(server.addresses["line"]) as jay,
    ):
        lines = alice.register("alice")
        supported = " ".join(line for line in lines if " 005 " in line).split()
        assert "TOPICLEN=10" in supported and "AWAYLEN=5" in supported
        jay.login("jay")
        jay.say("/topic " + "x" * 11)
        assert "at most 10 characters" in jay.expect("error", code="bad_text")["text"]
        jay.say("/topic " + "x" * 10)
        jay.expect("topic", topic="x" * 10)
        jay.say("/away gone!!")
        assert "at most 5 characters" in jay.expect("error", code="bad_text")["text"]
        alice.send("AWAY :gone for lunch")  # IRC cuts it, as IRC servers do
        alice.expect(f":{SERVER} 306 alice :")
        jay.say("/who")
        assert jay.expect("reply", command="who")["data"]["away"] == {"alice": "gone"}  # "gone "
