"""Property-based tests of the IRC face: arbitrary bytes and IRC commands thrown at its
protocol object and at a live server, which must stay usable for everyone else.

As in tests/test_fuzz.py: the live tests share one server per module; two
well-behaved IRC clients check after every example that chat still works between
them, the attacker's connection still answers PING (unless it quit), and a log
handler fails the test on any error the server logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_irc_face import IrcClient

from chatkit import Server
from chatkit.faces.irc import IrcFace
from chatkit.faces.irc.face import _ctcp
from chatkit.faces.irc.message import MAX_LINE_BYTES, Message
from chatkit.faces.irc.protocol import Command, IrcProtocol
from chatkit.faces.irc.render import encode_lines
from chatkit.faces.line import LineFace
from chatkit.frames import Frame
from chatkit.protocol import clean_text
from chatkit.testing import make_config

ANY_CHAR = st.characters(exclude_categories=())
WORDS = st.one_of(
    st.text(ANY_CHAR, max_size=30),
    st.sampled_from(["#general", "#x", "alice", "bob", "0", "*", ":", "", "\x01ACTION", ",,"]),
)
COMMANDS = st.tuples(
    st.sampled_from(
        [
            "PRIVMSG",
            "NOTICE",
            "JOIN",
            "PART",
            "NICK",
            "USER",
            "PASS",
            "CAP",
            "MODE",
            "WHO",
            "WHOIS",
            "WHOWAS",
            "TOPIC",
            "LIST",
            "NAMES",
            "AWAY",
            "ISON",
            "USERHOST",
            "MOTD",
            "VERSION",
            "LUSERS",
            "PING",
            "PONG",
            "HISTORY",
            "ROOMS",
            "HELP",
            "ME",
            "MSG",
            "OPER",
            "FOO",
        ]
    ),
    st.lists(WORDS, max_size=5),
    st.one_of(st.none(), st.text(ANY_CHAR, max_size=60)),
).map(
    lambda c: (
        " ".join([c[0], *(w.replace(" ", "") or "x" for w in c[1])])
        + (f" :{c[2]}" if c[2] is not None else "")
    )
)
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_any_bytes_leave_the_protocol_usable(chunks: list[bytes]) -> None:
    """Whatever bytes arrive, the protocol raises nothing and answers the next PING."""
    protocol = IrcProtocol("irc.test", "net", [])
    for chunk in chunks:
        protocol.receive_data(chunk)
        while protocol.next_event() is not None:
            pass
        protocol.send(Frame("irc", messages=protocol.replies()))
    protocol.receive_data(b"\r\nPING :alive\r\n")
    while protocol.next_event() is not None:
        pass
    assert protocol.replies()[-1].params == ("irc.test", "alive")


PLAIN = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
PRIVMSGS = st.tuples(
    st.sampled_from(["", "", "", "@t=1 ", ":src ", " "]),
    st.sampled_from(["PRIVMSG", "PRIVMSG", "PRIVMSG", "privmsg", "NOTICE"]),
    st.sampled_from(["#general", "#x", "#", "#a,#b", "#a b", "bob", "#dev:1"]) | WORDS,
    st.sampled_from([" :", " :", " ", "  :"]),
    PLAIN | PLAIN | WORDS | st.sampled_from(["\x01ACTION waves\x01", "\x02bold", " ", "x" * 600]),
    st.sampled_from(["", "", "\r"]),
).map(lambda p: f"{p[0]}{p[1]} {p[2]}{p[3]}{p[4]}{p[5]}".encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(st.lists(PRIVMSGS | st.binary(max_size=40), max_size=8), st.integers(1, 4))
def test_the_fast_path_reads_messages_as_the_face_would(lines: list[bytes], limit: int) -> None:
    """``next_messages`` (a burst of ``PRIVMSG #room :text``, parsed on a fast path)
    takes only lines that ``next_event`` would have given as that PRIVMSG, with text
    the face sends as it is, and leaves every other line to it, unchanged: two
    protocols fed the same lines, one reading with it and one without, read the same."""
    fast, slow = IrcProtocol("irc.test", "net", []), IrcProtocol("irc.test", "net", [])
    data = b"".join(line.replace(b"\n", b"") + b"\n" for line in lines)
    for proto in (fast, slow):
        proto.registered = True
        proto.receive_data(data)
    while True:
        for target, text in fast.next_messages(limit):
            event = slow.next_event()
            assert slow.replies() == []
            assert isinstance(event, Command)
            message = event.message
            assert (message.command, message.params, message.tags) == (
                "PRIVMSG",
                (target, text),
                {},
            )
            assert message.source is None and target.startswith("#") and "," not in target
            # What the face sends of it: the text as it is (no CTCP, nothing to clean).
            assert _ctcp(text) == (text, False) and clean_text(text) == text and text.strip()
        event = slow.next_event()
        assert fast.next_event() == event and fast.replies() == slow.replies()
        if event is None:
            break


FIELDS = st.dictionaries(
    st.sampled_from(
        [
            "room",
            "nick",
            "text",
            "from",
            "to",
            "id",
            "ts",
            "reason",
            "rooms",
            "members",
            "old",
            "new",
            "code",
            "command",
            "history",
            "action",
            "count",
        ]
    ),
    st.one_of(WORDS, st.integers(), st.booleans(), st.lists(WORDS, max_size=3), st.none()),
    max_size=8,
)


@given(
    st.sampled_from(
        [
            "message",
            "private",
            "join",
            "leave",
            "nick",
            "notice",
            "error",
            "reply",
            "welcome",
            "history",
            "ping",
            "pong",
            "irc_close",
            "custom",
        ]
    ),
    FIELDS,
)
def test_any_frame_renders(kind: str, fields: dict[str, Any]) -> None:
    """Any frame, with any fields a plugin might put in it, becomes IRC lines or none."""
    protocol = IrcProtocol("irc.test", "net", [])
    data = protocol.send(Frame(kind, **fields))
    assert data == b"" or data.endswith(b"\r\n")
    for line in data.split(b"\r\n")[:-1]:
        assert b"\n" not in line and b"\r" not in line and b"\0" not in line


class _Errors(logging.Handler):
    """Collects the errors chatkit logs (a crashed handler, a failed hook)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Arena:
    """A live server, two well-behaved IRC clients and one hostile one."""

    def __init__(self, server: Server) -> None:
        self.address = server.addresses["irc"]
        self.server = server
        self.alice = IrcClient(self.address)
        self.alice.register("alice")
        self.bob = IrcClient(self.address)
        self.bob.register("bob")
        self.hostile: IrcClient | None = None
        self.count = 0

    def attacker(self) -> IrcClient:
        """The hostile client, registered (a new one if the last was closed)."""
        if self.hostile is None or self.hostile.eof:
            if self.hostile is not None:
                self.hostile.close()
            self.count += 1
            self.hostile = IrcClient(self.address)
            self.hostile.register(f"mallory{self.count}")
        return self.hostile

    def send_raw(self, data: bytes) -> None:
        client = self.attacker()
        try:
            client.sock.sendall(data)
        except OSError:
            client.eof = True

    def check(self) -> None:
        """Chat between alice and bob still works; the attacker still gets answers."""
        self.count += 1
        text = f"still chatting {self.count}"
        self.alice.send(f"PRIVMSG #general :{text}", f"PRIVMSG bob :{text}")
        self.bob.expect(f":alice!alice@chatkit PRIVMSG #general :{text}")
        self.bob.expect(f":alice!alice@chatkit PRIVMSG bob :{text}")
        hostile = self.attacker()
        try:
            hostile.sync()
        except (AssertionError, OSError):
            assert hostile.eof, "the server stopped answering a connected client"
        self.alice.pending.clear()
        self.bob.pending.clear()


@pytest.fixture(scope="module")
def arena() -> Iterator[tuple[Arena, _Errors]]:
    errors = _Errors()
    logging.getLogger("chatkit").addHandler(errors)
    server = Server(
        config=make_config(disable=["flood"]),
        faces=[LineFace(), IrcFace(port=0, server_name="irc.test")],
    )
    try:
        with server:
            arena = Arena(server)
            yield arena, errors
            for client in (arena.alice, arena.bob, arena.hostile):
                if client is not None:
                    client.close()
    finally:
        logging.getLogger("chatkit").removeHandler(errors)


def _no_errors(arena: tuple[Arena, _Errors]) -> None:
    records = arena[1].records
    assert not records, [r.getMessage() for r in records]
    assert arena[0].server.failure is None


@FUZZ
@given(st.binary(max_size=500))
def test_a_live_server_survives_any_bytes_on_irc(arena: tuple[Arena, _Errors], data: bytes) -> None:
    """Arbitrary bytes from a registered IRC client: answers for it, chat for the others."""
    arena[0].send_raw(data + b"\r\n")
    arena[0].check()
    _no_errors(arena)


@FUZZ
@given(COMMANDS)
def test_a_live_server_survives_any_irc_command(arena: tuple[Arena, _Errors], line: str) -> None:
    """Any parameters to any command: answered or refused; the others chat on."""
    arena[0].send_raw(line.encode("utf-8", "surrogatepass") + b"\r\n")
    arena[0].check()
    _no_errors(arena)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["PRIVMSG", "TOPIC", "303", "319", "401", "403", "CAP", "JOIN", "PART"]),
    st.lists(st.text(ANY_CHAR, min_size=0, max_size=300), min_size=1, max_size=4),
    st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=80),
    st.booleans(),
)
def test_every_line_fits_512_bytes(
    command: str, params: list[str], source: str, tagged: bool
) -> None:
    """Whatever its parameters, a line the face writes has at most 512 bytes with CR-LF
    after its tags (RFC 1459 2.3), middle parameters (names a client sent) cut too."""
    tags = {"time": "2026-12-02T00:00:00.000Z"} if tagged else {}
    message = Message(command, tuple(params), source, tags)
    for line in encode_lines([message]).split(b"\r\n")[:-1]:
        body = line.partition(b" ")[2] if tagged else line
        assert len(body) + 2 <= MAX_LINE_BYTES, line
