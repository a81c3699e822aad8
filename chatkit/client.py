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
                client.say(frame["text"].removeprefix("!echo "), room=frame["room"])

It speaks the JSON protocol over a blocking socket; ``chatkit join`` is built on it.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any, Self

from chatkit.errors import ChatkitError

__all__ = [
    "Client",
    "ClientError",
    "ConnectionLost",
    "LoginRefused",
    "RoomRefused",
    "encode_frame",
    "room_name",
    "say_frame",
]

RECV_BYTES = 65536  # bytes asked of one recv()


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
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode()


def room_name(name: str) -> str:
    """``name`` as a room name: ``general`` is ``#general`` (as ``/join general`` does)."""
    return name if name.startswith("#") else f"#{name}"


class ClientError(ChatkitError):
    """The client could not do what was asked; the text says why, in words."""


class ConnectionLost(ClientError):
    """The server closed the connection, or it broke."""


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


class Client:
    """One connection to a chatkit server, speaking JSON. Not thread-safe."""

    def __init__(self, sock: socket.socket, address: tuple[str, int]) -> None:
        self.sock = sock
        """The connected socket."""
        self.address = address
        """The server's (host, port)."""
        self.nick: str | None = None
        """The nick once logged in."""
        self.welcome: dict[str, Any] | None = None
        """The server's ``welcome`` frame once logged in."""
        self._buf = b""
        self._pending: list[dict[str, Any]] = []
        self.closed = False
        """True once the server closed the connection (or :meth:`close` was called)."""

    @classmethod
    def connect(cls, host: str = "127.0.0.1", port: int = 9090, timeout: float = 10.0) -> Self:
        """Connect; raise :class:`ClientError` ("no chatkit server at HOST:PORT") if refused."""
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except ConnectionRefusedError:
            raise ClientError(f"no chatkit server at {host}:{port}") from None
        except OSError as exc:
            raise ClientError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, (host, port))

    # -- sending -------------------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        """Send one frame (a dict with a ``type``)."""
        try:
            self.sock.sendall(encode_frame(frame) + b"\n")
        except OSError as exc:
            self.closed = True
            raise ConnectionLost(f"connection lost: {exc.strerror or exc}") from None

    def say(self, text: str, room: str | None = None) -> None:
        """Send a line: a message, or a command if it starts with ``/``."""
        self.send(say_frame(text, room))

    def login(
        self, nick: str, *, replay: int | None = None, since: int | None = None
    ) -> dict[str, Any]:
        """Log in as ``nick``; return the ``welcome`` frame or raise :class:`LoginRefused`.

        ``replay`` is how many earlier messages the server replays per room joined
        (0: none; default: the server's choice); ``since`` asks only for messages
        after that id (the last one this client has, e.g. after a reconnect).
        Frames that arrive before the answer (none, normally) stay readable.
        """
        hello: dict[str, Any] = {"type": "hello", "nick": nick}
        if replay is not None:
            hello["replay"] = replay
        if since is not None:
            hello["since"] = since
        self.send(hello)
        while True:
            frame = self.receive()
            if frame is None:
                raise ConnectionLost("the server closed the connection during login")
            if frame["type"] == "welcome":
                self.nick, self.welcome = frame["nick"], frame
                return frame
            if frame["type"] == "error":
                raise LoginRefused(frame["code"], frame["text"])
            self._pending.append(frame)

    def enter(self, room: str, timeout: float | None = 10.0) -> list[dict[str, Any]]:
        """Join ``room`` instead of the rooms the login put us in (the default room).

        ``room`` may leave out its ``#``. Returns the frames that arrived meanwhile
        (joins, replays, leaves, maybe a server ``ping`` to answer), for the caller
        to show. Raises :class:`RoomRefused`, and stays where it was, if the server
        refuses the room; ``TimeoutError`` if the server does not answer in time.
        """
        room = room_name(room)
        self.say(f"/join {room}")
        frames = self.sync(timeout)
        for frame in frames:
            if frame["type"] == "error":
                raise RoomRefused(frame["code"], frame["text"])
        welcome_rooms: list[str] = (self.welcome or {}).get("rooms", [])
        others = [r for r in welcome_rooms if r.casefold() != room.casefold()]
        for other in others:
            self.say(f"/part {other}")
        return frames + self.sync(timeout) if others else frames

    # -- receiving -----------------------------------------------------------

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next frame; ``None`` once the server closed. Raises ``TimeoutError``."""
        if self._pending:
            return self._pending.pop(0)
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            if self.closed:
                return None
            if deadline is not None:
                self.sock.settimeout(max(0.0, deadline - time.monotonic()))
            try:
                data = self.sock.recv(RECV_BYTES)
            except TimeoutError:
                raise
            except OSError:
                data = b""
            finally:
                self.sock.settimeout(None)
            if not data:
                self.closed = True
                return None
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        if not line.strip():
            return self.receive(timeout)
        frame: dict[str, Any] = json.loads(line)
        return frame

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every frame until the server closes the connection."""
        while (frame := self.receive()) is not None:
            yield frame

    def sync(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Send a ``ping`` and return every frame that arrives before the ``pong``.

        When it returns, the server has handled everything sent before it.
        """
        self.send({"type": "ping"})
        frames: list[dict[str, Any]] = []
        while True:
            frame = self.receive(timeout)
            if frame is None:
                raise ConnectionLost("the server closed the connection")
            if frame["type"] == "pong":
                return frames
            frames.append(frame)

    def fileno(self) -> int:
        """The socket's descriptor, for ``selectors``."""
        return self.sock.fileno()

    def buffered(self) -> bool:
        """True if frames are already received and waiting (no need to select)."""
        return bool(self._pending) or b"\n" in self._buf

    def close(self) -> None:
        """Close the connection."""
        self.closed = True
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
