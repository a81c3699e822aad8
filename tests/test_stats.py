"""The stats builtin: /stats reports the server's counters."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from chatkit import Server
from chatkit.builtins.stats import describe, format_bytes, format_duration
from chatkit.testing import ChatClient

Connect = Callable[..., ChatClient]
Factory = Callable[..., Server]


def test_stats_counts_connections_deliveries_and_sends(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """/stats (off by default) shows connections and how many frames went out in how many sends."""
    plain = chat_server_factory()
    alice = chat_client(plain, "alice")
    alice.say("/stats")
    assert alice.expect("error")["code"] == "unknown_command"
    server = chat_server_factory(plugins=["stats"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    alice.say("hello")
    bob.expect("message")
    alice.sync()
    alice.say("/stats")
    reply = alice.expect("reply", command="stats")
    data = reply["data"]
    assert re.fullmatch(
        r"uptime \d+s, connections 2 \(2 logged in\), rooms 1, frames delivered \d+, sends \d+, "
        r"sent \d+(\.\d)? (B|KiB), queued \d+(\.\d)? (B|KiB)",
        reply["text"],
    ), reply["text"]
    assert data["connections"] == 2 and data["logged_in"] == 2 and data["rooms"] == 1
    assert data["deliveries"] >= 5  # two joins to alice and bob (3), the message (2)
    assert data["sends"] >= 1 and data["bytes_sent"] > 0
    assert data["uptime"] >= 0
    assert server.stats()["deliveries"] >= data["deliveries"]


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1_258_291, "1.2 MiB"),
        (5 * 2**40, "5.0 TiB"),
    ],
)
def test_bytes_are_shown_with_units(count: int, text: str) -> None:
    """Byte counts read as B, KiB, MiB, GiB or TiB with one decimal."""
    assert format_bytes(count) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0s"), (45.9, "45s"), (192, "3m 12s"), (7500, "2h 5m"), (4 * 86400 + 3 * 3600, "4d 3h")],
)
def test_durations_are_shown_in_their_two_largest_units(seconds: float, text: str) -> None:
    """Uptime reads as 45s, 3m 12s, 2h 5m or 4d 3h."""
    assert format_duration(seconds) == text


def test_stats_text_has_units() -> None:
    """/stats' text puts units on uptime and bytes; its data keeps the raw numbers."""
    stats = {
        "connections": 3,
        "logged_in": 2,
        "rooms": 1,
        "queued_bytes": 0,
        "deliveries": 10,
        "sends": 4,
        "bytes_sent": 1_258_291,
        "uptime": 192.5,
    }
    assert describe(stats) == (
        "uptime 3m 12s, connections 3 (2 logged in), rooms 1, frames delivered 10, sends 4, "
        "sent 1.2 MiB, queued 0 B"
    )
