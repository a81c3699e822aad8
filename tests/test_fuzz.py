"""Property-based tests: arbitrary bytes, JSON and strings thrown at the protocol, the
commands, the store and a live server, which must stay usable for everyone else.

The live-server tests share one server per module; two well-behaved clients (alice
and bob) check after every example that chat still works between them, and a log
handler fails the test on any error the server logs (a handler that crashed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatkit import Message, Server
from chatkit.builtins.history.store import MessageStore, StoreError
from chatkit.client import literal_text
from chatkit.codecs import JSON_CODEC, TEXT_CODEC, fast_json_message
from chatkit.protocol import (
    Frame,
    LineDecoder,
    LineTooLong,
    Ping,
    RemoteProtocolError,
    Say,
    ServerProtocol,
    _say,
    _TextRules,
)
from chatkit.testing import ChatClient, run_server

# Strings a hostile client would try: lone surrogates, NUL, bidi overrides,
# noncharacters, line separators, a BOM, and names the server knows.
NASTY = [
    "\ud800",
    "\udfff",
    "x\ud83dy",
    "\x00",
    "\u202e",
    "\u2066",
    "\ufffe",
    "\uffff",
    "\U0010ffff",
    "\u2028",
    "\ufeff",
    "\r\n",
    "#general",
    "alice",
    "/quit",
    "//",
    "",
    " ",
]
# Every code point, surrogates included (hypothesis leaves out category Cs by default).
ANY_CHAR = st.characters(exclude_categories=())
STRINGS = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.sampled_from(NASTY),
    st.lists(st.sampled_from(NASTY), max_size=4).map("".join),
)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | NUMBERS | STRINGS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(STRINGS, inner, max_size=4),
    max_leaves=12,
)
TYPES = st.one_of(
    st.sampled_from(["hello", "say", "ping", "pong", "history", "who", "HELLO", "x" * 40]),
    STRINGS,
    JSON_VALUES,
)
FRAMES = st.fixed_dictionaries(
    {"type": TYPES},
    optional={
        name: JSON_VALUES | STRINGS
        for name in (
            "text",
            "room",
            "nick",
            "with",
            "before",
            "after",
            "around",
            "oldest",
            "limit",
            "since",
        )
    },
)
COMMANDS = st.tuples(
    st.sampled_from(
        [
            "help",
            "msg",
            "me",
            "join",
            "part",
            "rooms",
            "who",
            "topic",
            "nick",
            "quit",
            "ping",
            "history",
        ]
    ),
    STRINGS,
).map(lambda c: f"/{c[0]} {c[1]}")

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _encodable(value: Any) -> bool:
    """Whether every string in ``value`` can be encoded as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_encodable(k) and _encodable(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_encodable(v) for v in value)
    return True


# ---------------------------------------------------------------------------
# Sans-I/O: the protocol and frames
# ---------------------------------------------------------------------------


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_any_bytes_give_events_of_text_or_a_clear_error(chunks: list[bytes]) -> None:
    """Arbitrary bytes, split anyhow: each line becomes an event whose strings are
    Unicode text, or a RemoteProtocolError with a known code; nothing else is raised."""
    proto = ServerProtocol(max_line=200)
    for chunk in [*chunks, b"\n"]:
        proto.receive_data(chunk)
        while True:
            try:
                event = proto.next_event()
            except RemoteProtocolError as exc:
                # (not_logged_in: a text-mode line starting with "/" before the nick)
                assert exc.code in ("bad_frame", "bad_encoding", "line_too_long", "not_logged_in")
                continue
            if event is None:
                break
            assert _encodable(vars(event)), event


@settings(FUZZ, max_examples=400)
@given(
    st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r\n", b"xyz\n", b"\n\n", b"0123456789"])),
    st.lists(st.integers(min_value=0, max_value=40), max_size=12),
    st.integers(min_value=1, max_value=12),
)
def test_the_line_decoder_splits_any_stream_read_in_any_pieces(
    parts: list[bytes], cuts: list[int], limit: int
) -> None:
    """Whatever pieces a stream arrives in, the decoder gives its lines in order, each
    line over ``limit`` bytes as one :class:`LineTooLong`, and an unfinished line over
    the limit as one too (its rest dropped as it comes); at the end of the stream
    (``finish``), an unfinished line within the limit is a line. A line's last ``\r``
    (of its CR LF) does not count."""
    stream = b"".join(parts)
    *complete, tail = stream.split(b"\n")

    def fits(line: bytes) -> bool:
        return len(line) <= limit or (len(line) == limit + 1 and line.endswith(b"\r"))

    expected: list[bytes | LineTooLong] = [
        line if fits(line) else LineTooLong(limit) for line in complete
    ]
    if not fits(tail):
        expected.append(LineTooLong(limit))
    decoder = LineDecoder(max_line=limit)
    got: list[bytes | LineTooLong] = []
    at = 0
    for cut in [*sorted(cuts), len(stream)]:
        decoder.feed(stream[at : max(at, cut)])
        at = max(at, cut)
        while (line := decoder.next_line()) is not None:
            got.append(line)
    assert got == expected
    decoder.finish()
    while (line := decoder.next_line()) is not None:
        got.append(line)
    assert got == expected + ([tail] if tail and fits(tail) else [])


@FUZZ
@given(FRAMES)
def test_any_json_frame_gives_an_event_of_text_or_a_clear_error(frame: dict[str, Any]) -> None:
    """Any JSON object (surrogates, NaN, huge numbers, nesting) is an event whose strings
    are text, or a clear bad_frame/bad_encoding; the next frame is read as usual."""
    proto = ServerProtocol()
    line = json.dumps(frame, ensure_ascii=True).encode()
    proto.receive_data(b'{"type":"ping"}\n' + line + b'\n{"type":"pong"}\n')
    assert type(proto.next_event()).__name__ == "Ping"
    try:
        event = proto.next_event()
    except RemoteProtocolError as exc:
        assert exc.code in ("bad_frame", "bad_encoding", "line_too_long")
    else:
        assert event is not None and _encodable(vars(event))
        json.dumps(vars(event), allow_nan=False)  # what was accepted can be sent back
    assert type(proto.next_event()).__name__ == "Pong"


# Mostly text the fast path takes (printable), some that it must leave.
PLAIN = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    st.text(st.characters(categories=["L", "N", "P", "S", "Zs"]), max_size=20),
    st.sampled_from(NASTY),
    st.text(st.characters(categories=["L", "N", "P", "S", "Zs"]), max_size=8).map("/".__add__),
)
SAYS = st.fixed_dictionaries(
    {"type": st.just("say"), "text": PLAIN}, optional={"room": PLAIN}
) | st.fixed_dictionaries(
    {"type": st.sampled_from(["say", "say", "say", "ping", "Say"])},
    optional={
        "text": PLAIN | PLAIN | STRINGS | JSON_VALUES,
        "room": PLAIN | st.sampled_from(NASTY) | st.none() | JSON_VALUES,
        "extra": st.sampled_from(NASTY) | JSON_VALUES,
    },
)


def _next(proto: ServerProtocol) -> object:
    """The protocol's next event, or the code of its error."""
    try:
        return proto.next_event()
    except RemoteProtocolError as exc:
        return exc.code


@settings(FUZZ, max_examples=400)
@given(
    st.lists(
        st.tuples(SAYS, st.booleans(), st.sampled_from(["", "", "", " ", "\r", "\ufeff"])),
        max_size=8,
    ),
    st.integers(min_value=1, max_value=4),
)
def test_the_fast_path_reads_messages_as_next_event_does(
    frames: list[tuple[dict[str, Any], bool, str]], limit: int
) -> None:
    """``next_messages`` (a burst's plain messages, parsed on a fast path) takes exactly
    what ``next_event`` would have read as ``Say(text, room)``, and leaves every
    other line to it: two protocols fed the same lines, one reading with it and one
    without, read the same."""
    data = b'{"type":"ping"}\n'  # JSON mode
    for frame, ascii_only, extra in frames:
        line = json.dumps(frame, ensure_ascii=ascii_only)
        line = extra + line if extra == "\ufeff" else line + extra
        data += line.encode("utf-8", "surrogatepass") + b"\n"
    fast, slow = ServerProtocol(), ServerProtocol()
    for proto in (fast, slow):
        proto.receive_data(data)
        assert isinstance(proto.next_event(), Ping)
    while True:
        for room, text in fast.next_messages(limit):
            assert _next(slow) == Say(text, room)
        event = _next(slow)
        assert _next(fast) == event
        if event is None:
            break


@settings(FUZZ, max_examples=300)
@given(
    st.lists(
        st.sampled_from(["id", "ts", "room", "nick", "text", "account", "action", "history"]),
        unique=True,
        max_size=7,
    ).map(lambda keys: keys if len(keys) % 3 else ["id", "ts", "room", "nick", "text", *keys]),
    st.lists(st.integers(-(2**70), 2**70) | STRINGS | JSON_VALUES, min_size=12, max_size=12),
    st.sampled_from(["message", "private"]),
)
def test_the_fast_json_message_is_the_general_paths_bytes(
    keys: list[str], values: list[Any], kind: str
) -> None:
    """``fast_json_message`` writes an ordinary message frame as the JSON codec's general
    path does, byte for byte, or declines: any fields, in any order, of any type."""
    fields = dict(zip(dict.fromkeys(keys), values, strict=False))
    frame = Frame(kind, **fields)
    general = (
        json.dumps(frame.to_dict(), ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
    ).encode("utf-8", "replace")
    fast = fast_json_message(frame)
    assert fast is None or fast == general
    assert JSON_CODEC.serialize(frame) == general
    ordinary = {"id": 1, "ts": "t", "room": "#r", "nick": "n", "text": "x"}
    for key, value in zip(("ts", "room", "nick", "text"), values, strict=False):
        if isinstance(value, str):  # any text: the fast path takes it
            ordinary[key] = value
    for extra in ({}, {"account": ""}, {"account": values[-1]}):
        frame = Frame("message", **ordinary, **extra)
        general = JSON_CODEC.serialize(Frame("notice", **frame.fields))  # the general path
        general = general.replace(b'"type":"notice"', b'"type":"message"', 1)
        assert fast_json_message(frame) in (None, general)
        taken = all(isinstance(value, str) for value in extra.values())
        assert (fast_json_message(frame) is not None) == taken


@FUZZ
@given(st.dictionaries(STRINGS, JSON_VALUES, max_size=5), STRINGS)
def test_every_frame_encodes_in_both_modes(fields: dict[str, Any], kind: str) -> None:
    """A frame with any fields, even ones no client could send, encodes to UTF-8 lines."""
    for type_ in (kind, "message", "notice", "error", "leave", "history"):
        frame = Frame(type_, **{f"f{i}": v for i, v in enumerate(fields.values())})
        for codec in (JSON_CODEC, TEXT_CODEC):
            data = frame.encode(codec)
            assert data.endswith(b"\n")
            data.decode("utf-8")


# ---------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MessageStore]:
    store = MessageStore(Path(tmp_path_factory.mktemp("fuzz")) / "h.db")
    yield store
    store.close()


_ids = iter(range(1, 10**9))


@FUZZ
@given(STRINGS, STRINGS, st.one_of(st.none(), STRINGS))
def test_the_store_keeps_any_text_or_refuses_that_message_alone(
    store: MessageStore, text: str, nick: str, room: str | None
) -> None:
    """Any strings: stored and read back exactly, or refused with StoreError; either way
    the next message is stored."""
    message = Message(nick, text, room=room, to=None if room else "bob", id=next(_ids), ts="t")
    try:
        store.add(message)
    except StoreError:
        assert not _encodable([text, nick, room])
    else:
        if room is not None:
            page, _ = store.room_page(room, limit=1)
            assert page[-1].text == text and page[-1].nick == nick
    ok = Message("alice", "ok", room="#ok", id=next(_ids), ts="t")
    store.add(ok)
    assert store.room_page("#ok", limit=1)[0][-1].id == ok.id


# ---------------------------------------------------------------------------
# A live server
# ---------------------------------------------------------------------------


class _Errors(logging.Handler):
    """Collects the errors chatkit logs (a crashed handler, a failed hook)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Arena:
    """A live server, two well-behaved clients and one hostile one."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.alice = ChatClient(server.address)
        self.alice.login("alice")
        self.bob = ChatClient(server.address)
        self.bob.login("bob")
        self.hostile: ChatClient | None = None
        self.count = 0

    def attacker(self) -> ChatClient:
        """The hostile client, logged in (a new one if the last was closed)."""
        if self.hostile is None or self.hostile.eof:
            if self.hostile is not None:
                self.hostile.close()
            self.hostile = ChatClient(self.server.address)
            self.hostile.login(f"mallory{self.count}")
        return self.hostile

    def send_raw(self, data: bytes) -> None:
        client = self.attacker()
        try:
            client.send_raw(data)
        except OSError:
            client.eof = True  # cut (e.g. by /quit): the next example opens a new one

    def check(self) -> None:
        """Chat between alice and bob still works; the attacker still gets answers."""
        self.count += 1
        text = f"still chatting {self.count}"
        self.alice.say(text)
        assert self.bob.expect("message", text=text)["nick"] == "alice"
        self.bob.say(f"/msg alice {text}")
        assert self.alice.expect("private", text=text)["from"] == "bob"
        hostile = self.attacker()
        try:
            frames = hostile.sync()
        except (AssertionError, OSError):
            # Closed by the server (a /quit), which the ping's send may have found first
            # (a reset): reading shows the end; a server that stopped answering shows none.
            frames = list(hostile.pending)
            with contextlib.suppress(AssertionError, OSError):
                hostile.wait_closed(5)
            assert hostile.eof, "the server stopped answering a connected client"
        codes = [f.get("code") for f in frames if f.get("type") == "error"]
        assert "internal_error" not in codes, frames
        self.alice.pending.clear()
        self.bob.pending.clear()


@pytest.fixture(scope="module")
def arena() -> Iterator[tuple[Arena, _Errors]]:
    errors = _Errors()
    logging.getLogger("chatkit").addHandler(errors)
    try:
        with run_server(disable=["flood"]) as server:
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
@given(FRAMES)
def test_a_live_server_survives_any_json_frame(arena: tuple[Arena, _Errors], frame: Any) -> None:
    """Any JSON frame from one client: the others chat on, nothing is logged as failed."""
    line = json.dumps(frame, ensure_ascii=True).encode() + b"\n"
    arena[0].send_raw(line)
    arena[0].check()
    _no_errors(arena)


@FUZZ
@given(COMMANDS)
def test_a_live_server_survives_any_command_line(arena: tuple[Arena, _Errors], line: str) -> None:
    """Any arguments to any command: answered or refused; the others chat on."""
    data = json.dumps({"type": "say", "text": line}, ensure_ascii=True).encode() + b"\n"
    arena[0].send_raw(data)
    arena[0].check()
    _no_errors(arena)


@FUZZ
@given(st.binary(max_size=500))
def test_a_live_server_survives_any_bytes(arena: tuple[Arena, _Errors], data: bytes) -> None:
    """Arbitrary bytes on a JSON connection: errors for the sender, chat for the others."""
    arena[0].send_raw(data + b"\n")
    arena[0].check()
    _no_errors(arena)


@FUZZ
@given(st.binary(min_size=1, max_size=200))
def test_a_text_mode_client_sending_any_bytes_harms_nobody(
    arena: tuple[Arena, _Errors], data: bytes
) -> None:
    """A raw connection (text mode, like nc) sending any bytes, then leaving abruptly."""
    with socket.create_connection(arena[0].server.address, timeout=5) as sock:
        sock.sendall(b"fuzzer\n" + data + b"\n")
    arena[0].check()
    _no_errors(arena)


@given(st.text(alphabet=st.sampled_from("/ab\r\n \t\u2028"), max_size=12))
def test_literal_text_is_never_a_command(text: str) -> None:
    """What Client.say(literal=True) sends is read by the server as a message, never a
    command, whatever the text (line breaks before a "/", CR-LF, lone CRs...), with the
    text the server would keep of it."""
    rules = _TextRules()
    try:
        said = _say(literal_text(text), None, rules)
    except RemoteProtocolError:
        return  # (too many lines: refused either way)
    assert not said.command
    assert said.text.lstrip("/") == _say(text, None, rules).text.lstrip("/")
