"""Calling the plugins' hooks, one implementation at a time.

This file knows no socket, no hub and no plugin discovery (chatkit/plugins.py
builds the ``PluginManager``); it only calls what is registered, so that the hub
can depend on it without depending on the plugin loader.
"""

from __future__ import annotations

import logging
import threading
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import pluggy

from chatkit.errors import UsageError

__all__ = ["HookRunner", "Monitor", "PluginManager"]

# The logger of the plugin machinery, as before HookRunner had a module of its own:
# operators' log filters name it.
log = logging.getLogger("chatkit.plugins")

Monitor = Callable[[str, dict[str, Any]], None]

SAMPLE_EVERY = 64  # one call in this many of each hook is timed, plugin by plugin (metrics)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, counting the changes to what is registered, so that
    :class:`HookRunner` may keep each hook's implementations between calls (pluggy
    copies its list for every call: 7 % of a fan-out's time, measured)."""

    generation = 0
    """Bumped by every ``register``, ``unregister`` and ``add_hookspecs`` (after it:
    a caller that read the old value recomputes once more)."""

    def register(self, plugin: object, name: str | None = None) -> str | None:
        try:
            return super().register(plugin, name)
        finally:
            self.generation += 1

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any | None:
        try:
            return super().unregister(plugin, name)
        finally:
            self.generation += 1

    def add_hookspecs(self, module_or_class: types.ModuleType | type) -> None:
        try:
            super().add_hookspecs(module_or_class)
        finally:
            self.generation += 1


class HookRunner:
    """Calls hooks plugin by plugin, so one failing plugin never stops the others.

    pluggy stops a hook call at the first exception; chatkit instead logs it with
    the plugin's name and goes on (notify hooks) or turns it into a refusal (veto
    and filter hooks, which fail closed).
    """

    sample_every = SAMPLE_EVERY
    """One call in this many of each hook is timed (:attr:`timings`)."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        """The plugin manager whose hooks are called (a reload replaces it: one
        assignment, so a call in progress finishes with the manager it started with)."""
        self._monitors: list[Monitor] = []
        # Each hook's implementations: name -> (manager, its generation, impls), see
        # impls(). Written by any thread without a lock: a lost or doubled write only
        # recomputes an entry.
        self._impls: dict[str, tuple[object, int | None, tuple[pluggy.HookImpl, ...]]] = {}
        # The same for several hooks called as one (ordered()): names -> (manager,
        # generation, (name, impl) pairs in one call order).
        self._ordered: dict[
            tuple[str, ...], tuple[object, int | None, tuple[tuple[str, pluggy.HookImpl], ...]]
        ] = {}
        # Calls of each hook, to pick the sampled ones: one in sample_every of each
        # hook's own calls. (One count for all hooks sampled the same hook forever
        # when a message makes a number of calls that divides sample_every, four with
        # history: the others were never timed.) Counted without a lock: two threads
        # may count one call, which only moves the sample. Counted inline in
        # notify() and first() (no helper): a hook call is on every login and message;
        # the store hooks, called plugin by plugin, count through sampled().
        self._calls: dict[str, int] = {}
        # Guards timings (written by whichever thread ran a sampled call).
        self._timings_lock = threading.Lock()
        self.timings: dict[tuple[str, str], list[float]] = {}
        """Sampled hook latency: (plugin, hook) -> [calls timed, seconds in total].
        One call in :data:`SAMPLE_EVERY` of each hook is timed, plugin by plugin."""

    def _timed(self, impl: pluggy.HookImpl, name: str, kwargs: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            return self._call(impl, kwargs)
        finally:
            elapsed = time.perf_counter() - started
            with self._timings_lock:
                entry = self.timings.setdefault((impl.plugin_name, name), [0.0, 0.0])
                entry[0] += 1
                entry[1] += elapsed

    def timings_snapshot(self) -> dict[tuple[str, str], tuple[int, float]]:
        """A copy of :attr:`timings`: (plugin, hook) -> (calls timed, seconds)."""
        with self._timings_lock:
            return {key: (int(n), total) for key, (n, total) in self.timings.items()}

    def add_monitor(self, monitor: Monitor) -> Callable[[], None]:
        """Call ``monitor(hook_name, kwargs)`` before every hook call; returns an undo."""
        self._monitors = [*self._monitors, monitor]  # copy: readers iterate without a lock

        def remove() -> None:
            self._monitors = [m for m in self._monitors if m is not monitor]

        return remove

    def impls(self, name: str) -> Sequence[pluggy.HookImpl]:
        """Implementations of hook ``name`` in call order."""
        pm = self.pm
        generation = getattr(pm, "generation", None)  # None: a plain pluggy manager
        entry = self._impls.get(name)
        # Valid if computed from this manager at this generation. Read the generation
        # before the implementations: a registration between the two leaves an entry
        # tagged with the old generation, which the next call replaces.
        if entry is not None and entry[0] is pm and entry[1] == generation is not None:
            return entry[2]
        caller: pluggy.HookCaller = getattr(pm.hook, name)
        # pluggy keeps them in reverse call order (it calls the last one first).
        found = tuple(reversed(caller.get_hookimpls()))
        self._impls[name] = (pm, generation, found)
        return found

    def ordered(self, names: tuple[str, ...]) -> Sequence[tuple[str, pluggy.HookImpl]]:
        """The implementations of several hooks that act as one (the two store hooks),
        as ``(hook name, impl)`` pairs in one call order: pluggy's order for a single
        hook (``tryfirst`` ones and then the others, the plugin registered last first;
        then ``trylast`` ones, the plugin registered first first), a plugin
        implementing both in ``names``' order. Call each with :meth:`call`."""
        pm = self.pm
        generation = getattr(pm, "generation", None)  # (read first: see impls())
        entry = self._ordered.get(names)
        if entry is not None and entry[0] is pm and entry[1] == generation is not None:
            return entry[2]
        place = {id(plugin): i for i, (_name, plugin) in enumerate(pm.list_name_plugin())}
        pairs = [(name, impl) for name in names for impl in self.impls(name)]
        pairs.sort(  # (stable: one plugin's two hooks stay in names' order)
            key=lambda pair: (
                (2, place.get(id(pair[1].plugin), 0))
                if pair[1].trylast  # (pluggy puts each new one first: called last)
                else (0 if pair[1].tryfirst else 1, -place.get(id(pair[1].plugin), 0))
            )
        )
        found = tuple(pairs)
        self._ordered[names] = (pm, generation, found)
        return found

    def sampled(self, name: str) -> bool:
        """Count a call of hook ``name`` made with :meth:`call`: whether its
        implementations are to be timed (one call in :attr:`sample_every`)."""
        count = self._calls[name] = self._calls.get(name, 0) + 1
        return not count % self.sample_every

    def call(
        self,
        name: str,
        impl: pluggy.HookImpl,
        on_error: Callable[[str], Any],
        timed: bool,
        **kwargs: Any,
    ) -> Any:
        """Call one implementation of hook ``name`` (from :meth:`ordered`), ``timed``
        if :meth:`sampled` said so for this call of the hook (every plugin of a
        sampled call is timed); if it raises, log it and return
        ``on_error(plugin_name)``. Tell the monitors first with :meth:`watch`."""
        try:
            if timed:
                return self._timed(impl, name, kwargs)
            return self._call(impl, kwargs)
        except Exception:
            log.exception("plugin %r failed in %s", impl.plugin_name, name)
            return on_error(impl.plugin_name)

    def watch(self, name: str, **kwargs: Any) -> None:
        """Tell the monitors of a call of hook ``name`` made with :meth:`call`."""
        for monitor in self._monitors:
            monitor(name, kwargs)

    def wanted(self, name: str) -> bool:
        """Whether calling hook ``name`` would do anything: it has an implementation,
        or a monitor watches the calls. A caller about to call it for each of many
        messages asks once, and skips the calls if not."""
        return bool(self._monitors) or bool(self.impls(name))

    def _call(self, impl: pluggy.HookImpl, kwargs: dict[str, Any]) -> Any:
        return impl.function(*[kwargs[arg] for arg in impl.argnames])

    def notify(self, name: str, **kwargs: Any) -> None:
        """Call every implementation; log and skip the ones that raise."""
        for monitor in self._monitors:
            monitor(name, kwargs)
        impls = self.impls(name)
        if not impls:
            return  # (most hooks of a message have none: nothing to count or time)
        count = self._calls[name] = self._calls.get(name, 0) + 1
        timed = not count % self.sample_every
        for impl in impls:
            try:
                if timed:
                    self._timed(impl, name, kwargs)
                else:
                    self._call(impl, kwargs)
            except Exception:
                log.exception("plugin %r failed in %s", impl.plugin_name, name)

    def first(
        self,
        name: str,
        on_error: Callable[[str], Any],
        accept: type | tuple[type, ...] = object,
        *,
        false_is_none: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Call implementations until one returns non-``None``; return that or ``None``.
        (``false_is_none``: ``False`` too passes to the next, as "not mine".)

        If one raises, or returns something not of the ``accept`` types (a veto's
        ``True``, a filter's ``message``: taken for an answer, it would skip every
        later plugin, a ban included), the error is logged and ``on_error(plugin_name)``
        is returned instead (the hook fails closed).
        """
        for monitor in self._monitors:
            monitor(name, kwargs)
        impls = self.impls(name)
        if not impls:
            return None
        count = self._calls[name] = self._calls.get(name, 0) + 1
        timed = not count % self.sample_every
        for impl in impls:
            try:
                result = self._timed(impl, name, kwargs) if timed else self._call(impl, kwargs)
            except Exception:
                log.exception("plugin %r failed in %s", impl.plugin_name, name)
                return on_error(impl.plugin_name)
            if result is not None and not (false_is_none and result is False):
                if not isinstance(result, accept):
                    log.error(
                        "plugin %r returned %r from %s, which takes None or %s: refused",
                        impl.plugin_name,
                        result,
                        name,
                        _names(accept),
                    )
                    return on_error(impl.plugin_name)
                return result
        return None

    def startup(self, name: str, called: list[Any] | None = None, **kwargs: Any) -> None:
        """Call every implementation; an exception becomes a :class:`UsageError`.
        ``called`` gets each plugin called, before its call (so that what a failed
        start leaves behind can be stopped)."""
        for monitor in self._monitors:
            monitor(name, kwargs)
        for impl in self.impls(name):
            if called is not None:
                called.append(impl.plugin)
            try:
                self._call(impl, kwargs)
            except UsageError:
                raise
            except Exception as exc:
                raise UsageError(
                    f"plugin {impl.plugin_name!r} failed in {name}: {type(exc).__name__}: {exc}"
                ) from exc


def _names(types: type | tuple[type, ...]) -> str:
    """``Reject``, or ``bool or Reject``: the types a hook's answer may have, for the log."""
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
