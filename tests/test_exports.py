"""The public surface: what plugins may import, and the builtins import nothing else."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import apidoc
import pytest

import chatkit
import chatkit.builtins


def test_top_level_exports_exactly_all() -> None:
    """`chatkit` re-exports exactly the names in its __all__."""
    public = {name for name in dir(chatkit) if not name.startswith("_")}
    modules = {m.name for m in pkgutil.iter_modules(chatkit.__path__)}
    assert public - modules == set(chatkit.__all__) - {"__version__"}
    for name in chatkit.__all__:
        assert hasattr(chatkit, name)


def test_every_module_declares_all() -> None:
    """Each module says what it exports."""
    for info in pkgutil.walk_packages(chatkit.__path__, "chatkit."):
        if info.name.startswith("chatkit.builtins") or info.name == "chatkit.__main__":
            continue
        module = importlib.import_module(info.name)
        assert hasattr(module, "__all__"), info.name
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.{name}"


def test_every_export_is_in_the_plugin_reference() -> None:
    """Each name `chatkit` exports is shown in docs/plugins.md's reference (tests/apidoc.py),
    or listed there with where it is told instead."""
    shown = {cls.__name__ for cls, *_ in apidoc.SURFACE} | {name for name, _ in apidoc.HELPERS}
    assert set(chatkit.__all__) - shown - set(apidoc.NOT_SHOWN) == set(), (
        "add it to tests/apidoc.py (HELPERS, or NOT_SHOWN with where it is documented)"
    )
    assert set(apidoc.NOT_SHOWN) <= set(chatkit.__all__), "apidoc.NOT_SHOWN names a non-export"
    assert not shown & set(apidoc.NOT_SHOWN)


# -- builtins use only what chatkit exports ----------------------------------------------


def _core_modules() -> set[str]:
    """The modules and packages directly under chatkit, ``chatkit.builtins`` included."""
    return {f"chatkit.{m.name}" for m in pkgutil.iter_modules(chatkit.__path__)}


def reached_past(source: str, module: str, is_package: bool = False) -> list[str]:
    """``line: module`` for each import in ``source`` (the text of module ``module``) of
    a chatkit module other than chatkit's top level and ``chatkit.builtins``'s own,
    wherever it is (in a function, under ``TYPE_CHECKING``)."""
    package = module if is_package else module.rpartition(".")[0]
    core = _core_modules()
    found: list[tuple[int, str]] = []

    def check(line: int, name: str) -> None:
        if name.startswith("chatkit.") and not (name + ".").startswith("chatkit.builtins."):
            found.append((line, name))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                up = parts[: len(parts) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            if base == "chatkit":
                # `from chatkit import hub` is the module, not an export.
                for alias in node.names:
                    if f"chatkit.{alias.name}" in core - {"chatkit.builtins"}:
                        found.append((node.lineno, f"chatkit.{alias.name}"))
            else:
                check(node.lineno, base)
    return [f"{line}: {name}" for line, name in sorted(found, key=lambda f: f[0])]


def builtin_modules() -> list[pkgutil.ModuleInfo]:
    return list(pkgutil.walk_packages(chatkit.builtins.__path__, "chatkit.builtins."))


@pytest.mark.parametrize("info", builtin_modules(), ids=lambda info: info.name)
def test_builtins_import_only_what_chatkit_exports(info: pkgutil.ModuleInfo) -> None:
    """Each builtin imports from chatkit's top level (what third-party plugins use) and from
    chatkit.builtins, nothing else of chatkit. The `forbidden` contract in pyproject.toml
    checks the same with import-linter; this one also reads `from chatkit import hub`."""
    spec = importlib.util.find_spec(info.name)
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).read_text()
    assert reached_past(source, info.name, info.ispkg) == [], (
        f"{info.name} reaches past chatkit's exports: export what it needs from "
        "chatkit/__init__.py (and document it in tests/apidoc.py), or move it under builtins/"
    )


def test_every_builtin_is_checked() -> None:
    """The walk finds every builtin plugin module, the history package's store too."""
    names = {info.name for info in builtin_modules()}
    assert {"chatkit.builtins.flood", "chatkit.builtins.history"} <= names
    assert "chatkit.builtins.history.store" in names


def test_the_import_check_sees_every_way_past_the_front_door() -> None:
    """The checker itself: what it flags and what it lets through."""
    sample = """
from chatkit import Session, fold, hookimpl
from chatkit.builtins.history.store import MessageStore
from .store import StoreError
import chatkit
from chatkit.hub import Hub
import chatkit.protocol
from chatkit import hub, config
from ... import names
from ...store import MessageStore
if TYPE_CHECKING:
    from chatkit.server import Server
def later():
    import chatkit.session as s
"""
    assert reached_past(sample, "chatkit.builtins.history", is_package=True) == [
        "6: chatkit.hub",
        "7: chatkit.protocol",
        "8: chatkit.hub",
        "8: chatkit.config",
        "9: chatkit.names",
        "10: chatkit.store",
        "12: chatkit.server",
        "14: chatkit.session",
    ]
