"""The threaded server: framing on real sockets, limits, hostile clients, shutdown."""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, cast

import pytest
from conftest import fill_queues, not_reading

import chatkit.server as server_module
from chatkit import Server, Session, hookimpl
from chatkit.faces.line import LineChannel
from chatkit.testing import ChatClient, TextClient, run_server, wait_until

Connect = Callable[..., ChatClient]
Factory = Callable[..., Server]


def test_lines_split_into_single_bytes_are_reassembled(chat_client: Connect) -> None:
    """A frame sent one byte at a time is one frame."""
    alice = chat_client("alice")
    for byte in b'{"type":"say","text":"slow"}\n':
        alice.send_raw(bytes([byte]))
    assert alice.expect("message")["text"] == "slow"


def test_many_frames_in_one_segment_are_all_handled(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Frames merged into one send are handled one by one, in order."""
    alice = chat_client(chat_server_factory(disable=["flood"]), "alice")
    alice.send_raw(b"".join(b'{"type":"say","text":"m%d"}\n' % i for i in range(200)))
    assert [alice.expect("message")["text"] for _ in range(200)] == [f"m{i}" for i in range(200)]


@pytest.mark.parametrize("bad", [b"not json", b"\xff", b'{"type":"say","text":""}'])
def test_a_bad_line_is_answered_after_the_message_before_it(
    chat_client: Connect, bad: bytes
) -> None:
    """Answers come in the order of the lines: a message's own copy (its confirmation)
    before the error about a bad line sent after it, in the same segment."""
    alice = chat_client("alice")
    alice.send_raw(b'{"type":"say","text":"first"}\n' + bad + b"\n")
    frames = [f for f in alice.sync() if f["type"] in ("message", "error")]
    assert [f["type"] for f in frames] == ["message", "error"]


def test_accepted_sockets_have_nodelay(chat_server: Server, chat_client: Connect) -> None:
    """TCP_NODELAY is set so a lone line is not held back for a delayed ACK."""
    chat_client("alice")
    (conn,) = chat_server.connections
    assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_an_overlong_line_is_refused_and_the_connection_goes_on(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A line over max_line gets line_too_long; the next line works."""
    server = chat_server_factory(max_line=200)
    alice = chat_client(server, "alice")
    alice.send_raw(b'{"type":"say","text":"' + b"x" * 300 + b'"}\n')
    error = alice.expect("error")
    assert error["code"] == "line_too_long" and "200 bytes" in error["text"]
    alice.say("fine")
    assert alice.expect("message")["text"] == "fine"


def test_a_huge_line_without_newline_is_not_buffered(
    chat_server: Server, chat_client: Connect
) -> None:
    """Megabytes without a newline are dropped as they come, and the client goes on."""
    alice = chat_client("alice")
    alice.send_raw(b"y" * 4_000_000)
    alice.send_raw(b'\n{"type":"say","text":"after"}\n')
    assert alice.expect("error")["code"] == "line_too_long"
    assert alice.expect("message")["text"] == "after"
    (conn,) = chat_server.connections
    channel = conn.channel
    assert isinstance(channel, LineChannel)
    assert len(channel.protocol._decoder._buf) <= chat_server.config.limits.max_line


def test_bad_encoding_and_bad_frames_keep_the_connection(chat_client: Connect) -> None:
    """Invalid UTF-8 and bad JSON get their error codes; the client stays logged in."""
    alice = chat_client("alice")
    alice.send_raw(b"\xc3\x28 invalid\n")
    assert alice.expect("error")["code"] == "bad_encoding"
    alice.send_raw(b"{not json\n")
    assert alice.expect("error")["code"] == "bad_frame"
    alice.send(type="nope")
    assert alice.expect("error")["code"] == "bad_frame"
    alice.say("still here")
    assert alice.expect("message")["text"] == "still here"


def test_text_mode_nick_retry_as_in_the_classroom_chat(
    chat_client: Connect, text_client: Callable[..., TextClient]
) -> None:
    """In text mode a taken nick gets an error line and the next line is tried."""
    chat_client("alice")
    raw = text_client()
    raw.send_line("alice")
    assert raw.expect("error [nick_taken]").startswith("error [nick_taken]")
    raw.send_line("bob")
    raw.expect("Welcome to chatkit")
    raw.expect("* bob joined #general")
    raw.send_line("/me waves")
    assert raw.expect("* bob waves") == "[#general] * bob waves"


def test_a_client_that_vanishes_mid_line_is_logged_out(chat_client: Connect) -> None:
    """A half-sent line then a close: nothing is delivered, the leave is announced."""
    alice, bob = chat_client("alice"), chat_client("bob")
    bob.send_raw(b'{"type":"say","text":"never fin')
    bob.close()
    assert alice.expect("leave", nick="bob")["reason"] == "connection closed"
    assert not [f for f in alice.sync() if f["type"] == "message"]


def test_a_reset_connection_is_logged_out(chat_client: Connect) -> None:
    """A client whose connection is reset is logged out and announced."""
    alice, bob = chat_client("alice"), chat_client("bob")
    bob.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    bob.send_raw(b"{")  # unread data makes close() send a RST
    bob.close()
    leave = alice.expect("leave", nick="bob")
    # (Broken pipe: the server answered the "{" it read, a line at the end of input,
    # and the writer's send found the connection gone first.)
    assert leave["reason"] in (
        "connection closed",
        "connection lost (Connection reset by peer)",
        "connection lost (Broken pipe)",
    )


def test_login_timeout(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A connection that does not log in within login_timeout is told and closed."""
    # (A limit alice, who logs in at once, meets even on a busy machine.)
    server = chat_server_factory(login_timeout=1.0)
    idle = chat_client(server)
    assert idle.expect("error", timeout=5)["code"] == "login_timeout"
    idle.wait_closed()
    alice = chat_client(server, "alice")  # logged-in clients are not affected
    alice.say("hi")
    alice.expect("message")


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"ping"}',
        b'{"type":"pong"}',
        b"{not json",
        b"\xff",
        b"",  # blank
        b'{"type":"say","text":"/nosuchcommand"}',  # refused: every refusal costs a line
        b'{"type":"history","limit":0}',
    ],
    ids=str,
)
def test_lines_no_flood_control_sees_are_paced(
    chat_server_factory: Factory, chat_client: Connect, line: bytes
) -> None:
    """Pings, pongs, blank lines, lines refused unread and refused lines are not flood
    control's, but past free_lines at once (and free_line_rate a second) the client is
    paused: its later lines wait, while everyone else goes on."""
    server = chat_server_factory(free_lines=3, free_line_rate=0.1)
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    session = server.hub.find("alice")
    assert session is not None
    alice.send_raw((line + b"\n") * 10)
    if line and b"pong" not in line:  # (a pong or a blank line is answered by nothing)
        for _ in range(3):
            alice.expect(lambda f: f["type"] in ("pong", "error"))
    # The fourth line put it 1 over: its reader sleeps 10 s before going on.
    wait_until(pausing, 10, "alice's reader paused")
    assert session.free < 0
    bob.say("the others go on")
    bob.expect("message", text="the others go on")
    assert pausing()


def test_a_paused_client_that_sent_past_max_recvq_is_disconnected(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A client paused (past free_lines) with more than max_recvq bytes sent and unread
    is disconnected (excess_flood): what it sent and left is not acted on for minutes
    at the paced rate, and the others go on."""
    server = chat_server_factory(free_lines=3, free_line_rate=0.1, max_recvq=4096)
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.send_raw(b'{"type":"ping"}\n' * 5000)  # 80 KB
    error = alice.expect("error", code="excess_flood")
    assert "max_recvq (4096): disconnected" in error["text"]
    alice.wait_closed()
    bob.expect("leave", nick="alice")
    assert server.hub.find("alice") is None
    bob.say("the others go on")
    bob.expect("message", text="the others go on")


def test_a_client_sending_at_the_shutdown_is_not_cut_as_an_excess_flood(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Once the shutdown refuses messages (closing), a client still sending is paced as
    ever, but never cut as an excess flood: it is owed what was accepted before, and
    the notice."""
    server = chat_server_factory(
        free_lines=3, free_line_rate=0.1, max_recvq=4096, disable=["flood"]
    )
    alice = chat_client(server, "alice")
    server.hub.stop_messages()  # (the shutdown's first step)
    alice.send_raw(b'{"type":"say","text":"late"}\n' * 2000)  # 60 KB
    wait_until(pausing, 10, "alice paused")
    stopper = threading.Thread(target=server.shutdown)
    stopper.start()
    frames = []
    while (frame := alice.receive(timeout=10)) is not None:
        if frame["type"] in ("error", "notice"):
            frames.append(frame)
    stopper.join(10)
    assert {f.get("code") for f in frames if f["type"] == "error"} == {"closing"}
    assert frames[-1] == {"type": "notice", "text": "server shutting down"}


def pausing() -> bool:
    """Whether a thread of this process sleeps in Hub.free_line (a client paused)."""
    return any(
        any(frame.name == "free_line" for frame in traceback.extract_stack(top))
        for top in sys._current_frames().values()
    )


def test_idle_clients_are_pinged_and_kept_if_they_answer(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A silent client is pinged after idle_timeout; a pong keeps it connected."""
    server = chat_server_factory(idle_timeout=0.1, ping_timeout=30)
    alice = chat_client(server, "alice")
    alice.expect("ping")
    alice.send(type="pong")
    alice.say("still alive")
    assert alice.expect("message")["text"] == "still alive"


@pytest.mark.parametrize("parked", [False, True], ids=["reading", "parked"])
def test_clients_that_do_not_answer_a_ping_are_dropped(
    chat_server_factory: Factory, chat_client: Connect, parked: bool
) -> None:
    """A pinged client that stays silent past ping_timeout is told so (``error
    ping_timeout``), disconnected and logged out, whether its reader is waiting or its connection is parked (no reader: the watchdog
    pings parked clients too, and an answer wakes a reader)."""
    if parked:  # parked before the first ping
        server = chat_server_factory(idle_park=0.05, idle_timeout=0.3, ping_timeout=0.5)
    else:
        # (Long enough for the watcher to log in and answer its pings on a busy machine.)
        server = chat_server_factory(idle_timeout=0.1, ping_timeout=1.0)
    alice = chat_client(server, "alice", timeout=10)
    watcher = chat_client(server, "watcher", timeout=10)
    if parked:
        wait_until(lambda: server.parked == 2)
    alice.expect("ping")
    leave = None
    while leave is None:  # the watcher answers its own pings while it waits
        frame = watcher.expect(lambda f: f["type"] in ("ping", "leave"))
        if frame["type"] == "ping":
            watcher.send(type="pong")
        elif frame["nick"] == "alice":
            leave = frame
    assert leave["reason"] == "ping timeout"
    # Told why before the end (a person at nc who did not see the ping's prompt).
    assert alice.expect("error")["code"] == "ping_timeout"
    alice.wait_closed()
    wait_until(lambda: len(server.connections) == 1)


def test_max_clients(chat_server_factory: Factory, chat_client: Connect) -> None:
    """Past max_clients a connection gets server_full and is closed; others go on."""
    server = chat_server_factory(max_clients=2)
    a, b = chat_client(server, "a"), chat_client(server, "b")
    third = chat_client(server)
    assert third.expect("error")["code"] == "server_full"
    third.wait_closed()
    b.close()
    a.expect("leave", nick="b")
    wait_until(lambda: len(server.connections) == 1)
    chat_client(server, "c")  # room again


def test_max_clients_per_address(chat_server_factory: Factory, chat_client: Connect) -> None:
    """With limit_loopback, a second connection from one address is refused."""
    server = chat_server_factory(max_clients_per_address=1, limit_loopback=True)
    chat_client(server, "a")
    second = chat_client(server)
    error = second.expect("error")
    assert error["code"] == "too_many_connections" and "127.0.0.1" in error["text"]


def test_loopback_is_exempt_from_the_per_address_limit_by_default(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Local tests and benchmarks can open many connections."""
    server = chat_server_factory(max_clients_per_address=1)
    for i in range(5):
        chat_client(server, f"user{i}")


def test_a_connection_storm_costs_no_thread_and_chat_goes_on(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Hundreds of sockets opened at once, half closed at once and half left silent:
    chatting clients get every message, and the silent sockets hold no reader thread."""
    server = chat_server_factory(disable=["flood"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    threads_before = threading.active_count()
    storm = 200
    closed = [socket.create_connection(server.address) for _ in range(storm)]
    idle = [socket.create_connection(server.address) for _ in range(storm)]
    for sock in closed:
        sock.close()
    for i in range(50):
        alice.say(f"during {i}")
    assert [bob.expect("message", timeout=10)["text"] for _ in range(50)] == [
        f"during {i}" for i in range(50)
    ]
    wait_until(lambda: server.stats()["pending"] == storm, timeout=20)
    # The silent sockets cost no thread: only alice's and bob's readers were started.
    assert threading.active_count() < threads_before + 10
    assert server.readers_started == 2
    for sock in idle:
        sock.close()
    wait_until(lambda: len(server.connections) == 2, timeout=20)
    alice.sync()  # her own "during" lines
    bob.say("after")
    assert alice.expect("message")["text"] == "after"
    assert server.readers_started == 2


def test_max_pending_closes_the_oldest_silent_connection(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Past max_pending, the connection that has been silent longest gets server_busy."""
    server = chat_server_factory(max_pending=3)
    silent = [chat_client(server) for _ in range(3)]
    wait_until(lambda: server.stats()["pending"] == 3)
    newest = chat_client(server)
    assert silent[0].expect("error")["code"] == "server_busy"
    silent[0].wait_closed()
    wait_until(lambda: server.stats()["pending"] == 3)
    newest.login("newest")  # the newest silent connection was kept, and may talk
    alice = chat_client(server, "alice")  # a client that talks at once is never evicted
    alice.say("hi")
    assert newest.expect("message")["text"] == "hi"


def test_max_pending_never_closes_a_client_whose_hello_waits_unread(
    chat_server_factory: Factory,
) -> None:
    """The acceptor accepts a batch of connections before it reads any: past max_pending
    in such a batch, one whose hello is waiting unread has talked, and is not closed as
    silent (a burst of clients sending their hello at once lost some to server_busy)."""
    server = chat_server_factory(max_pending=3)
    with server._lock:  # the acceptor waits here: the burst queues, hellos sent
        clients = [ChatClient(server.address) for _ in range(8)]
        for n, client in enumerate(clients):
            client.send(type="hello", nick=f"burst{n}")
    for client in clients:
        assert client.expect(lambda f: f["type"] in ("welcome", "error"))["type"] == "welcome"
        client.close()


def test_first_byte_timeout(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A connection silent for first_byte_timeout is told and closed; one that has sent a
    byte has the rest of login_timeout to log in."""
    server = chat_server_factory(first_byte_timeout=0.3, login_timeout=30)
    talking = chat_client(server)
    talking.send_raw(b'{"type":"hel')
    silent = chat_client(server)
    error = silent.expect("error", timeout=5)
    assert error["code"] == "login_timeout" and "nothing received" in error["text"]
    silent.wait_closed()
    talking.send_raw(b'lo","nick":"late"}\n')
    assert talking.expect("welcome")["nick"] == "late"


def test_connect_rate(chat_server_factory: Factory, chat_client: Connect) -> None:
    """With limit_loopback, an address past connect_burst and connect_rate is refused."""
    server = chat_server_factory(connect_rate=0.1, connect_burst=2, limit_loopback=True)
    chat_client(server, "a")
    chat_client(server, "b")
    third = chat_client(server)
    error = third.expect("error")
    assert error["code"] == "too_many_connections" and "new connections" in error["text"]
    third.wait_closed()


def test_refused_connections_do_not_flood_the_log(
    chat_server_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """Ten refusals from one address in a moment make one warning, not ten."""
    server = chat_server_factory(connect_rate=0.1, connect_burst=1, limit_loopback=True)
    socks = [socket.create_connection(server.address) for _ in range(11)]
    for sock in socks[1:]:  # each refused one is told, then closed
        assert b"too_many_connections" in sock.recv(4096)
    for sock in socks:
        sock.close()
    refused = [r for r in caplog.records if r.getMessage().startswith("refused")]
    assert len(refused) == 1, [r.getMessage() for r in refused]


def test_the_count_of_refusals_not_logged_is_logged_without_another_refusal(
    chat_server_factory: Factory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The line saying how many more were refused comes once the interval is over, even
    if that address tries no more (it waited for its next refusal, which may never come)."""
    monkeypatch.setattr(server_module, "REFUSAL_LOG_INTERVAL", 0.5)
    server = chat_server_factory(connect_rate=0.1, connect_burst=1, limit_loopback=True)
    socks = [socket.create_connection(server.address) for _ in range(4)]
    for sock in socks[1:]:
        assert b"too_many_connections" in sock.recv(4096)
    for sock in socks:
        sock.close()
    wait_until(
        lambda: any(
            "refused 2 more connection(s) from 127.0.0.1" in r.getMessage() for r in caplog.records
        ),
        10,
        "the count logged",
    )


def test_loopback_is_exempt_from_the_connection_rate_by_default(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Local tests and benchmarks can connect as fast as they like."""
    server = chat_server_factory(connect_rate=0.1, connect_burst=1)
    for i in range(5):
        chat_client(server, f"user{i}")


def test_a_slow_consumer_is_cut_off_and_others_are_unaffected(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A client that never reads is disconnected at max_sendq; the others get every line."""
    server = chat_server_factory(max_sendq=256 * 1024, slow_timeout=1.0, disable=["flood"])
    slow = ChatClient(server.address)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.login("slow")  # and never reads again
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    count = 4000  # 8 MB: more than the kernel's socket buffers (up to 4 MB) can absorb
    received: list[int] = []

    def read_bob() -> None:
        for _ in range(count):
            received.append(bob.expect("message", timeout=20)["id"])

    reader = threading.Thread(target=read_bob)
    reader.start()
    payload = "x" * 2000
    seen: list[dict[str, object]] = []
    for i in range(count):
        alice.say(f"{i} {payload}")
        if i % 20 == 0:
            seen += alice.sync()  # read our own copies: alice is no slow consumer herself
    reader.join(30)
    assert len(received) == count
    assert received == sorted(received)
    leaves = [f for f in seen if f["type"] == "leave" and f["nick"] == "slow"]
    if not leaves:  # the slow client's logout may come after our last sync
        leaves = [alice.expect("leave", nick="slow", timeout=10)]
    assert leaves[0]["reason"] == "send queue exceeded"
    slow.close()


@pytest.mark.parametrize("history", [True, False], ids=["history", "no-history"])
def test_overload_slows_senders_and_cuts_no_reader(
    chat_server_factory: Factory, history: bool
) -> None:
    """60 clients each send 60 lines at once (flood control off) to a server whose send
    queues hold 16 KiB and whose writer may be 64 KiB behind: the writer falls behind,
    the senders wait, nobody is cut as a slow consumer, everyone receives every message."""
    clients, lines = 60, 60
    server = chat_server_factory(
        max_sendq=16 * 1024,
        max_backlog=64 * 1024,
        disable=["flood"] if history else ["flood", "history"],
    )
    socks = []
    for i in range(clients):
        # Small receive windows, so that the server's send buffers cannot grow to hold
        # the whole fan-out (the kernel tunes them to the window): the writer must fall
        # behind, whatever this machine's TCP memory settings.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.connect(server.address)
        sock.sendall(b'{"type":"hello","nick":"u%d"}\n' % i)
        socks.append(sock)
    for sock in socks:  # every client is logged in before the burst
        seen = b""
        while b'"welcome"' not in seen:
            seen += sock.recv(65536)
    wait_until(lambda: len(server.hub.who("#general") or []) == clients)
    burst = b"".join(b'{"type":"say","text":"m%d %s"}\n' % (j, b"x" * 80) for j in range(lines))
    for sock in socks:
        sock.sendall(burst)
    # Nobody reads until the writer has fallen behind and the senders wait: 21.6 MB of
    # fan-out against 60 full windows. (Read at once, this process could keep up with the
    # writer, on a quick machine, and no sender would ever wait.)
    wait_until(lambda: server.paused > 0, 10, "the senders to wait")
    counts, rests, closed = [0] * clients, [b""] * clients, 0
    selector = selectors.DefaultSelector()
    for i, sock in enumerate(socks):
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, i)
    deadline = time.monotonic() + 30
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(1):
            i, sock = key.data, cast(socket.socket, key.fileobj)
            data = sock.recv(1 << 20)
            if not data:
                closed += 1
                selector.unregister(sock)
                continue
            data = rests[i] + data
            end = data.rfind(b"\n") + 1
            rests[i] = data[end:]
            counts[i] += data[:end].count(b'"type":"message"')
            if counts[i] == clients * lines:
                selector.unregister(sock)
    for sock in socks:
        sock.close()
    assert closed == 0
    assert counts == [clients * lines] * clients


def test_a_client_that_reads_slowly_is_not_cut_for_a_burst(chat_server_factory: Factory) -> None:
    """A client reading steadily but slower than a burst: its socket is full and more
    than max_sendq waits for it, yet it catches up within slow_timeout (the sender is
    paused meanwhile), so it is not cut and gets every message, in order."""
    server = chat_server_factory(
        max_sendq=16 * 1024, max_backlog=32 * 1024, slow_timeout=5.0, disable=["flood"]
    )
    slowpoke = socket.create_connection(server.address)
    slowpoke.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slowpoke.sendall(b'{"type":"hello","nick":"slowpoke"}\n')
    alice = ChatClient(server.address)
    alice.login("alice")
    wait_until(lambda: "slowpoke" in (server.hub.who("#general") or []))
    count, payload = 400, "x" * 1000  # 400 KB: 25 times its max_sendq
    got: list[bytes] = []
    # About 2 MB/s at most: slower than the server can send.
    reader = threading.Thread(target=_read_slowly, args=(slowpoke, count, 4096, 0.002, got))
    reader.start()
    for i in range(count):
        alice.say(f"{i} {payload}")
    reader.join(40)
    texts = re.findall(rb'"text":"(\d+) ', got[0])
    assert [int(t) for t in texts] == list(range(count))
    assert server.hub.find("slowpoke") is not None
    slowpoke.close()
    alice.close()


def _read_slowly(
    sock: socket.socket, count: int, size: int, pause: float, got: list[bytes]
) -> None:
    """Read ``size`` bytes at a time from ``sock``, ``pause`` seconds apart, until
    ``count`` messages have come whole (or the connection closes, or 30 s pass); append
    what came to ``got``."""
    buf = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if buf[: buf.rfind(b"\n") + 1].count(b'"type":"message"') >= count:
            break  # every message, each one whole
        data = sock.recv(size)
        if not data:
            break
        buf += data
        time.sleep(pause)
    got.append(buf)


def _slow_reader(address: tuple[str, int], nick: str, window: int) -> socket.socket:
    """A raw client with a receive window of ``window`` bytes, logging in as ``nick``."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)
    sock.connect(address)
    sock.sendall(b'{"type":"hello","nick":"%s"}\n' % nick.encode())
    return sock


def _small_send_buffer(server: Server, nick: str) -> Session:
    """``nick``'s session, its server-side socket given small kernel buffers: they would
    grow to megabytes and hold a whole burst, and the queue, not the kernel, must hold
    what the client is behind."""
    wait_until(lambda: server.hub.find(nick) is not None)
    session = server.hub.find(nick)
    assert session is not None
    session.transport.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)  # type: ignore[attr-defined]
    return session


@pytest.mark.parametrize("verb", ["", "/me "], ids=["messages", "actions"])
def test_a_reader_behind_for_longer_than_slow_timeout_holds_its_room_and_stays(
    chat_server_factory: Factory, verb: str
) -> None:
    """A client reading steadily, but slower than its room for several times
    slow_timeout, with max_backlog far away (the server's writer is not behind): while
    it is over max_sendq and its socket still takes bytes, it holds its room (the
    senders pause) until it is down to half of max_sendq, so it is not cut and gets
    every message, in order. (It was cut once slow_timeout passed: the benchmark's
    overload cut 2 of 100 readers that read as fast as the others.)"""
    server = chat_server_factory(
        max_sendq=16 * 1024, max_backlog=64 * 1024 * 1024, slow_timeout=0.25, disable=["flood"]
    )
    # (A window not much smaller than what it reads at once: a tiny one stalls TCP
    # itself for 200 ms at a time, waiting for a window update, however fast it reads.)
    slowpoke = _slow_reader(server.address, "slowpoke", 256 * 1024)
    alice = ChatClient(server.address)
    alice.login("alice")
    wait_until(lambda: "slowpoke" in (server.hub.who("#general") or []))
    session = _small_send_buffer(server, "slowpoke")
    count, payload = 3000, "x" * 1000  # 3 MB: over a second at its pace, 6 slow_timeouts
    got: list[bytes] = []

    def read_slowly() -> None:
        # Only once alice waits: read at once, on a quick machine, this process could
        # keep up with her and nothing would ever hold the room. Then about 2 MB/s at
        # most: slower than alice sends.
        wait_until(lambda: server.paused > 0, 10, "alice to wait for slowpoke")
        _read_slowly(slowpoke, count, 8192, 0.004, got)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    for i in range(count):
        alice.say(f"{verb}{i} {payload}")  # (/me: a command that says something too)
        if i % 100 == 0:
            alice.sync()  # alice reads her copies: she is no slow consumer herself
    reader.join(40)
    texts = re.findall(rb'"text":"(\d+) ', got[0])
    assert [int(t) for t in texts] == list(range(count))
    assert server.hub.find("slowpoke") is session
    assert server.paused > 0  # alice did wait
    slowpoke.close()
    alice.close()


def test_a_reader_behind_holds_only_its_own_rooms(chat_server_factory: Factory) -> None:
    """While a client that reads slowly holds #general (its senders paused), a room it
    is not in goes on, and so do messages there from a member of #general; once it
    leaves, #general's paused lines are all delivered."""
    # (Half of max_sendq at slowpoke's pace is 12 s: the hold lasts the whole test.)
    server = chat_server_factory(
        max_sendq=1024 * 1024, max_backlog=64 * 1024 * 1024, slow_timeout=30, disable=["flood"]
    )
    slowpoke = _slow_reader(server.address, "slowpoke", 16384)
    _small_send_buffer(server, "slowpoke")
    carol, dave = ChatClient(server.address), ChatClient(server.address)
    carol.login("carol", room="#other")
    dave.login("dave", room="#other")
    mike = ChatClient(server.address)
    mike.login("mike", rooms=["#general", "#other"])
    alice = socket.create_connection(server.address)
    alice.sendall(b'{"type":"hello","nick":"alice"}\n')
    wait_until(lambda: "alice" in (server.hub.who("#general") or []))
    stop = threading.Event()

    def read_slowly() -> None:  # about 40 KB/s: far slower than alice's burst
        while not stop.is_set():
            if not slowpoke.recv(4096):
                break
            time.sleep(0.1)

    count, payload = 2000, b"x" * 1000  # 2 MB: twice max_sendq
    burst = b"".join(b'{"type":"say","text":"%d %s"}\n' % (i, payload) for i in range(count))
    echoes: list[int] = []

    def read_alice() -> None:  # alice reads her copies at once
        buf = b""
        while len(echoes) < count:
            data = alice.recv(65536)
            if not data:
                break
            buf += data
            lines = buf.split(b"\n")
            buf = lines.pop()
            echoes.extend(
                int(m.group(1)) for line in lines if (m := re.search(rb'"text":"(\d+) ', line))
            )

    threads = [
        threading.Thread(target=read_slowly),
        threading.Thread(target=read_alice),
        threading.Thread(target=alice.sendall, args=(burst,)),
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: server.writer._paused > 0, timeout=10)  # alice waits for slowpoke
    carol.say("next door", room="#other")
    dave.expect("message", text="next door", room="#other")
    mike.say("from #general too", room="#other")  # a message to #other is not held
    dave.expect("message", text="from #general too", room="#other")
    assert len(echoes) < count  # #general was still held meanwhile
    stop.set()
    slowpoke.close()  # it goes: nothing holds #general now
    threads[1].join(20)
    assert echoes == list(range(count))
    for thread in threads:
        thread.join(5)
    for client in (alice, carol, dave, mike):
        client.close()


def test_a_reader_behind_with_its_own_frames_holds_no_room(chat_server_factory: Factory) -> None:
    """Only its rooms' messages make a reader behind hold them: one whose queue is full
    of private messages (or of the pages of history it asked for) holds up nobody."""
    server = chat_server_factory(
        max_sendq=16 * 1024, max_backlog=64 * 1024 * 1024, slow_timeout=30, disable=["flood"]
    )
    slowpoke = _slow_reader(server.address, "slowpoke", 16384)
    session = _small_send_buffer(server, "slowpoke")
    alice, bob = ChatClient(server.address), ChatClient(server.address)
    alice.login("alice")
    bob.login("bob")
    mallory = socket.create_connection(server.address)
    mallory.sendall(b'{"type":"hello","nick":"mallory","room":"#elsewhere"}\n')
    wait_until(lambda: "slowpoke" in (server.hub.who("#general") or []))
    stop = threading.Event()

    def read_slowly() -> None:  # about 40 KB/s
        with contextlib.suppress(OSError):
            while not stop.is_set() and slowpoke.recv(4096):
                time.sleep(0.1)

    pms = b"".join(
        b'{"type":"say","text":"/msg slowpoke %s"}\n' % (b"x" * 1000) for _ in range(300)
    )
    threads = [
        threading.Thread(target=read_slowly),
        threading.Thread(target=_read_until_closed, args=(mallory,)),
        threading.Thread(target=mallory.sendall, args=(pms,)),
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: session.transport in server.writer._over, timeout=10)
    alice.say("still going")
    bob.expect("message", text="still going", timeout=5)
    assert server.hub.find("slowpoke") is session
    stop.set()
    slowpoke.close()
    mallory.close()
    for thread in threads:
        thread.join(5)
    for client in (alice, bob):
        client.close()


def _read_until_closed(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass


def test_shutdown_tells_clients_and_closes_them(chat_client: Connect) -> None:
    """shutdown() sends every client a notice, closes it, and runs logout hooks."""
    reasons: list[str] = []

    class Recorder:
        @hookimpl
        def chatkit_on_logout(self, client: Session, reason: str) -> None:
            reasons.append(reason)

    with run_server(plugins=[Recorder()]) as server:
        clients = [ChatClient(server.address) for _ in range(3)]
        for i, c in enumerate(clients):
            c.login(f"u{i}")
        unlogged = ChatClient(server.address)
        server.shutdown()
        for c in clients:
            assert c.expect("notice")["text"] == "server shutting down"
            c.wait_closed()
        unlogged.wait_closed()
        server.shutdown()  # idempotent
    assert reasons == ["server shutdown"] * 3
    assert not server.connections
    assert not server.writer.thread.is_alive()


def test_shutdown_cuts_clients_that_do_not_read(chat_server_factory: Factory) -> None:
    """A client with a full socket cannot hold up shutdown forever."""
    server = chat_server_factory(max_sendq=10_000_000, disable=["flood"])
    stuck = ChatClient(server.address)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.login("stuck")
    talker = ChatClient(server.address)
    talker.login("talker")
    for i in range(4000):  # 6 MB, more than the kernel's buffers hold
        talker.say("z" * 1500)
        if i % 100 == 0:
            talker.sync()
    wait_until(lambda: any(c.queued_bytes for c in server.connections))
    server.shutdown()
    assert not server.connections


def test_a_client_still_sending_at_the_shutdown_gets_the_end_and_the_notice(
    chat_server_factory: Factory,
) -> None:
    """A client that is still sending (pings) and not yet reading when the server stops:
    its connection is closed without a reset (which would drop what it had not taken:
    the room's last messages, the notice), and not before what is still queued for it
    is sent, so once it reads it gets them all."""
    server = chat_server_factory(disable=["flood"], max_sendq=10_000_000)
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the rest waits in the server
    busy.connect(server.address)
    busy.sendall(b'{"type":"hello","nick":"busy"}\n')
    talker = ChatClient(server.address)
    talker.login("talker")
    for i in range(1500):  # 3 MB: more than the kernel's buffers hold, the rest queued
        talker.say(f"{i:04} " + "z" * 2000)
        if i % 100 == 0:
            talker.sync()
    talker.sync()
    wait_until(lambda: any(c.queued_bytes for c in server.connections), 10, "a queue")
    pinging = threading.Event()
    pinging.set()

    pings = [0]

    def ping() -> None:
        with contextlib.suppress(OSError):
            while pinging.is_set():
                busy.sendall(b'{"type":"ping"}\n')
                pings[0] += 1
                time.sleep(0.01)  # (a client's pace, not a wait for a condition)

    pinger = threading.Thread(target=ping)
    pinger.start()
    stopper = threading.Thread(target=server.shutdown)
    stopper.start()
    wait_until(lambda: server.hub.closing, 10, "the shutdown to begin")
    wait_until(lambda: not server.connections, 10, "the readers' ends")
    pings[0] = 0
    # Still pinging after the server ended the session, not reading yet (its pings
    # reached a socket closed under bytes not sent yet: a reset, which dropped them).
    wait_until(lambda: pings[0] >= 20, 10, "pings after the end")
    pinging.clear()
    pinger.join(10)
    received = b""
    busy.settimeout(10)
    while chunk := busy.recv(65536):  # ConnectionResetError if reset
        received += chunk
    stopper.join(10)
    lines = [json.loads(line) for line in received.splitlines()]
    said = [f["text"][:4] for f in lines if f["type"] == "message"]
    assert said == [f"{i:04}" for i in range(1500)]
    assert lines[-1]["type"] == "notice" and lines[-1]["text"] == "server shutting down"


def test_a_server_can_be_embedded_and_serve_forever(chat_client: Connect) -> None:
    """serve_forever() blocks until shutdown() from another thread."""
    server = Server(port=0)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    wait_until(lambda: server.address[1] != 0)
    with ChatClient(server.address) as c:
        c.login("embedded")
    server.shutdown()
    thread.join(5)
    assert not thread.is_alive()


def test_start_twice_is_an_error() -> None:
    """A server starts once."""
    with run_server() as server, pytest.raises(RuntimeError):
        server.start()


def test_a_silent_new_connection_is_greeted_with_a_prompt(chat_server_factory: Factory) -> None:
    """A person at nc sees a one-line prompt after greeting_delay, types a nick and joins."""
    server = chat_server_factory(greeting_delay=0.2)
    with TextClient(server.address) as nc:
        nc.expect("type a nick and press Enter to join")
        nc.send_line("carol")
        nc.expect("Welcome to chatkit")


def test_a_greeted_person_who_types_nothing_is_timed_out_in_text(
    chat_server_factory: Factory,
) -> None:
    """The prompt was text, so the timeout is too: no JSON for a person at nc."""
    server = chat_server_factory(greeting_delay=0.1, first_byte_timeout=0.4)
    with TextClient(server.address) as nc:
        nc.expect("type a nick and press Enter to join")
        line = nc.expect("login_timeout")
        assert line == "error [login_timeout]: nothing received within 0.4 seconds", line


def test_a_greeted_person_is_told_of_a_shutdown_in_text(chat_server_factory: Factory) -> None:
    """Shown the prompt, then the server stops before a nick came: its notice in text too."""
    server = chat_server_factory(greeting_delay=0.1)
    with TextClient(server.address) as nc:
        nc.expect("type a nick and press Enter to join")
        server.shutdown()
        assert nc.expect("server shutting down") == "*** server shutting down"


def test_a_json_client_never_receives_the_text_prompt(chat_server_factory: Factory) -> None:
    """A program that sends its hello at once reads only JSON, even long after the delay."""
    server = chat_server_factory(greeting_delay=0.2)
    with ChatClient(server.address) as bot:  # its every line is parsed as JSON
        bot.login("bot")
        time.sleep(0.6)  # three greeting delays: a prompt, if any were sent, is here now
        assert [f["type"] for f in bot.sync()] == ["join"]


def test_a_server_listens_on_ipv6_too(chat_server_factory: Factory) -> None:
    """host "::" listens on IPv6 (and IPv4 where the system allows both on one socket)."""
    from chatkit import Config

    config = Config()
    config.host = "::"
    server = chat_server_factory(config=config)
    with socket.create_connection(("::1", server.address[1]), timeout=5) as sock:
        sock.sendall(b'{"type":"hello","nick":"six"}\n')
        assert b'"welcome"' in sock.recv(4096)


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("chatkit-reader-")]


def test_a_readers_thread_reads_the_next_connection(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Readers run on the server's thread pool: once a client has left, its reader's
    thread, idle, reads the next one's (starting a thread costs more than a login)."""
    server = chat_server_factory()
    for i in range(5):
        client = chat_client(server, f"c{i}")
        client.send({"type": "say", "text": "/quit"})
        client.wait_closed(5)
        wait_until(lambda: not server.connections and server.readers.idle == 1)
    assert server.readers_started == 5
    assert server.readers.started == 1
    assert not _readers()  # an idle thread reads no connection, and is not named as one


def test_idle_clients_park_with_no_thread_and_wake_when_they_talk(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A client silent for idle_park holds no reader thread; its next bytes start one,
    a line cut in two by a park included, and the chat goes on as before."""
    server = chat_server_factory(idle_park=0.1, disable=["flood"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    wait_until(lambda: server.parked == 2 and not _readers())
    bob.say("to a parked alice")  # the writer sends to a parked connection as to any
    assert alice.expect("message")["text"] == "to a parked alice"
    wait_until(lambda: server.parked == 2)
    alice.send_raw(b'{"type":"say","te')
    wait_until(lambda: server.parked == 2 and server.readers_resumed >= 2)
    alice.send_raw(b'xt":"half and half"}\n')
    assert bob.expect("message", text="half and half")["nick"] == "alice"
    for i in range(20):
        alice.say(f"burst {i}")
    assert [bob.expect("message", nick="alice")["text"] for _ in range(20)] == [
        f"burst {i}" for i in range(20)
    ]
    assert server.readers_started == 2  # resumed readers are counted apart
    wait_until(lambda: server.parked == 2 and not _readers())


def test_a_reader_thread_that_cannot_start_costs_one_connection(
    chat_server_factory: Factory,
    chat_client: Connect,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When no thread can be started (the process's limit on threads, reached by a
    storm of slow TLS handshakes, each on a reader), the connection that needed one is
    closed and the acceptor goes on: a parked client that talks is logged out, later
    connections log in, and the server stops as usual."""
    server = chat_server_factory(idle_park=0.1)
    alice, parked = chat_client(server, "alice"), chat_client(server, "parked")
    wait_until(lambda: server.parked == 2)
    real = server.readers.run

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(server.readers, "run", refuse)
    with socket.create_connection(server.address, timeout=10) as newcomer:
        newcomer.sendall(b'{"type":"hello","nick":"newcomer"}\n')
        with contextlib.suppress(ConnectionResetError):
            assert newcomer.recv(100) == b""  # closed, with nothing said
    parked.say("anyone?")
    parked.wait_closed()
    assert alice.expect("leave", nick="parked")["reason"] == "server out of threads"
    assert "cannot start a reader thread" in caplog.text
    monkeypatch.setattr(server.readers, "run", real)
    bob = chat_client(server, "bob")
    bob.say("the acceptor goes on")
    assert alice.expect("message")["text"] == "the acceptor goes on"
    wait_until(lambda: len(server.connections) == 2)


def test_a_parked_connection_that_does_not_log_in_is_closed(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """finish() on a parked connection (the login timeout) sends its error, closes it and
    frees its place."""
    server = chat_server_factory(idle_park=0.05, login_timeout=0.6)
    late = chat_client(server)
    late.send_raw(b'{"type":"hel')
    wait_until(lambda: server.parked == 1)
    assert late.expect("error", timeout=5)["code"] == "login_timeout"
    late.wait_closed()
    wait_until(lambda: not server.connections and not server.parked)


def test_shutdown_closes_parked_connections(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Parked clients get the shutdown notice and are logged out; shutdown returns."""
    logouts: list[str] = []

    class Record:
        @hookimpl
        def chatkit_on_logout(self, client: Session, reason: str) -> None:
            logouts.append(reason)

    server = chat_server_factory(plugins=[Record()], idle_park=0.05)
    clients = [chat_client(server, f"user{i}") for i in range(5)]
    wait_until(lambda: server.parked == 5 and not _readers())
    server.shutdown()
    for client in clients:
        assert client.expect("notice")["text"] == "server shutting down"
        client.wait_closed()
    assert logouts == ["server shutdown"] * 5
    assert not server.connections and not _readers()


def test_a_parked_slow_consumer_is_cut_and_logged_out(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A client that never reads is parked (it never talks either); the writer's cut
    shuts its socket down, which brings a reader back to log it out."""
    server = chat_server_factory(
        idle_park=0.05, max_sendq=64 * 1024, slow_timeout=0.3, disable=["flood"]
    )
    slow = ChatClient(server.address)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.login("slow")  # and never reads again
    alice = chat_client(server, "alice", timeout=10)
    wait_until(lambda: server.parked == 2)
    payload = "x" * 2000
    i = 0
    leave = None
    while leave is None:  # bursts of 20 until the slow client's leave shows up
        assert i < 20_000, "the slow client was never cut"
        for _ in range(20):
            alice.say(f"{i} {payload}")
            i += 1
        leave = next((f for f in alice.sync() if f["type"] == "leave"), None)
    assert (leave["nick"], leave["reason"]) == ("slow", "send queue exceeded")
    wait_until(lambda: len(server.connections) == 1)
    slow.close()


def test_a_huge_idle_park_means_never(chat_server_factory: Factory, chat_client: Connect) -> None:
    """idle_park beyond what poll() takes (about 24.8 days) is no error: readers wait on."""
    server = chat_server_factory(idle_park=1e12)
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.say("hello")
    assert bob.expect("message", nick="alice")["text"] == "hello"
    bob.say("hi")
    assert alice.expect("message", nick="bob")["text"] == "hi"
    assert server.parked == 0 and server.readers_resumed == 0


def test_lines_sent_before_a_client_closes_are_all_acted_on(
    chat_server_factory: Callable[..., Server], chat_client: Callable[..., ChatClient]
) -> None:
    """A script that writes its lines and closes at once (``printf 'bot\\nhi\\n' | nc
    -q0``): the server's sends to it fail (it reset the connection) while its lines
    wait to be read, and every one of them is still acted on."""
    server = chat_server_factory()
    watch = chat_client(server, "watch")
    for i in range(30):  # a replay at each login: more to send to a client that is gone
        watch.say(f"earlier {i}")
    watch.sync()
    for i in range(40):
        with socket.create_connection(server.address) as sock:
            sock.sendall(f"bot{i}\nhello {i}\n".encode())
        watch.expect("message", nick=f"bot{i}", text=f"hello {i}")
    # A last line without its newline (printf '%s', echo -n) is a line too.
    with socket.create_connection(server.address) as sock:
        sock.sendall(b"scripty\nline one\nlast, no newline")
    watch.expect("message", nick="scripty", text="line one")
    watch.expect("message", nick="scripty", text="last, no newline")


def test_a_reset_connection_s_last_line_is_acted_on(
    chat_server_factory: Callable[..., Server], chat_client: Callable[..., ChatClient]
) -> None:
    """A client that resets its connection (an abortive close: RST, not FIN) right after
    its lines: what arrived is acted on, its last line without a newline too, as at an
    end of input (the server's recv() reports the reset after the data)."""
    server = chat_server_factory()
    watch = chat_client(server, "watch")
    sock = socket.create_connection(server.address)
    sock.sendall(b"resetty\nline one\nlast, no newline")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    watch.expect("message", nick="resetty", text="line one")
    watch.expect("message", nick="resetty", text="last, no newline")


def test_a_full_refusal_table_tells_each_count_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the table of refusing addresses is full it is emptied, each count logged
    first, once: the host being logged is not told twice, and no count goes untold."""
    monkeypatch.setattr(server_module, "CONNECT_BUCKETS", 2)
    monkeypatch.setattr(server_module, "REFUSAL_LOG_INTERVAL", 10.0)
    server = Server(plugins=[])
    server._log_refusal("a", 1, "why", 100.0)
    server._log_refusal("a", 2, "why", 101.0)  # counted
    server._log_refusal("b", 1, "why", 102.0)
    server._log_refusal("a", 3, "why", 111.0)  # a's count told; the table was full
    more = [r.getMessage() for r in caplog.records if "more connection" in r.getMessage()]
    assert more == ["refused 1 more connection(s) from a since the last line"]
    assert server._untold == 0


def _fill(server: Server, count: int) -> None:
    """Say enough in the default room that ``count`` members not reading have a queue."""
    fill_queues(server.address)
    wait_until(lambda: sum(bool(c.queued_bytes) for c in server.connections) >= count, 10, "queues")


def test_at_most_max_lingering_ended_connections_linger(chat_server_factory: Factory) -> None:
    """Connections the server ended whose clients are still owed bytes stay open for
    them (``linger``), ``max_lingering`` at once: past it, one is closed at once."""
    server = chat_server_factory(
        disable=["flood"], max_sendq=10_000_000, linger=60.0, max_lingering=1
    )
    socks = [not_reading(server.address, nick) for nick in ("ann", "ben")]
    wait_until(lambda: sum(c.session.logged_in for c in server.connections) == 2)
    conns = server.connections
    _fill(server, 2)
    for conn in conns:
        conn.finish("test")
    wait_until(lambda: sum(c.sock.fileno() == -1 for c in conns) == 1, 10, "one closed")
    assert server.writer.lingering == server.stats()["lingering"] == 1  # the other (60 s)
    for sock in socks:
        sock.close()


def test_an_ended_connection_lingers_at_most_linger(chat_server_factory: Factory) -> None:
    """A client that never takes what it is owed has its ended connection closed
    after ``linger`` seconds (here 0.2: well before the default 2 s)."""
    server = chat_server_factory(disable=["flood"], max_sendq=10_000_000, linger=0.2)
    sock = not_reading(server.address, "ann")
    wait_until(lambda: any(c.session.logged_in for c in server.connections))
    (conn,) = server.connections
    _fill(server, 1)
    conn.finish("test")
    wait_until(lambda: server.writer.lingering == 1 or conn.sock.fileno() == -1, 1, "a linger")
    wait_until(lambda: conn.sock.fileno() == -1, 1.5, "the close at linger")
    sock.close()


def test_the_shutdown_waits_shutdown_grace_for_clients_not_reading(
    chat_server_factory: Factory,
) -> None:
    """The shutdown gives a client that does not read ``shutdown_grace`` seconds to take
    what it is owed, then closes its connection (here 0.2: well before the default)."""
    server = chat_server_factory(disable=["flood"], max_sendq=10_000_000, shutdown_grace=0.2)
    sock = not_reading(server.address, "ann")
    wait_until(lambda: any(c.session.logged_in for c in server.connections))
    _fill(server, 1)
    stopper = threading.Thread(target=server.shutdown)
    stopper.start()
    stopper.join(1.2)  # (a deadline: the default grace would take 1.5 s, twice)
    assert not stopper.is_alive()
    sock.close()


def test_a_lingering_connection_is_not_cut_by_a_late_abort(chat_server_factory: Factory) -> None:
    """Once retired (its reader done, lingering for its client), a connection is the
    writer's alone: a finish or an abort from another thread (a kill, a slow-consumer
    cut, the watchdog) does nothing to it, and its client, reading at last, gets all it
    was owed (an abort shut it down both ways: a reset, the rest lost)."""
    server = chat_server_factory(disable=["flood"], max_sendq=10_000_000, linger=60.0)
    sock = not_reading(server.address, "ann")
    wait_until(lambda: any(c.session.logged_in for c in server.connections))
    (conn,) = server.connections
    _fill(server, 1)
    conn.finish("test")
    wait_until(lambda: server.writer.lingering == 1, 10, "a linger")
    conn.abort("late")
    conn.finish("later")
    received = b""
    sock.settimeout(10)
    while chunk := sock.recv(65536):  # ConnectionResetError if reset
        received += chunk
    sock.close()
    said = [json.loads(line) for line in received.splitlines()]
    assert [f["text"][:4] for f in said if f["type"] == "message"] == [
        f"{i:04}" for i in range(1500)
    ]
