"""The HTTP servers of the builtins' own ports (the webhooks' incoming endpoint,
``/metrics``): the standard library's threading servers, with a bound on connections at
once and errors logged rather than printed.

These ports are not the chat's: the server's per-address limits do not reach them, so
each connection holds a thread of its own. :class:`Bounded` closes one more at once past
``most``, a handler's ``timeout`` (:data:`REQUEST_TIMEOUT`) closes a silent one, and a
connection is served for :data:`CONNECTION_DEADLINE` at most: one that sends a byte now
and then (slowloris) would otherwise hold its thread, and with ``most`` of them the port (one
watcher thread a port cuts those past it). The kernel holds :data:`BACKLOG` connections
not accepted yet.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import sys
import threading
import time
from typing import Any

__all__ = [
    "BACKLOG",
    "CONNECTION_DEADLINE",
    "MAX_CONNECTIONS",
    "REQUEST_TIMEOUT",
    "SHUTDOWN_POLL",
    "Bounded",
]

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64  # connections at once on one such port (each holds a thread)
REQUEST_TIMEOUT = 10.0  # seconds a connection may wait for its client's next bytes
CONNECTION_DEADLINE = 30.0  # seconds a connection is served at most, whatever it sends
BACKLOG = 128  # connections the kernel holds before they are accepted (the standard library's
# 5 made a burst of clients, a Prometheus and its neighbours, wait in SYN retries)
DEADLINE_POLL = 0.5  # seconds between the deadline watcher's looks (one thread a port)
SHUTDOWN_POLL = 0.05  # seconds between serve_forever's looks for shutdown(): its default,
# 0.5, made every reload that restarts such a plugin half a second long (the plugins it
# stopped before the swap are still called meanwhile)


class Bounded(socketserver.ThreadingMixIn):
    """A thread per connection, at most :attr:`most` at once; put it first in the bases
    of a ``TCPServer`` subclass and call :meth:`bound` before serving."""

    daemon_threads = True
    request_queue_size = BACKLOG
    most = MAX_CONNECTIONS
    """Connections served at once; one more is closed without an answer."""
    label = "http"
    """The port's name in the log."""

    def bound(self, most: int, label: str) -> None:
        self.most, self.label = most, label
        # Counts the connections being served; process_request never waits on it.
        self._slots = threading.BoundedSemaphore(most)
        self._warned = -60.0  # when the last refusal was logged (monotonic)
        # The connections being served, each with its deadline (monotonic): one watcher
        # thread for the port cuts those past it (a timer each was a second thread per
        # connection). Guards _served: the handler threads add and remove, the watcher reads.
        self._served_lock = threading.Lock()
        self._served: dict[Any, float] = {}
        self._closed = threading.Event()
        threading.Thread(target=self._watch, name=f"chatkit-{label}-deadlines", daemon=True).start()

    def _watch(self) -> None:
        """Shut down each connection served past its deadline, every :data:`DEADLINE_POLL`."""
        while not self._closed.wait(DEADLINE_POLL):
            now = time.monotonic()
            with self._served_lock:
                late = [sock for sock, at in self._served.items() if at <= now]
            for sock in late:
                _cut(sock)

    def server_close(self) -> None:
        closed = getattr(self, "_closed", None)  # (None: closed by a bind that failed)
        if closed is not None:
            closed.set()
        super().server_close()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            now = time.monotonic()
            if now - self._warned >= 60:  # one line a minute, whatever the storm
                self._warned = now
                log.warning(
                    "%s: %d connections at once (max_connections); refusing more",
                    self.label,
                    self.most,
                )
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        super().process_request(request, client_address)

    deadline = CONNECTION_DEADLINE
    """Seconds a connection is served at most; then its socket is shut down."""

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._served_lock:
            self._served[request] = time.monotonic() + self.deadline
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._served_lock:
                self._served.pop(request, None)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (a broken pipe, a reset, a timeout) is no error of ours.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("%s: connection from %s ended: %s", self.label, client_address, exc)
        else:
            log.error("%s: request from %s failed", self.label, client_address, exc_info=True)


def _cut(sock: Any) -> None:
    """Shut down a connection past its deadline: its handler's read or write fails."""
    with contextlib.suppress(OSError):  # (closed meanwhile)
        sock.shutdown(socket.SHUT_RDWR)
