"""Codecs: how frames become bytes for one kind of client.

This file knows no socket and no connection. A :class:`Codec` is chosen per
connection (the line protocol picks :data:`JSON_CODEC` or :data:`TEXT_CODEC` from
a client's first line); a fan-out encodes a frame once per codec in use and hands
the same ``bytes`` to every recipient of that codec. ``Frame.encode(codec)`` caches
the result in the frame, so callers never encode twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chatkit.frames import Frame

__all__ = ["JSON_CODEC", "TEXT_CODEC", "Codec", "render_text"]


class Codec:
    """A wire format for frames: a :attr:`name` and a way to serialize a frame.

    Instances are compared by identity (they key each frame's cache of bytes):
    make one per format, at import time, and share it.
    """

    __slots__ = ("_serialize", "echo", "name")

    def __init__(
        self, name: str, serialize: Callable[[Frame], bytes], *, echo: bool = True
    ) -> None:
        self.name = name
        """A short name for logs and reprs (``json``, ``text``)."""
        self.echo = echo
        """Whether a client gets its own messages back from a fan-out (JSON and text
        clients do: the copy carries the message's id). False (IRC clients that did not
        negotiate ``echo-message``): the fan-out skips, for each recipient in this
        codec, the frames whose :attr:`Frame.origin` is its own session."""
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


def _json_line(frame: Frame) -> bytes:
    # default=str: a plugin's field of another type is sent as its text, never an
    # exception in the middle of a fan-out.
    return _line(
        json.dumps(frame.to_dict(), ensure_ascii=False, separators=(",", ":"), default=str)
    )


def _text_line(frame: Frame) -> bytes:
    return _line(render_text(frame))


def _render_message(f: dict[str, Any]) -> str:
    # History (replayed) messages carry their date and time after the room, so
    # they cannot be mistaken for live ones: "[#general] 2026-11-24 09:45 <alice> hi".
    when = f" {f['ts'][:10]} {f['ts'][11:16]}" if f.get("history") else ""
    if "room" in f:
        if f.get("action"):
            prefix = f"[{f['room']}]{when} * {f['nick']} "
        else:
            prefix = f"[{f['room']}]{when} <{f['nick']}> "
    elif f.get("action"):
        prefix = f"[pm]{when} * {f['from']} -> {f['to']}: "
    else:
        prefix = f"[pm]{when} <{f['from']} -> {f['to']}> "
    # A message of several lines: each line carries the prefix, so no line of one
    # person's message can pass for another's.
    return "\n".join(prefix + line for line in str(f["text"]).split("\n"))


def _render_history(f: dict[str, Any]) -> str:
    where = f.get("room") or f"your conversation with {f.get('with')}"
    count = f["count"]
    if not count:
        return f"*** no earlier messages in {where}"
    text = f"*** {count} earlier message{'s' if count != 1 else ''} of {where} above"
    return text + ("; /history with a larger N shows more" if f.get("more") else "")


def _render_leave(f: dict[str, Any]) -> str:
    reason = f.get("reason")
    rooms = ", ".join(f.get("rooms") or [f["room"]])
    return f"* {f['nick']} left {rooms}" + (f" ({reason})" if reason else "")


_TEXT_RENDERERS: dict[str, Any] = {
    "welcome": lambda f: (
        f"* Welcome to chatkit {f['version']}, {f['nick']}! You are in "
        f"{', '.join(f['rooms'])}. Type /help for commands."
    ),
    "message": _render_message,
    "private": _render_message,
    "join": lambda f: f"* {f['nick']} joined {f['room']}",
    "leave": _render_leave,
    "nick": lambda f: f"* {f['old']} is now known as {f['new']}",
    "history": _render_history,
    "reply": lambda f: f["text"],
    "notice": lambda f: f"*** {f['text']}",
    "error": lambda f: f"error [{f['code']}]: {f['text']}",
    "pong": lambda f: "pong",
    "ping": lambda f: "ping? (send any line, even an empty one, to stay connected)",
}


def render_text(frame: Frame) -> str:
    """The text-mode rendering of ``frame`` (possibly several lines, no final newline)."""
    renderer = _TEXT_RENDERERS.get(frame.type)
    if renderer is not None:
        try:
            text: str = renderer(frame.fields)
            return text
        except (KeyError, TypeError, IndexError, AttributeError):
            pass  # a plugin's frame without the usual fields: shown as its fields
    return f"{frame.type}: {json.dumps(frame.fields, ensure_ascii=False, default=str)}"


JSON_CODEC = Codec("json", _json_line)
"""One JSON object per line: programs, and the ``chatkit`` client."""
TEXT_CODEC = Codec("text", _text_line)
"""Human-readable lines, for ``nc`` and telnet."""
