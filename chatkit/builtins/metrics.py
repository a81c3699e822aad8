"""Prometheus metrics: /metrics on a port of its own, for dashboards.

Off by default: ``chatkit serve --metrics-port 9100`` (or ``[plugins.metrics]`` with
``port`` and ``host``, default ``127.0.0.1``) turns it on. Settings:

* ``port``: the HTTP port (0: a free one; the address is in the log and on
  ``chatkit serve``'s output).
* ``host`` (``127.0.0.1``): the address to listen on; metrics tell a lot about a
  server, so keep them off public addresses or behind a proxy.

Nothing is counted for the metrics alone: a scrape reads the counters that
``Server.stats()`` (and so ``/stats``) returns, and the history store's, at the
moment of the scrape, on the HTTP server's thread. The hot path pays nothing more
than the plain integer increments it did before this plugin existed.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from chatkit import Config, UsageError, check_settings, hookimpl, number_setting
from chatkit.builtins.http_server import MAX_CONNECTIONS, REQUEST_TIMEOUT, SHUTDOWN_POLL, Bounded

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from chatkit import Server

log = logging.getLogger(__name__)

HOST = "127.0.0.1"

# Upper bounds of the send-queue depth buckets, in bytes (the default max_sendq is
# 1 MiB; a client near it is about to be cut).
QUEUE_BUCKETS = (0, 1024, 16 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024)


class ServerCollector(Collector):
    """Reads a running server's counters at each scrape."""

    def __init__(self) -> None:
        self.server: Server | None = None
        """Set at ``chatkit_server_start`` (a plain attribute: its write is atomic)."""

    def collect(self) -> Iterator[Metric]:
        server = self.server
        if server is None:
            return
        stats = server.stats()
        faces = GaugeMetricFamily(
            "chatkit_connections", "Open connections, by face.", labels=["face"]
        )
        for face, count in stats["faces"].items():
            faces.add_metric([face], count)
        yield faces
        yield _gauge(
            "chatkit_pending_connections", "Connections that sent nothing yet.", stats["pending"]
        )
        yield _gauge(
            "chatkit_lingering_connections",
            "Connections ended, kept open for their clients to take what they are owed.",
            stats["lingering"],
        )
        yield _gauge("chatkit_logged_in", "Clients logged in.", stats["logged_in"])
        yield _gauge("chatkit_rooms", "Rooms.", stats["rooms"])
        yield _gauge("chatkit_queued_bytes", "Bytes waiting in send queues.", stats["queued_bytes"])
        yield _gauge("chatkit_uptime_seconds", "Seconds since the server started.", stats["uptime"])
        yield _counter("chatkit_logins", "Logins.", stats["logins"])
        yield _counter("chatkit_messages", "Messages accepted (in).", stats["messages"])
        yield _counter(
            "chatkit_deliveries", "Chat frames queued to recipients (out).", stats["deliveries"]
        )
        yield _counter("chatkit_sends", "send() calls made by the writer.", stats["sends"])
        yield _counter("chatkit_sent_bytes", "Bytes the kernel accepted.", stats["bytes_sent"])
        yield _counter(
            "chatkit_slow_consumer_cuts",
            "Clients cut because their send queue passed max_sendq.",
            stats["slow_cuts"],
        )
        errors = CounterMetricFamily(
            "chatkit_errors",
            "Error frames sent (refusals included), by code.",
            labels=["code"],
        )
        for code, count in stats["errors"].items():
            errors.add_metric([code], count)
        yield errors
        yield _queue_depths([conn.queued_bytes for conn in server.connections])
        hooks = SummaryMetricFamily(
            "chatkit_hook_seconds",
            f"Time in each plugin's hook, sampled: one call in {server.hooks.sample_every} "
            "of each hook is timed.",
            labels=["plugin", "hook"],
        )
        for (plugin, hook), (count, total) in sorted(server.hooks.timings_snapshot().items()):
            hooks.add_metric([plugin, hook.removeprefix("chatkit_")], count, total)
        yield hooks
        yield from _history(server)
        yield from _cluster(server)


def _gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> Metric:
    return CounterMetricFamily(name, doc, value=value)


def _queue_depths(sizes: list[int]) -> Metric:
    """Each connection's send-queue depth now, in :data:`QUEUE_BUCKETS`."""
    counts = [0] * (len(QUEUE_BUCKETS) + 1)
    for size in sizes:
        index = next((i for i, bound in enumerate(QUEUE_BUCKETS) if size <= bound), -1)
        counts[index] += 1
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*map(str, QUEUE_BUCKETS), "+Inf"), counts, strict=True):
        running += count
        buckets.append((bound, running))
    return GaugeHistogramMetricFamily(
        "chatkit_send_queue_bytes",
        "Send-queue depth of each connection, now.",
        buckets=buckets,
        gsum_value=sum(sizes),
    )


def _history(server: Server) -> Iterator[Metric]:
    history = server.pluginmanager.get_plugin("history")
    store = getattr(history, "store", None)
    if store is None:
        return
    yield GaugeMetricFamily(
        "chatkit_history_queued", "Messages waiting for their commit.", value=store.queued
    )
    yield CounterMetricFamily(
        "chatkit_history_commits", "History transactions committed.", value=store.commits
    )
    yield CounterMetricFamily(
        "chatkit_history_commit_seconds",
        "Seconds spent committing history (divided by commits: the mean latency).",
        value=store.commit_seconds,
    )


def _cluster(server: Server) -> Iterator[Metric]:
    """The cluster plugin's state (``--redis``), from the same ``stats()`` as ``/stats``."""
    cluster = server.pluginmanager.get_plugin("cluster")
    stats = getattr(cluster, "stats", None)
    if stats is None:
        return
    state = stats()
    yield GaugeMetricFamily(
        "chatkit_cluster_redis_up",
        "1 while this node reaches Redis, 0 while it serves its own members only.",
        value=1 if state["redis"] == "up" else 0,
    )
    yield GaugeMetricFamily(
        "chatkit_cluster_nodes", "Nodes this one sees, itself included.", value=state["nodes"]
    )
    yield GaugeMetricFamily(
        "chatkit_cluster_remote_members",
        "Clients logged in on the other nodes.",
        value=state["remote_members"],
    )
    for name, doc in (
        ("outages", "Times this node lost Redis."),
        ("local_only_messages", "Messages delivered to this node's members only, Redis lost."),
        ("dropped_events", "Cluster events that could not be published."),
        ("lost_nodes", "Other nodes declared lost (their lease ran out)."),
        ("nick_conflicts", "Nicks found taken on another node."),
    ):
        yield CounterMetricFamily(f"chatkit_cluster_{name}", doc, value=state[name])


class Metrics:
    """Serves ``/metrics`` while the server runs."""

    def __init__(self) -> None:
        self.host = HOST
        self.port = 0
        self.address: tuple[str, int] | None = None
        """Where ``/metrics`` is served, once started."""
        self._httpd: _MetricsServer | None = None
        self._thread: threading.Thread | None = None
        self._collector = ServerCollector()

    @hookimpl
    def chatkit_check_config(self, config: Config) -> None:
        self._read(config)

    @hookimpl
    def chatkit_configure(self, config: Config) -> None:
        most = self._read(config)
        # Bound here, not at server_start, so that a port in use stops the start with
        # a clear error (exit 2), like the server's own ports. Until server_start a
        # scrape gets no samples.
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self._collector)
        try:
            # The host's own family (an IPv6 address too), as prometheus_client does.
            family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0][0]
            server = type("MetricsServer", (_MetricsServer,), {"address_family": family})
            self._httpd = make_server(
                self.host, self.port, _only_metrics(make_wsgi_app(registry)), server, _Handler
            )
        except OSError as exc:
            raise UsageError(
                f"metrics: cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from None
        self._httpd.bound(most, "metrics")
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL},
            name="chatkit-metrics",
            daemon=True,
        )
        self._thread.start()
        bound: tuple[Any, ...] = tuple(self._httpd.server_address)
        self.address = (str(bound[0]), int(bound[1]))
        log.info("metrics on http://%s:%d/metrics", *self.address)

    def _read(self, config: Config) -> int:
        """Read and check the settings; return ``max_connections``. Opens nothing:
        ``chatkit check`` calls it too."""
        settings = config.plugin_settings("metrics")
        check_settings("metrics", settings, ["host", "max_connections", "port"])
        most = int(number_setting("metrics", settings, "max_connections", MAX_CONNECTIONS, 1))
        self.port = int(number_setting("metrics", settings, "port", 0, 0, 65535))
        host = settings.get("host", HOST)
        if not isinstance(host, str):
            raise UsageError(f"metrics: host must be a string, not {host!r}")
        self.host = host
        return most

    @hookimpl
    def chatkit_server_start(self, server: Server) -> None:
        self._collector.server = server

    @hookimpl
    def chatkit_server_stop(self) -> None:
        self._collector.server = None
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def _only_metrics(app: WSGIApplication) -> WSGIApplication:
    """``app`` at ``/metrics``; every other path is 404 (prometheus_client's app answers
    any path, so a typo or a crawler's ``/robots.txt`` would get the counters)."""

    def only(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/metrics":
            return app(environ, start_response)
        body = b"not found: the metrics are at /metrics\n"
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        start_response("404 Not Found", headers)
        return [body]

    return only


class _MetricsServer(Bounded, WSGIServer):
    """``/metrics``' server (see :class:`~chatkit.builtins.http_server.Bounded`)."""


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT  # (StreamRequestHandler: the socket's timeout)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a scrape every few seconds: nothing to log
