"""What veto and filter hooks return to say "no"."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Drop", "Reject"]


@dataclass(frozen=True)
class Reject:
    """Returned by a ``chatkit_allow_*`` hook to refuse a login, nick or join.

    The first plugin to return one wins; the client receives an ``error`` frame
    with :attr:`code` and :attr:`reason`.
    """

    reason: str
    """Why, in words for the user ("that nick is reserved")."""
    code: str = "forbidden"
    """The error code sent to the client."""
    details: dict[str, Any] = field(default_factory=dict)
    """Extra fields of the ``error`` frame, e.g. ``{"retry_after": 0.4}`` (``type``, ``code``
    and ``text`` are the frame's own: ignored here)."""


@dataclass(frozen=True)
class Drop:
    """Returned by ``chatkit_filter_message`` to stop a message.

    The message reaches nobody; the sender receives an ``error`` frame with code
    ``dropped`` and :attr:`reason`.
    """

    reason: str
    """Why, in words for the sender ("message contains a banned word")."""
