"""Reload without dropping anyone: `chatkit serve -c FILE` re-reads FILE on SIGHUP
(Server.reload), during traffic, with real clients."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pexpect  # type: ignore[import-untyped]
import pytest
from conftest import ServeProcess, fill_queues, not_reading

from chatkit import Config, Server, UsageError, hookimpl
from chatkit.testing import ChatClient, make_config, wait_until

BASE = """\
[server]
plugins = []

[plugins.flood]
burst = 20
"""


def reload_and_wait(server: ServeProcess) -> str:
    """Send SIGHUP; return the log line that says how it went."""
    assert server.proc.stderr is not None
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = server.proc.stderr.readline()
        if "reloaded:" in line or "reload failed" in line:
            return line
        assert line, "the server exited"
    raise AssertionError("no reload line in the log")


def test_sighup_applies_a_changed_config_during_traffic(
    serve: type[ServeProcess], tmp_path: Path
) -> None:
    config = tmp_path / "chatkit.toml"
    base = BASE.replace("burst = 20", "burst = 1000\nrate = 1000")  # the traffic is fast
    config.write_text(base)
    server = serve("-c", str(config))
    alice, bob = ChatClient(server.address), ChatClient(server.address)
    alice.login("alice")
    bob.login("bob")
    alice.say("/stats")
    assert alice.expect("error")["code"] == "unknown_command"
    # Traffic while the reload happens: every line must arrive, nobody is cut.
    sent = 200
    stop = threading.Event()

    def talk() -> None:
        for n in range(sent):
            alice.say(f"m{n}")
            time.sleep(0.002)
        stop.set()

    talker = threading.Thread(target=talk)
    talker.start()
    config.write_text(
        base.replace("plugins = []", 'plugins = ["stats"]\ndefault_room = "#lobby"')
        + "[limits]\nmax_sendq = 2000000\n"
    )
    line = reload_and_wait(server)
    talker.join()
    assert "plugin 'stats' enabled" in line
    assert "default_room: #general -> #lobby" in line
    assert "limit max_sendq: 1048576 -> 2000000" in line
    for n in range(sent):
        assert bob.expect("message")["text"] == f"m{n}"
    alice.say("/stats")  # the old connection has the new plugin's command
    assert alice.expect("reply", command="stats")["data"]["connections"] == 2
    carol = ChatClient(server.address)
    assert carol.login("carol")["rooms"] == ["#lobby"]  # new logins: the new default room
    code, _out, err = server.stop()
    assert code == 0
    assert "alice logged out (server shutdown)" in err  # alice was never cut


def test_a_bad_config_file_on_reload_keeps_the_old_config(
    serve: type[ServeProcess], tmp_path: Path
) -> None:
    config = tmp_path / "chatkit.toml"
    config.write_text(BASE.replace("plugins = []", 'plugins = ["stats"]'))
    server = serve("-c", str(config))
    alice = ChatClient(server.address)
    alice.login("alice")
    for bad, error in [
        ("[server\n", "not valid TOML"),
        ("[limits]\nmax_line = -5\n", "max_line"),
        ('[server]\nplugins = ["nosuch"]\n', "nosuch"),
        ("[plugins.flood]\nrate = -1\n", "flood: rate must be a number"),
    ]:
        config.write_text(bad)
        line = reload_and_wait(server)
        assert "reload failed, the old config stays" in line and error in line, line
        alice.say("/stats")  # still on, the connection still up
        assert alice.expect("reply", command="stats")
    # flood was stopped and restarted for the bad rate: it still limits as before.
    for n in range(25):
        alice.say(f"burst {n}")
    assert alice.expect("error")["code"] == "rate_limited"
    server.stop()


def test_an_edited_plugin_module_is_reimported(
    serve: type[ServeProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "shouter.py"
    source = """
from chatkit import hookimpl

@hookimpl
def chatkit_filter_message(client, message):
    message.text = message.text.upper() + "{mark}"
"""
    module.write_text(source.format(mark=""))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    server = serve("--plugin", "shouter")
    alice = ChatClient(server.address)
    alice.login("alice")
    alice.say("hi")
    assert alice.expect("message")["text"] == "HI"
    module.write_text(source.format(mark="!"))
    later = time.time() + 2  # past the old file's mtime, whatever the clock's grain
    os.utime(module, (later, later))
    line = reload_and_wait(server)
    assert "plugin 'shouter' restarted" in line
    alice.say("hi")
    assert alice.expect("message")["text"] == "HI!"
    server.stop()


def test_enabling_or_disabling_history_needs_a_restart() -> None:
    server = Server(config=Config(port=0))
    server.start()
    try:
        config = Config(port=0, disable=["history"])
        with pytest.raises(
            UsageError,
            match="'history': it stores messages, so enabling or disabling it needs a restart",
        ):
            server.reload(config)
        assert server.pluginmanager.get_plugin("history") is not None
        changed = Config(port=0)
        changed.plugin_config["history"] = {"db": ":memory:", "replay": 5}
        notes = server.reload(changed)
        assert "plugin 'history' changes at the next restart (it stores messages)" in notes
    finally:
        server.shutdown()


def test_a_server_operator_reloads_from_the_chat(serve: type[ServeProcess], tmp_path: Path) -> None:
    """``/reload`` (moderation) does what SIGHUP does and answers with the changes."""
    config = tmp_path / "chatkit.toml"
    base = (
        '[server]\nplugins = ["moderation"]\n\n[plugins.moderation]\nserver_operators = ["root"]\n'
    )
    config.write_text(base)
    server = serve("-c", str(config), "--db", str(tmp_path / "history.sqlite3"))
    root, bob = ChatClient(server.address), ChatClient(server.address)
    root.login("root")
    root.command("/register sesame-seed")
    bob.login("bob")
    config.write_text(base.replace('["moderation"]', '["moderation", "stats"]'))
    bob.say("/reload")
    assert bob.expect("error")["code"] == "not_server_operator"
    bob.say("/stats")
    assert bob.expect("error")["code"] == "unknown_command"  # bob's /reload changed nothing
    root.say("/reload")
    assert "plugin 'stats' enabled" in root.expect("reply", command="reload")["text"]
    bob.say("/stats")
    assert bob.expect("reply", command="stats")
    config.write_text("[server\n")
    root.say("/reload")
    error = root.expect("error")
    assert error["code"] == "reload_failed" and "not valid TOML" in error["text"]
    bob.say("/stats")  # the old config stays, and everyone is still connected
    assert bob.expect("reply", command="stats")
    server.stop()


def test_a_closed_terminal_stops_the_server_and_a_kill_hup_reloads(tmp_path: Path) -> None:
    """Started in a terminal, SIGHUP is a reload while the terminal is there (`kill
    -HUP`), but the terminal closing (the kernel's SIGHUP) stops the server, as it
    does any program: a teacher who closes the window can start it again."""
    chatkit = str(Path(sys.executable).parent / "chatkit")
    child = pexpect.spawn(
        chatkit, ["serve", "--port", "0", "--db", ":memory:"],
        cwd=str(tmp_path), encoding="utf-8", timeout=20,
    )  # fmt: skip
    try:
        child.expect(r"listening on \S+:(\d+)")
        child.expect("Ctrl\\+C here stops it")
        os.kill(child.pid, signal.SIGHUP)
        child.expect("reloaded: nothing changed")
        assert child.isalive()
        os.close(child.child_fd)  # the terminal window closes
        deadline = time.monotonic() + 20
        while child.isalive() and time.monotonic() < deadline:
            time.sleep(0.05)  # (polling the process's end, with a deadline)
        assert not child.isalive()
    finally:
        if child.isalive():
            child.kill(signal.SIGKILL)


class Counting:
    """A program's plugin object: counts its stops."""

    def __init__(self) -> None:
        self.stops = 0

    @hookimpl
    def chatkit_server_stop(self) -> None:
        self.stops += 1


def test_a_programs_plugin_objects_are_kept_by_a_reload() -> None:
    """Plugin objects given to Server() are kept, not stopped, by a reload; they stop
    once, at shutdown."""
    counting = Counting()
    server = Server(plugins=[counting], config=make_config())
    server.start()
    try:
        notes = server.reload(make_config(Config(plugins=["stats"])))
        assert not any("Counting" in note for note in notes), notes
        assert counting.stops == 0
        assert counting in [p for _, p in server.pluginmanager.list_name_plugin()]
    finally:
        server.shutdown()
    assert counting.stops == 1


def test_a_module_paths_settings_change_restarts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin named by module path reads [plugins.LAST_MODULE]: a change there restarts it."""
    (tmp_path / "reloadable.py").write_text(
        "from chatkit import hookimpl\n\n"
        "class Configurable:\n"
        "    action = None\n\n"
        "    @hookimpl\n"
        "    def chatkit_configure(self, config):\n"
        "        self.action = config.plugin_settings('reloadable').get('action')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = make_config(Config(plugins=["reloadable:Configurable"]))
    config.plugin_config["reloadable"] = {"action": "wave"}
    server = Server(config=config)
    server.start()
    try:
        changed = make_config(Config(plugins=["reloadable:Configurable"]))
        changed.plugin_config["reloadable"] = {"action": "shout"}
        notes = server.reload(changed)
        assert "plugin 'reloadable:Configurable' restarted" in notes
        plugin = server.pluginmanager.get_plugin("reloadable:Configurable")
        assert plugin is not None and plugin.action == "shout"
    finally:
        server.shutdown()


def test_a_setting_its_plugin_refuses_leaves_the_running_plugin_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload whose new setting the plugin's chatkit_check_config refuses is refused
    before anything stops: the running instance goes on, never stopped, its state kept."""
    (tmp_path / "checked.py").write_text(
        "from chatkit import UsageError, hookimpl\n\n"
        "class Checked:\n"
        "    stops = 0\n"
        "    seen = 0\n\n"
        "    @hookimpl\n"
        "    def chatkit_check_config(self, config):\n"
        "        if config.plugin_settings('checked').get('greet') not in (None, True, False):\n"
        "            raise UsageError('checked: greet must be true or false')\n\n"
        "    @hookimpl\n"
        "    def chatkit_server_stop(self):\n"
        "        self.stops += 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    server = Server(config=make_config(Config(plugins=["checked:Checked"])))
    server.start()
    try:
        plugin: Any = server.pluginmanager.get_plugin("checked:Checked")
        plugin.seen = 7  # state a restart would lose
        bad = make_config(Config(plugins=["checked:Checked"]))
        bad.plugin_config["checked"] = {"greet": "yes"}
        with pytest.raises(UsageError, match="greet must be true or false"):
            server.reload(bad)
        assert (plugin.stops, plugin.seen) == (0, 7)
        assert server.pluginmanager.get_plugin("checked:Checked") is plugin
    finally:
        server.shutdown()


def test_plugins_a_program_named_are_kept_by_a_reload() -> None:
    """Plugins named to Server() are enabled by every reload, as a program's plugin
    objects are and as chatkit serve's --plugin flags are: a new config need not name them."""
    server = Server(plugins=["stats"], config=make_config())
    server.start()
    try:
        notes = server.reload(make_config(Config(default_room="#lobby")))
        assert not any("stats" in note for note in notes), notes
        assert server.pluginmanager.get_plugin("stats") is not None
    finally:
        server.shutdown()


def test_a_reload_to_the_json_log_logs_what_the_text_log_left_to_the_banner(
    serve: type[ServeProcess], tmp_path: Path
) -> None:
    """The text log leaves out what serve's own output says (``server stopped``); once
    a reload switches it to JSON, for programs, those lines are logged again."""
    config = tmp_path / "chatkit.toml"
    config.write_text(BASE)
    server = serve("-c", str(config))
    config.write_text(BASE.replace("plugins = []", 'plugins = []\nlog_format = "json"'))
    assert "log_format: text -> json" in reload_and_wait(server)
    code, _out, err = server.stop()
    assert code == 0
    stopped = [json.loads(line) for line in err.splitlines() if "server stopped" in line]
    assert stopped and stopped[-1]["message"] == "server stopped", err


@pytest.mark.parametrize("factor", [40, 0.5], ids=["raised", "lowered"])
def test_a_reload_changing_max_sendq_keeps_the_backlog_count(factor: float) -> None:
    """A reload that changes max_sendq while a client that reads nothing is over it:
    once everyone has left, the writer is behind with nothing. (It counted the client's
    queue in under one limit and out under the other: raised, the difference stayed as
    backlog for good and, over max_backlog, paused every reader forever.)"""
    limits = {"max_sendq": 100_000, "slow_timeout": 60.0}
    config = Config(port=0, disable=["flood"])
    config.limits.max_sendq = int(limits["max_sendq"])
    config.limits.slow_timeout = limits["slow_timeout"]
    server = Server(config=config)
    server.start()
    try:
        mute = not_reading(server.address, "mute")
        fill_queues(server.address)
        (conn,) = [c for c in server.connections if c.session.nick == "mute"]
        wait_until(lambda: conn.queued_bytes > limits["max_sendq"], 10, "mute over it")
        changed = Config(port=0, disable=["flood"])
        changed.limits.max_sendq = int(limits["max_sendq"] * factor)
        changed.limits.slow_timeout = limits["slow_timeout"]
        assert any("max_sendq" in note for note in server.reload(changed))
        mute.close()
        wait_until(lambda: not server.connections, 10, "everyone gone")
        wait_until(lambda: server.writer.backlog == 0, 10, "no backlog")
        with ChatClient(server.address) as newcomer:  # (paused forever, before)
            newcomer.login("newcomer")
    finally:
        server.shutdown()


def test_deferred_history_settings_move_no_file(tmp_path: Path) -> None:
    """A reload that changes the history's db (which waits for a restart) keeps the
    running config's history table: the accounts file beside it does not move when
    accounts restarts in the same reload (a registered nick was free to take in an
    empty new file), and the next reload still says the change waits."""

    def config(db: str, min_password: int) -> Config:
        made = Config(port=0)
        made.plugin_config["history"] = {"db": str(tmp_path / db)}
        made.plugin_config["accounts"] = {"min_password": min_password}
        return made

    server = Server(config=config("a.db", 8))
    server.start()
    try:
        with ChatClient(server.address) as carol:
            carol.login("carol")
            carol.command("/register sesame-seed")
        notes = server.reload(config("b.db", 10))
        assert "plugin 'history' changes at the next restart (it stores messages)" in notes
        assert "plugin 'accounts' restarted" in notes
        with ChatClient(server.address) as mallory:
            mallory.send({"type": "hello", "nick": "carol"})
            assert mallory.expect("error")["code"] == "nick_registered"
        notes = server.reload(config("b.db", 10))
        assert notes == ["plugin 'history' changes at the next restart (it stores messages)"]
        assert not (tmp_path / "b.accounts.db").exists()
    finally:
        server.shutdown()


def test_a_client_over_max_sendq_is_not_cut_once_a_reload_raises_it() -> None:
    """A client that does not read, over max_sendq and so on its way to be cut at
    slow_timeout: a reload raising max_sendq above its queue takes it off that way (it
    was cut all the same at slow_timeout, far below the new limit)."""
    config = Config(port=0, disable=["flood"])
    config.limits.max_sendq, config.limits.slow_timeout = 100_000, 30.0
    server = Server(config=config)
    server.start()
    try:
        mute = not_reading(server.address, "mute")
        wait_until(lambda: any(c.session.nick == "mute" for c in server.connections))
        (conn,) = [c for c in server.connections if c.session.nick == "mute"]
        # 8 MB at most: more than the kernel's buffers (4 MB) hold
        fill_queues(server.address, 4000, until=lambda: conn._over_since is not None)
        assert conn in server.writer._over  # (cut at slow_timeout from now)
        changed = Config(port=0, disable=["flood"])
        changed.limits.max_sendq, changed.limits.slow_timeout = 50_000_000, 30.0
        server.reload(changed)
        assert conn._over_since is None and conn not in server.writer._over
        fill_queues(server.address, 1)  # (more for it)
        assert server.stats()["slow_cuts"] == 0 and not conn.finishing
        mute.close()
    finally:
        server.shutdown()


def test_plugins_read_the_limits_a_reload_changed() -> None:
    """The history plugin's nick check and page size, and the accounts plugin's IPv6
    network, follow a reload's limits (they kept the values of the start: a nick longer
    than the old max_nick was no such nick to /history)."""
    from types import SimpleNamespace

    config = Config(port=0)
    config.limits.max_nick = 10
    server = Server(config=config)
    server.start()
    try:
        changed = Config(port=0)
        changed.limits.max_nick, changed.limits.max_sendq = 40, 40_000
        changed.limits.ipv6_prefix = 48
        server.reload(changed)
        history: Any = server.pluginmanager.get_plugin("history")
        assert (history.max_nick, history.page_bytes) == (40, 10_000)
        long = "averyveryverylongnick"
        with ChatClient(server.address) as bob, ChatClient(server.address) as other:
            bob.login("bob")
            other.login(long)
            other.say("/msg bob hi")
            bob.expect("private", text="hi")
            bob.say(f"/history {long}")  # (a nick now: bad_usage, no such nick, before)
            assert bob.expect("error")["code"] == "not_identified"
        accounts: Any = server.pluginmanager.get_plugin("accounts")
        client = SimpleNamespace(address=("2001:db8:1:2:3::1", 1))
        assert accounts._address(client) == "2001:db8:1::/48"
    finally:
        server.shutdown()
