"""The chatkit command, run as a real subprocess."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import CHATKIT, ServeProcess

from chatkit import Frame, Server, UsageError
from chatkit.cli import _client_port, _overlap, _without_password
from chatkit.client import MAX_SERVER_LINE
from chatkit.codecs import TEXT_CODEC
from chatkit.config import config_from_dict
from chatkit.plugins import build_plugin_manager, check_plugin_settings
from chatkit.terminal import format_frame
from chatkit.testing import ChatClient, TextClient, wait_until


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATKIT, *args], capture_output=True, text=True, timeout=30, cwd=cwd, env=env
    )


def test_serve_chats_and_stops_cleanly_on_sigterm(serve: type[ServeProcess]) -> None:
    """chatkit serve: nc-style and JSON clients chat; SIGTERM tells them and exits 0."""
    server = serve()
    assert (
        "plugins: help, session, rooms, messaging, flood, history, accounts, log"
        in server.lines[-1]
    )
    nc = TextClient(server.address)
    nc.send_line("alice")
    nc.expect("Welcome to chatkit")
    bob = ChatClient(server.address)
    bob.login("bob")
    nc.send_line("hi bob")
    assert bob.expect("message")["text"] == "hi bob"
    bob.say("hi alice")
    assert nc.expect("<bob>") == "[#general] <bob> hi alice"
    code, out, err = server.stop(signal.SIGTERM)
    assert code == 0
    assert bob.expect("notice")["text"] == "server shutting down"
    bob.wait_closed()
    nc.expect("*** server shutting down")
    assert "stopped" in out
    assert "alice logged in" in err and "bob left #general (server shutdown)" in err


def test_ctrl_c_stops_cleanly(serve: type[ServeProcess]) -> None:
    """SIGINT (Ctrl+C) stops the server with exit status 0 and no traceback."""
    server = serve()
    client = ChatClient(server.address)
    client.login("alice")
    code, _out, err = server.stop(signal.SIGINT)
    assert code == 0
    assert "Traceback" not in err
    client.wait_closed()


def test_a_stop_signal_sent_twice_still_stops_cleanly(serve: type[ServeProcess]) -> None:
    """Two SIGTERMs at once (``uv run`` passes on the one sent to its process group, as
    ``timeout``, systemd and ``docker stop`` send it) stop the server as one does: the
    clients told, status 0, no traceback. (Raising from the handler inside a lock's
    code could hang the shutdown or end it with a traceback.)"""
    for _ in range(3):
        server = serve()
        client = ChatClient(server.address)
        client.login("alice")
        server.proc.send_signal(signal.SIGTERM)
        code, out, err = server.stop(signal.SIGTERM)
        assert (code, "Traceback" in err) == (0, False), err
        assert "stopped" in out
        assert client.expect("notice")["text"] == "server shutting down"
        client.wait_closed()


def test_serve_with_an_unknown_plugin_exits_2(tmp_path: Path) -> None:
    """An unknown --plugin exits 2 with a suggestion and the available names."""
    result = run("serve", "--port", "0", "--plugin", "room")
    assert result.returncode == 2
    assert "Unknown plugin 'room'. Did you mean 'rooms'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_with_a_broken_plugin_exits_2(tmp_path: Path) -> None:
    """A plugin that fails to import exits 2 naming the plugin and its package."""
    (tmp_path / "brokenplug.py").write_text("raise ImportError('needs libfoo')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = run("serve", "--port", "0", "--plugin", "brokenplug.x", env=env)
    assert result.returncode == 2, result.stderr
    assert "Error: cannot import plugin 'brokenplug.x': ImportError" in result.stderr
    assert "needs libfoo" in result.stderr
    assert f"(at {tmp_path / 'brokenplug.py'}:1, in <module>)" in result.stderr
    (tmp_path / "cfgerr.py").write_text(
        "from chatkit import hookimpl\n\n@hookimpl\ndef chatkit_configure(config):\n"
        "    raise KeyError('token')\n"
    )
    result = run("serve", "--port", "0", "--plugin", "cfgerr", env=env)
    assert result.returncode == 2, result.stderr
    assert "failed in chatkit_configure: KeyError: 'token' (at " in result.stderr
    assert "cfgerr.py:5, in chatkit_configure)" in result.stderr
    # An error raised in a library the plugin calls: the plugin's line, not the library's.
    (tmp_path / "libcall.py").write_text(
        "import redis\nfrom chatkit import hookimpl\n\n@hookimpl\ndef chatkit_configure(config):\n"
        "    redis.Redis.from_url('nope://x')\n"
    )
    result = run("serve", "--port", "0", "--plugin", "libcall", env=env)
    assert result.returncode == 2, result.stderr
    assert "libcall.py:6, in chatkit_configure)" in result.stderr, result.stderr
    # A package's hooks calling another module of the package: that module's line.
    (tmp_path / "pkgplug" / "hooks").mkdir(parents=True)
    (tmp_path / "pkgplug" / "__init__.py").write_text("")
    (tmp_path / "pkgplug" / "db.py").write_text("def open_db():\n    raise OSError('no db')\n")
    (tmp_path / "pkgplug" / "hooks" / "__init__.py").write_text(
        "from chatkit import hookimpl\nfrom pkgplug.db import open_db\n\n"
        "@hookimpl\ndef chatkit_configure(config):\n    open_db()\n"
    )
    result = run("serve", "--port", "0", "--plugin", "pkgplug.hooks", env=env)
    assert result.returncode == 2, result.stderr
    assert "db.py:2, in open_db)" in result.stderr, result.stderr
    # Where the plugin is wrong, never a place in chatkit's or pluggy's code: a hook
    # taking an argument it is not given, an object the module does not have.
    (tmp_path / "badarg.py").write_text(
        "from chatkit import hookimpl\n\n@hookimpl\ndef chatkit_on_message(msg):\n    pass\n"
    )
    result = run("serve", "--port", "0", "--plugin", "badarg", env=env)
    assert result.returncode == 2, result.stderr
    assert "chatkit_on_message takes no argument 'msg'" in result.stderr
    assert f"(at {tmp_path / 'badarg.py'}:3)" in result.stderr
    assert "pluggy" not in result.stderr, result.stderr
    result = run("serve", "--port", "0", "--plugin", "badarg:Nope", env=env)
    assert result.returncode == 2 and "has no attribute 'Nope'" in result.stderr
    assert "plugins.py" not in result.stderr, result.stderr


def test_serve_cannot_bind_exits_2(serve: type[ServeProcess]) -> None:
    """A port in use is a clear error, not a traceback."""
    first = serve()
    result = run("serve", "--port", str(first.address[1]))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{first.address[1]}" in result.stderr
    # Two of its own faces on one port: said before binding either, naming both.
    result = run("serve", "--port", "20717", "--irc-port", "20717")
    assert result.returncode == 2
    assert "the line and irc faces are both set to 127.0.0.1:20717" in result.stderr


def test_config_file_and_flags(serve: type[ServeProcess], tmp_path: Path) -> None:
    """A TOML config sets limits and rooms; flags win over the file."""
    config = tmp_path / "chatkit.toml"
    config.write_text(
        '[server]\ndefault_room = "#lobby"\ndisable = ["log"]\n\n[limits]\nmax_line = 100\n'
    )
    server = serve("--max-line", "150", cwd=tmp_path)  # ./chatkit.toml is read by default
    assert (
        "plugins: help, session, rooms, messaging, flood, history, accounts\n" in server.lines[-1]
    )
    alice = ChatClient(server.address)
    assert alice.login("alice")["rooms"] == ["#lobby"]
    alice.say("x" * 120)  # over the file's 100, under the flag's 150
    assert alice.expect("message")["room"] == "#lobby"
    alice.say("x" * 160)
    assert alice.expect("error")["code"] == "line_too_long"
    code, out, _ = server.stop()
    assert code == 0 and "config: chatkit.toml" in out


def test_a_bad_config_file_exits_2(tmp_path: Path) -> None:
    """Unknown keys and bad values in the config file are named."""
    config = tmp_path / "bad.toml"
    config.write_text("[limits]\nmax_lines = 5\n")
    result = run("serve", "--config", str(config))
    assert result.returncode == 2
    assert "unknown key limits.max_lines" in result.stderr
    result = run("serve", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_plugins_json() -> None:
    """chatkit plugins --json lists every plugin with package, version, hooks and commands."""
    result = run("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == sorted(r["name"] for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert by_name["messaging"] == {
        "name": "messaging",
        "origin": "builtin",
        "package": "chatkit-server",
        "version": by_name["messaging"]["version"],
        "default": "default",
        "hooks": ["chatkit_register_commands"],
        "commands": ["describe", "me", "msg"],
        "error": None,
        "description": "/msg, /me and /describe: private messages and actions.",
    }
    assert by_name["motd"]["description"] == (
        "chatkit-motd: a message of the day on login, and a /motd command."
    )
    result = run("plugins", "--json", "--hook", "chatkit_on_join")
    assert [r["name"] for r in json.loads(result.stdout)] == [
        "cluster",
        "log",
        "moderation",
        "webhooks",
    ]


def test_plugins_hook_filter_takes_short_names_and_refuses_unknown_ones() -> None:
    """--hook on_join equals --hook chatkit_on_join; an unknown hook exits 2 with a suggestion."""
    result = run("plugins", "--json", "--hook", "on_join")
    assert [r["name"] for r in json.loads(result.stdout)] == [
        "cluster",
        "log",
        "moderation",
        "webhooks",
    ]
    result = run("plugins", "--hook", "on_jion")
    assert result.returncode == 2
    assert "unknown hook 'on_jion'. Did you mean 'chatkit_on_join'?" in result.stderr


def test_plugins_table() -> None:
    """chatkit plugins prints a table for people."""
    result = run("plugins")
    assert result.returncode == 0
    assert "messaging" in result.stdout and "/msg" in result.stdout


@pytest.mark.parametrize("columns", [80, 60])
def test_plugins_table_is_readable_at_80_columns(columns: int) -> None:
    """At 80 columns the table wraps instead of cutting: whole names, hooks and commands,
    and a description; narrower (60 cut hook names), a block per plugin says the same."""
    result = run("plugins", env={**os.environ, "COLUMNS": str(columns)})
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    assert "…" not in result.stdout
    words = result.stdout.replace(",", " ").split()
    rows = json.loads(run("plugins", "--json").stdout)
    for row in rows:
        assert row["name"] in words
        for hook in row["hooks"]:
            assert hook.removeprefix("chatkit_") in words
        for command in row["commands"]:
            assert f"/{command}" in words
    assert "Flood" in words and ("what" in words) == (columns >= 80)


def test_help_and_version() -> None:
    """--help documents serve's limits; --version prints the version; python -m works."""
    result = run("serve", "--help", env={**os.environ, "COLUMNS": "200"})  # one line each
    assert result.returncode == 0
    for flag in (
        "--plugin",
        "--no-plugin",
        "--config",
        "--max-line",
        "--max-sendq",
        "--idle-timeout",
        "--max-pending",
        "--first-byte-timeout",
        "--connect-rate",
    ):
        assert flag in result.stdout
    # Every default is shown (Rich would swallow a literal "[default: ...]" in a help text).
    for default in ("9090", "8192", "1048576", "#general", "one file per server in the user data"):
        assert f"[default: {default}" in " ".join(result.stdout.split()), default
    version = run("--version")
    assert re.fullmatch(r"chatkit \d+\.\d+\.\d+\n", version.stdout)
    module = subprocess.run(
        [sys.executable, "-m", "chatkit", "--version"], capture_output=True, text=True, timeout=30
    )
    assert module.stdout == version.stdout


def test_our_plugin_packages_are_listed_and_load(serve: type[ServeProcess]) -> None:
    """Each package under plugins/ is installed: listed with its version, hooks and commands, and loadable by name."""
    rows = {r["name"]: r for r in json.loads(run("plugins", "--json").stdout)}
    assert rows["profanity"]["package"] == "chatkit-profanity"
    assert rows["profanity"]["origin"] == "entry point"
    assert rows["profanity"]["default"] == "off"
    assert rows["profanity"]["version"] == "0.1.0"
    assert "chatkit_filter_message" in rows["profanity"]["hooks"]
    assert rows["motd"]["commands"] == ["motd"]
    assert rows["motd"]["hooks"] == [
        "chatkit_check_config",
        "chatkit_configure",
        "chatkit_on_login",
        "chatkit_register_commands",
    ]
    server = serve("--plugin", "motd", "--plugin", "profanity")
    assert (
        "plugins: help, session, rooms, messaging, flood, history, accounts, log, motd, profanity"
        in server.lines[-1]
    )
    alice = ChatClient(server.address)
    alice.login("alice")
    assert alice.expect("notice")["text"].startswith("Welcome, alice")
    alice.say("oh shit")
    assert alice.expect("message")["text"] == "oh ****"


def test_join_script_against_a_serve_process(serve: type[ServeProcess]) -> None:
    """Two real processes: `chatkit join` pipes lines into `chatkit serve`."""
    server = serve()
    watcher = ChatClient(server.address)
    watcher.login("watcher")
    host, port = server.address
    result = subprocess.run(
        [CHATKIT, "join", "--host", host, "--port", str(port), "--nick", "piper"],
        input="first\nsecond\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert [watcher.expect("message", nick="piper")["text"] for _ in range(2)] == [
        "first",
        "second",
    ]
    assert "[#general] <piper> second" in result.stdout


def test_join_script_with_a_registered_nick_says_where_its_password_goes(
    serve: type[ServeProcess],
) -> None:
    """A script joining as a registered nick without its password exits 4 saying how to
    give it (CHATKIT_PASSWORD, --password), and joins with it."""
    server = serve()
    with ChatClient(server.address) as owner:
        owner.login("piper")
        owner.command("/register piper-password")
    host, port = server.address
    join = [CHATKIT, "join", "--host", host, "--port", str(port), "--nick", "piper"]
    env = {k: v for k, v in os.environ.items() if k != "CHATKIT_PASSWORD"}
    result = subprocess.run(join, input="", capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip() == (
        "nick 'piper' refused: piper is registered: log in with its password, or take another "
        "nick; give its password in CHATKIT_PASSWORD (or --password)"
    )
    env["CHATKIT_PASSWORD"] = "piper-password"
    result = subprocess.run(join, input="hi\n", capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 0, result.stderr


def test_serve_raises_the_open_files_limit_and_warns_when_it_is_too_low() -> None:
    """At start the soft limit goes up to the hard one; a max-clients above it is warned about."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.fail("this test needs a finite open-files hard limit")
    proc = subprocess.Popen(
        [CHATKIT, "serve", "--port", "0", "--log-level", "info", "--max-clients", str(hard * 2)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
    )
    assert proc.stdout is not None and "listening on" in proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=10)
    assert f"raised the open-files limit from 256 to {hard}" in err
    assert f"the open-files hard limit ({hard}) is below max_clients ({hard * 2}) plus 64" in err


def test_serve_on_all_interfaces_prints_addresses_people_can_use(
    serve: type[ServeProcess],
) -> None:
    """--host 0.0.0.0 prints the machine's own addresses to connect to (loopback too), each of which works."""
    server = serve("--host", "0.0.0.0")
    assert server.proc.stdout is not None
    while not server.lines[-1].startswith("try:"):
        server.lines.append(server.proc.stdout.readline())
    tries = re.findall(r"nc (\S+) (\d+)", server.lines[-1])
    hosts = [host for host, port in tries if int(port) == server.address[1]]
    assert len(hosts) == len(tries) and "127.0.0.1" in hosts
    assert "0.0.0.0" not in server.lines[-1]
    assert "(all interfaces)" in server.lines[0]
    for i, host in enumerate(hosts):
        nc = TextClient((host, server.address[1]))
        nc.send_line(f"user{i}")
        nc.expect("Welcome to chatkit")
        nc.close()
    code, _out, _err = server.stop()
    assert code == 0


def test_serve_says_each_startup_fact_once(serve: type[ServeProcess], tmp_path: Path) -> None:
    """Where it listens, the history file and the stop each appear on one line, not in a log line too."""
    db = tmp_path / "chat.sqlite3"
    server = serve("--db", str(db))
    assert server.proc.stdout is not None
    while not server.lines[-1].startswith("try:"):  # every startup line is out
        server.lines.append(server.proc.stdout.readline())
    code, out, err = server.stop()
    assert code == 0
    lines = (out + err).splitlines()
    assert len([line for line in lines if "listening on" in line]) == 1, lines
    assert len([line for line in lines if str(db) in line]) == 1, lines
    assert len([line for line in lines if line.endswith("stopped")]) == 1, lines


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux's /proc")
def test_only_the_main_thread_of_serve_takes_stop_signals(serve: type[ServeProcess]) -> None:
    """Every thread of `chatkit serve` but the main one blocks SIGINT and SIGTERM, so the
    kernel hands them to the thread that waits for them (else a SIGTERM could go unheard)."""
    server = serve()
    try:
        with ChatClient(server.address) as alice:  # a reader thread too
            alice.login("alice")
            stop = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
            pid = server.proc.pid
            blocked = {}
            for task in Path(f"/proc/{pid}/task").iterdir():
                status = (task / "status").read_text()
                found = re.search(r"^SigBlk:\s*([0-9a-f]+)$", status, re.M)
                assert found is not None, status
                mask = int(found.group(1), 16)
                blocked[int(task.name)] = mask & stop == stop
            assert len(blocked) >= 4  # main, acceptor, writer, reader, ...
            assert blocked.pop(pid) is False
            assert all(blocked.values()), blocked
    finally:
        code, _out, _err = server.stop()
    assert code == 0


def test_a_config_section_for_an_unknown_plugin_exits_2(tmp_path: Path) -> None:
    """A [plugins.NAME] table of a plugin that does not exist stops the start, naming the section and the fix."""
    config = tmp_path / "chatkit.toml"
    config.write_text('[plugins.profanty]\naction = "drop"\n')
    result = run("serve", "--port", "0", "--config", str(config))
    assert result.returncode == 2
    assert (
        f"{config}: [plugins.profanty] is for an unknown plugin 'profanty'. "
        "Did you mean [plugins.profanity]? Install the plugin or remove the section"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_config_section_for_a_plugin_not_enabled_is_warned_about(
    serve: type[ServeProcess], tmp_path: Path
) -> None:
    """A [plugins.NAME] table of an installed plugin that is not enabled is a warning; enabling it silences that."""
    config = tmp_path / "chatkit.toml"
    config.write_text('[plugins.profanity]\naction = "drop"\n')
    server = serve("--config", str(config))
    code, _out, err = server.stop()
    assert code == 0
    said = (
        f"{config}: [plugins.profanity] is unused: plugin 'profanity' is installed but "
        "not enabled; enable it with --plugin profanity or [server] plugins, or remove the section"
    )
    assert f"WARNING chatkit.config: {said}" in " ".join(err.split())
    # In the log's format: one JSON object a line with --log-format json.
    server = serve("--config", str(config), "--log-format", "json")
    code, _out, err = server.stop()
    warned = [json.loads(line) for line in err.splitlines() if "is unused" in line]
    assert [w["message"] for w in warned] == [said] and warned[0]["level"] == "warning"
    server = serve("--config", str(config), "--plugin", "profanity")
    code, _out, err = server.stop()
    assert code == 0 and "is unused" not in err
    # A flag that enables a plugin (--metrics-port for metrics, --redis for cluster) counts,
    # and one the file enables already is enabled once.
    config.write_text('[server]\nplugins = ["metrics"]\n[plugins.metrics]\nhost = "127.0.0.1"\n')
    server = serve("--config", str(config), "--metrics-port", "0", "--plugin", "metrics")
    code, out, err = server.stop()
    assert code == 0 and "is unused" not in err and "twice" not in err, err
    assert "metrics: http://" in out and "metrics on" not in err  # (the banner says it once)


def test_a_wrong_type_in_the_config_file_says_what_it_got(tmp_path: Path) -> None:
    """A value of the wrong type is named with its section, the type wanted and the value given."""
    config = tmp_path / "chatkit.toml"
    config.write_text('[limits]\nmax_nick = "abc"\n')
    result = run("serve", "--port", "0", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}: [limits] max_nick must be an integer, not 'abc'" in result.stderr


def test_help_shows_readable_metavars() -> None:
    """Options show NAME, PATH, SECONDS ... in help, and flags show no type at all."""
    env = {**os.environ, "COLUMNS": "200"}
    serve_help = run("serve", "--help", env=env).stdout
    assert "<list[str]>" not in serve_help and "<str>" not in serve_help
    assert re.search(r"--plugin\s+-p\s+NAME", serve_help)
    assert re.search(r"--db\s+PATH", serve_help)
    assert re.search(r"--idle-timeout\s+SECONDS", serve_help)
    join_help = run("join", "--help", env=env).stdout
    flags = [
        line
        for line in join_help.splitlines()
        if re.match(r"\W*--(json|stay|color|reconnect)\b", line)
    ]
    assert len(flags) == 4 and not [line for line in flags if "<bool>" in line]
    new_help = run("plugin", "new", "--help", env=env).stdout
    assert re.search(r"--chatkit-path\s+PATH", new_help)
    for args in (["--help"], ["serve", "--help"], ["plugins", "--help"], ["plugin", "--help"]):
        text = run(*args, env=env).stdout
        assert "<bool>" not in text and "<int>" not in text, args
    assert "<bool>" not in join_help + new_help


def test_a_port_in_use_stops_serve_before_it_opens_the_database(tmp_path: Path) -> None:
    """Bind first: a server that cannot listen exits 2 without creating its history file."""
    db = tmp_path / "chat.sqlite3"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [CHATKIT, "serve", "--port", str(port), "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert not db.exists()


def test_a_server_that_fails_stops_serve_with_status_1(tmp_path: Path) -> None:
    """Server.fail (a plugin the server cannot run without has failed) ends `chatkit serve`
    with exit status 1 and the reason, instead of it limping on."""
    (tmp_path / "breaks.py").write_text(
        "import threading\n"
        "from chatkit import hookimpl\n"
        "@hookimpl\n"
        "def chatkit_server_start(server):\n"
        "    threading.Timer(0.2, server.fail, ['the frobnicator broke']).start()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [CHATKIT, "serve", "--port", "0", "--plugin", "breaks"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 1
    assert "chatkit stopped: the frobnicator broke" in result.stderr


WELCOME = {
    "type": "welcome",
    "nick": "bot",
    "server": "chatkit",
    "version": "0.1.0",
    "rooms": ["#general"],
}


class ScriptedServer:
    """Just enough of a chatkit server for one `chatkit join`, to send what a real server
    would not send in one session (or at all): it welcomes the nick, then sends each item
    of ``script`` (a dict as a JSON line, bytes as they are), and answers pings."""

    def __init__(self, script: Sequence[dict[str, Any] | bytes]) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                frame = json.loads(line)
                if frame["type"] == "hello":
                    items = [{**WELCOME, "nick": frame["nick"]}, *self.script]
                    conn.sendall(b"".join(self.line(item) for item in items))
                elif frame["type"] == "ping":
                    conn.sendall(b'{"type":"pong"}\n')

    @staticmethod
    def line(item: dict[str, Any] | bytes) -> bytes:
        return item if isinstance(item, bytes) else json.dumps(item).encode() + b"\n"

    def join(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run `chatkit join --nick bot` against this server until it exits."""
        try:
            return subprocess.run(
                [CHATKIT, "join", "--port", str(self.port), "--nick", "bot", *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=30,
            )
        finally:
            self.listener.close()


def test_join_reports_server_lines_it_cannot_read_and_goes_on() -> None:
    """A line from the server over the client's limit, or not JSON, is told on standard
    error (in JSON mode too) and skipped; what follows is printed; the exit status is 0."""
    script: list[dict[str, Any] | bytes] = [
        b"x" * (MAX_SERVER_LINE + 1) + b"\n",
        b"<html>\n",
        {"type": "notice", "text": "still here"},
    ]
    for args, notice in [
        ((), "*** still here"),
        (("--json",), '{"type": "notice", "text": "still here"}'),
    ]:
        result = ScriptedServer(script).join(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[1:] == [notice]
        assert result.stderr.splitlines() == [
            f"error [server_line_too_long]: a line from the server was longer than "
            f"{MAX_SERVER_LINE} bytes; it was skipped",
            "error [server_bad_frame]: a line from the server is not a chatkit frame; "
            "it was skipped: '<html>'",
        ]


def test_join_splits_its_input_as_the_server_splits_lines(
    chat_client: Callable[..., ChatClient],
) -> None:
    """Standard input is split into lines with the server's splitter: a last line without
    a newline is sent, and a line over the limit, or not UTF-8 (which the server refuses
    from nc), is told on standard error, not sent."""
    watcher = chat_client("watcher")
    server_port = watcher.address[1]
    huge = b"y" * (MAX_SERVER_LINE + 1)
    result = subprocess.run(
        [CHATKIT, "join", "--port", str(server_port), "--nick", "piper"],
        input=b"first\n" + huge + b"\ncaf\xe9 latin-1\nlast without a newline",
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode() == (
        f"a line of input longer than {MAX_SERVER_LINE} bytes was not sent\n"
        "a line of input that is not UTF-8 (byte 4) was not sent\n"
    )
    said = [watcher.expect("message", nick="piper")["text"] for _ in range(2)]
    assert said == ["first", "last without a newline"]
    assert [f for f in watcher.sync() if f["type"] == "message"] == []


TS = "2026-11-24T09:45:00.000Z"
# One of each frame type a client shows, with the fields a server sends (ping and pong
# are answered, not shown, by `chatkit join` and the terminal; text mode shows them).
EVERY_FRAME: list[dict[str, Any]] = [
    {"type": "join", "room": "#general", "nick": "bot", "ts": TS},
    {"type": "message", "id": 1, "ts": TS, "room": "#general", "nick": "alice", "text": "hi"},
    {"type": "message", "id": 2, "ts": TS, "room": "#general", "nick": "al", "text": "one\ntwo"},
    {"type": "message", "id": 3, "ts": TS, "room": "#dev", "nick": "al", "text": "waves"}
    | {"action": True},
    {"type": "message", "id": 4, "ts": TS, "room": "#general", "nick": "al", "text": "old"}
    | {"history": True},
    {"type": "private", "id": 5, "ts": TS, "from": "alice", "to": "bot", "text": "psst"},
    {"type": "private", "id": 6, "ts": TS, "from": "alice", "to": "bot", "text": "a\nb"}
    | {"action": True},
    {"type": "private", "id": 7, "ts": TS, "from": "bot", "to": "al", "text": "x"}
    | {"history": True},
    {"type": "history", "room": "#general", "count": 2, "more": True},
    {"type": "history", "with": "alice", "count": 0, "more": False},
    {"type": "leave", "room": "#general", "nick": "carol", "ts": TS, "reason": "quit: lunch"},
    {"type": "leave", "room": "#a", "rooms": ["#a", "#b"], "nick": "dave", "ts": TS}
    | {"reason": "ping timeout"},
    {"type": "nick", "old": "alice", "new": "alicia"},
    {"type": "reply", "command": "who", "text": "#general (2): alice, bot"}
    | {"data": {"room": "#general", "nicks": ["alice", "bot"]}},
    {"type": "reply", "command": "help", "text": "/help [COMMAND]\n/who [#room]", "data": {}},
    {"type": "notice", "text": "server shutting down"},
    {"type": "error", "code": "unknown_command", "text": "no such command: /x"},
    {"type": "weather", "city": "Oslo", "celsius": -3},  # a plugin's own frame type
]


def text_mode(frame: dict[str, Any]) -> str:
    """What the server sends a text-mode client (nc) for ``frame``."""
    fields = {k: v for k, v in frame.items() if k != "type"}
    return TEXT_CODEC.encode(Frame(frame["type"], **fields)).decode()


def test_every_frame_reads_alike_in_text_mode_join_and_the_terminal() -> None:
    """One wording: for every frame type, `chatkit join` prints what the server's text mode
    sends, and the terminal client shows the same words after its clock, but for its two
    decorations: a replayed message's date and time lead the line (in local time) instead
    of following the room, and a message's lines after the first are indented under it
    instead of repeating its prefix."""
    result = ScriptedServer(EVERY_FRAME).join()
    assert result.returncode == 0, result.stderr
    frames = [WELCOME, *EVERY_FRAME]
    assert result.stdout == "".join(text_mode(frame) for frame in frames)
    for frame in frames:
        clock, *fragments = format_frame(frame)
        shown = "".join(text for _, text in fragments)
        lines = text_mode(frame).removesuffix("\n").split("\n")
        if frame.get("history"):  # the clock shows the date instead
            lines = [re.sub(r" \d{4}-\d\d-\d\d \d\d:\d\d", "", line, count=1) for line in lines]
        if frame["type"] in ("message", "private"):  # the rest indented under the first line
            prefix = len(lines[0]) - len(frame["text"].split("\n")[0])
            indent = " " * (len(clock[1]) + prefix)
            lines[1:] = [indent + line[prefix:] for line in lines[1:]]
        assert shown == "\n".join(lines), frame


def test_text_mode_and_join_print_the_same_lines_on_a_real_server(
    chat_server: Server, chat_client: Callable[..., ChatClient]
) -> None:
    """A person at nc and `chatkit join` in one room read the same lines for what happens there."""
    nc = TextClient(chat_server.address)
    nc.send_line("nc")
    nc.expect("Welcome to chatkit")
    host, port = chat_server.address
    join = subprocess.Popen(
        [CHATKIT, "join", "--host", host, "--port", str(port), "--nick", "bot", "--stay"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert join.stdout is not None
    assert join.stdout.readline().startswith("* Welcome to chatkit")
    assert join.stdout.readline() == "* bot joined #general\n"
    nc.expect("* bot joined #general")
    alice = chat_client("alice")
    for line in ("hi", "/me waves", "one\ntwo", "/nick alicia"):
        alice.say(line)
    alice.expect("nick", new="alicia")
    alice.say("/quit bye")
    alice.wait_closed()
    # The socket closes once /quit's reply is sent; the leave goes out when alice's
    # reader has logged her out: wait for that before nc's ping.
    wait_until(lambda: chat_server.hub.find("alicia") is None, 10, "alicia's logout")
    seen = nc.sync()  # everything up to alicia's leave
    assert seen[-1] == "* alicia left #general (quit: bye)"
    assert [join.stdout.readline().removesuffix("\n") for _ in seen] == seen
    chat_server.shutdown()
    assert nc.expect("server shutting down") == join.stdout.readline().removesuffix("\n")
    assert join.wait(timeout=10) == 0


def test_check_prints_the_effective_settings_of_a_good_file(tmp_path: Path) -> None:
    config = tmp_path / "chatkit.toml"
    config.write_text('[server]\nport = 7000\nplugins = ["stats"]\n[limits]\nmax_line = 4096\n')
    result = subprocess.run(
        [CHATKIT, "check", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert f"{config}: OK" in result.stdout
    assert "port = 7000" in result.stdout and "max_line = 4096" in result.stdout
    assert "max_sendq = 1048576" in result.stdout  # defaults filled in
    as_json = subprocess.run(
        [CHATKIT, "check", str(config), "--json"], capture_output=True, text=True, timeout=30
    )
    settings = json.loads(as_json.stdout)
    assert settings["server"]["port"] == 7000
    assert settings["server"]["plugins"][-1] == "stats"
    assert settings["limits"]["max_line"] == 4096
    # What it prints is TOML a config file could hold (its first line a comment).
    assert tomllib.loads(result.stdout)["limits"]["max_line"] == 4096
    # A TLS port without a certificate is warned of (the certificate may come from flags).
    config.write_text("[tls]\nport = 9443\n[faces.web]\ntls_port = 8443\n")
    result = subprocess.run(
        [CHATKIT, "check", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "Warning: [tls] port = 9443 is unused: TLS needs a certificate" in result.stderr
    assert "Warning: [faces.web] tls_port = 8443 is unused" in result.stderr
    # A database's path as the server opens it: relative to the config file, from anywhere.
    config.write_text('[plugins.history]\ndb = "data/h.sqlite3"\n')
    result = subprocess.run(
        [CHATKIT, "check", config.name], capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert tomllib.loads(result.stdout)["plugins"]["history"]["db"] == str(
        tmp_path / "data/h.sqlite3"
    )
    # serve's --db wins over the file's, as a unit's ExecStart gives it: check takes it too.
    result = subprocess.run(
        [CHATKIT, "check", config.name, "--db", "other.sqlite3"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert tomllib.loads(result.stdout)["plugins"]["history"]["db"] == str(
        tmp_path / "other.sqlite3"
    )


def test_check_hides_secrets_and_shows_tls(tmp_path: Path) -> None:
    """check's output goes to deploy logs: passwords, tokens and a URL's password are masked."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued = trustme.CA().issue_cert("chat.example.com")
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    (tmp_path / "mine.py").write_text(  # (it checks nothing)
        "from chatkit import hookimpl\n"
        "class Mine:\n    @hookimpl\n    def chatkit_on_login(self):\n        pass\n"
    )
    config = tmp_path / "chatkit.toml"
    config.write_text(
        '[server]\nplugins = ["cluster", "webhooks", "mine:Mine", "moderation"]\n'
        '[faces.irc]\nport = 6667\noperators = { alice = "op-pass" }\n'
        '[plugins.moderation]\nserver_operators = ["root"]\noperators = { "#ops" = ["ann"] }\n'
        '[plugins.cluster]\nurl = "redis://:redis-pass@127.0.0.1:6379/0"\n'
        '[plugins.mine]\nredis = "redis://h/0?db=1&password=pass"\n'
        "starts = 1979-05-27T07:32:00Z\n"
        '[plugins.webhooks.incoming]\ntokens = { ci = "token-pass" }\n'
        '[[plugins.webhooks.outgoing]]\nurl = "https://hooks.example.com/services/pass"\n'
        '[[plugins.webhooks.outgoing]]\nurl = "https://ci.example.com/hook?key=pass"\n'
        '[[plugins.webhooks.outgoing]]\nurl = "https://pass@bare.example.com/"\n'
        '[tls]\ncert = "cert.pem"\nkey = "key.pem"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for args in ([], ["--json"]):
        result = subprocess.run(
            [CHATKIT, "check", str(config), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert "pass" not in result.stdout.replace("password=", ""), result.stdout
        if args:  # JSON: sections by their dotted names
            settings = json.loads(result.stdout)
        else:  # TOML: [faces.irc] is the table irc of the table faces
            parsed = tomllib.loads(result.stdout)
            settings = {f"{a}.{b}": t for a in ("faces", "plugins") for b, t in parsed[a].items()}
            settings["tls"] = parsed["tls"]
        assert settings["faces.irc"]["operators"] == {"alice": "***"}
        # Who the operators are is no secret: an operator checks it before a deploy.
        moderation = settings["plugins.moderation"]
        assert (moderation["server_operators"], moderation["operators"]) == (
            ["root"],
            {"#ops": ["ann"]},
        )
        assert settings["plugins.cluster"]["url"] == "redis://:***@127.0.0.1:6379/0"
        assert settings["plugins.mine"]["redis"] == "redis://h/0?db=1&password=***"
        assert settings["plugins.webhooks"]["incoming"]["tokens"] == {"ci": "***"}
        assert [h["url"] for h in settings["plugins.webhooks"]["outgoing"]] == [
            "https://hooks.example.com/***",
            "https://ci.example.com/***",
            "https://***@bare.example.com/",
        ]
        assert settings["tls"] == {"cert": str(cert), "key": str(key), "port": 9443, "only": False}
        # A TOML date reads back as one (TOML) or as RFC 3339 text (JSON).
        starts = settings["plugins.mine"]["starts"]
        if args:
            assert starts == "1979-05-27T07:32:00+00:00"
        else:
            assert isinstance(starts, datetime.datetime) and starts.year == 1979


def test_check_shows_nothing_after_the_host_of_an_http_url_it_cannot_read_back() -> None:
    """A password with a ']' and a host with an unclosed '[' make a URL that parses once
    and not after its password is hidden: nothing of it past the scheme is shown."""
    shown = _without_password("https://u:SEKRET]@[::1/services/SEKRET2")
    assert "SEKRET" not in shown, shown
    assert _without_password("redis://:pw@h/0?token=t") == "redis://:***@h/0?token=***"


def test_check_exits_2_naming_what_is_wrong(tmp_path: Path) -> None:
    config = tmp_path / "chatkit.toml"
    for text, error in [
        ("[server]\nprot = 1\n", "unknown key server.prot (did you mean port?)"),
        ("[limits]\nmax_line = -1\n", "max_line"),
        ('[server]\nplugins = ["nosuch"]\n', "nosuch"),
        ("[server\n", "not valid TOML"),
        # What serve would refuse, check refuses: values, not only names and types.
        ("[server]\nport = 99999\n", "port must be 0 to 65535"),
        ("[faces.irc]\nport = -1\n", "[faces.irc] port must be 0 to 65535"),
        ('[server]\nlog_level = "verbose"\n', "unknown log level 'verbose'"),
        ('[server]\ndefault_room = "#bad room"\n', "bad default_room '#bad room'"),
        ('[tls]\ncert = "cert.pem"\n', "the key is missing"),
        ('[tls]\ncert = "nosuch.pem"\nkey = "nosuch.pem"\n', "nosuch.pem does not exist"),
        ("[server]\nport = 7000\n[faces.irc]\nport = 7000\n", "line and irc faces are both"),
        # "::" takes IPv4 too: it clashes with any address on that port.
        (
            '[faces.irc]\nport = 7001\nhost = "::"\n[faces.web]\nport = 7001\n',
            "irc and web faces are both set to port 7001 (:: and 127.0.0.1)",
        ),
    ]:
        config.write_text(text)
        result = subprocess.run(
            [CHATKIT, "check", str(config)], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 2, text
        assert error in result.stderr, (text, result.stderr)
    missing = subprocess.run(
        [CHATKIT, "check", str(tmp_path / "none.toml")], capture_output=True, text=True, timeout=30
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    # Certificates as serve loads them: a bad renewal is caught before the restart.
    ca = trustme.CA()
    issued, other = ca.issue_cert("chat.example.com"), ca.issue_cert("other.example.com")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    other.private_key_pem.write_to_path(str(tmp_path / "other.pem"))
    (tmp_path / "garbage.pem").write_text("<html>502 Bad Gateway</html>\n")
    for cert, key, error in [
        ("garbage.pem", "other.pem", "not a PEM certificate chain and key"),
        ("cert.pem", "other.pem", "the key is not the certificate's"),
    ]:
        config.write_text(f'[tls]\ncert = "{cert}"\nkey = "{key}"\n')
        result = subprocess.run(
            [CHATKIT, "check", str(config)], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 2 and error in result.stderr, result.stderr


def test_check_has_the_plugins_check_their_settings_and_opens_nothing(tmp_path: Path) -> None:
    """Each builtin with settings refuses a bad one as serve would (without opening its
    database, port or Redis); a plugin without chatkit_check_config is named as not
    checked, and one that fails is named. (The builtins' refusals are checked in-process,
    as chatkit check calls them: a process each would take a second.)"""
    db = tmp_path / "history.sqlite3"
    config = tmp_path / "chatkit.toml"
    for text, error in [
        ("[plugins.history]\npage = 0\n", "history: page must be a number of at least 1, not 0"),
        ("[plugins.history]\nreplay = 5000\n", "replay (5000) is more than max_page"),
        ("[plugins.history]\nkeep = 1.5\n", "history: keep must be a whole number"),
        ("[plugins.history]\ndb = 5\n", "history: db must be a file name, not 5"),
        ("[plugins.accounts]\ndb = false\n", "accounts: db must be a file name"),
        ("[plugins.flood]\nrate = 0\n", "flood: rate must be a number of at least 0.001, not 0"),
        ("[plugins.flood]\nburts = 5\n", "burts (did you mean burst?)"),
        ("[plugins.log]\nmessages = 1\n", "log: messages must be true or false"),
        ('[plugins.accounts]\nregistration = "nope"\n', "accounts: registration must be"),
        (
            '[server]\nplugins = ["moderation"]\n[plugins.moderation]\noperators = ["alice"]\n',
            "moderation: operators must be",
        ),
        (
            '[server]\nplugins = ["metrics"]\n[plugins.metrics]\nport = 70000\n',
            "metrics: port must be a number from 0 to 65535, not 70000",
        ),
        (
            '[server]\nplugins = ["webhooks"]\n[[plugins.webhooks.outgoing]]\nurl = "ftp://x"\n',
            "webhooks: outgoing[0] url must be an http:// or https:// URL",
        ),
        (
            '[server]\nplugins = ["webhooks"]\n[plugins.webhooks.incoming]\nport = 70000\n',
            "webhooks: port must be a number from 0 to 65535, not 70000",
        ),
        (
            '[server]\nplugins = ["cluster"]\n[plugins.cluster]\nurl = "http://127.0.0.1/"\n',
            "cluster: url 'http://127.0.0.1/' is not a Redis URL",
        ),
        (
            '[server]\nplugins = ["cluster"]\n[plugins.cluster]\n'
            'url = "redis://127.0.0.1/0?socket_timeout=soon"\n',
            "Invalid value for 'socket_timeout'",
        ),
        (
            '[server]\nplugins = ["cluster"]\n[plugins.cluster]\n'
            'url = "redis://:pw@127.0.0.1/0?tiemout=5"\n',
            "cluster: url 'redis://:***@127.0.0.1/0?tiemout=5' has an option Redis's client",
        ),
    ]:
        settings = config_from_dict(tomllib.loads(text))
        pm, infos = build_plugin_manager(settings)
        with pytest.raises(UsageError) as refused:
            check_plugin_settings(settings, pm, infos)
        assert error in str(refused.value), text
    config.write_text("[plugins.flood]\nrate = 0\n")  # and through the command
    result = subprocess.run([CHATKIT, "check", str(config)], capture_output=True, text=True)
    assert result.returncode == 2 and "flood: rate must be" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    # A plugin serve enables by its flag: check takes the flag too, and checks it.
    config.write_text("[plugins.metrics]\nport = 70000\n")
    unused = subprocess.run([CHATKIT, "check", str(config)], capture_output=True, text=True)
    assert unused.returncode == 0 and "enable it with --plugin metrics" in unused.stderr
    result = subprocess.run(
        [CHATKIT, "check", "--plugin", "metrics", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 2 and "metrics: port must be" in result.stderr, result.stderr
    config.write_text("[plugins.flood]\nrate = 0\n")
    result = subprocess.run(
        [CHATKIT, "check", "--no-plugin", "flood", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0 and "[plugins.flood] is unused" in result.stderr, result.stderr
    # Good settings pass without a word about being unchecked; nothing is opened: no
    # database file, and a cluster whose Redis does not run (port 1) is fine to check.
    config.write_text(
        '[server]\nplugins = ["cluster", "metrics", "webhooks"]\n'
        f'[plugins.history]\ndb = "{db}"\npage = 10\n'
        '[plugins.cluster]\nurl = "redis://127.0.0.1:1/0"\n'
        "[plugins.metrics]\nport = 1\n"
        "[plugins.webhooks.incoming]\nport = 1\n"
        "[plugins.flood]\nrate = 2\n"
    )
    result = subprocess.run(
        [CHATKIT, "check", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "checked by its plugin only when the server starts" not in result.stdout
    assert not db.exists()
    # A plugin of one's own: without the hook it is said to be unchecked; with it, its
    # refusal is the error, and anything else it raises is reported with its name.
    (tmp_path / "mine.py").write_text(
        "from chatkit import UsageError, hookimpl\n"
        "class Quiet:\n"
        "    @hookimpl\n"
        "    def chatkit_on_login(self):\n"
        "        pass\n"
        "class Strict:\n"
        "    @hookimpl\n"
        "    def chatkit_check_config(self, config):\n"
        '        if config.plugin_settings("mine").get("size", 1) < 1:\n'
        '            raise UsageError("mine: size must be at least 1")\n'
        "class Broken:\n"
        "    @hookimpl\n"
        "    def chatkit_check_config(self):\n"
        '        raise KeyError("size")\n'
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for plugin, code, output in [
        ("Quiet", 0, "# [plugins.mine]: checked by its plugin only when the server starts"),
        ("Strict", 2, "mine: size must be at least 1"),
        ("Broken", 2, "plugin 'mine:Broken' failed in chatkit_check_config: KeyError: 'size'"),
    ]:
        config.write_text(f'[server]\nplugins = ["mine:{plugin}"]\n[plugins.mine]\nsize = 0\n')
        result = subprocess.run(
            [CHATKIT, "check", str(config)], capture_output=True, text=True, timeout=30, env=env
        )
        assert result.returncode == code, (plugin, result.stderr)
        assert output in (result.stdout if code == 0 else result.stderr), (plugin, result)
    # A builtin that has no settings: its table is unused, as serve warns too.
    config.write_text('[server]\nplugins = ["stats"]\n[plugins.stats]\nevery = 5\n')
    result = subprocess.run(
        [CHATKIT, "check", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "[plugins.stats] is unused: the stats plugin has no settings" in result.stderr
    assert "checked by its plugin only" not in result.stdout
    # A table named for a module path: its plugin reads its last module's table.
    config.write_text('[server]\nplugins = ["mine:Quiet"]\n[plugins."mine:Quiet"]\nsize = 1\n')
    result = subprocess.run(
        [CHATKIT, "check", str(config)], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 0, result.stderr
    assert '[plugins."mine:Quiet"] is unused: the plugin mine:Quiet reads [plugins.mine]' in (
        result.stderr
    )


def test_serve_writes_and_removes_its_pid_file(serve: type[ServeProcess], tmp_path: Path) -> None:
    pid_file = tmp_path / "run" / "chatkit.pid"
    pid_file.parent.mkdir()
    server = serve("--pid-file", str(pid_file))
    wait_until(pid_file.exists, 10, "the pid file")  # written right after the banner
    assert pid_file.read_text() == f"{server.proc.pid}\n"
    code, _out, _err = server.stop(signal.SIGTERM)
    assert code == 0
    assert not pid_file.exists()


@pytest.mark.parametrize(
    "args", [["ping", "--timeout", "-1"], ["ping", "--timeout", "inf"], ["join", "--wait", "inf"]]
)
def test_ping_and_join_refuse_a_wait_out_of_range(args: list[str]) -> None:
    """Not positive, or past what a wait can be (inf overflowed it: a traceback)."""
    result = subprocess.run([CHATKIT, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and args[1] in result.stderr
    assert "Traceback" not in result.stderr


def test_ping_a_listener_that_never_answers_is_no_answer_not_nothing_there() -> None:
    """Exit 5, not 3 ("nothing listens"): something took the connection and said nothing,
    with TLS (the handshake) as without (the pong)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # (the kernel accepts for it)
        port = str(silent.getsockname()[1])
        for flags in ([], ["--tls", "--insecure"]):
            result = subprocess.run(
                [CHATKIT, "ping", *flags, "--port", port, "--timeout", "0.5"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert result.returncode == 5, (flags, result.stderr)
            assert f"no answer from 127.0.0.1:{port}" in result.stderr, result.stderr


def test_ping_an_irc_port_says_it_is_not_the_line_protocols(serve: type[ServeProcess]) -> None:
    """A ping sent to the IRC face's port (its answer: a 421 line) says that the port
    speaks something else, not only that no pong came."""
    server = serve("--irc-port", "0")
    line, out = "", server.proc.stdout
    assert out is not None
    while "IRC:" not in line:
        line = out.readline()
        assert line, "serve printed no IRC address"
    irc = re.search(r"irc://[^:]+:(\d+)", line)
    assert irc is not None, line
    result = subprocess.run(
        [CHATKIT, "ping", "--port", irc.group(1), "--timeout", "0.5"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 5, result.stderr
    assert "not chatkit's JSON frames (an IRC or web port?" in result.stderr, result.stderr


def test_the_cli_imports_redis_prompt_toolkit_and_websockets_only_when_used() -> None:
    """`chatkit ping` (a monitor's, every few seconds), `--version` and a script's
    `join` start without importing what only the cluster, the terminal client and the
    web face need (they doubled the start: 1.2 s for a ping, against 0.6)."""
    code = (
        "import sys, chatkit.cli\n"
        "print(sorted(m for m in ('redis', 'prompt_toolkit', 'websockets') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("store", ["h.sqlite3", "h.accounts.sqlite3", "h.moderation.sqlite3"])
def test_a_store_file_the_server_may_not_write_stops_the_start(tmp_path: Path, store: str) -> None:
    """A history, accounts or moderation file the server's user may only read (SQLite
    opens it read-only without a word) stops the start, exit 2, naming it; it started,
    and failed at every message, ban or registration. (As root, which writes any file,
    without the capabilities that let it.)"""
    first = subprocess.Popen(
        [CHATKIT, "serve", "--port", "0", "--db", "h.sqlite3", "--plugin", "moderation"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert first.stdout is not None
    assert "listening on" in first.stdout.readline()
    first.terminate()
    assert first.wait(30) == 0
    (tmp_path / store).chmod(0o444)
    unprivileged = (
        ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    )
    result = subprocess.run(
        [*unprivileged, CHATKIT, "serve", "--port", "0", "--db", "h.sqlite3", "--plugin",
         "moderation"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert str(tmp_path / store) in result.stderr and "written" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_history_directory_the_server_may_not_enter_is_said_so(tmp_path: Path) -> None:
    """A database in a directory the server's user may not enter: exit 2 saying so (it
    read as a plugin's crash: "failed in chatkit_configure: PermissionError")."""
    (tmp_path / "priv").mkdir(mode=0o000)
    unprivileged = (
        ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    )
    try:
        result = subprocess.run(
            [*unprivileged, CHATKIT, "serve", "--port", "0", "--db", "priv/h.sqlite3"],
            cwd=tmp_path, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        (tmp_path / "priv").chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert "Permission denied; let the server's user reach it" in result.stderr
    assert "failed in chatkit_configure" not in result.stderr


def test_faces_on_one_port_clash_only_where_their_addresses_meet() -> None:
    """Two hosts on one port clash when they are the same, or a wildcard covers the other."""
    assert _overlap("127.0.0.1", "127.0.0.1")
    assert _overlap("0.0.0.0", "127.0.0.1") and _overlap("127.0.0.1", "")
    assert _overlap("::", "10.0.0.1") and _overlap("::1", "::")
    assert not _overlap("127.0.0.1", "10.0.0.1")
    assert not _overlap("0.0.0.0", "::1")  # IPv4's wildcard leaves IPv6 alone


def test_a_tls_client_goes_to_the_tls_port_unless_told() -> None:
    """chatkit join and ping with --tls go to 9443 (the server's TLS port by default),
    without it to 9090; a --port given wins."""
    assert (_client_port(None, False), _client_port(None, True)) == (9090, 9443)
    assert _client_port(1234, True) == 1234
