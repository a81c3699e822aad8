"""``chatkit plugin new NAME``: a ready-to-install plugin package to start from."""

from __future__ import annotations

import re
from pathlib import Path

from chatkit.errors import UsageError

__all__ = ["create_plugin"]

_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")

_FILES = {
    "pyproject.toml": """\
[project]
name = "chatkit-{dash}"
version = "0.1.0"
description = "A chatkit plugin."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["chatkit-server>={version}"]

# How chatkit finds the plugin: `chatkit serve --plugin {name}`.
[project.entry-points."chatkit.plugins"]
{name} = "chatkit_{name}"

[dependency-groups]
dev = ["pytest>=8"]

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
""",
    "README.md": """\
# chatkit-{dash}

A [chatkit](https://pypi.org/project/chatkit-server/) plugin.

    pip install chatkit-{dash}
    chatkit serve --plugin {name}

## Development

    uv run pytest

See chatkit's plugin guide (docs/plugins.md) for the hooks you can implement.
""",
    "chatkit_{name}/__init__.py": '''\
"""chatkit-{dash}: say here what the plugin does."""

from chatkit import Session, hookimpl


@hookimpl
def chatkit_on_login(client: Session) -> None:
    """Greet each client once it has logged in (runs on that client's thread)."""
    client.notice(f"{name} says hello, {{client.nick}}")
''',
    "tests/conftest.py": """\
# Real chatkit servers and clients for the tests (see chatkit.testing).
from chatkit.testing import chat_client, chat_server, chat_server_factory  # noqa: F401
""",
    "tests/test_{name}.py": '''\
def test_greets_each_login(chat_server_factory, chat_client) -> None:
    """The plugin, loaded by its entry-point name, greets a client that logs in."""
    server = chat_server_factory(plugins=["{name}"])
    alice = chat_client(server, "alice")
    assert alice.expect("notice")["text"] == "{name} says hello, alice"
''',
}


def create_plugin(name: str, directory: Path) -> Path:
    """Create ``directory/chatkit-NAME`` holding a plugin package; return its path.

    Raises :class:`UsageError` for a bad name or an existing directory.
    """
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"bad plugin name {name!r}: use 1 to 40 lower-case letters, digits and '_', "
            "starting with a letter (e.g. 'welcome_bot')"
        )
    from chatkit import __version__

    dash = name.replace("_", "-")
    root = directory / f"chatkit-{dash}"
    if root.exists():
        raise UsageError(f"{root} already exists; choose another name or directory")
    values = {"name": name, "dash": dash, "version": __version__}
    for template, text in _FILES.items():
        path = root / template.format(**values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(**values))
    return root
