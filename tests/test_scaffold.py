"""chatkit plugin new: the template makes a package that installs and passes its test."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from chatkit import UsageError, __version__
from chatkit.plugins import DISTRIBUTION
from chatkit.scaffold import create_plugin, installed_checkout

ROOT = Path(__file__).parent.parent
CHATKIT = str(Path(sys.executable).parent / "chatkit")


def test_a_new_plugin_passes_its_own_tests_outside_the_checkout(tmp_path: Path) -> None:
    """Run outside the repository, `chatkit plugin new` prints a next step that works as printed."""
    result = subprocess.run(
        [CHATKIT, "plugin", "new", "welcome_bot"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "next: cd chatkit-welcome-bot && uv run pytest" in result.stdout
    assert "then: uv run chatkit serve --plugin welcome_bot" in result.stdout
    package = tmp_path / "chatkit-welcome-bot"
    pyproject = tomllib.loads((package / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["chatkit.plugins"] == {
        "welcome_bot": "chatkit_welcome_bot"
    }
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` names itself in $UV
    assert uv, "uv is needed to run the generated project"
    # As a user's shell would be: not inside this checkout's environment.
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
    tests = subprocess.run(
        [uv, "run", "--python", sys.executable, "pytest", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=package,
        env=env,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "1 passed" in tests.stdout
    assert "warning" not in tests.stdout  # its own pytest settings, not a parent's
    listed = subprocess.run(
        [uv, "run", "--python", sys.executable, "chatkit", "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=package,
        env=env,
    )
    assert '"name": "welcome_bot"' in listed.stdout, listed.stderr


def test_a_checkout_install_gives_a_path_source(tmp_path: Path) -> None:
    """Installed from this checkout, chatkit is found there, and the package depends on it by path."""
    assert installed_checkout() == ROOT.absolute()
    root = create_plugin("greeter", tmp_path, ROOT)
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["dependencies"] == [f"{DISTRIBUTION}>={__version__}"]
    assert pyproject["tool"]["uv"]["sources"] == {
        DISTRIBUTION: {"path": str(ROOT.absolute()), "editable": True}
    }


def test_without_a_checkout_the_package_depends_on_pypi(tmp_path: Path) -> None:
    """Without a checkout, the package depends on chatkit's release on PyPI, with no uv source."""
    root = create_plugin("greeter", tmp_path, None)
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["dependencies"] == [f"{DISTRIBUTION}>={__version__}"]
    assert "uv" not in pyproject.get("tool", {})


def test_a_chatkit_path_that_is_not_a_checkout_is_refused(tmp_path: Path) -> None:
    """--chatkit-path must be chatkit's checkout; the error names the path and the fix."""
    result = subprocess.run(
        [CHATKIT, "plugin", "new", "greeter", "--chatkit-path", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert f"--chatkit-path {tmp_path} is not a chatkit checkout" in result.stderr
    assert "give the directory of chatkit's pyproject.toml" in result.stderr
    assert not (tmp_path / "chatkit-greeter").exists()


@pytest.mark.parametrize("name", ["chatkit_foo", "chatkit-foo", "foo"])
def test_a_chatkit_prefix_is_not_doubled(tmp_path: Path, name: str) -> None:
    """`chatkit plugin new chatkit_foo` makes chatkit-foo with module chatkit_foo, not chatkit-chatkit-foo."""
    root = create_plugin(name, tmp_path, None)
    assert root.name == "chatkit-foo"
    assert (root / "chatkit_foo" / "__init__.py").is_file()
    assert 'foo = "chatkit_foo"' in (root / "pyproject.toml").read_text()


def test_the_conftest_offers_every_fixture_of_the_guide(tmp_path: Path) -> None:
    """The generated conftest imports each fixture the plugin guide's fixture table lists."""
    guide = (ROOT / "docs" / "plugins.md").read_text()
    table = guide.split("| fixture | gives |", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)", table, re.M))
    assert {"chat_server", "chat_client", "text_client", "hook_recorder"} <= listed
    root = create_plugin("greeter", tmp_path, None)
    conftest = ast.parse((root / "tests" / "conftest.py").read_text())
    imported = {
        alias.name
        for node in ast.walk(conftest)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert listed <= imported


def test_bad_names_and_existing_directories_are_refused(tmp_path: Path) -> None:
    """The name must be a valid module name; an existing package is not overwritten."""
    with pytest.raises(UsageError, match="bad plugin name"):
        create_plugin("Bad-Name", tmp_path)
    with pytest.raises(UsageError, match="chatkit-server is chatkit itself"):
        create_plugin("server", tmp_path)
    for builtin in ("history", "chatkit-rooms", "log"):  # its test would load the builtin
        with pytest.raises(UsageError, match="name of a builtin plugin"):
            create_plugin(builtin, tmp_path)
    create_plugin("ok", tmp_path)
    with pytest.raises(UsageError, match="already exists"):
        create_plugin("ok", tmp_path)


def test_a_directory_that_cannot_hold_the_package_is_a_clear_error(tmp_path: Path) -> None:
    """A --dir that cannot be written in is a UsageError naming it, not a traceback."""
    blocked = tmp_path / "file"
    blocked.write_text("a file, not a directory")
    with pytest.raises(UsageError, match="cannot write"):
        create_plugin("greeter", blocked, None)


def test_a_write_failing_halfway_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that fills up after the first file: no half package is left (a second try
    would say it already exists)."""
    written: list[Path] = []
    real_write = Path.write_text

    def write_text(self: Path, text: str, *args: object, **kwargs: object) -> int:
        if written:
            raise OSError(28, "No space left on device")
        written.append(self)
        return real_write(self, text)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(UsageError, match="No space left on device"):
        create_plugin("greeter", tmp_path / "new" / "dir", None)  # (its directories too)
    assert written and not (tmp_path / "new").exists()
    monkeypatch.undo()
    assert create_plugin("greeter", tmp_path, None).is_dir()
