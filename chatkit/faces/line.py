"""The line face: chatkit's own protocol, JSON or text lines on one port.

The first non-empty line of a connection chooses its mode (:mod:`chatkit.protocol`
holds the sans-I/O protocol and the sniffing; :mod:`chatkit.codecs` the two codecs).
This module is the adapter: it feeds a connection's bytes to its
:class:`~chatkit.protocol.ServerProtocol` and turns each event into hub operations
(``hello`` → login, ``say`` → a message or a command, other frame types → the
plugins' requests), answering refusals with ``error`` frames.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from chatkit.codecs import JSON_CODEC, TEXT_CODEC
from chatkit.errors import CommandError
from chatkit.events import Hello, Ping, Pong, Request, Say
from chatkit.frames import Frame
from chatkit.protocol import Closed, Mode, RemoteProtocolError, ServerProtocol
from chatkit.version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterable

    from chatkit.codecs import Codec
    from chatkit.faces import Link
    from chatkit.hub import Hub
    from chatkit.session import Session

__all__ = ["LineChannel", "LineFace", "said_in"]

# The line a silent new connection is shown: a prompt for people at nc.
GREETING = (
    f"chatkit {__version__}: type a nick and press Enter to join "
    "(programs: send a JSON hello, see docs/protocol.md)\n"
).encode()


class LineFace:
    """JSON and text lines (docs/protocol.md): the face ``chatkit serve`` opens."""

    name = "line"

    def __init__(self, host: str | None = None, port: int | None = None) -> None:
        self.host = host
        """Address to listen on; ``None``: the server's."""
        self.port = port
        """Port to listen on; ``None``: the server's."""

    def __repr__(self) -> str:
        return f"LineFace(host={self.host!r}, port={self.port!r})"

    def early(self, frame: Frame, greeted: bool = False) -> bytes:
        """``frame`` as JSON, which people can read too (the mode is not known yet);
        in text once the connection was shown the greeting, a prompt in text."""
        if greeted:
            return frame.encode(TEXT_CODEC)
        try:
            return _early(frame.type, tuple(frame.fields.items()))
        except TypeError:  # a field that cannot be a cache key (a list): not cached
            return frame.encode(JSON_CODEC)

    def greeting(self) -> bytes | None:
        return GREETING

    def open(self, hub: Hub, session: Session, link: Link) -> LineChannel:
        return LineChannel(hub, session, link)


def said_in(event: object) -> tuple[str | None, ...]:
    """The room a message event goes to (``None``: the current room), for ``Link.pace``:
    a message, or ``/me`` (an action in the room); nothing for any other event (another
    command, a request, a ping)."""
    if isinstance(event, Say) and (not event.command or event.text[:4].lower() == "/me "):
        return (event.room,)
    return ()


@functools.lru_cache(maxsize=256)
def _early(kind: str, fields: tuple[tuple[str, object], ...]) -> bytes:
    # Cached: in a storm the same refusal goes to thousands of connections, and
    # encoding it costs more than sending it.
    return Frame(kind, **dict(fields)).encode(JSON_CODEC)


class LineChannel:
    """One line-protocol connection: its protocol object and the adapter to the hub."""

    # One per connection: slots keep an idle connection small.
    __slots__ = ("hub", "link", "protocol", "session")

    def __init__(self, hub: Hub, session: Session, link: Link) -> None:
        limits = hub.config.limits
        self.protocol = ServerProtocol(
            limits.max_line, max_message_lines=limits.max_message_lines, bidi=hub.config.bidi
        )
        """The connection's sans-I/O protocol state. Reader thread, but for
        :meth:`encode`, which any thread may call."""
        self.hub = hub
        self.session = session
        self.link = link

    @property
    def codec(self) -> Codec:
        """The codec of the connection's mode (JSON until the first line)."""
        return self.protocol.codec

    def encode(self, frame: Frame) -> bytes:
        return self.protocol.send(frame)

    def greeted(self) -> None:
        """Shown the text prompt (a TLS port's, after its handshake): until its first
        line the connection is sent text, as a greeted one on the plain port is."""
        self.protocol.greeted = True

    def receive(self, data: bytes) -> bool:
        protocol, link = self.protocol, self.link
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        while True:
            if self.session.logged_in:
                # A burst of chat lines: parsed and sent as a run (hub.say_run).
                run = protocol.next_messages()
                if run:
                    proceed = functools.partial(self._proceed, {room for room, _ in run})
                    self.hub.say_run(self.session, run, self._refused, proceed)
                    if link.finishing:
                        return False
                    continue
            try:
                event = protocol.next_event()
            except RemoteProtocolError as exc:
                link.codec = protocol.codec  # a first line may be refused: it chose the mode
                if self.session.unsettled:
                    self.hub.settle(self.session)  # answers come in the order of the lines
                self.session.error(exc.code, exc.text)
                self.hub.free_line(self.session)  # (no plugin sees it: no flood control)
                if link.finishing:
                    return False
                continue
            if protocol.blank_lines:
                # (Blank lines carry nothing, but each costs a look: in a loop, paced.)
                count, protocol.blank_lines = protocol.blank_lines, 0
                self.hub.free_line(self.session, count)
                if link.finishing:
                    return False
            if event is None:
                return True
            if isinstance(event, Closed):
                return False
            # The first line fixes the codec; fan-out reads the link's (a plain
            # attribute: it is read once per recipient), so set it before acting.
            link.codec = protocol.codec
            link.pace(said_in(event))
            if link.finishing:
                return False
            self.act(event)
            if link.finishing:
                return False

    def _refused(self, index: int, exc: CommandError) -> None:
        self.session.error(exc.code, exc.text, **exc.details)
        self.hub.free_line(self.session)  # (refused lines in a loop are paced too)

    def _proceed(self, rooms: Iterable[str | None]) -> bool:
        """Before each message of a run to ``rooms``, as before each event: pace; go on
        unless closing."""
        self.link.pace(rooms)
        return not self.link.finishing

    def act(self, event: Hello | Say | Request | Ping | object) -> None:
        """Act on one event from the client; refusals go back to it as errors."""
        hub, session = self.hub, self.session
        if session.unsettled and not (isinstance(event, Say) and not event.command):
            hub.settle(session)  # a ping, command or request answers after earlier messages
        if isinstance(event, Ping | Pong):
            hub.free_line(session)  # (no plugin sees them: no flood control)
        try:
            if isinstance(event, Hello | Say | Request):
                hub.allow_input(session, event)
            if isinstance(event, Say):
                if not session.logged_in:
                    raise CommandError("log in first: send a hello frame", "not_logged_in")
                if event.command:
                    hub.run_command(session, event.text, event.room)
                else:
                    # Consecutive messages are stored in a pipeline; settle() ends it.
                    hub.say(session, event.room, event.text, defer=True)
            elif isinstance(event, Ping):
                if event.ready:
                    problems = hub.readiness()
                    session.send(Frame("pong", ready=not problems, problems=problems))
                else:
                    session.send(Frame("pong"))
            elif isinstance(event, Hello):
                if session.logged_in:
                    raise CommandError(
                        f"already logged in as {session.nick}; use /nick to change", "bad_frame"
                    )
                session.replay, session.replay_since = event.replay, event.since
                try:
                    hub.login(session, event.nick, event.fields, room=event.room, rooms=event.rooms)
                finally:
                    # `since` is the login's joins' (a reconnect's): a room joined later
                    # replays as any join does (what it had seen live is not all since).
                    session.replay_since = None
            elif isinstance(event, Request):
                hub.request(session, event)
            # Pong only proves the client is alive; the server noted that already.
        except CommandError as exc:
            if session.unsettled:
                hub.settle(session)  # answers come in the order of the lines
            text = exc.text
            if exc.code in ("nick_registered", "bad_password", "auth_throttled") and isinstance(
                event, Hello
            ):
                if self.protocol.mode is Mode.TEXT:
                    # The next line is the password (a password typed alone is never
                    # taken for a nick, shown to everyone), unless it is /nick ANOTHER.
                    self.protocol.password_for = event.nick
                    text += " (type its password, or /nick ANOTHER for another nick)"
                elif exc.code == "nick_registered":
                    text += " (the hello's password)"
            session.error(exc.code, text, **exc.details)
            # A refusal (flood control's rate_limited too) costs the server as much as
            # a line: refused lines in a loop are paced, as lines no plugin sees are.
            hub.free_line(session)
