"""Reading settings from TOML."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ServeProcess

from chatkit import Config, Limits, UsageError, load_config, number_setting


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chatkit.toml"
    path.write_text(text)
    return path


def test_a_full_config_file(tmp_path: Path) -> None:
    """Every section is read: server, limits and per-plugin tables."""
    config = load_config(
        write(
            tmp_path,
            """
            [server]
            host = "0.0.0.0"
            port = 7000
            plugins = ["profanity"]
            disable = ["log"]
            default_room = "#lobby"
            log_level = "debug"

            [limits]
            max_line = 1024
            idle_timeout = 10
            limit_loopback = true

            [plugins.profanity]
            action = "drop"
            """.replace("\n            ", "\n"),
        )
    )
    assert (config.host, config.port, config.default_room) == ("0.0.0.0", 7000, "#lobby")
    assert config.plugins == ["profanity"] and config.disable == ["log"]
    assert config.limits.max_line == 1024
    assert config.limits.idle_timeout == 10.0
    assert config.limits.limit_loopback is True
    assert config.limits.max_sendq == Limits().max_sendq
    assert config.plugin_settings("profanity") == {"action": "drop"}
    assert config.plugin_settings("other") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[serverr]\n", "unknown section(s) serverr"),
        ("[server]\nprot = 1\n", "unknown key server.prot"),
        ('[server]\nport = "9090"\n', "[server] port must be an integer, not '9090'"),
        ('[server]\nplugins = "x"\n', "[server] plugins must be a list, not 'x'"),
        ("[limits]\nmax_line = -1\n", "limit max_line must be positive"),
        ("[limits]\nmax_line = true\n", "[limits] max_line must be an integer, not True"),
        (
            '[limits]\nlimit_loopback = "yes"\n',
            "[limits] limit_loopback must be true or false, not 'yes'",
        ),
        ("[plugins]\nprofanity = 3\n", "[plugins.profanity] must be a table, not 3"),
        ("[server\n", "is not valid TOML"),
        ('[limits]\nmax_nick = "abc"\n', "[limits] max_nick must be an integer, not 'abc'"),
        ('[limits]\nidle_timeout = "abc"\n', "[limits] idle_timeout must be a number, not 'abc'"),
        ("[server]\nhost = 1\n", "[server] host must be a string, not 1"),
        ('[server]\nbidi = "strip"\n', "[server] bidi must be one of replace, refuse, allow"),
        (
            "[faces.gopher]\nport = 1\n",
            "unknown face [faces.gopher]; expected [faces.irc], [faces.web]",
        ),
        ("[faces.web]\norigins = [1]\n", "[faces.web] origins items must be a string"),
        (
            '[faces.web]\norigins = ["chat.example.org"]\n',
            "[faces.web] origins: 'chat.example.org' is not an origin",
        ),
        (
            '[faces.web]\nallow_no_origin = "yes"\n',
            "[faces.web] allow_no_origin must be true or false",
        ),
        ("[faces.irc]\nprot = 1\n", "unknown key faces.irc.prot"),
        ('[faces.irc]\nport = "6667"\n', "[faces.irc] port must be an integer"),
        ('[faces.irc]\nnetwork = "my net"\n', "[faces.irc] network must be one word"),
        ("[faces.irc]\nmax_who = 0\n", "[faces.irc] max_who must be at least 1, not 0"),
        ("[faces.irc]\noper_delay = -1\n", "[faces.irc] oper_delay must be at least 0, not -1"),
        (
            "[faces.irc]\noper_free_failures = -1\n",
            "[faces.irc] oper_free_failures must be at least 0, not -1",
        ),
        ("[faces.irc]\noper_max_delay = -2\n", "[faces.irc] oper_max_delay must be at least 0"),
        ("[faces.irc]\noper_free_failures = 1.5\n", "oper_free_failures must be an integer"),
        ("[faces.irc]\noperators = 1\n", "[faces.irc] operators must be a table"),
        ("[faces.irc.operators]\nroot = 1\n", "[faces.irc.operators] root must be a string"),
        (
            '[faces.irc.operators]\nroot = "sha256:nothex"\n',
            "root: sha256: is followed by the 64 hex digits of the password's SHA-256",
        ),
    ],
)
def test_bad_config_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    """Each mistake in a config file is a UsageError naming the key and the fix."""
    with pytest.raises(UsageError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_defaults() -> None:
    """The defaults are the documented ones."""
    config = Config()
    assert (config.host, config.port, config.default_room) == ("127.0.0.1", 9090, "#general")
    limits = config.limits
    assert (limits.max_line, limits.max_sendq) == (8192, 1024 * 1024)
    assert (limits.login_timeout, limits.idle_timeout, limits.ping_timeout) == (30, 300, 60)
    assert limits.idle_park == 1
    assert (limits.max_pending, limits.first_byte_timeout) == (1000, 15)
    assert (limits.connect_rate, limits.connect_burst) == (10, 20)


def test_the_tls_table(tmp_path: Path) -> None:
    """[tls] gives the certificate and key (relative to the file), the TLS port and
    TLS only; [faces.irc] tls_port the IRC one; an unknown key is refused."""
    path = write(tmp_path, '[tls]\ncert = "c.pem"\nkey = "/k.pem"\nport = 9999\nonly = true\n'
                 "[faces.irc]\nport = 6667\ntls_port = 6697\n")  # fmt: skip
    config = load_config(path)
    assert (config.tls_cert, config.tls_key) == (str(tmp_path / "c.pem"), "/k.pem")
    assert config.tls_port == 9999 and config.tls_only is True
    assert load_config(write(tmp_path, '[tls]\ncert = "c.pem"\n')).tls_only is False
    assert config.faces["irc"]["tls_port"] == 6697
    with pytest.raises(UsageError, match=r"unknown key tls\.ca"):
        load_config(write(tmp_path, '[tls]\nca = "x"\n'))


def test_the_irc_face_table(tmp_path: Path) -> None:
    """[faces.irc] is read as the IRC listener's settings."""
    config = load_config(
        write(
            tmp_path,
            '[faces.irc]\nport = 6697\nhost = "::1"\nserver_name = "chat.example.org"\n'
            'network = "Example"\n',
        )
    )
    assert config.faces == {
        "irc": {
            "port": 6697,
            "host": "::1",
            "server_name": "chat.example.org",
            "network": "Example",
        }
    }
    assert Config().faces == {}


def test_the_web_face_table(tmp_path: Path) -> None:
    """[faces.web] is read as the web listener's settings."""
    config = load_config(
        write(
            tmp_path,
            '[faces.web]\nport = 8080\norigins = ["https://chat.example.org"]\n'
            "allow_no_origin = true\n",
        )
    )
    assert config.faces == {
        "web": {"port": 8080, "origins": ["https://chat.example.org"], "allow_no_origin": True}
    }


def test_check_gives_the_default_room_its_hash_and_refuses_a_bad_one() -> None:
    config = Config(default_room="lobby")
    config.check()
    assert config.default_room == "#lobby"  # as /join lobby joins #lobby
    for bad in ("#bad room", "#", "#" + "x" * 60):
        with pytest.raises(UsageError, match="bad default_room"):
            Config(default_room=bad).check()


def test_check_refuses_ports_out_of_range_and_half_a_tls_pair() -> None:
    with pytest.raises(UsageError, match="port must be 0 to 65535"):
        Config(port=65536).check()
    with pytest.raises(UsageError, match=r"\[faces.web\] tls_port must be 0 to 65535"):
        Config(faces={"web": {"tls_port": -1}}).check()
    with pytest.raises(UsageError, match="the certificate is missing"):
        Config(tls_key="key.pem").check()
    Config(tls_cert="gone.pem", tls_key="gone.pem").check(tls_files=False)  # reload's check
    with pytest.raises(UsageError, match=r"gone\.pem does not exist"):
        Config(tls_cert="gone.pem", tls_key="gone.pem").check()


def test_a_config_file_that_is_not_utf8_names_the_problem(tmp_path: Path) -> None:
    """A file saved in Latin-1 is a UsageError (a reload keeps the old config), not a
    traceback."""
    path = tmp_path / "chatkit.toml"
    path.write_bytes('[server]\ndefault_room = "#caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(UsageError, match=r"is not UTF-8.*0xe9.*save it as UTF-8"):
        load_config(path)


def test_plugin_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    """A plugin's file setting is found from any working directory: relative to the
    config file; files beside the history database follow it there."""
    source = tmp_path / "etc" / "chatkit.toml"
    config = Config(source=source, plugin_config={"history": {"db": "data/h.sqlite3"}})
    assert config.plugin_path("history") == tmp_path / "etc" / "data" / "h.sqlite3"
    assert config.plugin_path("moderation", beside="moderation") == (
        tmp_path / "etc" / "data" / "h.moderation.sqlite3"
    )
    config.plugin_config["accounts"] = {"db": "/abs/a.db"}
    assert config.plugin_path("accounts", beside="accounts") == "/abs/a.db"
    assert Config().plugin_path("moderation", beside="moderation") == ":memory:"
    assert Config(plugin_config={"x": {"db": ":memory:"}}).plugin_path("x") == ":memory:"
    with pytest.raises(UsageError, match="x: db must be a file name, not 3"):
        Config(plugin_config={"x": {"db": 3}}).plugin_path("x")


def test_serve_from_another_directory_finds_every_database_beside_the_config(
    serve: type[ServeProcess], tmp_path: Path
) -> None:
    """History, accounts and moderation with `db = "data/..."` in [plugins.history],
    served from elsewhere: all three files in the config's data/, none in the cwd, and
    created readable by their owner alone."""
    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    (etc / "data").mkdir(parents=True)
    elsewhere.mkdir()
    config = etc / "chatkit.toml"
    config.write_text('[plugins.history]\ndb = "data/history.sqlite3"\n')
    server = serve("--config", str(config), "--plugin", "moderation", cwd=elsewhere)
    code, _out, err = server.stop()
    assert code == 0, err
    names = {"history.sqlite3", "history.accounts.sqlite3", "history.moderation.sqlite3"}
    assert names <= {p.name for p in (etc / "data").iterdir()}
    assert not any(elsewhere.iterdir())
    # Private messages and password hashes: files its owner alone reads.
    for path in (etc / "data").iterdir():
        if path.suffix == ".sqlite3" or path.name.endswith(("-wal", "-shm")):
            assert path.stat().st_mode & 0o777 == 0o600, path


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_limit_or_plugin_number_that_is_not_finite_is_refused(tmp_path: Path, value: str) -> None:
    """TOML has nan and inf: a timeout of nan never fires, one of inf overflows a wait."""
    with pytest.raises(UsageError, match="limit login_timeout must be positive"):
        load_config(write(tmp_path, f"[limits]\nlogin_timeout = {value}\n"))
    with pytest.raises(UsageError, match="x: n must be a number of at least 0"):
        number_setting("x", {"n": float(value)}, "n", 1, 0)
    with pytest.raises(UsageError, match="x: n must be a number from 0 to 65535, not 65536"):
        number_setting("x", {"n": 65536}, "n", 1, 0, 65535)
