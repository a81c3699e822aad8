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

__all__ = ["Outbox", "Transport"]


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

    def abort(self, reason: str) -> None:
        """Close now, dropping what is queued; ``reason`` is the logout reason."""
        ...


class Outbox(Protocol):
    """Where the hub's frames go: every transport's queue, and who sends them."""

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
