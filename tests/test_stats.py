"""The stats builtin: /stats reports the server's counters."""

from __future__ import annotations

from collections.abc import Callable

from chatkit import Server
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
    data = alice.expect("reply", command="stats")["data"]
    assert data["connections"] == 2 and data["logged_in"] == 2 and data["rooms"] == 1
    assert data["deliveries"] >= 5  # two joins to alice and bob (3), the message (2)
    assert data["sends"] >= 1 and data["bytes_sent"] > 0
    assert data["uptime"] >= 0
    assert server.stats()["deliveries"] >= data["deliveries"]
