"""The public surface: what plugins may import."""

from __future__ import annotations

import importlib
import pkgutil

import apidoc

import chatkit


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
