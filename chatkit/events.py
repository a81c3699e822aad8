"""The message object that filter and notify hooks receive."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_ID", "Message"]

MAX_ID = 2**63 - 1  # the largest message id (or count) in a frame or the store: SQLite's INTEGER


@dataclass
class Message:
    """A room or private message on its way through the hooks.

    ``chatkit_filter_message`` receives it before delivery and may change
    :attr:`text` in place; ``chatkit_on_message`` receives it after delivery,
    with :attr:`id` and :attr:`ts` set. A message is either for a room
    (:attr:`room` set) or private (:attr:`to` set), never both.
    """

    nick: str
    """The sender's nick."""
    text: str
    """The text; filters may replace it."""
    room: str | None = None
    """The room it is sent to, or ``None`` for a private message."""
    to: str | None = None
    """The recipient's nick for a private message, else ``None``."""
    action: bool = False
    """True for ``/me`` actions."""
    id: int | None = None
    """Unique, time-ordered id; set once the message is accepted for delivery."""
    ts: str | None = None
    """UTC ISO 8601 time with milliseconds; set with :attr:`id`."""

    @property
    def private(self) -> bool:
        """True if this is a private message."""
        return self.to is not None
