"""chatkit.testing: the clients and fixtures plugin authors test with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chatkit import Server
from chatkit.client import Client
from chatkit.testing import ChatClient, HookRecorder, TextClient

Connect = Callable[..., ChatClient]


def test_expect_matches_a_field_exactly(chat_client: Connect) -> None:
    """expect("error", code=...) skips frames whose field differs and returns the one that equals."""
    alice = chat_client("alice")
    alice.say("/nosuchcommand")
    alice.say("/nick " + "x" * 100)  # longer than max_nick
    error = alice.expect("error", code="bad_nick")
    assert error["code"] == "bad_nick"


def test_expect_matches_part_of_a_field(chat_client: Connect) -> None:
    """expect("reply", text_contains=...) returns the first frame whose text holds that string."""
    alice = chat_client("alice")
    bob = chat_client("bob")
    bob.say("the dice rolled a six")
    frame = alice.expect("message", text_contains="rolled")
    assert frame["text"] == "the dice rolled a six" and frame["nick"] == "bob"


def test_expect_fails_when_no_frame_contains_the_text(chat_client: Connect) -> None:
    """A text_contains that no frame satisfies fails the test with the unmatched frames."""
    alice = chat_client("alice")
    alice.say("hello")
    with pytest.raises(AssertionError, match="text_contains"):
        alice.expect("message", text_contains="goodbye", timeout=0.3)


def test_expect_refuses_a_contains_that_is_not_a_string(chat_client: Connect) -> None:
    """text_contains takes a string; anything else is a mistake in the test, said at once."""
    alice = chat_client("alice")
    with pytest.raises(TypeError, match="text_contains"):
        alice.expect("message", text_contains=3)


def test_the_chat_client_is_the_library_client(chat_client: Connect) -> None:
    """ChatClient is a chatkit.client.Client: what the tests exercise is what programs use.
    login() returns once its own join arrived; that join stays pending for expect()."""
    alice = chat_client("alice")
    assert isinstance(alice, Client) and alice.nick == "alice"
    assert alice.expect("join", nick="alice")["room"] == "#general"
    alice.send(type="say", text="hi")
    assert alice.receive(timeout=5) == alice.received[-1]
    assert alice.received[-1]["text"] == "hi"


def test_login_takes_replay_and_since(chat_client: Connect) -> None:
    """login(nick, replay=, since=) asks the server for what the library's login asks."""
    bob = chat_client("bob")
    bob.say("one")
    first = bob.expect("message", text="one")["id"]
    bob.say("two")
    bob.expect("message", text="two")
    nothing = chat_client(None)
    nothing.login("nothing", replay=0)
    assert [f["type"] for f in nothing.sync()] == ["join"]
    later = chat_client(None)
    later.login("later", since=first)
    assert [f["text"] for f in later.sync() if f["type"] == "message"] == ["two"]


def test_wait_closed_and_eof(chat_server_factory: Callable[..., Server]) -> None:
    """wait_closed() reads until the server closes; eof then says so, for both clients."""
    server = chat_server_factory()
    json_client = ChatClient(server.address)
    json_client.login("alice")
    text_client = TextClient(server.address)
    text_client.send_line("bob")
    text_client.expect("Welcome to chatkit")
    assert not json_client.eof and not text_client.eof
    server.shutdown()
    json_client.wait_closed()
    text_client.wait_closed()
    assert json_client.eof and text_client.eof
    with pytest.raises(AssertionError, match="closed the connection"):
        json_client.expect("message", timeout=1)


def test_hook_recorder_takes_short_names_and_refuses_unknown_ones(
    chat_client: Connect, hook_recorder: HookRecorder
) -> None:
    """``on_join`` is ``chatkit_on_join`` (as ``chatkit plugins --hook`` takes it); a
    name that is no hook fails at once, not after waiting out the timeout."""
    chat_client("alice")
    assert hook_recorder.wait("on_join")[0]["room"] == "#general"
    with pytest.raises(AssertionError, match="no hook is called 'on_mesage'"):
        hook_recorder.wait("on_mesage", timeout=30)


def test_clients_of_a_factorys_server_start_no_other_server(
    chat_server_factory: Callable[..., Server],
    chat_client: Connect,
    text_client: Callable[..., Any],
    request: pytest.FixtureRequest,
) -> None:
    """chat_client and text_client start the default server only for a client sent to
    it: a test with servers of its own starts no other one."""
    server = chat_server_factory()
    chat_client(server, "alice")
    text_client(server, "bob")
    assert "chat_server" not in request.fixturenames
    chat_client("carol")  # the default server, started now
    assert "chat_server" in request.fixturenames


def test_command_returns_its_reply_or_fails_with_the_error(chat_client: Connect) -> None:
    """ChatClient.command sends a /command and returns its reply; an error fails the
    test with the error's code and text, without the line (a password in it)."""
    alice = chat_client("alice")
    reply = alice.command("/register sesame-seed")
    assert reply["command"] == "register"
    with pytest.raises(AssertionError) as failed:
        alice.command("/passwd wrong-one sesame-two")
    assert "/passwd failed: [bad_password]" in str(failed.value)
    assert "wrong-one" not in str(failed.value)
