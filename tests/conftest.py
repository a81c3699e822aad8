from __future__ import annotations

import itertools
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from chatkit import Message, Session, hookimpl

pytest_plugins = ["chatkit.testing"]


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test, and every `chatkit` process it starts, gets its own data directory,
    so the default history database is never the user's and never shared by tests."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


CHATKIT = str(Path(sys.executable).parent / "chatkit")


class ServeProcess:
    """A `chatkit serve --port 0` subprocess and the address it printed."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [CHATKIT, "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        assert self.proc.stdout is not None
        self.lines: list[str] = []
        for line in self.proc.stdout:  # readline blocks until the server speaks or dies
            self.lines.append(line)
            match = re.search(r"listening on (\S+):(\d+)", line)
            if match:
                self.address = (match.group(1), int(match.group(2)))
                break
        else:
            raise AssertionError(
                f"server did not start: {self.proc.stderr.read() if self.proc.stderr else ''}"
            )
        self.lines.append(self.proc.stdout.readline())  # the plugins line

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str, str]:
        self.proc.send_signal(signum)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        # Read through the text buffers (communicate() would skip what readline()
        # already buffered); the server exits, so both reach EOF.
        out = self.proc.stdout.read()
        err = self.proc.stderr.read()
        return self.proc.wait(timeout=10), "".join(self.lines) + out, err


@pytest.fixture
def serve() -> Iterator[type[ServeProcess]]:
    procs: list[ServeProcess] = []

    class Tracked(ServeProcess):
        def __init__(self, *args: str, cwd: Path | None = None) -> None:
            super().__init__(*args, cwd=cwd)
            procs.append(self)

    yield Tracked
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


def not_reading(address: tuple[str, int], nick: str) -> socket.socket:
    """A client logged in as ``nick`` (its hello sent) that reads nothing, its receive
    buffer small: what the server sends it waits in the server's queue, once the
    kernel's buffers are full (see :func:`fill_queues`)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(address)
    sock.sendall(b'{"type":"hello","nick":"%s"}\n' % nick.encode())
    return sock


def fill_queues(
    address: tuple[str, int],
    lines: int = 1500,
    *,
    every: Callable[[], object] | None = None,
    until: Callable[[], bool] | None = None,
) -> None:
    """Say ``lines`` lines of 2 KB in the default room from a client of its own (3 MB
    at the default: more than the kernel's buffers hold for a client not reading), or
    fewer, once ``until()`` holds; every 100 lines it syncs, and calls ``every()`` (a
    reader keeping up)."""
    # (Imported here: at the top, before pytest_plugins has it, its asserts would not
    # be rewritten.)
    from chatkit.testing import ChatClient

    with ChatClient(address) as talker:
        talker.login(f"talker{next(_TALKERS)}")  # (a new nick: the last may not be free yet)
        for i in range(lines):
            talker.say(f"{i:04} " + "z" * 2000)
            if i % 100 == 0:
                talker.sync()
                if every is not None:
                    every()
                if until is not None and until():
                    break
        talker.sync()


_TALKERS = itertools.count(1)


class HeldStore:
    """A store plugin whose every message waits in its room's lane until the test
    sets the future of its commit (``held``): a message held while it is stored."""

    def __init__(self) -> None:
        self.held: list[Future[None]] = []

    @hookimpl
    def chatkit_store_message(self, client: Session, message: Message) -> Future[None]:
        future: Future[None] = Future()
        self.held.append(future)
        return future

    def release(self) -> None:
        for future in self.held:
            future.set_result(None)
