"""A load generator for chat servers: chatkit's JSON protocol, the baseline's text one, or IRC.

IRC (``protocol="irc"``) is spoken the same way to chatkit's IRC face and to ngIRCd:
``NICK``/``USER`` to register, ``JOIN #bench``, ``PRIVMSG #bench :text`` to send; a
client answers the server's ``PING`` lines. A sender gets no copy of its own message
(no ``echo-message``), so a message is expected by every member but its sender.

It runs in its own process (asyncio; uvloop if installed), apart from the server it
measures. Receivers only count the messages' MARK bytes, at C speed; a few probe clients parse their
lines to measure latency from the send time carried in each message's text.

During a fan-out, the receivers that are not probes are read by a :class:`Drain`
instead of their event-loop transport: every ``DRAIN_TICK`` it reads each socket that
has data in one ``recv``, whatever has arrived since. So the generator's cost per
delivery does not depend on how a server cuts its output into TCP segments (ngIRCd
sends a segment per line, which an event loop would hand over one ``data_received``
call per line and per client): a server is never measured at the generator's limit.
The probes still read as soon as bytes arrive, so latency is the server's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import select
import selectors
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PAYLOAD = 64  # bytes of text per message
PROBES = 3  # clients that parse lines to measure latency
# A message's text: its send time and sender, then MARK, then padding. Deliveries are
# counted by MARK, a byte no other line the servers send holds (not a nick, a prefix
# or a frame's field), so a join, a leave or a PING is never counted as one; a stamp
# is read only whole (the classroom baseline puts its "nick: " before each read it
# relays, which can fall inside a line and cut a stamp).
MARK = b"^"
STAMP = re.compile(rb"t=(\d+) s=\d+ \^")
MAX_STEP_SECONDS = 120.0  # seconds a step may be stretched by its keep_going callback
STORM_CONNECT_SECONDS = 60.0  # seconds the storm waits for its connections to be established
IRC_ROOM = "#bench"  # the channel every IRC client joins
DRAIN_TICK = 0.005  # seconds between a Drain's rounds of reads
DRAIN_SOCKETS = 250  # sockets a Drain reads every DRAIN_TICK; more stretch its rounds
DRAIN_BYTES = 1 << 20  # the most one recv of a Drain takes


@dataclass
class Step:
    """One measured step of a fan-out run."""

    rate: int
    """Messages per second asked of all senders together."""
    sent: int = 0
    received: int = 0
    expected: int = 0
    seconds: float = 0.0
    deliveries_per_s: float = 0.0
    complete: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    dropped: int = 0
    short: int = 0
    """Receivers (not dropped) that got fewer messages than were sent to them."""
    extra: int = 0
    """Receivers that got more (a message delivered twice)."""
    generator_cpu: float = 0.0
    generator_saturated: bool = False
    server_sends: int | None = None
    server_deliveries: int | None = None

    @property
    def ok(self) -> bool:
        """Counts toward capacity: p99 ≤ 1 s, every receiver got every message sent to it
        (once), nobody dropped, generator not saturated."""
        return (
            self.p99_ms <= 1000
            and self.short == 0
            and self.extra == 0
            and self.dropped == 0
            and not self.generator_saturated
        )


class Client(asyncio.Protocol):
    """One connection: counts the messages it receives; probes also time them."""

    def __init__(self, probe: bool, on_lost: Callable[[], None], irc: bool = False) -> None:
        self.probe = probe
        self.irc = irc
        self.marks = 0  # messages received (MARK bytes)
        self.latencies: list[float] = []
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.buffer = b""
        self.partial = b""
        self.waiters: list[tuple[bytes, asyncio.Future[None]]] = []
        self._on_lost = on_lost
        self.sock: Any = None  # a probe's socket (TCP_QUICKACK after each read)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        if self.probe:
            self.sock = transport.get_extra_info("socket")

    def data_received(self, data: bytes) -> None:
        self.marks += data.count(MARK)
        if self.irc and b"PING " in data:
            for line in data.split(b"\n"):
                if line.startswith(b"PING "):
                    self.write(b"PONG " + line[5:].rstrip(b"\r") + b"\r\n")
        if self.waiters:
            self.buffer += data
            for marker, future in list(self.waiters):
                if marker in self.buffer and not future.done():
                    future.set_result(None)
                    self.waiters.remove((marker, future))
            if not self.waiters:
                self.buffer = b""
        if self.probe:
            now = time.monotonic_ns()
            if self.sock is not None:
                # A client that acks quickly: no delayed ACK holds back a server that
                # leaves Nagle's algorithm on (ngIRCd). Linux clears it after a while.
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            # Only whole lines: a stamp split across two reads must not be misread. One
            # search of the whole lines (a line holds one stamp at most), at C speed.
            data = self.partial + data
            end = data.rfind(b"\n") + 1
            self.partial = data[end:]
            self.latencies += [(now - int(stamp)) / 1e6 for stamp in STAMP.findall(data, 0, end)]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return  # a Drain saw the end first; its transport now reports it too
        self.closed = True
        self._on_lost()
        for _, future in self.waiters:
            if not future.done():
                future.set_exception(ConnectionError("closed"))

    def pong(self, data: bytes) -> None:
        """Answer the IRC ``PING`` lines in ``data`` (lines read by a :class:`Drain`)."""
        for line in data.split(b"\n"):
            if line.startswith(b"PING "):
                self.write(b"PONG " + line[5:].rstrip(b"\r") + b"\r\n")

    def wait_for(self, marker: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append((marker, future))
        return future

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.closed:  # a sender the server cut off counts as dropped, not as a crash
            self.transport.write(data)


class Drain:
    """Reads the receivers that only count messages, in rounds, instead of their transports.

    Each client's transport stops reading (``pause_reading``); the drain reads a
    duplicate of its socket's descriptor (the same socket) with ``recv`` where epoll
    says there is data, every ``DRAIN_TICK`` seconds, counting messages at C speed.
    A recv that returns nothing, or fails, is the server closing the connection.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()  # Linux, where the benchmarks run
        self._socks: dict[int, tuple[socket.socket, Client]] = {}
        self._buffer = bytearray(DRAIN_BYTES)
        self._task: asyncio.Task[None] | None = None

    @property
    def tick(self) -> float:
        """Seconds between rounds: ``DRAIN_TICK`` per ``DRAIN_SOCKETS`` sockets, so a round
        of a thousand recv calls does not come five times as often as one of a hundred."""
        return DRAIN_TICK * max(1.0, len(self._socks) / DRAIN_SOCKETS)

    def add(self, client: Client) -> None:
        assert client.transport is not None
        client.transport.pause_reading()
        fd = client.transport.get_extra_info("socket").fileno()
        sock = socket.socket(fileno=os.dup(fd))
        sock.setblocking(False)
        self._socks[sock.fileno()] = (sock, client)
        self._epoll.register(sock.fileno(), select.EPOLLIN)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self.read()
            await asyncio.sleep(self.tick)

    def read(self) -> None:
        """One round: one recv for each socket that has something to read."""
        buffer = self._buffer
        view = memoryview(buffer)
        for fd, _events in self._epoll.poll(0):
            sock, client = self._socks[fd]
            try:
                n = sock.recv_into(view)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if not n:
                self._forget(fd)
                if not client.closed:
                    client.connection_lost(None)
                continue
            client.marks += buffer.count(MARK, 0, n)
            if client.irc and buffer.find(b"PING ", 0, n) >= 0:
                client.pong(bytes(view[:n]))

    def _forget(self, fd: int) -> None:
        sock, _client = self._socks.pop(fd)
        self._epoll.unregister(fd)
        sock.close()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for fd in list(self._socks):
            self._forget(fd)
        self._epoll.close()


class Load:
    """Connections to one server, speaking ``protocol`` ("json" for chatkit, "text" for the
    baseline, "irc" for chatkit's IRC face and ngIRCd).

    ``stats_port``: where chatkit's JSON protocol answers ``/stats`` (the port itself
    for "json"; ``None``: no server counters).
    """

    def __init__(
        self,
        host: str,
        port: int,
        protocol: str,
        payload: int = PAYLOAD,
        stats_port: int | None = None,
        ports: Sequence[int] = (),
    ) -> None:
        self.host, self.port, self.protocol = host, port, protocol
        self.ports = list(ports) or [port]
        """Where clients connect, in turn (several nodes of a cluster)."""
        self.connects = 0
        self.payload = payload
        self.stats_port = port if protocol == "json" else stats_port
        self.clients: list[Client] = []
        self.lost = 0
        self.stats_calls = 0
        self.drain: Drain | None = None

    def drain_receivers(self) -> None:
        """Have a :class:`Drain` read every client that is not a probe (see the module's
        docstring); their transports go on sending."""
        self.drain = Drain()
        for client in self.clients:
            if not client.probe:
                self.drain.add(client)
        self.drain.start()

    def _lost(self) -> None:
        self.lost += 1

    async def connect(self, nick: str, probe: bool = False, rcvbuf: int | None = None) -> Client:
        loop = asyncio.get_running_loop()
        port = self.ports[self.connects % len(self.ports)]
        self.connects += 1
        transport, client = await loop.create_connection(
            lambda: Client(probe, self._lost, irc=self.protocol == "irc"), self.host, port
        )
        client.transport = transport  # uvloop may call connection_made later
        if rcvbuf:
            transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf
            )
        if self.protocol == "json":
            waiter = client.wait_for(b'"welcome"')
            client.write(json.dumps({"type": "hello", "nick": nick}).encode() + b"\n")
        elif self.protocol == "irc":
            # Registered and in the channel: the end of its names list.
            waiter = client.wait_for(f" 366 {nick} {IRC_ROOM} ".encode())
            client.write(irc_login(nick) + f"JOIN {IRC_ROOM}\r\n".encode())
        else:
            waiter = client.wait_for(f"{nick} joined".encode())
            client.write(nick.encode() + b"\n")
        # IRC: every join goes to every member, so the last of C=1,000 joins waits for
        # its share of C²/2 JOIN lines on a loaded machine; setup is not measured.
        await asyncio.wait_for(waiter, 120 if self.protocol == "irc" else 30)
        return client

    async def connect_many(self, count: int, prefix: str, probes: int = 0) -> list[Client]:
        # Stay under the server's accept backlog: ngIRCd listens with a backlog of 10, and
        # a connection beyond it may be reset (C=1,000 setups failed now and then).
        semaphore = asyncio.Semaphore(10 if self.protocol == "irc" else 100)

        async def one(i: int) -> Client:
            async with semaphore:
                return await self.connect(f"{prefix}{i}", probe=i >= count - probes)

        clients = await asyncio.gather(*(one(i) for i in range(count)))
        self.clients.extend(clients)
        return list(clients)

    def message(self, sender: int) -> bytes:
        stamp = f"t={time.monotonic_ns()} s={sender} ^"
        text = stamp + "x" * max(0, self.payload - len(stamp))
        if self.protocol == "json":
            return b'{"type":"say","text":"' + text.encode() + b'"}\n'
        if self.protocol == "irc":
            return f"PRIVMSG {IRC_ROOM} :{text}\r\n".encode()
        return text.encode() + b"\n"

    @property
    def echo(self) -> bool:
        """Whether a sender receives its own message (not on IRC: no echo-message)."""
        return self.protocol != "irc"

    async def stats(self) -> dict[str, Any] | None:
        """The server's /stats counters (chatkit with the stats plugin), else None."""
        if self.stats_port is None:
            return None
        reader, writer = await asyncio.open_connection(self.host, self.stats_port)
        self.stats_calls += 1
        writer.write(b'{"type":"hello","nick":"stats%d"}\n' % self.stats_calls)
        writer.write(b'{"type":"say","text":"/stats"}\n')
        await writer.drain()
        try:
            while True:
                line = await asyncio.wait_for(reader.readline(), 10)
                if not line:
                    return None
                frame = json.loads(line)
                if frame.get("type") == "reply" and frame.get("command") == "stats":
                    data: dict[str, Any] = frame["data"]
                    return data
                if frame.get("type") == "error" and frame.get("code") == "unknown_command":
                    return None
        finally:
            writer.close()

    def received(self) -> int:
        """Messages received by every client so far."""
        return sum(c.marks for c in self.clients)

    def close(self) -> None:
        if self.drain is not None:
            self.drain.close()
        for c in self.clients:
            if c.transport is not None:
                c.transport.close()


def irc_login(nick: str) -> bytes:
    """The lines that register ``nick`` on an IRC server."""
    return f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode()


async def run_step(
    load: Load,
    senders: list[Client],
    rate: int,
    seconds: float,
    keep_going: Callable[[], bool] | None = None,
) -> Step:
    """Send ``rate`` messages/s for ``seconds``, then wait for every delivery (or a stall).

    With ``keep_going``, sending goes on past ``seconds`` while it returns True
    (for ``MAX_STEP_SECONDS`` at most).
    """
    step = Step(rate)
    receivers = [c for c in load.clients if not c.closed]
    marks0 = {id(c): c.marks for c in receivers}
    by_sender = [0] * len(senders)  # messages each sender sent
    for c in load.clients:
        c.latencies.clear()
    before_stats = await load.stats()
    received0 = load.received()
    lost0 = load.lost
    cpu0 = time.process_time()
    start = time.monotonic()
    tick = 0.001  # 1 ms: senders pace their lines instead of writing them in bursts
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds and not (keep_going and keep_going()):
            break
        if elapsed >= MAX_STEP_SECONDS:
            break
        due = int(rate * (elapsed + tick if keep_going else min(elapsed + tick, seconds)))
        due -= step.sent
        # Each sender writes its lines of a tick at once: one send() each, not one per
        # line (at 48,000 msg/s that was 48 sends a millisecond, a third of the generator).
        batches: dict[int, list[bytes]] = {}
        for _ in range(due):
            sender = step.sent % len(senders)
            batches.setdefault(sender, []).append(load.message(sender))
            by_sender[sender] += 1
            step.sent += 1
        for sender, lines in batches.items():
            senders[sender].write(b"".join(lines))
        await asyncio.sleep(tick)
    # What each receiver should get: every message, but its own over IRC (no echo).
    own = {id(c): by_sender[i] for i, c in enumerate(senders)} if not load.echo else {}
    expects = {id(c): step.sent - own.get(id(c), 0) for c in receivers}
    step.expected = sum(expects.values())
    # Wait for the backlog: until everything arrived, or nothing arrives for 2 s.
    last_count, last_change = load.received(), time.monotonic()
    while load.received() - received0 < step.expected:
        await asyncio.sleep(0.01)
        count = load.received()
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > 2:
            break
    end = last_change if load.received() - received0 < step.expected else time.monotonic()
    wall = end - start
    step.seconds = round(wall, 3)
    step.received = load.received() - received0
    step.complete = round(step.received / step.expected, 4) if step.expected else 0.0
    step.deliveries_per_s = round(step.received / wall) if wall > 0 else 0.0
    step.dropped = load.lost - lost0
    for c in receivers:
        got = c.marks - marks0[id(c)]
        if got < expects[id(c)] and not c.closed:
            step.short += 1
        elif got > expects[id(c)]:
            step.extra += 1
    step.generator_cpu = round((time.process_time() - cpu0) / wall, 3) if wall > 0 else 0.0
    step.generator_saturated = step.generator_cpu > 0.9
    latencies = sorted(x for c in load.clients if c.probe for x in c.latencies)
    if latencies:
        step.p50_ms = round(statistics.median(latencies), 3)
        step.p99_ms = round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3)
        step.max_ms = round(latencies[-1], 3)
    after_stats = await load.stats()
    if before_stats and after_stats:
        step.server_sends = after_stats["sends"] - before_stats["sends"]
        step.server_deliveries = after_stats["deliveries"] - before_stats["deliveries"]
    return step


@dataclass
class FanOut:
    """The result of a fan-out run: every step and the capacity."""

    clients: int
    senders: int
    slow_consumer: bool
    steps: list[Step] = field(default_factory=list)

    @property
    def capacity(self) -> float:
        """Deliveries per second of the best step that counts (see :attr:`Step.ok`)."""
        return max((s.deliveries_per_s for s in self.steps if s.ok), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "senders": self.senders,
            "slow_consumer": self.slow_consumer,
            "capacity": self.capacity,
            "steps": [{**asdict(s), "ok": s.ok} for s in self.steps],
        }


async def fan_out(
    host: str,
    port: int,
    protocol: str,
    clients: int,
    senders: int = 10,
    rates: tuple[int, ...] = (1000, 2000, 4000, 8000, 16000, 32000),
    seconds: float = 3.0,
    slow_consumer: bool = False,
    deadline: float | None = None,
    payload: int = PAYLOAD,
    stats_port: int | None = None,
    ports: Sequence[int] = (),
) -> FanOut:
    """C clients in one room, S of them sending at each rate in turn until the server fails.

    With ``slow_consumer``, one more client joins that never reads. With ``ports``
    (the nodes of a cluster), clients connect to each in turn: members and senders
    spread evenly.
    """
    load = Load(host, port, protocol, payload, stats_port, ports)
    result = FanOut(clients, senders, slow_consumer)
    try:
        members = await load.connect_many(clients, "c", probes=PROBES)
        if slow_consumer:
            slow = await load.connect("slowpoke", rcvbuf=4096)
            slow.transport.pause_reading()  # type: ignore[union-attr]  # it never reads again
        load.drain_receivers()
        for rate in rates:
            if deadline and time.monotonic() > deadline:
                break
            step = await run_step(load, members[:senders], rate, seconds)
            if slow_consumer:
                step.dropped = max(
                    0, step.dropped - 1
                )  # the slow one may be cut: that is the point
            result.steps.append(step)
            if not step.ok:
                break
    finally:
        load.close()
    return result


async def churn(host: str, port: int, protocol: str, workers: int, seconds: float) -> float:
    """Connect, log in and quit in a loop with ``workers`` at once; return cycles per second."""
    cycles = 0
    stop = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal cycles
        n = 0
        while time.monotonic() < stop:
            nick = f"w{w}x{n}"
            n += 1
            reader, writer = await asyncio.open_connection(host, port)
            if protocol == "json":
                writer.write(b'{"type":"hello","nick":"%s"}\n' % nick.encode())
                while b'"welcome"' not in await reader.readline():
                    pass
                writer.write(b'{"type":"say","text":"/quit"}\n')
            elif protocol == "irc":
                writer.write(irc_login(nick))
                while True:
                    line = await asyncio.wait_for(reader.readline(), 30)
                    if not line:
                        raise ConnectionError(f"{nick}: closed before 001")
                    if b" 001 " in line:
                        break
                writer.write(b"QUIT\r\n")
            else:
                writer.write(nick.encode() + b"\n")
                while f"{nick} joined".encode() not in await reader.readline():
                    pass
            writer.close()
            await writer.wait_closed()
            cycles += 1

    start = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    return cycles / (time.monotonic() - start)


def storm(host: str, port: int, count: int, hold: float) -> dict[str, Any]:
    """Open ``count`` connections at once, keep them silent ``hold`` seconds, close them.

    Runs in a process of its own (``python -m benchmarks.loadgen storm ...``), so that
    creating thousands of sockets does not delay the chatters' event loop.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    start = time.monotonic()
    selector = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex((host, port))
        socks.append(sock)
        selector.register(sock, selectors.EVENT_WRITE)
    connected = 0
    waiting = count
    deadline = start + STORM_CONNECT_SECONDS
    while waiting and time.monotonic() < deadline:
        for key, _mask in selector.select(max(0.0, deadline - time.monotonic())):
            selector.unregister(key.fileobj)
            waiting -= 1
            sock = key.fileobj  # type: ignore[assignment]
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                connected += 1
    opened = time.monotonic() - start
    time.sleep(hold)
    # Connections the server closed meanwhile (a first-byte timeout, max_pending) have
    # something to read: an error frame, EOF, or a reset.
    closed_by_server = 0
    for sock in socks:
        try:
            sock.recv(4096, socket.MSG_PEEK)
            closed_by_server += 1
        except BlockingIOError:
            pass
        except OSError:
            closed_by_server += 1
    for sock in socks:
        sock.close()
    selector.close()
    return {
        "count": count,
        "connected": connected,
        "open_seconds": round(opened, 3),
        "hold_seconds": hold,
        "closed_by_server": closed_by_server,
    }


async def storm_chat(
    host: str,
    port: int,
    protocol: str,
    chatters: int,
    rate: int,
    count: int,
    hold: float,
    calm_seconds: float,
    tail_seconds: float,
) -> dict[str, Any]:
    """Chatters' latency while ``count`` connections are opened at once (then closed).

    ``chatters`` clients in one room, 5 of them sending ``rate`` messages/s in all:
    first ``calm_seconds`` without a storm, then for as long as the storm lasts
    (see :func:`storm`) and ``tail_seconds`` more, while the server closes them.
    """
    load = Load(host, port, protocol)
    try:
        members = await load.connect_many(chatters, "c", probes=PROBES)
        senders = members[:5]
        calm = await run_step(load, senders, rate, calm_seconds)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.loadgen", "storm", host, str(port), str(count),
            str(hold), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        done_at: list[float] = []

        async def reap() -> bytes:
            out, _ = await proc.communicate()
            done_at.append(time.monotonic())
            return out

        reaper = asyncio.ensure_future(reap())
        during = await run_step(
            load, senders, rate, tail_seconds,
            keep_going=lambda: not done_at or time.monotonic() < done_at[0] + tail_seconds,
        )  # fmt: skip
        out = await reaper
        stormed = json.loads(out) if out.strip() else {}
        return {
            "chatters": chatters,
            "rate": rate,
            "calm": asdict(calm),
            "storm": {**asdict(during), "ok": during.ok},
            "storm_connections": stormed,
        }
    finally:
        load.close()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "storm":
        result = storm(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
        print(json.dumps(result))
    else:
        print("usage: python -m benchmarks.loadgen storm HOST PORT COUNT HOLD", file=sys.stderr)
        raise SystemExit(2)
