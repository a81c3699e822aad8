"""Test machinery for the web face: a server with it, and a WebSocket JSON client.

``web_server(...)`` runs a real ``chatkit.Server`` with the line face and the web
face on free ports; ``WebClient`` is the ``websockets`` library's own client (sync,
real socket) with chatkit's ``expect`` and ``sync`` on top, deadlines included.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin
from websockets.uri import parse_uri

from chatkit import Server
from chatkit.config import Config
from chatkit.faces.line import LineFace
from chatkit.faces.web import WebFace
from chatkit.testing import make_config

TIMEOUT = 5.0  # seconds a test waits for an expected frame


@contextmanager
def web_server(
    *,
    origins: tuple[str, ...] = (),
    allow_no_origin: bool = False,
    hosts: tuple[str, ...] = (),
    proxies: tuple[str, ...] = (),
    config: Config | None = None,
    disable: tuple[str, ...] = (),
    **limits: Any,
) -> Iterator[Server]:
    """A real server with the line face and the web face, both on free ports."""
    face = WebFace(
        port=0, origins=origins, allow_no_origin=allow_no_origin, hosts=hosts, proxies=proxies
    )
    server = Server(config=make_config(config, disable, **limits), faces=[LineFace(), face])
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


def base_url(server: Server) -> str:
    host, port = server.addresses["web"]
    return f"http://{host}:{port}"


class WebClient:
    """A WebSocket client speaking chatkit's JSON protocol, for tests."""

    def __init__(self, server: Server, *, origin: str | None = "own", **kwargs: Any) -> None:
        url = base_url(server)
        if origin == "own":
            origin = url
        # Entered at once (a context manager, closed by close()).
        self.ws: ClientConnection = connect(
            url.replace("http", "ws", 1) + "/ws",
            origin=origin,  # type: ignore[arg-type]
            open_timeout=TIMEOUT,
            **kwargs,
        ).__enter__()
        self.pending: list[dict[str, Any]] = []
        """Frames received and not yet consumed by :meth:`expect`."""
        self.closed = False

    def send(self, frame: dict[str, Any] | None = None, **fields: Any) -> None:
        self.ws.send(json.dumps(frame or fields))

    def say(self, text: str, room: str | None = None) -> None:
        self.send({"type": "say", "text": text, **({"room": room} if room else {})})

    def _read(self, deadline: float) -> bool:
        if self.closed:
            return False
        try:
            message = self.ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        except ConnectionClosed:
            self.closed = True
            return False
        assert isinstance(message, str), message  # the server sends text only
        frame = json.loads(message)
        assert isinstance(frame, dict)
        self.pending.append(frame)
        return True

    def expect(
        self, kind: str | None = None, timeout: float = TIMEOUT, **fields: Any
    ) -> dict[str, Any]:
        """The first frame of type ``kind`` with ``fields``, dropping those before it."""
        deadline = time.monotonic() + timeout
        at = 0
        while True:
            for i in range(at, len(self.pending)):
                frame = self.pending[i]
                if (kind is None or frame.get("type") == kind) and all(
                    frame.get(k) == v for k, v in fields.items()
                ):
                    del self.pending[: i + 1]
                    return frame
            at = len(self.pending)
            if not self._read(deadline):
                what = "closed the connection" if self.closed else "sent nothing matching"
                raise AssertionError(
                    f"expected {kind} {fields}; the server {what}: {self.pending[-3:]}"
                )

    def login(self, nick: str, **fields: Any) -> dict[str, Any]:
        self.send(type="hello", nick=nick, **fields)
        welcome = self.expect("welcome")
        self.expect("join", nick=welcome["nick"])
        return welcome

    def sync(self) -> list[dict[str, Any]]:
        """Ping, and return every frame before the pong."""
        self.send(type="ping")
        deadline = time.monotonic() + TIMEOUT
        while not any(f.get("type") == "pong" for f in self.pending):
            if not self._read(deadline):
                raise AssertionError(f"no pong; frames so far: {self.pending}")
        at = next(i for i, f in enumerate(self.pending) if f.get("type") == "pong")
        before, self.pending = self.pending[:at], self.pending[at + 1 :]
        return before

    def wait_closed(self, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self._read(deadline):
            pass
        if not self.closed:
            raise AssertionError("the server did not close the connection in time")

    def close(self) -> None:
        self.ws.close()


@contextmanager
def web_clients(server: Server) -> Iterator[list[WebClient]]:
    """A list to put clients in; all are closed at the end."""
    clients: list[WebClient] = []
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


def frames_until_close(server: Server, *messages: list[bytes]) -> list[Frame]:
    """Log in as ``raw`` over a plain socket and websockets' sans-I/O client, send each
    of ``messages`` as one fragmented text message, then read every frame until the
    server closes the TCP connection. Deterministic where the sync client is not: it
    may drop a message that arrives with the close frame (its receive queue ends).
    """

    def send(protocol: ClientProtocol) -> bytes:
        for fragments in messages:
            for i, fragment in enumerate(fragments):
                last = i == len(fragments) - 1
                if i == 0:
                    protocol.send_text(fragment, fin=last)
                else:
                    protocol.send_continuation(fragment, fin=last)
        return b""

    return frames_after_login(server, send, together=False)


def frames_after_login(
    server: Server, send: Callable[[ClientProtocol], bytes], *, together: bool = True
) -> list[Frame]:
    """Log in as ``raw`` (as :func:`frames_until_close`), then let ``send`` queue frames
    on the client's protocol and return raw bytes to follow them (a frame the
    library would not make); send all of it in one write (``together``; else each
    piece the protocol made in its own), then read every frame until the server
    closes the TCP connection. The frames read after the login are returned."""
    url = base_url(server)
    protocol = ClientProtocol(parse_uri(url.replace("http", "ws", 1) + "/ws"), origin=Origin(url))
    protocol.send_request(protocol.connect())
    frames: list[Frame] = []
    with socket.create_connection(server.addresses["web"], timeout=TIMEOUT) as sock:

        def flush() -> None:
            for data in protocol.data_to_send():
                if data:
                    sock.sendall(data)

        def read_until(done: Callable[[], bool]) -> None:
            deadline = time.monotonic() + TIMEOUT
            while not done() and time.monotonic() < deadline:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    # The server closed with our close reply unread (it stops reading
                    # once it has closed): everything it sent before is in frames.
                    data = b""
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                frames.extend(e for e in protocol.events_received() if isinstance(e, Frame))
                flush()  # a close reply
                if not data:
                    return

        flush()
        read_until(lambda: protocol.state is State.OPEN)
        protocol.send_text(json.dumps({"type": "hello", "nick": "raw"}).encode())
        flush()
        read_until(lambda: any(b'"join"' in bytes(f.data) for f in frames))
        del frames[:]
        extra = send(protocol)
        if together:
            sock.sendall(b"".join(protocol.data_to_send()) + extra)
        else:
            flush()
            sock.sendall(extra)
        read_until(lambda: False)
    return frames
