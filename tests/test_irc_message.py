"""The IRC message grammar (chatkit.faces.irc.message), from the modern client protocol
and IRCv3 message-tags: our own cases, written from the specs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatkit.faces.irc.message import (
    MAX_CLIENT_TAG_BYTES,
    MAX_LINE_BYTES,
    MAX_TAG_BYTES,
    IrcError,
    Message,
    escape_tag,
    parse,
    unescape_tag,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("PING", Message("PING")),
        ("ping :abc", Message("PING", ("abc",))),
        ("NICK alice", Message("NICK", ("alice",))),
        ("USER alice 0 * :Alice Liddell", Message("USER", ("alice", "0", "*", "Alice Liddell"))),
        ("PRIVMSG #a :hello there", Message("PRIVMSG", ("#a", "hello there"))),
        ("PRIVMSG #a :", Message("PRIVMSG", ("#a", ""))),  # an empty trailing parameter
        ("PRIVMSG #a ::-)", Message("PRIVMSG", ("#a", ":-)"))),
        ("PRIVMSG #a :a :b", Message("PRIVMSG", ("#a", "a :b"))),
        ("  JOIN   #a,#b   k1 ", Message("JOIN", ("#a,#b", "k1"))),  # extra spaces
        (":alice!a@h PRIVMSG bob :hi", Message("PRIVMSG", ("bob", "hi"), "alice!a@h")),
        ("001 alice :Welcome", Message("001", ("alice", "Welcome"))),
        ("PRIVMSG #a :héllo ☃", Message("PRIVMSG", ("#a", "héllo ☃"))),
        (
            "@time=2026-11-30T12:00:00.000Z;+draft/reply=1;bare :n PRIVMSG #a :x",
            Message(
                "PRIVMSG",
                ("#a", "x"),
                "n",
                {"time": "2026-11-30T12:00:00.000Z", "+draft/reply": "1", "bare": ""},
            ),
        ),
        (r"@a=x\:y\sz\\w\r\n;b=\q;c=end\ PING", Message("PING", (), None,
                                                        {"a": "x;y z\\w\r\n", "b": "q", "c": "end"})),
        ("@bad_key=1;ok=2 PING", Message("PING", (), None, {"ok": "2"})),
        (
            "CMD 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
            Message("CMD", ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13",
                            "14", "15 16")),
        ),
    ],
)  # fmt: skip
def test_parse(line: str, expected: Message) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize("line", ["", "   "])
def test_blank_lines_are_nothing(line: str) -> None:
    assert parse(line) is None


@pytest.mark.parametrize(
    ("line", "numeric"),
    [
        (":source", "421"),
        (":source :trailing", "421"),
        ("@a=1", "421"),
        ("PRIV!MSG #a :x", "421"),
        ("1234 x", "421"),
        ("PRIVMSG #a :" + "x" * (MAX_LINE_BYTES - len("PRIVMSG #a :") - 1), "417"),
        ("PRIVMSG #a :" + "é" * 250, "417"),  # bytes, not characters
        ("@a=" + "x" * MAX_TAG_BYTES + " PING", "417"),
        ("@+a=" + "x" * (MAX_CLIENT_TAG_BYTES - 2) + " PING", "417"),  # 4095 bytes of tags
    ],
)
def test_bad_lines_get_their_numeric(line: str, numeric: str) -> None:
    with pytest.raises(IrcError) as info:
        parse(line)
    assert info.value.numeric == numeric


def test_the_longest_line_passes() -> None:
    line = "PRIVMSG #a :" + "x" * (MAX_LINE_BYTES - 2 - len("PRIVMSG #a :"))
    assert len(line.encode()) + 2 == MAX_LINE_BYTES
    message = parse(line)
    assert message is not None and len(message.params[1]) == MAX_LINE_BYTES - 14


@pytest.mark.parametrize(
    ("message", "line"),
    [
        (Message("PING", ("x",)), "PING x"),
        (Message("PRIVMSG", ("#a", "hi there"), "a!a@h"), ":a!a@h PRIVMSG #a :hi there"),
        (Message("PRIVMSG", ("#a", "")), "PRIVMSG #a :"),
        (Message("PRIVMSG", ("#a", ":)")), "PRIVMSG #a ::)"),
        (Message("001", ("ann", "Welcome")), "001 ann Welcome"),
        (Message("CAP", ("*", "LS", "a b")), "CAP * LS :a b"),
        # A middle parameter that cannot be one (a name a client sent, echoed) is *.
        (Message("401", ("ann", "", "No such nick")), "401 ann * :No such nick"),
        (Message("401", ("ann", ":x", "No such nick")), "401 ann * :No such nick"),
        (Message("401", ("ann", "a b", "No such nick")), "401 ann * :No such nick"),
        (
            Message("TAGMSG", ("#a",), "s", {"time": "t", "x": "a b;c\\", "flag": ""}),
            r"@time=t;x=a\sb\:c\\;flag :s TAGMSG #a",
        ),
    ],
)
def test_line(message: Message, line: str) -> None:
    assert message.line() == line


@given(st.text())
def test_tag_values_survive_escaping(value: str) -> None:
    assert unescape_tag(escape_tag(value)) == value


_middle = st.text(
    st.characters(exclude_characters=" \r\n\0:", exclude_categories=["Cs"]), min_size=1
)
_trailing = st.text(st.characters(exclude_characters="\r\n\0", exclude_categories=["Cs"]))


@given(
    command=st.from_regex(r"[A-Z]{1,10}", fullmatch=True),
    middle=st.lists(_middle, max_size=5),
    trailing=_trailing,
    tags=st.dictionaries(st.from_regex(r"\+?[a-z0-9\-]{1,10}", fullmatch=True), _trailing),
)
def test_messages_survive_a_round_trip(
    command: str, middle: list[str], trailing: str, tags: dict[str, str]
) -> None:
    """Whatever a server writes (within the limits) parses back to the same message."""
    message = Message(command, (*middle, trailing), "server", tags)
    try:
        parsed = parse(message.line())
    except IrcError as exc:
        assert exc.numeric == "417"  # over a limit
        return
    assert parsed == message


@given(st.text(st.characters(exclude_characters="\r\n", exclude_categories=["Cs"])))
def test_any_line_parses_or_is_refused_with_a_numeric(line: str) -> None:
    try:
        parse(line)
    except IrcError as exc:
        assert exc.numeric in ("417", "421")


def test_a_client_may_send_4094_bytes_of_tags() -> None:
    """IRCv3 message-tags: up to 4094 bytes of tag data from a client ("@" and the space
    after it not counted); past that, 417 (above)."""
    message = parse("@+a=" + "x" * (MAX_CLIENT_TAG_BYTES - 3) + " PING x")
    assert message is not None and len(message.tags["+a"]) == MAX_CLIENT_TAG_BYTES - 3
