"""The sans-I/O protocol: no sockets here."""

from __future__ import annotations

import json

import pytest

from chatkit.codecs import JSON_CODEC, TEXT_CODEC
from chatkit.protocol import (
    Closed,
    Frame,
    Hello,
    LineDecoder,
    LineTooLong,
    LocalProtocolError,
    Mode,
    Ping,
    Pong,
    RemoteProtocolError,
    Request,
    Say,
    ServerProtocol,
    clean_text,
)


def lines(decoder: LineDecoder) -> list[bytes | LineTooLong]:
    out = []
    while (item := decoder.next_line()) is not None:
        out.append(item)
    return out


def events(proto: ServerProtocol) -> list[object]:
    out: list[object] = []
    while True:
        try:
            event = proto.next_event()
        except RemoteProtocolError as exc:
            out.append(exc.code)
            continue
        if event is None:
            return out
        out.append(event)


def test_decoder_joins_a_line_split_across_reads() -> None:
    """A line that arrives in pieces comes out whole, once."""
    d = LineDecoder()
    d.feed(b"hel")
    assert lines(d) == []
    d.feed(b"lo\nwor")
    assert lines(d) == [b"hello"]
    d.feed(b"ld\n")
    assert lines(d) == [b"world"]


def test_decoder_splits_several_lines_in_one_read() -> None:
    """Several lines in one read come out separately, in order."""
    d = LineDecoder()
    d.feed(b"a\nbb\n\nccc\n")
    assert lines(d) == [b"a", b"bb", b"", b"ccc"]


def test_decoder_replaces_an_overlong_line_without_buffering_it() -> None:
    """A line over the limit is dropped as it arrives and reported once."""
    d = LineDecoder(max_line=10)
    d.feed(b"x" * 8)
    d.feed(b"y" * 8)  # now over the limit, with no end yet
    assert lines(d) == [LineTooLong(10)]
    assert len(d._buf) == 0
    d.feed(b"z" * 100_000)  # the rest of the long line is never stored
    assert len(d._buf) == 0
    d.feed(b"zz\nok\n")
    assert lines(d) == [b"ok"]


def test_decoder_accepts_a_line_of_exactly_the_limit() -> None:
    """max_line bytes are allowed; one more is not."""
    d = LineDecoder(max_line=5)
    d.feed(b"12345\n123456\nend\n")
    assert lines(d) == [b"12345", LineTooLong(5), b"end"]


def test_decoder_does_not_count_a_lines_cr() -> None:
    """A line ending in CR LF may hold max_line bytes before them, whole or in pieces,
    as the welcome's max_line says."""
    d = LineDecoder(max_line=5)
    d.feed(b"12345\r\n123456\r\n")
    assert lines(d) == [b"12345\r", LineTooLong(5)]
    d.feed(b"12345\r")  # (its LF not here yet)
    assert lines(d) == []
    d.feed(b"\n")
    assert lines(d) == [b"12345\r"]
    d.feed(b"12345\rx")
    assert lines(d) == [LineTooLong(5)]


def test_a_broken_json_first_line_is_said_in_json_and_leaves_the_mode_open() -> None:
    """A first line meant as JSON ({" starts it) that is not (a raw tab in a string, a
    trailing comma) is a bad_frame saying why, and the next line decides the mode: it
    became a nick, and the connection took JSON for text for good. A nick may start
    with {."""
    p = ServerProtocol()
    p.receive_data(b'{"type":"hello","nick":"a\tb"}\n')
    with pytest.raises(RemoteProtocolError) as refused:
        p.next_event()
    assert refused.value.code == "bad_frame"
    assert "control character at character 26" in refused.value.text
    modes = [p.mode]
    p.receive_data(b'{"type":"hello","nick":"ab"}\n')
    assert events(p) == [Hello("ab")]
    modes.append(p.mode)
    assert modes == [Mode.UNKNOWN, Mode.JSON]
    p.receive_data(b'{"type":"ping"} x\n')
    with pytest.raises(RemoteProtocolError) as refused:
        p.next_event()
    assert refused.value.text == "not a JSON object: text after the object at character 16"
    braces = ServerProtocol()
    braces.receive_data(b"{bob}\n")
    assert events(braces) == [Hello("{bob}")]
    assert braces.mode is Mode.TEXT


def test_json_mode_is_chosen_by_a_json_first_line() -> None:
    """A JSON object as first line selects JSON mode and is parsed."""
    p = ServerProtocol()
    p.receive_data(b'{"type":"hello","nick":"alice"}\r\n{"type":"ping"}\n{"type":"pong"}\n')
    assert events(p) == [Hello("alice"), Ping(), Pong()]
    assert p.mode is Mode.JSON
    assert p.codec is JSON_CODEC


def test_text_mode_reads_a_nick_then_messages() -> None:
    """In text mode lines are nicks until logged in, then messages or commands."""
    p = ServerProtocol()
    p.receive_data(b"alice\r\n")
    assert events(p) == [Hello("alice")]
    assert p.mode is Mode.TEXT
    assert p.codec is TEXT_CODEC
    p.logged_in = True
    p.receive_data(b"hi there\n/who #x\n//not a command\n\n")
    assert events(p) == [
        Say("hi there"),
        Say("/who #x", command=True),
        Say("/not a command"),
    ]


def test_a_command_before_the_nick_is_explained_and_quit_leaves() -> None:
    """A person at nc who types /help first is told to type a nick; /quit leaves."""
    p = ServerProtocol()
    p.receive_data(b"/help\n")
    with pytest.raises(RemoteProtocolError) as caught:
        p.next_event()
    assert caught.value.code == "not_logged_in" and "type a nick" in caught.value.text
    assert p.mode is Mode.TEXT  # the error is in text, as the prompt was
    p.receive_data(b"/QUIT bye\n")
    assert isinstance(p.next_event(), Closed)


def test_a_nick_and_a_message_in_one_read_are_read_in_turn() -> None:
    """Text-mode lines are interpreted one at a time, after the previous one is handled."""
    p = ServerProtocol()
    p.receive_data(b"alice\nhello\n")
    assert p.next_event() == Hello("alice")
    p.logged_in = True
    assert p.next_event() == Say("hello")


def test_say_frames() -> None:
    """say frames carry text and an optional room; // escapes a slash."""
    p = ServerProtocol()
    p.receive_data(
        b'{"type":"say","text":"hi","room":"#x"}\n{"type":"say","text":"/me waves"}\n'
        b'{"type":"say","text":"//etc"}\n'
    )
    assert events(p) == [Say("hi", "#x"), Say("/me waves", None, True), Say("/etc")]


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b'{"type": 1}',
        b'{"nick": "x"}',
        b'{"type": "Dance!"}',
        b'{"type": "hello"}',
        b'{"type": "hello", "nick": 5}',
        b'{"type": "say", "text": ["x"]}',
        b'{"type": "say", "text": "x", "room": 3}',
        b'{"type": "say", "text": ""}',
        b'{"type": "say", "text": " \\r\\n\\t "}',
        b'{"type": "say"}',
        b"[1, 2]",
        b"[" * 4000 + b"]" * 4000,
        b'{"type": "say", "text": ' + b"[" * 4000 + b"]" * 4000 + b"}",
        b'{"type": "say", "text": "' + b"9" * 10 + b'", "n": ' + b"9" * 5000 + b"}",
    ],
)
def test_bad_json_frames_are_bad_frame(line: bytes) -> None:
    """Malformed JSON, wrong types, unknown types, deep nesting and a say with nothing
    to show all give bad_frame."""
    p = ServerProtocol()
    p.receive_data(b'{"type":"ping"}\n' + line + b'\n{"type":"ping"}\n')
    assert events(p) == [Ping(), "bad_frame", Ping()]


def test_other_frame_types_are_requests_for_plugins() -> None:
    """A JSON frame of a type the core does not know becomes a Request with its fields."""
    p = ServerProtocol()
    p.receive_data(b'{"type":"history","room":"#a","before":5}\n')
    assert events(p) == [Request("history", {"room": "#a", "before": 5})]


def test_invalid_utf8_is_bad_encoding_and_the_connection_goes_on() -> None:
    """A line that is not UTF-8 gives bad_encoding; the next line is read normally."""
    p = ServerProtocol()
    p.receive_data(b'{"type":"ping"}\n\xff\xfe oops\n{"type":"ping"}\n')
    assert events(p) == [Ping(), "bad_encoding", Ping()]


def test_an_overlong_line_is_line_too_long() -> None:
    """The protocol reports line_too_long and then reads on."""
    p = ServerProtocol(max_line=20)
    p.receive_data(b"alice\n" + b"x" * 50 + b"\n")
    assert p.next_event() == Hello("alice")
    p.logged_in = True
    p.receive_data(b"short\n")
    assert events(p) == ["line_too_long", Say("short")]


def test_eof_ends_a_last_line_and_reports_closed() -> None:
    """A last line without its newline is a line (``printf 'hi' | nc``); one cut off
    mid-frame is refused as any bad line is; then Closed."""
    p = ServerProtocol()
    p.receive_data(b'{"type":"ping"}\n{"type":"ping"}')
    p.receive_eof()
    assert events(p) == [Ping(), Ping(), Closed()]
    p = ServerProtocol()
    p.receive_data(b'{"type":"ping"}\n{"type":"pi')
    p.receive_eof()
    p.receive_eof()  # idempotent
    assert events(p) == [Ping(), "bad_frame", Closed()]
    assert p.next_event() is None
    with pytest.raises(LocalProtocolError):
        p.receive_data(b"more")


def test_control_characters_are_cleaned() -> None:
    """Escape sequences cannot reach other terminals; line breaks only as line breaks."""
    assert clean_text("a\x1b[2Jb\tc\u2028d\x85\ne") == "a\ufffd[2Jb c\ufffdd\ufffd\ufffde"
    p = ServerProtocol()
    p.receive_data(b'{"type":"say","text":"x\\ny\\u001b"}\n')
    assert events(p) == [Say("x\ny\ufffd")]
    p = ServerProtocol(max_message_lines=1)
    p.receive_data(b'{"type":"say","text":"x\\ny"}\n')
    assert events(p) == [Say("x\ufffdy")]


def test_a_message_may_hold_lines_up_to_the_limit() -> None:
    """CR-LF and CR become LF, outer line breaks go, and more lines than the limit are
    too_many_lines; the connection goes on."""
    p = ServerProtocol(max_message_lines=3)
    text = json.dumps("\n\na\r\nb\rc\n")
    p.receive_data(b'{"type":"say","text":%s}\n' % text.encode())
    assert events(p) == [Say("a\nb\nc")]
    p.receive_data(b'{"type":"say","text":"1\\n2\\n3\\n4"}\n{"type":"ping"}\n')
    assert events(p) == ["too_many_lines", Ping()]


@pytest.mark.parametrize("control", ["\u202e", "\u202a", "\u2066", "\u2069"])
def test_bidi_controls_are_replaced_refused_or_allowed(control: str) -> None:
    """By default a bidi override becomes U+FFFD; with bidi = "refuse" the line is
    bad_text; with "allow" it stays. The marks LRM and RLM are always kept."""
    line = json.dumps({"type": "say", "text": f"{control}gnp.exe\u200f"}).encode() + b"\n"
    results = {}
    for policy in ("replace", "refuse", "allow"):
        p = ServerProtocol(bidi=policy)
        p.receive_data(line)
        results[policy] = events(p)
    assert results["replace"] == [Say("\ufffdgnp.exe\u200f")]
    assert results["refuse"] == ["bad_text"]
    assert results["allow"] == [Say(f"{control}gnp.exe\u200f")]


def test_a_message_of_several_lines_is_prefixed_on_every_line_in_text_mode() -> None:
    """Text mode shows each line of a multi-line message with the room and nick."""
    frame = Frame("message", id=1, ts="t", room="#r", nick="al", text="one\ntwo")
    assert frame.encode(TEXT_CODEC) == b"[#r] <al> one\n[#r] <al> two\n"
    private = Frame("private", id=2, ts="t", to="bo", text="a\nb", action=True, **{"from": "al"})
    assert private.encode(TEXT_CODEC) == b"[pm] * al -> bo a\n[pm] * al -> bo b\n"


def test_frames_encode_to_json_and_text_once() -> None:
    """A frame is encoded once per codec and the bytes are reused."""
    frame = Frame("message", id=1, ts="t", room="#general", nick="alice", text="hi é")
    data = frame.encode(JSON_CODEC)
    assert data.endswith(b"\n")
    assert json.loads(data) == {
        "type": "message",
        "id": 1,
        "ts": "t",
        "room": "#general",
        "nick": "alice",
        "text": "hi é",
    }
    assert frame.encode(JSON_CODEC) is data
    assert frame.encode(TEXT_CODEC) == "[#general] <alice> hi é\n".encode()
    assert JSON_CODEC.encode(frame) is data


def test_before_the_first_line_frames_are_sent_as_json() -> None:
    """A connection that has not chosen its mode yet is sent JSON, which people can read."""
    p = ServerProtocol()
    assert p.mode is Mode.UNKNOWN
    assert p.codec is JSON_CODEC
    assert p.send(Frame("pong")) == b'{"type":"pong"}\n'


@pytest.mark.parametrize(
    ("frame", "text"),
    [
        (Frame("join", room="#a", nick="bob", ts="t"), "* bob joined #a"),
        (Frame("leave", room="#a", nick="bob", ts="t", reason="quit"), "* bob left #a (quit)"),
        (Frame("nick", old="bob", new="rob"), "* bob is now known as rob"),
        (Frame("message", room="#a", nick="bob", text="waves", action=True), "[#a] * bob waves"),
        (Frame("private", **{"from": "a", "to": "b", "text": "psst"}), "[pm] <a -> b> psst"),
        (Frame("notice", text="hello"), "*** hello"),
        (Frame("error", code="nick_taken", text="taken"), "error [nick_taken]: taken"),
        (Frame("reply", command="who", text="a\nb", data={}), "a\nb"),
        (Frame("pong"), "pong"),
        (Frame("custom", x=1), 'custom: {"x": 1}'),
    ],
)
def test_text_rendering(frame: Frame, text: str) -> None:
    """Each frame type has a readable text form."""
    assert frame.encode(TEXT_CODEC) == (text + "\n").encode()


def test_send_before_the_mode_is_known_uses_json() -> None:
    """Refusals sent before the first line are JSON, which people can still read."""
    p = ServerProtocol()
    data = p.send(Frame("error", code="server_full", text="full"))
    assert json.loads(data)["code"] == "server_full"


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({"type": "say", "room": "#general", "text": "x\ud800y"}, "'text'"),
        ({"type": "say", "room": "#x\ud800", "text": "hi"}, "'room'"),
        ({"type": "hello", "nick": "al\udfffice"}, "'nick'"),
        ({"type": "say", "text": "/quit bye\ud800"}, "'text'"),
        ({"type": "history", "with": ["ok", {"deep": "\ud83d"}]}, "'with'"),
        ({"type": "history", "\ud800": 1}, "a member name"),
    ],
)
def test_lone_surrogates_are_refused_naming_the_field(frame: dict[str, object], field: str) -> None:
    """A JSON string escaping a lone surrogate is bad_encoding, naming where it is."""
    proto = ServerProtocol()
    proto.receive_data(json.dumps(frame).encode() + b"\n")
    with pytest.raises(RemoteProtocolError) as info:
        proto.next_event()
    assert info.value.code == "bad_encoding"
    assert field in info.value.text
    proto.receive_data(b'{"type":"ping"}\n')
    assert proto.next_event() == Ping()  # the connection goes on


def test_escaped_text_that_is_valid_unicode_is_accepted() -> None:
    """Escapes of real characters (a surrogate pair, an emoji) decode as text."""
    proto = ServerProtocol()
    proto.receive_data(b'{"type":"say","text":"\\ud83d\\ude00 \\u00e9 \\\\ud800"}\n')
    assert proto.next_event() == Say("\U0001f600 \u00e9 \\ud800")


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"history","limit":NaN}',
        b'{"type":"history","limit":Infinity}',
        b'{"type":"history","limit":-Infinity}',
        b'{"type":"history","limit":1e400}',
        b'{"type":"history","limit":' + b"9" * 5000 + b"}",
        b'{"type":"history","x":' + b"[" * 3000 + b"]" * 3000 + b"}",
    ],
)
def test_json_that_could_not_be_sent_back_is_not_a_frame(line: bytes) -> None:
    """NaN, infinities, numbers too big to parse and nesting too deep are bad_frame."""
    proto = ServerProtocol()
    proto.receive_data(b'{"type":"ping"}\n' + line + b"\n")
    assert proto.next_event() == Ping()
    with pytest.raises(RemoteProtocolError) as info:
        proto.next_event()
    assert info.value.code == "bad_frame"
    assert info.value.text.startswith("not a frame: ")
    assert "sys." not in info.value.text  # (int()'s advice is for programmers)


@pytest.mark.parametrize("value", [b"1e400", b"NaN", b"9" * 5000, b"[" * 3000 + b"]" * 3000])
def test_a_first_line_of_json_with_a_bad_value_is_still_json(value: bytes) -> None:
    """A client whose first line is JSON but for a value (a hello's ``since`` out of
    range) is a JSON client: it gets bad_frame saying why, in JSON, and its next line
    is read as JSON, not taken for a nick."""
    proto = ServerProtocol()
    proto.receive_data(b'{"type":"hello","nick":"ann","since":' + value + b'}\n{"type":"ping"}\n')
    with pytest.raises(RemoteProtocolError) as info:
        proto.next_event()
    assert info.value.code == "bad_frame"
    assert proto.mode is Mode.JSON
    assert proto.next_event() == Ping()


def test_every_frame_is_encodable() -> None:
    """A frame a plugin built with a lone surrogate or a non-JSON value still encodes."""
    frame = Frame("notice", text="bad \ud800 text", extra={1, 2})
    data = frame.encode(JSON_CODEC)
    assert json.loads(data)["text"] == "bad ? text"
    assert Frame("message", text="\ud800").encode(TEXT_CODEC).endswith(b"\n")
    assert Frame("welcome").encode(TEXT_CODEC).startswith(b"welcome: ")


def test_printable_text_is_returned_as_it_is() -> None:
    """clean_text returns printable text at once: every character it replaces or refuses
    (control characters, bidi controls) is one that str.isprintable() rejects."""
    from chatkit.protocol import _TABLES, BIDI_CONTROLS

    changed = {cp for table in _TABLES.values() for cp in table} | set(BIDI_CONTROLS)
    assert changed and not any(chr(cp).isprintable() for cp in changed)
    text = "héllo wörld, 你好 🙂"
    assert clean_text(text, bidi="refuse") is text


def test_next_messages_takes_a_bursts_plain_messages() -> None:
    """In JSON mode, the plain messages at the head of what was received come as
    ``(room, text)``; the first other line stops it and is left to next_event."""
    proto = ServerProtocol()
    proto.receive_data(
        b'{"type":"say","text":"one"}\n{"type":"say","room":"#dev","text":"two"}\n'
        b'{"type":"say","text":"/who"}\n{"type":"say","text":"three"}\n'
    )
    assert proto.next_messages() == []  # the mode is not known before a line is read
    assert proto.next_event() == Say("one")
    assert proto.next_messages() == [("#dev", "two")]
    assert proto.next_event() == Say("/who", command=True)
    assert proto.next_messages(limit=1) == [(None, "three")]
    assert proto.next_messages() == [] and proto.next_event() is None


@pytest.mark.parametrize(
    "line",
    [
        rb'{"type":"say","text":"x","room":"\ud800"}',  # a lone surrogate: bad_encoding
        rb'{"type":"say","text":"x","extra":["\udfff"]}',
        rb'{"type":"say","text":"x","room":5}',  # bad_frame
        rb'{"type":"say","text":"   "}',
        rb'{"type":"say","text":""}',
        rb'{"type":"say","text":"//not a command"}',
        rb'{"type":"say","text":"/me waves"}',
        rb'{"type":"say","text":"tab\there"}',  # cleaned
        rb'{"type":"say","text":"two\nlines"}',
        rb'{"type":"say","text":"\u202egnp.exe"}',  # a bidi control
        rb'{"type":"say","text":"x"} {"type":"say","text":"y"}',
        rb'{"type":"say","text":"x"}  ',
        b'{"type":"say","text":"x"}\r',
        b'\xef\xbb\xbf{"type":"say","text":"x"}',  # a BOM
        b'{"type":"say","text":"\xff"}',  # not UTF-8
        rb'{"type":"ping","text":"x"}',
        rb'{"text":"x","type":"say"}',  # taken: the members' order does not matter
        rb'{"type":"say","text":"caf\u00e9"}',  # an escape: the general path
    ],
)
def test_next_messages_leaves_what_it_does_not_read_as_next_event_would(line: bytes) -> None:
    """A line the fast path takes reads as next_event would have read it; any other is
    left, whole, for next_event (each case here is one the fast path must check)."""
    fast, slow = ServerProtocol(), ServerProtocol()
    for proto in (fast, slow):
        proto.receive_data(b'{"type":"ping"}\n' + line + b"\n")
        assert proto.next_event() == Ping()
    try:
        expected: object = slow.next_event()
    except RemoteProtocolError as exc:
        expected = exc.code
    taken = fast.next_messages()
    if taken:
        assert [Say(text, room) for room, text in taken] == [expected]
        assert fast.next_event() is None
        return
    try:
        assert fast.next_event() == expected
    except RemoteProtocolError as exc:
        assert exc.code == expected
