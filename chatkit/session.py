"""One client as the chat and the plugins see it: its nick, rooms, and a way to send.

A :class:`Session` is what every hook receives as ``client``. It knows nothing of
sockets or wire formats: it hands frames to its connection, which encodes them in
its codec and queues them without blocking.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chatkit.frames import Frame
from chatkit.protocol import clean_text

if TYPE_CHECKING:
    from chatkit.codecs import Codec
    from chatkit.transport import Transport

__all__ = ["Session"]


_ids = itertools.count(1)


class Session:
    """A connected client: before login (``nick is None``) and after.

    The attributes :attr:`nick`, :attr:`rooms` and :attr:`current_room` belong to
    the hub and change under its lock; read them freely (a read is atomic), but
    change them only through the hub (``hub.rename``, ``hub.join``, ...).
    """

    def __init__(self, transport: Transport, wake: Callable[[], None]) -> None:
        self.id = next(_ids)
        """A number unique to this session within the process."""
        self.nick: str | None = None
        """The nick, or ``None`` before login."""
        self.rooms: dict[str, str] = {}
        """Rooms joined: folded key (``chatkit.names.fold``) to display name, in join order."""
        self.current_room: str | None = None
        """Where lines without a room go: the room joined last (or ``/join``-ed again)."""
        self.unsettled: list[Any] = []
        """The hub's: messages from this client still being stored (see ``Hub.settle``).
        Only this client's reader thread touches it."""
        self.replay: int | None = None
        """Messages the client asked to be replayed per room it joins (``hello``'s
        ``replay``; 0: none), or ``None`` for the server's default. Set at login."""
        self.replay_since: int | None = None
        """Replay only messages with a greater id (``hello``'s ``since``: the last one
        the client already has), or ``None``. Set at login."""
        self.renaming = 0
        """The hub's (under its lock): its renames whose ``nick`` frame waits in the
        lanes behind messages still being stored; its leaves wait behind them."""
        self.welcomed = False
        """Set by the hub once the ``welcome`` is queued; before that, during a login,
        the nick is taken but ``hub.find()`` does not return the session."""
        self.account: str | None = None
        """The account the client proved it owns (its name: a registered nick,
        case-folded), or ``None``. Set and cleared by an accounts plugin (the builtin
        ``accounts``) on the client's reader thread; others only read it (the
        ``history`` plugin shows private history to the account that took part)."""
        self.operator: bool = False
        """True while the client is a server operator by its face's own means, for this
        connection: IRC's ``OPER`` with a name and password of ``[faces.irc.operators]``
        (``MODE nick -o`` gives it up). A plugin that gives server operators powers (the
        builtin ``moderation``) honours it besides its own list of accounts. Set by the
        face on the client's reader thread."""
        self.paced = False
        """True if a line over a rate limit waits its turn rather than being refused
        (:class:`chatkit.Wait`): set by a face whose clients expect that (IRC's) when
        it opens the connection."""
        self.leaving = False
        """Set by the hub as it logs the session out, before the hooks of its leaves and
        its logout run (``chatkit_on_leave`` of a quit's rooms: not a ``/part``)."""
        self.free = math.inf
        """The hub's (this client's reader thread's): how many lines no flood control
        counts it may still send at once (``free_lines``), as of :attr:`free_at`."""
        self.free_at = 0.0
        self.charged = False
        """The hub's (this client's reader thread's): set when an event reaches
        ``chatkit_allow_input`` (flood control counts it); a face that clears it before
        an event counts the event as a free line if it is still clear after."""
        self.away: str | None = None
        """Why the client is away (``/away``, IRC's ``AWAY``), or ``None`` while it is
        here. Set through ``hub.set_away``."""
        self.quiet: frozenset[str] = frozenset()
        """The hub's: the rooms (folded) its away message is not told in, since it may
        not speak there (a mute): its joins there carry no ``away`` either."""
        self.resume: str | None = None
        """The secret its ``welcome`` gave it (``resume``): a later ``hello`` for its
        nick with it takes the nick from this session (a connection that died unseen).
        Set by the hub at login."""
        self.data: dict[str, Any] = {}
        """Free space for plugins, keyed by plugin name; guard it yourself."""
        self.transport = transport
        """The connection behind this session (internal: use the methods). Any
        :class:`~chatkit.transport.Transport`: the server's ``Connection``, or a test's."""
        self._wake = wake

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.nick or '(not logged in)'} from {self.address}>"

    @property
    def address(self) -> tuple[str, int]:
        """The client's (host, port)."""
        return self.transport.address

    @property
    def codec(self) -> Codec:
        """The codec the client's frames are sent in (``JSON_CODEC``, ``TEXT_CODEC``);
        ``len(frame.encode(client.codec))`` is what a frame costs this client."""
        return self.transport.codec

    @property
    def logged_in(self) -> bool:
        """True once the client has a nick."""
        return self.nick is not None

    # -- sending -------------------------------------------------------------

    def send(self, frame: Frame) -> None:
        """Queue ``frame`` for this client. Never blocks; safe from any thread."""
        if self.transport.push(frame):
            self._wake()

    def push(self, frame: Frame) -> bool:
        """Queue ``frame`` without waking the writer; return True if it must be woken.

        For the hub, which fans out under its lock and wakes once afterwards.
        """
        return self.transport.push(frame)

    def notice(self, text: str) -> None:
        """Send a ``notice`` frame. Control characters in ``text`` (a plugin's, maybe
        with a user's words in it) become U+FFFD, line breaks kept, as in a message."""
        self.send(Frame("notice", text=clean_text(str(text), newlines=True)))

    def error(self, code: str, text: str, **details: Any) -> None:
        """Send an ``error`` frame with a stable ``code``, a human ``text`` and extra fields
        (its control characters cleaned, as :meth:`notice`'s)."""
        self.send(Frame("error", code=code, text=clean_text(str(text), newlines=True), **details))

    def reply(self, command: str, text: str, data: dict[str, Any] | None = None) -> None:
        """Send the ``reply`` frame of a command (its text cleaned, as :meth:`notice`'s)."""
        text = clean_text(str(text), newlines=True)
        self.send(Frame("reply", command=command, text=text, data=data or {}))

    def disconnect(self, reason: str) -> None:
        """Send what is queued, then close the connection; logout hooks see ``reason``."""
        self.transport.finish(reason)
