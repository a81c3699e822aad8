"""What clients ask of the chat, in any wire protocol, and the message hooks receive.

Each face's protocol turns its wire format into these events (the line protocol's
``hello`` frame or first text line is a :class:`Hello`, an IRC ``NICK``/``USER``
pair would be one too); ``chatkit_allow_input`` sees them, the face's adapter acts
on them through the hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_ID", "Hello", "Message", "Ping", "Pong", "Request", "Say"]

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
    notice: bool = False
    """True for a notice (IRC's ``NOTICE``): a message that automatic clients (bots)
    never answer, which IRC clients get as ``NOTICE`` and others marked as one."""
    id: int | None = None
    """Unique, time-ordered id; set once the message is accepted for delivery."""
    ts: str | None = None
    """UTC ISO 8601 time with milliseconds; set with :attr:`id`."""
    account: str | None = None
    """The sender's account if it was identified when it sent the message (the
    ``accounts`` plugin), else ``None``; frames of the message carry it, replayed too."""
    leave: str | None = None
    """``"part"`` or ``"quit"`` when :attr:`text` is the client's own words in a leave's
    reason (``/part #room WORDS``, ``/quit WORDS``), which ``chatkit_filter_message``
    sees as a message to the room but which is never stored or delivered as one; else
    ``None``."""

    @property
    def private(self) -> bool:
        """True if this is a private message."""
        return self.to is not None


@dataclass(frozen=True)
class Hello:
    """The client asks to log in as :attr:`nick` (may be repeated after an error).

    :attr:`replay` is the client's choice of what it is replayed on joining a room
    (``None``: the server's default), for the whole session; :attr:`since`, for the
    rooms the login joins (a reconnecting client's, :attr:`rooms`).
    """

    nick: str
    replay: int | None = None
    """How many earlier messages to replay per room joined (0: none)."""
    since: int | None = None
    """Replay only messages with a greater id: the last one the client has."""
    room: str | None = None
    """The room to join instead of the default one (``None``: the default)."""
    rooms: tuple[str, ...] | None = None
    """The rooms to join instead, in order (a reconnecting client's); not with :attr:`room`."""
    fields: dict[str, Any] = field(default_factory=dict)
    """The hello's other fields as sent (``password``, ``token``, ...): for the
    plugins that decide logins (``chatkit_allow_login`` receives them). In text
    mode only ``password``, from a login line ``NICK PASSWORD``."""


@dataclass(frozen=True)
class Say:
    """A line of chat: a message, or a command if :attr:`text` starts with ``/``.

    :attr:`room` is ``None`` when the client named no room (text mode always);
    the server then uses the session's current room. A leading ``//`` has already
    been turned into a literal ``/`` and :attr:`command` is then False.
    """

    text: str
    room: str | None = None
    command: bool = False


@dataclass(frozen=True)
class Request:
    """A frame of a type the core does not know (``history``, ...), for plugins.

    :attr:`type` is a lower-case name; :attr:`fields` holds the frame's other
    members as sent. Plugins handle it in ``chatkit_handle_request``.
    """

    type: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Ping:
    """The client asks for a ``pong``."""

    ready: bool = False
    """Whether it asks if the server is ready, too (``chatkit_check_ready``)."""


@dataclass(frozen=True)
class Pong:
    """The client answers the server's ``ping``."""
