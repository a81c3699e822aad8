"""``chatkit plugin new NAME``: a ready-to-install plugin package to start from.

The package depends on chatkit's distribution, ``chatkit-server``. When chatkit
runs from a source checkout (an editable or workspace install), the package gets
a ``[tool.uv.sources]`` path to that checkout, so ``uv run pytest`` works before
(and without) any release; otherwise it depends on the release on PyPI.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from urllib.parse import unquote, urlparse

from chatkit.errors import UsageError
from chatkit.plugins import BUILTIN_PLUGINS, DISTRIBUTION

__all__ = ["create_plugin", "installed_checkout", "plugin_name"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")

_SOURCES = """
# chatkit from a source checkout rather than PyPI (chatkit plugin new --chatkit-path).
[tool.uv.sources]
{distribution} = {{ path = {path}, editable = true }}
"""

_FILES = {
    "pyproject.toml": """\
[project]
name = "chatkit-{dash}"
version = "0.1.0"
description = "A chatkit plugin."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["{distribution}>={version}"]

# How chatkit finds the plugin: `chatkit serve --plugin {name}`.
[project.entry-points."chatkit.plugins"]
{name} = "chatkit_{name}"

[dependency-groups]
dev = ["pytest>=8"]

[tool.pytest.ini_options]
testpaths = ["tests"]

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
{sources}""",
    "README.md": """\
# chatkit-{dash}

A [chatkit](https://pypi.org/project/chatkit-server/) plugin.

    pip install chatkit-{dash}        # once it is published (until then: Development)
    chatkit serve --plugin {name}

## Development

    uv run pytest                               # its tests
    uv run chatkit serve --plugin {name}        # a server with it (installed editable here)

Into another environment (a server's): `uv pip install -e path/to/chatkit-{dash}`
(or `pip install -e ...`); then `chatkit serve --plugin {name}` there.

See chatkit's plugin guide (docs/plugins.md) for the hooks you can implement.
""",
    "chatkit_{name}/__init__.py": '''\
"""chatkit-{dash}: say here what the plugin does.

Its hooks are this module's functions: enough for a plugin that keeps nothing. One
that keeps state (settings, a database, counters) is a class, one instance a server:
name the class in pyproject.toml's entry point (`{name} = "chatkit_{name}:Name"`;
docs/plugins.md, sections 5 and 7).
"""

from chatkit import Session, hookimpl


@hookimpl
def chatkit_on_login(client: Session) -> None:
    """Greet each client once it has logged in (runs on that client's thread)."""
    client.notice(f"{name} says hello, {{client.nick}}")
''',
    "tests/conftest.py": """\
# Real chatkit servers and clients for the tests: the fixtures of chatkit's plugin
# guide (docs/plugins.md, "Testing with chatkit.testing").
from chatkit.testing import (  # noqa: F401
    chat_client,
    chat_server,
    chat_server_factory,
    hook_recorder,
    text_client,
)
""",
    "tests/test_{name}.py": '''\
def test_greets_each_login(chat_server_factory, chat_client) -> None:
    """The plugin, loaded by its entry-point name, greets a client that logs in."""
    server = chat_server_factory(plugins=["{name}"])
    alice = chat_client(server, "alice")
    assert alice.expect("notice")["text"] == "{name} says hello, alice"
''',
}


def plugin_name(name: str) -> str:
    """The plugin name ``chatkit plugin new NAME`` means: ``chatkit_foo``, ``chatkit-foo``
    and ``foo`` are all ``foo``; dashes become underscores.

    Raises :class:`UsageError` for a name that is not a valid module name.
    """
    bare = re.sub(r"^chatkit[_-]", "", name).replace("-", "_")
    if not _NAME.fullmatch(bare) or bare == "server":
        raise UsageError(
            f"bad plugin name {name!r}: use 1 to 40 lower-case letters, digits and '_', "
            "starting with a letter (e.g. 'welcome_bot')"
            + ("; chatkit-server is chatkit itself" if bare == "server" else "")
        )
    if bare in BUILTIN_PLUGINS:
        # `plugins=[name]` (and --plugin NAME) would load the builtin, not the new package.
        raise UsageError(
            f"{bare!r} is the name of a builtin plugin, which would be loaded instead of "
            f"yours; pick another (e.g. '{bare}_extra')"
        )
    return bare


def installed_checkout() -> Path | None:
    """The source checkout chatkit is installed from in editable mode, or ``None``.

    ``None`` when chatkit is installed from an index or a wheel: then a plugin
    depends on the release on PyPI.
    """
    try:
        dist = distribution(DISTRIBUTION)
    except PackageNotFoundError:
        return None
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        log.warning("%s: unreadable direct_url.json; assuming an install from PyPI", DISTRIBUTION)
        return None
    url = urlparse(info.get("url", ""))
    if url.scheme != "file" or not info.get("dir_info", {}).get("editable"):
        return None
    path = Path(unquote(url.path))
    return path if (path / "pyproject.toml").is_file() else None


def _check_checkout(path: Path) -> Path:
    path = path.expanduser().absolute()
    try:
        name = tomllib.loads((path / "pyproject.toml").read_text())["project"]["name"]
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        name = None
    if name != DISTRIBUTION:
        raise UsageError(
            f"--chatkit-path {path} is not a chatkit checkout (its pyproject.toml does not "
            f"define {DISTRIBUTION}); give the directory of chatkit's pyproject.toml"
        )
    return path


def create_plugin(name: str, directory: Path, chatkit_path: Path | None = None) -> Path:
    """Create ``directory/chatkit-NAME`` holding a plugin package; return its path.

    The package depends on ``chatkit-server``: from the checkout at
    ``chatkit_path`` if given (a uv path source), else from PyPI.

    Raises :class:`UsageError` for a bad name, an existing directory, or a
    ``chatkit_path`` that is not a chatkit checkout.
    """
    name = plugin_name(name)
    from chatkit.version import __version__

    sources = ""
    if chatkit_path is not None:
        sources = _SOURCES.format(
            distribution=DISTRIBUTION, path=json.dumps(str(_check_checkout(chatkit_path)))
        )
    dash = name.replace("_", "-")
    root = directory / f"chatkit-{dash}"
    if root.exists():
        raise UsageError(f"{root} already exists; choose another name or directory")
    values = {
        "name": name,
        "dash": dash,
        "version": __version__,
        "distribution": DISTRIBUTION,
        "sources": sources,
    }
    # The first of its directories that is not there yet: what a failure removes.
    made = next((p for p in reversed([root, *root.parents]) if not p.exists()), root)
    try:
        root.mkdir(parents=True)
    except OSError as exc:  # a directory that cannot hold it (read-only, /proc...)
        raise UsageError(f"cannot write {root}: {exc.strerror or exc}") from None
    try:
        for template, text in _FILES.items():
            path = root / template.format(**values)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text.format(**values))
    except OSError as exc:  # (a full disk, a quota): no half package left behind
        shutil.rmtree(made, ignore_errors=True)
        raise UsageError(f"cannot write {root}: {exc.strerror or exc}") from None
    return root
