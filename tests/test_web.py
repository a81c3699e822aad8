"""The web face through real sockets: the page's files over HTTP, and the JSON protocol
over WebSocket (every frame type, bad frames, limits, Origin), with web users chatting
with line-protocol (JSON and nc) users in the same rooms.

Every test runs a real ``chatkit.Server`` with the line face and the web face on port
0; ``WebClient`` (tests/webclient.py) is the ``websockets`` library's own client.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_server import pausing
from webclient import TIMEOUT, WebClient, frames_after_login, frames_until_close, web_server
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Close, CloseCode, Opcode
from websockets.frames import Frame as WsFrame

from chatkit import Drop, Frame, Message, Server, Session, UsageError, hookimpl, load_config
from chatkit.faces.line import LineFace
from chatkit.faces.web import WEB_CODEC, WebFace
from chatkit.faces.web.face import FRAGMENTS_PER_LINE
from chatkit.testing import ChatClient, TextClient, make_config, wait_until


@pytest.fixture
def server() -> Iterator[Server]:
    """A server with the line and web faces and the default plugins."""
    with web_server() as server:
        yield server


@pytest.fixture
def web(server: Server) -> Iterator[Callable[..., WebClient]]:
    """Connect WebSocket clients to ``server``: ``web(nick)`` logs in, ``web()`` does not."""
    clients: list[WebClient] = []

    def connect(nick: str | None = None, **kwargs: Any) -> WebClient:
        client = WebClient(server, **kwargs)
        clients.append(client)
        if nick is not None:
            client.login(nick)
        return client

    yield connect
    for client in clients:
        client.close()


def request(
    server: Server, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    """One plain HTTP request to the web face: its response and body."""
    host, port = server.addresses["web"]
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def exchange(server: Server, data: bytes) -> bytes:
    """Send ``data`` on one raw connection to the web face; all it answers, to the end."""
    sock = socket.create_connection(server.addresses["web"], timeout=TIMEOUT)
    sock.sendall(data)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    return answer


# -- the page over HTTP ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html; charset=utf-8"),
        ("/index.html", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/icon.svg", "image/svg+xml"),
    ],
)
def test_page_files_are_served_with_their_content_type(
    server: Server, path: str, content_type: str
) -> None:
    """Each of the page's files is served with its content type, an ETag and no-cache."""
    response, body = request(server, path)
    assert response.status == 200
    assert response.getheader("Content-Type") == content_type
    assert response.getheader("Cache-Control") == "no-cache"
    assert response.getheader("ETag", "").startswith('"')
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert int(response.getheader("Content-Length", "-1")) == len(body) > 0


def test_page_has_a_content_security_policy(server: Server) -> None:
    """The page may load scripts and styles from its own origin only (no CDN, no inline)."""
    response, _ = request(server, "/")
    policy = response.getheader("Content-Security-Policy", "")
    assert "script-src 'self'" in policy and "default-src 'self'" in policy
    assert "connect-src 'self';" in policy  # its own server's WebSocket, no other


def test_the_server_closes_a_page_connection_once_the_file_is_sent(server: Server) -> None:
    """The response says Connection: close, and the server closes after it, whole (it
    waited for the browser to close, holding a connection up to login_timeout)."""
    host, port = server.addresses["web"]
    answer = exchange(server, f"GET /app.js HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nConnection: close" in head
    length = re.search(rb"\r\nContent-Length: (\d+)", head)
    assert length is not None and int(length.group(1)) == len(body) > 0


def test_unchanged_file_is_not_sent_again(server: Server) -> None:
    """A request with the file's ETag in If-None-Match gets 304 and no body."""
    etag = request(server, "/app.js")[0].getheader("ETag", "")
    response, body = request(server, "/app.js", headers={"If-None-Match": etag})
    assert response.status == 304 and body == b""


@pytest.mark.parametrize("path", ["/nothing", "/../pyproject.toml", "/static/app.js", "/ws"])
def test_other_paths_are_404(server: Server, path: str) -> None:
    """A path that is not one of the page's files is 404 (a plain GET of /ws too)."""
    response, _ = request(server, path)
    assert response.status == 404
    assert response.getheader("Content-Type") == "text/plain; charset=utf-8"


def test_head_has_headers_only(server: Server) -> None:
    """HEAD gets the headers of GET and no body."""
    response, body = request(server, "/", "HEAD")
    assert response.status == 200 and body == b""
    assert int(response.getheader("Content-Length", "0")) > 0


def test_other_methods_are_405(server: Server) -> None:
    """DELETE (any method but GET and HEAD) is 405 with an Allow header."""
    response, _ = request(server, "/", "DELETE")
    assert response.status == 405
    assert response.getheader("Allow") == "GET, HEAD"


def test_pipelined_requests_get_the_first_answered(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Two requests in one write: the first is answered (Connection: close), the
    second ignored, the connection closed; nothing fails on the server."""
    data = exchange(
        server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /app.js HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 200 ") and data.count(b"HTTP/1.1 ") == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_bad_frame_right_behind_the_upgrade_fails_the_websocket(server: Server) -> None:
    """An upgrade request and a frame with a reserved opcode in one packet: the 101,
    then the error that says why and a close frame (1002), as if the frame had come in
    a packet of its own."""
    data = exchange(server, _upgrade(server) + b"\x83\x80abcd")
    head, frames = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b'"code":"bad_frame"' in frames and b"WebSocket protocol error" in frames
    assert frames.endswith(b"\x88\x10\x03\xeainvalid opcode")  # the close: 1002


def test_a_whole_session_in_one_packet(server: Server) -> None:
    """The upgrade, a hello, a message and the close in one write: the 101, the
    welcome, the message's copy, then the close reply, and the connection ends."""
    hello = _masked(WsFrame(Opcode.TEXT, b'{"type":"hello","nick":"hasty"}'))
    say = _masked(WsFrame(Opcode.TEXT, b'{"type":"say","text":"in one go"}'))
    close = _masked(WsFrame(Opcode.CLOSE, b"\x03\xe8"))
    data = exchange(server, _upgrade(server) + hello + say + close)
    head, frames = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101 ")
    welcome, copy = frames.index(b'"type":"welcome"'), frames.index(b'"text":"in one go"')
    assert welcome < copy
    assert frames.endswith(b"\x88\x02\x03\xe8")  # the close reply, last


def test_a_request_head_over_four_max_lines_is_431(server: Server) -> None:
    """A request's head (its line and headers) may be 4 x max_line long, 32 KiB at the
    defaults, what a browser sends with its cookies; a longer one is 431 and closed,
    as it arrives (websockets alone would hold up to 1 MiB of headers per connection)."""
    cookie = b"Cookie: " + b"c" * 990 + b"\r\n"
    fits = b"GET / HTTP/1.1\r\nHost: localhost\r\n" + cookie * 30 + b"\r\n"
    assert exchange(server, fits).startswith(b"HTTP/1.1 200 ")
    over = b"GET /ws HTTP/1.1\r\nHost: localhost\r\n" + cookie * 33  # and no end yet
    answer = exchange(server, over)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert answer.endswith(b"the request's head is over 32768 bytes (max_line x 4)\n")


def test_a_request_with_a_body_is_405(server: Server) -> None:
    """POST with a body (which the HTTP parser does not read) is 405, as other methods."""
    data = exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert data.startswith(b"HTTP/1.1 405 ") and b"Allow: GET, HEAD" in data


def test_not_http_is_closed(server: Server) -> None:
    """Bytes that are not an HTTP request get the connection closed."""
    sock = socket.create_connection(server.addresses["web"], timeout=TIMEOUT)
    sock.sendall(b"hello there\r\n\r\n")
    assert sock.recv(1024) == b""
    sock.close()


# -- the WebSocket: every frame type --------------------------------------------------------


def test_login_and_chat(web: Callable[..., WebClient]) -> None:
    """A web client logs in with hello, says something and gets its message back."""
    alice = web()
    alice.send(type="hello", nick="alice")
    welcome = alice.expect("welcome")
    assert welcome["nick"] == "alice" and welcome["rooms"] == ["#general"]
    alice.expect("join", nick="alice", room="#general")
    alice.say("hi")
    assert alice.expect("message")["text"] == "hi"


def test_ping_pong_and_commands(web: Callable[..., WebClient]) -> None:
    """ping gets pong, pong is accepted silently, a /command gets its reply."""
    alice = web("alice")
    alice.send(type="pong")
    alice.send(type="ping")
    alice.expect("pong")
    alice.say("/rooms")
    reply = alice.expect("reply", command="rooms")
    assert reply["data"]["rooms"] == {"#general": 1}


def test_private_messages_and_actions(web: Callable[..., WebClient]) -> None:
    """/msg reaches the other web client as a private frame, /me as an action."""
    alice, bob = web("alice"), web("bob")
    alice.say("/msg bob psst")
    private = bob.expect("private")
    assert (private["from"], private["to"], private["text"]) == ("alice", "bob", "psst")
    bob.say("/me waves")
    message = alice.expect("message", nick="bob")
    assert message["action"] is True and message["text"] == "waves"


def test_join_leave_nick_notices(web: Callable[..., WebClient]) -> None:
    """Others' joins, nick changes and leaves arrive as frames."""
    alice = web("alice")
    bob = web("bob")
    alice.expect("join", nick="bob")
    bob.say("/nick robert")
    assert alice.expect("nick")["new"] == "robert"
    bob.close()
    assert alice.expect("leave", nick="robert")["room"] == "#general"


def test_history_replay_and_request(web: Callable[..., WebClient]) -> None:
    """A joiner is replayed the room's messages; the history request pages back."""
    alice = web("alice")
    for i in range(5):
        alice.say(f"m{i}")
    ids = [alice.expect("message", text=f"m{i}")["id"] for i in range(5)]
    bob = web()
    bob.send(type="hello", nick="bob", replay=2)
    replayed = [bob.expect("message", history=True)["text"] for _ in range(2)]
    assert replayed == ["m3", "m4"]
    assert bob.expect("history")["more"] is True
    bob.send(type="history", room="#general", before=ids[3], limit=2)
    page = [bob.expect("message", history=True)["text"] for _ in range(2)]
    assert page == ["m1", "m2"]
    assert bob.expect("history", count=2)["more"] is True


def test_resume_with_since(web: Callable[..., WebClient]) -> None:
    """A client coming back with since gets only the messages it missed."""
    alice = web("alice")
    alice.say("one")
    seen = alice.expect("message", text="one")["id"]
    alice.say("two")
    alice.expect("message", text="two")
    bob = web()
    bob.send(type="hello", nick="bob", since=seen)
    assert bob.expect("message", history=True)["text"] == "two"
    assert bob.expect("history")["count"] == 1


def test_fragmented_message_is_one_frame(web: Callable[..., WebClient]) -> None:
    """A text message sent in fragments is one JSON frame."""
    alice = web("alice")
    text = json.dumps({"type": "say", "text": "in pieces"})
    alice.ws.send([text[:5], text[5:12], text[12:]])
    assert alice.expect("message")["text"] == "in pieces"


def test_empty_fragments_hold_no_memory(server: Server, web: Callable[..., WebClient]) -> None:
    """Empty fragments count for nothing against max_line (a message's size is its
    bytes), so they must cost nothing to hold either: a client sending endless empty
    continuation frames kept an entry for each, without bound, until the message ended."""
    alice = web("alice")
    text = json.dumps({"type": "say", "text": "after many empty pieces"})
    session = server.hub.find("alice")
    assert session is not None
    channel = session.transport.channel  # type: ignore[attr-defined]
    held: list[int] = []

    def fragments() -> Iterator[str]:
        yield text[:5]
        yield from [""] * 1000  # (62 of free_lines: no pause)
        # A ping between fragments (RFC 6455 5.4): answered once the server has read
        # every fragment before it.
        assert alice.ws.ping().wait(5)
        held.append(len(channel._message))
        yield text[5:]

    alice.ws.send(fragments())
    assert alice.expect("message")["text"] == "after many empty pieces"
    assert held == [5]  # the first fragment's bytes, nothing for the 1,000 empty ones


# -- bad frames ---------------------------------------------------------------------------


def test_not_json_is_bad_frame(web: Callable[..., WebClient]) -> None:
    """A text message that is not a JSON object gets bad_frame; the connection stays."""
    alice = web("alice")
    alice.ws.send("hello there")
    assert alice.expect("error")["code"] == "bad_frame"
    alice.ws.send('{"type": "say", "text": 1}')
    assert alice.expect("error")["code"] == "bad_frame"
    alice.say("still here")
    alice.expect("message", text="still here")


def test_empty_and_blank_messages_are_bad_frame(web: Callable[..., WebClient]) -> None:
    """An empty text message, or a say of blanks, gets bad_frame; nothing is sent."""
    alice = web("alice")
    alice.ws.send("")
    assert alice.expect("error")["code"] == "bad_frame"
    alice.say("  \n ")
    assert alice.expect("error")["code"] == "bad_frame"
    alice.say("now")
    assert alice.expect("message")["text"] == "now"


def test_json_with_line_breaks_is_one_frame(web: Callable[..., WebClient]) -> None:
    """Pretty-printed JSON (line breaks between tokens) is one frame."""
    alice = web("alice")
    alice.ws.send(json.dumps({"type": "say", "text": "pretty"}, indent=2))
    alice.expect("message", text="pretty")


def test_binary_is_refused(web: Callable[..., WebClient]) -> None:
    """A binary message gets bad_frame naming the fix; the connection stays usable."""
    alice = web("alice")
    alice.ws.send(b'{"type": "say", "text": "bin"}')
    error = alice.expect("error", code="bad_frame")
    assert "binary" in error["text"] and "text message" in error["text"]
    alice.say("text works")
    alice.expect("message", text="text works")


@pytest.mark.parametrize("kind", ["binary", "ping", "fragments"])
def test_binary_messages_and_pings_past_free_lines_pause_the_client(kind: str) -> None:
    """Binary messages, WebSocket pings and a message's fragments (every 16th: empty
    ones add nothing to max_line), which no plugin sees, count against free_lines as a
    line's pings do: past them the client is paused (a loop of empty continuation
    frames took a core)."""
    with web_server(free_lines=3, free_line_rate=1.0) as server:
        alice = WebClient(server)
        alice.login("alice")
        if kind == "fragments":
            alice.ws.send(iter(['{"type":', *[""] * (5 * FRAGMENTS_PER_LINE), '"ping"}']))
        for _ in range(5 if kind != "fragments" else 0):
            if kind == "binary":
                alice.ws.send(b"{}")
            else:
                alice.ws.ping()
        wait_until(pausing, 10, "alice's reader paused")
        alice.close()


def test_invalid_utf8_closes_with_1007() -> None:
    """A text message that is not UTF-8 gets bad_encoding, then close code 1007."""
    with web_server() as server:
        *_, error, close = frames_until_close(server, [b'{"type":"say","text":"\xff"}'])
    assert json.loads(bytes(error.data))["code"] == "bad_encoding"
    assert Close.parse(close.data).code == CloseCode.INVALID_DATA


def test_lone_surrogate_is_bad_encoding(web: Callable[..., WebClient]) -> None:
    """JSON escaping a lone surrogate gets bad_encoding, as on the line face."""
    alice = web("alice")
    alice.ws.send('{"type":"say","text":"\\ud800"}')
    alice.expect("error", code="bad_encoding")


def test_oversized_message_closes_with_1009() -> None:
    """A message over max_line gets line_too_long, then close code 1009."""
    say = json.dumps({"type": "say", "text": "x" * 150}).encode()
    with web_server(max_line=200) as server:
        frames = frames_until_close(server, [say], [say.replace(b"x" * 150, b"x" * 300)])
    *_, echoed, error, close = frames
    assert json.loads(bytes(echoed.data))["text"] == "x" * 150
    assert json.loads(bytes(error.data))["code"] == "line_too_long"
    assert Close.parse(close.data).code == CloseCode.MESSAGE_TOO_BIG


def test_oversized_fragments_close_too() -> None:
    """Fragments adding up to more than max_line close the connection as one message would."""
    with web_server(max_line=200) as server:
        frames = frames_until_close(server, [b"x" * 150, b"y" * 150])
    *_, error, close = frames
    assert json.loads(bytes(error.data))["code"] == "line_too_long"  # why, before the close frame
    assert close.opcode is Opcode.CLOSE
    assert Close.parse(close.data).code == CloseCode.MESSAGE_TOO_BIG


def test_client_close_logs_out(web: Callable[..., WebClient]) -> None:
    """A client's close frame is answered and its session leaves its rooms."""
    alice, bob = web("alice"), web("bob")
    bob.close()
    assert bob.ws.close_code == CloseCode.NORMAL_CLOSURE
    alice.expect("leave", nick="bob")


def test_quit_sends_a_close_frame(web: Callable[..., WebClient]) -> None:
    """/quit ends with the reply, then a normal close frame naming the reason."""
    alice = web("alice")
    alice.say("/quit bye")
    alice.expect("reply", command="quit")
    alice.wait_closed()
    assert alice.ws.close_code == CloseCode.NORMAL_CLOSURE
    assert "quit" in (alice.ws.close_reason or "")


def test_shutdown_is_going_away() -> None:
    """Server shutdown sends a notice, then close code 1001."""
    with web_server() as server:
        alice = WebClient(server)
        alice.login("alice")
        server.shutdown()
        alice.expect("notice")
        alice.wait_closed()
        assert alice.ws.close_code == CloseCode.GOING_AWAY


# -- Origin ----------------------------------------------------------------------------------


def test_foreign_origin_is_refused(server: Server) -> None:
    """A WebSocket from another origin is refused with 403 before any chat."""
    with pytest.raises(InvalidStatus) as info:
        WebClient(server, origin="http://evil.example")
    assert info.value.response.status_code == 403


def _masked(frame: WsFrame) -> bytes:
    return frame.serialize(mask=True)


def _upgrade(server: Server, origin: str | None = "own") -> bytes:
    """The bytes of an upgrade request to ``server``'s web face (``origin``: its own)."""
    host, port = server.addresses["web"]
    own = f"http://{host}:{port}"
    header = "" if origin is None else f"Origin: {own if origin == 'own' else origin}\r\n"
    return (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{header}\r\n"
    ).encode()


def _answer(sock: socket.socket, until: Callable[[bytes], bool]) -> bytes:
    """What ``sock`` reads until ``until(answer)`` holds, the connection ends or the
    deadline passes."""
    answer = b""
    deadline = time.monotonic() + TIMEOUT
    while not until(answer) and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


@pytest.mark.parametrize("request_", ["foreign origin", "no origin", "page"])
def test_frames_sent_with_a_request_that_is_not_upgraded_are_not_chat(
    server: Server, request_: str
) -> None:
    """A hello and a message sent in one packet with a request that gets no 101 (an
    upgrade refused for its Origin, or a page's GET) are not acted on: nobody logs in
    and nothing is said."""
    watcher = ChatClient(server.address)
    watcher.login("watcher")
    head = {
        "foreign origin": _upgrade(server, "http://evil.example"),
        "no origin": _upgrade(server, None),
        "page": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    }[request_]
    hello = _masked(WsFrame(Opcode.TEXT, b'{"type":"hello","nick":"evil"}'))
    say = _masked(WsFrame(Opcode.TEXT, b'{"type":"say","text":"let me in"}'))
    with socket.create_connection(server.addresses["web"], timeout=TIMEOUT) as sock:
        sock.sendall(head + hello + say)
        answer = _answer(sock, lambda got: b"\r\n\r\n" in got)
        status = answer.split(b"\r\n", 1)[0]
        assert status.split()[1] == (b"200" if request_ == "page" else b"403")
    assert server.hub.find("evil") is None
    assert not [f for f in watcher.sync() if f.get("nick") == "evil"]
    watcher.close()


def test_a_ping_sent_with_the_upgrade_is_answered_after_the_101(server: Server) -> None:
    """A client that pings without waiting for the 101 gets the 101 first, then its
    pong: the pong before it would break the handshake."""
    ping = _masked(WsFrame(Opcode.PING, b"early"))
    with socket.create_connection(server.addresses["web"], timeout=TIMEOUT) as sock:
        sock.sendall(_upgrade(server) + ping)
        answer = _answer(sock, lambda got: b"early" in got)
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert answer.endswith(b"\x8a\x05early")  # the pong, right after the response


def test_answers_before_a_bad_frame_come_before_its_error_and_the_close() -> None:
    """A ping and a command, then a frame that fails the connection, in one packet:
    the pong and the command's reply come first, then the error saying why, then
    the close frame (the close does not overtake what was read before it)."""

    def send(protocol: ClientProtocol) -> bytes:
        protocol.send_text(b'{"type":"ping"}')
        protocol.send_text(b'{"type":"say","text":"/who"}')
        return WsFrame(Opcode.TEXT, b'{"type":"ping"}').serialize(mask=False)  # unmasked

    with web_server() as server:
        frames = frames_after_login(server, send)
    *answers, error, close = frames
    kinds = [json.loads(bytes(f.data))["type"] for f in answers if f.opcode is Opcode.TEXT]
    assert kinds[:1] == ["pong"] and "reply" in kinds
    assert json.loads(bytes(error.data))["code"] == "bad_frame"
    assert Close.parse(close.data).code == CloseCode.PROTOCOL_ERROR


def test_a_message_sent_with_a_close_is_echoed_before_the_close_reply() -> None:
    """A message and a close frame in one packet: the sender's own copy of the
    message (which confirms it was accepted) comes before the server's close reply,
    since nothing may follow a close frame (RFC 6455 5.5.1)."""

    def send(protocol: ClientProtocol) -> bytes:
        protocol.send_text(b'{"type":"say","text":"bye"}')
        protocol.send_close(CloseCode.NORMAL_CLOSURE, "done")
        return b""

    with web_server() as server:
        frames = frames_after_login(server, send)
    assert frames[-1].opcode is Opcode.CLOSE
    texts = [json.loads(bytes(f.data)).get("text") for f in frames[:-1]]
    assert "bye" in texts


def test_no_origin_is_refused_by_default(server: Server) -> None:
    """A client without Origin is refused unless allow_no_origin is set."""
    with pytest.raises(InvalidStatus) as info:
        WebClient(server, origin=None)
    assert info.value.response.status_code == 403


def test_no_origin_allowed_by_setting() -> None:
    """allow_no_origin lets programs without an Origin in."""
    with web_server(allow_no_origin=True) as server:
        client = WebClient(server, origin=None)
        client.login("bot")
        client.close()


def test_configured_origins() -> None:
    """An origin in the list is allowed, others not; "*" allows any."""
    with web_server(origins=("https://chat.example.org",)) as server:
        WebClient(server, origin="https://chat.example.org").close()
        with pytest.raises(InvalidStatus):
            WebClient(server, origin="https://other.example.org")
    with web_server(origins=("*",)) as server:
        WebClient(server, origin="https://any.example").close()


def _handshake(server: Server, host: str, origin: str) -> bytes:
    """The answer (head and body) to an upgrade request with these Host and Origin."""
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {origin}\r\n\r\n"
    ).encode()

    def whole(got: bytes) -> bool:
        head, _, body = got.partition(b"\r\n\r\n")
        length = re.search(rb"Content-Length: (\d+)", head)
        return bool(_) and (length is None or len(body) >= int(length.group(1)))

    with socket.create_connection(server.addresses["web"], timeout=TIMEOUT) as sock:
        sock.sendall(request)
        return _answer(sock, whole)


def test_a_page_under_a_name_the_server_does_not_know_is_refused() -> None:
    """DNS rebinding: a page of evil.example whose name now points at this server sends
    Host and Origin alike; only names the server knows (IP addresses, localhost, the
    machine's name, hosts and the origins' hosts) count as the page's own origin."""
    with web_server(
        hosts=("chat.lan", "bücher.example", "straße.example"),
        origins=("https://chat.example.org",),
    ) as server:
        port = server.addresses["web"][1]
        # (strasse.example is another domain: IDNA 2003 mapped ß to ss, browsers do not.)
        for host in (f"evil.example:{port}", "evil.example", f"a b:{port}", "strasse.example"):
            answer = _handshake(server, host, f"http://{host}")
            assert answer.startswith(b"HTTP/1.1 403 "), answer
        assert b"[faces.web] hosts" in _handshake(server, "evil.example", "http://evil.example")
        for host in (
            f"127.0.0.1:{port}",
            f"[::1]:{port}",
            f"localhost:{port}",
            f"app.localhost:{port}",
            f"chat.lan:{port}",
            "CHAT.LAN",
            "chat.example.org",
            "chat.lan.",  # (a fully qualified name's final dot)
            f"localhost.:{port}",
            "xn--bcher-kva.example",  # (what a browser sends for bücher.example)
            "xn--strae-oqa.example",  # (and for straße.example: UTS 46, non-transitional)
            socket.gethostname(),
        ):
            answer = _handshake(server, host, f"http://{host}")
            assert answer.startswith(b"HTTP/1.1 101 "), (host, answer)


def test_behind_a_trusted_proxy_a_client_has_its_own_address() -> None:
    """With [faces.web] proxies, a WebSocket from one of them is its client's, the last
    X-Forwarded-For address that is not a proxy's: login throttles and bans apply to
    each client, not to the proxy's one address. Untrusted peers, and headers that
    are not addresses, change nothing."""

    def address(server: Server, nick: str, forwarded: str | None) -> str:
        headers = {"X-Forwarded-For": forwarded} if forwarded is not None else None
        client = WebClient(server, additional_headers=headers)
        client.send(type="hello", nick=nick)
        client.expect("welcome")
        session = server.hub.find(nick)
        assert session is not None
        client.close()
        return session.address[0]

    with web_server(proxies=("127.0.0.1", "10.0.0.0/8")) as server:
        assert address(server, "a", "203.0.113.7") == "203.0.113.7"
        assert address(server, "b", "198.51.100.1, 203.0.113.8, 10.1.2.3") == "203.0.113.8"
        assert address(server, "c", "2001:db8::1") == "2001:db8::1"
        assert address(server, "d", "not-an-address") == "127.0.0.1"
        assert address(server, "e", None) == "127.0.0.1"
    with web_server() as server:  # no proxy trusted: the header is anyone's to write
        assert address(server, "f", "203.0.113.7") == "127.0.0.1"


def test_a_proxies_setting_that_is_not_an_address_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "chatkit.toml"
    path.write_text('[faces.web]\nproxies = ["proxy.lan"]\n')
    with pytest.raises(UsageError, match=r"proxies: 'proxy\.lan' is not an address"):
        load_config(path)


# -- limits --------------------------------------------------------------------------------


def test_per_address_limit() -> None:
    """Past max_clients_per_address a new connection gets 429 before anything else."""
    with web_server(limit_loopback=True, max_clients_per_address=2) as server:
        first, second = WebClient(server), WebClient(server)
        # Refused at accept(), before its request: read the answer as it comes.
        sock = socket.create_connection(server.addresses["web"], timeout=TIMEOUT)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
        assert b"too many connections from 127.0.0.1" in answer
        first.close()
        second.close()


def test_login_timeout() -> None:
    """A WebSocket that never says hello gets login_timeout, then is closed."""
    # (The limit counts from the accept: the WebSocket's handshake must fit in it.)
    with web_server(login_timeout=1.0) as server:
        client = WebClient(server)
        client.expect("error", code="login_timeout")
        client.wait_closed()


def test_idle_ping_is_a_websocket_ping() -> None:
    """An idle client is pinged with a WebSocket ping, which its library answers."""
    with web_server(idle_timeout=0.2, ping_timeout=1.0) as server:
        alice = WebClient(server)
        alice.login("alice")
        received: list[Opcode] = []
        protocol = alice.ws.protocol
        recv_frame = protocol.recv_frame

        def recording(frame: Any) -> None:
            received.append(frame.opcode)
            recv_frame(frame)

        protocol.recv_frame = recording  # type: ignore[method-assign]
        deadline = time.monotonic() + 2.5  # several idle periods and ping timeouts
        while time.monotonic() < deadline:
            assert not alice._read(deadline), alice.pending  # no JSON ping frame
        assert not alice.closed
        assert Opcode.PING in received
        alice.sync()


def test_flood_limit_applies() -> None:
    """The flood plugin limits web clients as it does line clients."""
    with web_server() as server:
        alice = WebClient(server)
        alice.login("alice")
        for i in range(40):
            alice.say(f"flood {i}")
        error = alice.expect("error", code="rate_limited")
        assert error["retry_after"] > 0


def test_slow_consumer_is_cut() -> None:
    """A web client that stops reading is cut once its queue passes max_sendq."""
    with web_server(max_sendq=4096, slow_timeout=0.2, disable=("flood",)) as server:
        reader = WebClient(server, max_queue=1)
        reader.login("slow")
        talker = ChatClient(server.address)
        talker.login("talker")
        # Enough to fill the socket buffers between them (autotuned: megabytes) well
        # within the deadline, on a busy machine too: 80 KB between two syncs.
        text = "x" * 4000
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for _ in range(20):
                talker.say(text)
            talker.sync()
            if "slow" not in [c.session.nick for c in server.connections]:
                break
        assert "slow" not in [c.session.nick for c in server.connections]
        talker.close()


# -- across faces -----------------------------------------------------------------------------


def test_cross_face_chat(server: Server, web: Callable[..., WebClient]) -> None:
    """A web user, a JSON TCP user and an nc user chat in one room."""
    alice = web("alice")
    bob = ChatClient(server.address)
    bob.login("bob")
    carol = TextClient(server.address)
    carol.send_line("carol")
    carol.expect("Welcome to chatkit")
    alice.expect("join", nick="carol")
    alice.say("hello from the web")
    bob.expect("message", nick="alice", text="hello from the web")
    carol.expect("<alice> hello from the web")
    bob.say("hi alice")
    alice.expect("message", nick="bob", text="hi alice")
    carol.send_line("hi all")
    alice.expect("message", nick="carol", text="hi all")
    bob.close()
    carol.close()


def test_page_url_printed(serve: Any) -> None:
    """chatkit serve --web-port 0 prints the page's URL, which serves the page."""
    proc = serve("--web-port", "0")
    line = proc.proc.stdout.readline()
    while "web: http://" not in line:
        assert line, "serve ended without printing the page URL"
        line = proc.proc.stdout.readline()
    url = line.split("web: ", 1)[1].split()[0]
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    conn.request("GET", "/")
    assert conn.getresponse().status == 200
    conn.close()
    code, _out, _err = proc.stop()
    assert code == 0


def test_fan_out_frames_once_for_all_web_clients(
    web: Callable[..., WebClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message to a room of web clients is framed once, not once per recipient."""
    clients = [web(f"user{i}") for i in range(4)]
    for client in clients:
        client.sync()
    framed: list[str] = []
    serialize = WEB_CODEC._serialize

    def counting(frame: Any) -> bytes:
        framed.append(frame.type)
        return serialize(frame)

    monkeypatch.setattr(WEB_CODEC, "_serialize", counting)
    clients[0].say("to everyone")
    for client in clients:
        client.expect("message", text="to everyone")
    assert framed == ["message"]


def test_a_parked_websocket_wakes_when_it_talks() -> None:
    """A WebSocket client idle past idle_park holds no reader; it chats on after."""
    with web_server(idle_park=0.05) as server:
        ann = WebClient(server)
        bob = ChatClient(server.address)
        try:
            ann.login("ann")
            bob.login("bob")
            wait_until(lambda: server.parked >= 2, what="both parked")
            bob.say("to a parked websocket")
            assert ann.expect("message")["text"] == "to a parked websocket"
            ann.say("awake")
            assert bob.expect("message", nick="ann")["text"] == "awake"
            assert server.readers_resumed >= 2
        finally:
            ann.close()
            bob.close()


class _PickyStore:
    """Stores every message but those starting with "bad", refused at once."""

    @hookimpl
    def chatkit_store_message(self, client: Session, message: Message) -> Drop | None:
        return Drop("no") if message.text.startswith("bad") else None


def test_a_store_refusal_is_answered_before_a_later_message_s_error() -> None:
    """Two WebSocket messages in one read: a say a store refuses (told on its turn in
    the lane), then one that is not JSON: the answers come in the order of the
    messages."""
    server = Server(
        plugins=[_PickyStore()],
        config=make_config(None, ("flood",)),
        faces=[LineFace(), WebFace(port=0)],
    )
    server.start()
    try:
        client = WebClient(server)
        client.login("alice")
        payloads = (json.dumps({"type": "say", "text": "bad one"}).encode(), b"{nope")
        client.ws.socket.sendall(
            b"".join(WsFrame(Opcode.TEXT, p).serialize(mask=True, extensions=[]) for p in payloads)
        )
        codes = [f.get("code") for f in client.sync() if f["type"] == "error"]
        assert codes == ["not_stored", "bad_frame"], codes
        client.close()
    finally:
        server.shutdown()


def test_a_refusal_sent_before_the_request_says_the_time_it_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The answer to a connection refused before its request (server_full...) is made
    once for a storm, but its Date is the time it goes out, not the storm's first."""
    face, refusal = WebFace(port=0), Frame("error", code="server_full", text="full")
    monkeypatch.setattr(time, "time", lambda: 1_000_000_000.0)
    first = face.early(refusal)
    monkeypatch.setattr(time, "time", lambda: 1_000_000_060.0)
    later = face.early(refusal)
    assert b"Date: Sun, 09 Sep 2001 01:46:40 GMT" in first
    assert b"Date: Sun, 09 Sep 2001 01:47:40 GMT" in later
