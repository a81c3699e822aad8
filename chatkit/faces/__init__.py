"""Faces: what a wire protocol must provide for its clients to join the chat.

A **face** is one way in: a listener (the server opens one per face), a sans-I/O
protocol object per connection, the codec(s) frames are encoded in, and the adapter
that turns the protocol's events into hub operations (``hub.login``, ``hub.say``,
``hub.join`` ...). The server owns sockets and threads and knows faces only through
the interfaces below; the hub knows neither. So a new wire protocol is a new
implementation of :class:`Face` (``chatkit.faces.line`` is the first: JSON and text
lines on one port; ``chatkit.faces.irc`` and ``chatkit.faces.web`` followed;
``tests/test_faces.py`` adds one for tests only) and needs no change to the hub, the
server or the plugins.

Who calls what, on which thread:

* the acceptor calls :meth:`Face.early` to refuse or greet a connection that has not
  sent anything yet, and :meth:`Face.open` once it has;
* the connection's reader thread calls :meth:`Channel.receive` with each chunk of
  bytes, which acts on the hub, pacing itself with :meth:`Link.pace`;
* any thread may call :meth:`Channel.encode`, for a frame sent to this connection
  alone (a ``welcome``, an ``error``, the client's own ``join`` or ``nick``): it
  passes through the connection's protocol object, which so learns its own state.
  Frames fanned out to many (messages, other people's joins) are encoded once per
  codec (:attr:`Link.codec`) and never pass through a channel: nothing about one
  recipient may change their bytes;
* a channel may also have ``farewell(reason) -> bytes``: the server calls it when it
  ends the connection (``Connection.finish``) and queues the bytes last, after
  everything else (the web face: a WebSocket close frame; the IRC face: ``ERROR :Closing
  Link``). Optional, so it is not
  part of :class:`Channel`;
* and ``greeted() -> None``: the server calls it when it showed a connection whose
  channel is open already (a TLS port's, after its handshake) the face's
  :meth:`Face.greeting`, so that what it is sent before its first line is in the
  greeting's form. Optional too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable

    from chatkit.codecs import Codec
    from chatkit.frames import Frame
    from chatkit.hub import Hub
    from chatkit.session import Session

__all__ = ["Channel", "Face", "Link"]


class Link(Protocol):
    """The server's side of one connection, as its channel uses it."""

    codec: Codec
    """The codec fan-outs encode this connection's frames in. The channel sets it
    whenever its protocol chooses (the line face: on the first line), before it acts
    on the hub; the server reads it once per recipient of a fan-out."""

    address: tuple[str, int]
    """The client's (host, port): the peer's, or the client a trusted reverse proxy
    forwarded (the web face sets it then, before the client logs in)."""

    @property
    def finishing(self) -> bool:
        """True once the connection is closing: act on no more events."""
        ...

    def pace(self, rooms: Iterable[str | None] = ()) -> None:
        """Call before acting on each event: waits while the server's writer is too far
        behind (``max_backlog``), so a busy server slows its readers instead of cutting
        its clients; and, for an event that says something in ``rooms`` (``None``: the
        session's current room), while one of them is held by a member that reads
        slower than it. Returns at once in the common case."""
        ...


class Channel(Protocol):
    """One connection's face-side state: its protocol object and the adapter to the hub."""

    def encode(self, frame: Frame) -> bytes:
        """The bytes of ``frame`` for this connection alone (possibly several lines).

        Called from any thread, possibly under the hub's lock: CPU only, no I/O, no
        hook. May update the protocol's state from what it sends (a ``welcome`` means
        logged in)."""
        ...

    def receive(self, data: bytes) -> bool:
        """Act on ``data`` from the client (``b""``: it closed its side).

        Reader thread only. Feeds the protocol, then acts on every complete event
        through the hub (after :meth:`Link.pace`), answering bad input with an error
        to this client. Returns False once the connection is done (closed by the
        client, or :attr:`Link.finishing`)."""
        ...


class Face(Protocol):
    """A wire protocol's way into the chat: ``Server(faces=[LineFace(), ...])``."""

    name: str
    """A short name for logs and ``Server.addresses`` (``line``, ``irc``, ``web``)."""
    host: str | None
    """Address to listen on; ``None``: the server's (``config.host``)."""
    port: int | None
    """Port to listen on (0: any free one); ``None``: the server's (``config.port``)."""

    def early(self, frame: Frame, greeted: bool = False) -> bytes:
        """The bytes of ``frame`` for a connection that has sent nothing yet (the
        acceptor refuses, times out or greets it). ``greeted``: it was shown
        :meth:`greeting` (so likely a person: answer in the greeting's form). Any
        thread; cache if you like."""
        ...

    def greeting(self) -> bytes | None:
        """What a connection silent for ``greeting_delay`` is shown (the line face:
        a prompt for people at ``nc``), or ``None``."""
        ...

    def open(self, hub: Hub, session: Session, link: Link) -> Channel:
        """A channel for a new connection, whose first bytes have arrived.

        Acceptor thread; ``session`` is the connection's (its transport is the
        server's connection, of which ``link`` is the face's view)."""
        ...
