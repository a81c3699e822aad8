"""The documentation's code samples run, and its promises hold."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatkit import Config, Server, UsageError
from chatkit.testing import ChatClient, run_server

DOCS = Path(__file__).parent.parent / "docs"
ROOT = DOCS.parent


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)


def test_every_plugin_guide_sample_is_tested() -> None:
    """The plugin guide has the four samples the tests below run."""
    assert len(python_blocks("plugins.md")) == 4


def test_guide_first_plugin_and_its_tests(tmp_path: Path) -> None:
    """shout.py and test_shout.py from the guide pass as written, run by pytest."""
    shout, _counter, _configurable, tests = python_blocks("plugins.md")
    (tmp_path / "shout.py").write_text(shout)
    (tmp_path / "test_shout.py").write_text(tests)
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["chatkit.testing"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_guide_stateful_plugin_counts() -> None:
    """The Counter sample counts messages per nick."""
    namespace: dict[str, Any] = {}
    exec(python_blocks("plugins.md")[1], namespace)
    counter = namespace["Counter"]()
    with run_server(plugins=[counter]) as server:
        alice = ChatClient(server.address)
        alice.login("alice")
        alice.say("one")
        alice.say("two")
        alice.expect("message", text="two")
        alice.sync()
        alice.close()
    assert counter.counts == {"alice": 2}


def test_guide_settings_sample_refuses_a_bad_value() -> None:
    """The Configurable sample reads its table and refuses a bad action."""
    namespace: dict[str, Any] = {}
    exec(python_blocks("plugins.md")[2], namespace)
    good = namespace["Configurable"]()
    with run_server(
        plugins=[good], config=Config(plugin_config={"configurable": {"action": "drop"}})
    ):
        assert good.action == "drop"
    bad = Config(port=0, plugin_config={"configurable": {"action": "explode"}})
    with pytest.raises(UsageError, match="action must be one of"):
        Server(plugins=[namespace["Configurable"]()], config=bad).start()


def test_docs_link_to_pages_that_exist() -> None:
    """Relative links in README and docs point at files that exist."""
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
