"""What veto and filter hooks return to say "no" (or "not yet")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Drop", "Reject", "Wait"]


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
class Wait:
    """Returned by ``chatkit_allow_input`` to hold an event back, not refuse it: the
    client's reader delivers the client's earlier messages, waits :attr:`seconds`
    (reading nothing more from it meanwhile: TCP slows the client down), then asks the
    hooks again. The builtin ``flood`` plugin returns it for a session that is
    :attr:`~chatkit.Session.paced` (the IRC face's: IRC servers hold a flooding client's
    lines back, and clients show a line as sent once they have written it), and a
    :class:`Reject` with ``retry_after`` to others.
    """

    seconds: float
    """How long to wait before asking again (at least 0.01, at most 60). The wait ends
    early, and the event is dropped, if the connection is closed meanwhile."""


@dataclass(frozen=True)
class Drop:
    """Returned by ``chatkit_filter_message`` to stop a message.

    The message reaches nobody; the sender receives an ``error`` frame with code
    ``dropped`` and :attr:`reason`.
    """

    reason: str
    """Why, in words for the sender ("message contains a banned word")."""
