"""The hub without sockets: in-memory transports and outbox, as h11's ConnectionPair.

chatkit.transport says what the hub needs of the layer below it; these tests bring
their own implementation of it, so routing, nick rules and ordering are checked in
microseconds, with no thread, socket or sleep.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pytest

from chatkit.codecs import JSON_CODEC, TEXT_CODEC, Codec
from chatkit.commands import CommandRegistry
from chatkit.config import Config
from chatkit.faces.line import LineChannel
from chatkit.frames import Frame
from chatkit.hooks import HookRunner
from chatkit.hub import Hub
from chatkit.plugins import build_plugin_manager, collect_commands
from chatkit.protocol import Hello, Ping, Say
from chatkit.session import Session
from chatkit.transport import Outbox, Transport


class MemoryTransport:
    """A client's connection that keeps what it is sent, as bytes, in order."""

    def __init__(self, codec: Codec = JSON_CODEC, port: int = 1) -> None:
        self.address = ("127.0.0.1", port)
        self.codec = codec
        self.chunks: list[bytes] = []
        self.closed: str | None = None

    @property
    def finishing(self) -> bool:  # the face's Link
        return self.closed is not None

    def pace(self, rooms: Iterable[str | None] = ()) -> None:  # the face's Link: never behind
        pass

    def push(self, frame: Frame) -> bool:
        return self.queue(frame.encode(self.codec))

    def queue(self, data: bytes) -> bool:
        if self.closed is None:
            self.chunks.append(data)
        return True

    def finish(self, reason: str) -> None:
        self.closed = self.closed or reason

    def abort(self, reason: str) -> None:
        self.closed = self.closed or reason

    def unread(self) -> int:  # (nothing waits: a test hands each line in itself)
        return 0

    def frames(self) -> list[dict[str, Any]]:
        """Every frame received (JSON clients), in order."""
        data = b"".join(self.chunks)
        return [json.loads(line) for line in data.splitlines()]

    def lines(self) -> list[str]:
        """Every line received (text clients), in order."""
        return b"".join(self.chunks).decode().splitlines()


class MemoryFeed:
    """A room's feed that hands what is published over at once (the writer waits for
    its next cycle; the order each member sees is the same)."""

    def __init__(self, outbox: MemoryOutbox) -> None:
        self.outbox = outbox
        self.members: dict[int, Transport] = {}
        self.publishes = 0

    def __len__(self) -> int:
        return len(self.members)

    def add(self, transport: Transport) -> None:
        self.members[id(transport)] = transport

    def remove(self, transport: Transport) -> None:
        del self.members[id(transport)]

    def publish(self, frames: Sequence[Frame]) -> bool:
        self.publishes += 1
        return self.outbox.fanout_many(frames, list(self.members.values()))


class MemoryOutbox:
    """Fan-out as the server's writer does it: one encoding per codec, one append each."""

    def feed(self, room: str) -> MemoryFeed:
        return MemoryFeed(self)

    def __init__(self) -> None:
        self.wakes = 0
        self.encodings = 0

    def fanout(self, frame: Frame, transports: Iterable[Transport]) -> bool:
        return self.fanout_many((frame,), transports)

    def fanout_many(self, frames: Sequence[Frame], transports: Iterable[Transport]) -> bool:
        encoded: dict[Codec, bytes] = {}
        for transport in transports:
            assert isinstance(transport, MemoryTransport)
            if transport.codec not in encoded:
                self.encodings += 1
                encoded[transport.codec] = b"".join(f.encode(transport.codec) for f in frames)
            transport.queue(encoded[transport.codec])
        return True

    def wake(self) -> None:
        self.wakes += 1


class Chat:
    """A hub with the default plugins (history in memory), and a way to log clients in."""

    def __init__(self, *, without: Sequence[str] = (), **limits: Any) -> None:
        config = Config(disable=["log", "flood", *without])
        config.plugin_config.setdefault("history", {})["db"] = ":memory:"
        for name, value in limits.items():
            setattr(config.limits, name, value)
        pm, _infos = build_plugin_manager(config)
        self.hooks = HookRunner(pm)
        self.hooks.startup("chatkit_configure", config=config, pluginmanager=pm)
        self.outbox = MemoryOutbox()
        outbox: Outbox = self.outbox  # the writer's interface, satisfied by shape
        self.hub = Hub(config, self.hooks, collect_commands(pm, CommandRegistry()), outbox)
        self.hub.prepare()
        self._ports = iter(range(1, 65536))
        self._channels: dict[int, LineChannel] = {}

    def connect(self, codec: Codec = JSON_CODEC) -> tuple[Session, MemoryTransport]:
        transport = MemoryTransport(codec, next(self._ports))
        session = Session(transport, self.outbox.wake)
        # The line face's adapter turns events into hub operations, as on a server.
        self._channels[session.id] = LineChannel(self.hub, session, transport)
        return session, transport

    def act(self, session: Session, event: Hello | Say | Ping) -> None:
        """Act on ``event`` as the line face does for a client's line."""
        self._channels[session.id].act(event)

    def login(self, nick: str, codec: Codec = JSON_CODEC) -> tuple[Session, MemoryTransport]:
        session, transport = self.connect(codec)
        self.act(session, Hello(nick))
        assert session.nick == nick, transport.chunks
        transport.chunks.clear()
        return session, transport

    def say(self, session: Session, text: str) -> None:
        self.act(session, Say(text, command=text.startswith("/")))
        self.hub.settle(session)  # as the reader does before it waits for input


@pytest.fixture
def chat() -> Iterator[Chat]:
    """A hub on in-memory transports; its plugins are stopped afterwards."""
    chat = Chat()
    yield chat
    chat.hooks.notify("chatkit_server_stop", server=None)


def messages(transport: MemoryTransport) -> list[tuple[str, str]]:
    return [(f["nick"], f["text"]) for f in transport.frames() if f["type"] == "message"]


def test_a_message_reaches_the_members_of_its_room_only(chat: Chat) -> None:
    """A message goes to everyone in its room, the sender included, and to no one else."""
    alice, a = chat.login("alice")
    _bob, b = chat.login("bob")
    carol, c = chat.login("carol")
    chat.say(carol, "/part #general")
    c.chunks.clear()
    chat.say(alice, "hi")
    assert messages(a) == messages(b) == [("alice", "hi")]
    assert c.chunks == []


def test_a_private_message_reaches_both_parties_only(chat: Chat) -> None:
    """/msg is delivered to the sender and the recipient, and nobody else."""
    alice, a = chat.login("alice")
    _bob, b = chat.login("bob")
    _carol, c = chat.login("carol")
    chat.say(alice, "/msg BOB psst")
    for transport in (a, b):
        [frame] = [f for f in transport.frames() if f["type"] == "private"]
        assert (frame["from"], frame["to"], frame["text"]) == ("alice", "bob", "psst")
    assert c.chunks == []


@pytest.mark.parametrize(
    ("nick", "code"),
    [
        ("9lives", "bad_nick"),
        ("x" * 100, "bad_nick"),
        ("ALICE", "nick_taken"),  # nicks are unique ignoring case
        ("\u0430lice", "nick_taken"),  # a Cyrillic 'а': looks like alice
    ],
)
def test_nick_rules(chat: Chat, nick: str, code: str) -> None:
    """A bad, taken or look-alike nick is refused with its code, and the client may retry."""
    chat.login("alice")
    session, transport = chat.connect()
    chat.act(session, Hello(nick))
    [error] = transport.frames()
    assert (error["type"], error["code"]) == ("error", code)
    assert session.nick is None
    chat.act(session, Hello("bob"))
    assert session.nick == "bob"


def test_members_see_a_room_in_id_order(chat: Chat) -> None:
    """Messages from several senders reach every member in one order, that of their ids."""
    alice, a = chat.login("alice")
    bob, b = chat.login("bob")
    for i in range(50):
        chat.say(alice if i % 2 else bob, f"m{i}")
    ids = [f["id"] for f in a.frames() if f["type"] == "message"]
    assert ids == sorted(ids) and len(ids) == 50
    assert messages(a) == messages(b)
    assert [text for _nick, text in messages(b)] == [f"m{i}" for i in range(50)]


def test_a_message_already_sent_arrives_before_a_later_pong(chat: Chat) -> None:
    """A client that pings after another's message reached the hub gets the message first."""
    alice, _a = chat.login("alice")
    bob, b = chat.login("bob")
    chat.say(alice, "before")
    chat.act(bob, Ping())
    assert [f["type"] for f in b.frames()] == ["message", "pong"]


def test_fanout_encodes_once_per_codec(chat: Chat) -> None:
    """A room of JSON and text clients costs one encoding per codec, shared by recipients."""
    alice, a = chat.login("alice")
    _bob, b = chat.login("bob")
    carol, c = chat.login("carol", TEXT_CODEC)
    before = chat.outbox.encodings
    chat.say(alice, "hello")
    assert chat.outbox.encodings - before == 2
    assert a.chunks[-1] is b.chunks[-1]  # the same bytes object, not a copy
    assert c.lines() == ["[#general] <alice> hello"]
    assert alice.codec is JSON_CODEC and carol.codec is TEXT_CODEC


def test_a_stored_message_is_delivered_by_settle() -> None:
    """With history on, a reader's line is stored in a pipeline: nobody receives it
    until the reader settles (before it waits for input); then everyone does, once."""
    chat = Chat()
    try:
        alice, a = chat.login("alice")
        _bob, b = chat.login("bob")
        a.chunks.clear()  # bob's join
        chat.act(alice, Say("hi"))
        assert a.chunks == b.chunks == [] and len(alice.unsettled) == 1
        chat.hub.settle(alice)
        assert messages(a) == messages(b) == [("alice", "hi")] and not alice.unsettled
    finally:
        chat.hooks.notify("chatkit_server_stop", server=None)


def test_without_a_store_a_readers_run_of_messages_leaves_as_one_piece() -> None:
    """No plugin stores messages: a reader's lines still wait for it to settle (the
    end of what it read), then its whole run leaves as one piece per member; a
    message a plugin says (not deferred) is delivered before ``say`` returns."""
    chat = Chat(without=["history"])
    try:
        alice, a = chat.login("alice")
        _bob, b = chat.login("bob")
        a.chunks.clear()  # bob's join
        chat.act(alice, Say("hi"))
        chat.act(alice, Say("there"))
        assert a.chunks == b.chunks == [] and len(alice.unsettled) == 2
        chat.hub.settle(alice)
        assert messages(a) == messages(b) == [("alice", "hi"), ("alice", "there")]
        assert len(b.chunks) == 1 and not alice.unsettled  # one piece for the run
        chat.hub.say(alice, None, "from a plugin")
        assert messages(b)[-1] == ("alice", "from a plugin") and not alice.unsettled
        assert chat.hub.join(alice, "#other")
        assert chat.hub.who("#other") == ["alice"]
    finally:
        chat.hooks.notify("chatkit_server_stop", server=None)
