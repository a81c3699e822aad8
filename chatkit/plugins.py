"""Finding, loading and calling plugins.

Builtins and third-party plugins enter through the same door: each is a module (or
an object) registered with the server's own pluggy ``PluginManager`` under a short
name. Installed packages are found through the ``chatkit.plugins`` entry-point group
but are never enabled just by being installed.

Nothing here runs at import time; every ``Server`` builds its own manager.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import os
import re
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from chatkit import hookspecs
from chatkit.commands import CommandRegistry
from chatkit.errors import UsageError
from chatkit.hooks import HookRunner, PluginManager

if TYPE_CHECKING:
    from chatkit.config import Config

__all__ = [
    "DEFAULT_PLUGINS",
    "DISTRIBUTION",
    "ENTRY_POINT_GROUP",
    "ESSENTIAL_PLUGINS",
    "PluginInfo",
    "build_plugin_manager",
    "check_hook_names",
    "check_plugin_sections",
    "check_plugin_settings",
    "hook_names",
    "list_plugins",
    "suggest_hook",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "chatkit.plugins"
DISTRIBUTION = "chatkit-server"  # chatkit's name on PyPI ("chatkit" there is someone else's)

ESSENTIAL_PLUGINS = (
    "help",  # /help: how a person finds every other command; cannot be disabled
    "session",  # /nick and /quit: every client must be able to rename and leave
)
DEFAULT_PLUGINS = (
    "rooms",  # /join, /part, /rooms, /who
    "messaging",  # /msg and /me
    "flood",  # a token bucket per client: refuses lines beyond a rate
    "history",  # messages stored in SQLite before delivery; replay on join, /history
    "accounts",  # registered nicks and passwords: /register, /identify; private history
    "log",  # the console log of logins, joins, leaves and logouts
)
OPTIONAL_PLUGINS = (
    "stats",  # /stats: the server's counters; off unless enabled
    "metrics",  # Prometheus /metrics on a port of its own (--metrics-port); off unless enabled
    "webhooks",  # bots over HTTP: events POSTed to URLs, an endpoint to post messages
    "moderation",  # room operators, /kick, /ban, /mute; server operators' /kill, /wall
    "cluster",  # several servers as one chat through Redis (--redis); off unless enabled
)
BUILTIN_PLUGINS = ESSENTIAL_PLUGINS + DEFAULT_PLUGINS + OPTIONAL_PLUGINS
_WITHOUT_SETTINGS = frozenset({"help", "session", "rooms", "messaging", "stats"})
"""Builtins that read no ``[plugins.NAME]`` table: one in a config file is unused."""

# Where each builtin lives: a module of hook functions, or "module:Class" for a
# stateful plugin, instantiated once per server.
_BUILTIN_TARGETS = {name: f"chatkit.builtins.{name}" for name in BUILTIN_PLUGINS}
_BUILTIN_TARGETS["flood"] = "chatkit.builtins.flood:Flood"
_BUILTIN_TARGETS["stats"] = "chatkit.builtins.stats:Stats"
_BUILTIN_TARGETS["cluster"] = "chatkit.builtins.cluster:Cluster"
_BUILTIN_TARGETS["metrics"] = "chatkit.builtins.metrics:Metrics"
_BUILTIN_TARGETS["log"] = "chatkit.builtins.log:Log"
_BUILTIN_TARGETS["webhooks"] = "chatkit.builtins.webhooks:Webhooks"
_BUILTIN_TARGETS["history"] = "chatkit.builtins.history:History"
_BUILTIN_TARGETS["accounts"] = "chatkit.builtins.accounts:Accounts"
_BUILTIN_TARGETS["moderation"] = "chatkit.builtins.moderation:Moderation"


@dataclass
class PluginInfo:
    """What ``chatkit plugins`` tells about one plugin."""

    name: str
    """The name it is enabled and registered by."""
    origin: str
    """``builtin``, ``entry point`` or ``object`` (registered by a program)."""
    package: str
    """The distribution that provides it."""
    version: str
    """That distribution's version."""
    default: str
    """``essential`` (always on), ``default`` (on unless disabled) or ``off``."""
    hooks: list[str] = field(default_factory=list)
    """The hooks it implements, sorted."""
    commands: list[str] = field(default_factory=list)
    """The commands it registers, sorted, without slash."""
    error: str | None = None
    """Why it could not be loaded, for a broken plugin."""
    description: str = ""
    """One line: the first line of the plugin's docstring, else its package's summary."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``chatkit plugins --json`` prints for it."""
        return {
            "name": self.name,
            "origin": self.origin,
            "package": self.package,
            "version": self.version,
            "default": self.default,
            "hooks": self.hooks,
            "commands": self.commands,
            "error": self.error,
            "description": self.description,
        }


def _version() -> str:
    from chatkit.version import __version__

    return __version__


def installed_entry_points() -> dict[str, EntryPoint]:
    """Entry points of the ``chatkit.plugins`` group by name (first one wins, and the
    others are logged: two packages giving one name, one of them is never loaded)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        first = found.setdefault(ep.name, ep)
        if first is not ep and first.value != ep.value:
            log.warning(
                "two installed packages give a plugin called %r: %s (%s), used, and %s (%s), "
                "never loaded; uninstall one",
                ep.name,
                _dist_name(first),
                first.value,
                _dist_name(ep),
                ep.value,
            )
    return found


def _dist_name(ep: EntryPoint) -> str:
    dist = ep.dist
    return dist.name if dist is not None else "?"


def _instantiate(obj: Any) -> Any:
    # A stateful plugin is a class: register an instance of it, so its state
    # belongs to one server.
    return obj() if isinstance(obj, type) else obj


def _builtin_info(name: str) -> PluginInfo:
    if name in ESSENTIAL_PLUGINS:
        default = "essential"
    else:
        default = "default" if name in DEFAULT_PLUGINS else "off"
    return PluginInfo(name, "builtin", DISTRIBUTION, _version(), default)


def _entry_point_info(ep: EntryPoint) -> PluginInfo:
    dist = ep.dist
    package = dist.name if dist is not None else ep.module
    version = dist.version if dist is not None else "?"
    summary = (dist.metadata["Summary"] or "") if dist is not None else ""
    return PluginInfo(ep.name, "entry point", package, version, "off", description=summary)


def _description(plugin: Any) -> str | None:
    """The first line of the docstring of the plugin's module, or of its class."""
    if isinstance(plugin, types.ModuleType):
        docs = [inspect.getdoc(plugin)]
    else:
        docs = [inspect.getdoc(sys.modules.get(type(plugin).__module__)), inspect.getdoc(plugin)]
    for doc in docs:
        if doc and doc.strip():
            return doc.strip().splitlines()[0]
    return None


def _import_error(name: str, info: PluginInfo, exc: BaseException) -> UsageError:
    # A module path's "package" is its top module and its version unknown: nothing to add.
    where = f" (package {info.package} {info.version})" if info.version != "?" else ""
    return UsageError(f"cannot import plugin {name!r}{where}: {type(exc).__name__}: {exc}")


def _unknown(name: str, available: Iterable[str], missing: str | None = None) -> UsageError:
    """The error for a plugin nobody has: ``missing`` is the module a module path named
    that Python did not find (``mine`` of ``mine.shout``)."""
    names = sorted(set(available))
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    why = "."
    if missing is not None and ("." in name or ":" in name):
        # A module path of the user's own, most likely: where Python looked is the news.
        why = (
            f": no module {missing!r} on the Python path (a module of your own: run from "
            "the directory that holds it with PYTHONPATH=., or install its package)."
        )
    return UsageError(
        f"Unknown plugin {name!r}{why}{hint} Available plugins: {', '.join(names) or 'none'}"
    )


_MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?")


def resolve_plugin(name: str, eps: dict[str, EntryPoint] | None = None) -> tuple[Any, PluginInfo]:
    """Import the plugin called ``name``: a builtin, an entry point, or a module path.

    A module path is an importable module (``mine.shout``, or ``shout`` on
    ``PYTHONPATH``), optionally with ``:attribute`` naming an object or a class in it.

    Raise :class:`UsageError` for an unknown name or a plugin that fails to import.
    """
    eps = installed_entry_points() if eps is None else eps
    if name in BUILTIN_PLUGINS:
        module_name, _, attr = _BUILTIN_TARGETS[name].partition(":")
        module = importlib.import_module(module_name)
        return _instantiate(getattr(module, attr) if attr else module), _builtin_info(name)
    if name in eps:
        info = _entry_point_info(eps[name])
        try:
            return _instantiate(eps[name].load()), info
        except Exception as exc:
            raise _import_error(name, info, exc) from exc
    if _MODULE_PATH.fullmatch(name):
        module_name, _, attr = name.partition(":")
        info = PluginInfo(name, "module", module_name.split(".")[0], "?", "off")
        try:
            obj: Any = importlib.import_module(module_name)
            if attr:
                obj = getattr(obj, attr)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                # The plugin's own module (or a package of its path) is missing; a module
                # it imports that is missing is an import error of the plugin's.
                raise _unknown(name, [*BUILTIN_PLUGINS, *eps], exc.name) from None
            raise _import_error(name, info, exc) from exc
        except Exception as exc:
            raise _import_error(name, info, exc) from exc
        return _instantiate(obj), info
    raise _unknown(name, [*BUILTIN_PLUGINS, *eps])


def check_plugin_settings(
    config: Config, pm: pluggy.PluginManager, infos: Iterable[PluginInfo]
) -> list[str]:
    """Have each enabled plugin check its settings (``chatkit_check_config``); return
    the NAMEs of the ``[plugins.NAME]`` tables that cannot be checked so (their plugin
    has no such hook). Raises :class:`UsageError` for the first refusal, naming the plugin
    when it did not."""
    unchecked: list[str] = []
    for info in infos:
        plugin = pm.get_plugin(info.name)
        if not hasattr(plugin, "chatkit_check_config"):
            table = info.name if info.name in config.plugin_config else _table(info.name)
            if config.plugin_config.get(table) and table not in _WITHOUT_SETTINGS:
                unchecked.append(table)
            continue
        try:
            call_plugin(plugin, "chatkit_check_config", config=config, pluginmanager=pm)
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(
                f"plugin {info.name!r} failed in chatkit_check_config: {type(exc).__name__}: {exc}"
            ) from exc
    return unchecked


def check_plugin_sections(config: Config, sections: Iterable[str]) -> list[str]:
    """Check the config file's ``[plugins.NAME]`` tables against the plugins ``config`` enables.

    Raise :class:`UsageError` for a table of a plugin that is neither a builtin nor
    installed; return a warning for each table of a plugin that is installed but
    not enabled, or a builtin without settings (its settings would be silently unused).
    """
    where = f"{config.source}: " if config.source else ""
    enabled = {*ESSENTIAL_PLUGINS, *config.plugins}
    # A module path's table is named after its module: [plugins.shout] for mine.shout:Shout.
    enabled |= {_table(p) for p in config.plugins}
    enabled |= {name for name in DEFAULT_PLUGINS if name not in config.disable}
    known = sorted({*BUILTIN_PLUGINS, *installed_entry_points()})
    warnings: list[str] = []
    for name in sections:
        if name in _WITHOUT_SETTINGS:
            warnings.append(
                f"{where}[plugins.{name}] is unused: the {name} plugin has no settings; "
                "remove the section"
            )
            continue
        if name != _table(name) and name not in known:
            # A module path's plugin reads the table of its last module, never this one.
            warnings.append(
                f'{where}[plugins."{name}"] is unused: the plugin {name} reads '
                f"[plugins.{_table(name)}]; rename the section"
            )
            continue
        if name in enabled:
            continue
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean [plugins.{close[0]}]?" if close else ""
            raise UsageError(
                f"{where}[plugins.{name}] is for an unknown plugin {name!r}.{hint} "
                f"Install the plugin or remove the section; known plugins: {', '.join(known)}"
            )
        warnings.append(
            f"{where}[plugins.{name}] is unused: plugin {name!r} is installed but not enabled; "
            f"enable it with --plugin {name} or [server] plugins, or remove the section"
        )
    return warnings


def new_plugin_manager() -> pluggy.PluginManager:
    """An empty manager that knows chatkit's hooks."""
    pm = PluginManager("chatkit")
    pm.add_hookspecs(hookspecs)
    return pm


def _register(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except ValueError as exc:  # already registered under this name or object
        raise UsageError(f"plugin {name!r} is enabled twice") from exc
    except pluggy.PluginValidationError as exc:
        raise UsageError(
            _bad_arguments(pm, plugin, name) or f"plugin {name!r} is invalid: {exc}"
        ) from exc
    if not pm.get_hookcallers(plugin):
        pm.unregister(plugin)
        raise UsageError(
            f"plugin {name!r} implements no chatkit hook{_no_hook_hint(pm, plugin, name)}"
        )
    for caller in pm.get_hookcallers(plugin) or []:
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and (impl.hookwrapper or impl.wrapper):
                pm.unregister(plugin)
                raise UsageError(
                    f"plugin {name!r} implements {caller.name} as a hook wrapper, "
                    "which chatkit does not support"
                )


def _no_hook_hint(pm: pluggy.PluginManager, plugin: Any, name: str) -> str:
    """What a plugin without hooks most likely meant: a class of the module, or a
    ``chatkit_`` function without ``@hookimpl``."""
    if isinstance(plugin, types.ModuleType):
        for attr, value in vars(plugin).items():
            if (
                isinstance(value, type)
                and value.__module__ == plugin.__name__
                and any(
                    pm.parse_hookimpl_opts(value, a) for a in dir(value) if a.startswith("chatkit_")
                )
            ):
                return f": its hooks are methods of {attr}; enable it as '{name}:{attr}'"
    unmarked = [a for a in dir(plugin) if a.startswith("chatkit_") and callable(getattr(plugin, a))]
    if unmarked:
        return f": mark {unmarked[0]} with @hookimpl (from chatkit import hookimpl)"
    return " (a function or method named chatkit_..., marked @hookimpl; docs/hooks.md)"


def _bad_arguments(pm: pluggy.PluginManager, plugin: Any, name: str) -> str | None:
    """Say which argument of which hook of ``plugin`` no hook offers, or ``None``."""
    for attr in dir(plugin):
        caller = getattr(pm.hook, attr, None) if attr.startswith("chatkit_") else None
        if not isinstance(caller, pluggy.HookCaller) or caller.spec is None:
            continue
        if pm.parse_hookimpl_opts(plugin, attr) is None:
            continue
        try:
            params = inspect.signature(getattr(plugin, attr)).parameters
        except (TypeError, ValueError):
            continue
        unknown = [p for p in params if p not in caller.spec.argnames and p != "self"]
        if unknown:
            offered = ", ".join(caller.spec.argnames)
            return (
                f"plugin {name!r}: {attr} takes no argument {unknown[0]!r}; "
                f"it offers {offered} (take any of them, by name){_defined(getattr(plugin, attr))}"
            )
    return None


def _defined(function: Any) -> str:
    """Where ``function`` is defined: `` (at mine/shout.py:12)``, or nothing."""
    try:
        path = inspect.getsourcefile(function)
        line = inspect.getsourcelines(function)[1]
    except (TypeError, OSError):
        return ""
    return f" (at {path}:{line})" if path else ""


def object_name(plugin: Any) -> str:
    """The name a plugin object passed by a program is registered under."""
    name = getattr(plugin, "name", None) or getattr(plugin, "__name__", None)
    return str(name) if name else type(plugin).__name__


Resolver = Callable[[str, dict[str, EntryPoint]], tuple[Any, PluginInfo]]


def build_plugin_manager(
    config: Config, extra: Iterable[Any] = (), resolve: Resolver | None = None
) -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    """The plugin manager for a server: builtins, then ``config.plugins``, then ``extra``.

    ``config.plugins`` are names; ``extra`` are plugin objects (modules or
    instances) a program passes directly. Later-registered plugins are called
    first, so ``--plugin`` plugins run before builtins, and they are registered
    in reverse so that they run in the order given. ``resolve`` turns a name into
    its plugin (default :func:`resolve_plugin`; a reload passes one that keeps
    running plugins).
    """
    resolve = resolve_plugin if resolve is None else resolve
    eps = installed_entry_points()
    known = {*BUILTIN_PLUGINS, *eps}
    for name in config.disable:
        if name in ESSENTIAL_PLUGINS:
            raise UsageError(f"plugin {name!r} cannot be disabled (it is essential)")
        if name not in known:
            raise _unknown(name, known)
    pm = new_plugin_manager()
    infos: list[PluginInfo] = []
    for name in ESSENTIAL_PLUGINS + DEFAULT_PLUGINS:
        if name not in config.disable:
            plugin, info = resolve(name, eps)
            _register(pm, plugin, name)
            infos.append(info)
    chosen: list[tuple[str, Any, PluginInfo]] = []
    for name in dict.fromkeys(config.plugins):  # (named twice, by the file and a flag: once)
        if name in ESSENTIAL_PLUGINS + DEFAULT_PLUGINS and name not in config.disable:
            continue  # already on
        plugin, info = resolve(name, eps)
        chosen.append((name, plugin, info))
    for obj in extra:
        name = object_name(obj)
        chosen.append((name, obj, PluginInfo(name, "object", "?", "?", "off")))
    for name, plugin, _info in reversed(chosen):
        _register(pm, plugin, name)
    infos.extend(info for _, _, info in chosen)
    check_hook_names(pm)
    return pm, infos


def hook_names() -> list[str]:
    """The name of every chatkit hook, sorted."""
    return sorted(name for name in vars(hookspecs) if name.startswith("chatkit_"))


def suggest_hook(name: str) -> str:
    """`` Did you mean 'chatkit_X'?`` for the hook closest to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, hook_names(), n=1, cutoff=0.7)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_hook_names(pm: pluggy.PluginManager) -> None:
    """Raise :class:`UsageError` for a plugin implementing a hook chatkit does not have.

    pluggy's own check names the plugin by its repr; this one names it as it was
    enabled, and suggests the closest hook (a misspelt hook would never be called).
    """
    for name, plugin in pm.list_name_plugin():
        callers = pm.get_hookcallers(plugin) or []
        for attr in dir(plugin) if callers else ():
            if (
                attr.startswith("chatkit_")
                and callable(getattr(plugin, attr, None))
                and pm.parse_hookimpl_opts(plugin, attr) is None  # (not marked: specname too)
            ):
                # (Beside hooks that are marked: one left unmarked would never be called.)
                raise UsageError(
                    f"plugin {name!r} has {attr} without @hookimpl, beside hooks with it: "
                    "it would never be called; mark it (from chatkit import hookimpl)"
                )
        for caller in callers:
            if caller.spec is not None:
                continue
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and not impl.optionalhook:
                    raise UsageError(
                        f"plugin {name!r} implements an unknown hook {caller.name!r}."
                        f"{suggest_hook(caller.name)} chatkit's hooks are listed in docs/hooks.md"
                    )


def hooks_of(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """Names of the hooks ``plugin`` implements, sorted."""
    return sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])


def collect_commands(
    pm: pluggy.PluginManager, registry: CommandRegistry | None = None
) -> CommandRegistry:
    """Call ``chatkit_register_commands`` on every plugin; raise on a clash or error."""
    registry = CommandRegistry() if registry is None else registry
    for impl in HookRunner(pm).impls("chatkit_register_commands"):
        try:
            impl.function(register=registry.register_for(impl.plugin_name))
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(
                f"plugin {impl.plugin_name!r} failed in chatkit_register_commands: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    return registry


def list_plugins() -> list[PluginInfo]:
    """Every builtin and installed plugin, sorted by name; broken ones carry ``error``.

    Never raises for a broken plugin: its import error becomes the row's ``error``.
    """
    eps = installed_entry_points()
    rows: list[PluginInfo] = []
    names = [*BUILTIN_PLUGINS, *(n for n in eps if n not in BUILTIN_PLUGINS)]
    for name in names:
        info = _builtin_info(name) if name in BUILTIN_PLUGINS else _entry_point_info(eps[name])
        try:
            plugin, info = resolve_plugin(name, eps)
            pm = new_plugin_manager()
            _register(pm, plugin, name)
            check_hook_names(pm)
            info.hooks = hooks_of(pm, plugin)
            info.description = _description(plugin) or info.description
            info.commands = [c.name for c in collect_commands(pm).all()]
        except (Exception, SystemExit) as exc:  # a plugin may even call sys.exit() on import
            info.error = str(exc) or type(exc).__name__
        rows.append(info)
    return sorted(rows, key=lambda r: r.name)


# -- reloading -------------------------------------------------------------------

# Hooks whose implementers decide how deliveries are sequenced (Hub.prepare): a
# plugin implementing one cannot be started or stopped by a reload.
_SEQUENCING_HOOKS = ("chatkit_store_messages", "chatkit_store_message", "chatkit_room_replay")


def source_file(plugin: Any) -> str | None:
    """The file of the module that defines ``plugin`` (a module, or an instance)."""
    module = (
        plugin if isinstance(plugin, types.ModuleType) else sys.modules.get(type(plugin).__module__)
    )
    path = getattr(module, "__file__", None)
    return str(path) if path else None


def source_stamp(plugin: Any) -> float | None:
    """When ``plugin``'s defining module file last changed, or ``None``."""
    path = source_file(plugin)
    try:
        return os.stat(path).st_mtime_ns if path else None
    except OSError:
        return None


@dataclass
class ReloadPlan:
    """What a reload does to the plugins (see :func:`plan_reload`)."""

    pm: pluggy.PluginManager
    """The new manager: kept plugins (the same objects) and new ones."""
    infos: list[PluginInfo]
    kept: list[str]
    """Plugins that go on as they are."""
    stopped: list[tuple[str, Any]]
    """Running plugins to stop: disabled, or restarted (their settings or code changed)."""
    started: list[tuple[str, Any]]
    """Plugins to configure and start: enabled, or restarted."""
    notes: list[str] = field(default_factory=list)
    """What the reload leaves for the next restart, for people."""
    deferred: list[str] = field(default_factory=list)
    """The ``[plugins.NAME]`` tables of running plugins whose changes wait for the next
    restart (they go on with their old settings, which the running config keeps)."""


def plan_reload(
    pm: pluggy.PluginManager,
    old: Config,
    new: Config,
    stamps: dict[str, float | None],
    extra: Iterable[Any] = (),
) -> ReloadPlan:
    """Plan going from the plugins of ``old`` (registered in ``pm``) to those of ``new``.

    A plugin is kept (the same object, not told) when it stays enabled with the same
    settings and, for a plugin that is not a builtin, the same source file (``stamps``:
    each plugin's :func:`source_stamp` when it was loaded). Otherwise the running one
    is stopped and a new one started; a changed module is re-imported first
    (``importlib.reload``: the module that defines the plugin, not the rest of its
    package). Builtins' code never reloads (it is chatkit's own: upgrade, then
    restart). Raises :class:`UsageError`, changing nothing, for a new config whose
    plugins cannot load, or that would start or stop a plugin that stores or replays
    messages (the delivery order depends on those: restart the server instead).
    """
    running = {name: plugin for name, plugin in pm.list_name_plugin() if plugin is not None}
    kept: list[str] = []
    started: list[tuple[str, Any]] = []
    notes: list[str] = []
    deferred: list[str] = []

    def resolve(name: str, eps: dict[str, EntryPoint]) -> tuple[Any, PluginInfo]:
        plugin = running.get(name)
        builtin = name in BUILTIN_PLUGINS
        if plugin is not None:
            table = _table(name)  # ([plugins.configurable] for mine.configurable:Plugin)
            same_settings = old.plugin_settings(table) == new.plugin_settings(table)
            same_code = builtin or source_stamp(plugin) == stamps.get(name)
            why = _restart_only(plugin)
            if not (same_settings and same_code) and why:
                notes.append(f"plugin {name!r} changes at the next restart ({why})")
                if not same_settings:
                    deferred.append(table)
                same_settings = same_code = True
            if same_settings and same_code:
                kept.append(name)
                info = _builtin_info(name) if builtin else _kept_info(name, eps)
                return plugin, info
            if not same_code:
                module = (
                    plugin
                    if isinstance(plugin, types.ModuleType)
                    else sys.modules.get(type(plugin).__module__)
                )
                if module is not None:
                    try:
                        importlib.reload(module)
                    except Exception as exc:
                        raise UsageError(
                            f"plugin {name!r} failed to re-import: {type(exc).__name__}: {exc}"
                        ) from exc
        fresh, info = resolve_plugin(name, eps)
        started.append((name, fresh))
        return fresh, info

    new_pm, infos = build_plugin_manager(new, extra, resolve)
    # A program's plugin objects are kept by every reload: never stopped.
    extras = {id(plugin) for plugin in extra}
    stopped = [
        (name, plugin)
        for name, plugin in running.items()
        if name not in kept and id(plugin) not in extras
    ]
    for name, plugin in [*stopped, *started]:
        if why := _restart_only(plugin):
            raise UsageError(f"plugin {name!r}: {why}, so enabling or disabling it needs a restart")
    return ReloadPlan(new_pm, infos, kept, stopped, started, notes, deferred)


def _table(name: str) -> str:
    """The ``[plugins.NAME]`` table of a plugin: its name, or a module path's last
    module (``mine.shout:Shout`` reads ``[plugins.shout]``)."""
    return name.partition(":")[0].rsplit(".", 1)[-1]


def _kept_info(name: str, eps: dict[str, EntryPoint]) -> PluginInfo:
    if name in eps:
        return _entry_point_info(eps[name])
    module_name = name.partition(":")[0]
    return PluginInfo(name, "module", module_name.split(".")[0], "?", "off")


def _restart_only(plugin: Any) -> str:
    """Why ``plugin`` may not be stopped or started by a reload ("" if it may): one that
    stores or replays messages (the delivery order depends on it), or one that says so
    itself with a ``chatkit_restart_only`` attribute giving why (the ``cluster`` plugin:
    this node in the cluster)."""
    if any(
        callable(getattr(plugin, hook, None))
        and getattr(getattr(plugin, hook), "chatkit_impl", None) is not None
        for hook in _SEQUENCING_HOOKS
    ):
        return "it stores messages"
    why = getattr(plugin, "chatkit_restart_only", "")
    return why if isinstance(why, str) else ""


def call_plugin(plugin: Any, name: str, **kwargs: Any) -> None:
    """Call hook ``name`` of one ``plugin``, if it implements it (with the arguments
    it takes); exceptions propagate."""
    function = getattr(plugin, name, None)
    if function is None or not callable(function):
        return
    params = inspect.signature(function).parameters
    function(**{k: v for k, v in kwargs.items() if k in params})
