"""Chat commands: the registry that ``chatkit_register_commands`` fills, and dispatch.

The commands themselves live in plugins (``chatkit/builtins/``); this file only
knows how to register, find and run them. It sits below the hub, which runs
commands: what a command may call on the hub is :class:`ChatHub`, an interface
that ``chatkit.hub.Hub`` satisfies, so this file never imports the hub.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from chatkit.errors import CommandError, UsageError

if TYPE_CHECKING:
    from chatkit.config import Config
    from chatkit.events import Message
    from chatkit.session import Session

__all__ = ["ChatHub", "Command", "CommandContext", "CommandRegistry", "Handler", "Register"]

log = logging.getLogger(__name__)

Handler = Callable[["CommandContext"], None]


class Register(Protocol):
    """The ``register`` callable handed to ``chatkit_register_commands``."""

    def __call__(self, name: str, handler: Handler, *, help: str, usage: str = "") -> None: ...


class ChatHub(Protocol):
    """What commands and plugins may call on the chat: ``chatkit.hub.Hub`` is one.

    Each method is documented on the hub (docs/plugins.md, section 11).
    """

    @property
    def config(self) -> Config: ...
    @property
    def commands(self) -> CommandRegistry: ...
    def find(self, nick: str) -> Session | None: ...
    def away(self, nick: str) -> str | None: ...
    def sessions(self) -> list[Session]: ...
    def who(self, room: str) -> list[str] | None: ...
    def rooms(self) -> dict[str, int]: ...
    def topic(self, room: str) -> dict[str, str] | None: ...
    def say(
        self,
        session: Session,
        room: str | None,
        text: str,
        *,
        action: bool = False,
        notice: bool = False,
        defer: bool = False,
    ) -> Message: ...
    def private(
        self, session: Session, nick: str, text: str, *, action: bool = False, notice: bool = False
    ) -> Message: ...
    def join(self, session: Session, room: str) -> bool: ...
    def part(
        self, session: Session, room: str, reason: str = "part", *, by: str | None = None
    ) -> None: ...
    def allow_nick(self, session: Session, nick: str) -> None: ...
    def filter_message(self, session: Session, message: Message) -> None: ...
    def rename(self, session: Session, new: str, *, forced: bool = False) -> None: ...
    def set_topic(self, session: Session, room: str, text: str) -> None: ...
    def set_away(self, session: Session, text: str | None) -> str | None: ...
    def account_deleted(self, account: str) -> None: ...
    def forget_account(
        self, account: str, why: str, *, keep: Session | None = None, everywhere: bool = True
    ) -> int: ...
    def restore_topic(self, room: str, topic: dict[str, str]) -> bool: ...
    def announce(self, text: str, room: str | None = None, **fields: Any) -> None: ...


@dataclass(frozen=True)
class Command:
    """A registered chat command."""

    name: str
    """Its name without the slash, lower case."""
    handler: Handler
    """Called with a :class:`CommandContext` on the typing client's reader thread."""
    help: str
    """One line saying what it does."""
    usage: str
    """Its arguments, e.g. ``NICK TEXT`` (empty if none)."""
    plugin: str
    """The name of the plugin that registered it."""


@dataclass
class CommandContext:
    """What a command handler receives."""

    client: Session
    """The session of the client who typed the command."""
    name: str
    """The command's name, lower case, no slash."""
    args: str
    """Everything after the name, stripped."""
    room: str | None
    """The room the command was typed in (a frame's ``room``, with its ``#``, spelled
    as the room is if the client is in it), else the session's current room; ``None``
    if it is in none. The client may not be in a room a frame named: ``hub.say`` and
    the other calls acting for it check, ``hub.announce`` does not (check
    ``ctx.room in ctx.client.rooms.values()`` first)."""
    hub: ChatHub
    """The chat state, to act on (``hub.join``, ``hub.private``, ...): the ``Hub``."""
    command: Command = field(repr=False, default=None)  # type: ignore[assignment]
    """The :class:`Command` being run."""

    def reply(self, text: str, **data: Any) -> None:
        """Send the typing client a ``reply`` frame with ``text`` and machine-readable ``data``."""
        self.client.reply(self.name, text, data)

    def usage_error(self) -> CommandError:
        """A :class:`CommandError` telling the usage of this command; ``raise`` it."""
        usage = f"/{self.name} {self.command.usage}".rstrip()
        return CommandError(f"usage: {usage}", code="bad_usage")


def _takes_one(handler: Callable[..., Any]) -> bool:
    """Whether ``handler`` can be called with one positional argument (a handler
    whose signature cannot be read, a builtin's, is given the benefit of the doubt)."""
    try:
        inspect.signature(handler).bind(None)
    except TypeError:
        return False
    except ValueError:
        return True
    return True


class CommandRegistry:
    """Commands by name. Filled once at startup and replaced whole by a reload
    (:meth:`replace`), never changed in place, so no lock."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def register_for(self, plugin: str) -> Register:
        """A ``register`` callable that records commands as coming from ``plugin``."""

        def register(name: str, handler: Handler, *, help: str, usage: str = "") -> None:
            key = name.lower().lstrip("/")
            if not key or not key.isidentifier():
                raise UsageError(
                    f"plugin {plugin!r} registered a bad command name {name!r}: a name is "
                    "letters, digits and '_', not starting with a digit (a '/' before it is "
                    "left out)"
                )
            if not callable(handler) or not _takes_one(handler):
                raise UsageError(
                    f"plugin {plugin!r} registered /{key} with a handler that does not take "
                    f"one argument (the CommandContext): {handler!r}"
                )
            if key in self._commands:
                other = self._commands[key].plugin
                raise UsageError(
                    f"command /{key} is registered by both plugin {other!r} and plugin "
                    f"{plugin!r}; disable one of them"
                )
            self._commands[key] = Command(key, handler, help, usage, plugin)

        return register

    def replace(self, other: CommandRegistry) -> None:
        """Take ``other``'s commands (a reload): one assignment, atomic for readers."""
        self._commands = other._commands

    def get(self, name: str) -> Command | None:
        """The command called ``name`` (any case), or ``None``."""
        return self._commands.get(name.lower())

    def all(self) -> list[Command]:
        """Every command, sorted by name."""
        return sorted(self._commands.values(), key=lambda c: c.name)

    def dispatch(self, ctx: CommandContext) -> bool:
        """Run the command named in ``ctx``; errors go to the user, never up. Returns
        False if it was refused (the user got an ``error``).

        Sends ``unknown_command`` for a name nobody registered, the text of a
        :class:`CommandError`, or ``internal error in /NAME`` (and logs the
        traceback) for any other exception.
        """
        command = self.get(ctx.name)
        if command is None:
            ctx.client.error(
                "unknown_command", f"unknown command /{ctx.name}; type /help for the list"
            )
            return False
        ctx.command = command
        try:
            command.handler(ctx)
        except CommandError as exc:
            ctx.client.error(exc.code, exc.text, **exc.details)
            return False
        except Exception:
            log.exception("command /%s of plugin %r failed", command.name, command.plugin)
            ctx.client.error("internal_error", f"internal error in /{command.name}")
            return False
        return True


def split_command(text: str) -> tuple[str, str]:
    """Split ``/name args`` into ``("name", "args")``."""
    name, _, args = text[1:].partition(" ")
    return name.lower(), args.strip()
