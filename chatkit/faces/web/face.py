"""The web face's listener and connections: HTTP for the page, WebSocket for the chat.

Each connection is a :class:`websockets.server.ServerProtocol` (sans-I/O: it parses
the HTTP request and the WebSocket frames, and makes the bytes of everything sent to
this connection alone; fan-outs, and the error that precedes a failure's close frame,
are framed by :data:`WEB_CODEC`, below) and the line face's adapter
(:class:`~chatkit.faces.line.LineChannel`), whose protocol, fixed in JSON mode, parses
each text message as one JSON frame and whose ``act`` turns it into hub operations:
so a browser is a JSON client, with the same checks, limits, errors and plugins.

A request is one of:

* ``GET /ws`` with ``Upgrade: websocket`` from an allowed ``Origin``: the handshake,
  then chat; text messages of at most ``max_line`` bytes (larger: ``line_too_long``,
  then close 1009), binary messages refused (``bad_frame``), pings answered, the
  server's idle ping a WebSocket ping;
* anything else: a static file, ``304``, ``404`` or ``405``
  (:mod:`chatkit.faces.web.static`), then the connection ends.

Fan-out: a frame for many is encoded once per codec; :data:`WEB_CODEC` turns the
JSON codec's bytes (cached in the frame) into one unmasked WebSocket text frame. A
server's frames are never masked and no extension (compression) is negotiated, so a
frame's bytes are the same for every connection: the fan-out's one encoding holds.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import idna
from websockets.frames import CloseCode, Opcode
from websockets.frames import Frame as WsFrame
from websockets.http11 import Request, Response
from websockets.protocol import CONNECTING, OPEN
from websockets.server import ServerProtocol

from chatkit.codecs import JSON_CODEC, Codec
from chatkit.faces.line import LineChannel, said_in
from chatkit.faces.web import static
from chatkit.frames import Frame
from chatkit.protocol import Mode, RemoteProtocolError

if TYPE_CHECKING:
    from websockets.typing import Origin

    from chatkit.faces import Link
    from chatkit.hub import Hub
    from chatkit.session import Session

__all__ = ["WEB_CODEC", "WebChannel", "WebFace"]

log = logging.getLogger(__name__)

WEB_PORT = 8080  # the port ``chatkit serve --web-port`` examples use; any free one with 0
WS_PATH = "/ws"  # where the page opens its WebSocket
CLOSE_REASON_BYTES = 120  # a close frame's reason: at most 123 bytes (RFC 6455 5.5)
PING_PAYLOAD = b"chatkit"  # what the server's idle ping carries (any pong will do)
FRAGMENTS_PER_LINE = 16  # fragments of a message (frames but its last) that count as one
# of free_lines: a browser sends a message in one frame, and a client looping over empty
# continuation frames (no bytes toward max_line, no plugin sees them) pays for them
HEAD_LINES = 4  # a request's head may be this many max_line long (32 KiB at the defaults,
# nginx's large_client_header_buffers): a browser's, cookies and all, fits
_FLUSH = "web_flush"  # a face-private frame: send what the protocol has queued
_RAW = "web_raw"  # a face-private frame: these bytes, then what the protocol has queued
# HTTP statuses for the errors a connection may get before it has a WebSocket.
_EARLY_STATUS = {
    "login_timeout": (408, "Request Timeout"),
    "too_many_connections": (429, "Too Many Requests"),
}


def _text_payload(frame: Frame) -> bytes:
    return frame.encode(JSON_CODEC)[:-1]  # the JSON line (cached) without its "\n"


def _web_frame(frame: Frame) -> bytes:
    # The library's framing; a server frame is not masked, so this is the same for
    # every recipient, and a fan-out does it once.
    return WsFrame(Opcode.TEXT, _text_payload(frame)).serialize(mask=False)


WEB_CODEC = Codec("web", _web_frame)
"""Frames as WebSocket text messages of JSON: what fan-outs send web clients."""


class _Quiet(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The library's per-connection INFO lines ("connection open") at DEBUG: the log
    plugin already logs logins and logouts."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


class WebFace:
    """The chat page and its WebSocket (docs/web.md): ``chatkit serve --web-port``."""

    name = "web"

    def __init__(
        self,
        host: str | None = None,
        port: int | None = WEB_PORT,
        *,
        origins: Sequence[str] = (),
        allow_no_origin: bool = False,
        hosts: Sequence[str] = (),
        proxies: Sequence[str] = (),
    ) -> None:
        self.host = host
        """Address to listen on; ``None``: the server's."""
        self.port = port
        """Port to listen on (0: any free one); ``None``: the server's."""
        self.origins = tuple(origins)
        """Origins allowed to open the WebSocket besides the page's own (the ``Host``
        the request came to, over http or https); ``"*"``: any."""
        self.allow_no_origin = allow_no_origin
        """Allow WebSocket clients that send no ``Origin`` (programs; browsers always
        send one)."""
        self.hosts = tuple(hosts)
        """Names this server is reached by (the ``Host`` of a request), besides IP
        addresses, ``localhost``, the machine's own name and the hosts of
        :attr:`origins`: only a page served under one of them may open the WebSocket
        as its own origin. (A name anyone may point at this server, DNS rebinding,
        would let their page in.)"""
        self.proxies = tuple(ipaddress.ip_network(p, strict=False) for p in proxies)
        """Reverse proxies trusted to say who their client is: a WebSocket from one of
        these addresses (or networks) is its client's, the last address of its
        ``X-Forwarded-For`` that is not one of them. (Behind a proxy every page comes
        from its address: one address's login throttle, one ban for everyone.)"""
        self.files = static.load()
        """The page's files by URL path."""
        self._logger = _Quiet(logging.getLogger("chatkit.faces.web.wire"), {})

    def __repr__(self) -> str:
        return f"WebFace(host={self.host!r}, port={self.port!r}, origins={self.origins!r})"

    def early(self, frame: Frame, greeted: bool = False) -> bytes:
        """``frame`` for a connection that has not sent its request: an HTTP error."""
        fields = frame.fields
        code, text = str(fields.get("code", "")), str(fields.get("text", ""))
        return _early(frame.type, code, text, int(time.time()))

    def greeting(self) -> bytes | None:
        return None  # browsers speak first

    def open(self, hub: Hub, session: Session, link: Link) -> WebChannel:
        return WebChannel(self, hub, session, link)

    def allowed_origins(self, host: str | None) -> list[str | re.Pattern[str] | None] | None:
        """What ``Origin`` may be for a request to ``host`` (its ``Host`` header);
        ``None``: anything."""
        if "*" in self.origins:
            return None
        allowed: list[str | re.Pattern[str] | None] = list(self.origins)
        if host and self.known_host(host):
            allowed += [f"http://{host}", f"https://{host}"]
        if self.allow_no_origin:
            allowed.append(None)
        return allowed

    @functools.cached_property
    def _names(self) -> frozenset[str]:
        """The names of :meth:`known_host` besides addresses and localhost. Made at the
        first request under another name: ``getfqdn`` asks DNS, which may be slow, and a
        server reached by its address or as localhost never needs it. (Two threads
        making it at once make the same set: no lock.)"""
        own = socket.gethostname().lower()
        names = (
            *self.hosts,
            *(urllib.parse.urlsplit(o).hostname or "" for o in self.origins if o != "*"),
            own,
            f"{own}.local",
            socket.getfqdn(),
        )
        return frozenset(_host_name(name) for name in names) - {""}

    def known_host(self, host: str) -> bool:
        """Whether ``host`` (a ``Host`` header: a name or an address, and a port) is a
        name of this server's: an IP address, ``localhost`` (or a name under it), the
        machine's name, a name of :attr:`hosts` or of :attr:`origins`."""
        try:
            name = urllib.parse.urlsplit(f"//{host}").hostname
        except ValueError:
            return False
        if not name:
            return False
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            pass
        name = _host_name(name)
        return name == "localhost" or name.endswith(".localhost") or name in self._names


def _forwarded_for(
    peer: str,
    values: Sequence[str],
    proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> str | None:
    """The client a trusted proxy (``peer``, one of ``proxies``) forwarded: the last
    address of the ``X-Forwarded-For`` headers (``values``, in order) that is not
    itself a proxy's, each proxy adding the one it was reached from; ``None`` if the
    peer is not trusted or the header holds nothing usable (the peer is the client)."""
    if not proxies or not values or not _is_in(peer, proxies):
        return None
    found = None
    for item in reversed([part.strip() for value in values for part in value.split(",")]):
        try:
            address = ipaddress.ip_address(item.strip("[]"))
        except ValueError:
            return None  # (not an address: the chain cannot be trusted past it)
        found = str(address.ipv4_mapped or address) if address.version == 6 else str(address)
        if not _is_in(found, proxies):
            break
    return found


def _is_in(host: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _host_name(name: str) -> str:
    """A host name as browsers send it: lower case, without a final dot, and in its
    ASCII form as the URL standard makes it (UTS 46, non-transitional, as browsers do:
    ``bücher.example`` is ``xn--bcher-kva.example``, ``straße.example`` is
    ``xn--strae-oqa.example``, not ``strasse.example`` as Python's IDNA 2003 codec)."""
    name = name.strip().rstrip(".").lower()
    if name.isascii():
        return name
    try:
        return idna.encode(name, uts46=True, transitional=False).decode("ascii")
    except UnicodeError:  # (idna.IDNAError is one)
        return name


@functools.lru_cache(maxsize=64)
def _early(kind: str, code: str, text: str, second: int) -> bytes:
    # Cached: in a storm the same refusal goes to thousands of connections. By the
    # second too (its Date header: a cached one would say when the storm began).
    status, reason = _EARLY_STATUS.get(code, (503, "Service Unavailable"))
    return static.error_response(status, reason, text).serialize()


class WebChannel:
    """One web connection: the WebSocket protocol object and the adapter to the hub."""

    def __init__(self, face: WebFace, hub: Hub, session: Session, link: Link) -> None:
        self.face = face
        self.hub = hub
        self.session = session
        self.link = link
        limits = hub.config.limits
        self.protocol = ServerProtocol(max_size=limits.max_line, logger=face._logger)
        """The connection's sans-I/O WebSocket state (no extensions: see the module)."""
        # Synchronize access to protocol: the reader feeds it, and frames for this
        # client alone are sent from other threads too (the watchdog's ping, a
        # plugin's notice). Held only while the protocol works: never across a hook,
        # a hub call or a socket call.
        self._lock = threading.Lock()
        self.json = LineChannel(hub, session, link)
        """The line face's adapter: its protocol (JSON mode) parses a text message, its
        ``act`` acts on the event."""
        self.json.protocol.mode = Mode.JSON
        # The fragments of a text message so far, joined as they come: a list of them
        # would grow by an entry for every empty fragment, which websockets' max_size
        # (payload bytes) never counts.
        self._message: bytearray | None = None
        self._binary = False  # inside a fragmented binary message (being refused)
        self._fragments = 0  # fragments received (frames that end no message), counted
        self.upgraded = False
        """True once the WebSocket handshake succeeded."""
        self._answered = False  # an HTTP request was answered
        self._head_tail = b""  # the last bytes read before the request's end was seen
        self._head_read = 0  # bytes of the request's head read so far (before its end)
        self.max_head = HEAD_LINES * limits.max_line
        """The longest request head taken (its request line and headers): ``431`` past it."""
        self._closing: bytes | None = None
        """The protocol's closing bytes (its reply to the client's close frame, or the
        close frame of a failure) while the frames read before it are answered: the
        protocol makes them as soon as it parses the read, and they must go last."""
        link.codec = WEB_CODEC

    # -- the Channel interface -----------------------------------------------------------

    def encode(self, frame: Frame) -> bytes:
        with self._lock:
            protocol = self.protocol
            if frame.type == _FLUSH:
                pass
            elif frame.type == _RAW:
                return bytes(frame.fields["data"]) + b"".join(protocol.data_to_send())
            elif protocol.state is OPEN:
                if frame.type == "ping":
                    protocol.send_ping(PING_PAYLOAD)  # the watchdog's idle check
                else:
                    protocol.send_text(_text_payload(frame))
            elif self._closing is not None and frame.type != "ping":
                # An answer to a frame read before the close (the protocol, closing,
                # refuses to send it): framed as fan-outs are, ahead of the close.
                return _web_frame(frame)
            elif protocol.state is CONNECTING and not protocol.eof_sent and frame.type == "error":
                # Before a request (a slow one): the watchdog's login_timeout.
                code = str(frame.fields.get("code", ""))
                status, reason = _EARLY_STATUS.get(code, (503, "Service Unavailable"))
                text = str(frame.fields.get("text", ""))
                protocol.send_response(static.error_response(status, reason, text))
            # Anything else is for a closing connection, or for none yet: dropped.
            return b"".join(protocol.data_to_send())

    def farewell(self, reason: str) -> bytes:
        """The close frame the server sends last when it ends the connection (the
        server calls this from ``Connection.finish``), or nothing."""
        with self._lock:
            if self.protocol.state is not OPEN:
                return b""
            code = CloseCode.GOING_AWAY if reason == "server shutdown" else CloseCode.NORMAL_CLOSURE
            text = reason.encode()[:CLOSE_REASON_BYTES].decode("utf-8", "ignore")
            self.protocol.send_close(code, text)
            return b"".join(self.protocol.data_to_send())

    def receive(self, data: bytes) -> bool:
        if not self._answered and data:
            # Frames sent in the same read as the request are parsed only after it is
            # answered: parsed before, the protocol (still CONNECTING) neither answers
            # a close nor lets the 101 go out after one. The request's head ends at
            # its first blank line (websockets' parser reads no body).
            seen = self._head_tail + data
            end = seen.find(b"\r\n\r\n")
            head = self._head_read + (len(data) if end < 0 else end + 4 - len(self._head_tail))
            if head > self.max_head:
                return self._head_too_large()
            if end < 0:
                self._head_read = head
                self._head_tail = seen[-3:]
            else:
                cut = end + 4 - len(self._head_tail)
                if cut < len(data):
                    if not self._receive(data[:cut]):
                        return False
                    data = data[cut:]
        if data and self._answered and not self.upgraded:
            # Bytes after a request answered without an upgrade (a pipelined second
            # request, frames the client did not wait to send): its response said
            # Connection: close, and was queued before this.
            self.session.disconnect("bad HTTP request")
            return False
        return self._receive(data)

    def _receive(self, data: bytes) -> bool:
        protocol = self.protocol
        with self._lock:
            was_open = protocol.state is OPEN
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            events = protocol.events_received()
            failed = protocol.parser_exc
            if was_open and protocol.state is not OPEN:
                # The read ends with the client's close frame, or a frame that fails
                # the connection: held back until the frames before it are answered.
                self._closing = b"".join(protocol.data_to_send())
            replies = bool(protocol.writes)  # a pong, a close reply, an HTTP error
        try:
            for event in events:
                if isinstance(event, Request):
                    if self._answered:
                        # A pipelined request after the first: that one's response said
                        # Connection: close, and the server closes once it is sent.
                        continue
                    self._request(event)
                    replies = True
                elif isinstance(event, WsFrame) and self.upgraded:
                    # (Frames sent with a request that got no 101, a refused Origin or
                    # a page's GET, are not the chat's: RFC 6455 4.1 has a client wait.)
                    self._frame(event)
                if self.link.finishing:
                    return False
        finally:
            if self._closing is not None and failed is None:
                self._close_last()
        if not data:
            return False  # the client closed the connection
        if failed is not None:  # (frames are parsed only after an upgrade: receive)
            self._failed(failed)
            return False
        if replies:
            self._flush()
        if self.upgraded:
            # Once the client's close is answered, the server closes the connection.
            return not protocol.close_expected()
        if protocol.handshake_exc is not None and not self._answered:
            # Not HTTP (or a request line or header too long, which the protocol
            # answered itself): nothing more will come of it. A request with a body
            # (which websockets' parser refuses) is a method this port never allows.
            if _has_body(protocol.handshake_exc):
                response = static.error_response(
                    405, "Method Not Allowed", "a request with a body is not allowed here"
                )
                response.headers["Allow"] = "GET, HEAD"
                self.session.send(Frame(_RAW, data=response.serialize()))
            self.session.disconnect("bad HTTP request")
            return False
        if self._answered:
            # A page's file (or an HTTP error): its response says Connection: close,
            # so the server closes once the writer has sent it whole. (Waiting for the
            # browser to close held the connection, counted against max_clients, up to
            # login_timeout.)
            self.session.disconnect("page sent")
            return False
        return True  # (the request is not whole yet)

    # -- acting on events ----------------------------------------------------------------

    def _head_too_large(self) -> bool:
        """A request whose head is over :attr:`max_head`: ``431``, and the connection
        closes (websockets' own bounds, 128 headers of 8 KiB, would hold 1 MiB of it
        for up to ``login_timeout``)."""
        text = f"the request's head is over {self.max_head} bytes (max_line x {HEAD_LINES})"
        response = static.error_response(431, "Request Header Fields Too Large", text)
        self.session.send(Frame(_RAW, data=response.serialize()))
        self.session.disconnect("request head too large")
        return False

    def _flush(self) -> None:
        """Queue what the protocol has to send (a response, a pong, a close reply)."""
        self.session.send(Frame(_FLUSH))

    def _close_last(self, first: bytes = b"") -> None:
        """Send ``first``, then the closing bytes held back (:attr:`_closing`), after
        the client's messages read before them are delivered: its own copies come
        before the close (RFC 6455 5.5.1: nothing after a close frame)."""
        if self.session.unsettled:
            self.hub.settle(self.session)
        with self._lock:  # (encode() reads it on other threads)
            closing, self._closing = self._closing or b"", None
        self.session.send(Frame(_RAW, data=first + closing))

    def _request(self, request: Request) -> None:
        """Answer an HTTP request: the WebSocket handshake, or a static file."""
        headers = request.headers
        upgrade = any("websocket" in v.lower() for v in headers.get_all("Upgrade"))
        host = headers.get_all("Host")
        with self._lock:
            protocol = self.protocol
            if upgrade and request.path.split("?")[0] == WS_PATH:
                allowed = self.face.allowed_origins(host[0] if len(host) == 1 else None)
                protocol.origins = cast("list[Origin | re.Pattern[str] | None] | None", allowed)
                response: Response = protocol.accept(request)
                if response.status_code == 403 and host and not self.face.known_host(host[0]):
                    text = (
                        f"Failed to open a WebSocket connection: {host[0]!r} is not a name "
                        "of this server's (DNS rebinding?); if it is, list it in [faces.web] "
                        "hosts.\n"
                    )
                    response = static.error_response(403, "Forbidden", text)
                response.headers["Server"] = "chatkit"
            else:
                etags = headers.get_all("If-None-Match")
                response = static.respond(
                    self.face.files, request.method, request.path, etags[0] if etags else None
                )
            # (Frames that came with the request are parsed only after this: see
            # receive.)
            protocol.send_response(response)
            self.upgraded = response.status_code == 101
            self._answered = True
        if self.upgraded:
            peer = self.link.address
            client = _forwarded_for(peer[0], headers.get_all("X-Forwarded-For"), self.face.proxies)
            if client is not None:
                # Its client's address from now on: the login throttle, bans, WHOIS.
                # (The per-address connection limits counted the proxy at accept.)
                self.link.address = (client, peer[1])
        if not self.upgraded and protocol.handshake_exc is not None:
            address = self.link.address
            log.info("refused a WebSocket from %s:%s: %s", *address, protocol.handshake_exc)

    def _frame(self, frame: WsFrame) -> None:
        """One WebSocket frame from the client (pings and closes are answered by the
        protocol; their answers are flushed by :meth:`receive`)."""
        opcode = frame.opcode
        if not frame.fin and opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            self._fragments += 1
            if self._fragments % FRAGMENTS_PER_LINE == 0:
                self.hub.free_line(self.session)  # (paced past free_lines: TCP holds the rest)
                if self.link.finishing:
                    return
        if opcode is Opcode.TEXT:
            if frame.fin:
                self._text(bytes(frame.data))
            else:
                self._message = bytearray(frame.data)
        elif opcode is Opcode.CONT:
            if self._binary:
                self._binary = not frame.fin
            elif self._message is not None:
                self._message += frame.data
                if frame.fin:
                    message, self._message = bytes(self._message), None
                    self._text(message)
        elif opcode is Opcode.BINARY:
            self._binary = not frame.fin
            self.session.error(
                "bad_frame",
                "binary messages are not accepted: send each JSON frame as a text message",
            )
            self.hub.free_line(self.session)  # (no plugin sees it: no flood control)
        elif opcode in (Opcode.PING, Opcode.PONG):
            # Answered by the protocol, seen by no plugin: counted as a line's ping is.
            self.hub.free_line(self.session)

    def _text(self, payload: bytes) -> None:
        """One text message: one JSON frame (docs/protocol.md)."""
        session, link = self.session, self.link
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            # RFC 6455 8.1: a text message that is not UTF-8 fails the connection.
            session.error(
                "bad_encoding",
                f"message is not valid UTF-8 (bad byte at offset {exc.start}); closing",
            )
            with self._lock:
                self.protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
            self._flush()
            session.disconnect("bad encoding")
            return
        if session.unsettled:
            # A refusal of an earlier message comes at its settle(): answers come in
            # the order of the messages.
            self.hub.settle(session)
        if not payload.strip():
            # (A blank line is nothing to the line protocol: it would go unanswered.)
            session.error("bad_frame", "an empty message is not a JSON frame")
            self.hub.free_line(session)  # (no plugin sees it: no flood control)
            return
        # JSON's whitespace may hold line breaks; the line protocol must see one line.
        protocol = self.json.protocol
        protocol.receive_data(payload.replace(b"\r", b" ").replace(b"\n", b" ") + b"\n")
        while True:
            try:
                event = protocol.next_event()
            except RemoteProtocolError as exc:
                session.error(exc.code, exc.text)
                self.hub.free_line(session)  # (no plugin sees it: no flood control)
                if link.finishing:
                    return
                continue
            if event is None:
                return
            link.pace(said_in(event))
            if link.finishing:
                return
            self.json.act(event)
            if link.finishing:
                return

    def _failed(self, exc: Exception) -> None:
        """The protocol failed the connection (an oversized message, a protocol error):
        tell the client why, in chatkit's words, before the close frame."""
        if "PayloadTooBig" in type(exc).__name__:
            limit = self.hub.config.limits.max_line
            error = Frame(
                "error",
                code="line_too_long",
                text=f"a message may have at most {limit} bytes; closing",
            )
        else:
            error = Frame("error", code="bad_frame", text=f"WebSocket protocol error: {exc}")
        # The protocol is closing and would refuse a text frame: framed as fan-outs are,
        # before the close frame the protocol has queued (held back since the read).
        self._close_last(error.encode(WEB_CODEC))
        self.session.disconnect("protocol error")


def _has_body(exc: Exception) -> bool:
    """Whether websockets refused a request for its body (``Content-Length`` other than
    0, or ``Transfer-Encoding``: its parser reads no body)."""
    cause = exc.__cause__
    return isinstance(cause, NotImplementedError) or "request body" in str(cause)
