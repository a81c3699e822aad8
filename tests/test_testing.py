"""chatkit.testing: the clients and fixtures plugin authors test with."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chatkit.testing import ChatClient

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
