"""/stats: the server's counters (connections, deliveries, sends), for benchmarks and monitors.

Off by default: enable with ``--plugin stats``. Every client may ask: ``/stats`` does
not check for server operators, which only the ``moderation`` plugin knows (the
``metrics`` plugin serves the same counters on a port of their own).
The reply's text is for people (``uptime 3m 12s``, ``sent 1.2 MiB``); its ``data``
carries the raw numbers (seconds, bytes) for scripts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatkit import CommandContext, Register, hookimpl

if TYPE_CHECKING:
    from chatkit import Server

_BYTE_UNITS = ("KiB", "MiB", "GiB", "TiB")


def format_bytes(count: float) -> str:
    """``count`` bytes for people: ``512 B``, ``1.2 KiB``, ``3.4 MiB``."""
    if count < 1024:
        return f"{int(count)} B"
    for unit in _BYTE_UNITS:
        count /= 1024
        if count < 1024 or unit == _BYTE_UNITS[-1]:
            break
    return f"{count:.1f} {unit}"


def format_duration(seconds: float) -> str:
    """``seconds`` for people, in its two largest units: ``45s``, ``3m 12s``, ``2h 5m``,
    ``3d 4h``."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def describe(stats: dict[str, Any]) -> str:
    """The reply's text: :meth:`Server.stats` with units."""
    return (
        f"uptime {format_duration(stats['uptime'])}, "
        f"connections {stats['connections']} ({stats['logged_in']} logged in), "
        f"rooms {stats['rooms']}, "
        f"frames delivered {stats['deliveries']}, sends {stats['sends']}, "
        f"sent {format_bytes(stats['bytes_sent'])}, "
        f"queued {format_bytes(stats['queued_bytes'])}"
    )


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
        text = describe(stats)
        cluster = self.server.pluginmanager.get_plugin("cluster")
        if cluster is not None:
            stats["cluster"] = info = cluster.stats()
            text += (
                f"; cluster node {info['node']}: redis {info['redis']}, "
                f"{info['nodes']} nodes, {info['remote_members']} members elsewhere, "
                f"{info['outages']} outages, {info['local_only_messages']} messages "
                "reached this node only"
            )
        ctx.reply(text, **stats)
