"""chatkit-profanity through a real server."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from typing import Any

import pytest

from chatkit import Config, Server, UsageError
from chatkit.config import config_from_dict
from chatkit.plugins import build_plugin_manager, check_plugin_settings
from chatkit.testing import ChatClient

Connect = Callable[..., ChatClient]
Factory = Callable[..., Server]


def server_with(factory: Factory, **settings: Any) -> Server:
    return factory(plugins=["profanity"], config=Config(plugin_config={"profanity": settings}))


def test_words_are_masked_by_default(chat_server_factory: Factory, chat_client: Connect) -> None:
    """Swear words, leetspeak included, become **** for everyone; other words stay."""
    server = server_with(chat_server_factory)
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.say("what the sh1t is this")
    assert bob.expect("message")["text"] == "what the **** is this"
    assert alice.expect("message")["text"] == "what the **** is this"  # the sender sees the result
    alice.say("Scunthorpe is a town")
    assert bob.expect("message")["text"] == "Scunthorpe is a town"


def test_actions_and_private_messages_are_filtered(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """/me actions and /msg go through the filter too."""
    server = server_with(chat_server_factory)
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.say("/me says shit")
    assert bob.expect("message")["text"] == "says ****"
    alice.say("/msg bob shit happens")
    assert bob.expect("private")["text"] == "**** happens"


def test_private_messages_can_be_left_alone(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """private = false leaves private messages unfiltered."""
    server = server_with(chat_server_factory, private=False)
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.say("/msg bob shit happens")
    assert bob.expect("private")["text"] == "shit happens"


def test_a_leaves_own_words_are_filtered(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A part's or quit's reason, words said to the room, is masked as a message is."""
    server = server_with(chat_server_factory)
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.say("/join #den")
    alice.expect("join", nick="alice", room="#den")  # (before bob's, which she then sees)
    bob.say("/join #den")
    alice.expect("join", nick="bob", room="#den")
    bob.say("/part #den this sh1t again")
    assert alice.expect("leave", nick="bob")["reason"] == "part: this **** again"
    bob.say("/quit sh1t")
    assert alice.expect("leave", nick="bob")["reason"] == "quit: ****"


def test_drop(chat_server_factory: Factory, chat_client: Connect) -> None:
    """action = drop: nobody receives it and the sender is told why."""
    server = server_with(chat_server_factory, action="drop")
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.say("shit")
    error = alice.expect("error")
    assert error["code"] == "dropped" and "not allowed" in error["text"]
    assert not [f for f in bob.sync() if f["type"] == "message"]


def test_warn(chat_server_factory: Factory, chat_client: Connect) -> None:
    """action = warn: delivered unchanged, the sender gets a notice."""
    server = server_with(chat_server_factory, action="warn")
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.say("shit")
    assert bob.expect("message")["text"] == "shit"
    assert "mind your language" in alice.expect("notice")["text"]


def test_extra_and_allowed_words(chat_server_factory: Factory, chat_client: Connect) -> None:
    """words adds to the list; allowed removes from it."""
    server = server_with(chat_server_factory, words=["Broccoli"], allowed=["hell"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.say("broccoli from hell")
    assert bob.expect("message")["text"] == "**** from hell"


def test_nicks_and_rooms_are_checked(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A nick or room name with a filtered word is refused; a clean one works."""
    server = server_with(chat_server_factory)
    client = chat_client(server)
    client.send(type="hello", nick="shithead")
    assert client.expect("error")["code"] == "bad_nick"
    client.login("alice")
    client.say("/nick sh1t")
    assert client.expect("error")["code"] == "bad_nick"
    client.say("/join #shit")
    assert client.expect("error")["code"] == "bad_room"
    client.say("/join #clean")
    client.expect("join", room="#clean")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"action": "bleep"}, "action must be one of mask, drop, warn"),
        ({"words": "darn"}, "words must be a list of words"),
        ({"allowed": [1]}, "allowed must be a list of words"),
        ({"private": "yes"}, "private must be true or false"),
        ({"acton": "mask"}, "unknown setting(s) acton"),
    ],
)
def test_bad_settings_stop_the_start(settings: dict[str, Any], message: str) -> None:
    """Each bad setting is a clear startup error."""
    server = Server(
        port=0, plugins=["profanity"], config=Config(plugin_config={"profanity": settings})
    )
    with pytest.raises(UsageError) as info:
        server.start()
    assert message in str(info.value)


def test_chatkit_check_reads_the_settings_as_the_server_does() -> None:
    """`chatkit check` (chatkit_check_config) refuses what the server would refuse, and
    good settings pass as checked, without a server."""
    head = '[server]\nplugins = ["profanity"]\n[plugins.profanity]\n'
    for toml, error in [
        (head + 'action = "shout"\n', "profanity: action must be one of mask, drop, warn"),
        (head + "words = [1]\n", "profanity: words must be a list of words"),
        (head + "privat = false\n", "unknown setting.*privat"),
    ]:
        config = config_from_dict(tomllib.loads(toml))
        with pytest.raises(UsageError, match=error):
            check_plugin_settings(config, *build_plugin_manager(config))
    config = config_from_dict(tomllib.loads(head + 'action = "drop"\nwords = ["darn"]\n'))
    assert check_plugin_settings(config, *build_plugin_manager(config)) == []  # none unchecked
