"""The Containerfile's commands work: its CMD's flags start a real server and its
HEALTHCHECK answers 0 against it (`chatkit ping`), 3 when nothing listens, 5 when the
server does not answer. (Building the image needs a container engine; the commands it
runs are what can go wrong here.)"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

from conftest import CHATKIT, ServeProcess

ROOT = Path(__file__).resolve().parent.parent


def instruction(name: str) -> list[str]:
    """The JSON argv of the Containerfile's ``name`` instruction (continuations joined)."""
    text = (ROOT / "Containerfile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name}\b.*?(\[.*\])\s*$", text, re.MULTILINE)
    assert match, name
    argv = json.loads(match.group(1))
    assert isinstance(argv, list) and argv[0] == "chatkit"
    return [CHATKIT, *argv[1:]]


def test_the_cmd_starts_a_server_and_the_healthcheck_finds_it(
    serve: type[ServeProcess], tmp_path: Path
) -> None:
    cmd = instruction("CMD")
    assert cmd[1] == "serve"
    args = cmd[2:]
    # Same flags, but on free ports and a scratch database.
    args[args.index("--irc-port") + 1] = "0"
    args[args.index("--db") + 1] = str(tmp_path / "history.sqlite3")
    args[args.index("--host") + 1] = "127.0.0.1"
    server = serve(*args)
    health = [*instruction("HEALTHCHECK"), "--port", str(server.address[1])]
    result = subprocess.run(health, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"pong from 127.0.0.1:{server.address[1]} in ")
    code, _out, err = server.stop()
    assert code == 0
    assert err.startswith("{")  # --log-format json


def test_the_healthcheck_fails_without_a_server() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free, and nothing listens once closed
    health = [*instruction("HEALTHCHECK"), "--port", str(port)]
    result = subprocess.run(health, capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert f"no chatkit server at 127.0.0.1:{port}" in result.stderr


def test_the_healthcheck_fails_when_the_server_does_not_answer() -> None:
    with socket.socket() as silent:  # accepts (the kernel does) and never reads
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        result = subprocess.run(
            [CHATKIT, "ping", "--port", str(port), "--timeout", "0.5"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 5
    assert f"no answer from 127.0.0.1:{port}" in result.stderr


def test_the_image_pins_uv_and_gives_its_user_a_fixed_uid() -> None:
    """A build next year installs as one today does (uv pinned, uv.lock the rest), and the
    uid docs/operations.md tells operators to chown a bind mount to is the image's."""
    text = (ROOT / "Containerfile").read_text()
    assert re.search(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+ ", text), "uv's image is not pinned"
    uid = re.search(r"useradd --system --uid (\d+) ", text)
    assert uid is not None
    assert f"chown -R {uid.group(1)}" in (ROOT / "docs" / "operations.md").read_text()
