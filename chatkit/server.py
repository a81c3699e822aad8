"""Sockets and threads: the only file that calls ``accept``, ``recv`` and ``send``.

Threads:

* the **acceptor** accepts connections, refuses those over the limits, and watches
  the new ones with a selector until their first bytes arrive: it closes those that
  leave at once or stay silent, and starts a reader thread for each of the others,
  so a storm of sockets that never talk costs no thread;
* a **reader** per connection that has talked receives bytes and hands them to the
  connection's channel (:mod:`chatkit.faces`), whose protocol turns them into events
  and whose adapter acts on the :class:`~chatkit.hub.Hub`; hooks run here. A reader
  never sends: it appends frames to send queues. A reader that finds nothing to read
  for ``idle_park`` seconds *parks* its connection in the acceptor's selector and
  ends; the acceptor starts a reader again when it turns readable, so an idle client
  costs no thread;
* one **writer** sends everything queued for a connection in one ``send`` (so under
  load many frames leave in one syscall) and waits with a selector where a socket is
  full. A client over ``max_sendq`` with its rooms' messages, that still reads,
  *holds* those rooms: a reader pauses before a message to one of them (TCP slows its
  client) until the client is down to half of ``max_sendq``. One that stays over for
  ``slow_timeout`` is cut off as a slow consumer, whether it reads or not;
* a **watchdog** enforces the login and idle timeouts.

The server opens one listener per face (``Server(faces=[...])``, by default the line
face); every thread above serves all of them.

Sockets stay blocking for the reader; the writer sends with ``MSG_DONTWAIT``
(POSIX), so the two never disturb each other.

TLS: a face wrapped in :class:`TlsFace` listens on a port of its own where every
connection speaks TLS. The socket stays a plain one; its :class:`TlsState` (an
``ssl.SSLObject`` over memory buffers) encrypts what the writer sends and decrypts
what the reader receives, so the threads above work unchanged. The handshake runs
on the connection's reader thread, with ``tls_handshake_timeout``: a slow or plain
client holds up nobody else.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import fcntl
import functools
import ipaddress
import itertools
import logging
import os
import select
import selectors
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self, cast

from chatkit import names
from chatkit import plugins as plugins_mod
from chatkit.addresses import address_key
from chatkit.codecs import JSON_CODEC, Codec
from chatkit.commands import CommandRegistry
from chatkit.config import (
    LINGER,
    MAX_BACKLOG_BYTES,
    MAX_LINGERING,
    SLOW_TIMEOUT,
    Config,
)
from chatkit.errors import UsageError
from chatkit.faces import Channel, Face, Link
from chatkit.faces.line import LineFace
from chatkit.frames import Frame
from chatkit.hooks import HookRunner
from chatkit.hub import Hub
from chatkit.session import Session
from chatkit.threads import Done, ThreadPool
from chatkit.transport import Transport

__all__ = ["Connection", "Server", "TlsFace", "TlsState", "Writer", "tls_context"]

log = logging.getLogger(__name__)

RECV_BYTES = 4096  # bytes asked of one recv(). A reader that blocked in recv() held a buffer
# of this size: 64 KiB cost 47 KiB of memory per idle client at 10,000 clients, 4 KiB 25 KiB
# (benchmarks/, idle scenario); a busy reader still takes ~50 lines a call. (Readers now block
# at most idle_park seconds, SO_RCVTIMEO, then park: see Server._park.)
RECV_BYTES_BUSY = 65536  # bytes asked of recv() right after one that filled its buffer: a
# client sending fast gets its lines in bigger pieces, each piece stored in one pipeline.
REFUSAL_LOG_INTERVAL = 10.0  # seconds between log lines about refused connections per address
SLOW_CHECK = 0.25  # seconds between the writer's checks of queues over max_sendq
READING = 2.0  # seconds: a client over max_sendq whose socket took bytes this recently is
# reading, only slower than its rooms, and holds them (Writer.holds): their senders pause
# until it is back to half of max_sendq. One whose socket took nothing for longer does not
# read: it holds nobody up, and is cut at slow_timeout.
IN_STEP = 1.0  # seconds the senders of a room go in step with the writer (one run per
# cycle: Writer._watched) after a member that held it caught up, and as long after as its
# queue is not empty: long enough for what TCP kept for many paused senders to be read in
# steps the writer can see, so that none of it puts the member far over max_sendq at once.
TLS_RECORDS_PER_LINE = 64  # TLS records a client's free_lines count as one line (a line
# of chat comes in a record or two: only a client cutting its bytes into tiny records pays)
ALERT_TIMEOUT = 1.0  # seconds a refused TLS handshake's alert may take to send
LINGER_BYTES = 1 << 20  # bytes of a client's unread input dropped before a close, at most
SHUTDOWN_POLL = 0.005  # seconds between looks at the messages still to deliver, at shutdown
ACCEPT_BATCH = 64  # connections accepted before the acceptor selects again. The select
# releases the GIL to the readers and the writer, and lets the new connections that sent
# data meanwhile leave the pending set, so a storm of thousands arrives in slices.
# recv() flags as plain ints (or-ing the socket module's IntFlags builds an enum).
_NOW = int(socket.MSG_DONTWAIT)
_PEEK_NOW = int(socket.MSG_DONTWAIT | socket.MSG_PEEK)
IDLE_PARK_MAX = 2**31 - 1  # seconds: a longer idle_park waits this long (about 68 years)
TLS_PORT = 9443  # the line face's TLS port unless told: 9090's neighbour by convention
IRC_TLS_PORT = 6697  # the IRC face's TLS port unless told (RFC 7194)
WEB_TLS_PORT = 8443  # the web face's TLS port (https, wss) unless told
TLS_RECORD = (
    16384  # bytes of plaintext in one TLS record: what one SSLObject.read() returns at most
)
CONNECT_BUCKETS = 10_000  # addresses whose connection rate is tracked at once; past it the
# buckets that have refilled are forgotten (they hold nothing), then, if need be, all of them.


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side TLS context for the certificate chain ``cert`` and its ``key``
    (PEM files); :class:`UsageError` naming the file if they cannot be loaded."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for path in (cert, key):
        if not os.path.isfile(path):
            raise UsageError(f"TLS: {path} does not exist")
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        why = {
            # OpenSSL's words for the two mistakes people make.
            "PEM lib": "not a PEM certificate chain and key (-----BEGIN ...-----)",
            "KEY_VALUES_MISMATCH": "the key is not the certificate's",
        }
        said = next((words for code, words in why.items() if code in str(exc)), "")
        raise UsageError(
            f"TLS: cannot load {cert} and {key}: {said + ' ' if said else ''}({exc})"
        ) from None
    return context


class TlsFace:
    """A face on a port of its own where connections speak TLS: ``TlsFace(IrcFace(...),
    port=6697)``. Everything but the listener is the wrapped face's (the same instance
    may also listen in plain text). Needs the server's ``tls_cert`` and ``tls_key``."""

    def __init__(self, face: Face, port: int | None = None, host: str | None = None) -> None:
        self.face = face
        """The wrapped face."""
        self.name = f"{face.name}-tls"
        """The inner face's name and ``-tls`` (``line-tls``, ``irc-tls``)."""
        self.host = host if host is not None else face.host
        self.port = port

    def __repr__(self) -> str:
        return f"<TlsFace {self.face!r} port={self.port}>"

    def early(self, frame: Frame, greeted: bool = False) -> bytes:
        # Nothing in plain text on a TLS port: a refused or silent client is just closed.
        return b""

    def greeting(self) -> bytes | None:
        return None

    def open(self, hub: Hub, session: Session, link: Link) -> Channel:
        return self.face.open(hub, session, link)


class TlsState:
    """One connection's TLS: an ``ssl.SSLObject`` over two memory buffers.

    The reader thread calls :meth:`handshake` once, then :meth:`decrypt` with what it
    receives; the writer thread calls :meth:`encrypt` with what it sends. Neither
    does I/O here.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        # Synchronize the SSLObject (not thread-safe) between the reader (decrypt)
        # and the writer (encrypt). Held only for memory work, never a syscall.
        self._lock = threading.Lock()
        self.ready = False
        """True once the handshake is done: the writer may encrypt."""
        self._notified = False  # close_notify sent
        self.records = 0
        """Records decrypted since the reader last took this back to 0 (each costs a
        turn of Python: a client sending 1-byte records pays for them, see _serve)."""

    def handshake(self, sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
        """Run the server's side of the handshake on ``sock`` (reader thread, before the
        writer sends anything: it waits for :attr:`ready`); return the application
        data that came with the client's last flight (often empty), and True if a
        ``close_notify`` came with it too.

        Raises ``ssl.SSLError`` (not TLS, bad certificate...), ``TimeoutError``
        after ``timeout`` seconds, ``ConnectionError`` if the client left, or
        ``OSError``.
        """
        deadline = time.monotonic() + timeout
        try:
            while True:
                refused: ssl.SSLError | None = None
                with self._lock:
                    try:
                        self._tls.do_handshake()
                        done = True
                    except ssl.SSLWantReadError:
                        done = False
                    except ssl.SSLError as exc:
                        refused, done = exc, False
                    out = self._outgoing.read()
                if refused is not None:
                    # The alert OpenSSL wrote (protocol_version to a TLS 1.0 client...)
                    # goes out first: the client can say why, not "unexpected EOF".
                    if out:
                        with contextlib.suppress(OSError):
                            sock.settimeout(ALERT_TIMEOUT)
                            sock.sendall(out)
                    raise refused
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("TLS handshake timed out")
                sock.settimeout(left)
                if out:
                    sock.sendall(out)
                if done:
                    break
                data = sock.recv(RECV_BYTES_BUSY)
                if not data:
                    raise ConnectionResetError("the client left during the TLS handshake")
                self._incoming.write(data)
        finally:
            sock.settimeout(None)
        with self._lock:
            self.ready = True
            return self._read()

    def decrypt(self, data: bytes) -> tuple[bytes, bool]:
        """Feed bytes received; return the plaintext now available, and True if the
        client closed the TLS session (``close_notify``). Raises ``ssl.SSLError``."""
        with self._lock:
            self._incoming.write(data)
            return self._read()

    def _read(self) -> tuple[bytes, bool]:
        assert self._lock.locked()
        pieces: list[bytes] = []
        try:
            while True:
                piece = self._tls.read(TLS_RECORD)
                if not piece:
                    return b"".join(pieces), True
                pieces.append(piece)
                self.records += 1
        except ssl.SSLWantReadError:
            return b"".join(pieces), False
        except ssl.SSLZeroReturnError:
            return b"".join(pieces), True

    def close_notify(self) -> bytes:
        """The ``close_notify`` that ends the TLS session from the server's side, once
        (then ``b""``): sent last, so that the client knows the end of the stream is
        the end, not a cut (writer thread)."""
        with self._lock:
            if self._notified or not self.ready:
                return b""
            self._notified = True
            # (SSLWantReadError: the client's own close_notify is not waited for.)
            with contextlib.suppress(ssl.SSLError):
                self._tls.unwrap()
            return self._outgoing.read()

    def owes(self) -> bool:
        """Whether TLS records of its own wait to be sent (made while decrypting)."""
        with self._lock:
            return self._outgoing.pending > 0

    def encrypt(self, data: bytes) -> bytes:
        """The bytes to send for ``data`` (and any TLS record of its own, e.g. a key
        update's answer). Raises ``ssl.SSLError``."""
        with self._lock:
            if data:
                self._tls.write(data)  # a memory buffer takes it all
            return self._outgoing.read()


class Connection:
    """One accepted socket: its face's channel, its send queue and its lifecycle.

    The :class:`~chatkit.transport.Transport` of its session (``address``, ``codec``,
    ``push``, ``finish``, ``abort``) and the :class:`~chatkit.faces.Link` of its
    channel (``codec``, ``finishing``, ``pace``), by shape: neither the hub nor the
    faces import this module.

    The reader thread owns receiving; the writer thread owns sending and is the
    only one that closes the socket, once the reader has retired it. The send
    queue belongs to the :class:`Writer` and is guarded by its lock.
    """

    def __init__(
        self,
        sock: socket.socket,
        address: tuple[str, int],
        max_sendq: int,
        writer: Writer,
        face: Face,
        pause: Callable[[Connection, Iterable[str | None]], None],
        tls: TlsState | None = None,
    ) -> None:
        self.sock = sock
        """The socket (blocking; the writer sends with ``MSG_DONTWAIT``)."""
        self.tls = tls
        """Its TLS state on a :class:`TlsFace`'s port, else ``None``."""
        self.address = address
        """The peer's (host, port)."""
        self.greeted = False
        """Whether it was shown its face's greeting while pending (the acceptor's)."""
        self.counted_as: str | None = None
        """The key of the per-address limits it counts under (:func:`address_key`),
        ``None`` if it is exempt (loopback)."""
        self.face = face
        """The face whose listener accepted it."""
        self.channel: Channel
        """The face's side of the connection: protocol and adapter (set right after
        creation, with :attr:`session`)."""
        self.max_sendq = max_sendq
        """Bytes that may wait in the send queue before the client is cut off."""
        self.session: Session
        """The session of this connection (set right after creation)."""
        self.writer = writer
        """The writer that sends this connection's queue."""
        self.codec: Codec = JSON_CODEC
        """The codec fan-outs encode in: the channel sets it when its protocol chooses
        (the line face: on the first line). A plain attribute, not a property, because
        fan-out reads it once per recipient."""
        self._pause = pause
        now = time.monotonic()
        self.connected_at = now
        """When it was accepted (monotonic seconds)."""
        # last_seen and pinged_at are written by the reader and the watchdog
        # without a lock: each write is atomic, and the worst interleaving sends
        # one needless ping, which any later line answers.
        self.last_seen = now
        """When the client last sent anything."""
        self.pinged_at: float | None = None
        """When the watchdog pinged the silent client, or None."""
        # The send queue and the flags below are guarded by the writer's lock.
        self._out: collections.deque[bytes] = collections.deque()
        self._out_bytes = 0
        self._scheduled = False  # in the writer's ready queue, or waiting for POLLOUT
        self._finishing = False  # close once the queue is sent
        self._aborting = False  # shut down now, queue or not
        self._lost = False  # a send failed: the client is gone, what it sent is still read
        # Handed to the writer to close (Writer._close): a finish or an abort from a
        # thread that took it from a list earlier (the shutdown's, the watchdog's) does
        # nothing to it then, nor to its lingering socket. (Under the writer's lock.)
        self._retired = False
        self._blocked = False  # the socket was full at the last send: waiting for POLLOUT
        self._over_since: float | None = None  # since when _blocked with over max_sendq queued
        # (until it is back to half of max_sendq)
        self._took_at = 0.0  # when its socket last took bytes (the writer's; see READING)
        self._pushed = 0  # of _out_bytes, about how many are its own (pushed: replies, pages
        # of history; and private messages), not its rooms': those never make it hold a room
        # (see Writer._cut_stalled). Counted as the first sent: an estimate.
        self._cipher = b""  # TLS: encrypted bytes the socket did not take yet (counted in
        # _out_bytes as their length)
        self._feeds: list[Feed] = []  # the rooms' feeds it is a member of
        self.close_reason: str | None = None
        """Why the server is closing this connection, if it is."""
        # Synchronize the socket's shutdown() and close(): holding it means no
        # thread shuts down a descriptor number that the writer has already closed
        # and the kernel given to a new client. Guards _closed.
        self._lock = threading.Lock()
        self._closed = False

    @property
    def finishing(self) -> bool:
        """True once the connection is being closed; the reader stops reading then.

        Not for a connection :meth:`lose` ended: its reader acts on what the client sent
        before it went, up to the end of the stream."""
        return self._finishing or (self._aborting and not self._lost)

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the send queue."""
        return self._out_bytes

    def push(self, frame: Frame) -> bool:
        """Queue ``frame`` for this connection alone, encoded by its channel (so its
        protocol sees it); True if the writer must be woken. Never blocks or sends."""
        data = self.channel.encode(frame)
        if frame.type == "error":
            self.writer.count_error(str(frame.fields.get("code")))
        return self.writer.push(self, data)

    def pace(self, rooms: Iterable[str | None] = ()) -> None:
        """Before the channel acts on an event: wait while the writer is too far behind,
        or, for a message to ``rooms`` (``None``: the current room), while one of them is
        held by a member that reads slower than it (:meth:`Writer.holds`)."""
        writer = self.writer
        # (_held and _watched are read without the lock: the writer swaps them whole,
        # and a stale one only makes this reader pause, or go on, one line later.)
        if writer.backlog > writer.max_backlog or (
            rooms and (writer._held or writer._watched) and writer.holds(self, rooms)
        ):
            self._pause(self, rooms)

    def finish(self, reason: str) -> None:
        """Send what is queued, then close; the logout reason will be ``reason``.

        The reader stops reading at once. ``finish()`` is idempotent; the first
        reason wins. A channel with a ``farewell(reason)`` method (the web face's:
        a WebSocket close frame; the IRC face's: ``ERROR``) gives the last bytes sent.
        """
        last = b""
        farewell = getattr(self.channel, "farewell", None)
        if farewell is not None and not self.finishing:
            last = farewell(reason)
        if self.writer.finish(self, reason, last):
            self.writer.wake()
        if not self._retired:
            # Its reader stops now, whether its queue can be sent or not: blocked in
            # recv(), or parked (readable now: the acceptor gives it a reader back).
            # Else a client that reads nothing and sends nothing stayed logged in (its
            # queue never sent, its connection never shut down, its reader parked).
            self.shutdown(read_only=True)

    def unread(self) -> int:
        """Bytes the client sent that wait in the socket (``FIONREAD``); 0 once closed."""
        try:
            raw = fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except (OSError, ValueError):  # closed meanwhile (its descriptor is -1)
            return 0
        return int(struct.unpack("i", raw)[0])

    def abort(self, reason: str) -> None:
        """Shut the socket down now, unsent data or not; the reader then retires it."""
        if self.writer.abort(self, reason):
            self.shutdown()

    def lose(self, reason: str) -> None:
        """The client is gone (a send failed: it closed, or reset the connection):
        nothing more is sent, but its reader still acts on every line the client sent
        before, buffered or still in the socket (a script's ``printf 'bot\nhi\n' | nc
        -q0`` closes as soon as it has written them), then sees the end of the stream.
        Writer thread."""
        self._lost = True  # before the abort: the reader must never see it finishing
        self.abort(reason)

    def shutdown(self, *, read_only: bool = False) -> None:
        """Shut the socket down (both ways), unless already closed; never blocks.

        Wakes the reader if it is blocked in ``recv()``. ``read_only``: only the
        receiving side, for a connection that finished sending (``finish``): its
        client sees the end of the connection only when the writer closes it, after
        the reader has logged the session out, so a nick is free again by the time
        its client sees the connection end (a quick reconnect is not ``nick_taken``).
        """
        with self._lock:
            if not self._closed:
                # OSError: the peer is already gone, which is what we wanted. (try,
                # not contextlib.suppress: this runs for every connection that ends.)
                try:  # noqa: SIM105
                    self.sock.shutdown(socket.SHUT_RD if read_only else socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Close the socket (the writer does this, once the reader is done)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.sock.close()


class Feed:
    """A room's members and its messages published since the writer's last cycle.

    The hub's :class:`~chatkit.transport.Feed`, by shape: ``publish`` is one append,
    whatever the number of members; the writer thread queues what a feed holds to
    each member once per cycle (``Writer._hand_over``), or earlier when something else
    is queued to a member (so nothing overtakes what its rooms published before), or
    when a member joins or leaves. Guarded by its writer's lock.
    """

    __slots__ = ("_writer", "claimed", "frames", "key", "members")

    def __init__(self, writer: Writer, key: str) -> None:
        self._writer = writer
        self.key = key
        """The room's key (its folded name)."""
        self.claimed = 0.0
        """In step (see ``Writer._watched``): when a reader claimed the run it may
        publish before the writer's next hand-over, or 0."""
        self.members: dict[Connection, None] = {}
        """The members' connections (a dict as an ordered set)."""
        self.frames: list[Frame] = []
        """Published, not yet queued to the members."""

    def __len__(self) -> int:
        return len(self.members)

    def add(self, transport: Transport) -> None:
        self._writer.subscribe(self, cast("Connection", transport))

    def remove(self, transport: Transport) -> None:
        self._writer.unsubscribe(self, cast("Connection", transport))

    def publish(self, frames: Sequence[Frame]) -> bool:
        return self._writer.publish(self, frames)


class Writer:
    """The one thread that sends: it drains send queues and waits where sockets are full.

    The hub's :class:`~chatkit.transport.Outbox` (``fanout``, ``fanout_many``,
    ``wake``), by shape; every transport handed to it is one of its connections.

    Producers (readers, the watchdog, plugins) append to a connection's queue
    under this writer's one lock and put the connection in the ready queue; a
    fan-out takes the lock once for all its recipients. The writer takes each
    connection's whole queue and sends it with one ``send``.
    """

    def __init__(
        self,
        max_backlog: int = MAX_BACKLOG_BYTES,
        slow_timeout: float = SLOW_TIMEOUT,
        linger: float = LINGER,
        max_lingering: int = MAX_LINGERING,
    ) -> None:
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        # Synchronize access to every connection's send queue (_out, _out_bytes,
        # _scheduled, _finishing, _aborting, close_reason, _feeds), to every Feed's
        # members and frames, and to _ready, _published, _retired, _closing_now,
        # _wake_pending and _stopping. Held only for list and counter updates, never
        # across a syscall.
        self._lock = threading.Lock()
        self._ready: list[Connection] = []
        # Feeds given frames since the writer's last cycle: every feed holding frames is
        # here (one handed over early stays, empty), so an empty list means none holds any.
        self._published: list[Feed] = []
        self._retired: list[Connection] = []
        # Retired connections the writer has taken and not yet closed or put to linger:
        # counted in closing() (else the shutdown, between the two, saw none left).
        self._closing_now = 0
        self._wake_pending = False
        self._stopping = False
        self._waiting: set[Connection] = set()  # registered for EVENT_WRITE; writer thread only
        # Ended connections still open until their clients took what was sent, and when
        # they are closed anyway (linger); writer thread only.
        self._lingering: dict[Connection, float] = {}
        self.linger = linger
        """Seconds a connection the server ended stays open at most for its client to
        take what it is owed (:meth:`_linger`): a socket closed under unsent bytes, with
        input arriving, is reset, and the kernel drops them."""
        self.max_lingering = max_lingering
        """Connections lingering at once at most; past them, one is closed at once."""
        self.max_backlog = max_backlog
        """Bytes the writer may be behind before readers pause (see :meth:`wait_for_room`)."""
        self._queued = 0  # bytes in every send queue
        self._owned = 0  # of which the clients' own delay (see _owned_of): not backlog
        self.slow_timeout = slow_timeout
        """Seconds a client's socket may stay full with more than its ``max_sendq``
        waiting before it is cut as a slow consumer."""
        self._over: set[Connection] = set()  # those over max_sendq with a full socket
        # The keys of the rooms held by one of _over that reads (see READING): a message
        # to one of them waits. A new set each writer cycle while one is over, swapped
        # in whole, so readers may test it without the lock.
        self._held: frozenset[str] = frozenset()
        # The feeds, by key, of the rooms of those that caught up (back to half of
        # max_sendq, not yet to an empty queue). Their senders go in step with the
        # writer: one reader publishes to such a room per writer cycle, and only once
        # the writer has handed the last run over (and so found whether it put the
        # member over again). Let go at once, every paused sender would publish what
        # TCP kept for it during the hold, for the milliseconds the writer waits for
        # the GIL, and put a member that reads far over max_sendq before it is held again.
        self._watched: dict[str, Feed] = {}
        self._caught_up: dict[Connection, float] = {}  # when each caught up
        # Readers paused by wait_for_room() wait on it, built on _lock; the writer
        # notifies it when the backlog has drained to half of max_backlog.
        self._room = threading.Condition(self._lock)
        self._paused = 0  # readers waiting in wait_for_room()
        self.thread = threading.Thread(target=self._run, name="chatkit-writer", daemon=True)
        """The writer thread."""
        self.sends = 0
        """send() calls made (writer thread only): divided by frames queued, the coalescing."""
        self.bytes_sent = 0
        """Bytes the kernel accepted (writer thread only)."""
        self.slow_cuts = 0
        """Clients cut as slow consumers (under the lock)."""
        self.errors: collections.Counter[str] = collections.Counter()
        """``error`` frames sent, by code, refusals before login included (under the
        lock: ``Counter`` increments are not atomic)."""

    def start(self) -> None:
        """Create the selector and the wake pipe, and start the thread."""
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self.thread.start()

    # -- producers (any thread) ----------------------------------------------------

    def _append(self, conn: Connection, data: bytes) -> bool:
        """Queue ``data`` for ``conn``; True if ``conn`` was newly scheduled."""
        assert self._lock.locked()
        if conn._finishing or conn._aborting:
            return False  # closing: what comes now would not be sent anyway
        size = conn._out_bytes + len(data)
        if conn._blocked and size > conn.max_sendq:
            # Its own socket is full and more than max_sendq waits for it. Slow only
            # if that lasts slow_timeout: a client that reads, just slower than this
            # burst, catches up while its excess pauses the senders (see backlog).
            now = time.monotonic()
            if conn._over_since is None:
                conn._over_since = now
                self._over.add(conn)
            elif now - conn._over_since > self.slow_timeout:
                self._cut_slow(conn)
                return True
        conn._out.append(data)
        self._queued += len(data)
        if conn._blocked:  # its own delay grows, up to max_sendq (see _owned_of)
            self._owned += min(size, conn.max_sendq) - min(conn._out_bytes, conn.max_sendq)
        conn._out_bytes = size
        if conn._scheduled:
            return False
        conn._scheduled = True
        self._ready.append(conn)
        return True

    def _cut_slow(self, conn: Connection) -> None:
        """A slow consumer: drop its queue and have the writer shut it down now, even if
        it waits for POLLOUT, which a client that never reads never gives. (Not here:
        no syscall under this lock.)"""
        assert self._lock.locked()
        self._drop_queue(conn)
        conn._aborting = True
        self.slow_cuts += 1
        if conn.close_reason is None:
            conn.close_reason = "send queue exceeded"
        self._ready.append(conn)

    def _drop_queue(self, conn: Connection) -> None:
        """Forget ``conn``'s queued bytes (it is closing)."""
        assert self._lock.locked()
        conn._out.clear()
        self._queued -= conn._out_bytes
        self._owned -= self._owned_of(conn)
        conn._blocked = False
        conn._out_bytes = 0
        conn._pushed = 0
        conn._over_since = None
        self._over.discard(conn)

    @staticmethod
    def _owned_of(conn: Connection) -> int:
        """The bytes queued for ``conn`` that are its own delay, not the writer's: those
        up to ``max_sendq`` while its socket is full. Beyond that, they are backlog."""
        return min(conn._out_bytes, conn.max_sendq) if conn._blocked else 0

    def set_max_sendq(self, conns: Iterable[Connection], max_sendq: int) -> None:
        """Give ``conns`` a new ``max_sendq`` (a reload), under the lock: their own
        delay (:meth:`_owned_of`) is counted again with it. (Set without recounting,
        a queue counted in under the old limit was taken off under the new one, and
        the difference stayed in the backlog for good: raised while clients were over
        it, readers paused forever.) One over its old limit but not the new one is no
        longer on its way to be cut (it was, at ``slow_timeout``, whatever the new limit)."""
        now = time.monotonic()
        with self._lock:
            for conn in conns:
                owned = self._owned_of(conn)
                conn.max_sendq = max_sendq
                self._owned += self._owned_of(conn) - owned
                if conn._over_since is not None and conn._out_bytes <= max_sendq:
                    conn._over_since = None  # (as when it catches up: see _flush)
                    self._caught_up[conn] = now
                    self._over.discard(conn)

    @property
    def backlog(self) -> int:
        """Bytes queued that the writer is behind with: for clients whose sockets can take
        them, and beyond ``max_sendq`` for those whose sockets are full.

        Read without the lock (an int read is atomic; a stale value only makes a
        reader pause or go on one line later).
        """
        return self._queued - self._owned

    def holds(self, conn: Connection, rooms: Iterable[str | None]) -> bool:
        """Whether ``conn``'s message to ``rooms`` (``None``: its current room) must wait:
        one of them is held (a member that reads, only slower than the room, is over
        its ``max_sendq`` with the room's messages: see READING), or is in step with the
        writer (``_watched``) and another reader published to it this cycle. False
        claims the rooms in step for this reader. Any thread; takes the lock."""
        keys = _keys(conn, rooms)
        with self._lock:
            return self._holds(keys)

    def _holds(self, keys: set[str]) -> bool:
        held, watched = self._held, self._watched
        in_step = []
        for key in keys:
            if key in held:
                return True
            feed = watched.get(key)
            if feed is not None:
                if feed.claimed or feed.frames:
                    return True
                in_step.append(feed)
        if in_step:
            now = time.monotonic()
            for feed in in_step:
                feed.claimed = now
        return False

    def wait_for_room(
        self, conn: Connection, rooms: Iterable[str | None] = (), timeout: float = 1.0
    ) -> bool:
        """Pause the calling reader, ``conn``'s, while the writer is more than
        ``max_backlog`` behind, or its message to ``rooms`` must wait (:meth:`holds`).

        Backpressure: when fan-out produces faster than the writer sends, or than a
        member of a room reads, the senders wait (they stop reading, so TCP slows their
        clients) instead of the queues growing until readers are cut as slow
        consumers. A hold pauses only messages to the held rooms: other rooms, private
        messages and commands go on. Returns once the backlog is down to half of
        ``max_backlog`` and none of ``rooms`` is held, or ``conn`` is closing, or after
        ``timeout`` seconds (the caller checks its connection and calls again). Never
        call it holding a lock. True if it may go on.
        """
        keys = _keys(conn, rooms)
        behind = self._queued - self._owned > self.max_backlog
        if not behind and not (keys and (self._held or self._watched) and self.holds(conn, keys)):
            return True
        # Behind: go on once the backlog is down to half (not at once below the limit,
        # which would pause again a line later). Held: once the hold ends.
        limit = self.max_backlog // 2 if behind else self.max_backlog
        with self._room:
            self._paused += 1
            try:
                return self._room.wait_for(
                    lambda: (
                        (self._queued - self._owned <= limit and not self._holds(keys))
                        or self._stopping
                        or conn.finishing
                    ),
                    timeout,
                )
            finally:
                self._paused -= 1

    def _need_wake(self) -> bool:
        assert self._lock.locked()
        if self._wake_pending:
            return False
        self._wake_pending = True
        return True

    def count_error(self, code: str) -> None:
        """Count an ``error`` frame of ``code`` sent (for ``stats()`` and metrics)."""
        with self._lock:
            self.errors[code] += 1

    def push(self, conn: Connection, data: bytes) -> bool:
        """Queue ``data`` for ``conn``; True if the caller must :meth:`wake` the writer."""
        with self._lock:
            if self._published and conn._feeds:
                self._catch_up(conn)  # what its rooms published before comes first
            wake = self._append(conn, data) and self._need_wake()
            if not (conn._finishing or conn._aborting):
                conn._pushed += len(data)
            return wake

    def fanout(self, frame: Frame, conns: Iterable[Transport]) -> bool:
        """Queue ``frame`` to every connection: one encoding per codec, one append each.

        The hot path of a broadcast: no hook, no syscall, one lock for all.
        Returns True if the caller must :meth:`wake` the writer (after releasing
        any lock of its own).
        """
        return self.fanout_many((frame,), conns)

    def fanout_many(self, frames: Sequence[Frame], conns: Iterable[Transport]) -> bool:
        """Queue ``frames``, in order, to every connection, as one piece per codec.

        The frames are encoded and joined once per codec in use, and each recipient
        costs one append for all of them. A room's messages take :meth:`publish`
        instead, which costs one step for all the members. Returns as :meth:`fanout`.
        """
        with self._lock:
            # The hub hands back the transports of its sessions: this writer's connections.
            recipients = cast("list[Connection]", list(conns))
            if self._published:  # some feed may hold frames (none does otherwise)
                for conn in recipients:
                    if conn._feeds:
                        self._catch_up(conn)  # what its rooms published before comes first
            return self._deliver(frames, recipients) and self._need_wake()

    def _deliver(self, frames: Sequence[Frame], conns: Iterable[Connection]) -> bool:
        """Append ``frames`` to each of ``conns``' queues; True if one was newly scheduled."""
        assert self._lock.locked()
        encoded: dict[Codec, bytes] = {}
        codec: Codec | None = None
        data = b""
        echo = True
        origins: set[int | None] = set()
        scheduled = False
        append = self._append
        # A private message's bytes are its recipients' own, as pushed frames are: they
        # never make one hold its rooms (see _pushed). (A run is one lane's: all alike.)
        private = frames[0].type == "private" if frames else False
        for conn in conns:
            # Recipients mostly share one codec: an identity test per recipient,
            # a look-up only when it changes. Encoding happens at most once per
            # codec (CPU only, no syscall, so it may run under this lock).
            if conn.codec is not codec:
                codec = conn.codec
                found = encoded.get(codec)
                if found is None:
                    found = encoded[codec] = _encode_run(frames, codec)
                data = found
                echo = codec.echo
                if not echo and not origins:
                    origins = {frame.origin for frame in frames}
            # A codec without echo (IRC without echo-message): its clients do not
            # get their own messages back. One boolean test for everyone else.
            if not echo and conn.session.id in origins:
                own = conn.session.id
                rest = [frame for frame in frames if frame.origin != own]
                if rest:
                    mine = _encode_run(rest, codec)
                    scheduled |= append(conn, mine)
                    if private:
                        conn._pushed += len(mine)
                continue
            scheduled |= append(conn, data)
            if private:
                conn._pushed += len(data)
        return scheduled

    # -- rooms' feeds (under the hub's lock; see chatkit.transport.Feed) -------------

    def feed(self, room: str) -> Feed:
        """A new room's :class:`Feed`; ``room`` is its key."""
        return Feed(self, room)

    def publish(self, feed: Feed, frames: Sequence[Frame]) -> bool:
        """Queue a room's ``frames`` to its members in one step; the writer thread hands
        them to each member at its next cycle (:meth:`_hand_over`). True if the caller
        must :meth:`wake` the writer."""
        with self._lock:
            if not feed.members:
                return False
            if feed.frames:
                feed.frames.extend(frames)  # in _published already: the writer will see them
                return False
            feed.frames.extend(frames)
            self._published.append(feed)
            return self._need_wake()

    def subscribe(self, feed: Feed, conn: Connection) -> None:
        """Make ``conn`` a member of ``feed``, after what was published before."""
        with self._lock:
            self._hand_over(feed)
            feed.members[conn] = None
            conn._feeds.append(feed)

    def unsubscribe(self, feed: Feed, conn: Connection) -> None:
        """``conn`` leaves ``feed``, once what was published before is queued to it."""
        with self._lock:
            self._hand_over(feed)
            if feed.members.pop(conn, False) is None:
                conn._feeds.remove(feed)

    def _hand_over(self, feed: Feed) -> bool:
        """Queue what ``feed`` holds to its members; True if one was newly scheduled."""
        assert self._lock.locked()
        frames = feed.frames
        if not frames:
            return False
        feed.frames = []
        return self._deliver(frames, feed.members)

    def _catch_up(self, conn: Connection) -> None:
        """Hand over what ``conn``'s rooms published, before something else is queued to
        it: so it gets everything in the order it was queued."""
        assert self._lock.locked()
        for feed in conn._feeds:
            if feed.frames:
                # No wake needed: a feed holds frames only while it waits in _published,
                # and the wake its publish asked for is pending until the writer takes
                # _published and _ready, under this lock, together.
                self._hand_over(feed)

    def finish(self, conn: Connection, reason: str, last: bytes = b"") -> bool:
        """Mark ``conn`` to close once its queue is sent, ``last`` queued after the rest
        (unless it is closing already); True if the writer must be woken."""
        with self._lock:
            if conn._retired:
                return False  # (closing already: Writer._close)
            # Appended under the lock that marks it finishing: nothing a fan-out
            # queues can come after its last bytes (a WebSocket close frame).
            if self._published and conn._feeds:
                self._catch_up(conn)
            scheduled = self._append(conn, last) if last else False
            if conn.close_reason is None:
                conn.close_reason = reason
            conn._finishing = True
            if conn._scheduled:
                return scheduled and self._need_wake()
            conn._scheduled = True
            self._ready.append(conn)
            return self._need_wake()

    def abort(self, conn: Connection, reason: str) -> bool:
        """Mark ``conn`` as closing now; its queue is dropped. True if the caller must
        shut it down: False once the writer is closing it (:meth:`_close`)."""
        with self._lock:
            if conn._retired:
                return False
            if conn.close_reason is None:
                conn.close_reason = reason
            conn._aborting = True
            self._drop_queue(conn)
            return True

    def wake(self) -> None:
        """Wake the writer thread (cheap; call after releasing any lock)."""
        if self._wake_w is None:
            return  # not started: nothing to wake
        # OSError: the pipe is full, so the writer will wake anyway (or it is closed).
        # (try, not contextlib.suppress: a wake follows every message.)
        try:  # noqa: SIM105
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def retire(self, conn: Connection) -> None:
        """Hand over a connection whose reader is done: flush once, then close it."""
        with self._lock:
            conn._retired = True  # (from now on a finish or an abort does nothing)
            self._retired.append(conn)
            wake = self._need_wake()
        if wake:
            self.wake()

    def closing(self) -> bool:
        """Whether connections handed over to close (:meth:`retire`) are not closed yet:
        waiting for their turn, or for their clients to take what was sent (``linger``)."""
        with self._lock:
            # (_lingering is the writer thread's: its size, read here, is one word.)
            return bool(self._retired or self._closing_now or self._lingering)

    @property
    def lingering(self) -> int:
        """Connections the server ended kept open for their clients to take what they
        are owed (``linger``)."""
        return len(self._lingering)  # (the writer thread's dict: its size is one word)

    def stop(self) -> None:
        """Stop the thread after it has processed what was handed to it; idempotent."""
        with self._lock:
            self._stopping = True
            self._room.notify_all()  # paused readers go on (and find the server closing)
        self.wake()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join()

    # -- the writer thread -------------------------------------------------------

    def _run(self) -> None:
        """Thread entry point: nothing above catches errors."""
        assert self._selector is not None and self._wake_r is not None
        assert self._wake_w is not None
        try:
            while True:
                # While a queue is over its limit, wake to check it even if nothing
                # is queued to it (a client that never reads, senders paused).
                events = self._selector.select(
                    SLOW_CHECK if self._over or self._caught_up or self._lingering else None
                )
                # Drain the wake pipe before taking the lists: a wake sent after the
                # swap below then stays in the pipe for the next select().
                self._drain_wake()
                with self._lock:
                    # The rooms' messages published since the last cycle: queued to each
                    # member once for all of them, then sent with the rest.
                    published, self._published = self._published, []
                    for feed in published:
                        feed.claimed = 0.0  # the next run in step may go
                        self._hand_over(feed)
                    ready, self._ready = self._ready, []
                    retired, self._retired = self._retired, []
                    self._closing_now = len(retired)
                    self._wake_pending = False
                    stopping = self._stopping
                for key, _mask in events:
                    if key.fileobj is not self._wake_r:
                        self._flush(key.data)
                for conn in ready:
                    self._flush(conn)
                for conn in retired:
                    self._flush(conn)
                    self._close(conn)
                if retired:
                    with self._lock:
                        self._closing_now = 0  # (closed, or lingering: counted there)
                # (Read without the lock: a miss is caught next round, SLOW_CHECK at most
                # while one is over or caught up lately.)
                if self._over or self._held or self._caught_up:
                    self._cut_stalled()
                if self._lingering:
                    self._linger_check()
                if self._paused:  # read without the lock: a miss is caught next round
                    with self._lock:
                        # Each paused reader tests its own condition (the backlog, and
                        # whether a room of its own is held).
                        self._room.notify_all()
                if stopping:
                    break
        except Exception:
            # This branch should never run. It's a safety net in case of bugs.
            log.error("writer thread failed", exc_info=True)
        finally:
            for conn in list(self._lingering):
                self._end(conn)
            self._lingering.clear()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _cut_stalled(self) -> None:
        """Cut the connections whose socket stayed full, with more than ``max_sendq``
        waiting (until back to half of it), for ``slow_timeout`` seconds; then hold the
        rooms of those left that read (writer thread)."""
        now = time.monotonic()
        with self._lock:
            stalled = [
                conn
                for conn in self._over
                if conn._over_since is not None and now - conn._over_since > self.slow_timeout
            ]
            for conn in stalled:
                self._cut_slow(conn)  # (out of _over)
            # One that still reads holds its rooms' senders back until it is down to half
            # of max_sendq; one that took nothing for READING seconds holds nobody up
            # while it waits to be cut. So a hold lasts slow_timeout at most: a client
            # too slow to drain half its max_sendq in that time is cut, and its rooms go
            # on. Only the rooms' bytes count: a client that fills its own queue (pages
            # of history, private messages sent to it) holds no room up.
            self._held = frozenset(
                feed.key
                for conn in self._over
                if now - conn._took_at < READING
                and conn._out_bytes - conn._pushed > conn.max_sendq // 2
                for feed in conn._feeds
            )
            # In step for IN_STEP, and then until the queue is empty (or it is over again,
            # or gone).
            self._caught_up = {
                conn: at
                for conn, at in self._caught_up.items()
                if (now - at < IN_STEP or conn._out or conn._blocked)
                and conn not in self._over
                and not conn._aborting
            }
            watched: dict[str, Feed] = {}
            for conn in self._caught_up:
                for feed in conn._feeds:
                    watched[feed.key] = feed
                    if feed.claimed and not feed.frames and now - feed.claimed > SLOW_CHECK:
                        feed.claimed = 0.0  # a claim that published nothing (refused)
            self._watched = watched
        for conn in stalled:
            self._flush(conn)  # shuts it down

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _flush(self, conn: Connection) -> None:
        """Send everything queued for ``conn`` in one ``send``; wait for POLLOUT if full."""
        tls = conn.tls
        with self._lock:
            conn._scheduled = False
            if tls is not None and not tls.ready and not conn._aborting:
                return  # the reader is still shaking hands; it reschedules us after
            out = conn._out
            idle = conn._aborting or not (out or conn._cipher)
            shut = conn._aborting or conn._finishing
            aborting = conn._aborting
            if not idle:
                conn._out = collections.deque()
        if idle:
            self._unwait(conn)
            if shut:
                self._shut(conn, aborting)
            return
        data = b"" if not out else out[0] if len(out) == 1 else b"".join(out)
        plain = len(data)
        try:
            if tls is not None:
                # What waited, then the new bytes encrypted: the queue's bytes are
                # consumed, and what the socket does not take stays in _cipher.
                data = conn._cipher + tls.encrypt(data)
                plain += len(conn._cipher)
            sent = conn.sock.send(data, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            conn.lose(f"connection lost ({getattr(exc, 'strerror', None) or exc})")
            self._unwait(conn)
            return
        self.sends += 1
        self.bytes_sent += sent
        if sent:
            conn._took_at = time.monotonic()  # (it reads: see READING)
        wait = shut = False
        with self._lock:
            aborting = conn._aborting
            if aborting:
                # abort() dropped the queue (and its bytes from the counters)
                shut = True
            else:
                owned = self._owned_of(conn)
                if tls is not None:
                    # The counters held the plaintext taken and the old _cipher; now
                    # they hold the new _cipher's length, and 0 once it is sent.
                    conn._cipher = data[sent:]
                    sent_all = not conn._cipher
                    consumed = plain - len(conn._cipher)
                else:
                    sent_all = sent == len(data)
                    consumed = sent
                conn._out_bytes -= consumed
                self._queued -= consumed
                if conn._pushed:
                    conn._pushed = max(0, conn._pushed - consumed)
                # The socket is full if it did not take everything: what waits now is
                # the client's own delay (up to max_sendq), not the writer's.
                conn._blocked = not sent_all
                self._owned += self._owned_of(conn) - owned
                if conn._over_since is not None and (
                    not conn._blocked or conn._out_bytes <= conn.max_sendq // 2
                ):
                    conn._over_since = None  # it caught up (and releases its rooms)
                    self._caught_up[conn] = time.monotonic()
                    self._over.discard(conn)
                if conn._blocked:
                    # Unsent bytes go back in front: anything pushed meanwhile is
                    # behind them, so the queue stays FIFO. (TLS: they wait in _cipher.)
                    if tls is None:
                        conn._out.appendleft(data[sent:])
                    conn._scheduled = True  # pushes need not wake us: POLLOUT will
                    wait = True
                else:
                    shut = conn._finishing and not conn._out
        if wait:
            self._wait(conn)
            return
        self._unwait(conn)
        if shut:
            self._shut(conn, aborting)

    def _shut(self, conn: Connection, aborting: bool) -> None:
        """Shut a closing connection down once its queue is sent (``aborting``: now);
        a TLS one that finished says so first (``close_notify``), best effort."""
        tls = conn.tls
        if tls is not None and not aborting:
            last = tls.close_notify()
            if last:
                with contextlib.suppress(OSError):  # (gone, or full: it was ending anyway)
                    conn.sock.send(last, socket.MSG_DONTWAIT)
        conn.shutdown(read_only=not aborting)

    def _wait(self, conn: Connection) -> None:
        assert self._selector is not None
        if conn not in self._waiting:
            self._waiting.add(conn)
            self._selector.register(conn.sock, selectors.EVENT_WRITE, conn)

    def _unwait(self, conn: Connection) -> None:
        assert self._selector is not None
        if conn in self._waiting:
            self._waiting.discard(conn)
            self._selector.unregister(conn.sock)

    def _close(self, conn: Connection) -> None:
        """Close a connection whose reader is done (:meth:`retire`): at once, or, one the
        server ended whose client still has bytes coming (queued, or held back by its
        full window), once they are sent: :meth:`_linger`."""
        with self._lock:
            conn._retired = True
            ended = conn._finishing and not conn._aborting and not conn._lost
            # (A TLS connection still shaking hands has nothing it can be sent: _flush
            # would return at once, its socket writable, and the writer spin.)
            ready = conn.tls is None or conn.tls.ready
            owed = ended and ready and bool(conn._out or conn._cipher)
        if ended and (owed or _unsent(conn.sock)) and len(self._lingering) < self.max_lingering:
            self._linger(conn)
            return
        self._end(conn)

    def _end(self, conn: Connection) -> None:
        """Drop what is still queued for ``conn`` and close its socket (writer thread)."""
        self._unwait(conn)
        with self._lock:
            self._drop_queue(conn)
            conn._aborting = True  # nothing more is queued for it
        _close_quietly(conn)

    def _linger(self, conn: Connection) -> None:
        """Keep a connection the server ended open until its client has been sent what
        it is owed (``linger`` seconds at most): what is still queued (its socket was
        full), and what its full window holds back in the kernel. Closed under them, or
        given input once closed, the socket would reset the connection and the kernel
        drop them (the end of the chat, the shutdown's notice); what the client sends
        meanwhile waits unread, and is dropped just before the close. Not shut down for
        writing meanwhile: input arriving at a socket shut both ways resets it at once.
        Its queue goes on being sent as any other's (POLLOUT)."""
        self._lingering[conn] = time.monotonic() + self.linger
        if conn._out and conn not in self._waiting:
            self._wait(conn)

    def _linger_check(self) -> None:
        """Close the lingering connections sent everything (queued and in the kernel),
        lost, or whose ``linger`` ran out (each ``SLOW_CHECK`` while any lingers)."""
        now = time.monotonic()
        for conn, deadline in list(self._lingering.items()):
            if now < deadline and not conn._lost:
                with self._lock:
                    owed = bool(conn._out or conn._cipher)
                if owed or _unsent(conn.sock):
                    continue
            del self._lingering[conn]
            self._end(conn)


def _close_quietly(conn: Connection) -> None:
    """Close ``conn``'s socket after dropping the input its client sent (``LINGER_BYTES``
    at most): closed with unread input, it would reset the connection."""
    with contextlib.suppress(OSError):
        dropped = 0
        while dropped < LINGER_BYTES and (waiting := conn.unread()):
            data = conn.sock.recv(min(waiting, RECV_BYTES_BUSY), socket.MSG_DONTWAIT)
            if not data:
                break
            dropped += len(data)
    conn.close()


SIOCOUTQNSD = 0x894B  # Linux: bytes queued to a TCP socket and not sent yet


def _unsent(sock: socket.socket) -> int:
    """Bytes queued to ``sock`` that the kernel has not sent yet (``SIOCOUTQNSD``: its
    client's window is full, it is not reading); 0 once closed. (Bytes sent and not yet
    acknowledged do not count: a client's delayed ACK would hold up every close.)"""
    try:
        raw = fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", raw)[0])


def _keys(conn: Connection, rooms: Iterable[str | None]) -> set[str]:
    """The keys of the rooms a message of ``conn``'s goes to (``None``: its current room),
    of those it is a member of (to another, the message is refused: nothing to pace)."""
    keys = set()
    for room in rooms:
        name = conn.session.current_room if room is None else room
        if name:
            keys.add(names.fold(name))
    # (_feeds is the writer's, read without its lock: a join or part meanwhile only
    # paces this one message as before it.)
    return keys & {feed.key for feed in list(conn._feeds)}


def _encode_run(frames: Sequence[Frame], codec: Codec) -> bytes:
    """The bytes of ``frames`` in ``codec``, joined (each frame's own bytes are cached)."""
    if len(frames) == 1:
        return frames[0].encode(codec)
    return b"".join([frame.encode(codec) for frame in frames])


@functools.lru_cache(maxsize=4096)
def _timeval(seconds: float) -> bytes:
    """``seconds`` as the ``struct timeval`` of ``SO_RCVTIMEO`` (at least 1 µs: 0 is never)."""
    micros = max(1, round(min(seconds, IDLE_PARK_MAX) * 1_000_000))
    return struct.pack("ll", micros // 1_000_000, micros % 1_000_000)


@functools.lru_cache(maxsize=4096)
def _is_loopback(host: str) -> bool:
    # Cached: parsing an address costs more than the rest of accepting a client.
    return ipaddress.ip_address(host).is_loopback


def _stamps(pm: Any) -> dict[str, float | None]:
    """Each registered plugin's source stamp (see :func:`plugins.source_stamp`)."""
    return {
        name: plugins_mod.source_stamp(plugin)
        for name, plugin in pm.list_name_plugin()
        if plugin is not None
    }


def _error(face: Face, writer: Writer, code: str, text: str) -> bytes:
    """An ``error`` frame for a connection of ``face`` that has sent nothing yet
    (counted)."""
    writer.count_error(code)
    return face.early(Frame("error", code=code, text=text))


def _raise_fd_limit(max_clients: int) -> None:
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.info("raised the open-files limit from %d to %d", soft, hard)
    wanted = max_clients + 64  # and a few for the listener, the wake pipes, logs, plugins
    if hard != resource.RLIM_INFINITY and hard < wanted:
        log.warning(
            "the open-files hard limit (%d) is below max_clients (%d) plus %d for the server "
            "itself: raise it (ulimit -Hn) or lower max_clients",
            hard,
            max_clients,
            wanted - max_clients,
        )


class Server:
    """A chat server, to run in a program or a test.

    ::

        with chatkit.Server(port=0, plugins=["profanity"]) as server:
            host, port = server.address
            ...

    ``start()`` returns once the server listens (serving in background threads);
    ``serve_forever()`` blocks until ``shutdown()``. It listens once per face:
    ``faces=[LineFace(), OtherFace(port=7000)]``; by default the line face alone, on
    ``host`` and ``port``.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        plugins: Iterable[Any] = (),
        config: Config | None = None,
        faces: Iterable[Face] | None = None,
    ) -> None:
        """Build the server and load its plugins (nothing listens yet).

        :param host: Address to listen on (default ``config.host``).
        :param port: Port to listen on, 0 for any free one (default ``config.port``).
        :param plugins: Plugins to enable besides the defaults: names (as for
            ``--plugin``) or plugin objects (modules, instances, or classes: one
            instance is made); the names are called first, then the objects, each in
            the order given. A :meth:`reload` keeps them all, as ``chatkit serve``'s
            reload keeps its ``--plugin`` flags.
        :param config: Settings; a default :class:`Config` if omitted.
        :param faces: The wire protocols to listen for, each on its own address
            (:mod:`chatkit.faces`); a face without one listens on ``host`` and ``port``.
            Default: ``[LineFace()]``.

        Raises :class:`UsageError` for an unknown or broken plugin, or two faces with
        one name.
        """
        # A copy: the caller's Config may start other servers too (its plugin list is
        # extended here). Its limits and tables are shared (the server reads them live).
        config = dataclasses.replace(config) if config is not None else Config()
        names = [p for p in plugins if isinstance(p, str)]
        # A class given as a plugin: one instance of it (as for a name naming a class).
        objects = [p() if isinstance(p, type) else p for p in plugins if not isinstance(p, str)]
        config.plugins = [*config.plugins, *names]
        if host is not None:
            config.host = host
        if port is not None:
            config.port = port
        self.config = config
        """The server's settings."""
        self.pluginmanager, self.plugin_infos = plugins_mod.build_plugin_manager(config, objects)
        """The server's own pluggy ``PluginManager`` and what was loaded (both replaced,
        not changed, by :meth:`reload`)."""
        self._extra_plugins = objects  # a program's plugin objects: kept by every reload
        self._extra_names = names  # and the plugins it named: enabled by every reload too
        self._plugin_stamps = _stamps(self.pluginmanager)  # each plugin's source file mtime
        # One reload at a time (SIGHUP twice in a row, or SIGHUP during /reload). Held
        # by the main thread (SIGHUP) or by the reader thread of the operator who typed
        # /reload; reload() takes no lock a reader holds, so neither can deadlock.
        self._reload_lock = threading.Lock()
        self.reloader: Callable[[], list[str]] | None = None
        """Reads the config again and applies it, returning what changed (what
        ``/reload`` calls, on the operator's reader thread): ``chatkit serve`` sets it
        to what SIGHUP does (its config file, its command line's flags on top). It
        raises :class:`UsageError` when the config cannot be applied, and the old one
        stays. ``None`` (a server made by a program): ``/reload`` is refused; call
        :meth:`reload` instead."""
        self.hooks = HookRunner(self.pluginmanager)
        """Calls hooks plugin by plugin (see :class:`chatkit.hooks.HookRunner`)."""
        self.commands = CommandRegistry()
        """The registered commands (filled by ``start()``)."""
        limits = config.limits
        self.writer = Writer(
            limits.max_backlog, limits.slow_timeout, limits.linger, limits.max_lingering
        )
        """The writer thread's state."""
        self.hub = Hub(config, self.hooks, self.commands, self.writer)
        """The chat state."""
        self.faces: list[Face] = list(faces) if faces is not None else [LineFace()]
        """The faces, in order; each gets a listener."""
        seen = [face.name for face in self.faces]
        if not seen or len(set(seen)) != len(seen):
            raise UsageError(f"faces need distinct names, and at least one: {seen}")
        self.address: tuple[str, int] = (config.host, config.port)
        """Where the first face listens; the real port once started."""
        self.addresses: dict[str, tuple[str, int]] = {}
        """Where each face listens, by face name (filled by ``start()``)."""
        self._listeners: dict[socket.socket, Face] = {}
        # Each listener's (family, type), as ints: socket.accept() would look them up
        # as enums for every client, which costs more than the accept itself.
        self._socket_kinds: dict[socket.socket, tuple[int, int]] = {}
        self.tls_context: ssl.SSLContext | None = None
        """The TLS context new handshakes use (``config.tls_cert``), replaced by
        :meth:`reload_tls`; ``None`` without TLS."""
        # Synchronize access to _conns and _per_address (acceptor, readers, watchdog,
        # shutdown), to the parked connections (_parked, _to_park, _accepting: readers
        # park, the acceptor resumes, the watchdog reads) and to the lifecycle flags
        # _started and _stopped.
        self._lock = threading.Lock()
        # Every open connection and its reader's Done (set when the reader ends); None
        # while it is pending (it has sent nothing yet, only the acceptor knows it) or
        # parked.
        self._conns: dict[Connection, Done | None] = {}
        # Parked connections (idle: no reader, watched by the acceptor's selector, see
        # _park), and those of them handed over but not yet in the selector. Under _lock.
        self._parked: set[Connection] = set()
        self._to_park: list[Connection] = []
        self._accepting = True  # False once the acceptor has ended: nothing parks then
        self._per_address: collections.Counter[str] = collections.Counter()
        # The pending connections and when each times out, oldest first (acceptor
        # thread only, so no lock).
        self._pending: dict[Connection, float] = {}
        # The pending connections still to be greeted and when (acceptor thread only).
        self._greet: dict[Connection, float] = {}
        # Per-address token buckets for connect_rate: host -> (tokens, when last
        # updated). Acceptor thread only.
        self._buckets: dict[str, tuple[float, float]] = {}
        # Refusals per address: host -> (when one was last logged, how many since).
        # Acceptor thread only.
        self._refusals: dict[str, tuple[float, int]] = {}
        self._refusals_flushed = 0.0  # (monotonic) the last _flush_refusals
        self._untold = 0  # refusals counted and not logged yet, all hosts
        self._started = False
        self._started_at = time.monotonic()
        self._stopped = False
        self._stop_event = threading.Event()
        self._accept_sel: selectors.BaseSelector | None = None
        self._accept_wake_r: socket.socket | None = None
        self._accept_wake_w: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self.readers = ThreadPool()
        """The threads readers run on: a connection's reader ends when it closes or
        parks, and its thread waits a while for the next one (see chatkit.threads)."""
        self.paused = 0
        """Times a reader paused because the writer was behind (a metric)."""
        self.readers_started = 0
        """Readers started: one per connection that sent something (a metric; each runs
        on a thread of :attr:`readers`, new or reused)."""
        # TLS handshakes under way, oldest first (guarded by _lock: max_handshakes).
        self._handshakes: dict[Connection, None] = {}
        self._handshakes_logged = -60.0  # when max_handshakes was last logged
        self.readers_resumed = 0
        """Readers started again for parked connections that turned readable (a metric;
        acceptor thread only)."""
        self.failure: str | None = None
        """Why the server stopped itself (see :meth:`fail`), or ``None``."""
        self._no_thread_logged = -60.0  # when "cannot start a reader thread" was logged

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        """Configure plugins, register commands, listen, and start serving.

        Steps: bind and listen → ``chatkit_configure`` →
        ``chatkit_register_commands`` → start the writer → ``chatkit_server_start``
        → start the watchdog and acceptor threads (clients are accepted from here on).
        Raises :class:`UsageError` if a plugin refuses its settings or the address
        cannot be bound; the plugins configured by then are stopped
        (``chatkit_server_stop``), so the process may start another server. Returns
        the server.
        """
        with self._lock:
            if self._started:
                raise RuntimeError("Server.start() called twice")
            self._started = True
            self._started_at = time.monotonic()
        limits = self.config.limits
        # Bind first: a port in use is the likeliest mistake, and plugins (the
        # history database) should not open files for a server that cannot run.
        configured: list[Any] = []
        try:
            if self.config.tls_cert or self.config.tls_key:
                if not (self.config.tls_cert and self.config.tls_key):
                    raise UsageError("TLS needs both a certificate and its key (--tls-key)")
                self.tls_context = tls_context(self.config.tls_cert, self.config.tls_key)
            if self.tls_context is None and any(isinstance(f, TlsFace) for f in self.faces):
                raise UsageError("a TLS listener needs a certificate: --tls-cert and --tls-key")
            for face in self.faces:
                listener = self._listen(face)
                self._listeners[listener] = face
                self._socket_kinds[listener] = (int(listener.family), int(listener.type))
                self.addresses[face.name] = listener.getsockname()[:2]
            self.hooks.startup(
                "chatkit_configure",
                configured,
                config=self.config,
                pluginmanager=self.pluginmanager,
            )
            plugins_mod.collect_commands(self.pluginmanager, self.commands)
        except BaseException:
            for listener in self._listeners:
                listener.close()
            # What the configured plugins opened (a database and its thread, a port):
            # closed, as at shutdown, so that the process can start another server.
            for plugin in reversed(configured):
                try:
                    plugins_mod.call_plugin(plugin, "chatkit_server_stop", server=self)
                except Exception:
                    log.debug("stopping %r after a failed start", plugin, exc_info=True)
            with self._lock:
                self._stopped = True  # (shutdown() has nothing left to do)
            raise
        self.hub.prepare()
        _raise_fd_limit(limits.max_clients)
        self.address = self.addresses[self.faces[0].name]
        self._accept_wake_r, self._accept_wake_w = socket.socketpair()
        self._accept_sel = selectors.DefaultSelector()
        for listener, face in self._listeners.items():
            listener.setblocking(False)
            self._accept_sel.register(listener, selectors.EVENT_READ, face)
        self._accept_sel.register(self._accept_wake_r, selectors.EVENT_READ)
        self.writer.start()
        # The plugins are told before the first client is accepted (connections wait
        # in the listen backlog meanwhile): a hook never sees a client before the
        # plugin's server_start has set it up.
        self.hooks.notify("chatkit_server_start", server=self)
        for target, name in (
            (self._watchdog, "chatkit-watchdog"),
            (self._accept, "chatkit-acceptor"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()
        for name, (host, port) in self.addresses.items():
            log.debug("%s face listening on %s:%d", name, host, port)
        return self

    def _listen(self, face: Face) -> socket.socket:
        """A listening socket for ``face``; :class:`UsageError` if the address is taken."""
        host = face.host if face.host is not None else self.config.host
        port = face.port if face.port is not None else self.config.port
        try:
            ipv6 = ":" in host  # an IPv6 address; "::" also takes IPv4 where it can
            return socket.create_server(
                (host, port),
                family=socket.AF_INET6 if ipv6 else socket.AF_INET,
                backlog=1024,
                reuse_port=False,
                dualstack_ipv6=host == "::" and socket.has_dualstack_ipv6(),
            )
        except (OSError, OverflowError) as exc:  # OverflowError: a port over 65535
            where = "" if len(self.faces) == 1 else f" ({face.name} face)"
            raise UsageError(
                f"cannot listen on {host}:{port}{where}: {getattr(exc, 'strerror', None) or exc}"
            ) from None

    def reload(self, config: Config) -> list[str]:
        """Apply ``config`` to the running server without dropping anyone.

        Limits apply at once (``max_sendq`` and the writer's too for every connection;
        the line and text limits for connections opened from now on), as do the
        default room and the plugins: a plugin enabled, disabled, or whose settings or
        source file changed is stopped (``chatkit_server_stop``) and a new one
        configured and started (``chatkit_configure``, commands,
        ``chatkit_server_start``); the others go on untouched. Host, port, faces, the
        TLS port, TLS turned on or off, and a plugin that stores messages (``history``)
        or says ``chatkit_restart_only`` (``cluster``) change only at a restart.

        Returns what changed and what waits for a restart, one line each, for people.
        Raises :class:`UsageError` if the new config cannot be applied; the server
        then goes on with the old one. A setting refused by its plugin's
        ``chatkit_check_config`` is refused before any plugin stops: every plugin goes
        on untouched. One refused by ``chatkit_configure`` (a plugin without the check,
        or a port in use) is found once the plugins it replaces have stopped: each of
        those is replaced by a new instance configured as before.
        """
        with self._reload_lock:
            return self._reload(config)

    def _reload(self, config: Config) -> list[str]:
        old = self.config
        named = [name for name in self._extra_names if name not in config.plugins]
        if named:  # (a copy: the caller's config is its own)
            config = dataclasses.replace(config, plugins=[*config.plugins, *named])
        plan = plugins_mod.plan_reload(
            self.pluginmanager, old, config, self._plugin_stamps, self._extra_plugins
        )
        notes = list(plan.notes)
        # The plugins whose changes wait for a restart go on with their old tables, and
        # so does everything derived from them (the accounts' file is the history's
        # with another name: it must not move to a file the history does not use yet).
        tables = dict(config.plugin_config)
        for name in plan.deferred:
            if name in old.plugin_config:
                tables[name] = old.plugin_config[name]
            else:
                tables.pop(name, None)
        config = dataclasses.replace(config, plugin_config=tables)
        for key in ("host", "port", "tls_port", "tls_only"):
            if getattr(config, key) != getattr(old, key):
                notes.append(f"{key} changes at the next restart")
        if bool(config.tls_cert) != bool(old.tls_cert):
            # TLS's listeners are made at start: turned on or off, it waits for a
            # restart, and the running server keeps its files (renewals still load).
            notes.append(f"TLS {'on' if config.tls_cert else 'off'} at the next restart")
            config = dataclasses.replace(config, tls_cert=old.tls_cert, tls_key=old.tls_key)
        if config.faces != old.faces:
            notes.append("faces change at the next restart")
        # The new settings are checked before anything stops (chatkit_check_config
        # opens nothing): one refused leaves every plugin running as it was, untouched.
        # (A plugin without that hook is checked by its chatkit_configure below.)
        starting = {name for name, _ in plan.started}
        plugins_mod.check_plugin_settings(
            config, plan.pm, [info for info in plan.infos if info.name in starting]
        )
        # Stop first: a restarted plugin may need what the old one holds (a port).
        # Until the swap below, hooks may still call a stopped plugin for a moment;
        # that is the price of never running without it (a filter, flood control).
        for name, plugin in plan.stopped:
            self._stop_plugin(name, plugin)
        try:
            commands = self._start_plugins(plan.pm, config, plan.started)
        except UsageError:
            for name, plugin in plan.started:
                self._stop_plugin(name, plugin)
            self._restore(plan.stopped)
            raise
        # The swap: each is one attribute assignment, atomic for the threads that
        # read them (a hook call uses the manager it started with).
        self.hooks.pm = plan.pm
        self.commands.replace(commands)
        self.pluginmanager, self.plugin_infos = plan.pm, plan.infos
        self._plugin_stamps = _stamps(plan.pm)
        for name, plugin in plan.started:
            try:
                plugins_mod.call_plugin(plugin, "chatkit_server_start", server=self)
            except Exception:
                log.exception("plugin %r failed in chatkit_server_start", name)
        notes += self._apply_settings(config)
        stopped = {name for name, _ in plan.stopped}
        for name, _plugin in plan.started:
            notes.append(f"plugin {name!r} " + ("restarted" if name in stopped else "enabled"))
        notes += [f"plugin {name!r} disabled" for name in stopped - {n for n, _ in plan.started}]
        return notes

    def _stop_plugin(self, name: str, plugin: Any) -> None:
        try:
            plugins_mod.call_plugin(plugin, "chatkit_server_stop", server=self)
        except Exception:
            log.exception("plugin %r failed in chatkit_server_stop", name)

    def _start_plugins(
        self, pm: Any, config: Config, plugins: list[tuple[str, Any]]
    ) -> CommandRegistry:
        """Configure ``plugins`` (registered in ``pm``) and collect every command of
        ``pm``; :class:`UsageError` as at start."""
        for name, plugin in plugins:
            try:
                plugins_mod.call_plugin(
                    plugin, "chatkit_configure", config=config, pluginmanager=pm
                )
            except UsageError:
                raise
            except Exception as exc:
                raise UsageError(
                    f"plugin {name!r} failed in chatkit_configure: {type(exc).__name__}: {exc}"
                ) from exc
        return plugins_mod.collect_commands(pm)

    def _restore(self, stopped: list[tuple[str, Any]]) -> None:
        """After a failed reload: new instances of the plugins it stopped, as before."""
        for name, _plugin in stopped:
            try:
                fresh, _info = plugins_mod.resolve_plugin(name)
                plugins_mod.call_plugin(
                    fresh, "chatkit_configure", config=self.config, pluginmanager=self.pluginmanager
                )
                self.pluginmanager.unregister(name=name)
                self.pluginmanager.register(fresh, name=name)
                plugins_mod.call_plugin(fresh, "chatkit_server_start", server=self)
            except Exception:
                log.exception("plugin %r could not be restored after a failed reload", name)
        self.commands.replace(plugins_mod.collect_commands(self.pluginmanager))

    def _apply_settings(self, config: Config) -> list[str]:
        """Copy ``config``'s settings into the running config (which the hub and the
        faces read); return what changed."""
        old = self.config
        notes: list[str] = []
        for f in dataclasses.fields(old.limits):
            value = getattr(config.limits, f.name)
            if getattr(old.limits, f.name) != value:
                notes.append(f"limit {f.name}: {getattr(old.limits, f.name)} -> {value}")
                setattr(old.limits, f.name, value)
        for key in ("default_room", "bidi", "log_level", "log_format", "tls_cert", "tls_key"):
            if getattr(old, key) != getattr(config, key):
                notes.append(f"{key}: {getattr(old, key)} -> {getattr(config, key)}")
                setattr(old, key, getattr(config, key))
        old.plugins, old.disable = list(config.plugins), list(config.disable)
        old.plugin_config = {name: dict(table) for name, table in config.plugin_config.items()}
        limits = old.limits
        self.writer.max_backlog = limits.max_backlog
        self.writer.slow_timeout = limits.slow_timeout
        self.writer.linger = limits.linger
        self.writer.max_lingering = limits.max_lingering
        self.writer.set_max_sendq(self.connections, limits.max_sendq)
        return notes

    def reload_tls(self) -> None:
        """Load the certificate and key files again (``chatkit serve`` on SIGHUP): new
        handshakes use them, connected clients keep theirs. Raises :class:`UsageError`
        (and keeps the old ones) if they cannot be loaded; does nothing without TLS."""
        if self.config.tls_cert and self.config.tls_key and self.tls_context is not None:
            self.tls_context = tls_context(self.config.tls_cert, self.config.tls_key)
            log.info("TLS certificate reloaded from %s", self.config.tls_cert)

    @property
    def stopped(self) -> bool:
        """True once :meth:`shutdown` began (or the server stopped itself: :meth:`fail`).
        Takes no lock: safe anywhere, a signal handler included."""
        return self._stop_event.is_set()

    def serve_forever(self) -> None:
        """Start if needed, then block until :meth:`shutdown` is called (from another thread)."""
        if not self._started:
            self.start()
        self._stop_event.wait()

    def shutdown(self) -> None:
        """Stop the server; returns when every thread is done. Idempotent.

        Steps: stop accepting; refuse new messages and deliver those accepted
        (``shutdown_grace`` seconds at most); send every client a notice and close its
        connection once its queue is sent and taken (``shutdown_grace`` seconds at most,
        then cut);
        join the reader threads (logout hooks run there with reason ``server
        shutdown``); stop the writer and watchdog; ``chatkit_server_stop``.
        """
        with self._lock:
            if self._stopped or not self._started:
                self._stopped = True
                self._stop_event.set()
                return
            self._stopped = True
        self._stop_event.set()  # stops the watchdog and releases serve_forever()
        if self._accept_wake_w is not None:  # None if start() was interrupted early
            self._accept_wake_w.send(b"\0")
        for thread in self._threads:
            thread.join()
        # What was accepted is delivered before the notice: new messages are refused
        # now, and those in the lanes (stored, with history) are delivered by their
        # readers, which settle them before they read on. (A connection finishing
        # takes nothing more: one finished first would miss them.)
        self.hub.stop_messages()
        deadline = time.monotonic() + self.config.limits.shutdown_grace
        while self.hub.undelivered() and time.monotonic() < deadline:
            time.sleep(SHUTDOWN_POLL)
        self.hub.closing = True
        notice = Frame("notice", text="server shutting down")
        with self._lock:
            # No pending connection is left: the acceptor, joined above, closed them.
            conns = [(c, reader) for c, reader in self._conns.items() if reader is not None]
        for conn, _reader in conns:
            conn.push(notice)
            conn.finish("server shutdown")
        self.writer.wake()
        deadline = time.monotonic() + self.config.limits.shutdown_grace
        for conn, reader in conns:
            reader.join(max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                conn.abort("server shutdown")
        for _conn, reader in conns:
            reader.join()
        # Sockets closed once their clients took the notice (Writer._linger), within
        # the same grace: a reset would drop what a client still sending had not taken.
        while self.writer.closing() and time.monotonic() < deadline:
            time.sleep(SHUTDOWN_POLL)
        self.readers.close()
        self.writer.stop()
        for listener in self._listeners:
            listener.close()
        if self._accept_sel is not None:
            self._accept_sel.close()
        for sock in (self._accept_wake_r, self._accept_wake_w):
            if sock is not None:
                sock.close()
        log.info("server stopped")
        self.hooks.notify("chatkit_server_stop", server=self)

    def fail(self, reason: str) -> None:
        """Stop the server because a part it cannot run without has failed.

        For plugins, from any thread: logs ``reason`` as critical, records it in
        :attr:`failure` and shuts down on a thread of its own (so the caller may be
        a thread that shutdown joins). ``chatkit serve`` then exits with status 1.
        Better than limping on, e.g. refusing every message. Idempotent.
        """
        with self._lock:
            if self.failure is not None:
                return
            self.failure = reason
        log.critical("stopping the server: %s", reason)
        threading.Thread(target=self.shutdown, name="chatkit-fail", daemon=True).start()

    def __enter__(self) -> Self:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def stats(self) -> dict[str, Any]:
        """Counters for operators and benchmarks (see the ``stats`` plugin)."""
        conns = self.connections
        hub, writer = self.hub, self.writer
        faces = dict.fromkeys(self.addresses, 0)
        for conn in conns:
            faces[conn.face.name] = faces.get(conn.face.name, 0) + 1
        with writer._lock:
            errors = dict(sorted(writer.errors.items()))
            slow_cuts = writer.slow_cuts
        # The hub's and writer's plain counters are read without their locks: each
        # read is atomic, and a count a few frames stale is fine for a metric.
        return {
            "connections": len(conns),
            "faces": faces,
            "pending": len(self._pending),  # read without the lock: a stale count is fine
            "lingering": writer.lingering,
            "logged_in": len(hub.sessions()),
            "rooms": len(hub.rooms()),
            "queued_bytes": sum(c.queued_bytes for c in conns),
            "logins": hub.logins,
            "messages": hub.messages,
            "deliveries": hub.deliveries,
            "sends": writer.sends,
            "bytes_sent": writer.bytes_sent,
            "slow_cuts": slow_cuts,
            "errors": errors,
            "uptime": round(time.monotonic() - self._started_at, 3),
        }

    @property
    def parked(self) -> int:
        """Connections parked: idle, with no reader thread (see ``idle_park``)."""
        with self._lock:
            return len(self._parked)

    @property
    def connections(self) -> list[Connection]:
        """The open connections, logged in or not."""
        with self._lock:
            return list(self._conns)

    # -- threads -------------------------------------------------------------------

    def _accept(self) -> None:
        """Thread entry point: nothing above catches errors.

        One selector holds the listener, the wake pipe and every pending
        connection (accepted, nothing received yet). Each round: take what the
        pending connections sent (and start their readers), accept at most
        ``ACCEPT_BATCH`` new ones, close the pending ones whose time is up.
        """
        assert self._accept_sel is not None
        selector = self._accept_sel
        try:
            while not self._stop_event.is_set():
                ready: list[socket.socket] = []
                for key, _mask in selector.select(self._next_wake()):
                    if key.fileobj is self._accept_wake_r:
                        if self._stop_event.is_set():
                            return
                        self._take_parked()
                    elif key.fileobj in self._listeners:
                        ready.append(key.fileobj)
                    elif key.data in self._pending:
                        self._first_data(key.data)
                    else:
                        self._resume(key.data)  # parked
                for listener in ready:
                    self._accept_batch(listener, self._listeners[listener])
                self._expire_pending()
                self._flush_refusals(time.monotonic())
        except Exception:
            # This branch should never run. It's a safety net in case of bugs.
            log.error("acceptor thread failed", exc_info=True)
        finally:
            # Shutdown joins this thread before it closes the others, so every
            # pending connection is closed here, with the notice the others get.
            notice = Frame("notice", text="server shutting down")
            for conn in list(self._pending):
                early = conn.face.early(notice, greeted=conn.greeted)  # (text after a prompt)
                self._close_pending(conn, early, "server shutdown")
            # Every parked connection gets its reader back, for shutdown to close it
            # like the others; from here on no reader parks (_accepting).
            with self._lock:
                self._accepting = False
                parked = list(self._parked)
                self._to_park = []
            for conn in parked:
                self._resume(conn)

    def _accept_batch(self, listener: socket.socket, face: Face) -> None:
        """Accept up to ``ACCEPT_BATCH`` connections (the listener is non-blocking)."""
        family, kind = self._socket_kinds[listener]
        for _ in range(ACCEPT_BATCH):
            try:
                fd, addr = listener._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("cannot accept a connection: %s; retrying", exc.strerror)
                    # Out of descriptors: the pending connection stays in the
                    # backlog, so wait a little instead of spinning.
                    self._stop_event.wait(0.1)
                    return
                raise
            self._admit(socket.socket(family, kind, 0, fileno=fd), addr, face)

    def _admit(self, sock: socket.socket, addr: tuple[str, int], face: Face) -> None:
        """Register a new connection as pending, or refuse it (acceptor thread)."""
        # A lone chat line must not wait for a delayed ACK (~40 ms). The listener
        # is TCP (create_server), so every accepted socket is.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(True)  # for its reader; the acceptor reads with MSG_DONTWAIT
        limits = self.config.limits
        host = str(addr[0])
        counted = limits.limit_loopback or not _is_loopback(host)
        # The per-address limits count an IPv6 client's network as one address.
        key = address_key(host, limits.ipv6_prefix) if counted else host
        now = time.monotonic()
        refusal: tuple[str, str] | None = None
        conn: Connection | None = None
        if counted and not self._take_token(key, now):
            refusal = (
                "too_many_connections",
                f"too many new connections from {key} "
                f"(at most {limits.connect_rate:g} a second); try later",
            )
        else:
            with self._lock:
                if len(self._conns) >= limits.max_clients:
                    refusal = (
                        "server_full",
                        f"server full ({limits.max_clients} clients); try later",
                    )
                elif counted and self._per_address[key] >= limits.max_clients_per_address:
                    refusal = (
                        "too_many_connections",
                        f"too many connections from {key} "
                        f"(at most {limits.max_clients_per_address})",
                    )
                else:
                    tls = None
                    if isinstance(face, TlsFace) and self.tls_context is not None:
                        tls = TlsState(self.tls_context)
                    conn = Connection(
                        sock,
                        (host, int(addr[1])),
                        limits.max_sendq,
                        self.writer,
                        face,
                        self._pause,
                        tls,
                    )
                    conn.session = Session(conn, self.writer.wake)
                    conn.channel = face.open(self.hub, conn.session, conn)
                    self._conns[conn] = None  # pending: no reader yet
                    if counted:
                        self._per_address[key] += 1
                        conn.counted_as = key
        if conn is None:
            assert refusal is not None
            self._log_refusal(host, addr[1], refusal[1], now)
            with contextlib.suppress(OSError):
                sock.send(_error(face, self.writer, *refusal), socket.MSG_DONTWAIT)
            sock.close()
            return
        oldest = self._oldest_silent() if len(self._pending) >= limits.max_pending else None
        if oldest is not None:
            # Close the oldest silent connection, not this one: a client that talks
            # leaves the pending set within a round trip, so whoever has waited
            # longest is the likeliest never to talk.
            self._close_pending(
                oldest,
                _error(
                    oldest.face,
                    self.writer,
                    "server_busy",
                    "too many connections have sent nothing yet; yours was the oldest",
                ),
                "evicted while silent",
            )
        timeout = min(limits.first_byte_timeout, limits.login_timeout)
        self._pending[conn] = now + timeout
        if limits.greeting_delay < timeout:
            self._greet[conn] = now + limits.greeting_delay
        assert self._accept_sel is not None
        self._accept_sel.register(sock, selectors.EVENT_READ, conn)

    def _oldest_silent(self) -> Connection | None:
        """The pending connection silent longest (acceptor thread), looking at the
        oldest ``ACCEPT_BATCH`` only; ``None`` if each of them has bytes waiting. The
        acceptor accepts a batch before it reads any: one whose client sent its hello
        at once, not read yet, is about to leave the pending set, and is no silent one
        to close (``max_pending`` is then passed by at most a batch, for a moment)."""
        for conn in itertools.islice(self._pending, ACCEPT_BATCH):
            try:
                if conn.sock.recv(1, _PEEK_NOW):
                    continue  # it talked: served at the acceptor's next look
            except (BlockingIOError, InterruptedError):
                pass  # silent
            except OSError:
                pass  # broken: nothing to lose
            return conn
        return None

    def _log_refusal(self, host: str, port: int, why: str, now: float) -> None:
        """Log a refused connection: the first from ``host`` in ``REFUSAL_LOG_INTERVAL``
        seconds, then one line saying how many more there were (acceptor thread), so a
        storm from many addresses cannot flood the log."""
        last, count = self._refusals.get(host, (0.0, 0))
        if now - last < REFUSAL_LOG_INTERVAL:
            self._refusals[host] = (last, count + 1)
            self._untold += 1
            return
        self._log_more(host, count)
        self._refusals.pop(host, None)  # (told: not again below)
        log.warning("refused %s:%s: %s", host, port, why)
        if len(self._refusals) >= CONNECT_BUCKETS:
            for other, (_, more) in self._refusals.items():  # bounded, like the buckets
                self._log_more(other, more)
            self._refusals.clear()
        self._refusals[host] = (now, 0)

    def _flush_refusals(self, now: float) -> None:
        """Log the refusals counted and not told yet, once their interval is over, even
        if no other comes to tell them (acceptor thread); forget the hosts done with.
        At most once a second: a storm's hosts are many."""
        if not self._refusals or now - self._refusals_flushed < 1.0:
            return
        self._refusals_flushed = now
        done = [h for h, (last, _) in self._refusals.items() if now - last >= REFUSAL_LOG_INTERVAL]
        for host in done:
            self._log_more(host, self._refusals.pop(host)[1])

    def _log_more(self, host: str, count: int) -> None:
        if count:
            self._untold -= count
            log.warning("refused %d more connection(s) from %s since the last line", count, host)

    def _take_token(self, host: str, now: float) -> bool:
        """Spend one of ``host``'s connection tokens (connect_rate); False if it has none."""
        limits = self.config.limits
        tokens, then = self._buckets.get(host, (float(limits.connect_burst), now))
        tokens = min(float(limits.connect_burst), tokens + (now - then) * limits.connect_rate)
        if tokens < 1.0:
            self._buckets[host] = (tokens, now)
            return False
        if host not in self._buckets and len(self._buckets) >= CONNECT_BUCKETS:
            self._prune_buckets(now)
        self._buckets[host] = (tokens - 1.0, now)
        return True

    def _prune_buckets(self, now: float) -> None:
        """Forget the buckets that have refilled; all of them if that is not enough."""
        limits = self.config.limits
        full = float(limits.connect_burst)
        for host, (tokens, then) in list(self._buckets.items()):
            if tokens + (now - then) * limits.connect_rate >= full:
                del self._buckets[host]
        if len(self._buckets) >= CONNECT_BUCKETS:
            # Connections from more addresses than this at once: a distributed
            # storm, which a per-address rate cannot stop anyway (max_pending
            # does). Start afresh rather than grow without bound.
            self._buckets.clear()

    def _next_wake(self) -> float | None:
        """Seconds the acceptor may wait for its sockets: until a pending connection's
        time is up, or (refusals counted and not told yet) the next flush of them."""
        due = self._next_expiry()
        if self._untold:
            due = min(due if due is not None else REFUSAL_LOG_INTERVAL, REFUSAL_LOG_INTERVAL / 4)
        return due

    def _next_expiry(self) -> float | None:
        """Seconds until the oldest pending connection times out or is greeted; None if
        there is none."""
        if not self._pending:
            return None
        due = next(iter(self._pending.values()))
        if self._greet:
            due = min(due, next(iter(self._greet.values())))
        return max(0.0, due - time.monotonic())

    def _expire_pending(self) -> None:
        """Close the pending connections whose first-byte (or login) timeout has passed."""
        if not self._pending:
            return
        now = time.monotonic()
        limits = self.config.limits
        if limits.first_byte_timeout < limits.login_timeout:
            text = f"nothing received within {limits.first_byte_timeout:g} seconds"
        else:
            text = f"no login within {limits.login_timeout:g} seconds"
        frame = Frame("error", code="login_timeout", text=text)
        # Deadlines grow with insertion order (one timeout for all), so the
        # expired ones are at the front.
        for conn, deadline in list(self._pending.items()):
            if deadline > now:
                break
            early = conn.face.early(frame, greeted=conn.greeted)
            if early:  # (a TLS port's connection is sent nothing: it speaks no TLS yet)
                self.writer.count_error("login_timeout")
            self._close_pending(conn, early, "login timeout")
        # Silent for greeting_delay: most likely a person at nc or telnet, who sees
        # nothing until the server speaks. A program speaking JSON sends its hello
        # at once, so it never reads this line (and has left _greet by then).
        for conn, deadline in list(self._greet.items()):
            if deadline > now:
                break
            del self._greet[conn]
            greeting = conn.face.greeting()
            if greeting:
                conn.greeted = True
                with contextlib.suppress(OSError):  # an empty new socket: never blocks
                    conn.sock.send(greeting, socket.MSG_DONTWAIT)

    def _first_data(self, conn: Connection) -> None:
        """A pending connection is readable: close it if it left, else start its reader."""
        assert self._accept_sel is not None
        # A TLS connection's bytes are its handshake, for its reader: only peek.
        flags = _PEEK_NOW if conn.tls is not None else _NOW
        try:
            data = conn.sock.recv(RECV_BYTES if conn.tls is None else 1, flags)
        except (BlockingIOError, InterruptedError):
            return  # a spurious wakeup: it stays pending
        except OSError as exc:
            self._close_pending(conn, None, f"connection lost ({exc.strerror or exc})")
            return
        if not data:
            # Opened and closed without a word (a storm, a port scan): no
            # thread, no hook, just the descriptor back.
            self._close_pending(conn, None, "connection closed")
            return
        self._accept_sel.unregister(conn.sock)
        del self._pending[conn]
        self._greet.pop(conn, None)
        done = Done()
        oldest: Connection | None = None
        with self._lock:
            if conn.tls is not None:
                if len(self._handshakes) >= self.config.limits.max_handshakes:
                    # A storm of half-done handshakes, each holding a thread, would take
                    # those that logged-in clients need: the oldest under way makes room
                    # (closed below, out of the lock). Not the new one: a real client's
                    # handshake takes a round trip or two, so whoever has held its place
                    # longest is the likeliest to be stalling (refusing the newest let a
                    # few stalling connections shut every TLS port).
                    oldest = next(iter(self._handshakes))
                    # Its reader's handshake fails at once (nothing to say: TLS has not
                    # begun). Under the lock: its reader, done, takes it off under it,
                    # and a client past its handshake is not this one to cut.
                    with contextlib.suppress(OSError):
                        oldest.sock.shutdown(socket.SHUT_RDWR)
                    # Off the count at once (its reader's pop finds it gone): else each
                    # newcomer of a burst picked this one, closed already, and stayed.
                    del self._handshakes[oldest]
                self._handshakes[conn] = None  # (the reader takes it off: _serve)
            # Register before the reader starts, or shutdown() could miss it.
            self._conns[conn] = done
        if oldest is not None:
            now = time.monotonic()
            if now - self._handshakes_logged >= 60:
                self._handshakes_logged = now
                log.warning(
                    "%d TLS handshakes under way (max_handshakes): closing the oldest to "
                    "make room for each new one",
                    self.config.limits.max_handshakes,
                )
        self.readers_started += 1
        if not self._start_reader(conn, functools.partial(self._serve, conn, data), done):
            # No thread for it: it never had a session; closed, the others go on.
            if conn.tls is not None:
                with self._lock:
                    self._handshakes.pop(conn, None)  # (no reader to take it off)
            self._forget(conn)
            conn.close()
            done.set()

    def _close_pending(self, conn: Connection, frame: bytes | None, reason: str) -> None:
        """Send a pending connection ``frame`` (if any) and close it (acceptor thread).

        Only the acceptor knows a pending connection (no reader, no session in
        the hub, the watchdog skips it, nothing was queued to the writer), so it
        closes the socket itself.
        """
        assert self._accept_sel is not None
        self._accept_sel.unregister(conn.sock)
        del self._pending[conn]
        self._greet.pop(conn, None)
        self._forget(conn)
        log.debug("closed %s:%s before it sent anything: %s", *conn.address, reason)
        if frame is not None:
            # MSG_DONTWAIT: a new socket's buffer is empty, so this never blocks; a
            # peer that already left raises OSError, which is what we wanted.
            with contextlib.suppress(OSError):
                conn.sock.send(frame, socket.MSG_DONTWAIT)
        conn.close()

    def _forget(self, conn: Connection) -> None:
        """Remove ``conn`` from the registry and its address's count."""
        with self._lock:
            self._conns.pop(conn, None)
            key = conn.counted_as
            if key is not None and self._per_address.get(key):
                self._per_address[key] -= 1
                if not self._per_address[key]:
                    del self._per_address[key]

    def _serve(self, conn: Connection, data: bytes | None) -> None:
        """Thread entry point for one connection: nothing above catches errors.

        ``data`` is what the acceptor received first (never empty); on a TLS port,
        the acceptor only peeked, and the handshake comes first. ``None``: a parked
        connection turned readable (see :meth:`_park`); its reader reads on.
        """
        session = conn.session
        reason = "connection closed"
        resumed = data is None
        data = data or b""
        size = RECV_BYTES_BUSY if len(data) == RECV_BYTES else RECV_BYTES
        tls = conn.tls
        eof = parked = False
        ended = False  # the client's close_notify came with the data in hand: EOF after it
        limits = self.config.limits
        park = 0.0  # the idle_park in SO_RCVTIMEO (none yet)
        try:
            if tls is not None and not resumed:
                try:
                    data, ended = tls.handshake(conn.sock, self.config.limits.tls_handshake_timeout)
                except (OSError, ValueError) as exc:  # ssl.SSLError, TimeoutError: OSErrors
                    # A plain client on the TLS port, a scanner, a bad certificate on
                    # the client's side: close it, quietly (nothing to log as an error).
                    log.debug("TLS handshake with %s:%s failed: %s", *conn.address, exc)
                    reason = "TLS handshake failed"
                    return
                finally:
                    with self._lock:
                        self._handshakes.pop(conn, None)  # (added by the acceptor: _first_data)
                # The writer waited for the handshake (a watchdog's frame may be queued).
                if self.writer.push(conn, b""):
                    self.writer.wake()
                if not data and not ended:
                    self._greet_silent(conn)
            while True:
                if conn.finishing:
                    break  # (what came after the server ended it is not acted on)
                if data or eof:
                    conn.last_seen = time.monotonic()
                    conn.pinged_at = None
                    if not conn.channel.receive(data) or eof or conn.finishing:
                        break
                if session.unsettled:
                    # Lines handled so far may still be being stored: deliver them
                    # before waiting for more (see Hub.settle).
                    self.hub.settle(session)
                if ended:
                    # The TLS session ended after the data just handled: the end of
                    # input, as EOF (a last line without its newline is acted on).
                    data, eof = b"", True
                    continue
                try:
                    if park != limits.idle_park:  # at start, and after a reload
                        park = limits.idle_park
                        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(park))
                    try:
                        # Blocks for at most idle_park seconds (SO_RCVTIMEO): one syscall a
                        # read, as for any blocking reader.
                        raw = conn.sock.recv(size)
                    except BlockingIOError:
                        # Nothing for idle_park seconds: park the connection and end this
                        # thread. (Settled above; a TLS reader holds no plaintext: decrypt()
                        # reads the SSLObject dry.)
                        if self._park(conn):
                            parked = True
                            return
                        data = b""  # the server is stopping: keep reading
                        continue
                    # Idle readers wait with a small buffer; a full one means more waits.
                    size = RECV_BYTES_BUSY if len(raw) == size else RECV_BYTES
                    if tls is not None and not raw:
                        # The TCP stream ended without the client's close_notify: what
                        # it sent may have been cut by someone on the way, at a record's
                        # edge. Lines already whole were acted on; a last one without its
                        # newline is not ("transfer $100 to bo..." cut short).
                        break
                    if tls is None or not raw:
                        data, eof = raw, not raw
                    else:
                        # A partial record decrypts to nothing yet: read on. A
                        # close_notify is the end of input, as EOF is (a client may
                        # send it and keep the socket open).
                        data, ended = tls.decrypt(raw)
                        if tls.records >= TLS_RECORDS_PER_LINE:
                            # Records cost a turn each, whatever they hold: a client
                            # sending its bytes one record apiece pays a free line per
                            # TLS_RECORDS_PER_LINE of them (a line is one or two).
                            lines, tls.records = divmod(tls.records, TLS_RECORDS_PER_LINE)
                            self.hub.free_line(session, lines)
                            if conn.finishing:
                                break
                        if ended and not data:
                            data, eof, ended = b"", True, False
                        if tls.owes() and self.writer.push(conn, b""):
                            # TLS records of its own (a key update's answer, an
                            # alert): the writer sends them (encrypt) with or without
                            # data.
                            self.writer.wake()
                except OSError as exc:  # ssl.SSLError too: a corrupt record
                    reason = f"connection lost ({exc.strerror or exc})"
                    if isinstance(exc, ssl.SSLError):
                        break  # (what it decrypted of that read is lost: no last line)
                    # The end of input, as at EOF: what was read is acted on, a last
                    # line without its newline too. (A script that writes its lines and
                    # closes, `printf ... | nc -q0`, is reset by the server's next send
                    # to it, and its recv() may report that before the end of its data.)
                    data, eof = b"", True
        except Exception:
            # This branch should never run. It's a safety net in case of bugs.
            log.error("connection handler failed", exc_info=True)
            reason = "internal error"
        finally:
            # Parked: the acceptor has it now, and this thread must not touch it again.
            if not parked:
                try:
                    self.hub.settle(session)  # an accepted message is delivered, even now
                    self.hub.logout(session, conn.close_reason or reason)
                except Exception:
                    log.error("logout failed", exc_info=True)
                self._forget(conn)
                self.writer.retire(conn)

    def _greet_silent(self, conn: Connection) -> None:
        """After a TLS handshake, show the face's greeting if the client stays silent
        until ``greeting_delay`` from its connection, as the acceptor does on a plain port
        (a person at ``openssl s_client`` sees the prompt). Reader thread; waits at most
        that long, as its ``recv`` would."""
        face = conn.face.face if isinstance(conn.face, TlsFace) else conn.face
        greeting = face.greeting()
        limits = self.config.limits
        if not greeting or limits.greeting_delay >= limits.login_timeout:
            return
        wait = conn.connected_at + limits.greeting_delay - time.monotonic()
        poll = select.poll()  # (not select(): a descriptor may be past FD_SETSIZE)
        poll.register(conn.sock, select.POLLIN)
        if not poll.poll(max(0, int(wait * 1000))):
            conn.greeted = True
            # Until its first line, what it is sent is text (a login_timeout), as on the
            # plain port: a person reads it.
            greeted = getattr(conn.channel, "greeted", None)  # (optional: faces/__init__)
            if greeted is not None:
                greeted()
            if self.writer.push(conn, greeting):
                self.writer.wake()

    def _park(self, conn: Connection) -> bool:
        """Hand an idle connection to the acceptor, whose selector watches it with no
        thread until it turns readable (reader thread, then ending); False, and the
        reader keeps it, if the server is stopping.

        Everything that ends a connection shuts its socket down (``finish``, ``abort``,
        a slow-consumer cut, shutdown's notice), which makes it readable: so a parked
        connection gets its reader back for its logout and retirement, as any other.
        """
        with self._lock:
            # Under the lock that shutdown() sets _stopped with, and the acceptor clears
            # _accepting with before it resumes every parked connection: none is left
            # behind without a thread.
            if self._stopped or not self._accepting:
                return False
            self._conns[conn] = None  # no reader; the watchdog still sees it (_parked)
            self._parked.add(conn)
            wake = not self._to_park  # one wake byte for any number of hand-overs
            self._to_park.append(conn)
        if wake:
            assert self._accept_wake_w is not None
            # A blocking send of one byte: the pipe holds at most two (this and stop).
            self._accept_wake_w.send(b"\0")
        return True

    def _take_parked(self) -> None:
        """Watch the connections readers have parked (acceptor thread)."""
        assert self._accept_sel is not None and self._accept_wake_r is not None
        with contextlib.suppress(BlockingIOError):
            self._accept_wake_r.recv(64, _NOW)
        with self._lock:
            handed, self._to_park = self._to_park, []
        for conn in handed:
            self._accept_sel.register(conn.sock, selectors.EVENT_READ, conn)

    def _resume(self, conn: Connection) -> None:
        """Start a reader again for a parked connection (acceptor thread): it turned
        readable (bytes, the client's EOF, or our own shutdown of its socket), or the
        server is stopping."""
        assert self._accept_sel is not None
        if conn.sock in self._accept_sel.get_map():
            self._accept_sel.unregister(conn.sock)
        done = Done()
        with self._lock:
            self._parked.discard(conn)
            self._conns[conn] = done  # before it starts, or shutdown() could miss it
        self.readers_resumed += 1
        if not self._start_reader(conn, functools.partial(self._serve, conn, None), done):
            # No thread for it: what its reader would have done at its end, here (its
            # lines were settled before it parked).
            try:
                self.hub.logout(conn.session, "server out of threads")
            except Exception:
                log.error("logout failed", exc_info=True)
            self._forget(conn)
            self.writer.retire(conn)
            done.set()

    def _start_reader(self, conn: Connection, task: Callable[[], None], done: Done) -> bool:
        """Run a connection's reader on a pool thread (acceptor thread); False if no
        thread could be started (the process's limit on threads or memory: a storm of
        slow TLS handshakes, each holding a reader). The acceptor must go on whatever
        happens to one connection: the caller closes that one."""
        host, port = conn.address
        try:
            self.readers.run(f"chatkit-reader-{host}:{port}", task, done)
        except RuntimeError as exc:  # "can't start new thread"
            now = time.monotonic()
            if now - self._no_thread_logged >= 60:  # one line a minute, whatever the storm
                self._no_thread_logged = now
                log.warning(
                    "cannot start a reader thread (%s; %d threads): closing connections "
                    "until one can be; raise the process's limit on threads (systemd "
                    "TasksMax, ulimit -u, a container's pids limit) or lower max_clients",
                    exc,
                    threading.active_count(),
                )
            return False
        return True

    def _pause(self, conn: Connection, rooms: Iterable[str | None] = ()) -> None:
        """Wait, before handling the next line, until the writer has caught up and no
        room of the client's is held (see :meth:`Writer.wait_for_room`).

        The server, or a member of one of its rooms, is behind, not this client: its
        lines wait (unread lines slow its client through TCP) rather than anyone being
        cut as a slow consumer.
        Lines already accepted are delivered first (settle), so a pause never
        holds up a room's lane.
        """
        session = conn.session
        if session.unsettled:
            self.hub.settle(session)
        self.paused += 1  # a metric; a racy increment only miscounts
        while not conn.finishing and not self._stop_event.is_set():
            if self.writer.wait_for_room(conn, rooms):
                return

    def _watchdog(self) -> None:
        """Thread entry point: nothing above catches errors."""
        limits = self.config.limits
        tick = max(
            0.02, min(1.0, limits.login_timeout, limits.idle_timeout, limits.ping_timeout) / 4
        )
        try:
            while not self._stop_event.wait(tick):
                now = time.monotonic()
                with self._lock:
                    # Pending connections are the acceptor's (it times them out); parked
                    # ones are logged in or not, like those with a reader.
                    conns = [
                        c
                        for c, reader in self._conns.items()
                        if reader is not None or c in self._parked
                    ]
                for conn in conns:
                    if conn.finishing:
                        pinged = conn.pinged_at
                        if pinged is not None and (
                            now - pinged > limits.ping_timeout + limits.linger
                        ):
                            conn.abort("ping timeout")  # its farewell never left
                        continue
                    if not conn.session.logged_in:
                        if now - conn.connected_at > limits.login_timeout:
                            conn.session.error(
                                "login_timeout",
                                f"no login within {limits.login_timeout:g} seconds",
                            )
                            conn.finish("login timeout")
                    elif conn.pinged_at is not None:
                        if now - conn.pinged_at > limits.ping_timeout:
                            # Told why, if it is only not answering (a person at nc); cut
                            # below if that does not leave within linger. (A
                            # queue already waiting means it is not reading: cut now.)
                            if conn.queued_bytes:
                                conn.abort("ping timeout")
                            else:
                                conn.session.error(
                                    "ping_timeout",
                                    f"no answer to the ping within {limits.ping_timeout:g} seconds",
                                )
                                conn.finish("ping timeout")
                    elif now - conn.last_seen > limits.idle_timeout:
                        conn.pinged_at = now
                        conn.session.send(Frame("ping"))
        except Exception:
            # This branch should never run. It's a safety net in case of bugs.
            log.error("watchdog thread failed", exc_info=True)
