"""IRC messages, sans I/O: one line of text to a :class:`Message` and back.

This file knows no socket, no connection state and no chat. The grammar is the one
of the modern IRC client protocol (RFC 1459 and 2812 as clients and servers speak
them today) with IRCv3 message tags::

    message  = ["@" tags SPACE] [":" source SPACE] command *(SPACE middle) [SPACE ":" trailing]
    tags     = tag *(";" tag)          tag = key ["=" escaped value]
    key      = ["+"] [vendor "/"] name (letters, digits, "-")

Limits (named below): the part after the tags is at most 512 bytes with its CR-LF;
the tag section at most 8191 bytes with its "@" and space.

Errors::

    IrcError            a line this module cannot accept; carries the numeric to
                        answer with (417: too long, 421 for an empty command) and
                        the line is discarded: the connection goes on
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "MAX_CLIENT_TAG_BYTES",
    "MAX_LINE_BYTES",
    "MAX_PARAMS",
    "MAX_TAG_BYTES",
    "IrcError",
    "Message",
    "escape_tag",
    "parse",
    "unescape_tag",
]

MAX_LINE_BYTES = 512  # bytes of a message after its tags, CR-LF included (RFC 1459 2.3)
MAX_TAG_BYTES = 8191  # bytes of the tag section, "@" and the space after it included (IRCv3):
# a client's tags and the server's together
MAX_CLIENT_TAG_BYTES = 4094  # bytes of the tag data a client may send, "@" and the space after
# it not counted (IRCv3 message-tags, "Size limit"; the server may add as many again)
MAX_PARAMS = 15  # parameters of one message (RFC 1459 2.3: 14 middle and a trailing)

_ESCAPES = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}
_ESCAPE_TABLE = str.maketrans(_ESCAPES)
_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_UNESCAPE_RE = re.compile(r"\\(.?)", re.S)
_KEY = re.compile(r"\+?(?:[A-Za-z0-9.\-]+/)?[A-Za-z0-9\-]+")
_COMMAND = re.compile(r"[A-Za-z]+|[0-9]{3}")


class IrcError(Exception):
    """A line that is not an IRC message this server accepts.

    :attr:`numeric` is the reply to send (``417`` input too long, ``421`` unknown
    or missing command); the line is gone and the connection may go on.
    """

    def __init__(self, numeric: str, text: str, command: str = "*") -> None:
        super().__init__(text)
        self.numeric = numeric
        """The numeric reply to answer with."""
        self.text = text
        """Human explanation, for the reply's trailing parameter."""
        self.command = command
        """The command concerned (``*`` when unknown), the reply's first parameter."""


@dataclass(frozen=True)
class Message:
    """One IRC message: tags, source (prefix), command and parameters.

    :attr:`command` is upper case (numerics are three digits). :attr:`params` are
    the parameters in order, the trailing one last (without its ``:``).
    """

    command: str
    params: tuple[str, ...] = ()
    source: str | None = None
    """The ``nick!user@host`` or server name the message comes from; ``None`` from clients."""
    tags: dict[str, str] = field(default_factory=dict)
    """IRCv3 tags, values unescaped (``""`` for a tag without a value)."""

    def line(self, trailing: bool = False) -> str:
        """The message as one line, without CR-LF. The last parameter is sent as a
        trailing one (``:text``) when it must be (empty, a space, a leading ``:``),
        or always with ``trailing`` (text, by convention). Every other one must be a
        middle one; one that cannot be (empty, a space, a leading ``:``: a name a client
        sent, echoed in a reply) is sent as ``*``, so that no client's input can make a
        reply malformed or add parameters to it."""
        parts: list[str] = []
        if self.tags:
            parts.append(
                "@"
                + ";".join(
                    key if value == "" else f"{key}={escape_tag(value)}"
                    for key, value in self.tags.items()
                )
            )
        if self.source:
            parts.append(f":{self.source}")
        parts.append(self.command)
        if self.params:
            *middle, last = self.params
            parts.extend(
                "*" if not param or " " in param or param.startswith(":") else param
                for param in middle
            )
            if trailing or not last or " " in last or last.startswith(":"):
                parts.append(f":{last}")
            else:
                parts.append(last)
        return " ".join(parts)


def escape_tag(value: str) -> str:
    """A tag value as it is written on the wire (``;``, space, ``\\``, CR, LF escaped)."""
    return value.translate(_ESCAPE_TABLE)  # (in C: a client's tags may hold 4 KB)


def unescape_tag(value: str) -> str:
    """A tag value as the wire has it, unescaped; an unknown escape ``\\x`` is ``x``
    and a lone trailing ``\\`` is dropped (IRCv3 message-tags)."""
    if "\\" not in value:
        return value
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), value)


def parse(line: str) -> Message | None:
    """Parse one line (without its CR-LF); ``None`` for a line of only spaces.

    Raises :class:`IrcError` for a line over the limits or without a command. Sizes
    are counted in UTF-8 bytes.
    """
    rest = line.lstrip(" ")
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        section, _, rest = rest.partition(" ")
        if len(section.encode()) - 1 > MAX_CLIENT_TAG_BYTES:
            raise IrcError("417", "Input line was too long (tags)")
        for item in section[1:].split(";"):
            if not item:
                continue
            key, _, value = item.partition("=")
            if _KEY.fullmatch(key):  # an ill-formed key is dropped, as unknown tags are
                tags[key] = unescape_tag(value)
        rest = rest.lstrip(" ")
    if len(rest.encode()) + 2 > MAX_LINE_BYTES:
        raise IrcError("417", "Input line was too long")
    source: str | None = None
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    if not rest:
        if tags or source is not None:
            raise IrcError("421", "No command given")
        return None
    trailing: str | None = None
    head, sep, tail = rest.partition(" :")
    if sep:
        trailing = tail
    elif rest.startswith(":"):  # a second source, or a trailing without a command
        head, trailing = "", rest[1:]
    words = [word for word in head.split(" ") if word]  # only spaces separate
    if not words:
        raise IrcError("421", "No command given")
    command, middle = words[0], words[1:]
    if not _COMMAND.fullmatch(command):
        raise IrcError("421", "Unknown command", command)
    params = [*middle, trailing] if trailing is not None else middle
    if len(params) > MAX_PARAMS:
        # RFC 1459: the 15th parameter takes the rest of the line.
        params = [*params[: MAX_PARAMS - 1], " ".join(params[MAX_PARAMS - 1 :])]
    return Message(command.upper(), tuple(params), source, tags)
