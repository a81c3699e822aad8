"""Test machinery for chatkit and its plugins: real servers on port 0, real clients.

Opt in from a ``conftest.py``::

    pytest_plugins = ["chatkit.testing"]

and then, in a test::

    def test_greets(chat_server_factory, chat_client):
        server = chat_server_factory(plugins=[MyPlugin()])
        alice = chat_client(server, "alice")
        alice.expect("notice", text="welcome, alice")

Everything here uses real sockets on the loopback interface; nothing is mocked.
The clients are chatkit's own: :class:`ChatClient` is a :class:`chatkit.client.Client`
(what programs and ``chatkit join`` use) with ``expect``; :class:`TextClient` reads
lines as it does. ``chat_client`` waits with deadlines, never with sleeps: :meth:`ChatClient.sync`
relies on the server's ordering promise (each connection's output is FIFO), so
"nothing else arrived" is a question with a definite answer.
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Self

import pytest

from chatkit import hookspecs
from chatkit.client import (
    MAX_SERVER_LINE,
    Client,
    ConnectionLost,
    LineClient,
    LoginRefused,
)
from chatkit.config import Config, Limits
from chatkit.protocol import LineTooLong
from chatkit.server import Server

__all__ = [
    "ChatClient",
    "HookRecorder",
    "TextClient",
    "run_server",
    "wait_until",
]

DEFAULT_TIMEOUT = 5.0  # seconds a test waits for an expected frame before failing
POLL = 0.005  # seconds between two looks of wait_until


def wait_until(
    condition: Callable[[], Any],
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "",
    interval: float = POLL,
) -> Any:
    """Look at ``condition()`` every ``interval`` seconds until it returns something
    true, and return that; raise ``AssertionError`` (naming ``what``) after ``timeout``
    seconds.

    For state no frame tells of (``server.stats()``, a file, a thread): a deadline,
    not a sleep that hopes. Frames have :meth:`ChatClient.expect` and ``sync``.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or condition}")
        time.sleep(interval)


def make_config(config: Config | None = None, disable: Iterable[str] = (), **limits: Any) -> Config:
    """A :class:`Config` on port 0, with the ``disable``-d default plugins off,
    ``limits`` changed (e.g. ``max_line=100``), and history in memory unless the
    config names a database (``[plugins.history] db``)."""
    config = config or Config()
    config.port = 0
    config.disable = [*config.disable, *disable]
    # History on, but in memory: a test never touches the user's data directory.
    config.plugin_config.setdefault("history", {}).setdefault("db", ":memory:")
    if limits:
        values = {**config.limits.__dict__, **limits}
        config.limits = Limits(**values)
    return config


@contextmanager
def run_server(
    plugins: Iterable[Any] = (),
    config: Config | None = None,
    disable: Iterable[str] = (),
    **limits: Any,
) -> Iterator[Server]:
    """Run a real server on 127.0.0.1, port 0; shut it down and join it on exit.

    ``plugins`` are enabled besides the defaults, ``disable`` turns default plugins
    off (e.g. ``["flood"]`` for a test that sends bursts), ``limits`` override
    :class:`~chatkit.Limits` fields.
    """
    server = Server(plugins=plugins, config=make_config(config, disable, **limits))
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


class _TestLines(LineClient):
    """What both test clients add to a line client: a default wait, and waiting for the end."""

    timeout: float
    """Default seconds to wait in ``expect`` and ``sync``."""

    @property
    def eof(self) -> bool:
        """True once the server closed the connection."""
        return self.closed

    @eof.setter
    def eof(self, value: bool) -> None:
        self.closed = value

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def wait_closed(self, timeout: float | None = None) -> None:
        """Read and drop everything until the server closes the connection."""
        deadline = self._deadline(timeout)
        try:
            while self._line(deadline) is not None:
                pass
        except TimeoutError:
            raise AssertionError("the server did not close the connection in time") from None


Match = str | Callable[[dict[str, Any]], bool] | None


_CONTAINS = "_contains"  # expect(text_contains="x"): the field holds "x" somewhere


def _field_matches(frame: dict[str, Any], key: str, value: Any) -> bool:
    if key.endswith(_CONTAINS) and key not in frame:
        found = frame.get(key[: -len(_CONTAINS)])
        return isinstance(found, str) and value in found
    return key in frame and frame[key] == value


class ChatClient(Client, _TestLines):
    """A JSON-mode client for tests: send frames, expect frames.

    It is a :class:`chatkit.client.Client` (``send``, ``say``, ``receive``, ...),
    with deadlines that fail the test instead of raising. It returns the server's
    ``ping`` frames like any other, and answers them only when told
    (``answers_pings = True``, or ``send(type="pong")``).
    """

    answers_pings = False

    def __init__(
        self,
        address: tuple[str, int],
        timeout: float = DEFAULT_TIMEOUT,
        *,
        max_line: int = MAX_SERVER_LINE,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(self._open(address, timeout, tls), address, max_line=max_line)
        self.timeout = timeout
        self.received: list[dict[str, Any]] = []
        """Every frame received, in order."""

    @classmethod
    def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 9090,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        max_line: int = MAX_SERVER_LINE,
        tls: ssl.SSLContext | None = None,
    ) -> Self:
        """Connect to ``(host, port)``; ``timeout`` is the default wait of ``expect``;
        ``tls`` speaks TLS with that context."""
        return cls((host, port), timeout, max_line=max_line, tls=tls)

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
        """Log in as ``nick`` (into ``room``, or ``rooms``, instead of the default room,
        if given; ``resume``: see :meth:`chatkit.client.Client.login`); return the
        ``welcome`` frame (fail on an error frame).

        It returns once the client is in the welcome's first room (its own ``join``
        arrived), so that others see it there; the frames stay pending for ``expect``.
        """
        deadline = self._deadline(timeout)
        try:
            frame = super().login(
                nick,
                replay=replay,
                since=since,
                password=password,
                room=room,
                rooms=rooms,
                resume=resume,
                timeout=deadline - time.monotonic(),
            )
        except LoginRefused as exc:
            raise AssertionError(f"login as {nick!r} refused: [{exc.code}] {exc}") from None
        except (TimeoutError, ConnectionLost) as exc:
            raise AssertionError(f"login as {nick!r}: no answer ({exc}): {self.pending}") from None
        # The welcome comes before the default room's join (a plugin's greeting goes
        # in between): wait for the join, so that others see us there once this
        # returns.
        entered = frame.get("rooms") or []
        if entered:  # (joined in order: the last one's join comes after the others')
            mine = {"type": "join", "nick": self.nick, "room": entered[-1]}

            def joined(f: dict[str, Any]) -> bool:
                return all(f.get(k) == v for k, v in mine.items())

            try:
                at = self._find(joined, deadline)
            except TimeoutError:
                at = None
            if at is None:
                raise AssertionError(f"logged in as {nick!r} but never joined {entered[-1]}")
        return frame

    def _read(self, deadline: float | None) -> bool:
        if not super()._read(deadline):
            return False
        self.received.append(self.pending[-1])
        return True

    def expect(
        self, match: Match = None, timeout: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Return the first frame that matches, dropping the frames before it.

        ``match`` is a frame type, a predicate, or ``None`` (any). Every keyword
        is a field the frame must have: ``code="bad_nick"`` must equal it, and
        ``text_contains="rolled"`` (a field name and ``_contains``) must be a part
        of it. Fails the test if no such frame arrives within ``timeout`` seconds
        or the server closes the connection.
        """
        for key, value in fields.items():
            if key.endswith(_CONTAINS) and not isinstance(value, str):
                raise TypeError(f"expect({key}=...) takes a string, not {value!r}")

        def ok(frame: dict[str, Any]) -> bool:
            if isinstance(match, str) and frame.get("type") != match:
                return False
            if callable(match) and not match(frame):
                return False
            return all(_field_matches(frame, k, v) for k, v in fields.items())

        try:
            at = self._find(ok, self._deadline(timeout))
        except TimeoutError:
            at = None
        if at is None:
            what = "closed the connection" if self.eof else "sent nothing matching in time"
            raise AssertionError(
                f"expected {match!r} {fields or ''}; the server {what}. "
                f"{len(self.pending)} unmatched frames, the last ones: {self.pending[-3:]}"
            )
        frame = self.pending[at]
        del self.pending[: at + 1]
        return frame

    def command(
        self, line: str, room: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send the command ``line`` (``"/register sesame-seed"``) and return its
        ``reply`` frame (the frames before it are dropped, as by :meth:`expect`); an
        ``error`` frame first fails the test, with its code and text (never the line:
        it may hold a password)."""
        name = line.removeprefix("/").split(" ", 1)[0].lower()
        self.say(line, room=room)
        frame = self.expect(
            lambda f: (
                f.get("type") == "error" or (f.get("type") == "reply" and f.get("command") == name)
            ),
            timeout,
        )
        if frame["type"] == "error":
            raise AssertionError(f"/{name} failed: [{frame.get('code')}] {frame.get('text')}")
        return frame

    def sync(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Ping, wait for the pong, and return (consuming) every pending frame before it.

        Because each connection's output is FIFO, the result holds everything the
        server had queued for this client before it read the ping.
        """
        try:
            return super().sync(self.timeout if timeout is None else timeout)
        except (TimeoutError, ConnectionLost):
            raise AssertionError(f"no pong; frames so far: {self.pending}") from None


def _text_line(line: bytes | LineTooLong) -> str:
    if isinstance(line, LineTooLong):
        return f"(a line longer than {line.limit} bytes, skipped)"
    return line.decode("utf-8", "replace").rstrip("\r")


class TextClient(_TestLines):
    """A text-mode client for tests, as a person with ``nc`` would type."""

    def __init__(
        self,
        address: tuple[str, int],
        timeout: float = DEFAULT_TIMEOUT,
        *,
        max_line: int = MAX_SERVER_LINE,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(self._open(address, timeout, tls), address, max_line=max_line)
        self.timeout = timeout
        self.pending: list[str] = []
        """Lines received and not yet consumed by :meth:`expect`."""

    @classmethod
    def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 9090,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        max_line: int = MAX_SERVER_LINE,
        tls: ssl.SSLContext | None = None,
    ) -> Self:
        """Connect to ``(host, port)``; ``timeout`` is the default wait of ``expect``;
        ``tls`` speaks TLS with that context."""
        return cls((host, port), timeout, max_line=max_line, tls=tls)

    def send_line(self, line: str) -> None:
        """Send one line (the newline is added)."""
        self.send_raw(line.encode() + b"\n")

    def _read_text(self, deadline: float) -> bool:
        """Read the next line into :attr:`pending`; False at the deadline or the end."""
        try:
            line = self._line(deadline)
        except TimeoutError:
            return False
        if line is None:
            return False
        self.pending.append(_text_line(line))
        return True

    def expect(
        self, match: str | re.Pattern[str] | Callable[[str], bool], timeout: float | None = None
    ) -> str:
        """Return the first line that contains ``match`` (or matches the pattern or predicate)."""

        def ok(line: str) -> bool:
            if isinstance(match, str):
                return match in line
            if isinstance(match, re.Pattern):
                return match.search(line) is not None
            return match(line)

        deadline = self._deadline(timeout)
        while True:
            for i, line in enumerate(self.pending):
                if ok(line):
                    del self.pending[: i + 1]
                    return line
            if not self._read_text(deadline):
                what = "closed the connection" if self.eof else "sent nothing matching in time"
                raise AssertionError(
                    f"expected {match!r}; the server {what}. Lines: {self.pending}"
                )

    def sync(self, timeout: float | None = None) -> list[str]:
        """Send ``/ping`` and return every line that arrived before its ``pong``."""
        self.send_line("/ping")
        before: list[str] = []
        deadline = self._deadline(timeout)
        while True:
            while self.pending:
                line = self.pending.pop(0)
                if line == "pong":
                    return before
                before.append(line)
            if not self._read_text(deadline):
                raise AssertionError(f"no pong; lines so far: {before}")


def _hook_name(name: str) -> str:
    """``on_join`` or ``chatkit_on_join``: the hook's full name; ``AssertionError`` for
    a name that is no hook (a typo would otherwise wait out the timeout, then say 0)."""
    full = name if name.startswith("chatkit_") else f"chatkit_{name}"
    if not callable(getattr(hookspecs, full, None)):
        raise AssertionError(f"no hook is called {name!r}: see docs/hooks.md")
    return full


class HookRecorder:
    """Records every hook call of a server: ``getcalls("chatkit_on_join")``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        """(hook name, arguments) in call order."""
        # Synchronize access to calls (hooks run on many reader threads) and let
        # wait() sleep until a call is recorded.
        self._lock = threading.Condition()

    def attach(self, server: Server) -> None:
        """Start recording ``server``'s hook calls."""
        server.hooks.add_monitor(self._record)

    def _record(self, name: str, kwargs: dict[str, Any]) -> None:
        with self._lock:
            self.calls.append((name, dict(kwargs)))
            self._lock.notify_all()

    def wait(
        self, name: str, count: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> list[dict[str, Any]]:
        """Wait until hook ``name`` was called ``count`` times; return its calls.

        Hooks run on the reader thread of the client that caused them, often after
        the frames a test sees (a ``leave`` is sent before ``chatkit_on_leave``
        runs), so a test waits for the call itself. Note that the monitor sees a
        call as it starts, before the plugins run.
        """
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._calls_of(name)) >= count, timeout):
                raise AssertionError(
                    f"{name} was called {len(self._calls_of(name))} times, not {count}"
                )
            return self._calls_of(name)

    def _calls_of(self, name: str) -> list[dict[str, Any]]:
        name = _hook_name(name)
        return [kwargs for hook, kwargs in self.calls if hook == name]

    def getcalls(self, name: str) -> list[dict[str, Any]]:
        """The arguments of every call of hook ``name`` (or its short name) so far."""
        with self._lock:
            return self._calls_of(name)

    def names(self) -> list[str]:
        """The hook names called so far, in order."""
        with self._lock:
            return [hook for hook, _ in self.calls]


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture
def chat_server_factory() -> Iterator[Callable[..., Server]]:
    """Start real servers: ``chat_server_factory(plugins=[], config=None, disable=[], **limits)``.

    Each server listens on 127.0.0.1 on a free port with the default plugins plus
    ``plugins``, less ``disable`` (e.g. ``["flood"]`` to send bursts), and with
    ``limits`` overriding :class:`~chatkit.Limits` fields; all are shut down
    (threads joined) when the test ends. For tests that need their own plugins or
    limits; isolates nothing else.
    """
    servers: list[Server] = []

    def factory(
        plugins: Iterable[Any] = (),
        config: Config | None = None,
        disable: Iterable[str] = (),
        **limits: Any,
    ) -> Server:
        server = Server(plugins=plugins, config=make_config(config, disable, **limits))
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.shutdown()


@pytest.fixture
def chat_server(chat_server_factory: Callable[..., Server]) -> Server:
    """A real server with the default plugins, on a free port, for one test."""
    return chat_server_factory()


def _default_server(request: pytest.FixtureRequest) -> Callable[[], Server]:
    """``chat_server``, started only when a client is connected without a server: a
    test that connects to servers of its own starts no other one."""

    def get() -> Server:
        server: Server = request.getfixturevalue("chat_server")
        return server

    return get


@pytest.fixture
def chat_client(
    chat_server_factory: Callable[..., Server], request: pytest.FixtureRequest
) -> Iterator[Callable[..., ChatClient]]:
    """Connect JSON clients: ``chat_client(nick)`` or ``chat_client(server, nick)``.

    With a nick the client is logged in (its ``welcome`` consumed); with
    ``nick=None`` it is only connected. Defaults to ``chat_server`` (started only if a
    client goes to it). All are closed at the end of the test, before the servers stop.
    """
    clients: list[ChatClient] = []
    default = _default_server(request)

    def connect(*args: Any, timeout: float = DEFAULT_TIMEOUT) -> ChatClient:
        server = args[0] if args and isinstance(args[0], Server) else default()
        rest = args[1:] if args and isinstance(args[0], Server) else args
        nick = rest[0] if rest else None
        client = ChatClient(server.address, timeout=timeout)
        clients.append(client)
        if nick is not None:
            client.login(nick)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def text_client(
    chat_server_factory: Callable[..., Server], request: pytest.FixtureRequest
) -> Iterator[Callable[..., TextClient]]:
    """Connect text-mode clients, as ``nc`` would: ``text_client(nick)`` or ``(server, nick)``.

    With a nick, sends it as the first line and waits for the welcome line and its own
    join (the lines after the welcome stay pending for ``expect``). Defaults to
    ``chat_server``, as :func:`chat_client`.
    """
    clients: list[TextClient] = []
    default = _default_server(request)

    def connect(*args: Any, timeout: float = DEFAULT_TIMEOUT) -> TextClient:
        server = args[0] if args and isinstance(args[0], Server) else default()
        rest = args[1:] if args and isinstance(args[0], Server) else args
        nick = rest[0] if rest else None
        client = TextClient(server.address, timeout=timeout)
        clients.append(client)
        if nick is not None:
            client.send_line(nick)
            welcome = client.expect("Welcome to chatkit")
            if "You are in #" in welcome:
                # As ChatClient.login: wait for its own join (a plugin's greeting comes
                # in between), so that others see it there once this returns. The
                # lines stay pending for expect().
                deadline = time.monotonic() + client.timeout
                while not any(" joined #" in line for line in client.pending):
                    if not client._read_text(deadline):
                        raise AssertionError(f"{nick!r} was welcomed but never joined a room")
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def hook_recorder(chat_server: Server) -> HookRecorder:
    """Records the hook calls of ``chat_server`` from now on (not its startup hooks).
    For a server of ``chat_server_factory``: ``HookRecorder().attach(server)``."""
    recorder = HookRecorder()
    recorder.attach(chat_server)
    return recorder
