"""/stats: the server's counters (connections, deliveries, sends), for operators and benchmarks.

Off by default: enable with ``--plugin stats``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatkit import CommandContext, Register, hookimpl

if TYPE_CHECKING:
    from chatkit import Server


class Stats:
    """Remembers its server at start, to read its counters."""

    def __init__(self) -> None:
        self.server: Server | None = None

    @hookimpl
    def chatkit_server_start(self, server: Server) -> None:
        self.server = server

    @hookimpl
    def chatkit_register_commands(self, register: Register) -> None:
        register("stats", self.stats_command, help="show the server's counters")

    def stats_command(self, ctx: CommandContext) -> None:
        assert self.server is not None
        stats = self.server.stats()
        text = ", ".join(f"{key} {value}" for key, value in stats.items())
        ctx.reply(text, **stats)
