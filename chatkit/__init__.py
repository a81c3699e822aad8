"""chatkit: a plugin-extensible chat server.

Plugins import what they need from here, and only from here (the builtins in
``chatkit.builtins`` too; tests/test_exports.py checks them): ``hookimpl``, the
objects hooks receive (:class:`Session`, :class:`Message`, :class:`CommandContext`,
the input events :class:`Hello`, :class:`Say` and :class:`Request`), what they
return (:class:`Reject`, :class:`Drop`, :class:`Frame`), the errors they raise, and
the types to annotate what a plugin keeps (:class:`ChatServer`, what
``chatkit_server_start`` receives, and its ``hub``, a :class:`ChatHub`), a few helpers
(:func:`message_frame`, :func:`valid_nick`, :func:`valid_room`, :func:`fold`,
:func:`skeleton`, :func:`shown_skeleton`, :func:`wildcard_match`, :func:`check_settings`,
:func:`number_setting`, :data:`MAX_ID`), and the
:class:`Client` library for plugins that speak to a server as a client would.
"""

from chatkit.addresses import address_key
from chatkit.client import Client
from chatkit.commands import ChatHub, Command, CommandContext, Register
from chatkit.config import Config, Limits, check_settings, load_config, number_setting
from chatkit.errors import ChatkitError, CommandError, UsageError
from chatkit.events import MAX_ID, Hello, Message, Request, Say
from chatkit.frames import Frame
from chatkit.hookspecs import ChatServer, hookimpl
from chatkit.hub import RemoteMember, message_frame, valid_nick
from chatkit.names import (
    SHOWN_HOST,
    fold,
    room_name,
    shown_skeleton,
    skeleton,
    valid_room,
    wildcard_match,
)
from chatkit.results import Drop, Reject, Wait
from chatkit.server import Server
from chatkit.session import Session
from chatkit.version import __version__

__all__ = [
    "MAX_ID",
    "SHOWN_HOST",
    "ChatHub",
    "ChatServer",
    "ChatkitError",
    "Client",
    "Command",
    "CommandContext",
    "CommandError",
    "Config",
    "Drop",
    "Frame",
    "Hello",
    "Limits",
    "Message",
    "Register",
    "Reject",
    "RemoteMember",
    "Request",
    "Say",
    "Server",
    "Session",
    "UsageError",
    "Wait",
    "__version__",
    "address_key",
    "check_settings",
    "fold",
    "hookimpl",
    "load_config",
    "message_frame",
    "number_setting",
    "room_name",
    "shown_skeleton",
    "skeleton",
    "valid_nick",
    "valid_room",
    "wildcard_match",
]
