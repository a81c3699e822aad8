"""The documentation's code samples run, and its promises hold."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import subprocess
import sys
import threading
import tomllib
import types
from pathlib import Path

import apidoc
import pytest

import chatkit
from chatkit import Config, Limits, Server, UsageError
from chatkit.config import config_from_dict
from chatkit.plugins import DISTRIBUTION, check_plugin_sections
from chatkit.testing import ChatClient, make_config, run_server, wait_until

DOCS = Path(__file__).parent.parent / "docs"
ROOT = DOCS.parent


def samples(page: str, language: str = "python") -> dict[str, str]:
    """The code blocks of ``page`` in ``language``, by the file name in their first line."""
    blocks = re.findall(rf"```{language}\n(.*?)```", (DOCS / page).read_text(), re.S)
    named = {}
    for block in blocks:
        first = block.splitlines()[0]
        assert first.startswith("# "), (
            f"a {language} sample in {page} does not name its file: {first}"
        )
        named[first[2:].strip()] = block
    return named


def load(source: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, name, "exec"), module.__dict__)
    return module


def test_every_plugin_guide_sample_is_run() -> None:
    """Each Python and TOML sample of the plugin guide is one the tests below use."""
    assert set(samples("plugins.md")) == {
        "shout.py",
        "reserved.py",
        "password.py",
        "counter.py",
        "configurable.py",
        "chatkit_motd/__init__.py",
        "conftest.py",
        "test_shout.py",
    }
    assert set(samples("plugins.md", "toml")) == {"chatkit.toml", "pyproject.toml"}


def test_guide_first_plugin_and_its_tests(tmp_path: Path) -> None:
    """shout.py, conftest.py and test_shout.py from the guide pass as written, under pytest."""
    for name in ("shout.py", "conftest.py", "test_shout.py"):
        (tmp_path / name).write_text(samples("plugins.md")[name])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_guide_veto_sample() -> None:
    """reserved.py refuses reserved nicks at login and on /nick."""
    reserved = load(samples("plugins.md")["reserved.py"], "reserved")
    with run_server(plugins=[reserved]) as server:
        client = ChatClient(server.address)
        client.send(type="hello", nick="Admin")
        error = client.expect("error")
        assert error["code"] == "nick_reserved" and "reserved" in error["text"]
        client.login("alice")
        client.say("/nick root")
        assert client.expect("error")["code"] == "nick_reserved"
        client.close()


def test_guide_login_fields_sample() -> None:
    """password.py: the hello's extra fields reach chatkit_allow_login."""
    password = load(samples("plugins.md")["password.py"], "password")
    with run_server(plugins=[password]) as server:
        client = ChatClient(server.address)
        client.send(type="hello", nick="ann", password="nope")
        assert client.expect("error")["code"] == "bad_password"
        client.send(type="hello", nick="ann")
        assert client.expect("error")["code"] == "bad_password"
        client.send(type="hello", nick="ann", password="sesame")
        assert client.expect("welcome")["nick"] == "ann"
        client.close()


def test_guide_stateful_plugin_counts() -> None:
    """The Counter sample counts messages per nick."""
    counter = load(samples("plugins.md")["counter.py"], "counter").Counter()
    with run_server(plugins=[counter]) as server:
        alice = ChatClient(server.address)
        alice.login("alice")
        alice.say("one")
        alice.say("two")
        alice.expect("message", text="two")
        alice.sync()
        alice.close()
    assert counter.counts == {"alice": 2}


def test_guide_settings_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Configurable sample, loaded by the guide's chatkit.toml as a server loads it
    (by its module path), reads its table and refuses bad values; by its module's name
    alone it is refused, saying how to name its class."""
    (tmp_path / "configurable.py").write_text(samples("plugins.md")["configurable.py"])
    monkeypatch.syspath_prepend(str(tmp_path))
    toml = tomllib.loads(samples("plugins.md", "toml")["chatkit.toml"])
    config = config_from_dict(toml)
    check_plugin_sections(config, config.plugin_config)  # [plugins.configurable] is its table
    with run_server(config=config) as server:
        plugin = server.pluginmanager.get_plugin("configurable:Configurable")
        assert plugin is not None and plugin.action == "drop"
    with pytest.raises(UsageError, match="enable it as 'configurable:Configurable'"):
        Server(config=Config(port=0, plugins=["configurable"]))
    module = load(samples("plugins.md")["configurable.py"], "configurable")
    for settings, message in [
        ({"action": "explode"}, "action must be one of"),
        ({"acton": "x"}, "unknown setting"),
    ]:
        bad = Config(port=0, plugin_config={"configurable": settings})
        with pytest.raises(UsageError, match=message):
            Server(plugins=[module.Configurable()], config=bad).start()


def test_guide_motd_is_the_real_plugin() -> None:
    """The line-by-line walk-through shows plugins/motd exactly as it is (its tests run it)."""
    shown = samples("plugins.md")["chatkit_motd/__init__.py"]
    real = (ROOT / "plugins/motd/chatkit_motd/__init__.py").read_text()
    assert shown.split("\n", 1)[1] == real


def test_guide_packaging_sample_declares_an_entry_point() -> None:
    """The pyproject sample names the entry-point group chatkit looks in."""
    data = tomllib.loads(samples("plugins.md", "toml")["pyproject.toml"])
    assert data["project"]["entry-points"]["chatkit.plugins"] == {"shout": "chatkit_shout"}


def test_client_bot_sample_answers_live_messages_of_others_only() -> None:
    """The bot of docs/client.md answers live messages, not replayed ones, nor its own."""
    assert set(samples("client.md")) == {"bot.py", "bot_forever.py"}
    source = samples("client.md")["bot.py"]
    assert '"127.0.0.1", 9090' in source
    with run_server() as server:
        alice = ChatClient(server.address)
        alice.login("alice")
        alice.say("!echo from before")  # replayed to the bot when it joins
        alice.expect("message", text="!echo from before")
        code = source.replace("9090", str(server.address[1]))
        bot = threading.Thread(target=load, args=(code, "bot"), daemon=True)
        bot.start()
        assert alice.expect("message", nick="echo")["text"].startswith("hello!")
        alice.say("!echo !echo hi")
        assert alice.expect("message", nick="echo")["text"] == "!echo hi"
        alice.say("!echo done")  # had it answered its own "!echo hi", "hi" would come first
        assert alice.expect("message", nick="echo")["text"] == "done"
        alice.close()
    bot.join(10)  # the server closed: the bot's loop ends
    assert not bot.is_alive()


def test_client_reconnecting_bot_sample_outlives_a_restart() -> None:
    """The reconnecting bot of docs/client.md answers, is back once the server is (a new
    one on the same port), and answers there too."""
    source = samples("client.md")["bot_forever.py"]
    assert '"127.0.0.1", 9090' in source and "while True:" in source
    stop = threading.Event()
    with run_server() as server:
        port = server.address[1]
        code = source.replace("9090", str(port)).replace("while True:", "while not STOP.is_set():")
        module = types.ModuleType("bot_forever")
        module.STOP = stop  # type: ignore[attr-defined]
        bot = threading.Thread(
            target=exec, args=(compile(code, "bot_forever", "exec"), module.__dict__), daemon=True
        )
        bot.start()
        alice = ChatClient(server.address)
        alice.login("alice")
        wait_until(lambda: "echo" in (server.hub.who("#general") or []), what="the bot in")
        alice.say("!ping")
        assert alice.expect("message", nick="echo")["text"] == "pong"
        alice.close()
    again = Server(port=port, config=make_config())  # a restart: the same port
    again.start()
    try:
        alice = ChatClient(again.address)
        alice.login("alice")
        wait_until(lambda: "echo" in (again.hub.who("#general") or []), 10, "the bot back")
        alice.say("!ping")
        assert alice.expect("message", nick="echo")["text"] == "pong"
        stop.set()
        alice.close()
    finally:
        again.shutdown()
    bot.join(10)  # the server closed, and it was told to stop: its loop ends
    assert not bot.is_alive()


def test_guide_packaging_sample_depends_on_our_distribution() -> None:
    """The pyproject sample depends on chatkit's PyPI name, the one this checkout installs as."""
    data = tomllib.loads(samples("plugins.md", "toml")["pyproject.toml"])
    assert data["project"]["dependencies"] == [f"{DISTRIBUTION}>=0.1.0"]
    assert importlib.metadata.version(DISTRIBUTION) == chatkit.__version__
    for plugin in ROOT.glob("plugins/*/pyproject.toml"):
        deps = tomllib.loads(plugin.read_text())["project"]["dependencies"]
        assert DISTRIBUTION in deps, f"{plugin} does not depend on {DISTRIBUTION}"


def test_docs_link_to_pages_that_exist() -> None:
    """Relative links in README and docs point at files that exist."""
    pages = [ROOT / "README.md", *DOCS.glob("*.md"), *ROOT.glob("plugins/*/README.md")]
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page} links to missing {target}"


def test_guide_reference_matches_the_code() -> None:
    """The plugin guide's reference section is what tests/apidoc.py makes of the code."""
    assert apidoc.section((DOCS / "plugins.md").read_text()) == apidoc.render(), (
        "docs/plugins.md is out of date: run `uv run python tests/apidoc.py`"
    )


@pytest.mark.parametrize("cls", [entry[0] for entry in apidoc.SURFACE], ids=lambda c: c.__name__)
def test_guide_reference_covers_every_public_member(cls: type) -> None:
    """Each public member of a class plugins use is shown in the guide or listed as internal."""
    _, _, shown, internal = next(entry for entry in apidoc.SURFACE if entry[0] is cls)
    public = apidoc.public_members(cls)
    assert public - set(shown) - internal == set(), "show it in tests/apidoc.py or call it internal"
    assert internal <= public, "tests/apidoc.py lists internal members that no longer exist"


def test_every_limit_is_in_the_operations_table() -> None:
    """docs/operations.md lists every field of Limits, with what a client sees at it."""
    text = (DOCS / "operations.md").read_text()
    table = text[text.index("## Limits") :]
    rows = {
        line.split("|")[1].strip().strip("`")
        for line in table.splitlines()
        if line.startswith("| `")
    }
    missing = {f.name for f in dataclasses.fields(Limits)} - rows
    assert not missing, f"limits missing from docs/operations.md: {sorted(missing)}"


def test_every_config_sample_in_the_docs_is_a_valid_config() -> None:
    """Each TOML sample of a chatkit.toml in docs/ parses and is a config chatkit reads
    (the operations guide once opened [faces.irc] twice, which TOML refuses)."""
    checked = 0
    for page in sorted(DOCS.glob("*.md")):
        for block in re.findall(r"```toml\n(.*?)```", page.read_text(), re.S):
            if "[project]" in block or "[build-system]" in block:
                continue  # a plugin package's pyproject.toml
            try:
                data = tomllib.loads(block)
            except tomllib.TOMLDecodeError as exc:
                raise AssertionError(f"a TOML sample in {page.name} is not valid: {exc}") from None
            config_from_dict(data)
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize("doc", ["hooks.md", "plugins.md"])
def test_every_hook_is_in_the_table_of_hooks_by_kind(doc: str) -> None:
    """docs/hooks.md's and docs/plugins.md's tables of hooks by kind name every hook."""
    from chatkit import hookspecs

    lines = (DOCS / doc).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| kind | hooks |"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    table = " ".join(lines[start:end])
    specs = [name for name in vars(hookspecs) if name.startswith("chatkit_")]
    missing = [
        name
        for name in specs
        if f"`{name}`" not in table
        and not (name.startswith("chatkit_on_") and "chatkit_on_*" in table)
    ]
    assert specs and not missing
