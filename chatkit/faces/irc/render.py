"""Chat frames as IRC lines, the same for every recipient: the IRC face's codecs.

This file knows no socket, no connection and no recipient. A frame fanned out
(someone's message, join, leave or nick) is rendered once per :class:`Style` (the
server's name and the capabilities that change bytes: ``message-tags``,
``server-time``) and the same bytes go to every IRC client of that style; so the
rendering here may depend on the frame and the style only. What depends on one
client (its nick in numerics, its MOTD, an open batch) is the protocol's
(``protocol.py``), which calls :func:`render` for the shared part.

Rules: every line fits :data:`~chatkit.faces.irc.message.MAX_LINE_BYTES` (long
text is split between PRIVMSGs, at a space where one is near); a multi-line chat
message is one PRIVMSG per line; CR, LF and NUL never reach a parameter.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatkit.codecs import Codec, render_text
from chatkit.faces.irc.message import MAX_LINE_BYTES, Message, escape_tag
from chatkit.frames import Frame
from chatkit.names import SHOWN_HOST

log = logging.getLogger(__name__)
SERVER_FALLBACK = "chatkit"  # the source of a fan-out frame that could not be rendered

__all__ = [
    "BYTE_CAPS",
    "MULTILINE",
    "CodecCache",
    "Style",
    "encode_lines",
    "render",
    "source",
    "split_text",
]

MULTILINE = "draft/multiline"
"""The IRCv3 capability of multi-line messages as one batch (with ``batch``)."""
BYTE_CAPS = frozenset(
    {
        "message-tags",
        "server-time",
        "echo-message",
        MULTILINE,
        "account-tag",
        "account-notify",
        "extended-join",
        "away-notify",
    }
)
"""The capabilities that change what a fan-out sends a client (``echo-message``
through :attr:`Codec.echo`): one codec per set of them in use. (``draft/multiline``
counts only with ``batch``: the protocol leaves it out of a style without it.)"""
USER_HOST = SHOWN_HOST  # the host part of every nick!user@host: one network, no real hosts
# shown (a fan-out's bytes may not depend on who sent, beyond the frame).
MAX_CODECS = 512  # codecs a face keeps: 2**8 capability sets for two server names; a bound
# only against a misuse that would make a new style per connection.
# Commands whose last parameter is a token, not text: written without a ":" if it can be.
_TOKEN_LAST = frozenset(
    {
        "JOIN",
        "NICK",
        "MODE",
        "BATCH",
        "INVITE",
        "CHATHISTORY",
        "004",
        "221",
        "324",
        "329",
        "341",
        "367",
        "728",
    }
)
_UNSAFE = str.maketrans({"\r": " ", "\n": " ", "\0": " "})


@dataclass(frozen=True)
class Style:
    """What a fan-out's bytes depend on besides the frame: the key of one codec."""

    server: str
    """The server's name, the source of server messages and numerics."""
    caps: frozenset[str]
    """Those of :data:`BYTE_CAPS` the client negotiated."""

    @property
    def tags(self) -> bool:
        """Whether the client takes ``msgid`` (and any tag beyond ``time``)."""
        return "message-tags" in self.caps

    @property
    def time(self) -> bool:
        """Whether the client takes the ``time`` tag (``server-time``)."""
        return "server-time" in self.caps


def source(nick: str) -> str:
    """The ``nick!user@host`` a chat user speaks from."""
    return f"{nick}!{nick}@{USER_HOST}"


def encode_lines(messages: list[Message]) -> bytes:
    """``messages`` as CR-LF terminated UTF-8 lines (a lone surrogate becomes ``?``).

    Text (the last parameter of PRIVMSG, NOTICE, PART, QUIT, ERROR, CAP and of most
    numerics) is always written as a trailing parameter, as servers do: some clients
    count on the ``:``.
    """
    text = "".join(f"{_fit(message)}\r\n" for message in messages)
    if "\0" in text or text.count("\r") != len(messages) or text.count("\n") != len(messages):
        # A field with a line break or NUL in it (a plugin's frame): never a forged line.
        text = "".join(f"{_fit(message).translate(_BREAKS)}\r\n" for message in messages)
    return text.encode("utf-8", "replace")


def _fit(message: Message) -> str:
    """``message``'s line, cut so that after its tags it has at most MAX_LINE_BYTES with
    CR-LF (RFC 1459 2.3): a topic, a part or quit reason, a realname, an away text, with a
    long source, can be longer than a client's line (a PRIVMSG's text is split into lines
    before: see ``messages``). The last parameter is cut at a character, or, for a list
    (nicks, rooms, capabilities), before the first name that does not fit whole: a name
    cut short would be another's. Should that not do (a numeric echoing a long name the
    client sent), the longest middle parameters are cut too."""
    trailing = _text_last(message)
    line = message.line(trailing)
    if len(line) * 4 + 2 <= MAX_LINE_BYTES:
        return line  # (the common case: short enough whatever its letters)
    head = line.partition(" ")[2] if message.tags else line
    over = len(head.encode("utf-8", "replace")) + 2 - MAX_LINE_BYTES
    if over <= 0 or not message.params:
        return line
    params = [p.encode("utf-8", "replace") for p in message.params]
    last = params[-1]
    cut = last[: max(0, len(last) - over)]
    if message.command in _LISTS and cut != last:
        cut = cut[: max(0, cut.rfind(b" "))]  # (whole names only; none if one is too long)
    over -= len(last) - len(cut)
    params[-1] = cut
    while over > 0:  # the middle: cut the longest, a character at a time's worth
        longest = max(range(len(params) - 1), key=lambda i: len(params[i]), default=None)
        if longest is None or len(params[longest]) <= 1:
            break
        keep = max(1, len(params[longest]) - over)
        over -= len(params[longest]) - keep
        params[longest] = params[longest][:keep]
    texts = tuple(p.decode("utf-8", "ignore") for p in params)
    return Message(message.command, texts, message.source, message.tags).line(trailing)


_LISTS = frozenset(("303", "319", "353", "CAP"))
"""Commands whose last parameter is a list of names (ISON's, WHOIS' rooms, NAMES', CAP's)."""


_BREAKS = {0x00: " ", 0x0A: " ", 0x0D: " "}


def _text_last(message: Message) -> bool:
    """Whether the last parameter of ``message`` is text (a lone PART's is a channel)."""
    if message.command == "JOIN" and len(message.params) == 3:
        return True  # extended-join: the realname is text
    if message.command in _TOKEN_LAST or message.command == "354":
        return False  # (WHOX: a realname is last only if asked for; ":" if it needs one)
    return len(message.params) > 1 or message.command in ("QUIT", "ERROR", "PING", "AWAY")


def split_text(text: str, budget: int) -> list[str]:
    """``text`` in pieces of at most ``budget`` UTF-8 bytes each, cut after a space when
    one is in the last quarter of a piece, else between two characters. Empty lines
    are dropped (IRC has no empty message); ``[]`` if nothing is left."""
    budget = max(budget, 16)  # a nick near the limit still leaves room for some text
    pieces: list[str] = []
    for line in text.translate({0x0D: " ", 0x00: " "}).split("\n"):
        while len(line.encode("utf-8", "replace")) > budget:
            head = line.encode("utf-8", "replace")[:budget].decode("utf-8", "ignore")
            cut = head.rfind(" ")
            if cut >= len(head) * 3 // 4:
                head = head[: cut + 1]
            pieces.append(head)
            line = line[len(head) :]
        if line.strip():
            pieces.append(line)
    return pieces


def _tags(style: Style, frame: Frame, extra: dict[str, str] | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    fields = frame.fields
    if style.time and isinstance(fields.get("ts"), str):
        tags["time"] = fields["ts"]
    if style.tags and fields.get("id") is not None:
        tags["msgid"] = str(fields["id"])
    account = fields.get("account")
    if "account-tag" in style.caps and isinstance(account, str) and frame.type != "account":
        tags["account"] = account
    if extra:
        tags.update(extra)
    return tags


def _privmsgs(
    style: Style, frame: Frame, sender: str, target: str, tags: dict[str, str]
) -> list[Message]:
    fields = frame.fields
    text = str(fields.get("text", ""))
    stamp = ""
    if fields.get("history") and not style.time:
        # A replayed message without server-time would pass for a live one: each of
        # its lines is dated (one batch of several lines: its first).
        ts = str(fields.get("ts", ""))
        stamp = f"[{ts[:10]} {ts[11:16]}] "
    action = bool(fields.get("action"))
    command = "NOTICE" if fields.get("notice") else "PRIVMSG"
    prefix = f":{source(sender)} {command} {target} :"
    budget = MAX_LINE_BYTES - 2 - len(prefix.encode()) - (len("\x01ACTION \x01") if action else 0)
    if (
        MULTILINE in style.caps
        and not action
        and ("\n" in text.strip() or len(stamp.encode()) + len(text.encode()) > budget)
    ):
        # Several lines, or one too long for a PRIVMSG: one batch, which the client
        # joins back into one message (a long line's pieces: draft/multiline-concat).
        return _multiline(frame, sender, target, stamp + text, budget, tags, command)
    out: list[Message] = []
    # A msgid names one message: the first line carries it, and the lines after it
    # the rest of the tags (clients that drop a msgid seen before would drop them).
    rest = {key: value for key, value in tags.items() if key != "msgid"}
    for piece in split_text(text, budget - len(stamp.encode())):
        piece = stamp + piece
        body = f"\x01ACTION {piece}\x01" if action else piece
        out.append(Message(command, (target, body), source(sender), rest if out else tags))
    return out


def _multiline(
    frame: Frame,
    sender: str,
    target: str,
    text: str,
    budget: int,
    tags: dict[str, str],
    command: str = "PRIVMSG",
) -> list[Message]:
    """A multi-line message as one ``draft/multiline`` batch: its tags (msgid, time) on
    the ``BATCH`` line, a PRIVMSG (or NOTICE) per line, the pieces of a line too long
    for one marked ``draft/multiline-concat``. The reference is the message id's, so
    the bytes are the same for every client of the style. Inside another batch (a
    history replay's ``chathistory``: ``tags`` name it) it is nested, as the batch spec
    has it: its ``BATCH`` lines carry the outer reference, its lines its own."""
    ref = f"ml{frame.fields.get('id') or abs(hash(text)) % 10**12}"
    who = source(sender)
    outer = {"batch": tags["batch"]} if "batch" in tags else {}
    out = [Message("BATCH", (f"+{ref}", MULTILINE, target), who, tags)]
    lines = text.translate({0x0D: " ", 0x00: " "}).split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    for line in lines:
        pieces = split_text(line, budget) or [" "]  # an empty line inside stays a line
        for i, piece in enumerate(pieces):
            inner = {"batch": ref, **({"draft/multiline-concat": ""} if i else {})}
            out.append(Message(command, (target, piece), who, inner))
    out.append(Message("BATCH", (f"-{ref}",), who, outer))
    return out


def render(
    frame: Frame, style: Style, target: str = "*", tags: dict[str, str] | None = None
) -> list[Message]:
    """The IRC messages of ``frame``, for any client of ``style``.

    ``target`` is who server notices are addressed to (``*`` in a fan-out, where the
    recipient is not known); ``tags`` are added to every message (a batch reference).
    A frame IRC has no use for (``pong``) is no message.
    """
    fields: dict[str, Any] = frame.fields
    kind = frame.type
    try:
        all_tags = _tags(style, frame, tags)
        if kind == "message":
            return _privmsgs(style, frame, fields["nick"], fields["room"], all_tags)
        if kind == "private":
            return _privmsgs(style, frame, fields["from"], fields["to"], all_tags)
        if kind == "join":
            params: tuple[str, ...] = (fields["room"],)
            if "extended-join" in style.caps:
                # The account (or *) and the realname: the chat keeps none, the nick.
                params += (str(fields.get("account") or "*"), str(fields["nick"]))
            join = Message("JOIN", params, source(fields["nick"]), all_tags)
            if "away-notify" in style.caps and fields.get("away"):
                # (away-notify: a joiner who is away is followed by its AWAY)
                away = Message(
                    "AWAY", (_safe(str(fields["away"])),), source(fields["nick"]), all_tags
                )
                return [join, away]
            return [join]
        if kind == "away":
            if "away-notify" not in style.caps:
                return []
            text = _safe(str(fields.get("text") or ""))
            return [Message("AWAY", (text,) if text else (), source(fields["nick"]), all_tags)]
        if kind == "account":
            if "account-notify" not in style.caps:
                return []
            account = str(fields.get("account") or "*")
            return [Message("ACCOUNT", (account,), source(fields["nick"]), all_tags)]
        if kind == "leave":
            reason = _safe(str(fields.get("reason") or ""))
            if reason == "part":
                reason = ""  # the chat's default reason: IRC shows none
            elif reason.startswith("part: ") and fields.get("rooms") is None:
                reason = reason[len("part: ") :]  # /part's own text, as IRC's PART carries it
            if fields.get("rooms") is not None:  # left the chat: once, for every room shared
                if reason == "quit" or reason.startswith("quit: "):  # as IRC servers word it,
                    reason = "Q" + reason[1:]  # and as the quitter's ERROR says
                return [Message("QUIT", (reason or "Quit",), source(fields["nick"]), all_tags)]
            if fields.get("by"):  # kicked by an operator
                by = str(fields["by"])
                for prefix in (f"kicked by {by}: ", f"kicked by {by}"):
                    if reason.startswith(prefix):
                        reason = reason[len(prefix) :]
                        break
                kick = (fields["room"], fields["nick"], reason or by)
                return [Message("KICK", kick, source(by), all_tags)]
            params = (fields["room"], reason) if reason else (fields["room"],)
            return [Message("PART", params, source(fields["nick"]), all_tags)]
        if kind == "nick":
            return [Message("NICK", (fields["new"],), source(fields["old"]), all_tags)]
        if kind == "topic":
            topic = (fields["room"], _safe(str(fields["topic"])))
            return [Message("TOPIC", topic, source(fields["nick"]), all_tags)]
        if kind == "notice" and fields.get("kicked"):
            return []  # a kick's announcement: IRC clients see the KICK (a leave with "by")
        if kind == "notice" and fields.get("mode") and fields.get("room"):
            # A moderation action (hub.announce with IRC's terms for it): MODE.
            mode = (str(fields["room"]), _safe(str(fields["mode"])))
            arg = (_safe(str(fields["arg"])),) if fields.get("arg") else ()
            by = str(fields.get("by") or "")  # none: the server's own doing
            return [Message("MODE", mode + arg, source(by) if by else style.server, all_tags)]
        if kind == "ping":
            return [Message("PING", (style.server,))]
        if kind == "pong":
            return []
        if kind == "history":
            return notices(style.server, fields.get("room") or target, render_text(frame))
        if kind == "notice" and fields.get("room"):
            # A room's announcement (hub.announce): to the channel, where it belongs.
            return notices(style.server, str(fields["room"]), f"*** {fields['text']}")
    except (KeyError, TypeError, AttributeError):
        pass  # a plugin's frame without the usual fields: shown as text, below
    return notices(style.server, target, render_text(frame))


def fast_message(style: Style, frame: Frame) -> bytes | None:
    """The bytes of an ordinary room message (one line that fits, no action, notice or
    replay), as ``encode_lines(render(frame, style))`` gives them, written directly; or
    ``None`` for any other, which takes that path. The writer encodes every fanned-out
    message once per style, and most are ordinary: this is a third of the general
    path's cost (a test checks both give the same bytes)."""
    fields = frame.fields
    text, nick, room = fields.get("text"), fields.get("nick"), fields.get("room")
    if not (isinstance(text, str) and isinstance(nick, str) and isinstance(room, str)):
        return None
    if fields.get("action") or fields.get("notice") or fields.get("history"):
        return None
    if "\n" in text or "\r" in text or "\0" in text or not text.strip():
        return None
    if not room or " " in room or room.startswith(":") or "\r" in room or "\n" in room:
        return None
    head = f":{nick}!{nick}@{USER_HOST} PRIVMSG {room} :"
    if "\r" in head or "\n" in head or "\0" in head:
        return None
    line = head + text
    if len(line.encode("utf-8", "replace")) > MAX_LINE_BYTES - 2:
        return None  # split in pieces by the general path
    caps, tags = style.caps, []  # what _tags() gives a message frame, in its order
    ts, ident, account = fields.get("ts"), fields.get("id"), fields.get("account")
    if "\0" in str(ts) or "\0" in str(ident) or "\0" in str(account):
        return None  # (encode_lines makes it a space)
    if "server-time" in caps and isinstance(ts, str):
        tags.append(f"time={_tag(ts)}" if ts else "time")
    if "message-tags" in caps and ident is not None:
        tags.append(f"msgid={_tag(str(ident))}" if str(ident) else "msgid")
    if "account-tag" in caps and isinstance(account, str):
        tags.append(f"account={_tag(account)}" if account else "account")
    if tags:
        line = f"@{';'.join(tags)} {line}"
    return f"{line}\r\n".encode("utf-8", "replace")


def _tag(value: str) -> str:
    """``value`` escaped as a tag value (most need nothing)."""
    return escape_tag(value) if _TAG_SPECIALS.search(value) else value


_TAG_SPECIALS = re.compile(r"[; \\\r\n]")


def notices(server: str, target: str, text: str) -> list[Message]:
    """``text`` as NOTICEs from the server to ``target``, one a line, split to fit."""
    prefix = f":{server} NOTICE {target} :"
    budget = MAX_LINE_BYTES - 2 - len(prefix.encode())
    return [Message("NOTICE", (target, piece), server) for piece in split_text(text, budget)]


def _safe(text: str) -> str:
    return text.translate(_UNSAFE)


class CodecCache:
    """One :class:`Codec` per :class:`Style` in use, built on first use and kept.

    Codecs are compared by identity (they key each frame's cache of bytes): a room
    of IRC clients costs one encoding per distinct style, however many they are.
    """

    def __init__(self) -> None:
        # Synchronize the dict: acceptor and reader threads ask for codecs.
        self._lock = threading.Lock()
        self._codecs: dict[Style, Codec] = {}

    def get(self, style: Style) -> Codec:
        """The codec of ``style`` (the same object every time)."""
        codec = self._codecs.get(style)
        if codec is not None:
            return codec
        with self._lock:
            codec = self._codecs.get(style)
            if codec is None:
                if len(self._codecs) >= MAX_CODECS:
                    self._codecs.clear()  # a safety net; see MAX_CODECS
                name = "irc+" + "+".join(sorted(style.caps)) if style.caps else "irc"
                codec = Codec(
                    name,
                    _serializer(style),
                    echo="echo-message" in style.caps,
                    join_members=True,
                )
                self._codecs[style] = codec
            return codec


def _serializer(style: Style) -> Callable[[Frame], bytes]:
    return functools.partial(_serialize, style)


def _serialize(style: Style, frame: Frame) -> bytes:
    try:
        if frame.type == "message":
            fast = fast_message(style, frame)
            if fast is not None:
                return fast
        return encode_lines(render(frame, style))
    except Exception:  # a plugin's frame with fields of the wrong types
        log.warning("cannot render %r for IRC; sent as text", frame, exc_info=True)
        return encode_lines(notices(SERVER_FALLBACK, "*", render_text(frame)))
