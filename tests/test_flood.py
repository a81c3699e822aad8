"""The flood builtin: a token bucket per client."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from chatkit import Config, Server, UsageError
from chatkit.testing import ChatClient

Connect = Callable[..., ChatClient]
Factory = Callable[..., Server]


def flood_config(**settings: object) -> Config:
    return Config(plugin_config={"flood": dict(settings)})


def test_a_flood_is_refused_and_others_get_through(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A hundred lines at once: a burst is accepted, the rest refused; others still talk.
    (Past free_lines refusals the flooder is paused too: test_server.py.)"""
    server = chat_server_factory()
    flooder, bob, carol = (
        chat_client(server, "flooder"),
        chat_client(server, "bob"),
        chat_client(server, "carol"),
    )
    flooder.send_raw(b"".join(b'{"type":"say","text":"spam %d"}\n' % i for i in range(110)))
    bob.say("can anyone hear me?")
    assert carol.expect("message", nick="bob")["text"] == "can anyone hear me?"
    frames = flooder.sync()
    accepted = [f for f in frames if f["type"] == "message" and f["nick"] == "flooder"]
    refused = [f for f in frames if f["type"] == "error"]
    assert len(accepted) + len(refused) == 110
    assert 10 <= len(accepted) < 110  # the burst (the hello is given back), plus refills
    assert {f["code"] for f in refused} == {"rate_limited"}
    assert all(0 < f["retry_after"] <= 0.2 for f in refused)
    assert [f["text"] for f in accepted] == [f"spam {i}" for i in range(len(accepted))]


def test_ping_is_never_limited(chat_server_factory: Factory, chat_client: Connect) -> None:
    """After the bucket is empty, pings still get pongs."""
    server = chat_server_factory(config=flood_config(rate=0.001, burst=1))
    alice = chat_client(server, "alice")  # the hello's token is given back at login
    alice.say("accepted")
    alice.say("refused")
    assert alice.expect("error")["code"] == "rate_limited"
    alice.send_raw(b'{"type":"ping"}\n' * 50)
    for _ in range(50):
        alice.expect("pong")


def test_quit_is_never_limited(chat_server_factory: Factory, chat_client: Connect) -> None:
    """After the bucket is empty, /quit still leaves, with its reason (IRC's QUIT is
    free too): a flooder who stops is not kept connected."""
    server = chat_server_factory(config=flood_config(rate=0.001, burst=1))
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.say("accepted")
    alice.say("refused")
    assert alice.expect("error")["code"] == "rate_limited"
    alice.say("/QUIT bye")
    assert bob.expect("leave", nick="alice")["reason"] == "quit: bye"
    alice.wait_closed()


def test_settings_take_effect(chat_server_factory: Factory, chat_client: Connect) -> None:
    """burst and rate come from [plugins.flood]."""
    server = chat_server_factory(config=flood_config(rate=0.001, burst=3))
    alice = chat_client(server, "alice")
    for i in range(4):
        alice.say(f"m{i}")
    frames = [f for f in alice.sync() if f["type"] in ("message", "error")]
    # The whole burst after the login: the hello's token is given back.
    assert [f["type"] for f in frames] == ["message", "message", "message", "error"]
    assert frames[-1]["retry_after"] > 100


def test_a_page_of_history_costs_a_line_per_fifty_messages(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A page of history costs as many lines of the allowance as it is work (the
    history plugin charges a line more per 50 messages, whichever way it is asked):
    a 200-message page takes four, as a request or as /history; a limit past any
    page is refused as a bad frame, not a failure."""
    server = chat_server_factory(config=flood_config(rate=0.001, burst=5))
    alice = chat_client(server, "alice")  # (the hello's token is given back at login)
    alice.send(type="history", room="#general", limit=50)  # one line
    alice.expect("history")
    alice.send(type="history", room="#general", limit=200)  # four more: the bucket is empty
    alice.expect("history")
    alice.say("refused")
    assert alice.expect("error")["code"] == "rate_limited"
    bob = chat_client(server, "bob")
    bob.say("/history #general 200")  # the same page, typed: the same four lines
    bob.expect("history")
    bob.say("one more")
    bob.expect("message", text="one more")
    bob.say("refused")
    assert bob.expect("error")["code"] == "rate_limited"
    carl = chat_client(server, "carl")
    carl.send_raw(b'{"type":"history","room":"#general","limit":1' + b"0" * 400 + b"}\n")
    assert carl.expect("error")["code"] == "bad_frame"


def test_a_paste_of_burst_lines_right_after_the_login_arrives_whole(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """burst lines at once right after logging in (a failed hello stays paid)."""
    server = chat_server_factory(config=flood_config(rate=0.001, burst=5))
    alice = chat_client(server, "alice")
    alice.send_raw(b"".join(b'{"type":"say","text":"line %d"}\n' % i for i in range(5)))
    frames = [f for f in alice.sync() if f["type"] in ("message", "error")]
    assert [f.get("text") for f in frames] == [f"line {i}" for i in range(5)]


def test_repeat_offenders_are_disconnected_when_configured(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """With kick_after, a client refused that many times in a row is disconnected."""
    server = chat_server_factory(config=flood_config(rate=0.001, burst=2, kick_after=3))
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.send_raw(b'{"type":"say","text":"x"}\n' * 10)
    alice.wait_closed()
    assert bob.expect("leave", nick="alice")["reason"] == "flooding"


def test_flood_can_be_disabled(chat_server_factory: Factory, chat_client: Connect) -> None:
    """--no-plugin flood lifts the limit."""
    server = chat_server_factory(disable=["flood"])
    alice = chat_client(server, "alice")
    alice.send_raw(
        b"".join(json.dumps({"type": "say", "text": f"m{i}"}).encode() + b"\n" for i in range(300))
    )
    assert len([f for f in alice.sync() if f["type"] == "message"]) == 300


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rate": 0}, "rate must be a number of at least"),
        ({"burst": "ten"}, "burst must be a number"),
        ({"kick_after": -1}, "kick_after must be a number of at least 0"),
        ({"rates": 5}, "unknown setting(s) rates"),
    ],
)
def test_bad_settings_stop_the_start(settings: dict[str, object], message: str) -> None:
    """A bad [plugins.flood] value is a startup error naming it."""
    server = Server(port=0, config=flood_config(**settings))
    with pytest.raises(UsageError) as info:
        server.start()
    assert message in str(info.value)
