"""Plugin loading, discovery, ordering and failure isolation."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatkit import Config, Drop, Message, Register, Server, Session, UsageError, hookimpl
from chatkit.plugins import (
    DEFAULT_PLUGINS,
    ESSENTIAL_PLUGINS,
    build_plugin_manager,
    list_plugins,
    resolve_plugin,
)
from chatkit.testing import ChatClient, TextClient

Connect = Callable[..., ChatClient]
Factory = Callable[..., Server]


def install_distribution(
    site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]
) -> None:
    """Lay out an installed distribution (dist-info with entry points) under ``site``."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[chatkit.plugins]\n{lines}\n")
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))


GREETER = """
from chatkit import hookimpl

@hookimpl
def chatkit_on_login(client):
    client.notice(f"hello, {client.nick}")

@hookimpl
def chatkit_register_commands(register):
    register("greet", lambda ctx: ctx.reply("hi!"), help="say hi")
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path holding installed test distributions."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


def test_an_installed_plugin_is_found_but_not_enabled(
    site: Path, chat_client: Connect, chat_server_factory: Factory
) -> None:
    """An entry-point plugin is listed, off until named, and works once enabled."""
    install_distribution(
        site, "chatkit-greeter", "1.2.3", {"greeter": "greeter_mod"}, {"greeter_mod": GREETER}
    )
    rows = {r.name: r for r in list_plugins()}
    assert rows["greeter"].package == "chatkit-greeter"
    assert rows["greeter"].version == "1.2.3"
    assert rows["greeter"].default == "off"
    assert rows["greeter"].hooks == ["chatkit_on_login", "chatkit_register_commands"]
    assert rows["greeter"].commands == ["greet"]
    plain = chat_server_factory()
    assert "greeter" not in {name for name, _ in plain.pluginmanager.list_name_plugin()}
    server = chat_server_factory(plugins=["greeter"])
    alice = chat_client(server, "alice")
    assert alice.expect("notice")["text"] == "hello, alice"
    alice.say("/greet")
    assert alice.expect("reply")["text"] == "hi!"


def test_two_packages_giving_one_plugin_name_are_logged(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two installed packages with a plugin of one name: the first is used, and the
    log names both (the other is never loaded)."""
    install_distribution(
        site, "chatkit-greeter", "1.2.3", {"greeter": "greeter_mod"}, {"greeter_mod": GREETER}
    )
    install_distribution(
        site, "chatkit-other", "0.1", {"greeter": "other_mod"}, {"other_mod": GREETER}
    )
    with caplog.at_level("WARNING", logger="chatkit.plugins"):
        list_plugins()
    assert "two installed packages give a plugin called 'greeter'" in caplog.text
    assert "chatkit-greeter" in caplog.text and "chatkit-other" in caplog.text


def test_a_broken_installed_plugin_is_an_error_row_and_a_clear_startup_error(site: Path) -> None:
    """A plugin that fails to import shows as an error row; enabling it names it and its package."""
    install_distribution(
        site,
        "chatkit-broken",
        "0.1",
        {"broken": "broken_mod"},
        {"broken_mod": "import no_such_dependency_xyz\n"},
    )
    rows = {r.name: r for r in list_plugins()}
    assert "no_such_dependency_xyz" in (rows["broken"].error or "")
    with pytest.raises(UsageError) as info:
        Server(port=0, plugins=["broken"])
    message = str(info.value)
    assert message.startswith("cannot import plugin 'broken' (package chatkit-broken 0.1): ")
    assert "no_such_dependency_xyz" in message


def test_unknown_plugin_suggests_a_close_name() -> None:
    """A misspelt plugin name gets 'Did you mean' and the list of names."""
    with pytest.raises(UsageError) as info:
        resolve_plugin("room")
    assert "Unknown plugin 'room'. Did you mean 'rooms'?" in str(info.value)
    assert "help" in str(info.value)


def test_a_dotted_module_path_is_a_plugin(
    site: Path, chat_client: Connect, chat_server_factory: Factory
) -> None:
    """--plugin pkg.module loads a module that is not packaged."""
    pkg = site / "localplugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "greet.py").write_text(GREETER)
    server = chat_server_factory(plugins=["localplugins.greet"])
    alice = chat_client(server, "alice")
    assert alice.expect("notice")["text"] == "hello, alice"
    with pytest.raises(UsageError, match=r"Unknown plugin 'localplugins\.nope'") as nope:
        resolve_plugin("localplugins.nope")
    assert "no module 'localplugins.nope' on the Python path" in str(nope.value)
    # A module path Python does not find at all: where it looked, and how to fix it.
    with pytest.raises(UsageError, match=r"no module 'mine' on the Python path.*PYTHONPATH=\."):
        resolve_plugin("mine.shout:Shout")
    # A module it imports that is missing is the plugin's error, not an unknown plugin.
    (site / "slack_notify.py").write_text("import slack\n")
    with pytest.raises(UsageError, match=r"cannot import plugin 'slack_notify'.*No module named"):
        resolve_plugin("slack_notify")


def test_essential_plugins_cannot_be_disabled() -> None:
    """--no-plugin help is refused with a reason."""
    with pytest.raises(UsageError, match="plugin 'help' cannot be disabled"):
        build_plugin_manager(Config(disable=["help"]))


def test_disabling_an_unknown_plugin_is_an_error() -> None:
    """--no-plugin with a typo is not silently ignored."""
    with pytest.raises(UsageError, match="Did you mean 'log'"):
        build_plugin_manager(Config(disable=["logg"]))


def test_default_plugins_can_be_disabled(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """--no-plugin rooms removes its commands; the rest works."""
    server = chat_server_factory(config=Config(disable=["rooms"]))
    names = {name for name, _ in server.pluginmanager.list_name_plugin()}
    assert names == set(ESSENTIAL_PLUGINS + DEFAULT_PLUGINS) - {"rooms"}
    alice = chat_client(server, "alice")
    alice.say("/join #x")
    assert alice.expect("error")["code"] == "unknown_command"


class Tagger:
    """A filter that appends its tag, to see the call order."""

    def __init__(self, tag: str) -> None:
        self.name = tag

    @hookimpl
    def chatkit_filter_message(self, client: Session, message: Message) -> None:
        message.text += f" {self.name}"


class FirstTagger(Tagger):
    @hookimpl(tryfirst=True)
    def chatkit_filter_message(self, client: Session, message: Message) -> None:
        message.text += f" {self.name}"


def test_plugins_run_in_the_order_given(chat_server_factory: Factory, chat_client: Connect) -> None:
    """Filters run in the order plugins were named; tryfirst overrides it."""
    server = chat_server_factory(plugins=[Tagger("a"), Tagger("b"), FirstTagger("first")])
    alice = chat_client(server, "alice")
    alice.say("x")
    assert alice.expect("message")["text"] == "x first a b"


class Exploding:
    name = "exploding"

    @hookimpl
    def chatkit_on_message(self, client: Session, message: Message) -> None:
        raise RuntimeError("kaboom")

    @hookimpl
    def chatkit_on_login(self, client: Session) -> None:
        raise RuntimeError("kaboom at login")


class Counting:
    name = "counting"

    def __init__(self) -> None:
        self.messages: list[str] = []

    @hookimpl
    def chatkit_on_message(self, client: Session, message: Message) -> None:
        self.messages.append(message.text)


def test_a_failing_plugin_is_logged_and_others_go_on(
    chat_server_factory: Factory, chat_client: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """A notify hook that raises is logged with the plugin's name; other plugins still run."""
    counting = Counting()
    server = chat_server_factory(plugins=[Exploding(), counting])
    alice = chat_client(server, "alice")
    alice.say("hello")
    alice.expect("message")
    alice.sync()
    assert counting.messages == ["hello"]
    assert "plugin 'exploding' failed in chatkit_on_message" in caplog.text
    assert "plugin 'exploding' failed in chatkit_on_login" in caplog.text


class BrokenFilter:
    name = "brokenfilter"

    @hookimpl
    def chatkit_filter_message(self, client: Session, message: Message) -> Drop | None:
        raise ValueError("bad regex")


def test_a_failing_filter_fails_closed(
    chat_server_factory: Factory, chat_client: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """If a filter raises, the message is not delivered and the sender is told."""
    server = chat_server_factory(plugins=[BrokenFilter()])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.say("hello")
    error = alice.expect("error")
    assert error["code"] == "dropped" and "brokenfilter" in error["text"]
    assert not [f for f in bob.sync() if f["type"] == "message"]
    assert "plugin 'brokenfilter' failed in chatkit_filter_message" in caplog.text


class Rewrites:
    """Rewrites every message as told (``by``: the text, or anything), and announces
    ``!echo``'s words to the room."""

    by: Any = None

    @hookimpl
    def chatkit_filter_message(self, client: Session, message: Message) -> None:
        if message.text.startswith("!echo "):
            assert self.hub is not None and message.room is not None
            self.hub.announce("echo: " + message.text[6:], message.room)
        elif self.by is not None:
            message.text = self.by

    hub: Any = None


def test_text_a_plugin_makes_is_checked_as_a_clients(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A filter's text is made text, cleaned of control characters and cut to
    max_message_lines, and an empty one is not delivered; an announcement of several
    lines shows each marked as the notice's in text mode (none passes for chat)."""
    plugin = Rewrites()
    server = chat_server_factory(plugins=[plugin], disable=["flood"])
    plugin.hub = server.hub
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    for by, seen in [
        ("\x1b[2J\x07red\u202e", "\ufffd[2J\ufffdred\ufffd"),
        ("\n".join(map(str, range(100))), "\n".join(map(str, range(20)))),
        (42, "42"),
    ]:
        plugin.by = by
        alice.say("anything")
        assert bob.expect("message")["text"] == seen
    plugin.by = ""
    alice.say("anything")
    assert alice.expect("error", code="dropped")["text"].endswith("a filter left it empty")
    plugin.by = None
    carol = TextClient(server.address)
    carol.send_line("carol")
    carol.expect(lambda line: "earlier messages of #general" in line)  # (in the room now)
    alice.say("!echo hi\n[#general] <bob> forged")
    carol.expect("*** echo: hi")  # (no [#general] before it: the notice names the room)
    assert carol.expect(lambda line: "forged" in line) == "*** [#general] <bob> forged"
    carol.close()


class Wrapper:
    @hookimpl(wrapper=True)
    def chatkit_on_message(self, client: Session, message: Message):  # type: ignore[no-untyped-def]
        return (yield)


class Registers:
    """Registers one command as told: ``(name, handler)``."""

    def __init__(self, name: str, handler: Any) -> None:
        self.name, self.handler = name, handler

    @hookimpl
    def chatkit_register_commands(self, register: Register) -> None:
        register(self.name, self.handler, help="x")


def test_a_bad_command_name_or_handler_is_a_startup_error() -> None:
    """A command's name breaking the rule is refused saying the rule; a handler that
    takes no context (it would fail only when typed) is refused at once."""
    with pytest.raises(UsageError, match="bad command name 'Bad Name': a name is letters"):
        Server(port=0, plugins=[Registers("Bad Name", lambda ctx: None)]).start()
    with pytest.raises(UsageError, match="/roll with a handler that does not take one"):
        Server(port=0, plugins=[Registers("roll", lambda: None)]).start()


class HalfMarked:
    @hookimpl
    def chatkit_on_login(self, client: Session) -> None:
        pass

    def chatkit_on_message(self, client: Session, message: Message) -> None:
        pass  # (no @hookimpl: never called)


class SpecNamed:
    @hookimpl(specname="chatkit_on_login")
    def chatkit_on_login_audit(self, client: Session) -> None:
        pass


def test_a_hook_without_hookimpl_beside_marked_ones_is_a_startup_error() -> None:
    """A plugin with hooks marked and one not (forgotten): the start says which. One
    marked under another name (``specname``) is marked."""
    with pytest.raises(UsageError, match="has chatkit_on_message without @hookimpl"):
        Server(port=0, plugins=[HalfMarked()])
    Server(port=0, plugins=[SpecNamed()])


def test_hook_wrappers_are_refused() -> None:
    """chatkit does not support hook wrappers; a plugin using one is a startup error."""
    with pytest.raises(UsageError, match="hook wrapper"):
        Server(port=0, plugins=[Wrapper()])


class Misspelt:
    @hookimpl
    def chatkit_on_mesage(self, client: Session, message: Message) -> None:
        pass


def test_an_unknown_hook_name_is_a_startup_error() -> None:
    """A misspelt hook is reported with the plugin's name and the hook it probably meant."""
    with pytest.raises(UsageError) as info:
        Server(port=0, plugins=[Misspelt()])
    assert str(info.value) == (
        "plugin 'Misspelt' implements an unknown hook 'chatkit_on_mesage'. "
        "Did you mean 'chatkit_on_message'? chatkit's hooks are listed in docs/hooks.md"
    )


def test_a_misspelt_hook_in_a_module_plugin_names_the_plugin_not_the_module(
    site: Path,
) -> None:
    """A module plugin with a misspelt hook is named as enabled, not by the module's repr."""
    (site / "typoplug.py").write_text(
        "from chatkit import hookimpl\n\n@hookimpl\ndef chatkit_on_mesage(message):\n    pass\n"
    )
    with pytest.raises(UsageError) as info:
        build_plugin_manager(Config(plugins=["typoplug"]))
    message = str(info.value)
    assert message.startswith("plugin 'typoplug' implements an unknown hook 'chatkit_on_mesage'")
    assert "Did you mean 'chatkit_on_message'?" in message
    assert "<module" not in message


def test_a_plugin_without_hooks_is_a_startup_error_saying_what_it_meant(site: Path) -> None:
    """A plugin that implements no hook would do nothing, silently: refused, with what
    was likely meant (a class in the module, a hook without @hookimpl)."""
    (site / "classplug.py").write_text(
        "from chatkit import hookimpl\n\nclass Greeter:\n    @hookimpl\n"
        "    def chatkit_on_login(self, client):\n        pass\n"
    )
    (site / "unmarked.py").write_text("def chatkit_on_login(client):\n    pass\n")
    for name, hint in [
        ("classplug", "its hooks are methods of Greeter; enable it as 'classplug:Greeter'"),
        ("unmarked", "mark chatkit_on_login with @hookimpl (from chatkit import hookimpl)"),
    ]:
        with pytest.raises(UsageError) as info:
            build_plugin_manager(Config(plugins=[name]))
        assert str(info.value) == f"plugin {name!r} implements no chatkit hook: {hint}"
    build_plugin_manager(Config(plugins=["classplug:Greeter"]))


class BadArgs:
    @hookimpl
    def chatkit_on_login(self, client: Session, nonsense: int) -> None:
        pass


def test_a_hook_with_unknown_arguments_is_a_startup_error() -> None:
    """pluggy's validation reaches the user as a UsageError naming the plugin."""
    with pytest.raises(UsageError) as info:
        Server(port=0, plugins=[BadArgs()])
    line = BadArgs.chatkit_on_login.__code__.co_firstlineno
    assert str(info.value) == (
        "plugin 'BadArgs': chatkit_on_login takes no argument 'nonsense'; "
        f"it offers client (take any of them, by name) (at {__file__}:{line})"
    )


def test_the_same_plugin_twice_is_an_error() -> None:
    """Enabling one plugin object twice is reported."""
    plugin = Counting()
    with pytest.raises(UsageError, match="enabled twice"):
        Server(port=0, plugins=[plugin, plugin])


def test_naming_a_default_plugin_again_is_harmless(chat_server_factory: Factory) -> None:
    """--plugin rooms when rooms is on by default loads it once."""
    server = chat_server_factory(plugins=["rooms"])
    names = [name for name, _ in server.pluginmanager.list_name_plugin()]
    assert names.count("rooms") == 1


def test_list_plugins_covers_every_builtin() -> None:
    """chatkit plugins lists each builtin with its hooks and commands."""
    rows = {r.name: r for r in list_plugins()}
    assert rows["help"].default == "essential"
    assert rows["rooms"].default == "default"
    assert rows["rooms"].commands == ["join", "part", "rooms", "topic", "who"]
    assert rows["log"].hooks == sorted(rows["log"].hooks)
    assert "chatkit_on_join" in rows["log"].hooks
    assert all(r.error is None for r in rows.values() if r.origin == "builtin")


def test_a_plain_module_and_a_class_in_it_are_plugins(site: Path) -> None:
    """--plugin takes any importable module, and module:Class for a stateful plugin."""
    (site / "loose_plugin.py").write_text(GREETER + "\n\nclass Stateful:\n    count = 0\n")
    module, info = resolve_plugin("loose_plugin")
    assert module.__name__ == "loose_plugin" and info.origin == "module"
    instance, _ = resolve_plugin("loose_plugin:Stateful")
    assert type(instance).__name__ == "Stateful"
    with pytest.raises(UsageError, match="Unknown plugin 'loose_plugn'"):
        resolve_plugin("loose_plugn")


def test_one_config_starts_several_servers(chat_server_factory: Factory) -> None:
    """A Config given to Server() is not changed by it: the same one starts another."""
    config = Config()
    for _ in range(2):
        server = chat_server_factory(plugins=["motd"], config=config)
        assert "motd" in [info.name for info in server.plugin_infos]
    assert config.plugins == []


class ClashesWithWho:
    """Registers /who, which the builtin rooms plugin has: the start fails."""

    @hookimpl
    def chatkit_register_commands(self, register: Any) -> None:
        register("who", lambda ctx: None, help="mine")


def test_a_failed_start_leaves_nothing_open(tmp_path: Path) -> None:
    """A start that fails after the plugins were configured stops them: the history
    store's thread ends and its file is free for the next server of the process."""
    config = Config(port=0)
    config.plugin_config["history"] = {"db": str(tmp_path / "history.sqlite3")}
    with pytest.raises(UsageError, match="who"):
        Server(plugins=[ClashesWithWho()], config=config).start()
    assert not [t for t in threading.enumerate() if t.name == "chatkit-history"]
    server = Server(config=config).start()
    server.shutdown()


class Shout:
    @hookimpl
    def chatkit_filter_message(self, client: Session, message: Message) -> None:
        message.text = message.text.upper()


def test_a_class_given_as_a_plugin_is_instantiated(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Server(plugins=[Shout]) (the class, not an instance) works as [Shout()] would."""
    server = chat_server_factory(plugins=[Shout])
    alice = chat_client(server, "alice")
    alice.say("hi")
    assert alice.expect("message")["text"] == "HI"
