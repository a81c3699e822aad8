"""The webhooks builtin: events POSTed to a real HTTP server run by the test, with
signatures and retries; messages posted over HTTP reach real chat clients."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import http.server
import json
import logging
import math
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from chatkit import Config, Message, Server, Session, hookimpl
from chatkit.builtins import webhooks
from chatkit.builtins.http_server import BACKLOG
from chatkit.testing import ChatClient, make_config, wait_until

SECRET = "s3cret"


class Receiver:
    """An HTTP server that records POSTs; answers each with the next of ``statuses``
    (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.gets: list[str] = []  # paths of GETs (what a followed redirect would be)
        self.statuses: list[int] = []
        self.delay = 0.0  # seconds each POST takes to answer (a slow receiver)
        self.cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(receiver.delay)  # (the receiver's own pace)
                with receiver.cond:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.requests.append((dict(self.headers), body))
                    receiver.cond.notify_all()
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"{receiver.url}/moved")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                receiver.gets.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 10) -> list[tuple[dict[str, str], bytes]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.requests) >= count, timeout), self.requests
            return list(self.requests)

    def events(self, count: int) -> list[dict[str, Any]]:
        return [json.loads(body) for _headers, body in self.wait(count)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.httpd.shutdown()
    r.httpd.server_close()


def settled(check: Callable[[], bool]) -> bool:
    """Wait (10 s at most) for ``check``: the worker counts a delivery after the answer."""
    return bool(wait_until(check, 10, "the webhook worker's counters"))


def webhooks_server(
    factory: Callable[..., Server], settings: dict[str, Any], **limits: Any
) -> Server:
    config = Config()
    config.plugin_config["webhooks"] = settings
    return factory(["webhooks"], config=config, **limits)


def webhooks_plugin(server: Server) -> Any:
    """The server's ``webhooks`` plugin object."""
    plugin = server.pluginmanager.get_plugin("webhooks")
    assert plugin is not None
    return plugin


def test_room_events_are_posted_signed_and_in_order(
    chat_server_factory: Callable[..., Server], receiver: Receiver
) -> None:
    server = webhooks_server(
        chat_server_factory, {"outgoing": [{"url": receiver.url, "secret": SECRET}]}
    )
    # Hooks of different clients run on their own threads, after the event they follow
    # was delivered: each step waits for the post before it, to keep one order.
    alice = ChatClient(server.address)
    alice.login("alice")
    receiver.wait(1)
    bob = ChatClient(server.address)
    bob.login("bob")
    receiver.wait(2)
    alice.say("hello")
    alice.say("/msg bob a private word")
    bob.expect("private")
    alice.say("/me waves")
    bob.expect("message", action=True)
    receiver.wait(4)
    bob.close()
    events = receiver.events(5)
    assert [(e["event"], e["nick"]) for e in events] == [
        ("join", "alice"),
        ("join", "bob"),
        ("message", "alice"),
        ("message", "alice"),
        ("leave", "bob"),
    ]
    assert events[2]["text"] == "hello" and events[2]["room"] == "#general"
    assert isinstance(events[2]["id"], int) and events[2]["ts"]
    assert events[3]["action"] is True and events[3]["text"] == "waves"
    assert events[0]["account"] is None and events[2]["account"] is None  # (no accounts here)
    assert all("private word" not in json.dumps(e) for e in events)
    for headers, body in receiver.requests:
        assert headers["Content-Type"] == "application/json"
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Chatkit-Signature"] == expected
        assert headers["X-Chatkit-Event"] == json.loads(body)["event"]
    assert len({h["X-Chatkit-Delivery"] for h, _ in receiver.requests}) == 5


def test_filters_by_room_and_event(
    chat_server_factory: Callable[..., Server], receiver: Receiver
) -> None:
    server = webhooks_server(
        chat_server_factory,
        {"outgoing": [{"url": receiver.url, "events": ["message"], "rooms": ["#Deploys"]}]},
    )
    alice = ChatClient(server.address)
    alice.login("alice")
    alice.say("in general")
    alice.say("/join #deploys")
    alice.say("shipped", room="#deploys")
    [event] = receiver.events(1)
    assert event["text"] == "shipped" and event["room"] == "#deploys"
    assert "X-Chatkit-Signature" not in receiver.requests[0][0]  # no secret, no signature
    alice.say("last", room="#deploys")
    assert receiver.events(2)[1]["text"] == "last"  # and nothing came between


def test_failures_are_retried_with_backoff_and_never_delay_the_chat(
    chat_server_factory: Callable[..., Server], receiver: Receiver
) -> None:
    receiver.statuses = [503, 500, 429]  # three failures, then 200
    server = webhooks_server(
        chat_server_factory,
        {"outgoing": [{"url": receiver.url, "events": ["message"], "backoff": 0.2}]},
    )
    alice = ChatClient(server.address)
    alice.login("alice")
    alice.say("one")
    assert alice.expect("message")["text"] == "one"  # delivered while the hook retries
    requests = receiver.wait(4)
    assert [json.loads(body)["text"] for _, body in requests] == ["one"] * 4
    deliveries = {h["X-Chatkit-Delivery"] for h, _ in requests}
    assert len(deliveries) == 1  # the same delivery, retried
    hook = webhooks_plugin(server).hooks[0]
    assert settled(lambda: hook.delivered == 1) and hook.failed == 0


def test_a_client_error_is_not_retried_and_gives_up_after_retries(
    chat_server_factory: Callable[..., Server], receiver: Receiver
) -> None:
    receiver.statuses = [400, 503, 503]
    server = webhooks_server(
        chat_server_factory,
        {"outgoing": [{"url": receiver.url, "events": ["message"], "retries": 1, "backoff": 0}]},
    )
    alice = ChatClient(server.address)
    alice.login("alice")
    alice.say("refused")
    alice.say("fails twice")
    alice.say("arrives")
    texts = [json.loads(body)["text"] for _, body in receiver.wait(4)]
    assert texts == ["refused", "fails twice", "fails twice", "arrives"]
    hook = webhooks_plugin(server).hooks[0]
    assert settled(lambda: hook.delivered == 1) and hook.failed == 2


def test_a_redirect_is_a_refusal_not_followed(
    chat_server_factory: Callable[..., Server], receiver: Receiver
) -> None:
    """A 302 is not followed (urllib would send the signed headers on, as a GET without
    the event): the event is refused, counted as failed, and the next one is posted."""
    receiver.statuses = [302]
    server = webhooks_server(
        chat_server_factory,
        {"outgoing": [{"url": receiver.url, "events": ["message"], "retries": 1, "backoff": 0}]},
    )
    alice = ChatClient(server.address)
    alice.login("alice")
    alice.say("moved")
    alice.say("next")
    texts = [json.loads(body)["text"] for _, body in receiver.wait(2)]
    assert texts == ["moved", "next"]
    hook = webhooks_plugin(server).hooks[0]
    assert settled(lambda: hook.delivered == 1) and hook.failed == 1
    assert receiver.gets == []


def test_a_full_queue_drops_its_oldest_events(
    chat_server_factory: Callable[..., Server],
) -> None:
    server = webhooks_server(
        chat_server_factory,
        {"max_queue": 2, "outgoing": [{"url": "http://127.0.0.1:9/", "events": ["message"]}]},
        disable=["flood"],
    )
    hook = webhooks_plugin(server).hooks[0]
    hook.stop()  # no worker: the queue only fills
    alice = ChatClient(server.address)
    alice.login("alice")
    for n in range(5):
        alice.say(f"m{n}")
    alice.sync()
    wait_until(lambda: hook.dropped >= 3, 10, "three dropped events")
    assert [e["text"] for e in hook.queue] == ["m3", "m4"] and hook.dropped == 3


def post(
    server: Server,
    room: str,
    body: bytes,
    token: str | None = "T0KEN",
    ctype: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    plugin = webhooks_plugin(server)
    url = "http://{}:{}/rooms/{}/messages".format(*plugin.incoming, room)
    headers = {"Content-Type": ctype}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, body, headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def incoming_server(factory: Callable[..., Server]) -> tuple[Server, ChatClient]:
    """A server whose incoming endpoint lets the bot ci post (token T0KEN), and alice,
    logged in to watch."""
    server = webhooks_server(factory, {"incoming": {"port": 0, "tokens": {"ci": "T0KEN"}}})
    alice = ChatClient(server.address)
    alice.login("alice")
    return server, alice


def test_messages_posted_over_http_reach_the_room(
    chat_server_factory: Callable[..., Server],
) -> None:
    server, alice = incoming_server(chat_server_factory)
    status, answer = post(server, "general", b'{"text": "build 42 passed"}')
    assert status == 201, answer
    message = alice.expect("message", nick="ci")
    assert message["text"] == "build 42 passed" and message["id"] == answer["id"]
    assert answer["room"] == "#general"
    # Plain text, a room named with its '#', a leading slash kept as text.
    status, answer = post(server, "%23general", b"/quit now", ctype="text/plain")
    assert status == 201
    assert alice.expect("message", nick="ci")["text"] == "/quit now"
    # Nor after line breaks, which the server drops around a message.
    for text in ("\n/nick evilbot", "\r/me waves", "\r\n\n/quit bye"):
        status, _ = post(server, "general", json.dumps({"text": text}).encode())
        assert status == 201
        assert alice.expect("message", nick="ci")["text"] == text.lstrip("\r\n")
    # Another room: the bot joins it first.
    alice.say("/join #ops")
    status, _ = post(server, "ops", '{"text": "déployé"}'.encode())
    assert status == 201
    assert alice.expect("message", room="#ops")["text"] == "déployé"
    alice.say("/who #ops")
    assert alice.expect("reply")["data"]["nicks"] == ["alice", "ci"]


def test_a_bot_is_only_in_the_rooms_it_posts_to(
    chat_server_factory: Callable[..., Server],
) -> None:
    """Its first post logs it in straight into that room: not into the default one too."""
    server, alice = incoming_server(chat_server_factory)
    alice.say("/join #ops")
    alice.expect("join", room="#ops", nick="alice")
    assert post(server, "ops", b'{"text": "deployed"}')[0] == 201
    alice.expect("message", room="#ops", nick="ci")
    alice.say("/who #general")
    assert alice.expect("reply")["data"]["nicks"] == ["alice"]


def test_a_bot_that_posts_now_and_then_stays_in_its_rooms(
    chat_server_factory: Callable[..., Server],
) -> None:
    """Between posts the bot's connection reads what its rooms say and answers the
    server's pings: nobody sees it leave and join again around the next post."""
    server = webhooks_server(
        chat_server_factory,
        {"incoming": {"port": 0, "tokens": {"ci": "T0KEN"}}},
        idle_timeout=0.2,
        ping_timeout=1.0,  # (a margin a busy machine cannot take from an answering bot)
        disable=["flood"],
    )
    alice = ChatClient(server.address)
    alice.answers_pings = True
    alice.login("alice")
    assert post(server, "general", b'{"text": "deploy started"}')[0] == 201
    alice.expect("message", nick="ci")
    for i in range(300):  # more than a socket's buffers hold, while the bot is quiet
        alice.say(f"{i} " + "x" * 400)
    alice.expect("message", text="299 " + "x" * 400)
    # Past a ping and its timeout (twice over), the bot is still there: the server
    # would have cut a silent one.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert server.hub.find("ci") is not None
        with contextlib.suppress(TimeoutError):
            alice.receive(timeout=0.05)  # (alice answers her own pings meanwhile)
    status, answer = post(server, "general", b'{"text": "deploy done"}')
    assert status == 201, answer
    frames = alice.sync()
    assert [f for f in frames if f["type"] in ("leave", "join")] == []
    assert [f["text"] for f in frames if f["type"] == "message"] == ["deploy done"]


def test_bad_http_posts_get_clear_errors(chat_server_factory: Callable[..., Server]) -> None:
    server = webhooks_server(
        chat_server_factory,
        {"incoming": {"port": 0, "tokens": {"ci": "T0KEN"}}},
        max_message_lines=2,
    )
    assert post(server, "general", b'{"text": "x"}', token=None)[0] == 401
    assert post(server, "general", b'{"text": "x"}', token="wrong")[0] == 401
    assert post(server, "general", b'{"txt": "x"}')[1]["error"] == "bad_request"
    assert post(server, "general", b"\xff\xfe", ctype="text/plain")[0] == 400
    for bad in ("bad!room", "bad%20room"):  # (a space: one name, not a /join's words)
        status, answer = post(server, bad, b'{"text": "x"}')
        assert status == 404 and answer["error"] == "bad_room", answer
    status, answer = post(server, "cafe%CC%81", b'{"text": "x"}')  # (e + a combining accent)
    assert status == 201 and answer["room"] == "#caf\u00e9", answer  # NFKC, as /join takes it
    status, answer = post(server, "general", b'{"text": "1\\n2\\n3"}')
    assert status == 400 and answer["error"] == "too_many_lines"
    status, answer = post(server, "general", b"x" * 70_000, ctype="text/plain")
    assert status == 413
    plugin = webhooks_plugin(server)
    url = "http://{}:{}/elsewhere".format(*plugin.incoming)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(url, b"", method="POST"), timeout=10)
    assert info.value.code == 404
    # The endpoint still works after all that.
    assert post(server, "general", b'{"text": "still here"}')[0] == 201


def test_a_kicked_bot_joins_again_at_its_next_post(
    chat_server_factory: Callable[..., Server],
) -> None:
    """A bot kicked from a room (its connection stays) joins it again to post there."""
    config = Config(plugins=["webhooks", "moderation"])
    config.plugin_config["webhooks"] = {"incoming": {"port": 0, "tokens": {"ci": "T0KEN"}}}
    server = chat_server_factory(config=config, disable=["flood"])
    alice = ChatClient(server.address)
    alice.login("alice")
    alice.expect("notice", text="you are an operator of #general")
    assert post(server, "general", b'{"text": "one"}')[0] == 201
    alice.expect("message", nick="ci", text="one")
    alice.say("/kick ci")
    alice.expect("leave", nick="ci")
    status, answer = post(server, "general", b'{"text": "two"}')
    assert status == 201, answer
    alice.expect("join", nick="ci")
    alice.expect("message", nick="ci", text="two")


def test_flood_control_says_when_to_retry(chat_server_factory: Callable[..., Server]) -> None:
    """A post refused by flood control is 429 with ``retry_after`` and ``Retry-After``."""
    config = Config()
    config.plugin_config["webhooks"] = {"incoming": {"port": 0, "tokens": {"ci": "T0KEN"}}}
    config.plugin_config["flood"] = {"burst": 2, "rate": 0.01}
    server = chat_server_factory(["webhooks"], config=config)
    for text in (b'{"text": "one"}', b'{"text": "two"}'):  # the burst (a login is given back)
        assert post(server, "general", text)[0] == 201
    plugin = webhooks_plugin(server)
    url = "http://{}:{}/rooms/general/messages".format(*plugin.incoming)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer T0KEN"}
    request = urllib.request.Request(url, b'{"text": "three"}', headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    answer = json.loads(info.value.read())
    assert (info.value.code, answer["error"]) == (429, "rate_limited")
    assert 0 < answer["retry_after"] <= 100
    assert info.value.headers["Retry-After"] == str(math.ceil(answer["retry_after"]))


def test_a_tokens_nick_is_its_bots_alone(chat_server_factory: Callable[..., Server]) -> None:
    """Nobody else logs in as a token's nick, or one that looks like it, or renames to
    it, before or after the bot's first post: they would post as the bot."""
    server = webhooks_server(
        chat_server_factory, {"incoming": {"port": 0, "tokens": {"ci": "T0KEN"}}}
    )
    for nick in ("ci", "CI", "\u0441i"):  # (a Cyrillic es)
        squatter = ChatClient(server.address)
        squatter.send({"type": "hello", "nick": nick})
        assert "webhook bot ci" in squatter.expect("error", code="nick_taken")["text"]
        squatter.close()
    alice = ChatClient(server.address)
    alice.login("alice")
    alice.say("/nick Ci")
    alice.expect("error", code="nick_taken")
    status, answer = post(server, "general", b'{"text": "x"}')
    assert status == 201, answer
    assert alice.expect("message", text="x")["nick"] == "ci"


def test_bad_settings_stop_the_start(chat_server_factory: Callable[..., Server]) -> None:
    from chatkit import UsageError

    cases: list[tuple[dict[str, Any], str]] = [
        ({"outgoing": [{"url": "ftp://x"}]}, "url must be an http"),
        ({"outgoing": [{"url": "http://x", "events": ["nope"]}]}, "events must be"),
        ({"incoming": {"tokens": {"ci": 5}}}, "tokens must be"),
        ({"outgoing": {"url": "http://x"}}, "outgoing must be a list"),
        ({"incoming": {"free_failures": -1}}, "free_failures must be a number of at least 0"),
        ({"incoming": {"delay": 0}}, "delay must be a number of at least 0.001"),
        ({"incoming": {"delay": 5, "max_delay": 1}}, "max_delay must be a number of at least 5"),
    ]
    for settings, error in cases:
        with pytest.raises(UsageError, match=error):
            webhooks_server(chat_server_factory, settings)


def raw_exchange(server: Server, request: bytes, *, wait: float = 10.0) -> bytes:
    """Send ``request`` on one connection to the incoming endpoint; all it answers, to
    the end of the connection."""
    sock = socket.create_connection(webhooks_plugin(server).incoming, timeout=wait)
    sock.sendall(request)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    return data


def test_hostile_http_gets_a_clear_answer_and_the_connection_closed(
    chat_server_factory: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    """A refused request's body is never read as another request (no smuggling past a
    proxy); a negative, doubled or chunked length, a token that is not ASCII, JSON too
    deep to parse and other methods each get their JSON error, and nothing is logged as
    an error."""
    server, alice = incoming_server(chat_server_factory)
    inner = (
        b"POST /rooms/general/messages HTTP/1.1\r\nAuthorization: Bearer T0KEN\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 8\r\n\r\nsmuggled"
    )
    for head in (b"POST /rooms/general/messages", b"POST /nope"):
        answer = raw_exchange(
            server, head + b" HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(inner), inner)
        )
        assert answer.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in answer
    auth = b"Authorization: Bearer T0KEN\r\n"
    cases = [
        (b"Content-Length: -1\r\n", b"411"),
        (b"Content-Length: 3\r\nContent-Length: 3\r\n", b"400"),
        (b"Transfer-Encoding: chunked\r\n", b"400"),
    ]
    for headers, status in cases:
        answer = raw_exchange(
            server, b"POST /rooms/general/messages HTTP/1.1\r\n" + auth + headers + b"\r\nabc"
        )
        assert answer.startswith(b"HTTP/1.1 " + status), answer
    answer = raw_exchange(
        server,
        b"POST /rooms/general/messages HTTP/1.1\r\nAuthorization: Bearer \xc3\xa9\xff\r\n"
        b"Content-Length: 0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 401")
    deep = b"[" * 60000
    answer = raw_exchange(
        server,
        b"POST /rooms/general/messages HTTP/1.1\r\n" + auth + b"Content-Type: application/json"
        b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(deep), deep),
    )
    assert answer.startswith(b"HTTP/1.1 400")
    for method in (b"PUT", b"DELETE", b"HEAD"):
        answer = raw_exchange(server, method + b" /rooms/general/messages HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 405"), answer
    assert post(server, "general", b'{"text": "still here"}')[0] == 201
    assert alice.expect("message", nick="ci")["text"] == "still here"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_incoming_connections_are_limited_and_time_out(
    chat_server_factory: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past max_connections an incoming connection is closed at once; a silent one is
    closed after REQUEST_TIMEOUT, freeing its place."""
    monkeypatch.setattr(webhooks._Handler, "timeout", 0.5)
    server = webhooks_server(
        chat_server_factory,
        {"incoming": {"port": 0, "max_connections": 2, "tokens": {"ci": "T0KEN"}}},
    )
    address = webhooks_plugin(server).incoming
    idle = [socket.create_connection(address, timeout=10) for _ in range(2)]
    for sock in idle:
        sock.sendall(b"POST / HTTP/1.1\r\n")  # and then nothing
    wait_until(lambda: raw_exchange(server, b"GET / HTTP/1.1\r\n\r\n") == b"", 10, "a refusal")
    # One watcher a port keeps the deadlines (a timer each was a thread more each).
    httpd = webhooks_plugin(server)._httpd
    assert len(httpd._served) == 2
    assert httpd.request_queue_size == BACKLOG
    for sock in idle:
        assert sock.recv(100) == b""  # timed out: closed by the server
        sock.close()

    def posted() -> bool:
        # (A place is free once the handler's thread has ended, just after it closed
        # the socket: until then a post may still be refused.)
        try:
            return post(server, "general", b'{"text": "room again"}')[0] == 201
        except (http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError):
            return False

    wait_until(posted, 10, "a place again")


def test_a_request_sent_a_byte_at_a_time_is_cut_at_the_deadline(
    chat_server_factory: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that sends a byte of its request now and then, each before the read
    timeout (slowloris), is cut at the connection's deadline: a few of them cannot keep
    the port shut."""
    monkeypatch.setattr(webhooks._Handler, "timeout", 0.5)
    monkeypatch.setattr(webhooks._HttpServer, "deadline", 1.0)
    server = webhooks_server(
        chat_server_factory, {"incoming": {"port": 0, "tokens": {"ci": "T0KEN"}}}
    )
    sock = socket.create_connection(webhooks_plugin(server).incoming, timeout=10)
    sock.sendall(b"POST /rooms/general/messages HTTP/1.1\r\n")
    started = time.monotonic()
    cut = False
    while not cut and time.monotonic() - started < 10:
        try:
            sock.sendall(b"X")  # a byte of a header, every 0.2 s (the client's pace)
            time.sleep(0.2)
            sock.settimeout(0.01)
            cut = sock.recv(100) == b""
        except TimeoutError:
            continue
        except OSError:
            cut = True
    sock.close()
    assert cut and time.monotonic() - started < 5
    assert post(server, "general", b'{"text": "still served"}')[0] == 201


def test_a_start_that_fails_after_configure_stops_at_once() -> None:
    """When another plugin fails the start after this one bound its port, stopping
    closes the port and returns (it waited for a serve_forever that never began)."""
    plugin = webhooks.Webhooks()
    config = Config()
    config.plugin_config["webhooks"] = {"incoming": {"port": 0, "tokens": {"ci": "T0KEN"}}}
    plugin.chatkit_configure(config)
    assert plugin.incoming is not None
    stopped = cast(Server, _Stopping())
    stopping = threading.Thread(target=plugin.chatkit_server_stop, args=(stopped,), daemon=True)
    stopping.start()
    stopping.join(10)
    assert not stopping.is_alive()
    with socket.socket() as probe:  # the port is free again
        probe.bind(plugin.incoming)


class _Stopping:
    """What the plugin sees of a server shutting down."""

    stopped = True


def test_a_receiver_that_answers_slowly_is_cut_at_the_timeout(
    chat_server_factory: Callable[..., Server],
) -> None:
    """``timeout`` bounds the whole POST: a receiver that sends its answer a byte at a
    time (each read within the socket's timeout) is cut when it is up."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                if stop.wait(0.2):
                    return
                with contextlib.suppress(OSError):
                    conn.send(bytes([byte]))

    threading.Thread(target=trickle, daemon=True).start()
    url = "http://{}:{}/hook".format(*listener.getsockname())
    settings = {"outgoing": [{"url": url, "retries": 0, "timeout": 0.5}]}
    server = webhooks_server(chat_server_factory, settings)
    hook = webhooks_plugin(server).hooks[0]
    alice = ChatClient(server.address)
    alice.login("alice")
    alice.say("slowly")
    try:
        wait_until(lambda: hook.failed == 1, 5, "the POST cut at its timeout")
        assert hook.delivered == 0
    finally:
        stop.set()
        listener.close()


def test_a_receiver_answering_a_huge_body_is_read_no_further_than_max_answer(
    chat_server_factory: Callable[..., Server],
) -> None:
    """A receiver's answer is read up to MAX_ANSWER, then the connection is closed: one
    answering 64 MiB as fast as it can gets no further than the sockets' buffers."""
    listener = socket.create_server(("127.0.0.1", 0))
    sent: list[int] = []

    def flood() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n")
            total, chunk = 0, b"x" * 65536
            with contextlib.suppress(OSError):
                while total < 64 * 1024 * 1024:
                    total += conn.send(chunk)
            sent.append(total)

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    url = "http://{}:{}/hook".format(*listener.getsockname())
    server = webhooks_server(chat_server_factory, {"outgoing": [{"url": url, "retries": 0}]})
    hook = webhooks_plugin(server).hooks[0]
    alice = ChatClient(server.address)
    alice.login("alice")
    alice.say("answer me")
    try:
        wait_until(lambda: hook.delivered == 1, 10, "the POST delivered")
        thread.join(10)
        assert sent and sent[0] < 16 * 1024 * 1024, sent  # (closed unread: the rest refused)
    finally:
        listener.close()


def test_a_bot_in_as_many_rooms_as_it_may_leaves_the_one_it_posted_to_longest_ago(
    chat_server_factory: Callable[..., Server],
) -> None:
    """The bot never leaves a room of itself; at max_rooms, a post to another room
    makes it leave the room it posted to longest ago, not fail (too_many_rooms)."""
    server = webhooks_server(
        chat_server_factory, {"incoming": {"port": 0, "tokens": {"ci": "T0KEN"}}}, max_rooms=2
    )
    for room in ("a", "b", "a", "c"):
        status, answer = post(server, room, json.dumps({"text": f"to {room}"}).encode())
        assert status == 201, answer
    bot = server.hub.find("ci")
    assert bot is not None and sorted(bot.rooms.values()) == ["#a", "#c"]


def test_guessing_tokens_waits_longer_and_longer(
    chat_server_factory: Callable[..., Server],
) -> None:
    """After five wrong tokens from an address, each makes it wait (429 with Retry-After,
    the right token too, meanwhile): a weak token cannot be guessed at network speed."""
    server = webhooks_server(
        chat_server_factory, {"incoming": {"port": 0, "tokens": {"ci": "T0KEN"}}}
    )
    for guess in range(5):
        assert post(server, "general", b'{"text": "x"}', token=f"guess{guess}")[0] == 401
    assert post(server, "general", b'{"text": "x"}', token="guess5")[0] == 401
    status, answer = post(server, "general", b'{"text": "x"}')
    assert status == 429 and answer["error"] == "auth_throttled" and answer["retry_after"] > 0


def test_the_token_throttle_has_settings(chat_server_factory: Callable[..., Server]) -> None:
    """free_failures, delay and max_delay set the throttle: with none free, the first
    wrong token makes the next request wait, for delay seconds at most."""
    settings = {"port": 0, "tokens": {"ci": "T0KEN"}, "free_failures": 0, "delay": 30}
    server = webhooks_server(chat_server_factory, {"incoming": settings})
    assert post(server, "general", b'{"text": "x"}', token="guess")[0] == 401
    status, answer = post(server, "general", b'{"text": "x"}')
    assert status == 429 and 25 < answer["retry_after"] <= 30


class CutsTheBot:
    """Cuts the webhook bot's connection once its message is accepted (before the
    bot hears back): the post cannot know whether it was delivered."""

    @hookimpl
    def chatkit_on_message(self, client: Session, message: Message) -> None:
        if message.nick == "ci" and message.text == "once":
            client.transport.abort("cut for the test")


def test_a_post_lost_after_its_message_was_sent_is_not_repeated(
    chat_server_factory: Callable[..., Server],
) -> None:
    """A connection lost after the message was sent gets 503 saying it may have been
    delivered; the message is not sent again on a fresh connection (a POST is not
    idempotent): the room has it once."""
    config = Config()
    config.plugin_config["webhooks"] = {"incoming": {"port": 0, "tokens": {"ci": "T0KEN"}}}
    server = chat_server_factory(["webhooks", CutsTheBot()], config=config)
    alice = ChatClient(server.address)
    alice.login("alice")
    status, answer = post(server, "general", b'{"text": "once"}')
    assert status == 503 and "may have been delivered" in answer["text"]
    assert alice.expect("message", nick="ci")["text"] == "once"
    status, _ = post(server, "general", b'{"text": "after"}')  # a fresh connection
    assert status == 201
    assert alice.expect("message", nick="ci")["text"] == "after"  # not "once" again


def test_a_reload_delivers_the_events_queued_before_it(
    chat_server_factory: Callable[..., Server], receiver: Receiver
) -> None:
    """A reload that restarts the plugin (its settings changed) while events wait for
    a slow receiver: the old worker still delivers them, and the new one what follows
    (they were dropped, and the reload waited for the POST under way)."""
    settings = {"outgoing": [{"url": receiver.url, "events": ["message"]}]}
    server = webhooks_server(chat_server_factory, settings, disable=["flood"])
    receiver.delay = 0.1
    alice = ChatClient(server.address)
    alice.login("alice")
    for i in range(8):
        alice.say(f"before {i}")
    alice.sync()
    config = Config()
    config.plugin_config["webhooks"] = {
        "outgoing": [{"url": receiver.url, "events": ["message"], "retries": 2}]
    }
    config.plugins, config.disable = ["webhooks"], ["flood"]
    assert "plugin 'webhooks' restarted" in server.reload(make_config(config))
    for i in range(3):
        alice.say(f"after {i}")
    texts = sorted(e["text"] for e in receiver.events(11))
    assert texts == sorted([f"before {i}" for i in range(8)] + [f"after {i}" for i in range(3)])


def test_the_shutdown_stops_the_workers_a_reload_left_draining(
    chat_server_factory: Callable[..., Server],
) -> None:
    """Workers a reload left delivering their queues to a receiver that is down (each
    event retried for minutes) are stopped by the shutdown too: none outlives the
    server (nobody held them, and they posted on for hours)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"  # (nothing listens)
    settings = {"outgoing": [{"url": url, "events": ["message"], "backoff": 30.0}]}
    server = webhooks_server(chat_server_factory, settings)
    alice = ChatClient(server.address)
    alice.login("alice")
    alice.say("to nobody")
    alice.sync()
    config = Config()
    config.plugins = ["webhooks"]
    config.plugin_config["webhooks"] = {"outgoing": [{"url": url, "retries": 1}]}
    assert "plugin 'webhooks' restarted" in server.reload(make_config(config))
    alice.close()
    server.shutdown()
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name == "chatkit-webhook"],
        10,
        "no webhook worker left",
    )
