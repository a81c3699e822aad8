"""The lifecycle written at the top of chatkit/hookspecs.py is the order a real server keeps.

A recorder plugin implements every hook and notes each call; a real client on a real
socket logs in, talks, joins, renames, asks, parts and leaves; the calls, in order, must
be the ones the lifecycle's lines name, read from the docstring itself, so the text and
the server cannot drift apart. Run twice: with the store hooks and
``chatkit_room_replay`` (sequenced deliveries) and without them.
"""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from chatkit import (
    Config,
    Frame,
    Hello,
    Message,
    Register,
    Request,
    Say,
    Server,
    Session,
    hookimpl,
    hookspecs,
)
from chatkit.testing import ChatClient

TIMEOUT = 10.0  # seconds to wait for the logout hooks of a closed connection

Call = tuple[str, Any]


def lifecycle() -> dict[str, list[str]]:
    """Each line of the lifecycle (``hello``, ``say``, ``/join``...) and its hooks, in order.

    Read from the ``::`` block of the Lifecycle section of hookspecs' docstring: a line
    is ``label: steps``, continued by more-indented lines; words in parentheses are
    the server's own steps and are left out.
    """
    doc = inspect.getdoc(hookspecs) or ""
    section = doc.split("Lifecycle\n---------\n", 1)[1]
    block = section.split("::\n\n", 1)[1]
    lines: dict[str, str] = {}
    label = ""
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break  # the end of the literal block
        start = re.match(r"    (\S+):\s+(.*)", line)
        if start:
            label = start.group(1)
            lines[label] = start.group(2)
        elif line.strip():
            lines[label] += " " + line.strip()
    return {
        label: re.findall(r"\bchatkit_\w+", re.sub(r"\([^)]*\)", "", text))
        for label, text in lines.items()
    }


def hook_names() -> set[str]:
    return {name for name in dir(hookspecs) if name.startswith("chatkit_")}


def test_the_lifecycle_places_every_hook() -> None:
    """Each hook is on a line of the lifecycle: a new hook needs its place written."""
    found = {hook for hooks in lifecycle().values() for hook in hooks}
    assert found == hook_names()


class Recorder:
    """Notes (hook, what matters of its arguments) for every hook it implements, in order.

    Hooks run on the client's reader thread and on the threads that start and stop
    the server; a lock keeps the list whole.
    """

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.logged_out = threading.Event()

    def note(self, hook: str, detail: Any = None) -> None:
        with self.lock:
            self.calls.append((hook, detail))

    @hookimpl
    def chatkit_check_config(self, config: Config) -> None:
        self.note("chatkit_check_config")  # (never: only chatkit check calls it)

    @hookimpl
    def chatkit_configure(self, config: Config) -> None:
        self.note("chatkit_configure")

    @hookimpl
    def chatkit_register_commands(self, register: Register) -> None:
        self.note("chatkit_register_commands")

    @hookimpl
    def chatkit_server_start(self, server: Server) -> None:
        self.note("chatkit_server_start")

    @hookimpl
    def chatkit_allow_input(self, client: Session, event: Hello | Say | Request) -> None:
        detail = {Hello: "nick", Say: "text", Request: "type"}[type(event)]
        self.note("chatkit_allow_input", (type(event).__name__, getattr(event, detail)))

    @hookimpl
    def chatkit_allow_login(self, client: Session, nick: str) -> None:
        self.note("chatkit_allow_login", nick)

    @hookimpl
    def chatkit_authenticate(self, client: Session, account: str, password: str) -> None:
        self.note("chatkit_authenticate", account)

    @hookimpl
    def chatkit_allow_join(self, client: Session, room: str) -> None:
        self.note("chatkit_allow_join", room)

    @hookimpl
    def chatkit_on_login(self, client: Session) -> None:
        self.note("chatkit_on_login", client.nick)

    @hookimpl
    def chatkit_on_join(self, client: Session, room: str) -> None:
        self.note("chatkit_on_join", room)

    @hookimpl
    def chatkit_allow_nick(self, client: Session, nick: str) -> None:
        self.note("chatkit_allow_nick", nick)

    @hookimpl
    def chatkit_on_nick(self, client: Session, old: str) -> None:
        self.note("chatkit_on_nick", (old, client.nick))

    @hookimpl
    def chatkit_filter_message(self, client: Session, message: Message) -> None:
        self.note("chatkit_filter_message", (message.text, message.id))

    @hookimpl
    def chatkit_on_message(self, client: Session, message: Message) -> None:
        self.note("chatkit_on_message", (message.text, message.id is not None))

    @hookimpl
    def chatkit_handle_request(self, client: Session, request: Request) -> bool | None:
        self.note("chatkit_handle_request", request.type)
        if request.type != "lifecycle":
            return None
        client.send(Frame("lifecycle", ok=True))
        return True

    @hookimpl
    def chatkit_check_ready(self) -> None:
        self.note("chatkit_check_ready")

    @hookimpl
    def chatkit_on_leave(self, client: Session, room: str, reason: str) -> None:
        self.note("chatkit_on_leave", (room, reason))

    @hookimpl
    def chatkit_allow_topic(self, client: Session, room: str, topic: str) -> None:
        self.note("chatkit_allow_topic", (room, topic))

    @hookimpl
    def chatkit_on_topic(self, client: Session, room: str, topic: dict[str, str]) -> None:
        self.note("chatkit_on_topic", (room, topic["topic"]))

    @hookimpl
    def chatkit_on_account(self, client: Session) -> None:
        self.note("chatkit_on_account", (client.nick, client.account))

    @hookimpl
    def chatkit_on_account_deleted(self, account: str) -> None:
        self.note("chatkit_on_account_deleted", account)

    @hookimpl
    def chatkit_on_away(self, client: Session) -> None:
        self.note("chatkit_on_away", (client.nick, client.away))

    @hookimpl
    def chatkit_on_logout(self, client: Session, reason: str) -> None:
        self.note("chatkit_on_logout", reason)
        self.logged_out.set()

    @hookimpl
    def chatkit_server_stop(self, server: Server) -> None:
        self.note("chatkit_server_stop")


class StoringRecorder(Recorder):
    """Also stores and replays: the server's deliveries are then sequenced."""

    @hookimpl
    def chatkit_store_messages(self, client: Session, messages: Sequence[Message]) -> None:
        self.note("chatkit_store_messages", [(m.text, m.id is not None) for m in messages])

    @hookimpl
    def chatkit_store_message(self, client: Session, message: Message) -> None:
        self.note("chatkit_store_message", (message.text, message.id is not None))

    @hookimpl
    def chatkit_room_replay(self, client: Session, room: str, last_id: int) -> list[Frame]:
        self.note("chatkit_room_replay", room)
        return [Frame("history", room=room, count=0, more=False)]


def implemented(plugin: Recorder) -> set[str]:
    return {name for name in hook_names() if hasattr(plugin, name)}


def test_the_storing_recorder_implements_every_hook() -> None:
    assert implemented(StoringRecorder()) == hook_names()
    assert hook_names() - implemented(Recorder()) == {
        "chatkit_store_messages",
        "chatkit_store_message",
        "chatkit_room_replay",
    }


# What the recorder notes of each hook's arguments, line by line of the scenario below
# (the order is the lifecycle's; only these details are written here).
DETAILS: list[tuple[str, dict[str, Any]]] = [
    ("startup", {}),
    ("connect", {}),
    (
        "hello",
        {
            "chatkit_allow_input": ("Hello", "alice"),
            "chatkit_allow_login": "alice",
            "chatkit_allow_join": "#general",
            "chatkit_on_login": "alice",
            "chatkit_room_replay": "#general",
            "chatkit_on_join": "#general",
        },
    ),
    (
        "say",
        {
            "chatkit_allow_input": ("Say", "hello, world"),
            "chatkit_filter_message": ("hello, world", None),
            "chatkit_store_messages": [("hello, world", True)],
            "chatkit_store_message": ("hello, world", True),
            "chatkit_on_message": ("hello, world", True),
        },
    ),
    (
        "/join",
        {
            "chatkit_allow_input": ("Say", "/join #side"),
            "chatkit_allow_join": "#side",
            "chatkit_room_replay": "#side",
            "chatkit_on_join": "#side",
        },
    ),
    (
        "/nick",
        {
            "chatkit_allow_input": ("Say", "/nick alicia"),
            "chatkit_allow_nick": "alicia",
            "chatkit_on_nick": ("alice", "alicia"),
        },
    ),
    (
        "request",
        {
            "chatkit_allow_input": ("Request", "lifecycle"),
            "chatkit_handle_request": "lifecycle",
        },
    ),
    ("ready", {}),
    (
        "/topic",
        {
            "chatkit_allow_input": ("Say", "/topic #side Friday"),
            "chatkit_allow_topic": ("#side", "Friday"),
            "chatkit_on_topic": ("#side", "Friday"),
        },
    ),
    (
        "/register",
        {
            "chatkit_allow_input": ("Say", "/register correct-horse"),
            "chatkit_on_account": ("alicia", "alicia"),
        },
    ),
    (
        "/drop",
        {
            "chatkit_allow_input": ("Say", "/drop correct-horse"),
            "chatkit_on_account_deleted": "alicia",
            "chatkit_on_account": ("alicia", None),
        },
    ),
    (
        "/part",
        {
            "chatkit_allow_input": ("Say", "/part #side"),
            "chatkit_on_leave": ("#side", "part"),
        },
    ),
    (
        "/away",
        {
            "chatkit_allow_input": ("Say", "/away lunch"),
            "chatkit_filter_message": ("", None),  # (#general, its one room now)
            "chatkit_on_away": ("alicia", "lunch"),
        },
    ),
    (
        "logout",
        {
            "chatkit_on_leave": ("#general", "connection closed"),
            "chatkit_on_logout": "connection closed",
        },
    ),
    ("shutdown", {}),
]


def expected(plugin: Recorder) -> list[Call]:
    """The calls the lifecycle promises for the scenario, to the hooks ``plugin`` has."""
    lines, have = lifecycle(), implemented(plugin)
    calls: list[Call] = []
    for label, details in DETAILS:
        calls += [(hook, details.get(hook)) for hook in lines[label] if hook in have]
    return calls


def run_scenario(plugin: Recorder) -> None:
    """Start a real server, and one client through every line of DETAILS; then stop."""
    # history is off: whether deliveries are sequenced is the recorder's doing alone.
    server = Server("127.0.0.1", 0, plugins=[plugin], config=Config(disable=["history"]))
    server.start()  # startup
    try:
        with ChatClient(server.address) as client:  # connect
            client.login("alice")  # hello
            client.say("hello, world")  # say
            client.expect("message", text="hello, world")
            client.say("/join #side")  # /join
            client.expect("join", room="#side", nick="alice")
            client.say("/nick alicia")  # /nick
            client.expect("nick", new="alicia")
            client.send(type="lifecycle")  # request
            client.expect("lifecycle", ok=True)
            assert client.ready() == []  # ready
            client.say("/topic #side Friday")  # /topic
            client.expect("topic", room="#side", topic="Friday")
            client.say("/register correct-horse")  # /register
            client.expect("account", account="alicia")
            client.say("/drop correct-horse")  # /drop
            client.expect("reply", command="drop")
            client.say("/part #side")  # /part
            client.expect("leave", room="#side")
            client.say("/away lunch")  # /away
            client.expect("reply", command="away")
        # logout: the connection is closed; its hooks run on the reader thread.
        assert plugin.logged_out.wait(TIMEOUT), "no chatkit_on_logout"
    finally:
        server.shutdown()  # shutdown


@pytest.mark.parametrize(
    "kind", [StoringRecorder, Recorder], ids=["sequenced (store and replay)", "unsequenced"]
)
def test_a_real_server_calls_the_hooks_in_the_documented_order(kind: type[Recorder]) -> None:
    """A client that logs in, says something, joins, renames, asks, parts and leaves
    meets the hooks in the order the lifecycle in hookspecs.py writes."""
    plugin = kind()
    run_scenario(plugin)
    assert plugin.calls == expected(plugin)
