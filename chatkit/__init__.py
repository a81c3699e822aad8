"""chatkit: a plugin-extensible chat server.

Plugins import what they need from here: ``hookimpl``, the objects hooks receive
(:class:`Session`, :class:`Message`, :class:`CommandContext`), what they return
(:class:`Reject`, :class:`Drop`) and the errors they raise.
"""

from chatkit.commands import Command, CommandContext, Register
from chatkit.config import Config, Limits, load_config
from chatkit.errors import ChatkitError, CommandError, UsageError
from chatkit.events import Message
from chatkit.frames import Frame
from chatkit.hookspecs import hookimpl
from chatkit.results import Drop, Reject
from chatkit.server import Server
from chatkit.session import Session
from chatkit.version import __version__

__all__ = [
    "ChatkitError",
    "Command",
    "CommandContext",
    "CommandError",
    "Config",
    "Drop",
    "Frame",
    "Limits",
    "Message",
    "Register",
    "Reject",
    "Server",
    "Session",
    "UsageError",
    "__version__",
    "hookimpl",
    "load_config",
]
