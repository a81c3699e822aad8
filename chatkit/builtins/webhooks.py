"""Bots over HTTP: POST chat events to URLs, and let HTTP clients post messages.

Off by default: ``plugins = ["webhooks"]`` and a ``[plugins.webhooks]`` table
(docs/operations.md, "Bots over HTTP"):

* **Outgoing** (``[[plugins.webhooks.outgoing]]``, any number): each room
  ``message``, ``join`` and ``leave`` (private messages never) matching the hook's
  ``events`` and ``rooms`` is POSTed to its ``url`` as JSON, signed with HMAC-SHA256
  of the body under its ``secret`` (``X-Chatkit-Signature: sha256=HEX``). Each URL has
  a worker thread and a queue of at most ``max_queue`` events (the oldest is dropped,
  and logged, beyond it), so a hook only appends: a slow or dead URL never delays a
  reader. Failures (no connection, a timeout, HTTP 429 or 5xx) are retried
  ``retries`` times with delays doubling from ``backoff`` seconds; other answers are
  final. Events reach one URL in order.
* **Incoming** (``[plugins.webhooks.incoming]`` with ``port``, ``host`` and
  ``tokens``: a table of nick = token): ``POST /rooms/NAME/messages`` with
  ``Authorization: Bearer TOKEN`` and a JSON body ``{"text": "..."}`` (or plain text)
  posts the text to ``#NAME`` as the token's nick. The plugin speaks to its own
  server as a client (one connection per nick, kept open, over the line face on the
  loopback address), so the message passes every filter, limit and hook a person's
  would, and the bot shows in ``/who`` once it has posted to a room.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import http.client
import http.server
import json
import logging
import math
import queue
import socket
import ssl
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
import uuid
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatkit import (
    ChatkitError,
    Client,
    Config,
    Message,
    Reject,
    Session,
    UsageError,
    __version__,
    address_key,
    check_settings,
    hookimpl,
    number_setting,
    room_name,
    skeleton,
    valid_room,
)
from chatkit.builtins.accounts import Throttle
from chatkit.builtins.http_server import MAX_CONNECTIONS, REQUEST_TIMEOUT, SHUTDOWN_POLL, Bounded

if TYPE_CHECKING:
    from chatkit import Server

log = logging.getLogger(__name__)

# The hooks a reload left delivering their queues (Hook.drain), by server: its shutdown
# stops them too (nobody else holds them). Any thread; guarded by _DRAINING_LOCK.
_DRAINING: weakref.WeakKeyDictionary[Any, list[Hook]] = weakref.WeakKeyDictionary()
_DRAINING_LOCK = threading.Lock()

EVENTS = ("message", "join", "leave")
RETRIES = 5  # attempts after the first
BACKOFF = 1.0  # seconds before the first retry; doubles each time
TIMEOUT = 10.0  # seconds a POST may take
MAX_QUEUE = 1000  # events waiting per URL
MAX_BODY = 64 * 1024  # bytes of an incoming request's body
MAX_ANSWER = 64 * 1024  # bytes of a receiver's answer read (and dropped): one answering a
# body of gigabytes, fast enough for the timeout, would have them all read into memory
TOKEN_FREE_FAILURES = 5  # wrong tokens from an address before each makes it wait (free_failures)
TOKEN_DELAY = 1.0  # seconds of the first wait; doubles with each wrong token after (delay)
TOKEN_MAX_DELAY = 300.0  # ...up to this (max_delay)

# HTTP status for the chat's refusals of an incoming post (others: 400).
_STATUS = {
    "rate_limited": 429,
    "auth_throttled": 429,
    "nick_taken": 409,
    "nick_registered": 409,
    "banned": 403,
    "muted": 403,
    "not_allowed": 403,
}


def signature(secret: str, body: bytes) -> str:
    """The ``X-Chatkit-Signature`` of ``body``: ``sha256=`` and the HMAC's hex digest."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Hook:
    """One outgoing webhook: where, what, and its queue."""

    url: str
    events: frozenset[str]
    rooms: frozenset[str] | None  # folded names; None: every room
    secret: str | None
    retries: int = RETRIES
    backoff: float = BACKOFF
    timeout: float = TIMEOUT
    max_queue: int = MAX_QUEUE
    # The queue and the stopping and draining flags, guarded by `ready`'s lock: hooks
    # append on readers' threads, the worker takes from the front.
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    ready: threading.Condition = field(default_factory=threading.Condition)
    stopping: bool = False
    draining: bool = False
    dropped: int = 0
    delivered: int = 0
    failed: int = 0
    thread: threading.Thread | None = None

    def wants(self, event: str, room: str) -> bool:
        return event in self.events and (self.rooms is None or room.casefold() in self.rooms)

    def put(self, payload: dict[str, Any]) -> None:
        """Queue ``payload`` (never blocks); beyond ``max_queue`` the oldest goes."""
        with self.ready:
            if len(self.queue) >= self.max_queue:
                self.queue.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning(
                        "webhook %s: queue full, %d event(s) dropped", self.url, self.dropped
                    )
            self.queue.append(payload)
            self.ready.notify()

    def run(self) -> None:
        """The worker thread: deliver the queue in order until stopped, or, once told
        to drain, until it is empty."""
        while True:
            with self.ready:
                while not self.queue and not self.stopping and not self.draining:
                    self.ready.wait()
                if self.stopping or not self.queue:
                    return
                payload = self.queue.popleft()
            self._deliver(payload)

    def drain(self) -> None:
        """End once what is queued is delivered (or given up), without waiting for it:
        a reload's, whose new hooks take the events from now on."""
        with self.ready:
            self.draining = True
            self.ready.notify_all()

    def stop(self) -> None:
        with self.ready:
            self.stopping = True
            self.ready.notify_all()
        if self.thread is not None:
            self.thread.join(timeout=self.timeout + 1)

    def _wait(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped meanwhile; False if stopped."""
        with self.ready:
            self.ready.wait_for(lambda: self.stopping, seconds)
            return not self.stopping

    def _deliver(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"chatkit/{__version__}",
            "X-Chatkit-Event": str(payload["event"]),
            "X-Chatkit-Delivery": str(uuid.uuid4()),
        }
        if self.secret:
            headers["X-Chatkit-Signature"] = signature(self.secret, body)
        delay = self.backoff
        for attempt in range(self.retries + 1):
            if attempt and not self._wait(delay):
                return
            if attempt:
                delay *= 2
            request = urllib.request.Request(self.url, body, headers, method="POST")
            # The socket's timeout bounds each read; the deadline bounds the whole POST
            # (a receiver answering a byte a second would pass every read's timeout).
            sockets = _Sockets()
            deadline = threading.Timer(self.timeout, sockets.shut)
            deadline.daemon = True
            deadline.start()
            try:
                with sockets.opener.open(request, timeout=self.timeout) as response:
                    response.read(MAX_ANSWER)  # (the rest is never read: closed unread)
                self.delivered += 1
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 429 and exc.code < 500:
                    # (a redirect too: the URL is to be fixed in the config, not followed)
                    log.warning("webhook %s refused an event: HTTP %d", self.url, exc.code)
                    self.failed += 1
                    return
                problem = f"HTTP {exc.code}"
            except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
                problem = str(getattr(exc, "reason", exc))
                if sockets.shut_down:
                    problem = f"no answer within {self.timeout:g} s"
            finally:
                deadline.cancel()
            log.info(
                "webhook %s: %s (attempt %d of %d)",
                self.url,
                problem,
                attempt + 1,
                self.retries + 1,
            )
        log.warning("webhook %s: gave up on an event after %d attempts", self.url, self.retries + 1)
        self.failed += 1


def _hook(index: int, table: Any) -> Hook:
    where = f"webhooks: outgoing[{index}]"
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table")
    check_settings(
        "webhooks", table, ["url", "events", "rooms", "secret", "retries", "backoff", "timeout"]
    )
    url = table.get("url")
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"{where} url must be an http:// or https:// URL, not {url!r}")
    events = table.get("events", list(EVENTS))
    if not isinstance(events, list) or not set(events) <= set(EVENTS) or not events:
        raise UsageError(f"{where} events must be a list of {', '.join(EVENTS)}, not {events!r}")
    rooms = table.get("rooms")
    if rooms is not None and (
        not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms)
    ):
        raise UsageError(f"{where} rooms must be a list of room names, not {rooms!r}")
    secret = table.get("secret")
    if secret is not None and not isinstance(secret, str):
        raise UsageError(f"{where} secret must be a string")
    return Hook(
        url=url,
        events=frozenset(events),
        rooms=None if rooms is None else frozenset(r.casefold() for r in rooms),
        secret=secret,
        retries=int(number_setting("webhooks", table, "retries", RETRIES, 0)),
        backoff=number_setting("webhooks", table, "backoff", BACKOFF, 0),
        timeout=number_setting("webhooks", table, "timeout", TIMEOUT, 0.1),
    )


class Webhooks:
    """Outgoing hooks' workers, and the incoming endpoint."""

    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        self.tokens: dict[str, str] = {}  # token -> nick
        self.guesses = Throttle(TOKEN_FREE_FAILURES, TOKEN_DELAY, TOKEN_MAX_DELAY)
        """Wrong tokens per client address: after a few, each makes it wait (429)."""
        self.incoming: tuple[str, int] | None = None
        """Where the incoming endpoint listens (``host``, ``port``), once started."""
        self._httpd: _HttpServer | None = None
        self._serving = False  # serve_forever started: shutdown() waits for it to end
        self._server: Server | None = None
        self._bots: dict[str, _Bot] = {}
        self._bots_lock = threading.Lock()  # guards _bots (HTTP handler threads)
        self._reserved: dict[str, str] = {}
        """The tokens' nicks by skeleton: nobody else may take them, or one like them."""
        self._own: set[tuple[str, int]] = set()
        """The bots' connections' local addresses: the sessions that may take them
        (added before a bot's ``hello``, removed when it closes; a set's add, discard
        and membership are atomic under the GIL)."""

    @hookimpl
    def chatkit_check_config(self, config: Config) -> None:
        self._read(config)

    @hookimpl
    def chatkit_configure(self, config: Config) -> None:
        listen = self._read(config)
        if listen is None:
            return
        host, port, most = listen
        handler = type("Handler", (_Handler,), {"plugin": self})
        try:
            self._httpd = _HttpServer((host, port), handler)
            self._httpd.bound(most, "webhooks")
        except OSError as exc:
            raise UsageError(f"webhooks: cannot listen on {host}:{port}: {exc.strerror}") from None
        self._httpd.daemon_threads = True
        bound = self._httpd.server_address
        self.incoming = (str(bound[0]), int(bound[1]))

    def _read(self, config: Config) -> tuple[str, int, int] | None:
        """Read and check the settings; return where the incoming endpoint listens (host,
        port, max_connections), if it does. Opens nothing: ``chatkit check`` calls it too."""
        settings = config.plugin_settings("webhooks")
        check_settings("webhooks", settings, ["outgoing", "incoming", "max_queue"])
        max_queue = int(number_setting("webhooks", settings, "max_queue", MAX_QUEUE, 1))
        outgoing = settings.get("outgoing", [])
        if not isinstance(outgoing, list):
            raise UsageError(
                "webhooks: outgoing must be a list of tables ([[plugins.webhooks.outgoing]])"
            )
        self.hooks = [_hook(i, table) for i, table in enumerate(outgoing)]
        for hook in self.hooks:
            hook.max_queue = max_queue
        incoming = settings.get("incoming")
        if incoming is None:
            return None
        if not isinstance(incoming, dict):
            raise UsageError("webhooks: incoming must be a table")
        check_settings(
            "webhooks",
            incoming,
            ["delay", "free_failures", "host", "max_connections", "max_delay", "port", "tokens"],
        )
        free = int(number_setting("webhooks", incoming, "free_failures", TOKEN_FREE_FAILURES, 0))
        delay = number_setting("webhooks", incoming, "delay", TOKEN_DELAY, 0.001)
        max_delay = number_setting("webhooks", incoming, "max_delay", TOKEN_MAX_DELAY, delay)
        self.guesses = Throttle(free, delay, max_delay)
        tokens = incoming.get("tokens", {})
        if not isinstance(tokens, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in tokens.items()
        ):
            raise UsageError('webhooks: incoming.tokens must be a table of nick = "token"')
        self.tokens = {token: nick for nick, token in tokens.items()}
        self._reserved = {skeleton(nick): nick for nick in tokens}
        host = incoming.get("host", "127.0.0.1")
        if not isinstance(host, str):
            raise UsageError(f"webhooks: incoming.host must be a string, not {host!r}")
        port = int(number_setting("webhooks", incoming, "port", 0, 0, 65535))
        most = int(number_setting("webhooks", incoming, "max_connections", MAX_CONNECTIONS, 1))
        return host, port, most

    @hookimpl
    def chatkit_server_start(self, server: Server) -> None:
        self._server = server
        for hook in self.hooks:
            hook.thread = threading.Thread(target=hook.run, name="chatkit-webhook", daemon=True)
            hook.thread.start()
        if self._httpd is not None and self.incoming is not None:
            self._serving = True
            threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": SHUTDOWN_POLL},
                name="chatkit-webhooks-http",
                daemon=True,
            ).start()
            log.info("webhooks: incoming on http://%s:%d/rooms/NAME/messages", *self.incoming)

    @hookimpl
    def chatkit_server_stop(self, server: Server) -> None:
        if self._httpd is not None:
            if self._serving:  # (shutdown() waits for a serve_forever that never began)
                self._httpd.shutdown()
            self._httpd.server_close()
        with self._bots_lock:
            bots, self._bots = list(self._bots.values()), {}
        for bot in bots:
            bot.close()
        with _DRAINING_LOCK:
            draining = _DRAINING.setdefault(server, [])
            if server.stopped:
                left, draining[:] = list(draining), []
            else:
                # A reload: the events queued are still delivered, by these workers, in
                # the background (the reload does not wait for a slow receiver); the
                # shutdown stops them.
                draining[:] = [h for h in draining if h.thread and h.thread.is_alive()]
                draining += self.hooks
                left = []
        for hook in self.hooks:
            if server.stopped:
                hook.stop()
            else:
                hook.drain()
        for hook in left:
            hook.stop()

    # -- outgoing --------------------------------------------------------------

    def _emit(self, event: str, room: str, payload: dict[str, Any]) -> None:
        for hook in self.hooks:
            if hook.wants(event, room):
                hook.put(payload)

    @hookimpl
    def chatkit_on_message(self, client: Session, message: Message) -> None:
        if message.room is None:
            return  # private messages never leave the server
        self._emit(
            "message",
            message.room,
            {
                "event": "message",
                "room": message.room,
                "nick": message.nick,
                "text": message.text,
                "action": message.action,
                "notice": message.notice,
                "id": message.id,
                "ts": message.ts,
                "account": message.account,  # (None: not identified; a guest's nick)
            },
        )

    @hookimpl
    def chatkit_on_join(self, client: Session, room: str) -> None:
        payload = {"event": "join", "room": room, "nick": client.nick, "account": client.account}
        self._emit("join", room, payload)

    @hookimpl
    def chatkit_on_leave(self, client: Session, room: str, reason: str) -> None:
        self._emit(
            "leave", room, {"event": "leave", "room": room, "nick": client.nick, "reason": reason}
        )

    # -- incoming --------------------------------------------------------------

    @hookimpl
    def chatkit_allow_login(self, client: Session, nick: str) -> Reject | None:
        return self._reserve(client, nick)

    @hookimpl
    def chatkit_allow_nick(self, client: Session, nick: str) -> Reject | None:
        return self._reserve(client, nick)

    def _reserve(self, client: Session, nick: str) -> Reject | None:
        """A token's nick (or one that looks like it) is its bot's alone: whoever took
        it first would post as the bot, and the bot's posts would fail."""
        bot = self._reserved.get(skeleton(nick)) if self._reserved else None
        if bot is None or tuple(client.address[:2]) in self._own:
            return None
        return Reject(f"{nick} is the nick of the webhook bot {bot}; try another", "nick_taken")

    def post(self, nick: str, room: str, text: str) -> tuple[int, dict[str, Any]]:
        """Post ``text`` to ``room`` as ``nick``: (HTTP status, JSON answer)."""
        with self._bots_lock:
            bot = self._bots.get(nick)
            if bot is None:
                bot = self._bots[nick] = _Bot(nick, self._own)
        assert self._server is not None
        addresses = self._server.addresses
        # The line protocol's plain port, or its TLS port on a server with TLS only.
        tls = "line" not in addresses and "line-tls" in addresses
        host, port = addresses["line-tls"] if tls else self._server.address
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return bot.post((host, port), room, text, _own_tls() if tls else None)


@functools.cache
def _own_tls() -> ssl.SSLContext:
    """The TLS context of the bots' connections to their own server's TLS port (a
    server with TLS only). What answers on that loopback port is this process's own
    listener, which holds the port, so its certificate (issued for the names people
    connect to, never the loopback address) is not checked."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _Bot:
    """One nick's connection to the server, used by one request at a time.

    A thread of its own reads what the server sends between requests (every message
    of the bot's rooms, and the server's pings, which the client answers): a bot that
    posts now and then is neither cut as a reader that fell behind nor as a silent
    client, so its rooms see no leave and join around each post. A request collects
    what arrives meanwhile, up to the ``pong`` of its ``ping``.
    """

    def __init__(self, nick: str, own: set[tuple[str, int]]) -> None:
        self.nick = nick
        self._own = own  # the plugin's: its bots' local addresses (Webhooks._own)
        self.client: Client | None = None
        self.rooms: dict[str, str] = {}
        """The rooms it is in (folded name -> name), the one posted to last at the end."""
        self._local: tuple[str, int] = ("", 0)  # its connection's address, as the server sees it
        self._said = False  # this request's message was sent (under self.lock)
        self.lock = threading.Lock()  # one request at a time speaks on the connection
        # What the reader hands to the request that waits for it; None: the
        # connection closed. Frames that come while no request waits are dropped.
        self._frames: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        # Set by a request (under self.lock) while it collects frames; read by the
        # reader without a lock: a frame that races with the change is either dropped
        # or left for the next request, which empties the queue before it speaks.
        self._collecting = False

    def close(self) -> None:
        with self.lock:
            self._drop()

    def _drop(self) -> None:
        if self.client is not None:
            self._own.discard(self._local)
            with contextlib.suppress(OSError):  # wakes the reader, blocked in recv
                self.client.sock.shutdown(socket.SHUT_RDWR)
            self.client.close()
            self.client = None
        self.rooms = {}

    def post(
        self, address: tuple[str, int], room: str, text: str, tls: ssl.SSLContext | None = None
    ) -> tuple[int, dict[str, Any]]:
        with self.lock:
            for attempt in (1, 2):  # once more on a fresh connection if the old one died
                self._said = False
                try:
                    return self._post(address, room, text, tls)
                except (ChatkitError, OSError, TimeoutError) as exc:
                    self._drop()
                    if isinstance(exc, _Refused):
                        return exc.status, {"error": exc.code, "text": exc.text}
                    if self._said:
                        # Lost once the message was sent: it may have been delivered,
                        # and a POST is not repeated (the caller decides).
                        text = f"{exc}; the message may have been delivered"
                        return 503, {"error": "unavailable", "text": text}
                    if attempt == 2:
                        return 503, {"error": "unavailable", "text": str(exc)}
                finally:
                    self._collecting = False
            raise AssertionError("unreachable")

    def _read(self, client: Client, frames: queue.SimpleQueue[dict[str, Any] | None]) -> None:
        """The reader thread: until the connection closes."""
        try:
            while (frame := client.receive()) is not None:
                if self._collecting:
                    frames.put(frame)
        except (ChatkitError, OSError, ValueError):
            pass  # lost or closed: the next request connects again
        frames.put(None)

    def _sync(self, client: Client) -> list[dict[str, Any]]:
        """Send a ``ping``; the frames that arrive before its ``pong``."""
        client.send(type="ping")
        deadline = time.monotonic() + TIMEOUT
        frames: list[dict[str, Any]] = []
        while True:
            try:
                frame = self._frames.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError("the server did not answer in time") from None
            if frame is None:
                raise ConnectionError("the server closed the connection")
            if frame.get("type") == "pong":
                return frames
            frames.append(frame)

    def _post(
        self, address: tuple[str, int], room: str, text: str, tls: ssl.SSLContext | None
    ) -> tuple[int, dict[str, Any]]:
        if self.client is None:
            client = Client.connect(*address, tls=tls)
            self._local = tuple(client.sock.getsockname()[:2])
            self._own.add(self._local)  # before the hello: its nick is reserved
            try:
                # Straight into the room (not the default one too: only where it posts).
                client.login(self.nick, replay=0, room=room, timeout=TIMEOUT)
            except BaseException as exc:
                self._own.discard(self._local)
                client.close()
                if not isinstance(exc, ChatkitError):
                    raise
                code = str(getattr(exc, "code", "login_refused"))
                raise _Refused(
                    _STATUS.get(code, 403), code, str(getattr(exc, "text", exc))
                ) from None
            self.client = client
            self.rooms = {r.casefold(): r for r in (client.welcome or {}).get("rooms", [])}
            self._frames = queue.SimpleQueue()
            threading.Thread(
                target=self._read,
                args=(client, self._frames),
                name=f"chatkit-webhook-{self.nick}",
                daemon=True,
            ).start()
        client = self.client
        # What came since the last request (a straggler of its own) is not this one's.
        while not self._frames.empty():
            if self._frames.get() is None:
                raise ConnectionError("the server closed the connection")
        self._collecting = True
        for attempt in (1, 2):
            if room.casefold() not in self.rooms:
                client.say(f"/join {room}")
                error = _first_error(self._sync(client))
                if error is not None and error[1]["error"] == "too_many_rooms" and self.rooms:
                    # In as many rooms as a client may be: it leaves the one it posted
                    # to longest ago, and joins this one.
                    oldest = self.rooms.pop(next(iter(self.rooms)))
                    client.say(f"/part {oldest}")
                    client.say(f"/join {room}")
                    error = _first_error(self._sync(client))
                if error is not None:
                    return error if error[0] != 400 else (404, error[1])
            self.rooms[room.casefold()] = self.rooms.pop(room.casefold(), room)  # (last)
            # Always a message: a leading "/" is doubled, as the protocol escapes it,
            # once the line breaks the server drops around a message are gone ("\n/nick"
            # must not be a command).
            body = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
            self._said = True
            client.say("/" + body if body.startswith("/") else body, room)
            frames = self._sync(client)
            error = _first_error(frames)
            if error is not None and error[1]["error"] == "not_in_room" and attempt == 1:
                self.rooms.pop(room.casefold(), None)  # kicked since: join again, once
                continue
            if error is not None:
                return error
            break
        own = [f for f in frames if f.get("type") == "message" and f.get("nick") == client.nick]
        if not own:
            return 400, {"error": "not_delivered", "text": "the message was not delivered"}
        return 201, {"id": own[-1]["id"], "room": own[-1]["room"], "nick": client.nick}


class _Refused(ChatkitError):
    def __init__(self, status: int, code: str, text: str) -> None:
        super().__init__(text)
        self.status, self.code, self.text = status, code, text


def _first_error(frames: list[dict[str, Any]]) -> tuple[int, dict[str, Any]] | None:
    """The HTTP status and answer of the first ``error`` frame, if any: its code, its
    text, and its ``retry_after`` (flood control), which the answer's ``Retry-After``
    header gives in whole seconds too."""
    for frame in frames:
        if frame.get("type") == "error":
            code = str(frame.get("code"))
            answer: dict[str, Any] = {"error": code, "text": str(frame.get("text"))}
            if isinstance(frame.get("retry_after"), int | float):
                answer["retry_after"] = frame["retry_after"]
            return _STATUS.get(code, 400), answer
    return None


class _Sockets:
    """An opener (urllib's, proxies and HTTPS included) whose connections' sockets can
    be shut down from another thread: the deadline of one POST."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self.shut_down = False
        # Synchronize shut() (the deadline's timer thread) with connect() (the worker).
        self._lock = threading.Lock()
        track = self

        class Http(urllib.request.HTTPHandler):
            def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
                return self.do_open(functools.partial(_Tracked, track), req)

        class Https(urllib.request.HTTPSHandler):
            def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
                return self.do_open(functools.partial(_TrackedTls, track), req)

        self.opener = urllib.request.build_opener(Http, Https, _NoRedirect)

    def connect(self, *args: Any, **kwargs: Any) -> socket.socket:
        """``socket.create_connection``, the socket kept to be shut down."""
        sock = socket.create_connection(*args, **kwargs)
        with self._lock:
            self.sockets.append(sock)
            if self.shut_down:  # the deadline passed while it connected
                sock.shutdown(socket.SHUT_RDWR)
        return sock

    def shut(self) -> None:
        """Shut down every socket (the worker's blocked read ends with an error)."""
        with self._lock:
            self.shut_down = True
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not followed: urllib would send the event's signed
    headers to the new place as a GET without its body (and count it delivered)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # (urllib then raises HTTPError with the 3xx: a final refusal)


class _Tracked(http.client.HTTPConnection):
    """A connection whose TCP socket ``track`` knows (before any TLS handshake)."""

    def __init__(self, track: _Sockets, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = track.connect  # (what connect() opens the socket with)


class _TrackedTls(http.client.HTTPSConnection):
    """:class:`_Tracked` over TLS."""

    def __init__(self, track: _Sockets, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = track.connect


class _HttpServer(Bounded, http.server.HTTPServer):
    """The incoming endpoint's server (see :class:`~chatkit.builtins.http_server.Bounded`)."""


class _Handler(http.server.BaseHTTPRequestHandler):
    """``POST /rooms/NAME/messages``; every other request gets a JSON error."""

    plugin: Webhooks
    server_version = f"chatkit/{__version__}"
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT  # (StreamRequestHandler: the socket's timeout)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("webhooks: %s " + format, self.address_string(), *args)

    def _answer(self, status: int, body: dict[str, Any], *, close: bool = False) -> None:
        """Send ``body`` as JSON; ``close``: end the connection after it (a refusal that
        left the request's body unread, which must never be read as the next request)."""
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if isinstance(body.get("retry_after"), int | float):
            self.send_header("Retry-After", str(math.ceil(body["retry_after"])))
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _not_allowed(self) -> None:
        self._answer(405, {"error": "method_not_allowed", "text": "POST a message"}, close=True)

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def do_POST(self) -> None:
        parts = urllib.parse.urlsplit(self.path).path.split("/")
        if len(parts) != 4 or parts[1] != "rooms" or parts[3] != "messages" or not parts[2]:
            text = "POST /rooms/NAME/messages"
            self._answer(404, {"error": "not_found", "text": text}, close=True)
            return
        # NFKC first, as the hub takes a name (café with a combining accent is #café).
        room = room_name(unicodedata.normalize("NFKC", urllib.parse.unquote(parts[2])))
        problem = valid_room(room, len(room) + 1)  # (its length: the server's to check)
        if problem is not None:  # (not a /join line's words: "bad room" is one name)
            text = f"bad room name {room!r}: letters, digits, '_', '-' or '.' after the '#'"
            self._answer(404, {"error": "bad_room", "text": text}, close=True)  # (body unread)
            return
        # Guessing tokens: an address that sent wrong ones waits. (A wrong one is
        # counted once known, so that a bot's posts at once never count against it.)
        # (an IPv6 address's network, of the server's ipv6_prefix as it is now)
        server, host = self.plugin._server, self.client_address[0]
        guesser = (
            address_key(host)
            if server is None
            else address_key(host, server.config.limits.ipv6_prefix)
        )
        wait = self.plugin.guesses.wait(guesser, time.monotonic())
        if wait > 0:
            retry = math.ceil(wait * 1000) / 1000
            text = f"too many wrong tokens: wait {retry:.3g} s"
            answer = {"error": "auth_throttled", "text": text, "retry_after": retry}
            self._answer(429, answer, close=True)
            return
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        nick = next(
            (
                n
                for t, n in self.plugin.tokens.items()
                # As bytes: compare_digest refuses str with non-ASCII characters.
                if hmac.compare_digest(t.encode(), token.encode("utf-8", "surrogateescape"))
            ),
            None,
        )
        if not token or nick is None:
            self.plugin.guesses.fail(guesser, time.monotonic())
            if token:
                log.warning("webhooks: a wrong token from %s", guesser)
            text = "send Authorization: Bearer TOKEN"
            self._answer(401, {"error": "unauthorized", "text": text}, close=True)
            return
        lengths = self.headers.get_all("Content-Length") or []
        if "Transfer-Encoding" in self.headers or len(lengths) > 1:
            text = "send one Content-Length and no Transfer-Encoding"
            self._answer(400, {"error": "bad_request", "text": text}, close=True)
            return
        value = lengths[0].strip() if lengths else ""
        if not (value.isascii() and value.isdigit()):
            text = "send a Content-Length (a number of bytes)"
            self._answer(411, {"error": "length_required", "text": text}, close=True)
            return
        length = int(value)
        if length > MAX_BODY:
            text = f"at most {MAX_BODY} bytes"
            self._answer(413, {"error": "too_large", "text": text}, close=True)
            return
        body = self.rfile.read(length)
        if len(body) < length:  # the client closed (or timed out) before the end
            self.close_connection = True
            return
        try:
            if self.headers.get_content_type() == "application/json":
                text = json.loads(body)["text"]
            else:
                text = body.decode("utf-8")
            if not isinstance(text, str) or not text.strip():
                raise ValueError("no text")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
            self._answer(
                400, {"error": "bad_request", "text": 'send {"text": "..."} or UTF-8 text'}
            )
            return
        started = time.monotonic()
        status, answer = self.plugin.post(nick, room, text)
        log.debug(
            "webhooks: %s posted to %s in %.3fs: %d", nick, room, time.monotonic() - started, status
        )
        self._answer(status, answer)
