"""Codecs: how frames become bytes for one kind of client.

This file knows no socket and no connection. A :class:`Codec` is chosen per
connection (the line protocol picks :data:`JSON_CODEC` or :data:`TEXT_CODEC` from
a client's first line); a fan-out encodes a frame once per codec in use and hands
the same ``bytes`` to every recipient of that codec. ``Frame.encode(codec)`` caches
the result in the frame, so callers never encode twice.

It also holds the one wording of frames for people (:func:`render_text`): text mode
sends it, ``chatkit join`` prints it, and the terminal client styles its parts
(:func:`render_parts`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from chatkit.frames import Frame

__all__ = [
    "JSON_CODEC",
    "TEXT_CODEC",
    "Codec",
    "Part",
    "fast_json_message",
    "render_parts",
    "render_text",
]


class Codec:
    """A wire format for frames: a :attr:`name` and a way to serialize a frame.

    Instances are compared by identity (they key each frame's cache of bytes):
    make one per format, at import time, and share it.
    """

    __slots__ = ("_serialize", "echo", "join_members", "name")

    def __init__(
        self,
        name: str,
        serialize: Callable[[Frame], bytes],
        *,
        echo: bool = True,
        join_members: bool = False,
    ) -> None:
        self.name = name
        """A short name for logs and reprs (``json``, ``text``)."""
        self.echo = echo
        """Whether a client gets its own messages back from a fan-out (JSON and text
        clients do: the copy carries the message's id). False (IRC clients that did not
        negotiate ``echo-message``): the fan-out skips, for each recipient in this
        codec, the frames whose :attr:`Frame.origin` is its own session."""
        self.join_members = join_members
        """Whether a client's own ``join`` must name the room's members (``members``,
        taken under the hub's lock, so it matches the join exactly) and reach the
        client through its channel's ``encode``: IRC clients do (the join is followed
        by the names list). False (JSON and text clients): the own join is the same
        frame the other members get, encoded once for all."""
        self._serialize = serialize

    def serialize(self, frame: Frame) -> bytes:
        """The bytes of ``frame``, line end included, computed afresh (not cached).

        Call :meth:`encode` (or ``frame.encode(codec)``) instead, which caches.
        """
        return self._serialize(frame)

    def encode(self, frame: Frame) -> bytes:
        """The bytes of ``frame`` in this codec, cached in the frame."""
        return frame.encode(self)

    def __repr__(self) -> str:
        return f"<Codec {self.name}>"


def _line(text: str) -> bytes:
    # Encodable by construction: what comes in is checked to be Unicode text (see
    # protocol._parse_json), and "replace" turns anything a plugin got wrong (a lone
    # surrogate) into "?" rather than failing the send.
    return (text + "\n").encode("utf-8", "replace")


# default=str: a plugin's field of another type is sent as its text, never an
# exception in the middle of a fan-out. One encoder for every frame: json.dumps with
# options builds a new JSONEncoder per call. (Its encode() keeps no state between
# calls, so threads may share it.)
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def _json_line(frame: Frame) -> bytes:
    fast = fast_json_message(frame)
    return _line(_json(frame.to_dict())) if fast is None else fast


_MESSAGE_KEYS = ("id", "ts", "room", "nick", "text")
_ACCOUNT_KEYS = (*_MESSAGE_KEYS, "account")


def fast_json_message(frame: Frame) -> bytes | None:
    """The JSON line of an ordinary room message (``id``, ``ts``, ``room``, ``nick``,
    ``text``, maybe ``account``: what ``hub.message_frame`` makes of a plain message), as
    the general path gives it, written directly; or ``None`` for any other frame, which
    takes that path. The writer encodes every fanned-out message once per codec, and most
    are ordinary: this costs a third of the general path (a test checks both give the
    same bytes)."""
    if frame.type != "message":
        return None
    fields = frame.fields
    keys = tuple(fields)
    if keys != _MESSAGE_KEYS and keys != _ACCOUNT_KEYS:
        return None
    ident, ts, room, nick = fields["id"], fields["ts"], fields["room"], fields["nick"]
    text, account = fields["text"], fields.get("account", "")
    if type(ident) is not int or not (
        type(ts) is str
        and type(room) is str
        and type(nick) is str
        and type(text) is str
        and type(account) is str
    ):
        return None
    string = _string
    line = (
        f'{{"type":"message","id":{ident},"ts":{string(ts)},"room":{string(room)},'
        f'"nick":{string(nick)},"text":{string(text)}'
    )
    if len(keys) == len(_ACCOUNT_KEYS):
        line += f',"account":{string(account)}'
    return (line + "}\n").encode("utf-8", "replace")


# How the JSON encoder above writes a string (ensure_ascii=False): the same C function.
_string = json.encoder.encode_basestring


def _text_line(frame: Frame) -> bytes:
    return _line(render_text(frame))


# ---------------------------------------------------------------------------
# Text rendering: the one wording of every frame, for people
# ---------------------------------------------------------------------------

Part = tuple[str, str]
"""A piece of a rendered frame: ``(role, text)``. The roles let a client style what the
text codec prints plainly: ``""`` (plain), ``"text"`` (a message's text, last, which may hold
line breaks), ``"nick"``, ``"from"``, ``"to"`` (a nick, with its brackets: the frame's field
of that name), ``"room"`` (a message's room), ``"pm"`` (a private message's markers),
``"action"`` (an action's markers) and ``"when"`` (a replayed message's date and time)."""


def _message_parts(f: dict[str, Any]) -> list[Part]:
    # History (replayed) messages carry their date and time after the room, so
    # they cannot be mistaken for live ones: "[#general] 2026-11-24 09:45 <alice> hi".
    when: list[Part] = [("when", f" {f['ts'][:10]} {f['ts'][11:16]}")] if f.get("history") else []
    if "room" in f:
        parts: list[Part] = [("room", f"[{f['room']}]"), *when, ("", " ")]
        if f.get("action"):
            parts += [("action", "* "), ("nick", str(f["nick"])), ("action", " ")]
        elif f.get("notice"):  # IRC's way: -alice- text
            parts += [("nick", f"-{f['nick']}-"), ("", " ")]
        else:
            parts += [("nick", f"<{f['nick']}>"), ("", " ")]
    else:
        parts = [("pm", "[pm]"), *when, ("", " ")]
        if f.get("action"):
            parts += [("action", "* "), ("from", str(f["from"])), ("pm", " -> ")]
            parts += [("to", str(f["to"])), ("action", " ")]
        else:
            bracket = ("-", "-") if f.get("notice") else ("<", ">")
            parts += [("pm", bracket[0]), ("from", str(f["from"])), ("pm", " -> ")]
            parts += [("to", str(f["to"])), ("pm", bracket[1]), ("", " ")]
    return [*parts, ("text", str(f["text"]))]


def _history(f: dict[str, Any]) -> str:
    where = f.get("room") or f"your conversation with {f.get('with')}"
    count = f["count"]
    if f.get("stored") is False and not count:
        return f"*** this server does not keep private messages: no history of {where}"
    if not count:
        return f"*** no earlier messages in {where}"
    text = f"*** {count} earlier message{'s' if count != 1 else ''} of {where} above"
    if f.get("more") and f.get("first") is not None:
        target = f.get("room") or f.get("with")
        text += f"; earlier ones: /history {target} {count} before {f['first']}"
    return text


def _leave(f: dict[str, Any]) -> str:
    reason = f.get("reason")
    rooms = ", ".join(f.get("rooms") or [f["room"]])
    return f"* {f['nick']} left {rooms}" + (f" ({reason})" if reason else "")


_LINES: dict[str, Callable[[dict[str, Any]], str]] = {
    "welcome": lambda f: (
        f"* Welcome to chatkit {f['version']}, {f['nick']}! "
        + (f"You are in {', '.join(f['rooms'])}. " if f["rooms"] else "You are in no room yet. ")
        + "Type /help for commands."
    ),
    "join": lambda f: (
        f"* {f['nick']} joined {f['room']}" + (f" (away: {f['away']})" if f.get("away") else "")
    ),
    "away": lambda f: (
        f"* {f['nick']} is away: {f['text']}" if f.get("text") else f"* {f['nick']} is back"
    ),
    "leave": _leave,
    "nick": lambda f: f"* {f['old']} is now known as {f['new']}",
    "account": lambda f: (
        f"* {f['nick']} is identified as {f['account']}"
        if f.get("account")
        else f"* {f['nick']} is no longer identified"
    ),
    "topic": lambda f: (
        f"* topic of {f['room']}: {f['topic']} (set by {f['nick']})"
        if f.get("join")  # the topic a joiner finds, not one set now
        else f"* {f['nick']} set the topic of {f['room']}: {f['topic']}"
        if f["topic"]
        else f"* {f['nick']} cleared the topic of {f['room']}"
    ),
    "history": _history,
    "reply": lambda f: str(f["text"]),
    "notice": lambda f: "\n".join(  # (each line marked: none passes for a line of chat)
        f"*** [{f['room']}] {line}"
        if f.get("room") and f["room"] not in str(f["text"])  # which room, unless it says
        else f"*** {line}"
        for line in str(f["text"]).split("\n")
    ),
    "error": lambda f: f"error [{f['code']}]: {f['text']}",
    "pong": lambda f: "pong",
    "ping": lambda f: "ping? (send any line, even an empty one, to stay connected)",
}


def render_parts(frame: Frame | Mapping[str, Any]) -> list[Part]:
    """``frame`` for people, in :data:`Part`\\ s: the wording of :func:`render_text`, with
    the role of each piece, for a client that styles it (the terminal colours nicks).

    ``frame`` is a :class:`~chatkit.frames.Frame` or the dict of a JSON frame.
    """
    if isinstance(frame, Frame):
        kind, fields = frame.type, frame.fields
    else:
        kind, fields = str(frame.get("type")), {k: v for k, v in frame.items() if k != "type"}
    try:
        if kind in ("message", "private"):
            return _message_parts(fields)
        line = _LINES.get(kind)
        if line is not None:
            return [("", line(fields))]
    except (KeyError, TypeError, IndexError, AttributeError):
        pass  # a plugin's frame without the usual fields: shown as its fields
    return [("", f"{kind}: {json.dumps(fields, ensure_ascii=False, default=str)}")]


def render_text(frame: Frame | Mapping[str, Any]) -> str:
    """``frame`` for people (possibly several lines, no final newline): text mode's line,
    what ``chatkit join`` prints, what the terminal client shows after the time.

    A message of several lines: each line carries the message's prefix, so no line of
    one person's message can pass for another's.
    """
    parts = render_parts(frame)
    role, text = parts[-1]
    if role == "text" and "\n" in text:
        prefix = "".join(piece for _, piece in parts[:-1])
        return "\n".join(prefix + line for line in text.split("\n"))
    return "".join(piece for _, piece in parts)


JSON_CODEC = Codec("json", _json_line)
"""One JSON object per line: programs, and the ``chatkit`` client."""
TEXT_CODEC = Codec("text", _text_line)
"""Human-readable lines, for ``nc`` and telnet."""
