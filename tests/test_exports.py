"""The public surface: what plugins may import."""

from __future__ import annotations

import importlib
import pkgutil

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
