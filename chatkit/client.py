"""A chatkit client for programs and bots: connect, log in, send, read frames, close.

::

    from chatkit.client import Client

    with Client.connect("127.0.0.1", 9090) as client:
        me = client.login("echo")["nick"]
        client.say("hello! '!echo TEXT' and I say TEXT")
        for frame in client:            # dicts, as in docs/protocol.md
            if frame["type"] != "message" or frame.get("history") or frame["nick"] == me:
                continue                # skip replayed messages and its own lines
            if frame["text"].startswith("!echo "):
                echo = frame["text"].removeprefix("!echo ")
                client.say(echo, room=frame["room"], literal=True)  # never a /command

It speaks the JSON protocol over a blocking socket; ``chatkit join`` and the test
clients of :mod:`chatkit.testing` are built on it. Lines are split by the server's own
splitter (:class:`chatkit.protocol.LineDecoder`), with a limit: a line from the server
that is too long, or not a frame, is skipped and reported as an ``error`` frame of the
client's own (:data:`LOCAL_ERRORS`), never an exception.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Self

from chatkit.errors import ChatkitError
from chatkit.names import room_name
from chatkit.protocol import BIDI_CONTROLS, LineDecoder, LineTooLong, clean_text, message_body

__all__ = [
    "LOCAL_ERRORS",
    "MAX_SERVER_LINE",
    "Client",
    "ClientError",
    "ConnectionLost",
    "LineClient",
    "LoginRefused",
    "NoAnswer",
    "RoomRefused",
    "encode_frame",
    "literal_text",
    "room_name",
    "say_frame",
    "tls_client_context",
]

RECV_BYTES = 65536  # bytes asked of one recv()
MAX_SERVER_LINE = 4 * 1024 * 1024
"""The longest line a client reads from a server, in bytes: four times the most the server
queues for one client by default (``max_sendq``), far above any frame it sends (a ``/who``
of a full room is the largest). A longer line is skipped as it arrives, never buffered."""

LOCAL_ERRORS = frozenset({"server_line_too_long", "server_bad_frame"})
"""The codes of ``error`` frames the client makes itself, for a line from the server it could
not read (longer than its limit; not a JSON frame). The line was skipped; nothing was refused."""


def literal_text(text: str) -> str:
    """``text`` escaped so that the server reads it as a message, never a command: a
    leading ``/`` (after the line breaks a message of several lines loses at either
    end, as :func:`chatkit.protocol.message_body` says: ``"\\n/quit"`` is ``/quit``)
    doubled, as the protocol escapes it."""
    bare = message_body(text)
    return "/" + bare if bare.startswith("/") else text


def say_frame(text: str, room: str | None = None) -> dict[str, Any]:
    """The ``say`` frame for ``text`` (a message, or a command if it starts with ``/``)."""
    frame: dict[str, Any] = {"type": "say", "text": text}
    if room is not None:
        frame["room"] = room
    return frame


def encode_frame(frame: dict[str, Any]) -> bytes:
    """The line :meth:`Client.send` sends for ``frame``, without its final newline.

    Its length is what the server compares with its line limit (``max_line``).
    """
    try:
        return json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        # A lone surrogate is not text, so it has no UTF-8: sent as a JSON escape,
        # which the server refuses by name (bad_encoding) instead of the client failing.
        return json.dumps(frame, separators=(",", ":")).encode()


TLS_HINTS = {
    "CERTIFICATE_VERIFY_FAILED": " (the server's certificate is not one this machine trusts: "
    "a self-signed one, or its CA named by SSL_CERT_FILE)",
    "WRONG_VERSION_NUMBER": " (the server did not answer in TLS: is this its TLS port?)",
}
"""What a failed handshake's reason most likely means, for the person who sees it."""


def tls_client_context(insecure: bool = False) -> ssl.SSLContext:
    """A context to reach a server over TLS: the system's trusted certificates (or the
    ``SSL_CERT_FILE`` environment variable's), or, with ``insecure``, any certificate
    at all (a self-signed one in a test; anyone in the middle can read along)."""
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class ClientError(ChatkitError):
    """The client could not do what was asked; the text says why, in words."""


class ConnectionLost(ClientError, ConnectionError):
    """The server closed the connection, or it broke (also a ``ConnectionError``)."""


class NoAnswer(ClientError, TimeoutError):
    """Connecting took longer than the timeout: no answer to the connection, or a
    listener that took it and never answered the TLS handshake (also a ``TimeoutError``)."""


class LoginRefused(ClientError):
    """The server refused the nick (taken, invalid, or a plugin said no)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        """The error code, e.g. ``nick_taken`` or ``bad_nick``."""


class RoomRefused(ClientError):
    """The server refused a room (a bad name, or a plugin said no)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        """The error code, e.g. ``bad_room``."""


def printable(value: Any) -> Any:
    """``value`` (a frame from the server, or a part of one) with every string in it fit
    for a terminal: control characters (escape sequences, backspace, bell, C1) become
    U+FFFD, as do bidi overrides; tabs are spaces, line breaks are kept. A chatkit
    server cleans what its clients send, but a hostile server, or anyone in the middle
    of a plain connection, could otherwise clear the screen, write the clipboard (OSC
    52) or forge a line."""
    if isinstance(value, str):
        return clean_text(value, newlines=True)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable(item) for item in value]
    return value


# JSON's own escapes for what a terminal would act on (C1 controls, bidi controls, the
# Unicode line breaks): json.dumps escapes C0 itself; these keep their code points.
_JSON_ESCAPES = {
    c: f"\\u{c:04x}" for c in [*range(0x7F, 0xA0), 0x2028, 0x2029, *sorted(BIDI_CONTROLS)]
}


def printable_json(frame: dict[str, Any]) -> str:
    """``frame`` as one line of JSON whose every character a terminal shows as it is
    (non-ASCII text kept; what a terminal would act on escaped, its data unchanged)."""
    return json.dumps(frame, ensure_ascii=False).translate(_JSON_ESCAPES)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (``None``: no limit), at least a little: the
    call given it raises ``TimeoutError`` itself once there is nothing left."""
    return None if deadline is None else max(0.001, deadline - time.monotonic())


def _refusal(frame: dict[str, Any]) -> bool:
    """An ``error`` frame from the server (not one of the client's own)."""
    return frame["type"] == "error" and frame.get("code") not in LOCAL_ERRORS


def _decode(line: bytes | LineTooLong) -> dict[str, Any] | None:
    """The frame a line holds; ``None`` for an empty line; a local error for a bad one."""
    if isinstance(line, LineTooLong):
        text = f"a line from the server was longer than {line.limit} bytes; it was skipped"
        return {"type": "error", "code": "server_line_too_long", "text": text}
    if not line.strip():
        return None
    try:
        frame = json.loads(line)
    except (ValueError, RecursionError):
        frame = None
    if isinstance(frame, dict) and isinstance(frame.get("type"), str):
        return frame
    shown = line[:60].decode("utf-8", "replace")
    text = f"a line from the server is not a chatkit frame; it was skipped: {shown!r}"
    return {"type": "error", "code": "server_bad_frame", "text": text, "line": shown}


def _other_face(frame: dict[str, Any]) -> bool:
    """Whether ``frame`` is a line no chatkit line port sends: the sign of another
    face's port (IRC's lines, the web's HTTP). The text greeting a line port shows a
    connection silent for a second (``chatkit 0.1.0: type a nick...``) is none."""
    return frame.get("code") == "server_bad_frame" and not str(frame.get("line", "")).startswith(
        "chatkit "
    )


def _readable(sock: socket.socket, timeout: float | None) -> bool:
    """Whether ``sock`` turns readable (or closed) within ``timeout`` seconds (``None``:
    however long it takes)."""
    try:
        poller = select.poll()
    except AttributeError:  # no poll (Windows)
        return bool(select.select([sock], [], [], timeout)[0])
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


class LineClient:
    """A connection to a server, read line by line with deadlines: what :class:`Client`
    (JSON) and ``chatkit.testing.TextClient`` (text mode) are built on.

    Lines are split by :class:`chatkit.protocol.LineDecoder`, as the server splits a
    client's, with a limit (``max_line``): a longer line is dropped as it arrives and
    reads as one :class:`~chatkit.protocol.LineTooLong`.
    """

    def __init__(
        self, sock: socket.socket, address: tuple[str, int], *, max_line: int = MAX_SERVER_LINE
    ) -> None:
        self.sock = sock
        """The connected socket."""
        self.address = address
        """The server's (host, port)."""
        self.closed = False
        """True once the server closed the connection (or :meth:`close` was called)."""
        self._heard = False  # a byte came from the server
        self._closed_here = False  # close() was called (not the server's end)
        self._decoder = LineDecoder(max_line)
        self._lines: deque[bytes | LineTooLong] = deque()
        # Serializes sends: whoever reads answers the server's pings (Client._read),
        # maybe on another thread than one sending a long line (sendall may take
        # several sends, and a pong in between would cut that line in two).
        self._send_lock = threading.Lock()
        # A TLS connection's one SSL object may not be used by two threads at once
        # (OpenSSL's rule): a send and a receive take turns under this lock. A receive
        # waits for data without it (poll), so a send waits only while bytes are read.
        self._tls_lock = threading.Lock() if isinstance(sock, ssl.SSLSocket) else None

    @staticmethod
    def _open(
        address: tuple[str, int], timeout: float, tls: ssl.SSLContext | None = None
    ) -> socket.socket:
        """A socket connected to ``address`` (``timeout`` still set on it), over TLS with
        ``tls`` (handshake done, the host name checked as ``tls`` says); raises
        ``OSError`` (``ssl.SSLError`` for a failed handshake)."""
        sock = socket.create_connection(address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                return tls.wrap_socket(sock, server_hostname=address[0])
            except BaseException:
                sock.close()
                raise
        return sock

    @classmethod
    def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 9090,
        timeout: float = 10.0,
        *,
        max_line: int = MAX_SERVER_LINE,
        tls: ssl.SSLContext | None = None,
    ) -> Self:
        """Connect; raise :class:`ClientError` ("no chatkit server at HOST:PORT") if refused,
        :class:`NoAnswer` if nothing answered within ``timeout``.

        ``timeout`` bounds the connecting; ``max_line`` is the longest line read;
        ``tls`` (e.g. :func:`tls_client_context`) speaks TLS.
        """
        try:
            sock = cls._open((host, port), timeout, tls)
        except ConnectionRefusedError:
            raise ClientError(f"no chatkit server at {host}:{port}") from None
        except TimeoutError:
            what = "the TLS handshake" if tls is not None else "the connection"
            raise NoAnswer(f"no answer from {host}:{port} to {what} in {timeout:g} s") from None
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            hint = TLS_HINTS.get(reason, "")
            raise ClientError(f"TLS with {host}:{port} failed: {reason}{hint}") from None
        except OSError as exc:
            raise ClientError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
        sock.settimeout(None)
        return cls(sock, (host, port), max_line=max_line)

    @property
    def max_line(self) -> int:
        """The longest line read from the server, in bytes, without its newline."""
        return self._decoder.max_line

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are; raise :class:`ConnectionLost` if the connection broke,
        or is closed (by the server, as a read found, or by :meth:`close`)."""
        if self.closed:
            raise ConnectionLost(
                "this client was closed (close())"
                if self._closed_here
                else "the server closed the connection"
            )
        try:
            with self._send_lock, self._tls_lock or contextlib.nullcontext():
                self.sock.sendall(data)
        except OSError as exc:
            raise ConnectionLost(f"connection lost: {exc.strerror or exc}") from None

    def read_line(self, timeout: float | None = None) -> bytes | LineTooLong | None:
        """The next line from the server (without its newline), a
        :class:`~chatkit.protocol.LineTooLong` for one over :attr:`max_line`, or ``None``
        once the server closed; ``TimeoutError`` after ``timeout`` seconds. (For text
        mode; :class:`Client` reads frames.)"""
        return self._line(_deadline(timeout))

    def _line(self, deadline: float | None) -> bytes | LineTooLong | None:
        """The next line (without its newline), a :class:`LineTooLong`, or ``None`` once
        the server closed. Raises ``TimeoutError`` at ``deadline`` (a ``time.monotonic()``)."""
        while not self._lines:
            if self.closed:
                return None
            self._recv(deadline)
        return self._lines.popleft()

    def _recv(self, deadline: float | None) -> None:
        while True:
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise TimeoutError("the server sent nothing in time")
                # Waits with poll, not the socket's timeout, which a send on another
                # thread shares (it would fail a send as "timed out" midway).
                buffered = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
                if not buffered and not _readable(self.sock, timeout):
                    raise TimeoutError("the server sent nothing in time")
            elif self._tls_lock is not None and not self.sock.pending():  # type: ignore[attr-defined]
                _readable(self.sock, None)  # (not under the lock: a send may go meanwhile)
            try:
                if self._tls_lock is None:
                    data = self.sock.recv(RECV_BYTES)
                else:
                    got = self._tls_recv()
                    if got is None:
                        continue  # half a record: wait for the rest without the lock
                    data = got
            except TimeoutError:
                raise  # (a socket with a timeout of its own: a test's client)
            except OSError:
                data = b""  # reset, or closed by close(): the end either way
            break
        if not data:
            self.closed = True
            return
        self._heard = True
        self._decoder.feed(data)
        while (line := self._decoder.next_line()) is not None:
            self._lines.append(line)

    def _tls_recv(self) -> bytes | None:
        """Read what a TLS socket has, under the lock, without blocking: ``None`` if
        the bytes there are only part of a record (a stalled server must not keep
        the lock, and with it every sender, past the caller's deadline)."""
        assert self._tls_lock is not None
        with self._tls_lock:
            # (A send holds the lock too: none runs while the socket is non-blocking.)
            timeout = self.sock.gettimeout()
            self.sock.setblocking(False)
            try:
                return self.sock.recv(RECV_BYTES)
            except ssl.SSLWantReadError:
                return None
            finally:
                self.sock.settimeout(timeout)

    def buffered(self) -> bool:
        """True if lines are already received and waiting (no need to select)."""
        return bool(self._lines)

    def fileno(self) -> int:
        """The socket's descriptor, for ``selectors``."""
        return self.sock.fileno()

    def close(self) -> None:
        """Close the connection."""
        self._closed_here = not self.closed
        self.closed = True
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client(LineClient):
    """One connection to a chatkit server, speaking JSON. Not thread-safe (but for
    sending, which any thread may do while another reads)."""

    answers_pings = True
    """Whether reading answers the server's ``ping`` frames itself and returns none of
    them (a client that waits quietly stays connected); ``chatkit.testing``'s client
    returns them instead, for tests of the keepalive."""

    def __init__(
        self, sock: socket.socket, address: tuple[str, int], *, max_line: int = MAX_SERVER_LINE
    ) -> None:
        super().__init__(sock, address, max_line=max_line)
        self.nick: str | None = None
        """The nick once logged in; follows its renames (``nick`` frames naming it, read:
        ``/nick``, or an accounts plugin moving a guest off a registered nick)."""
        self.nicks: set[str] = set()
        """Its nick and those it had before, until someone else is seen with one of
        them (a ``join`` or ``nick`` frame): its own messages still being stored when it
        was renamed come back under the old nick after the ``nick`` frame, so a bot
        skips its own lines with ``frame["nick"] in client.nicks``."""
        self.welcome: dict[str, Any] | None = None
        """The server's ``welcome`` frame once logged in."""
        self._login_room: str | None = None  # the room login() asked for, if any
        # Pongs still to come for pings whose sync() or ready() gave up waiting: each
        # is dropped as it arrives, so that a later sync() does not take it for its own.
        self._abandoned = 0
        self.pending: list[dict[str, Any]] = []
        """Frames received and not yet returned by :meth:`receive`, oldest first (those
        that arrived during :meth:`login`, or after the ``pong`` of :meth:`sync`)."""

    # -- sending -------------------------------------------------------------

    def send(self, frame: dict[str, Any] | None = None, **fields: Any) -> None:
        """Send one frame: a dict with a ``type``, or its fields (``send(type="ping")``)."""
        self.send_raw(encode_frame({**(frame or {}), **fields}) + b"\n")

    def say(self, text: str, room: str | None = None, *, literal: bool = False) -> None:
        """Send a line: a message, or a command if it starts with ``/``. With
        ``literal``, always a message (a leading ``/`` is doubled, as the protocol
        escapes it): for text that came from someone else, which must never run as
        this client's command (``/register``, ``/quit``)."""
        self.send(say_frame(literal_text(text) if literal else text, room))

    def login(
        self,
        nick: str,
        *,
        replay: int | None = None,
        since: int | None = None,
        password: str | None = None,
        room: str | None = None,
        rooms: list[str] | None = None,
        resume: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Log in as ``nick``; return the ``welcome`` frame or raise :class:`LoginRefused`.

        ``resume`` is the ``resume`` of an earlier login's welcome: if that connection
        still holds ``nick`` (it died without the server noticing yet), it is closed and
        the nick is this login's.

        ``password`` is the registered nick's (the ``accounts`` plugin). ``room`` is
        joined instead of the default room (its ``#`` may be left out): the welcome's
        ``rooms`` then name it, or none if the server refused it (its ``error``
        follows; :meth:`enter` raises :class:`RoomRefused` for it). ``rooms``: these,
        in order, instead (a reconnect's; the welcome names those joined).

        ``replay`` is how many earlier messages the server replays per room joined
        (0: none; default: the server's choice); ``since`` asks the rooms the login
        joins only for messages after that id (the last one this client has, e.g.
        after a reconnect: rooms joined later replay as any join does).
        Frames that arrive before the answer (none, normally) stay readable.
        ``TimeoutError`` if the server does not answer within ``timeout`` seconds.
        """
        hello: dict[str, Any] = {"type": "hello", "nick": nick}
        if replay is not None:
            hello["replay"] = replay
        if since is not None:
            hello["since"] = since
        if password is not None:
            hello["password"] = password
        if room is not None:
            hello["room"] = room_name(room)
        if rooms is not None:
            hello["rooms"] = [room_name(r) for r in rooms]
        if resume is not None:
            hello["resume"] = resume
        self._login_room = hello.get("room")
        self.send(hello)
        at = self._find(
            lambda f: f["type"] == "welcome" or _refusal(f) or _other_face(f),
            _deadline(timeout),
        )
        if at is None:
            why = "the server closed the connection during login"
            if not self._heard and not isinstance(self.sock, ssl.SSLSocket):
                # A TLS port closes a connection that does not speak TLS without a word.
                why += " without a word (is this its TLS port? then use TLS: --tls)"
            raise ConnectionLost(why)
        frame = self.pending.pop(at)
        if frame["type"] == "error" and frame.get("code") == "server_bad_frame":
            # An IRC port answers a hello with its own lines; a web port, with HTTP.
            self.close()
            raise ConnectionLost(
                "the server does not speak chatkit's line protocol (is this another "
                f"face's port, IRC's or the web's?): {frame.get('text')}"
            )
        if frame["type"] == "error":
            raise LoginRefused(str(frame.get("code")), str(frame.get("text")))
        if not isinstance(frame.get("nick"), str):
            self.close()
            raise ConnectionLost(f"the server's welcome names no nick: {frame}")
        # (The text greeting of a slow login is no news to a program: dropped.)
        self.pending = [
            f for f in self.pending if f.get("code") != "server_bad_frame" or _other_face(f)
        ]
        self.nick, self.welcome = frame["nick"], frame
        return frame

    def enter(self, room: str, timeout: float | None = 10.0) -> list[dict[str, Any]]:
        """Join ``room`` instead of the rooms the login put us in (the default room).

        ``room`` may leave out its ``#``. Returns the frames that arrived meanwhile
        (joins, replays, leaves, maybe a server ``ping`` to answer), for the caller
        to show (and the answers to lines sent before it, first: an error among them
        is not the join's). Raises :class:`RoomRefused`, and stays where it was, if the
        server refuses the room; a ``/part`` refused by flood control is sent again
        once it may go. :class:`RoomRefused` too if leaving another room is refused
        otherwise (then in both); ``TimeoutError`` if it does not all happen within
        ``timeout`` seconds.
        """
        room = room_name(room)
        if not room[1:] or any(c.isspace() for c in room):
            # /join would take a second word for a usage error: say what is wrong.
            raise RoomRefused("bad_room", f"bad room name {room!r}: a room name is one word")
        welcome_rooms: list[str] = (self.welcome or {}).get("rooms", [])
        earlier: list[dict[str, Any]] = []
        if self._login_room is not None and self._login_room.casefold() == room.casefold():
            # login(room=...) asked for it: the server joined it, refused it, or (an
            # older server) ignored the wish and joined the default room.
            earlier = self.sync(timeout)
            for frame in earlier:
                if _refusal(frame):
                    text = re.sub(r"^cannot join \S+: ", "", str(frame.get("text")))
                    raise RoomRefused(str(frame.get("code")), text)
            if [r.casefold() for r in welcome_rooms] == [room.casefold()]:
                return earlier
        deadline = _deadline(timeout)
        if not earlier:
            # Answers to lines sent before (an error among them) are not the join's.
            earlier = self.sync(_left(deadline))
        self.say(f"/join {room}")
        joined = self.sync(_left(deadline))
        for frame in joined:
            if _refusal(frame):
                raise RoomRefused(str(frame.get("code")), str(frame.get("text")))
        frames = earlier + joined
        for other in [r for r in welcome_rooms if r.casefold() != room.casefold()]:
            while True:
                self.say(f"/part {other}")
                parted = self.sync(_left(deadline))
                frames += parted
                refused = next((f for f in parted if _refusal(f)), None)
                if refused is None:
                    break
                wait = refused.get("retry_after")
                if refused.get("code") != "rate_limited" or not isinstance(wait, int | float):
                    raise RoomRefused(
                        str(refused.get("code")), f"joined {room}, but: {refused.get('text')}"
                    )
                # Flood control: the /part again once it may go (or TimeoutError).
                if deadline is not None and time.monotonic() + wait > deadline:
                    raise TimeoutError(f"joined {room}, but could not leave {other} in time")
                time.sleep(wait)
        return frames

    # -- receiving -----------------------------------------------------------

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next frame; ``None`` once the server closed. Raises ``TimeoutError``."""
        if not self.pending and not self._read(_deadline(timeout)):
            return None
        return self.pending.pop(0)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every frame until the server closes the connection."""
        while (frame := self.receive()) is not None:
            yield frame

    def sync(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Send a ``ping`` and return every frame that arrives before the ``pong``.

        When it returns, the server has handled everything sent before it. Raises
        ``TimeoutError`` if the ``pong`` is not there within ``timeout`` seconds, and
        :class:`ConnectionLost` if the server closes first; the frames stay pending.
        """
        self.send(type="ping")
        at = self._pong(timeout)
        frames = self.pending[:at]
        del self.pending[: at + 1]
        return frames

    def ready(self, timeout: float | None = None) -> list[str]:
        """Ask the server whether it is ready to take clients (a ``ping`` with
        ``"ready": true``): the problems its plugins name, empty if none (see the
        ``chatkit_check_ready`` hook). Frames that arrive first stay pending; raises
        as :meth:`sync` does."""
        self.send(type="ping", ready=True)
        pong = self.pending.pop(self._pong(timeout))
        problems = pong.get("problems")
        if pong.get("ready") is True:
            return []
        if isinstance(problems, list) and problems:
            return [str(problem) for problem in problems]
        # A server from before readiness answers a plain pong: it cannot say.
        return ["the server does not say whether it is ready (a chatkit from before ping --ready)"]

    def buffered(self) -> bool:
        """True if frames are already received and waiting (no need to select)."""
        return bool(self.pending) or super().buffered()

    def _pong(self, timeout: float | None) -> int:
        """The index in :attr:`pending` of the ``pong`` to the ping just sent; raises
        ``TimeoutError`` (that pong is then dropped when it comes) or
        :class:`ConnectionLost`."""
        try:
            at = self._find(lambda f: f["type"] == "pong", _deadline(timeout))
        except TimeoutError:
            self._abandoned += 1
            raise
        if at is None:
            raise ConnectionLost("the server closed the connection")
        return at

    def _find(self, match: Callable[[dict[str, Any]], bool], deadline: float | None) -> int | None:
        """The index in :attr:`pending` of the first frame that matches, reading until
        one does; ``None`` if the server closes first. Raises ``TimeoutError``."""
        checked = 0
        while True:
            for at in range(checked, len(self.pending)):
                if match(self.pending[at]):
                    return at
            checked = len(self.pending)
            if not self._read(deadline):
                return None

    def _follow(self, frame: dict[str, Any]) -> None:
        """Keep :attr:`nick` and :attr:`nicks` up to date with a frame just read."""
        kind, nick = frame.get("type"), frame.get("nick")
        if kind == "welcome" and isinstance(nick, str):
            self.nicks = {nick}
        elif kind == "nick":
            old, new = frame.get("old"), frame.get("new")
            if old == self.nick and isinstance(new, str):
                self.nick = new
                self.nicks.add(new)
            elif new in self.nicks and new != self.nick:
                self.nicks.discard(new)  # someone else's now
        elif kind == "join" and nick in self.nicks and nick != self.nick:
            self.nicks.discard(nick)  # someone else logged in with an old one

    def _read(self, deadline: float | None) -> bool:
        """Read the next frame into :attr:`pending`; False once the server closed.

        The server's ``ping`` is answered here and not kept (see :attr:`answers_pings`)."""
        while (line := self._line(deadline)) is not None:
            frame = _decode(line)
            if frame is not None and frame.get("type") == "ping" and self.answers_pings:
                with contextlib.suppress(ConnectionLost):  # (gone: the read tells next)
                    self.send(type="pong")
            elif frame is not None and frame.get("type") == "pong" and self._abandoned:
                self._abandoned -= 1  # a sync() that timed out: not anyone's now
            elif frame is not None:
                self._follow(frame)
                self.pending.append(frame)
                return True
        return False
