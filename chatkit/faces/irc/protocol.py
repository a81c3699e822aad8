"""One IRC connection as the server sees it, sans I/O: bytes in, events out; frames in,
lines out.

This file knows no socket, no thread and no hub. :class:`IrcProtocol` splits the
client's bytes into lines (``chatkit.protocol.LineDecoder``), parses them
(``message.py``), negotiates capabilities and registration itself, and hands the
rest to its caller as events. Frames sent to this client alone pass through
:meth:`IrcProtocol.send`, which learns its state from them (the ``welcome`` means
registered, with a nick; a ``nick_taken`` error means NICK again) and may answer one
frame with several lines (a JOIN with its names list, a MOTD). Fanned-out frames never
pass here: they are rendered once per codec by ``render.py``.

Registration, as the modern IRC client protocol has it::

    [CAP LS 302] [CAP REQ :caps]... [PASS pw] NICK n / USER u 0 * :real (either order)
    [AUTHENTICATE PLAIN, AUTHENTICATE base64 -> Authenticate event -> 900 903 / 904]
    [CAP END]  -> Register event  -> welcome (001-005, MOTD or 422)
                                  -> 433/432 (nick refused): NICK again

SASL (IRCv3 ``sasl`` 3.1, mechanism ``PLAIN`` only) is offered when the caller says
accounts exist (``sasl=True``); the caller checks the password and answers with
:meth:`IrcProtocol.sasl_result`.

``PING``, ``PONG``, ``CAP`` and ``QUIT`` work in any state; other commands before
registration get ``451``. Bad lines (too long, no command) get their numeric and
the connection goes on.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatkit.codecs import render_text
from chatkit.faces.irc import numerics as n
from chatkit.faces.irc.message import (
    MAX_LINE_BYTES,
    MAX_TAG_BYTES,
    IrcError,
    Message,
    parse,
)
from chatkit.faces.irc.render import (
    BYTE_CAPS,
    MULTILINE,
    Style,
    encode_lines,
    notices,
    render,
    source,
    split_text,
)
from chatkit.frames import Frame
from chatkit.names import fold
from chatkit.protocol import LineDecoder, LineTooLong

log = logging.getLogger(__name__)

__all__ = [
    "CAPABILITIES",
    "CHATHISTORY_CAP",
    "CLOSING_CODES",
    "Authenticate",
    "Closed",
    "Command",
    "IrcProtocol",
    "Register",
    "names_lines",
]

CAPABILITIES = (
    "away-notify",
    "batch",
    "echo-message",
    "message-tags",
    "multi-prefix",
    "server-time",
    "userhost-in-names",
)
"""The IRCv3 capabilities this server always offers (``CAP LS``). ``multi-prefix``
changes nothing: a member has one prefix at most (``@``)."""
CHATHISTORY_CAP = "draft/chathistory"
"""Offered besides :data:`CAPABILITIES` when the history plugin is on."""
SASL_CHUNK = 400  # bytes of one AUTHENTICATE payload line (IRCv3 sasl-3.1)
MAX_SASL_BYTES = 1200  # bytes of a whole PLAIN payload: names and a password fit thrice
CLOSING_CODES = frozenset({"login_timeout", "server_full", "too_many_connections", "server_busy"})
"""Error codes the server sends just before it closes a connection: ``ERROR`` lines."""
_SASL_NUMERICS = frozenset(("900", "901", "902", "903", "904", "905", "906", "907", "908"))
MAX_INPUT_BYTES = MAX_TAG_BYTES + MAX_LINE_BYTES  # bytes of one line from a client, tags
# included (IRCv3 message-tags: 8191 for tags, 512 for the rest); longer ones get 417.
ISUPPORT_PER_LINE = 13  # tokens in one 005 line (the modern IRC docs' advice)
MAX_NAMES_LINE = MAX_LINE_BYTES - 2  # bytes of a 353 line before the next one starts


# ---------------------------------------------------------------------------
# Events (what the caller must act on)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Register:
    """NICK and USER are in (and CAP negotiation over): log the client in as :attr:`nick`.

    The caller answers with a ``welcome`` (then the protocol is registered) or an
    ``error`` frame (``nick_taken``, ``bad_nick``: the client may send NICK again).
    """

    nick: str
    user: str
    realname: str
    password: str | None
    """The PASS the client sent, if any."""


@dataclass(frozen=True)
class Authenticate:
    """SASL ``PLAIN`` credentials: check them, then call :meth:`IrcProtocol.sasl_result`.

    ``repr`` leaves the password out, so the event may be logged."""

    account: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Command:
    """A command for the chat (JOIN, PRIVMSG, WHO, QUIT ...): the caller's to act on."""

    message: Message


@dataclass(frozen=True)
class Closed:
    """The client closed its side; no event follows."""


Event = Register | Authenticate | Command | Closed


class IrcProtocol:
    """The state of one IRC connection (see the module doc).

    Receiving (the reader thread): :meth:`receive_data` / :meth:`receive_eof`, then
    :meth:`next_event` until ``None``; after each call, send :meth:`replies`.
    Sending (any thread, one at a time: the caller serializes): :meth:`send`.
    """

    def __init__(
        self,
        server: str,
        network: str,
        isupport: list[str],
        *,
        client_host: str = "unknown",
        version: str = "",
        created: str = "",
        capabilities: tuple[str, ...] = CAPABILITIES,
    ) -> None:
        self.server = server
        """The server's name: the source of numerics."""
        self.network = network
        """The network's name (``001``, ``NETWORK=``)."""
        self.isupport = isupport
        """The ``005`` tokens."""
        self.client_host = client_host
        """The client's address, for ``ERROR :Closing Link``."""
        self.version = version
        """The server's version, for ``002``/``004``/``351``."""
        self.created = created
        """When the server started, for ``003``."""
        self.capabilities = capabilities
        """The capabilities offered (``CAP LS``)."""
        self.nick_problem: Callable[[str], str | None] | None = None
        """What is wrong with a nick, if anything (the server's rules): a bad ``NICK``
        before registration is ``432`` at once, not once ``USER`` came too."""
        self.max_line = MAX_LINE_BYTES
        """The longest line taken once registered, in bytes, its tags left out (with
        CR-LF: IRC's 512; the server's ``max_line`` if smaller); a longer one is ``417``."""
        self.caps: set[str] = set()
        """The capabilities the client negotiated (``CAP REQ``)."""
        self._style: Style | None = None  # style's answer, until CAP REQ changes caps
        self.account: str | None = None
        """The account SASL logged the client in to, if any."""
        self._sasl: bytes | None = None  # the PLAIN payload so far, while authenticating
        self.nick = "*"
        """The client's nick as the chat knows it (``*`` until the ``welcome``)."""
        self.registered = False
        """True once the ``welcome`` was sent."""
        self._decoder = LineDecoder(MAX_INPUT_BYTES)
        self._eof = False
        self._closed = False
        self._replies: list[Message] = []
        self.free_lines = 0
        """Lines :meth:`next_event` handled by itself (PING, PONG, CAP, registration
        steps, bad lines) since the face last took the count: no plugin sees them, so
        the face counts them (``Hub.free_line``) and sets this back to 0."""
        # Registration, receiving side.
        self._negotiating = False  # CAP LS or REQ seen, no CAP END yet: registration waits
        self._wanted_nick: str | None = None
        self._user: tuple[str, str] | None = None  # (user, realname)
        self._password: str | None = None
        self._registering = False  # Register returned; waiting for welcome or refusal
        # Sending side (the caller serializes send()).
        self._motd: str | None = None  # None, "pending" (after welcome) or "open" (375 sent)
        self._batch: str | None = None  # the reference of the replay batch open, if any
        self._batch_ids = itertools.count(1)
        self._asked: str | None = None  # the target of a CHATHISTORY being answered
        # A replay under way to a client without batch: its opening NOTICE is sent
        # (with the first replayed message), until its history frame ends it.
        self._replay_open = False
        self.said_goodbye = False
        """True once an ``ERROR :Closing Link`` was rendered (the server closes next)."""

    # -- receiving data ----------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client; after calling this you must drain :meth:`next_event`."""
        self._decoder.feed(data)

    def receive_eof(self) -> None:
        """The client closed its side; after this :meth:`next_event` ends with
        :class:`Closed`, after a last line without its CR-LF (acted on, as the line
        face does). Idempotent."""
        if not self._eof:
            self._decoder.finish()
        self._eof = True

    def next_event(self) -> Event | None:
        """The next event to act on, or ``None`` when more data is needed.

        Handles by itself what needs no chat (CAP, PING, PONG, registration steps,
        bad lines) and queues its answers: after calling this, whatever it returns,
        you must send :meth:`replies` before acting on the event.
        """
        while True:
            line = self._decoder.next_line()
            if line is None:
                if self._eof and not self._closed:
                    self._closed = True
                    return Closed()
                return None
            self.free_lines += 1  # (until it turns out to be an event for the chat)
            if isinstance(line, LineTooLong) or (
                # (Registration's lines are IRC's own: a small max_line holds for chat.)
                self.max_line < MAX_LINE_BYTES
                and self.registered
                and _untagged(line) > self.max_line
            ):
                self._numeric(n.ERR_INPUTTOOLONG, "Input line was too long")
                self._end_sasl_too_long()
                continue
            try:
                text, mended = line.decode("utf-8"), False
            except UnicodeDecodeError:  # UTF8ONLY: relay no invalid UTF-8, say it was mended
                text, mended = line.decode("utf-8", "replace"), True
            try:
                message = parse(text.removesuffix("\r"))
            except IrcError as exc:
                if exc.numeric == n.ERR_UNKNOWNCOMMAND:
                    self._numeric(exc.numeric, exc.command, exc.text)
                else:
                    self._numeric(exc.numeric, exc.text)
                if exc.numeric == n.ERR_INPUTTOOLONG:
                    self._end_sasl_too_long()
                continue
            if message is None:
                continue
            if mended:
                why = "Your message was not correctly encoded as UTF-8 and had to be modified"
                warn = Message("WARN", (message.command, "INVALID_UTF8", why), self.server)
                self._replies.append(warn)
            event = self._handle(message)
            if event is not None:
                self.free_lines -= 1
                return event

    def next_messages(self, limit: int = 64) -> list[tuple[str, str]]:
        """Take the plain room messages at the head of the received lines, at most
        ``limit``: a fast path for the hot one, a burst of chat lines.

        Once registered, each line ``PRIVMSG #room :text`` (no tags, no source, one
        target, text that needs no cleaning: printable, so neither CTCP nor
        formatting codes, and not blank) is taken as ``(#room, text)``: what
        :meth:`next_event` would have returned as a :class:`Command` whose PRIVMSG
        the face sends as ``Say(text, room)``. The first line that is anything else
        stops it, and stays for :meth:`next_event`.
        """
        if not self.registered:
            return []
        pending = self._decoder.lines
        taken: list[tuple[str, str]] = []
        for line in pending:
            # Anything that may differ goes the general way: a marker for a line too
            # long, tags, a source, leading spaces, lower-case commands, several
            # targets, a line over 512 bytes (417), bytes that are not UTF-8.
            if len(taken) == limit or type(line) is not bytes or not line.startswith(b"PRIVMSG #"):
                break
            if len(line.removesuffix(b"\r")) + 2 > self.max_line:
                break
            try:
                text = line.decode("utf-8").removesuffix("\r")
            except UnicodeDecodeError:
                break
            head, _, said = text.partition(" :")
            target = head[8:]
            if " " in target or "," in target or not said.isprintable():
                break  # (not printable: CTCP, formatting codes, control characters)
            if not said or said.isspace():
                break
            taken.append((target, said))
        if taken:
            del pending[: len(taken)]
        return taken

    def replies(self) -> list[Message]:
        """What the protocol answered by itself since the last call, in order; send it
        (``Frame("irc", messages=...)``) before acting on the event just returned."""
        replies, self._replies = self._replies, []
        return replies

    @property
    def style(self) -> Style:
        """What this client's fan-out bytes depend on: the key of its codec (the same
        object until ``CAP REQ`` changes :attr:`caps`: the face asks after every line)."""
        if self._style is None:
            caps = self.caps & BYTE_CAPS
            if "batch" not in self.caps:
                caps.discard(MULTILINE)
            self._style = Style(self.server, frozenset(caps))
        return self._style

    def _handle(self, message: Message) -> Event | None:
        command, params = message.command, message.params
        if command == "CAP":
            self._cap(params)
            return self._ready()
        if command == "PING":
            if not params:  # modern IRC: the token is required (an empty one is a token)
                self._numeric(n.ERR_NEEDMOREPARAMS, "PING", "Not enough parameters")
                return None
            self._replies.append(Message("PONG", (self.server, params[0]), self.server))
            return None
        if command == "PONG":
            return None  # the server noted that the client is alive
        if command == "QUIT":
            return Command(message)
        if self.registered:
            if command in ("USER", "PASS"):
                self._numeric(n.ERR_ALREADYREGISTERED, "You may not reregister")
                return None
            return Command(message)
        if command == "NICK":
            if not params or not params[0]:
                self._numeric(n.ERR_NONICKNAMEGIVEN, "No nickname given")
                return None
            problem = self.nick_problem(params[0]) if self.nick_problem else None
            if problem is not None:
                self._numeric(n.ERR_ERRONEUSNICKNAME, params[0], problem)
                return None
            self._wanted_nick = params[0]
            return self._ready()
        if command == "USER":
            if len(params) < 4:
                self._numeric(n.ERR_NEEDMOREPARAMS, "USER", "Not enough parameters")
                return None
            self._user = (params[0], params[3])
            return self._ready()
        if command == "AUTHENTICATE":
            return self._authenticate(params)
        if command == "PASS":
            if not params:
                self._numeric(n.ERR_NEEDMOREPARAMS, "PASS", "Not enough parameters")
                return None
            self._password = params[0]
            return None
        self._numeric(n.ERR_NOTREGISTERED, "You have not registered")
        return None

    def _ready(self) -> Register | None:
        """A Register event if registration may proceed now."""
        if (
            self.registered
            or self._registering
            or self._negotiating
            or self._wanted_nick is None
            or self._user is None
        ):
            return None
        self._registering = True
        if self._sasl is not None:
            # An AUTHENTICATE exchange left unfinished: registration does not wait for
            # it (IRCv3 SASL 3.1: abort, 906); the client is registered unidentified.
            self._sasl = None
            self._numeric(n.ERR_SASLABORTED, "SASL authentication aborted")
        user, realname = self._user
        return Register(self._wanted_nick, user, realname, self._password)

    def _cap(self, params: tuple[str, ...]) -> None:
        sub = params[0].upper() if params else ""
        if sub == "LS":
            if not self.registered:
                self._negotiating = True
            offered = self.capabilities
            if not (len(params) > 1 and params[1].isdecimal() and int(params[1]) >= 302):
                offered = tuple(cap.split("=", 1)[0] for cap in offered)  # values: 302 on
            self._replies.append(self._cap_line("LS", " ".join(offered)))
        elif sub == "LIST":
            self._replies.append(self._cap_line("LIST", " ".join(sorted(self.caps))))
        elif sub == "REQ":
            if not self.registered:
                self._negotiating = True
            wanted = params[1].split() if len(params) > 1 else []
            names = [cap.removeprefix("-") for cap in wanted]
            known = {cap.split("=", 1)[0] for cap in self.capabilities}
            if wanted and all(name in known for name in names):
                for cap in wanted:
                    if cap.startswith("-"):
                        self.caps.discard(cap[1:])
                    else:
                        self.caps.add(cap)
                self._style = None
                self._replies.append(self._cap_line("ACK", " ".join(wanted)))
            else:
                self._replies.append(self._cap_line("NAK", " ".join(wanted)))
        elif sub == "END":
            self._negotiating = False
        else:
            self._numeric(n.ERR_INVALIDCAPCMD, sub or "*", "Invalid CAP command")

    def _end_sasl_too_long(self) -> None:
        """After a ``417``: an ``AUTHENTICATE`` exchange under way ends (``905``), else
        the client's next try (``AUTHENTICATE PLAIN``) would be read as its payload."""
        if self._sasl is not None:
            self._sasl = None
            self._numeric(n.ERR_SASLTOOLONG, "SASL message too long")

    def _authenticate(self, params: tuple[str, ...]) -> Authenticate | None:
        """One ``AUTHENTICATE`` line (before registration): an event once the payload
        is complete."""
        arg = params[0] if params else ""
        if "sasl" not in self.caps:
            self._numeric(n.ERR_SASLFAIL, "SASL authentication failed: CAP REQ sasl first")
            return None
        if self.account is not None:
            self._numeric(n.ERR_SASLALREADY, "You have already authenticated using SASL")
            return None
        if arg == "*":
            self._sasl = None
            self._numeric(n.ERR_SASLABORTED, "SASL authentication aborted")
            return None
        if self._sasl is None:
            if arg.upper() != "PLAIN":
                self._numeric(n.RPL_SASLMECHS, "PLAIN", "are available SASL mechanisms")
                self._numeric(n.ERR_SASLFAIL, "SASL authentication failed")
                return None
            self._sasl = b""
            self._replies.append(Message("AUTHENTICATE", ("+",)))
            return None
        if arg != "+":
            self._sasl += arg.encode("ascii", "replace")
        if len(self._sasl) > MAX_SASL_BYTES or len(arg) > SASL_CHUNK:
            self._sasl = None
            self._numeric(n.ERR_SASLTOOLONG, "SASL message too long")
            return None
        if len(arg) == SASL_CHUNK:
            return None  # more follows
        payload, self._sasl = self._sasl, None
        try:
            _, account, password = (
                base64.b64decode(payload, validate=True).decode("utf-8").split("\0")
            )
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self._numeric(n.ERR_SASLFAIL, "SASL authentication failed: bad PLAIN payload")
            return None
        return Authenticate(account, password)

    def sasl_result(self, account: str | None, text: str = "") -> None:
        """Answer an :class:`Authenticate` event: ``account`` if the password was right,
        else ``None`` and why; after calling this you must send :meth:`replies`."""
        if account is None:
            self._numeric(n.ERR_SASLFAIL, f"SASL authentication failed: {text}".rstrip(": "))
            return
        self.account = account
        # As everyone is shown (nick!nick@chatkit): the real address is nobody's business.
        mask = source(self._wanted_nick) if self._wanted_nick else "*"
        self._numeric(n.RPL_LOGGEDIN, mask, account, f"You are now logged in as {account}")
        self._numeric(n.RPL_SASLSUCCESS, "SASL authentication successful")

    def _cap_line(self, sub: str, text: str) -> Message:
        return Message("CAP", (self.nick, sub, text), self.server)

    def _numeric(self, code: str, *params: str) -> None:
        self._replies.append(Message(code, params))

    # -- sending events ------------------------------------------------------------------

    def send(self, frame: Frame) -> bytes:
        """The bytes of ``frame`` for this client alone (possibly several lines, or none).

        Learns from what it sends: a ``welcome`` registers (and is followed by the
        MOTD: the ``notice``\\ s sent right after it, or ``422``); a ``nick`` or
        refused nick changes the nick. Callers serialize calls.
        """
        out: list[Message] = []
        if self._motd is not None and frame.type != "notice":
            out += self._end_motd()
        try:
            return encode_lines([self._complete(message) for message in out + self._lines(frame)])
        except Exception:  # a plugin's frame with fields of the wrong types
            log.warning("cannot render %r for IRC; sent as text", frame, exc_info=True)
            out += notices(self.server, self.nick, render_text(frame))
            return encode_lines([self._complete(message) for message in out])

    def _complete(self, message: Message) -> Message:
        """A message of the protocol's own as it goes out: from the server, and a
        numeric addressed to the client's nick."""
        if message.source is not None:
            return message
        params = message.params
        if len(message.command) == 3 and message.command.isdigit():
            target = self.nick
            if target == "*" and self._wanted_nick and message.command in _SASL_NUMERICS:
                # (SASL's answers to the nick the client gave, as networks address them:
                # irssi showed "* irene You are now logged in"; other numerics say * until
                # the nick is the client's, as a 433 must.)
                target = self._wanted_nick
            params = (target, *params)
        return Message(message.command, params, self.server, message.tags)

    def _lines(self, frame: Frame) -> list[Message]:
        fields: dict[str, Any] = frame.fields
        kind = frame.type
        try:
            if kind == "irc":
                return list(fields["messages"])
            if kind == "welcome":
                # 251-266 (LUSERS), if the face gave them: after 005, before the MOTD.
                return self._welcome(str(fields["nick"])) + list(fields.get("irc_lusers", ()))
            if kind == "join" and "members" in fields:
                return self._own_join(fields)
            if kind == "nick":
                self.nick = str(fields["new"])
                return render(frame, self.style)
            if kind == "notice" and fields.get("invite") and fields.get("by"):
                invite = (self.nick, str(fields["invite"]))
                return [Message("INVITE", invite, source(str(fields["by"])))]
            if kind == "notice" and fields.get("mode") and fields.get("room"):
                # A mode for this client alone (made an operator, as the room's first
                # member): the MODE from the server says it, as on other IRC servers,
                # without the notice the other faces show.
                return render(frame, self.style, self.nick)
            if kind == "notice":
                return self._notice(str(fields["text"]))
            if kind == "error":
                return self._error(fields)
            if kind == "reply":
                if fields.get("command") == "motd":
                    return self._motd_lines(str(fields["text"]))
                data = fields.get("data")
                if (
                    fields.get("command") == "invite"
                    and isinstance(data, dict)
                    and data.get("nick")
                    and data.get("room")
                ):
                    return [Message(n.RPL_INVITING, (str(data["nick"]), str(data["room"])))]
                return notices(self.server, self.nick, str(fields["text"]))
            if kind == "irc_close":
                return [self._closing(str(fields["text"]))]
            if kind in ("message", "private") and fields.get("history"):
                if "batch" in self.caps:
                    return self._replayed(frame)
                if not self._replay_open:
                    # Said before the replay as well as after it: a client that takes
                    # server-time but does not show it (irssi's default) shows
                    # replayed lines at the time they arrive, as if said now.
                    self._replay_open = True
                    where = str(fields.get("room") or self.nick)
                    opening = notices(self.server, where, "*** earlier messages, replayed:")
                    return [*opening, *render(frame, self.style, self.nick)]
            if kind == "history":
                self._replay_open = False
                return self._history_end(frame)
        except (KeyError, TypeError, ValueError):
            return notices(self.server, self.nick, render_text(frame))
        return render(frame, self.style, self.nick)

    def _welcome(self, nick: str) -> list[Message]:
        self.nick = nick
        self.registered = True
        self._registering = False
        self._motd = "pending"
        lines = [
            Message(n.RPL_WELCOME, (f"Welcome to the {self.network} IRC network, {nick}",)),
            Message(
                n.RPL_YOURHOST, (f"Your host is {self.server}, running version {self.version}",)
            ),
            Message(n.RPL_CREATED, (f"This server was created {self.created}",)),
            Message(n.RPL_MYINFO, (self.server, self.version, "io", *self._chanmodes())),
        ]
        return lines + self.isupport_lines()

    def isupport_lines(self) -> list[Message]:
        """The ``005`` lines (after ``004`` at registration, and after ``351``)."""
        return [
            Message(
                n.RPL_ISUPPORT,
                (*self.isupport[start : start + ISUPPORT_PER_LINE], "are supported by this server"),
            )
            for start in range(0, len(self.isupport), ISUPPORT_PER_LINE)
        ]

    def _chanmodes(self) -> tuple[str, ...]:
        """``004``'s channel modes (and those with a parameter), from ISUPPORT CHANMODES."""
        token = next((t for t in self.isupport if t.startswith("CHANMODES=")), "CHANMODES=,,,nt")
        lists, *_, flags = token[len("CHANMODES=") :].split(",")
        if not lists:
            return ("".join(sorted(flags)),)
        with_param = "".join(sorted(lists + "o"))
        return ("".join(sorted(lists + flags + "o")), with_param)

    def _notice(self, text: str) -> list[Message]:
        if self._motd == "pending":
            self._motd = "open"
            return [
                Message(n.RPL_MOTDSTART, (f"- {self.server} Message of the day -",)),
                *self._motd_body(text),
            ]
        if self._motd == "open":
            return self._motd_body(text)
        return notices(self.server, self.nick, text)

    def _motd_body(self, text: str) -> list[Message]:
        budget = MAX_LINE_BYTES - 80  # room for the server's name and the nick
        return [Message(n.RPL_MOTD, (f"- {piece}",)) for piece in _pieces(text, budget)]

    def _motd_lines(self, text: str) -> list[Message]:
        return [
            Message(n.RPL_MOTDSTART, (f"- {self.server} Message of the day -",)),
            *self._motd_body(text),
            Message(n.RPL_ENDOFMOTD, ("End of /MOTD command.",)),
        ]

    def _end_motd(self) -> list[Message]:
        state, self._motd = self._motd, None
        if state == "open":
            return [Message(n.RPL_ENDOFMOTD, ("End of /MOTD command.",))]
        return [Message(n.ERR_NOMOTD, ("MOTD File is missing",))]

    def _own_join(self, fields: dict[str, Any]) -> list[Message]:
        room = str(fields["room"])
        params: tuple[str, ...] = (room,)
        if "extended-join" in self.caps:
            realname = self._user[1] if self._user else self.nick
            params += (str(fields.get("account") or "*"), realname)
        # Tagged as the JOIN the others get (server-time, account-tag): one join.
        tags = render(Frame("join", **fields), self.style)[0].tags
        lines = [Message("JOIN", params, source(self.nick), tags)]
        lines += fields.get("irc_topic", ())  # 332 and 333, if the room has a topic (the face's)
        members = [str(m) for m in fields["members"]]
        hosts = "userhost-in-names" in self.caps
        lines += names_lines(self.server, self.nick, room, members, hosts=hosts)
        return lines

    def _error(self, fields: dict[str, Any]) -> list[Message]:
        code, text = str(fields.get("code")), str(fields.get("text", ""))
        command = fields.get("irc_command")
        target = fields.get("target")
        if code in CLOSING_CODES:
            return [self._closing(text)]
        if not self.registered:
            self._registering = False  # login refused: the client may send NICK again
            self._wanted_nick = None
        if command is None and code == "not_stored":
            # A message refused on its turn in its lane: the frame names its room, and
            # whether it was a NOTICE (answered with nothing, as any NOTICE's failure).
            if fields.get("notice"):
                return []
            if isinstance(fields.get("room"), str):
                command, target = "PRIVMSG", fields["room"]
        if command == "NOTICE":
            return []  # never an automatic reply to a NOTICE
        if (
            command == "PRIVMSG"
            and isinstance(target, str)
            and target.startswith("#")
            and code
            in (
                "not_in_room",
                "no_such_room",
                "dropped",
                "not_stored",
                "bad_text",
                "muted",
                "banned",
                "moderated",
                "room_locked",
            )
        ):
            return [Message(n.ERR_CANNOTSENDTOCHAN, (target, text))]
        if command == "NICK" and code in ("banned", "muted") and isinstance(target, str):
            # <new nick> <room> :why (solanum, Hybrid)
            room = fields.get("room")
            params = (target, str(room), text) if room else (target, text)
            return [Message(n.ERR_BANNICKCHANGE, params)]
        if code == "not_in_room" and fields.get("nick") and isinstance(target, str) and target:
            # Someone else is not in the room (KICK): 441, not 442.
            nick = str(fields["nick"])
            return [Message(n.ERR_USERNOTINCHANNEL, (nick, target, text))]
        if code == "already_in_room" and fields.get("nick") and isinstance(target, str):
            return [Message(n.ERR_USERONCHANNEL, (str(fields["nick"]), target, text))]
        numeric = n.ERROR_CODES.get(code)
        if numeric in (n.RPL_TRYAGAIN, n.ERR_UNKNOWNCOMMAND) and command:
            return [Message(numeric, (str(command), text))]
        if numeric == n.ERR_NEEDMOREPARAMS:
            return [Message(numeric, (str(command or "*"), text))]
        if numeric in (n.ERR_NOTREGISTERED, n.ERR_NOPRIVILEGES):
            return [Message(numeric, (text,))]
        if numeric is not None and isinstance(target, str) and target:
            return [Message(numeric, (target, text))]
        return notices(self.server, self.nick, f"error [{code}]: {text}")

    def _closing(self, text: str) -> Message:
        self.said_goodbye = True
        return Message("ERROR", (f"Closing Link: {self.client_host} ({text})",))

    def _replayed(self, frame: Frame) -> list[Message]:
        fields = frame.fields
        lines: list[Message] = []
        if self._batch is None:
            self._batch = f"h{next(self._batch_ids)}"
            if "room" in fields:
                target = str(fields["room"])
            elif self._asked is not None:
                target = self._asked  # the conversation asked for, as the client wrote it
            elif "with" in fields:
                target = str(fields["with"])  # (a page's: either side may be an old nick)
            else:
                mine = fold(str(fields["from"])) == fold(self.nick or "")  # (any case)
                target = str(fields["to"] if mine else fields["from"])
            lines.append(Message("BATCH", (f"+{self._batch}", "chathistory", target)))
        return lines + render(frame, self.style, self.nick, {"batch": self._batch})

    def expect_history(self, target: str | None) -> None:
        """A ``CHATHISTORY`` for ``target`` is being answered: its reply is a batch, even
        an empty one (and never a NOTICE); ``None``: no more. Callers serialize this
        with :meth:`send`."""
        self._asked = target

    def _history_end(self, frame: Frame) -> list[Message]:
        asked, self._asked = self._asked, None
        if self._batch is not None:
            ref, self._batch = self._batch, None
            return [Message("BATCH", (f"-{ref}",))]
        if asked is not None:
            if "batch" not in self.caps:
                return []
            ref = f"h{next(self._batch_ids)}"
            return [
                Message("BATCH", (f"+{ref}", "chathistory", asked)),
                Message("BATCH", (f"-{ref}",)),
            ]
        where = frame.fields.get("room") or self.nick
        return notices(self.server, str(where), render_text(frame))


def names_lines(
    server: str, nick: str, room: str, members: list[str], *, hosts: bool = False
) -> list[Message]:
    """``353`` lines listing ``members`` of ``room`` (as many as fit), then ``366``;
    with ``hosts`` (``userhost-in-names``), each as ``nick!user@host``."""
    head = len(f":{server} {n.RPL_NAMREPLY} {nick} = {room} :".encode())
    lines: list[Message] = []
    batch: list[str] = []
    size = head
    for member in members:
        if hosts:  # "@alice" -> "@alice!alice@chatkit" (a nick has no "@" or "+")
            bare = member.lstrip("@+")
            member = member[: len(member) - len(bare)] + source(bare)
        cost = len(member.encode()) + 1
        if batch and size + cost > MAX_NAMES_LINE:
            lines.append(Message(n.RPL_NAMREPLY, ("=", room, " ".join(batch))))
            batch, size = [], head
        batch.append(member)
        size += cost
    if batch:
        lines.append(Message(n.RPL_NAMREPLY, ("=", room, " ".join(batch))))
    lines.append(Message(n.RPL_ENDOFNAMES, (room, "End of /NAMES list.")))
    return lines


def _pieces(text: str, budget: int) -> list[str]:
    return split_text(text, budget) or [""]


def _untagged(line: bytes) -> int:
    """The length of ``line`` (a line as read, without its LF) past its tags, with CR-LF."""
    start = line.find(b" ") + 1 if line.startswith(b"@") else 0
    return len(line) - start + (1 if line.endswith(b"\r") else 2)
