from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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
