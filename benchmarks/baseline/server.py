"""The classroom chat server chatkit grew from, replicated faithfully as the benchmark baseline.

A ``socketserver.ThreadingTCPServer``: the first ``recv(1024)`` is the username, a taken
name gets an error and the next one is tried; every later ``recv(1024)`` is relayed to
everyone as ``"{user}: {text}"`` by a blocking ``send`` to each client from the
sender's own thread; the client dict is shared without a lock. Its flaws are kept on
purpose (no framing, a slow client blocks its sender): it is what chatkit is measured
against, not an example.

Run: ``python -m benchmarks.baseline.server --port 9090``
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import socketserver

clients: dict[str, socket.socket] = {}


def broadcast(data: bytes) -> None:
    for sock in list(clients.values()):
        with contextlib.suppress(OSError):
            sock.send(data)


class Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        while True:
            data = sock.recv(1024)
            if not data:
                return
            user = data.decode(errors="replace").strip()
            if user and user not in clients:
                break
            sock.send(b"error: username taken, try another\n")
        clients[user] = sock
        broadcast(f"{user} joined\n".encode())
        try:
            while True:
                data = sock.recv(1024)
                if not data:
                    break
                broadcast(f"{user}: ".encode() + data)
        except OSError:
            pass
        finally:
            clients.pop(user, None)
            broadcast(f"{user} left\n".encode())


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    args = parser.parse_args()
    with Server((args.host, args.port), Handler) as server:
        print(f"baseline listening on {args.host}:{server.server_address[1]}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


if __name__ == "__main__":
    main()
