"""chatkit's wire protocol, sans I/O: bytes in, events out; frames in, bytes out.

This file knows no socket and no thread. :class:`ServerProtocol` holds the state of
one connection as the server sees it; the server feeds it what ``recv`` returned and
sends frames in the codec the protocol chose (:attr:`ServerProtocol.codec`). docs/protocol.md is the
reference for people; this module is the reference for the code.

Rules of the wire: UTF-8, one frame per line ending in ``\\n`` (a ``\\r`` before it
is ignored). The first non-empty line chooses the mode for the whole connection: a
JSON object selects JSON mode (one JSON object per line), anything else selects text
mode (for ``nc`` and telnet: the first line is the nick, every later line a message).

Errors::

    ProtocolError
    ├── LocalProtocolError    chatkit misused this module (a bug on our side)
    └── RemoteProtocolError   the client sent a bad line; carries the error code
                              to reply with; the line is discarded and the
                              connection stays usable
"""

from __future__ import annotations

import enum
import json
import math
import re
import sys
from dataclasses import dataclass
from typing import Any

from chatkit.codecs import JSON_CODEC, TEXT_CODEC, Codec
from chatkit.events import MAX_ID, Hello, Ping, Pong, Request, Say
from chatkit.frames import Frame
from chatkit.names import fold

__all__ = [
    "BIDI_CONTROLS",
    "BIDI_POLICIES",
    "MAX_LINE_BYTES",
    "MAX_MESSAGE_LINES",
    "Closed",
    "Event",
    "Frame",
    "Hello",
    "LineDecoder",
    "LineTooLong",
    "LocalProtocolError",
    "Mode",
    "Ping",
    "Pong",
    "ProtocolError",
    "RemoteProtocolError",
    "Request",
    "Say",
    "ServerProtocol",
    "clean_text",
    "message_body",
]

MAX_MESSAGE_LINES = 20  # lines in one message (a paste): a screenful; IRC has one a message.
MAX_LINE_BYTES = 8192  # bytes, without the "\n". IRC allows 512 and ngIRCd 2 KiB;
# chat lines here may carry JSON framing and multi-byte text, so 8 KiB leaves room
# for a long paragraph while bounding what a client can make the server buffer.


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class ProtocolError(Exception):
    """Base class of the protocol's errors."""


class LocalProtocolError(ProtocolError):
    """This module was used wrongly, e.g. data received after the end of the stream."""


class RemoteProtocolError(ProtocolError):
    """The client sent something this protocol does not accept.

    :attr:`code` is the error code to send back (``bad_frame``,
    ``bad_encoding`` or ``line_too_long``); the offending line is gone and the
    connection may go on.
    """

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        """Stable error code for the ``error`` frame."""
        self.text = text
        """Human explanation for the ``error`` frame."""


# ---------------------------------------------------------------------------
# Modes and events (what a client sends: chatkit.events' Hello, Say, Request,
# Ping and Pong, which every face produces, and this protocol's Closed)
# ---------------------------------------------------------------------------


class Mode(enum.Enum):
    """How a connection speaks, chosen by its first non-empty line."""

    UNKNOWN = "unknown"
    """No line yet."""
    JSON = "json"
    """One JSON object per line, both ways."""
    TEXT = "text"
    """Human-readable lines, for ``nc`` and telnet."""


@dataclass(frozen=True)
class Closed:
    """The client closed its side; no event follows."""


Event = Hello | Say | Request | Ping | Pong | Closed


# ---------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LineTooLong:
    """Stands in :class:`LineDecoder`'s output for a line that was over the limit."""

    limit: int


class LineDecoder:
    """Splits a byte stream into lines, never holding more than about ``max_line`` bytes.

    A line longer than ``max_line`` bytes is not buffered: its bytes are dropped
    as they arrive, up to and including its ``\\n``, and a single
    :class:`LineTooLong` takes its place in the output.
    """

    # One per connection: slots keep an idle connection small.
    __slots__ = ("_buf", "_discarding", "_pending", "_scanned", "max_line")

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        """Longest accepted line in bytes, not counting its end (``\\n`` or ``\\r\\n``)."""
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no b"\n"
        self._discarding = False  # inside an overlong line whose end is not seen yet
        self._pending: list[bytes | LineTooLong] = []

    def feed(self, data: bytes) -> None:
        """Add received bytes; after calling this you must drain :meth:`next_line`."""
        if self._discarding:
            end = data.find(b"\n")
            if end < 0:
                return
            self._discarding = False
            data = data[end + 1 :]
        self._buf += data
        self._split()

    def finish(self) -> None:
        """The stream ended: a last line without its ``\\n`` is a line too (one being
        dropped as too long stays dropped). Drain :meth:`next_line` after it."""
        if self._buf and not self._discarding:
            self.feed(b"\n")

    def next_line(self) -> bytes | LineTooLong | None:
        """Return the next complete line (without ``\\n``), a marker, or ``None``."""
        if self._pending:
            return self._pending.pop(0)
        return None

    @property
    def lines(self) -> list[bytes | LineTooLong]:
        """The complete lines (and markers) not taken yet, oldest first: what
        :meth:`next_line` returns next. A caller may take lines off its front
        (``del decoder.lines[:n]``) instead of calling :meth:`next_line` for each."""
        return self._pending

    def _split(self) -> None:
        buf = self._buf
        # Every complete line at once: one copy and one split for a whole read,
        # however many lines it holds (the hot path of a burst).
        last = buf.rfind(b"\n", self._scanned)
        if last >= 0:
            lines = bytes(buf[:last]).split(b"\n")
            del buf[: last + 1]
            limit = self.max_line
            if last <= limit:  # (no line can be longer than all of them)
                self._pending.extend(lines)
            else:
                self._pending.extend(
                    line
                    if len(line) <= limit or (len(line) == limit + 1 and line.endswith(b"\r"))
                    else LineTooLong(limit)
                    for line in lines
                )
        if len(buf) > self.max_line + buf.endswith(b"\r"):  # (a "\r" may end it: not counted)
            # The line is already too long and has no end yet: drop what we have and
            # the rest of it as it comes (see feed()).
            buf.clear()
            self._discarding = True
            self._pending.append(LineTooLong(self.max_line))
        self._scanned = len(buf)


# Control characters would let one client redraw another's terminal or forge a
# line in text mode; they become U+FFFD (tab becomes a space).
_CONTROL = {c: "\ufffd" for c in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]}
_CONTROL[0x09] = " "
# Bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069)
# reorder the text around them: "\u202egnp.exe" shows as "exe.png" (the "Trojan
# Source" trick). Right-to-left text needs none of them to display right, and the
# marks LRM, RLM and ALM, which reorder nothing beyond themselves, are kept.
BIDI_CONTROLS = frozenset([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
_BIDI = {c: "\ufffd" for c in BIDI_CONTROLS}
_BIDI_RE = re.compile("[\u202a-\u202e\u2066-\u2069]")
BIDI_POLICIES = ("replace", "refuse", "allow")
"""What happens to bidi controls in message text: replaced by U+FFFD (the default),
the line refused with ``bad_text``, or kept."""
_TABLES = {
    (newlines, bidi): {**_CONTROL, **(_BIDI if bidi else {}), **({0x0A: "\n"} if newlines else {})}
    for newlines in (False, True)
    for bidi in (False, True)
}


def clean_text(text: str, *, newlines: bool = False, bidi: str = "replace") -> str:
    """Return ``text`` with control characters replaced (tab by a space, others by U+FFFD).

    ``newlines`` keeps line breaks (``\\r\\n`` and ``\\r`` become ``\\n``);
    ``bidi`` is one of :data:`BIDI_POLICIES`: ``"replace"`` replaces bidi controls
    too, ``"refuse"`` raises :class:`RemoteProtocolError` (``bad_text``) if there
    are any, ``"allow"`` keeps them.
    """
    if text.isprintable():
        # No control, bidi or other format character (all non-printable): nothing to
        # replace or refuse. The common case, on every message, checked in C.
        return text
    if bidi == "refuse" and _BIDI_RE.search(text):
        raise RemoteProtocolError(
            "bad_text",
            "bidirectional control characters (U+202A-U+202E, U+2066-U+2069) are not "
            "allowed on this server; right-to-left text needs none",
        )
    if newlines and "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.translate(_TABLES[newlines, bidi == "replace"])


# ---------------------------------------------------------------------------
# The connection state machine
# ---------------------------------------------------------------------------


def _decode(line: bytes) -> str:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(
            "bad_encoding", f"line is not valid UTF-8 (bad byte at offset {exc.start})"
        ) from None
    if text.endswith("\r"):
        text = text[:-1]
    return text.removeprefix("\ufeff")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"{text} is out of range")
    return value


_INT_DIGITS = sys.get_int_max_str_digits()  # the longest integer int() converts

# JSON as RFC 8259 defines it: no NaN or Infinity (Python's json accepts them) and no
# number that would only round-trip as one; a frame we parse can always be re-encoded.
_JSON = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def _parse_json(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text``, or ``None`` if it is not JSON at all.

    Raises :class:`RemoteProtocolError`: ``bad_encoding`` if a string in it, key or
    value, is not Unicode text (JSON's ``\\ud800`` escapes can spell lone
    surrogates, which no UTF-8 encoder, database or terminal accepts);
    ``bad_frame``, saying why, if it is JSON but for a value that could not be sent
    back (NaN, an infinity, a number too large, nesting too deep).
    """
    try:
        try:
            # raw_decode: what decode() does without its two whitespace regexes; a line
            # with space around the object takes decode() (raw_decode refuses a leading
            # one).
            obj, end = _JSON.raw_decode(text)
            if end != len(text) and text[end:].strip(" \t\r\n"):
                return None
        except json.JSONDecodeError:
            obj = _JSON.decode(text)
    except json.JSONDecodeError:
        return None
    except ValueError as exc:  # (from _no_constant, _finite_float or int())
        why = str(exc) if "digits" not in str(exc) else f"an integer of over {_INT_DIGITS} digits"
        raise RemoteProtocolError("bad_frame", f"not a frame: {why}") from None
    except RecursionError:
        raise RemoteProtocolError("bad_frame", "not a frame: nested too deep") from None
    if not isinstance(obj, dict):
        return None
    if "\\u" in text:  # the only way a surrogate gets in: the line itself is UTF-8
        _check_strings(obj)
    return obj


_JSON_START = re.compile(r'\s*\{\s*"')
"""The start of a line meant as a JSON object (a nick may start with ``{``, but no
nick has a ``"``)."""


def _not_json(text: str) -> str:
    """Why ``text``, which :func:`_parse_json` found no JSON object, is not one."""
    try:
        obj, end = _JSON.raw_decode(text.strip(" \t\r\n\ufeff"))
    except json.JSONDecodeError as exc:
        return f"not a JSON object: {exc.msg.removesuffix(' at')} at character {exc.pos + 1}"
    if not isinstance(obj, dict):
        return f"not a JSON object: a JSON {type(obj).__name__} (frames are objects)"
    return f"not a JSON object: text after the object at character {end + 1}"


def _check_strings(obj: dict[str, Any]) -> None:
    """Raise ``bad_encoding`` naming the first member holding a lone surrogate."""
    stack: list[tuple[str, Any]] = [(str(key), value) for key, value in obj.items()]
    for key in obj:
        if not _is_text(key):
            raise _not_text("a member name")
    while stack:  # iterative: a deeply nested value cannot exhaust the C stack
        where, value = stack.pop()
        if isinstance(value, str):
            if not _is_text(value):
                raise _not_text(f"'{_printable(where)}'")
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _is_text(key):
                    raise _not_text(f"a member name in '{_printable(where)}'")
                stack.append((where, item))
        elif isinstance(value, list):
            stack.extend((where, item) for item in value)


def _is_text(value: str) -> bool:
    """Whether ``value`` is Unicode text (no lone surrogate), so UTF-8 can encode it."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("ascii", "replace")[:40]


def _not_text(where: str) -> RemoteProtocolError:
    return RemoteProtocolError(
        "bad_encoding",
        f"{where} is not valid Unicode text (a lone surrogate such as \\ud800); send UTF-8 text",
    )


def _field(obj: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = obj.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        what = "a string" if required else "a string when given"
        raise RemoteProtocolError("bad_frame", f"'{obj['type']}' needs '{name}' as {what}")
    return value


def _count(obj: dict[str, Any], name: str, high: int) -> int | None:
    """The optional whole number ``name`` of ``obj``, from 0 to ``high``."""
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise RemoteProtocolError(
            "bad_frame", f"'{obj['type']}' needs '{name}' as a whole number from 0 when given"
        )
    return value


def message_body(text: str) -> str:
    """``text`` as the server looks at a message for a leading ``/`` (a command): one
    of several lines without the line breaks at either end (``\\r\\n`` and ``\\r``
    are line breaks), so ``"\\n/quit"`` is ``/quit``. What a client escaping someone
    else's text must go by too (``Client.say(literal=True)``)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.strip("\n") if "\n" in text else text


def _say(text: str, room: str | None, rules: _TextRules) -> Say:
    text = clean_text(text, newlines=rules.max_lines > 1, bidi=rules.bidi)
    if "\n" in text:
        text = message_body(text)
        lines = text.count("\n") + 1
        if lines > rules.max_lines:
            raise RemoteProtocolError(
                "too_many_lines",
                f"a message may have at most {rules.max_lines} lines, not {lines}; "
                "send the rest as another message",
            )
    if text.startswith("//"):
        return Say(text[1:], room)
    return Say(text, room, command=text.startswith("/"))


@dataclass(frozen=True)
class _TextRules:
    """How message text is checked: the most lines in one message, and the bidi policy."""

    max_lines: int = 20
    bidi: str = "replace"


_HELLO_OWN = frozenset(("type", "nick", "replay", "since", "room", "rooms"))  # the core's


def _json_event(obj: dict[str, Any], rules: _TextRules) -> Event:
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise RemoteProtocolError("bad_frame", "a frame needs a 'type' string")
    if kind == "hello":
        rooms = obj.get("rooms")
        if rooms is not None:
            if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
                raise RemoteProtocolError("bad_frame", "'hello' needs 'rooms' as a list of strings")
            if obj.get("room") is not None:
                raise RemoteProtocolError("bad_frame", "'hello' takes 'room' or 'rooms', not both")
        return Hello(
            clean_text(_field(obj, "nick") or ""),
            replay=_count(obj, "replay", MAX_ID),
            since=_count(obj, "since", MAX_ID),
            room=_field(obj, "room", required=False),
            rooms=None if rooms is None else tuple(rooms),
            fields={k: v for k, v in obj.items() if k not in _HELLO_OWN},
        )
    if kind == "say":
        text = _field(obj, "text") or ""
        if not text.strip():
            # Nothing to show (text mode skips blank lines, IRC answers 412).
            raise RemoteProtocolError("bad_frame", "'say' needs some text, not only blanks")
        return _say(text, _field(obj, "room", required=False), rules)
    if kind == "ping":
        return Ping(ready=obj.get("ready") is True)
    if kind == "pong":
        return Pong()
    if not _REQUEST_TYPE.fullmatch(kind):
        raise RemoteProtocolError(
            "bad_frame", f"bad frame type {kind!r}: types are lower-case names (hello, say, ...)"
        )
    return Request(kind, {k: v for k, v in obj.items() if k != "type"})


_REQUEST_TYPE = re.compile(r"[a-z][a-z0-9_]{0,31}")


class ServerProtocol:
    """The server's side of one connection.

    Receiving data: call :meth:`receive_data` with what ``recv`` returned (or
    :meth:`receive_eof` when it returned ``b""``), then call :meth:`next_event`
    until it returns ``None``. Handle each event before asking for the next: in
    text mode the meaning of a line depends on :attr:`logged_in`, which the
    protocol learns from what it sends (the ``welcome`` frame).

    Sending events: :meth:`send` turns a :class:`Frame` for this connection alone
    into bytes and notes what it says about the connection; the caller writes the
    bytes to the socket. Frames fanned out to many connections (messages, other
    people's joins) are encoded once in :attr:`codec`, the codec of this
    connection's mode (JSON until the first line says otherwise), without passing
    through here: they say nothing about this connection.
    """

    # One per connection: slots keep an idle connection small.
    __slots__ = (
        "_closed_sent",
        "_decoder",
        "_eof",
        "_rules",
        "blank_lines",
        "greeted",
        "logged_in",
        "mode",
        "password_for",
    )

    def __init__(
        self,
        max_line: int = MAX_LINE_BYTES,
        *,
        max_message_lines: int = MAX_MESSAGE_LINES,
        bidi: str = "replace",
    ) -> None:
        if bidi not in BIDI_POLICIES:
            raise LocalProtocolError(f"bidi must be one of {BIDI_POLICIES}, not {bidi!r}")
        self.mode = Mode.UNKNOWN
        """The connection's mode, fixed by its first non-empty line."""
        self.logged_in = False
        """True once a ``welcome`` was sent (text mode reads lines as nicks until then)."""
        self.password_for: str | None = None
        """Text mode: the registered nick a login was just refused for (its password
        missing or wrong). The next line is its password, typed alone, unless it is
        ``/nick NICK``: never taken for a nick, which everyone would be shown. Set by
        the caller, which knows of the refusal."""
        self.blank_lines = 0
        """Blank lines skipped since the caller last set this back to 0: they carry
        nothing, but a caller may count them (the server's ``free_lines``)."""
        self.greeted = False
        """Set by the caller once it showed the connection a text prompt: until the
        first line, frames are sent in text (a person at it reads them), not JSON."""
        self._decoder = LineDecoder(max_line)
        self._rules = _TextRules(max_message_lines, bidi)
        self._eof = False
        self._closed_sent = False

    # -- receiving data ------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the socket; after calling this you must drain :meth:`next_event`."""
        if self._eof:
            raise LocalProtocolError("receive_data() after receive_eof()")
        self._decoder.feed(data)

    def receive_eof(self) -> None:
        """Note that the client closed its side; a last line without its ``\\n``
        counts as a line (``printf 'hi' | nc``).

        After calling this you must drain :meth:`next_event`, whose last event is
        :class:`Closed`. ``receive_eof()`` is idempotent.
        """
        if not self._eof:
            self._decoder.finish()
        self._eof = True

    def next_event(self) -> Event | None:
        """Return the next event, or ``None`` if more data is needed.

        Three outcomes: an event, which you handle before calling again; ``None``,
        after which you must feed more data; or :class:`RemoteProtocolError`, which
        means one bad line was discarded: reply with its ``code`` and call again.
        """
        while True:
            item = self._decoder.next_line()
            if item is None:
                if self._eof and not self._closed_sent:
                    self._closed_sent = True
                    return Closed()
                return None
            if isinstance(item, LineTooLong):
                raise RemoteProtocolError(
                    "line_too_long", f"line longer than {item.limit} bytes was discarded"
                )
            text = _decode(item)
            if not text.strip():
                self.blank_lines += 1  # (the face counts them against free_lines)
                continue  # empty lines carry nothing (they still count as activity)
            if self.mode is Mode.UNKNOWN:
                try:
                    obj = _parse_json(text) if text.lstrip().startswith("{") else None
                except RemoteProtocolError:
                    self.mode = Mode.JSON  # JSON, but for a bad value: a JSON client
                    raise
                if obj is None and _JSON_START.match(text):
                    # Meant as JSON ({" starts no nick), but broken: said in JSON, and
                    # the mode is still open (a corrected line decides it).
                    raise RemoteProtocolError("bad_frame", _not_json(text))
                self.mode = Mode.JSON if obj is not None else Mode.TEXT
                if obj is not None:
                    return _json_event(obj, self._rules)
            if self.mode is Mode.JSON:
                obj = _parse_json(text)
                if obj is None:
                    raise RemoteProtocolError("bad_frame", _not_json(text))
                return _json_event(obj, self._rules)
            if not self.logged_in:
                nick = text.strip()
                wanted, self.password_for = self.password_for, None
                if wanted is not None and not nick.startswith("/"):
                    first, _, rest = nick.partition(" ")
                    if not (rest.strip() and fold(first) == fold(wanted)):
                        return Hello(wanted, fields={"password": nick})  # the password alone
                    # (else the nick again and its password: as a first try is read)
                if nick.startswith("/"):  # a command before the nick: no nick has a "/"
                    words = nick.split()
                    if words[0].lower() == "/quit":
                        self._closed_sent = True
                        return Closed()
                    if words[0].lower() == "/nick" and len(words) == 2:
                        return Hello(clean_text(words[1]))  # (what a nick refused is told)
                    raise RemoteProtocolError(
                        "not_logged_in",
                        "log in first: type a nick and press Enter "
                        "(then /help lists the commands; /quit leaves)",
                    )
                nick, _, password = nick.partition(" ")
                if password.strip():  # "NICK PASSWORD": a registered nick, from nc
                    return Hello(clean_text(nick), fields={"password": password.strip()})
                return Hello(clean_text(nick))
            return _say(text, None, self._rules)

    def next_messages(self, limit: int = 64) -> list[tuple[str | None, str]]:
        """Take the plain messages at the head of the received lines, at most ``limit``:
        a fast path for the hot one, a burst of chat lines.

        In JSON mode, each line that is a ``say`` frame whose text needs no cleaning
        (printable, one line, no leading ``/``, not blank) and whose ``room`` is a
        string or absent is taken as ``(room, text)``: what :meth:`next_event` would
        have returned as ``Say(text, room)``. The first line that is anything else
        (another frame type, a command, a bad line, text to clean) stops it, and
        stays for :meth:`next_event`, which handles it as ever. Returns ``[]`` in
        text mode and before the mode is known. Call it, then :meth:`next_event`.
        """
        if self.mode is not Mode.JSON:
            return []
        pending = self._decoder.lines
        taken: list[tuple[str | None, str]] = []
        raw_decode = _JSON.raw_decode
        for line in pending:
            # Each test sends the line the general way when anything may differ: a
            # marker for a line too long, a "\\u" escape (a surrogate to check), a
            # "\\r", a BOM or spaces around the object (raw_decode refuses a leading
            # one and stops before a trailing one), text to clean.
            if len(taken) == limit or type(line) is not bytes:
                break
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                break
            if "\\u" in text:
                break
            try:
                obj, end = raw_decode(text)
            except (ValueError, RecursionError):
                break
            if end != len(text) or type(obj) is not dict or obj.get("type") != "say":
                break
            said, room = obj.get("text"), obj.get("room")
            if type(said) is not str or not said.isprintable() or said.startswith("/"):
                break  # (not printable: control, bidi or line-break characters to clean)
            if not said or said.isspace() or not (room is None or type(room) is str):
                break
            taken.append((room, said))
        if taken:
            del pending[: len(taken)]
        return taken

    # -- sending events ------------------------------------------------------

    @property
    def codec(self) -> Codec:
        """The codec frames are sent in: the mode's (JSON, text).

        Before the mode is known (the server refuses a connection before its first
        line) it is JSON, which people can still read; text once :attr:`greeted`.
        """
        if self.mode is Mode.TEXT or (self.mode is Mode.UNKNOWN and self.greeted):
            return TEXT_CODEC
        return JSON_CODEC

    def send(self, frame: Frame) -> bytes:
        """Return the bytes of ``frame`` for this connection; you must then write them.

        Safe from any thread: a ``welcome`` sets :attr:`logged_in` (one atomic write;
        the server sends it on the reader's thread, before the reader asks for the
        next event).
        """
        if frame.type == "welcome":
            self.logged_in = True
        return frame.encode(self.codec)
