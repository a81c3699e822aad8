"""One test per hook (test_hook_<name>), and the hook reference's completeness."""

from __future__ import annotations

import inspect
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pluggy
import pytest

import chatkit.hub
from chatkit import (
    Config,
    Drop,
    Frame,
    Message,
    Register,
    Reject,
    Server,
    Session,
    UsageError,
    hookimpl,
    hookspecs,
)
from chatkit.client import say_frame
from chatkit.hooks import HookRunner
from chatkit.hub import message_frame
from chatkit.plugins import build_plugin_manager, check_plugin_settings, new_plugin_manager
from chatkit.protocol import Hello, Request, Say
from chatkit.testing import (
    ChatClient,
    HookRecorder,
    TextClient,
    make_config,
    run_server,
    wait_until,
)

Connect = Callable[..., ChatClient]
Factory = Callable[..., Server]

DOCS = Path(__file__).parent.parent / "docs" / "hooks.md"


def hook_names() -> list[str]:
    return sorted(name for name in dir(hookspecs) if name.startswith("chatkit_"))


def test_every_hook_has_a_test() -> None:
    """Each hook in hookspecs.py has a test_hook_<name> here."""
    here = sys.modules[__name__]
    missing = [
        n for n in hook_names() if not hasattr(here, f"test_hook_{n.removeprefix('chatkit_')}")
    ]
    assert not missing


def test_every_hook_is_documented_with_its_signature() -> None:
    """docs/hooks.md shows every hook with its exact signature."""
    text = DOCS.read_text()
    for name in hook_names():
        spec = getattr(hookspecs, name)
        params = ", ".join(inspect.signature(spec).parameters)
        assert f"{name}({params})" in text, name


def test_hook_reference_is_up_to_date() -> None:
    """docs/hooks.md is what tests/hookdoc.py makes of hookspecs.py (regenerate it if not)."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import hookdoc
    finally:
        sys.path.pop(0)
    assert DOCS.read_text() == hookdoc.render(), "run: uv run python tests/hookdoc.py"


def test_every_hook_says_what_happens_if_it_raises() -> None:
    """Each hook's docstring covers returns and exceptions."""
    for name in hook_names():
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "raise" in doc.lower(), name
        assert "Return" in doc or "return" in doc, name


def test_hook_check_config() -> None:
    """chatkit_check_config is chatkit check's (check_plugin_settings): it gets the config
    and the plugin manager, and its UsageError is the error; a server never calls it."""
    seen: list[Any] = []

    class Checked:
        @hookimpl
        def chatkit_check_config(self, config: Config, pluginmanager: pluggy.PluginManager) -> None:
            seen.append((config.plugin_settings("checked"), pluginmanager.has_plugin("rooms")))
            if config.plugin_settings("checked").get("size", 1) < 1:
                raise UsageError("checked: size must be at least 1")

    bad = Config(plugin_config={"checked": {"size": 0}})
    pm, infos = build_plugin_manager(bad, extra=[Checked()])
    with pytest.raises(UsageError, match="checked: size must be at least 1"):
        check_plugin_settings(bad, pm, infos)
    assert seen == [({"size": 0}, True)]
    good = Config(plugin_config={"checked": {"size": 2}})
    pm, infos = build_plugin_manager(good, extra=[Checked()])
    assert check_plugin_settings(good, pm, infos) == []
    with run_server(plugins=[Checked()], config=bad):
        pass  # (started and stopped: size 0 is not its business)
    assert seen == [({"size": 0}, True), ({"size": 2}, True)]


def test_hook_configure() -> None:
    """chatkit_configure gets the config with plugin settings; a UsageError stops the start."""
    seen: list[Any] = []

    class Settings:
        @hookimpl
        def chatkit_configure(self, config: Config, pluginmanager: pluggy.PluginManager) -> None:
            seen.append((config.plugin_settings("settings"), pluginmanager.has_plugin("rooms")))
            if config.plugin_settings("settings").get("action") == "bogus":
                raise UsageError("settings: action must be mask or drop, not 'bogus'")

    config = Config(plugin_config={"settings": {"action": "mask"}})
    with run_server(plugins=[Settings()], config=config):
        assert seen == [({"action": "mask"}, True)]
    server = Server(
        port=0, plugins=[Settings()], config=Config(plugin_config={"settings": {"action": "bogus"}})
    )
    with pytest.raises(UsageError, match="action must be mask or drop"):
        server.start()


def test_hook_configure_crash_names_the_plugin() -> None:
    """Any other exception in chatkit_configure stops the start, naming the plugin."""

    class Crashing:
        @hookimpl
        def chatkit_configure(self, config: Config) -> None:
            raise KeyError("missing")

    with pytest.raises(UsageError, match="plugin 'Crashing' failed in chatkit_configure"):
        Server(port=0, plugins=[Crashing()]).start()


def test_hook_register_commands(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A registered command runs with a context; /help shows it with its plugin."""

    class Dice:
        name = "dice"

        @hookimpl
        def chatkit_register_commands(self, register: Register) -> None:
            register(
                "roll",
                lambda ctx: ctx.reply(f"{ctx.client.nick} rolls {ctx.args}", n=4),
                help="roll",
                usage="NdM",
            )

    server = chat_server_factory(plugins=[Dice()])
    alice = chat_client(server, "alice")
    alice.say("/ROLL 1d6")
    reply = alice.expect("reply")
    assert reply == {
        "type": "reply",
        "command": "roll",
        "text": "alice rolls 1d6",
        "data": {"n": 4},
    }
    alice.say("/help roll")
    assert alice.expect("reply")["data"]["plugin"] == "dice"


def test_hook_server_start() -> None:
    """chatkit_server_start runs once the server listens."""
    addresses: list[tuple[str, int]] = []

    class Starter:
        @hookimpl
        def chatkit_server_start(self, server: Server) -> None:
            addresses.append(server.address)

    with run_server(plugins=[Starter()]) as server:
        assert addresses == [server.address]
        assert server.address[1] != 0


def test_hook_server_start_runs_before_any_client_is_accepted() -> None:
    """A client that connects while the plugins start waits: no hook sees it before
    every plugin's chatkit_server_start has returned."""
    seen: list[bool] = []

    class SlowStarter:
        started = False
        early: socket.socket | None = None

        @hookimpl
        def chatkit_server_start(self, server: Server) -> None:
            self.early = socket.create_connection(server.address)
            self.early.sendall(b'{"type":"hello","nick":"early"}\n')
            time.sleep(0.3)  # the early client's hello waits, unread, meanwhile
            self.started = True

        @hookimpl
        def chatkit_on_login(self, client: Session) -> None:
            seen.append(self.started)

    starter = SlowStarter()
    with run_server(plugins=[starter]):
        wait_until(lambda: seen, 10, "the early client's login")
        assert seen == [True]
        assert starter.early is not None
        starter.early.close()


def test_hook_server_stop() -> None:
    """chatkit_server_stop runs once after every client is gone."""
    calls: list[int] = []

    class Stopper:
        @hookimpl
        def chatkit_server_stop(self, server: Server) -> None:
            calls.append(len(server.connections))

    with run_server(plugins=[Stopper()]) as server:
        ChatClient(server.address).login("x")
    assert calls == [0]


class Gate:
    name = "gate"

    @hookimpl
    def chatkit_allow_input(self, client: Session, event: Hello | Say) -> Reject | None:
        if isinstance(event, Say) and "forbidden" in event.text:
            # (A detail named like the frame's own fields does not replace them.)
            return Reject("not that word", "gated", {"hint": "try another", "text": "x"})
        return None


def test_hook_allow_input(
    chat_server_factory: Factory, chat_client: Connect, hook_recorder: HookRecorder
) -> None:
    """chatkit_allow_input sees every hello and say first; a Reject stops the line with details."""
    server = chat_server_factory(plugins=[Gate()])
    alice = chat_client(server, "alice")
    alice.say("/nick forbidden")  # commands pass through it too
    assert alice.expect("error") == {
        "type": "error",
        "code": "gated",
        "text": "not that word",
        "hint": "try another",
    }
    alice.say("forbidden fruit")
    assert alice.expect("error")["code"] == "gated"
    assert not [f for f in alice.sync() if f["type"] in ("message", "nick")]
    other = chat_client("bob")  # on the default server: the recorder sees every hello and say
    other.say("hi")
    other.sync()
    events = [type(c["event"]).__name__ for c in hook_recorder.getcalls("chatkit_allow_input")]
    assert events == ["Hello", "Say"]


class Bouncer:
    name = "bouncer"

    @hookimpl
    def chatkit_allow_login(self, client: Session, nick: str) -> Reject | None:
        if nick.lower() == "admin":
            return Reject("that nick is reserved", "nick_reserved")
        return None

    @hookimpl
    def chatkit_allow_nick(self, client: Session, nick: str) -> Reject | None:
        return self.chatkit_allow_login(client, nick)

    @hookimpl
    def chatkit_allow_join(self, client: Session, room: str) -> Reject | None:
        if room == "#secret":
            return Reject("invitation only")
        return None


def test_hook_allow_login(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A Reject from chatkit_allow_login refuses the nick; the client may try another."""
    server = chat_server_factory(plugins=[Bouncer()])
    client = chat_client(server)
    client.send(type="hello", nick="Admin")
    assert client.expect("error") == {
        "type": "error",
        "code": "nick_reserved",
        "text": "that nick is reserved",
    }
    client.login("alice")


def test_hook_authenticate() -> None:
    """chatkit_authenticate answers IRC's SASL PLAIN: True is 903 and sets the account
    the login then has; a Reject is 904 with its reason."""
    import base64

    from test_irc_face import SERVER, IrcClient

    from chatkit.faces.irc import IrcFace

    class Keys:
        @hookimpl
        def chatkit_authenticate(
            self, client: Session, account: str, password: str
        ) -> bool | Reject:
            if password != "sesame":
                return Reject("no entry", "bad_password")
            client.account = account
            return True

    logins: list[str | None] = []

    class Witness:
        @hookimpl
        def chatkit_on_login(self, client: Session) -> None:
            logins.append(client.account)

    server = Server(
        plugins=[Keys(), Witness()],
        config=make_config(disable=["accounts"]),
        faces=[IrcFace(port=0, server_name=SERVER, network="TestNet")],
    )
    with server, IrcClient(server.addresses["irc"]) as irc:
        irc.send("CAP LS 302", "CAP REQ :sasl", "NICK ann", "USER ann 0 * :Ann")
        irc.expect("CAP * ACK")
        for password, numeric in (("nope", "904"), ("sesame", "903")):
            irc.send("AUTHENTICATE PLAIN")
            irc.expect("AUTHENTICATE +")
            irc.send("AUTHENTICATE " + base64.b64encode(f"\0ann\0{password}".encode()).decode())
            line = irc.expect(f" {numeric} ")
        assert "no entry" not in line
        irc.send("CAP END")
        irc.expect(" 001 ")
        irc.sync()
    assert logins == ["ann"]


def test_hook_allow_nick(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A Reject from chatkit_allow_nick refuses /nick."""
    server = chat_server_factory(plugins=[Bouncer()])
    alice = chat_client(server, "alice")
    alice.say("/nick admin")
    assert alice.expect("error")["code"] == "nick_reserved"


def test_hook_allow_join(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A Reject from chatkit_allow_join refuses /join with the plugin's reason."""
    server = chat_server_factory(plugins=[Bouncer()])
    alice = chat_client(server, "alice")
    alice.say("/join #secret")
    assert alice.expect("error") == {
        "type": "error",
        "code": "forbidden",
        "text": "invitation only",
    }
    alice.say("/join #open")
    alice.expect("join", room="#open")


class TopicKeeper:
    """Refuses topics that shout; notes the topics set."""

    def __init__(self) -> None:
        self.set: list[tuple[str, str, str]] = []

    @hookimpl
    def chatkit_allow_topic(self, client: Session, room: str, topic: str) -> Reject | None:
        return Reject("no shouting", "shouting") if topic.isupper() else None

    @hookimpl
    def chatkit_on_topic(self, client: Session, room: str, topic: dict[str, str]) -> None:
        self.set.append((room, topic["topic"], topic["nick"]))


def test_hook_allow_topic(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A Reject from chatkit_allow_topic refuses /topic; nobody sees a change."""
    server = chat_server_factory(plugins=[TopicKeeper()])
    alice = chat_client(server, "alice")
    alice.say("/topic LOUD")
    assert alice.expect("error")["code"] == "shouting"
    assert server.hub.topic("#general") is None


def test_hook_on_account(chat_server_factory: Factory, chat_client: Connect) -> None:
    """chatkit_on_account runs after a command changed the client's account (register,
    logout, identify), after the account frame; a login with a password is not one."""
    seen: list[tuple[str | None, str | None]] = []

    class Watcher:
        @hookimpl
        def chatkit_on_account(self, client: Session) -> None:
            seen.append((client.nick, client.account))

    server = chat_server_factory(plugins=[Watcher()])
    alice = chat_client(server, "alice")
    alice.say("/register correct-horse")
    alice.expect("account", account="alice")
    alice.say("/logout")
    alice.expect("account", account=None)
    alice.say("/identify correct-horse")
    alice.expect("account", account="alice")
    alice.say("/rooms")  # no change: no call
    alice.expect("reply", command="rooms")
    assert seen == [("alice", "alice"), ("alice", None), ("alice", "alice")]
    alice.close()
    again = ChatClient(server.address)
    again.login("alice", password="correct-horse")  # proven at login: on_login's
    again.say("/rooms")
    again.expect("reply", command="rooms")
    assert len(seen) == 3
    again.close()


def test_hook_on_away(chat_server_factory: Factory, chat_client: Connect) -> None:
    """chatkit_on_away runs after the client's away state changed (gone, a new message,
    back), after the away frame; /away while here changes nothing: no call."""
    seen: list[tuple[str | None, str | None]] = []

    class Watcher:
        @hookimpl
        def chatkit_on_away(self, client: Session) -> None:
            seen.append((client.nick, client.away))

    server = chat_server_factory(plugins=[Watcher()])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    for command, text in (("/away lunch", "lunch"), ("/away walk", "walk"), ("/away", None)):
        alice.say(command)
        bob.expect("away", text=text)
    alice.say("/away")  # (here already)
    alice.expect("reply", text="you were not away")
    assert seen == [("alice", "lunch"), ("alice", "walk"), ("alice", None)]


def test_hook_on_account_deleted(chat_server_factory: Factory, chat_client: Connect) -> None:
    """chatkit_on_account_deleted runs once /drop deleted an account, with its name
    (folded), before chatkit_on_account sees the client without it; a plugin raising
    there stops neither the others nor the command."""
    seen: list[tuple[str, object]] = []

    class Broken:
        @hookimpl
        def chatkit_on_account_deleted(self, account: str) -> None:
            raise RuntimeError("boom")

    class Watcher:
        @hookimpl
        def chatkit_on_account_deleted(self, account: str) -> None:
            seen.append(("deleted", account))

        @hookimpl
        def chatkit_on_account(self, client: Session) -> None:
            seen.append(("account", client.account))

    server = chat_server_factory(plugins=[Broken(), Watcher()])
    alice = chat_client(server, "Alice")
    alice.say("/register correct-horse")
    alice.expect("account", account="alice")
    alice.say("/drop correct-horse")
    alice.expect("reply", command="drop")
    alice.expect("account", account=None)
    alice.say("/rooms")  # answered once the /drop's hooks ran (they follow its frames)
    alice.expect("reply", command="rooms")
    assert seen == [("account", "alice"), ("deleted", "alice"), ("account", None)]


def test_hook_on_topic(chat_server_factory: Factory, chat_client: Connect) -> None:
    """chatkit_on_topic sees each topic set (and cleared); hub.restore_topic gives a
    room without a topic a kept one, which its members see as a topic frame."""
    keeper = TopicKeeper()
    server = chat_server_factory(plugins=[keeper])
    alice = chat_client(server, "alice")
    alice.say("/topic quiet please")
    alice.expect("topic", topic="quiet please")
    alice.say("/topic -")
    alice.expect("topic", topic="")
    alice.sync()  # the hook runs after the frame is sent, on alice's reader thread
    assert keeper.set == [("#general", "quiet please", "alice"), ("#general", "", "alice")]
    kept = {"topic": "from before", "nick": "bob", "ts": "2026-01-02T03:04:05.000Z"}
    assert server.hub.restore_topic("#general", kept)
    frame = alice.expect("topic", topic="from before")
    assert (frame["nick"], frame["ts"]) == ("bob", "2026-01-02T03:04:05.000Z")
    assert not server.hub.restore_topic("#general", kept)  # it has one now
    assert not server.hub.restore_topic("#nowhere", kept)
    # replace_topic: a topic set elsewhere (another node): no hook runs, and the same
    # topic again tells nobody.
    elsewhere = {"topic": "from node b", "nick": "carol", "ts": "2026-01-02T03:04:06.000Z"}
    assert server.hub.replace_topic("#general", elsewhere)
    assert alice.expect("topic", topic="from node b")["nick"] == "carol"
    assert not server.hub.replace_topic("#general", elsewhere)
    assert server.hub.replace_topic("#general", {**elsewhere, "topic": ""})
    alice.expect("topic", topic="")
    assert server.hub.topic("#general") is None
    assert not server.hub.replace_topic("#nowhere", elsewhere)
    alice.sync()
    assert len(keeper.set) == 2


def test_hook_allow_join_refusing_the_default_room(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A refused default room does not refuse the login; a text client's welcome says
    there is no room yet."""

    class NoGeneral:
        @hookimpl
        def chatkit_allow_join(self, client: Session, room: str) -> Reject | None:
            return Reject("closed today") if room == "#general" else None

    server = chat_server_factory(plugins=[NoGeneral()])
    alice = chat_client(server)
    assert alice.login("alice")["rooms"] == []
    assert "closed today" in alice.expect("error")["text"]
    with TextClient(server.address) as nc:
        nc.send_line("gina")
        assert nc.expect("Welcome").endswith(
            "gina! You are in no room yet. Type /help for commands."
        )


def test_hook_allow_login_that_raises_fails_closed(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A veto hook that raises refuses the login with internal_error."""

    class Crashing:
        @hookimpl
        def chatkit_allow_login(self, client: Session, nick: str) -> None:
            raise RuntimeError("db down")

    server = chat_server_factory(plugins=[Crashing()])
    client = chat_client(server)
    client.send(type="hello", nick="alice")
    assert client.expect("error")["code"] == "internal_error"


def test_a_veto_or_filter_answer_of_the_wrong_type_fails_closed(
    chat_server_factory: Factory, chat_client: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """A veto's ``True`` or a filter's ``message`` is no answer: taken for one, it would
    skip every later plugin (a ban, a word filter). It refuses, and the log says why."""

    class Sloppy:
        @hookimpl
        def chatkit_allow_join(self, client: Session, room: str) -> object:
            return "fine by me" if room == "#open" else None

        @hookimpl
        def chatkit_filter_message(self, client: Session, message: Message) -> object:
            return message if message.text == "as is" else None

    class Banning:  # after Sloppy: what it would have skipped
        @hookimpl
        def chatkit_allow_join(self, client: Session, room: str) -> Reject | None:
            return Reject("banned", "banned") if room == "#open" else None

    server = chat_server_factory(plugins=[Sloppy(), Banning()])
    alice = chat_client(server, "alice")
    alice.say("/join #open")
    assert alice.expect("error")["code"] == "internal_error"
    alice.say("as is")
    assert alice.expect("error")["code"] == "dropped"
    alice.say("fine")
    alice.expect("message", text="fine")
    assert "returned 'fine by me' from chatkit_allow_join, which takes None or Reject" in (
        caplog.text
    )
    assert "which takes None or Drop: refused" in caplog.text


def test_hook_on_login(chat_client: Connect, hook_recorder: HookRecorder) -> None:
    """chatkit_on_login runs after the welcome, with the nick set, before on_join."""
    chat_client("alice").sync()  # its reader handled the login, hooks included
    chat_client("bob").sync()
    calls = hook_recorder.getcalls("chatkit_on_login")
    assert [c["client"].nick for c in calls] == ["alice", "bob"]
    names = hook_recorder.names()
    assert names.index("chatkit_on_login") < names.index("chatkit_on_join")
    assert names.index("chatkit_allow_login") < names.index("chatkit_on_login")


def test_hook_on_join(chat_client: Connect, hook_recorder: HookRecorder) -> None:
    """chatkit_on_join runs for the default room and for /join."""
    alice = chat_client("alice")
    alice.say("/join #x")
    alice.expect("join", room="#x")
    alice.sync()
    rooms = [c["room"] for c in hook_recorder.getcalls("chatkit_on_join")]
    assert rooms == ["#general", "#x"]


def test_hook_on_nick(chat_client: Connect, hook_recorder: HookRecorder) -> None:
    """chatkit_on_nick gets the old nick; client.nick is the new one."""
    alice = chat_client("alice")
    alice.say("/nick alicia")
    alice.expect("nick")
    alice.sync()
    (call,) = hook_recorder.getcalls("chatkit_on_nick")
    assert call["old"] == "alice" and call["client"].nick == "alicia"


def test_hook_on_leave(chat_client: Connect, hook_recorder: HookRecorder) -> None:
    """chatkit_on_leave runs for /part and for every room at logout, with the reason."""
    chat_client("alice")
    bob = chat_client("bob")
    bob.say("/join #x")
    bob.expect("join", room="#x")
    bob.say("/part #x bored")
    bob.expect("leave", room="#x")
    bob.say("/join #y")
    bob.expect("join", room="#y")
    bob.close()
    calls = [(c["room"], c["reason"]) for c in hook_recorder.wait("chatkit_on_leave", 3)]
    assert calls[0] == ("#x", "part: bored")
    assert sorted(calls[1:]) == [("#general", "connection closed"), ("#y", "connection closed")]


def test_hook_on_logout(chat_client: Connect, hook_recorder: HookRecorder) -> None:
    """chatkit_on_logout runs once per logged-in client, after its leaves, however it went."""
    chat_client("alice")
    bob = chat_client("bob")
    never = chat_client()  # not logged in: no logout hook
    never.close()
    bob.say("/quit bye")
    calls = hook_recorder.wait("chatkit_on_logout")
    assert [(c["client"].nick, c["reason"]) for c in calls] == [("bob", "quit: bye")]
    names = hook_recorder.names()
    assert names.index("chatkit_on_leave") < names.index("chatkit_on_logout")


class Censor:
    name = "censor"

    @hookimpl
    def chatkit_filter_message(self, client: Session, message: Message) -> Drop | None:
        if "spam" in message.text:
            return Drop("no spam here")
        message.text = message.text.replace("darn", "d**n")
        return None


def test_hook_filter_message(chat_server_factory: Factory, chat_client: Connect) -> None:
    """Filters may change text in place or drop the message, for rooms and private messages."""
    server = chat_server_factory(plugins=[Censor()])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.say("darn it")
    assert bob.expect("message")["text"] == "d**n it"
    alice.say("buy spam")
    assert alice.expect("error") == {
        "type": "error",
        "code": "dropped",
        "text": "message not delivered: no spam here",
    }
    alice.say("/msg bob darn spam")
    assert alice.expect("error")["code"] == "dropped"
    alice.say("/msg bob darn")
    assert bob.expect("private")["text"] == "d**n"
    alice.say("/me says darn")
    assert bob.expect("message")["text"] == "says d**n"
    assert not [f for f in bob.sync() if "spam" in str(f.get("text"))]


def test_hook_on_message(chat_client: Connect, hook_recorder: HookRecorder) -> None:
    """chatkit_on_message runs once per message (not per recipient), with id and ts set."""
    alice = chat_client("alice")
    chat_client("bob")
    chat_client("carol")
    alice.say("hello")
    alice.say("/msg bob psst")
    alice.expect("private")
    alice.sync()
    calls = hook_recorder.getcalls("chatkit_on_message")
    assert [(c["message"].text, c["message"].room, c["message"].to) for c in calls] == [
        ("hello", "#general", None),
        ("psst", None, "bob"),
    ]
    assert all(isinstance(c["message"].id, int) and c["message"].ts for c in calls)


def test_hooks_may_call_back_into_the_server(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """No lock is held while a hook runs: a hook can send and join (no deadlock)."""

    class Echo:
        @hookimpl
        def chatkit_on_join(self, client: Session, room: str) -> None:
            client.notice(f"welcome to {room}")

        @hookimpl
        def chatkit_on_message(self, client: Session, message: Message) -> None:
            if message.text == "take me":
                server.hub.join(client, "#taken")

    server = chat_server_factory(plugins=[Echo()])
    alice = chat_client(server, "alice")
    assert alice.expect("notice")["text"] == "welcome to #general"
    alice.say("take me")
    alice.expect("join", room="#taken")
    assert re.match("welcome to #taken", alice.expect("notice")["text"])


class GatedStore:
    """Stores messages in a list; holds any message whose text starts with "slow"
    until the test opens the gate."""

    def __init__(self) -> None:
        self.stored: list[Message] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self._changed = threading.Condition()  # guards stored

    def wait_stored(self, texts: list[str]) -> None:
        with self._changed:
            ok = self._changed.wait_for(lambda: [m.text for m in self.stored] == texts, DEADLINE)
        assert ok, f"stored {[m.text for m in self.stored]}, not {texts}"

    @hookimpl
    def chatkit_store_message(self, client: Session, message: Message) -> Drop | None:
        if message.text.startswith("slow"):
            self.entered.set()
            assert self.gate.wait(DEADLINE), "the test never opened the gate"
        if message.text == "refuse me":
            return Drop("the disk is full")
        if message.text == "crash me":
            raise OSError("disk on fire")
        with self._changed:
            self.stored.append(message)
            self._changed.notify_all()
        return None


DEADLINE = 5.0  # seconds a test's helper thread waits for the test


def test_hook_store_message(chat_server_factory: Factory, chat_client: Connect) -> None:
    """Nobody receives a message before it is stored; later ids wait for earlier ones."""
    store = GatedStore()
    server = chat_server_factory(plugins=[store], disable=["flood"])
    alice, bob, carol = (chat_client(server, n) for n in ("alice", "bob", "carol"))
    alice.say("slow one")
    assert store.entered.wait(DEADLINE)
    bob.say("fast two")  # stored at once, but its id is after "slow one"'s
    store.wait_stored(["fast two"])
    # Stored, yet delivered to nobody: "slow one" comes first and is not stored yet.
    assert not [f for f in carol.sync() if f["type"] == "message"]
    store.gate.set()
    first, second = carol.expect("message"), carol.expect("message")
    assert (first["text"], second["text"]) == ("slow one", "fast two")
    assert first["id"] < second["id"]
    assert [f["text"] for f in bob.sync() if f["type"] == "message"] == ["slow one", "fast two"]
    assert sorted(m.text for m in store.stored) == ["fast two", "slow one"]


def test_a_rename_is_told_after_the_messages_being_stored(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A rename on another thread (the accounts plugin moving a guest off a registered
    nick) while the client's message is being stored: the others get the message,
    under the old nick, before the nick frame, never after it (once the nick is
    someone else's, it would read as theirs). The client gets its own at once."""
    store = GatedStore()
    server = chat_server_factory(plugins=[store], disable=["flood"])
    alice, carol = chat_client(server, "alice"), chat_client(server, "carol")
    session = server.hub.find("alice")
    assert session is not None
    alice.say("slow one")
    assert store.entered.wait(DEADLINE)
    server.hub.rename(session, "Guest9", forced=True)
    assert server.hub.find("Guest9") is session  # renamed at once
    alice.expect("nick", new="Guest9")
    assert not [f for f in carol.sync() if f["type"] in ("message", "nick")]
    store.gate.set()
    message, nick = carol.expect("message"), carol.expect("nick")
    assert (message["nick"], message["text"]) == ("alice", "slow one")
    assert (nick["old"], nick["new"]) == ("alice", "Guest9")


def test_a_leave_comes_after_the_nick_frame_it_names(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A client renamed (on another thread) while its room's lane holds someone's
    message being stored, which then quits: the others get the message, the nick
    frame, then the leave naming the new nick, never the leave first (an IRC client
    would keep a ghost of the new nick in its list)."""
    store = GatedStore()
    server = chat_server_factory(plugins=[store], disable=["flood"])
    alice, bob, carol = (chat_client(server, n) for n in ("alice", "bob", "carol"))
    session = server.hub.find("alice")
    assert session is not None
    bob.say("slow from bob")
    assert store.entered.wait(DEADLINE)
    server.hub.rename(session, "Guest9", forced=True)
    alice.close()
    wait_until(lambda: server.hub.find("Guest9") is None, DEADLINE)
    assert not [f for f in carol.sync() if f["type"] in ("message", "nick", "leave")]
    store.gate.set()
    assert carol.expect("message")["text"] == "slow from bob"
    assert carol.expect("nick")["new"] == "Guest9"
    assert carol.expect("leave")["nick"] == "Guest9"


def test_hook_store_message_refusal_and_crash_deliver_nothing(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A Drop or an exception from the store: the sender gets not_stored, nobody the message."""
    store = GatedStore()
    server = chat_server_factory(plugins=[store])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.say("refuse me")
    assert alice.expect("error") == {
        "type": "error",
        "code": "not_stored",
        "text": "message not delivered: the disk is full",
        "room": "#general",
    }
    alice.say("/msg bob crash me")
    error = alice.expect("error")
    assert error["code"] == "not_stored" and "plugin 'GatedStore" in error["text"]
    alice.say("fine")
    assert bob.expect("message")["text"] == "fine"
    assert not [f for f in bob.sync() if f["type"] in ("message", "private")]
    assert [m.text for m in store.stored] == ["fine"]


class Replayer(GatedStore):
    """Replays every stored message of the room; holds bob's replay of "#slow" until the
    gate opens."""

    @hookimpl
    def chatkit_room_replay(self, client: Session, room: str, last_id: int) -> list[Frame]:
        if room == "#slow" and client.nick == "bob":
            self.entered.set()
            assert self.gate.wait(DEADLINE), "the test never opened the gate"
        with self._changed:
            mine = [m for m in self.stored if m.room == room and (m.id or 0) <= last_id]
            mine.sort(key=lambda m: m.id or 0)
        return [message_frame(m, history=True) for m in mine] + [Frame("history", room=room)]


def test_hook_room_replay(chat_server_factory: Factory, chat_client: Connect) -> None:
    """The joiner gets its join, the replay, then live messages: none lost, none twice."""
    store = Replayer()
    server = chat_server_factory(plugins=[store], disable=["flood"])
    alice, bob, carol = (chat_client(server, n) for n in ("alice", "bob", "carol"))
    assert alice.expect("history") == {"type": "history", "room": "#general"}
    for client in (alice, carol):
        client.say("/join #slow")
        client.expect("join", room="#slow", nick=client.nick)
    alice.say("one", room="#slow")
    alice.expect("message", text="one")
    bob.say("/join #slow")
    assert store.entered.wait(DEADLINE)  # bob's replay is being read...
    alice.say("two", room="#slow")  # ...so this waits for it, and reaches bob live
    store.wait_stored(["one", "two"])
    assert [f["text"] for f in carol.sync() if f["type"] == "message"] == ["one"]
    store.gate.set()
    # "two" reaches every member in one fan-out once bob's join is through, but alice's
    # thread may mark it stored a moment after wait_stored() saw it: wait for carol to
    # have it, so that bob's ping (sync) is read after it was queued to bob.
    assert carol.expect("message")["text"] == "two"
    frames = [f for f in bob.sync() if f.get("room") == "#slow"]
    assert [(f["type"], f.get("text"), f.get("history")) for f in frames] == [
        ("join", None, None),
        ("message", "one", True),
        ("history", None, None),
        ("message", "two", None),
    ]


class Echoer:
    @hookimpl
    def chatkit_handle_request(self, client: Session, request: Request) -> bool | Reject | None:
        if request.type != "echo":
            return None
        if request.fields.get("boom"):
            raise RuntimeError("boom")
        if not isinstance(request.fields.get("text"), str):
            return Reject("echo needs 'text' as a string", "bad_frame")
        client.send(Frame("echoed", text=request.fields["text"]))
        return True


class NotMine:
    """Answers False ("not mine") for every request it does not handle."""

    @hookimpl(tryfirst=True)
    def chatkit_handle_request(self, client: Session, request: Request) -> bool:
        return False


def test_hook_check_ready(chat_server_factory: Factory) -> None:
    """A ping with "ready": true is answered with what each plugin's chatkit_check_ready
    names (one that raises or answers something else than text counts as a problem,
    named), before login too; a plain ping gets a plain pong and asks no plugin."""

    class Checks:
        asked = 0

        def __init__(self, name: str, answer: Any) -> None:
            self.name, self.answer = name, answer

        @hookimpl
        def chatkit_check_ready(self) -> str | None:
            Checks.asked += 1
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer  # type: ignore[no-any-return]

    checks = [Checks("fine", None), Checks("disk", "disk: full"), Checks("broken", OSError())]
    server = chat_server_factory(plugins=[*checks, Checks("odd", 42)])
    with ChatClient(server.address) as client:  # not logged in
        client.send(type="ping")
        assert client.expect("pong") == {"type": "pong"} and Checks.asked == 0
        client.send(type="ping", ready=True)
        pong = client.expect("pong")
        assert pong["ready"] is False and Checks.asked == 4
        client.send(type="ping", ready=True)  # within the second: the answer given
        assert client.expect("pong") == pong and Checks.asked == 4
        assert sorted(pong["problems"]) == [
            "broken: its readiness check failed",
            "disk: full",
            "odd: its readiness check failed",
        ]
    ready = chat_server_factory(plugins=[Checks("fine", None)])
    with ChatClient(ready.address) as client:
        assert client.ready() == []


def test_one_reader_at_a_time_asks_whether_the_server_is_ready(
    chat_server_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one ready ping's reader asks the plugins (a slow check), the others answer
    with the last answer at once instead of asking too."""
    release, asked = threading.Event(), []

    class Slow:
        @hookimpl
        def chatkit_check_ready(self) -> str | None:
            asked.append(threading.current_thread().name)
            if len(asked) > 1:
                release.wait(DEADLINE)  # the second ask: slow until the test lets it go
            return f"ask {len(asked)}"

    server = chat_server_factory(plugins=[Slow()])
    with ChatClient(server.address) as first:
        assert first.ready() == ["ask 1"]
    monkeypatch.setattr(chatkit.hub, "READY_EVERY", 0.0)  # every ping would ask
    slow = ChatClient(server.address)
    others = [ChatClient(server.address) for _ in range(4)]
    try:
        slow.send(type="ping", ready=True)
        wait_until(lambda: len(asked) == 2, DEADLINE, "the second ask under way")
        for client in others:
            assert client.ready() == ["ask 1"]  # the last answer, while the ask goes on
        assert len(asked) == 2
        release.set()
        assert slow.expect("pong")["problems"] == ["ask 2"]
    finally:
        release.set()
        for client in (slow, *others):
            client.close()


def test_hook_handle_request(chat_server_factory: Factory, chat_client: Connect) -> None:
    """Plugins answer frame types of their own, before login too (a registration may come
    first); unknown types and failures get errors. A plugin's False is "not mine", as
    None is: it hides nothing from the others."""
    server = chat_server_factory(plugins=[Echoer(), NotMine()])
    client = chat_client(server)
    client.send(type="echo", text="before login")
    assert client.expect("echoed") == {"type": "echoed", "text": "before login"}
    client.send(type="nosuch")
    assert client.expect("error")["code"] == "not_logged_in"
    client.send(type="history")  # the builtin's request needs a nick
    assert client.expect("error")["code"] == "not_logged_in"
    client.login("alice")
    client.send(type="echo", text="hi")
    assert client.expect("echoed") == {"type": "echoed", "text": "hi"}
    client.send(type="echo", text=3)
    assert client.expect("error") == {
        "type": "error",
        "code": "bad_frame",
        "text": "echo needs 'text' as a string",
    }
    client.send(type="echo", boom=True)
    assert client.expect("error")["code"] == "internal_error"
    client.send(type="nosuch")
    error = client.expect("error")
    assert error["code"] == "bad_frame" and "unknown frame type 'nosuch'" in error["text"]
    client.send(type="Bad Type!")
    assert client.expect("error")["code"] == "bad_frame"


class RunStore:
    """Stores runs (``chatkit_store_messages``): notes each call's texts and answers
    one future for all of it, completed at once; refuses "refuse ..." messages."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self._changed = threading.Condition()  # guards calls

    @hookimpl
    def chatkit_store_messages(
        self, client: Session, messages: Sequence[Message]
    ) -> list[Future[None] | Drop]:
        done: Future[None] = Future()
        done.set_result(None)
        with self._changed:
            self.calls.append([m.text for m in messages])
            self._changed.notify_all()
        return [Drop("no refusals here") if m.text.startswith("refuse") else done for m in messages]

    def wait_for(self, count: int) -> list[list[str]]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.calls) >= count, DEADLINE)
            return list(self.calls)


def test_hook_store_messages(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A burst of chat lines read at once is stored with one call; a message refused
    in it is reported on its turn; a lone message and a private one get a call each."""
    store = RunStore()
    server = chat_server_factory(plugins=[store], disable=["flood"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    burst = ("one", "refuse two", "three")
    alice.send_raw(b"".join(json.dumps(say_frame(t)).encode() + b"\n" for t in burst))
    assert store.wait_for(1) == [["one", "refuse two", "three"]]
    frames = [f for f in alice.sync() if f["type"] in ("message", "error")]
    assert [(f["type"], f.get("text")) for f in frames] == [
        ("message", "one"),
        ("error", "message not delivered: no refusals here"),
        ("message", "three"),
    ]
    assert [f["text"] for f in bob.sync() if f["type"] == "message"] == ["one", "three"]
    alice.say("/msg bob psst")
    assert bob.expect("private")["text"] == "psst"
    assert store.wait_for(2)[1:] == [["psst"]]


class FutureStore:
    """Answers every store call with a future the test completes."""

    def __init__(self) -> None:
        self.futures: list[tuple[str, Future[None]]] = []
        self._changed = threading.Condition()

    @hookimpl
    def chatkit_store_message(self, client: Session, message: Message) -> Future[None]:
        future: Future[None] = Future()
        with self._changed:
            self.futures.append((message.text, future))
            self._changed.notify_all()
        return future

    def wait_for(self, count: int) -> list[tuple[str, Future[None]]]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.futures) >= count, DEADLINE)
            return list(self.futures)


def test_hook_store_message_with_futures_pipelines_a_clients_lines(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A future lets the sender's next lines be read while earlier ones are stored; they
    are delivered in order once stored, a failed one is refused, and a ping is answered
    after all of them."""
    store = FutureStore()
    server = chat_server_factory(plugins=[store], disable=["flood"])
    recorder = HookRecorder()
    recorder.attach(server)
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.send_raw(b"".join(json.dumps(say_frame(t)).encode() + b"\n" for t in "abc"))
    alice.send(type="ping")
    pending = store.wait_for(3)  # all three read before any is stored
    assert [text for text, _ in pending] == ["a", "b", "c"]
    assert not [f for f in bob.sync() if f["type"] == "message"]
    pending[1][1].set_exception(OSError("disk on fire"))
    pending[2][1].set_result(None)
    assert not [f for f in bob.sync() if f["type"] == "message"]  # "a" holds up the others
    pending[0][1].set_result(None)
    assert [f["text"] for f in (bob.expect("message"), bob.expect("message"))] == ["a", "c"]
    # sync() returns what came before the first pong: the answer to the ping sent
    # right after the three lines comes after all three outcomes.
    frames = [f for f in alice.sync() if f["type"] in ("message", "error")]
    assert [(f["type"], f.get("text", "")[:14]) for f in frames] == [
        ("message", "a"),
        ("error", "message not de"),
        ("message", "c"),
    ]
    assert frames[1]["code"] == "not_stored" and "disk on fire" in frames[1]["text"]
    calls = recorder.wait("chatkit_on_message", 2)
    assert [c["message"].text for c in calls] == ["a", "c"]


class SometimesStore:
    """Stores through a future, except messages starting with "skip" (not stored at all)."""

    @hookimpl
    def chatkit_store_message(self, client: Session, message: Message) -> Future[None] | None:
        if message.text.startswith("skip"):
            return None
        future: Future[None] = Future()
        threading.Timer(0.05, future.set_result, (None,)).start()  # a slow commit
        return future


def test_hook_store_message_mixing_futures_and_none(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A message stored at once right after one still being stored (same client) waits for
    it instead of for itself: both arrive, in order."""
    server = chat_server_factory(plugins=[SometimesStore()], disable=["flood", "history"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.send_raw(b'{"type":"say","text":"slow"}\n{"type":"say","text":"skip me"}\n')
    assert [bob.expect("message")["text"] for _ in range(2)] == ["slow", "skip me"]


def test_a_plugin_registered_or_unregistered_while_serving_takes_effect(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """The hook runner keeps each hook's implementations between calls; registering
    or unregistering a plugin on the running server's manager renews them."""

    class Shout:
        @hookimpl
        def chatkit_filter_message(self, client: Session, message: Message) -> None:
            message.text = message.text.upper()

    server = chat_server_factory()
    alice = chat_client(server, "alice")
    alice.say("before")
    assert alice.expect("message")["text"] == "before"
    shout = Shout()
    server.pluginmanager.register(shout, name="shout")
    alice.say("during")
    assert alice.expect("message")["text"] == "DURING"
    server.pluginmanager.unregister(shout)
    alice.say("after")
    assert alice.expect("message")["text"] == "after"


class _Plain:
    @hookimpl
    def chatkit_store_message(self, client: Session, message: Message) -> None:
        return None


class _First:
    @hookimpl(tryfirst=True)
    def chatkit_store_message(self, client: Session, message: Message) -> None:
        return None


class _Last:
    @hookimpl(trylast=True)
    def chatkit_store_message(self, client: Session, message: Message) -> None:
        return None


class _Runs:
    @hookimpl
    def chatkit_store_messages(self, client: Session, messages: list[Message]) -> None:
        return None


def test_store_hooks_as_one_keep_pluggys_order() -> None:
    """HookRunner.ordered(): for one hook, the order pluggy calls it in (tryfirst, the
    others, trylast; the last registered first, but for trylast); a plugin of the
    other hook takes its place among them by the same rules."""
    pm = new_plugin_manager()
    plugins = {"a": _Last(), "b": _Last(), "c": _First(), "d": _Plain(), "e": _Plain()}
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    runner = HookRunner(pm)
    single = [impl.plugin_name for impl in runner.impls("chatkit_store_message")]
    assert single == ["c", "e", "d", "a", "b"]  # pluggy's own order
    names = ("chatkit_store_messages", "chatkit_store_message")
    assert [impl.plugin_name for _n, impl in runner.ordered(names)] == single
    pm.register(_Runs(), name="r")  # registered last: first of the plain ones
    assert [impl.plugin_name for _n, impl in runner.ordered(names)] == [
        "c",
        "r",
        "e",
        "d",
        "a",
        "b",
    ]


class GreetsInReplay:
    """A replay hook that breaks its rules: it greets into the room it replays (the hub
    refuses: the join holds the room), or answers with items that are not frames."""

    def __init__(self) -> None:
        self.hub: Any = None
        self.errors: list[BaseException] = []

    @hookimpl
    def chatkit_server_start(self, server: Server) -> None:
        self.hub = server.hub

    @hookimpl
    def chatkit_room_replay(self, client: Session, room: str, last_id: int) -> list[Any]:
        if room == "#bad":
            return [{"type": "notice", "text": "a dict, not a Frame"}]
        bot = self.hub.find("bot")
        if bot is not None and client is not bot:
            try:
                self.hub.say(bot, room, f"welcome {client.nick}")
            except RuntimeError as exc:
                self.errors.append(exc)
        return []


def test_a_replay_hook_that_breaks_its_rules_holds_up_nobody(
    chat_server_factory: Factory, chat_client: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """A say into the room being replayed is refused with RuntimeError (it would wait
    behind the join, which waits for the hook: forever); a replay of things that are
    not frames is logged and the client joins without it. The room goes on."""
    plugin = GreetsInReplay()
    server = chat_server_factory(plugins=[plugin], disable=["history"])
    bot = chat_client(server, "bot")
    alice = chat_client(server, "alice")  # the hook greets: refused, alice is in
    assert "chatkit_room_replay for the room it replays" in str(plugin.errors[0])
    bot.say("/join #bad")
    bot.expect("join", room="#bad")
    alice.say("/join #bad")
    alice.expect("join", room="#bad", nick="alice")
    assert "returned items that are not Frames" in caplog.text
    alice.say("still going", room="#bad")
    assert bot.expect("message", room="#bad")["text"] == "still going"
