"""Errors that chatkit raises on purpose, each saying whose mistake it was.

::

    ChatkitError
    ├── UsageError      the person running chatkit asked for something impossible
    │                   (unknown plugin, bad config); the CLI prints it without a traceback
    └── CommandError    a command handler refuses a request; its text goes to the user

Protocol errors (a client's bad bytes) live in :mod:`chatkit.protocol`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ChatkitError", "CommandError", "UsageError"]


class ChatkitError(Exception):
    """Base class of every error chatkit raises on purpose."""


class UsageError(ChatkitError):
    """A mistake of whoever runs chatkit: a bad flag, config value or plugin name.

    The message names the culprit and the fix, e.g. ``Unknown plugin 'profanty'.
    Did you mean 'profanity'?``. The CLI prints it and exits with status 2.
    """


class CommandError(ChatkitError):
    """Raised by a command handler to refuse a request.

    The user who typed the command receives an ``error`` frame with :attr:`code`
    and the exception's text; nothing is logged.
    """

    def __init__(self, text: str, code: str = "command_failed", **details: Any) -> None:
        super().__init__(text)
        self.text = text
        """What the user is told."""
        self.code = code
        """The stable error code of the ``error`` frame (see docs/protocol.md)."""
        self.details = details
        """Extra fields of the ``error`` frame (e.g. ``retry_after``)."""
