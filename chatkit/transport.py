"""What the hub needs of the layer below it that owns sockets, as interfaces.

This file knows no socket and no thread; it only says what the chat core calls.
The hub and the sessions depend on these ``typing.Protocol``\\ s and never import
the server: ``chatkit.server.Connection`` is a :class:`Transport` and
``chatkit.server.Writer`` an :class:`Outbox`, structurally (nothing inherits).
A test, or another face, may bring its own (``tests/test_hub_memory.py`` runs the
hub on in-memory ones).

Rules for implementers: nothing here may block, send on a socket, or call a hook;
each may be called under the hub's lock, from any thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from chatkit.codecs import Codec
from chatkit.frames import Frame

__all__ = ["Feed", "Outbox", "Transport"]


class Transport(Protocol):
    """One client's connection, as its :class:`~chatkit.Session` uses it."""

    @property
    def address(self) -> tuple[str, int]:
        """The client's (host, port)."""
        ...

    @property
    def codec(self) -> Codec:
        """The codec this client's frames are encoded in (read once per recipient
        by a fan-out: implement it as a plain attribute)."""
        ...

    def push(self, frame: Frame) -> bool:
        """Queue ``frame``, encoded in :attr:`codec`; True if the outbox must be woken
        (:meth:`Outbox.wake`). Never blocks; does nothing once the transport is closing."""
        ...

    def finish(self, reason: str) -> None:
        """Send what is queued, then close; ``reason`` is the logout reason. Idempotent:
        the first reason wins."""
        ...

    @property
    def finishing(self) -> bool:
        """True once the server is closing the connection (its reader acts on nothing
        more): a reader waiting its turn (:class:`chatkit.Wait`) gives up then."""
        ...

    def abort(self, reason: str) -> None:
        """Close now, dropping what is queued; ``reason`` is the logout reason."""
        ...

    def unread(self) -> int:
        """Bytes the client sent that wait unread (in the socket): what a paused
        client has still to say."""
        ...


class Feed(Protocol):
    """One room's members as the outbox sees them, and the room's messages waiting for them.

    A room's messages are *published* to its feed in one step, whatever the number of
    members; the outbox hands them to each member later, once for everything published
    meanwhile (the writer: once per cycle). Frames queued to a member any other way
    (:meth:`Transport.push`, :meth:`Outbox.fanout`) come after everything published
    before them, and a member added (removed) gets what is published after (before) it.
    So each member sees the room's messages in publishing order, and in order with
    everything else queued to it. Every method is called under the hub's lock.
    """

    def __len__(self) -> int:
        """The number of members."""
        ...

    def add(self, transport: Transport) -> None:
        """Make ``transport`` a member: it gets what is published from now on."""
        ...

    def remove(self, transport: Transport) -> None:
        """Stop ``transport`` being a member; what was published before still reaches it."""
        ...

    def publish(self, frames: Sequence[Frame]) -> bool:
        """Queue ``frames``, in order, to every member (one encoding per codec in use,
        when the outbox hands them over). True if :meth:`Outbox.wake` must be called."""
        ...


class Outbox(Protocol):
    """Where the hub's frames go: every transport's queue, and who sends them."""

    def feed(self, room: str) -> Feed:
        """A new, empty :class:`Feed` for a new room, ``room`` its key (its folded name:
        what a transport's ``pace(rooms)`` names it by, folded)."""
        ...

    def fanout(self, frame: Frame, transports: Iterable[Transport]) -> bool:
        """Queue ``frame`` to each transport: one encoding per codec in use, one append
        each, no hook and no lock per recipient. True if :meth:`wake` must be called
        (after releasing any lock of the caller's)."""
        ...

    def fanout_many(self, frames: Sequence[Frame], transports: Iterable[Transport]) -> bool:
        """Queue ``frames``, in order, to each transport as one piece per codec in use.
        Returns as :meth:`fanout`."""
        ...

    def wake(self) -> None:
        """Have what was queued sent. Cheap; never call it holding a lock."""
        ...
