"""What the server sends, before it is bytes: a :class:`Frame` is a type and its fields.

This file knows no socket, no wire format and no client. The hub and the plugins
build frames; a codec (chatkit/codecs.py), chosen per connection, turns them into
bytes, and a frame remembers its bytes per codec so that a broadcast encodes once
per codec in use, never once per recipient.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Frame", "Serializer"]


class Serializer(Protocol):
    """What a frame needs of a codec (``chatkit.codecs.Codec`` is one): hashable, by
    identity, and able to turn a frame into bytes."""

    def serialize(self, frame: Frame) -> bytes:
        """The bytes of ``frame``, line end included, computed afresh."""
        ...


class Frame:
    """One server-to-client frame: a ``type`` and its fields, encoded once per codec.

    A broadcast builds one frame and hands the same bytes to every recipient that
    uses a codec: :meth:`encode` caches its result. Frames are immutable once built.
    """

    __slots__ = ("_encoded", "fields", "origin", "type")

    def __init__(self, type: str, **fields: Any) -> None:
        self.type = type
        """The frame type (``message``, ``join``, ...)."""
        self.fields = fields
        """The frame's fields, in documented order; do not change after building."""
        self.origin: int | None = None
        """The id of the session whose message this is (set by the hub on ``message``
        and ``private`` frames before they are fanned out), else ``None``. A codec
        whose clients must not get their own messages back (``Codec.echo`` false: IRC
        without ``echo-message``) makes the fan-out skip them for their sender."""
        self._encoded: dict[Serializer, bytes] = {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this frame."""
        return {"type": self.type, **self.fields}

    def encode(self, codec: Serializer) -> bytes:
        """The bytes of this frame in ``codec``, line end included (cached per codec)."""
        data = self._encoded.get(codec)
        if data is None:
            # Two threads may both get here for one frame; both compute the same
            # bytes, so the race is harmless and needs no lock.
            data = codec.serialize(self)
            self._encoded[codec] = data
        return data

    def __repr__(self) -> str:
        return f"Frame({self.type!r}, {self.fields!r})"
