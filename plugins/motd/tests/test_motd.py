"""chatkit-motd through a real server."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable

import pytest

from chatkit import Config, Server, UsageError
from chatkit.config import config_from_dict
from chatkit.plugins import build_plugin_manager, check_plugin_settings
from chatkit.testing import ChatClient

Connect = Callable[..., ChatClient]
Factory = Callable[..., Server]


def test_the_motd_greets_each_login(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A client gets the message of the day, with its nick, when it logs in."""
    server = chat_server_factory(plugins=["motd"])
    alice = chat_client(server, "alice")
    assert alice.expect("notice")["text"].startswith("Welcome, alice!")


def test_the_motd_comes_before_the_history_replay(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A client logging in sees the welcome, then the message of the day, then the room's
    replayed history, so the greeting is not buried under old messages."""
    server = chat_server_factory(plugins=["motd"])
    alice = chat_client(server, "alice")
    alice.say("said before bob came")
    alice.expect("message")
    bob = chat_client(server, "bob")
    bob.expect("history")  # the end of the replay
    seen = [(f["type"], f.get("history", False)) for f in bob.received]
    motd = seen.index(("notice", False))
    replayed = seen.index(("message", True))
    assert seen[0] == ("welcome", False)
    assert motd < replayed, seen


def test_motd_command_and_settings(chat_server_factory: Factory, chat_client: Connect) -> None:
    """/motd repeats the configured text."""
    config = Config(plugin_config={"motd": {"text": "Hi {nick}, lunch at noon"}})
    server = chat_server_factory(plugins=["motd"], config=config)
    bob = chat_client(server, "bob")
    assert bob.expect("notice")["text"] == "Hi bob, lunch at noon"
    bob.say("/motd")
    reply = bob.expect("reply", command="motd")
    assert reply["text"] == "Hi bob, lunch at noon" and reply["data"]["motd"] == reply["text"]


def test_an_empty_motd_is_refused() -> None:
    """A blank text is a startup error."""
    server = Server(port=0, plugins=["motd"], config=Config(plugin_config={"motd": {"text": " "}}))
    with pytest.raises(UsageError, match="motd: text must be a non-empty string"):
        server.start()
    typo = Server(port=0, plugins=["motd"], config=Config(plugin_config={"motd": {"txt": "hi"}}))
    with pytest.raises(UsageError, match="txt"):
        typo.start()


def test_a_reload_changes_the_motd(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A reload with a new text (SIGHUP re-reads the config file) restarts the plugin:
    the connected client's /motd and the next login show the new text."""
    config = Config(plugins=["motd"], plugin_config={"motd": {"text": "old news"}})
    server = chat_server_factory(config=config)
    bob = chat_client(server, "bob")
    assert bob.expect("notice")["text"] == "old news"
    settings = {**server.config.plugin_config, "motd": {"text": "new news"}}
    new = dataclasses.replace(server.config, plugin_config=settings)
    assert server.reload(new) == ["plugin 'motd' restarted"]
    bob.say("/motd")
    assert bob.expect("reply", command="motd")["text"] == "new news"
    assert chat_client(server, "carol").expect("notice")["text"] == "new news"


def test_chatkit_check_reads_the_text_as_the_server_does() -> None:
    """`chatkit check` (chatkit_check_config) refuses what the server would refuse, and
    a good text passes as checked, without a server."""
    head = '[server]\nplugins = ["motd"]\n[plugins.motd]\n'
    for toml, error in [
        (head + 'text = " "\n', "motd: text must be a non-empty string"),
        (head + 'txt = "hi"\n', "txt"),
    ]:
        config = config_from_dict(tomllib.loads(toml))
        with pytest.raises(UsageError, match=error):
            check_plugin_settings(config, *build_plugin_manager(config))
    config = config_from_dict(tomllib.loads(head + 'text = "Hi {nick}"\n'))
    assert check_plugin_settings(config, *build_plugin_manager(config)) == []  # none unchecked
