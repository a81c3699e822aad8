"""The IRC connection state machine, sans I/O: registration, CAP, lines out (no sockets)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatkit.codecs import Codec
from chatkit.faces.irc.message import MAX_LINE_BYTES, Message
from chatkit.faces.irc.protocol import Authenticate, Closed, Command, IrcProtocol, Register
from chatkit.faces.irc.render import (
    BYTE_CAPS,
    CodecCache,
    Style,
    encode_lines,
    fast_message,
    render,
    split_text,
)
from chatkit.frames import Frame

SERVER = "irc.test"


def make() -> IrcProtocol:
    return IrcProtocol(SERVER, "testnet", ["CHANTYPES=#"], client_host="10.0.0.1")


def feed(protocol: IrcProtocol, data: bytes) -> tuple[list[object], list[str]]:
    """Events and reply lines (rendered as the client gets them) after ``data``."""
    protocol.receive_data(data)
    events: list[object] = []
    lines: list[str] = []
    while True:
        event = protocol.next_event()
        replies = protocol.replies()
        if replies:
            lines += out(protocol, Frame("irc", messages=replies))
        if event is None:
            return events, lines
        events.append(event)


def out(protocol: IrcProtocol, frame: Frame) -> list[str]:
    data = protocol.send(frame)
    assert data == b"" or data.endswith(b"\r\n")
    return data.decode().split("\r\n")[:-1]


def test_nick_and_user_in_either_order_register() -> None:
    """NICK then USER, or USER then NICK, gives one Register event with what was sent."""
    for data in (b"NICK alice\r\nUSER al 0 * :Alice L\r\n", b"USER al 0 * :Alice L\nNICK alice\n"):
        events, lines = feed(make(), data)
        assert events == [Register("alice", "al", "Alice L", None)]
        assert lines == []


def test_pass_is_handed_on() -> None:
    """PASS before NICK/USER reaches the Register event."""
    events, _ = feed(make(), b"PASS s3cret\r\nNICK a\r\nUSER a 0 * :a\r\n")
    assert events == [Register("a", "a", "a", "s3cret")]


def test_cap_negotiation_holds_registration_until_cap_end() -> None:
    """After CAP LS, registration waits for CAP END; REQ is all or nothing."""
    protocol = make()
    events, lines = feed(protocol, b"CAP LS 302\r\nNICK a\r\nUSER a 0 * :a\r\n")
    assert events == []
    caps = "away-notify batch echo-message message-tags multi-prefix server-time userhost-in-names"
    assert lines == [f":{SERVER} CAP * LS :{caps}"]
    _, lines = feed(protocol, b"CAP REQ :server-time bogus\r\n")
    assert lines == [f":{SERVER} CAP * NAK :server-time bogus"]
    _, lines = feed(protocol, b"CAP REQ :server-time echo-message\r\nCAP LIST\r\n")
    assert lines == [
        f":{SERVER} CAP * ACK :server-time echo-message",
        f":{SERVER} CAP * LIST :echo-message server-time",
    ]
    assert protocol.style == Style(SERVER, frozenset({"server-time", "echo-message"}))
    events, _ = feed(protocol, b"CAP END\r\n")
    assert events == [Register("a", "a", "a", None)]


def test_ping_and_quit_work_before_registration() -> None:
    """PING is answered at once; QUIT is an event; other commands get 451."""
    events, lines = feed(make(), b"PING :probe\r\nJOIN #x\r\nQUIT :bye\r\n")
    assert lines == [f":{SERVER} PONG {SERVER} :probe", f":{SERVER} 451 * :You have not registered"]
    assert events == [Command(Message("QUIT", ("bye",)))]


def test_a_ping_needs_a_token_and_an_empty_one_is_one() -> None:
    """A bare PING is 461 (the token is required); ``PING :`` is answered with it."""
    _, lines = feed(make(), b"PING\r\nPING :\r\n")
    assert lines == [
        f":{SERVER} 461 * PING :Not enough parameters",
        f":{SERVER} PONG {SERVER} :",
    ]


def test_invalid_utf8_is_mended_and_the_client_warned() -> None:
    """UTF8ONLY: a line that is not UTF-8 is read with U+FFFD for the bad bytes (nothing
    invalid is relayed) and the client gets WARN <command> INVALID_UTF8."""
    _, lines = feed(make(), b"PING :hi\xaa\r\nPING :ok\r\n")
    assert lines == [
        f":{SERVER} WARN PING INVALID_UTF8 :Your message was not correctly encoded as UTF-8"
        " and had to be modified",
        f":{SERVER} PONG {SERVER} :hi\ufffd",
        f":{SERVER} PONG {SERVER} :ok",
    ]


def test_bad_lines_get_numerics_and_the_connection_goes_on() -> None:
    """A line too long gets 417, a line without a command 421; the next line works."""
    protocol = make()
    _, lines = feed(protocol, b"PRIVMSG #a :" + b"x" * 600 + b"\r\n:src\r\nPING x\r\n")
    assert lines == [
        f":{SERVER} 417 * :Input line was too long",
        f":{SERVER} 421 * * :No command given",
        f":{SERVER} PONG {SERVER} :x",
    ]
    _, lines = feed(protocol, b"x" * 10_000 + b"\r\nPING y\r\n")
    assert lines == [f":{SERVER} 417 * :Input line was too long", f":{SERVER} PONG {SERVER} :y"]


def test_a_refused_nick_may_be_sent_again() -> None:
    """After a nick_taken error frame, a new NICK registers again."""
    protocol = make()
    events, _ = feed(protocol, b"NICK bob\r\nUSER b 0 * :b\r\n")
    assert events == [Register("bob", "b", "b", None)]
    lines = out(
        protocol, Frame("error", code="nick_taken", text="taken", irc_command="NICK", target="bob")
    )
    assert lines == [f":{SERVER} 433 * bob :taken"]
    events, _ = feed(protocol, b"NICK bob2\r\n")
    assert events == [Register("bob2", "b", "b", None)]


def test_welcome_registers_and_the_motd_follows() -> None:
    """The welcome is 001-005; notices right after it are the MOTD, else 422."""
    protocol = make()
    feed(protocol, b"NICK a\r\nUSER a 0 * :a\r\n")
    lines = out(protocol, Frame("welcome", nick="alice", server="chatkit", version="1", rooms=[]))
    assert [line.split()[1] for line in lines] == ["001", "002", "003", "004", "005"]
    assert lines[0] == f":{SERVER} 001 alice :Welcome to the testnet IRC network, alice"
    assert protocol.registered and protocol.nick == "alice"
    assert out(protocol, Frame("notice", text="hello\nworld")) == [
        f":{SERVER} 375 alice :- {SERVER} Message of the day -",
        f":{SERVER} 372 alice :- hello",
        f":{SERVER} 372 alice :- world",
    ]
    lines = out(protocol, Frame("join", room="#g", nick="alice", ts="t", members=["bob", "alice"]))
    assert lines == [
        f":{SERVER} 376 alice :End of /MOTD command.",
        ":alice!alice@chatkit JOIN #g",
        f":{SERVER} 353 alice = #g :bob alice",
        f":{SERVER} 366 alice #g :End of /NAMES list.",
    ]
    # Later notices are NOTICEs.
    assert out(protocol, Frame("notice", text="hi")) == [f":{SERVER} NOTICE alice :hi"]
    other = make()
    feed(other, b"NICK b\r\nUSER b 0 * :b\r\n")
    out(other, Frame("welcome", nick="b", server="chatkit", version="1", rooms=[]))
    assert out(other, Frame("irc", messages=[]))[0] == f":{SERVER} 422 b :MOTD File is missing"


def test_a_sasl_exchange_with_a_line_too_long_ends_there() -> None:
    """An AUTHENTICATE line past 512 bytes (417), or a chunk past 400 bytes, ends the
    exchange (905): the client's next AUTHENTICATE PLAIN starts a new one instead of
    being read as payload (IRCv3 SASL 3.1, ERR_SASLTOOLONG)."""
    protocol = IrcProtocol(SERVER, "testnet", [], capabilities=("sasl=PLAIN",))
    payload = base64.b64encode(b"\0alice\0secret").decode()
    _, lines = feed(protocol, b"CAP REQ :sasl\r\nAUTHENTICATE PLAIN\r\n")
    assert lines[-1] == f":{SERVER} AUTHENTICATE +"
    for line in (b"AUTHENTICATE " + b"A" * 600, b"AUTHENTICATE " + b"A" * 401):
        _, lines = feed(protocol, line + b"\r\n")
        assert lines[-1] == f":{SERVER} 905 * :SASL message too long", lines
        _, lines = feed(protocol, b"AUTHENTICATE PLAIN\r\n")
        assert lines == [f":{SERVER} AUTHENTICATE +"]
    events, _ = feed(protocol, f"AUTHENTICATE {payload}\r\n".encode())
    assert events == [Authenticate("alice", "secret")]


def test_registered_commands_are_events() -> None:
    """After the welcome, every command but CAP/PING/PONG is the caller's; USER gets 462."""
    protocol = make()
    feed(protocol, b"NICK a\r\nUSER a 0 * :a\r\n")
    out(protocol, Frame("welcome", nick="a", server="chatkit", version="1", rooms=[]))
    events, lines = feed(protocol, b"JOIN #x\r\nUSER a 0 * :a\r\nPONG x\r\n")
    assert events == [Command(Message("JOIN", ("#x",)))]
    assert lines == [
        f":{SERVER} 422 a :MOTD File is missing",
        f":{SERVER} 462 a :You may not reregister",
    ]
    protocol.receive_eof()
    assert protocol.next_event() == Closed()
    assert protocol.next_event() is None


def test_a_last_line_without_its_crlf_is_acted_on_at_eof() -> None:
    """A client that closes right after a last line it did not end (a script's
    ``printf``) has that line acted on, as the line face does; then Closed."""
    protocol = make()
    feed(protocol, b"NICK a\r\nUSER a 0 * :a\r\n")
    out(protocol, Frame("welcome", nick="a", server="chatkit", version="1", rooms=[]))
    events, _lines = feed(protocol, b"PRIVMSG #x :bye")
    assert events == []
    protocol.receive_eof()
    assert protocol.next_event() == Command(Message("PRIVMSG", ("#x", "bye")))
    assert protocol.next_event() == Closed()
    protocol.receive_eof()  # (idempotent: the line is not read twice)
    assert protocol.next_event() is None


def test_errors_become_numerics() -> None:
    """Error frames name the numeric of their code and the IRC command's target."""
    protocol = make()
    out(protocol, Frame("welcome", nick="a", server="chatkit", version="1", rooms=[]))
    out(protocol, Frame("irc", messages=[]))

    def error(code: str, **fields: str) -> list[str]:
        return out(protocol, Frame("error", code=code, text="why", **fields))

    assert error("no_such_nick", irc_command="PRIVMSG", target="zed") == [
        f":{SERVER} 401 a zed :why"
    ]
    assert error("not_in_room", irc_command="PRIVMSG", target="#x") == [f":{SERVER} 404 a #x :why"]
    assert error("dropped", irc_command="PRIVMSG", target="#x") == [f":{SERVER} 404 a #x :why"]
    # A message a store refused, told on its turn in its room's lane (no command).
    assert error("not_stored", room="#x") == [f":{SERVER} 404 a #x :why"]
    assert (
        out(protocol, Frame("error", code="not_stored", text="why", room="#x", notice=True)) == []
    )
    assert error("not_in_room", irc_command="PART", target="#x") == [f":{SERVER} 442 a #x :why"]
    assert error("bad_room", irc_command="JOIN", target="x") == [f":{SERVER} 403 a x :why"]
    assert error("rate_limited", irc_command="PRIVMSG", target="#x") == [
        f":{SERVER} 263 a PRIVMSG :why"
    ]
    assert error("no_such_nick", irc_command="NOTICE", target="zed") == []
    assert error("login_timeout") == [f":{SERVER} ERROR :Closing Link: 10.0.0.1 (why)"]
    assert error("whatever") == [f":{SERVER} NOTICE a :error [whatever]: why"]


def test_replay_is_a_batch_when_negotiated() -> None:
    """Replayed messages come in a chathistory batch with the batch cap, else between
    two NOTICEs (the first before them: a client that takes server-time without showing
    it, irssi's default, would show them as said now), dated without server-time."""
    for caps, expected in (
        (
            b"batch server-time",
            [
                "BATCH +h1 chathistory #g",
                "@time=2026-01-02T03:04:05.000Z;batch=h1 :b!b@chatkit PRIVMSG #g :old",
                "BATCH -h1",
            ],
        ),
        (
            b"message-tags",
            [
                "NOTICE #g :*** earlier messages, replayed:",
                ":b!b@chatkit PRIVMSG #g :[2026-01-02 03:04] old",
                ":b!b@chatkit PRIVMSG #g :[2026-01-02 03:04] old",
                "NOTICE #g",
            ],
        ),
        (
            b"server-time",
            [
                "NOTICE #g :*** earlier messages, replayed:",
                "@time=2026-01-02T03:04:05.000Z :b!b@chatkit PRIVMSG #g :old",
                "@time=2026-01-02T03:04:05.000Z :b!b@chatkit PRIVMSG #g :old",
                "NOTICE #g",
            ],
        ),
    ):
        protocol = make()
        feed(protocol, b"CAP REQ :" + caps + b"\r\nCAP END\r\n")
        frame = Frame(
            "message",
            id=7,
            ts="2026-01-02T03:04:05.000Z",
            room="#g",
            nick="b",
            text="old",
            history=True,
        )
        twice = 1 if b"batch" in caps else 2  # (the opening NOTICE once)
        lines = [line for _ in range(twice) for line in out(protocol, frame)]
        lines += out(protocol, Frame("history", room="#g", count=twice, more=False))
        for line, want in zip(lines, expected, strict=True):
            assert want in line.replace(f":{SERVER} ", "").removeprefix("@msgid=7 "), (
                lines,
                expected,
            )


def wire(messages: list[Message]) -> list[str]:
    return encode_lines(messages).decode().split("\r\n")[:-1]


_ANY_TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(";\\ \r\n\0:@"), max_size=600)


@settings(max_examples=400, deadline=None)
@given(
    text=_ANY_TEXT,
    nick=st.sampled_from(["bob", "b[1]", "x" * 32, "", "a b", ":c"]) | _ANY_TEXT,
    room=st.sampled_from(["#g", "#" + "r" * 49, "", "# x", ":#y"]) | _ANY_TEXT,
    account=st.none() | _ANY_TEXT,
    ts=st.sampled_from(["2026-01-01T00:00:00.000Z", "", "a;b c\\"]) | st.integers(),
    ident=st.none() | st.integers(min_value=0) | st.just(""),
    flags=st.dictionaries(st.sampled_from(["action", "notice", "history"]), st.booleans()),
    caps=st.frozensets(st.sampled_from(sorted(BYTE_CAPS))),
)
def test_the_fast_path_of_a_message_gives_the_same_bytes(
    text: str,
    nick: str,
    room: str,
    account: str | None,
    ts: str | int,
    ident: int | str | None,
    flags: dict[str, bool],
    caps: frozenset[str],
) -> None:
    """fast_message() writes an ordinary room message as the general path does, byte for
    byte, and declines (None) what it does not handle."""
    fields = {"ts": ts, "room": room, "nick": nick, "text": text, **flags}
    if ident is not None:
        fields["id"] = ident
    if account is not None:
        fields["account"] = account
    frame = Frame("message", **fields)
    style = Style(SERVER, caps)
    fast = fast_message(style, frame)
    if fast is not None:
        assert fast == encode_lines(render(frame, style))


def test_the_fast_path_declines_a_nul_in_a_tag() -> None:
    """A NUL in a tag value (a plugin's account) is a space on the general path."""
    frame = Frame("message", id=5, ts="t", room="#g", nick="bob", text="hi", account="a\0b")
    style = Style(SERVER, frozenset({"account-tag"}))
    assert fast_message(style, frame) is None
    assert encode_lines(render(frame, style)).startswith(b"@account=a b ")


def test_the_fast_path_takes_ordinary_messages() -> None:
    """The writer's common case does take the fast path."""
    for caps in (frozenset(), frozenset({"message-tags", "server-time", "account-tag"})):
        frame = Frame(
            "message", id=5, ts="2026-01-01T00:00:00.000Z", room="#g", nick="bob", text="hi"
        )
        assert fast_message(Style(SERVER, caps), frame) == encode_lines(
            render(frame, Style(SERVER, caps))
        )


def test_fan_out_rendering() -> None:
    """Messages, actions, joins, leaves and nicks as every IRC client of a style gets them."""
    plain = Style(SERVER, frozenset())
    tagged = Style(SERVER, frozenset({"message-tags", "server-time"}))
    message = Frame(
        "message", id=5, ts="2026-01-01T00:00:00.000Z", room="#g", nick="bob", text="hi there"
    )
    assert wire(render(message, plain)) == [":bob!bob@chatkit PRIVMSG #g :hi there"]
    assert render(message, tagged)[0].tags == {"time": "2026-01-01T00:00:00.000Z", "msgid": "5"}
    action = Frame(
        "private", id=6, ts="t", **{"from": "bob", "to": "al"}, text="waves", action=True
    )
    assert wire(render(action, plain))[0] == ":bob!bob@chatkit PRIVMSG al :\x01ACTION waves\x01"
    two = Frame("message", id=8, ts="t", room="#g", nick="bob", text="one\ntwo")
    assert [m.params[1] for m in render(two, plain)] == ["one", "two"]
    leave = Frame("leave", room="#g", nick="bob", ts="t", reason="quit: bye", rooms=["#g"])
    assert wire(render(leave, plain))[0] == ":bob!bob@chatkit QUIT :Quit: bye"
    part = Frame("leave", room="#g", nick="bob", ts="t", reason="part")
    assert wire(render(part, plain))[0] == ":bob!bob@chatkit PART #g"
    assert wire(render(Frame("nick", old="a", new="b"), plain))[0] == ":a!a@chatkit NICK b"
    assert wire(render(Frame("ping"), plain))[0] == f"PING :{SERVER}"


def test_long_text_is_split_to_fit_512_bytes() -> None:
    """A long message becomes several PRIVMSGs, each line within 512 bytes, no text lost."""
    text = " ".join(["wörd"] * 300)
    frame = Frame("message", id=1, ts="t", room="#general", nick="bob", text=text)
    messages = render(frame, Style(SERVER, frozenset()))
    assert len(messages) > 1
    assert all(len(m.line().encode()) + 2 <= MAX_LINE_BYTES for m in messages)
    assert "".join(m.params[1] for m in messages) == text
    assert split_text("é" * 100, 17) == ["é" * 8] * 12 + ["é" * 4]


def test_one_codec_per_style() -> None:
    """Codecs are cached per style; echo follows echo-message."""
    cache = CodecCache()
    plain = cache.get(Style(SERVER, frozenset()))
    assert plain is cache.get(Style(SERVER, frozenset()))
    assert isinstance(plain, Codec) and not plain.echo
    assert cache.get(Style(SERVER, frozenset({"echo-message"}))).echo


def test_next_messages_takes_a_bursts_plain_room_messages() -> None:
    """Once registered, the ``PRIVMSG #room :text`` lines at the head of what was
    received come as ``(#room, text)``; the first other line stops it."""
    protocol = make()
    protocol.receive_data(b"PRIVMSG #a :one\r\nPRIVMSG #a :two\r\nPING :x\r\nPRIVMSG #b :three\n")
    assert protocol.next_messages() == []  # not registered yet
    protocol.registered = True
    assert protocol.next_messages(limit=1) == [("#a", "one")]
    assert protocol.next_messages() == [("#a", "two")]
    event = protocol.next_event()  # PING is answered on the way
    assert isinstance(event, Command) and event.message.params == ("#b", "three")
    assert [reply.command for reply in protocol.replies()] == ["PONG"]
    assert protocol.next_messages() == [] and protocol.next_event() is None


@pytest.mark.parametrize(
    "line",
    [
        b"PRIVMSG #a :" + b"x" * MAX_LINE_BYTES,  # 417
        b"PRIVMSG #a :\x01ACTION waves\x01",  # an action
        b"PRIVMSG #a :\x01VERSION\x01",  # CTCP
        b"PRIVMSG #a :\x02bold\x02",  # formatting codes, removed
        b"PRIVMSG #a :tab\there",
        b"PRIVMSG #a,#b :two targets",
        b"PRIVMSG #a :   ",  # 412
        b"PRIVMSG #a :",
        b"PRIVMSG #a",
        b"PRIVMSG #a word",
        b"PRIVMSG #a  :two spaces",
        b"PRIVMSG  #a :x",
        b"privmsg #a :lower case",
        b"@label=1 PRIVMSG #a :tags",
        b":alice PRIVMSG #a :a source",
        b" PRIVMSG #a :a leading space",
        b"PRIVMSG #a :caf\xe9",  # not UTF-8: mended, with a WARN
        b"PRIVMSG #a :x\r",
        b"PRIVMSG #a :\xe2\x80\xaegnp.exe",  # a bidi control
        b"PRIVMSG #a :has :colons: in it",
        b"PRIVMSG #a:b :odd target",
    ],
)
def test_next_messages_leaves_what_it_does_not_read_as_next_event_would(line: bytes) -> None:
    """A line the fast path takes reads as next_event would have read it, a PRIVMSG
    whose text the face sends as it is; any other is left for next_event, whole."""
    fast, slow = make(), make()
    for protocol in (fast, slow):
        protocol.registered = True
        protocol.receive_data(line + b"\n")
    expected, replies = slow.next_event(), slow.replies()
    taken = fast.next_messages()
    if taken:
        assert replies == [] and isinstance(expected, Command)
        ((target, text),) = taken
        assert expected.message == Message("PRIVMSG", (target, text))
        assert text.isprintable() and text.strip() and "," not in target
        assert fast.next_event() is None
        return
    assert (fast.next_event(), fast.replies()) == (expected, replies)


def test_every_line_of_a_replayed_message_is_dated_without_server_time() -> None:
    """Without server-time each line of a replayed message of several lines, an action's
    too, starts with its date (the later ones would pass for live lines)."""
    protocol = make()
    feed(protocol, b"CAP END\r\n")
    for action, form in ((False, "{}"), (True, "\x01ACTION {}\x01")):
        frame = Frame(
            "message",
            id=7,
            ts="2026-01-02T03:04:05.000Z",
            room="#g",
            nick="b",
            text="one\ntwo",
            history=True,
            action=action,
        )
        lines = [line for line in out(protocol, frame) if "PRIVMSG" in line]
        assert [line.split(" :", 1)[1] for line in lines] == [
            form.format("[2026-01-02 03:04] one"),
            form.format("[2026-01-02 03:04] two"),
        ]
