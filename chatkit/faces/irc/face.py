"""The IRC face: IRC clients (irssi, WeeChat, HexChat) in the same rooms as everyone else.

``IrcFace`` is what ``Server(faces=[LineFace(), IrcFace(port=6667)])`` listens with;
``IrcChannel`` is one connection: its :class:`~chatkit.faces.irc.protocol.IrcProtocol`
and the adapter from IRC commands to hub operations (``JOIN`` → ``hub.join``,
``PRIVMSG #room`` → ``hub.say``, ``PRIVMSG nick`` → ``hub.private``, ``NICK`` →
``hub.rename``, ``FOO args`` → the chat command ``/foo args`` if a plugin registered
one). Answers that only IRC has (``NAMES``, ``WHO``, ``LIST`` ...) are built here from
what the hub tells (``hub.who``, ``hub.rooms``, ``hub.find``) and sent as a
face-private ``irc`` frame, which only this face's protocol renders. Refusals come
back from the hub as :class:`CommandError`; they go to the client as ``error``
frames naming the IRC command and target, which the protocol turns into numerics.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import itertools
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chatkit import names
from chatkit.addresses import IPV6_PREFIX, address_key
from chatkit.errors import CommandError
from chatkit.events import MAX_ID, Hello, Request, Say
from chatkit.events import Message as ChatMessage
from chatkit.faces.irc import numerics as n
from chatkit.faces.irc.message import MAX_CLIENT_TAG_BYTES, MAX_LINE_BYTES, Message
from chatkit.faces.irc.protocol import (
    CAPABILITIES,
    CHATHISTORY_CAP,
    MAX_NAMES_LINE,
    Authenticate,
    Closed,
    Command,
    IrcProtocol,
    Register,
    names_lines,
)
from chatkit.faces.irc.render import (
    MULTILINE,
    USER_HOST,
    CodecCache,
    Style,
    encode_lines,
    notices,
    source,
)
from chatkit.frames import Frame
from chatkit.hub import RemoteMember, message_frame, valid_nick
from chatkit.names import wildcard_match
from chatkit.protocol import RemoteProtocolError, clean_text
from chatkit.version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from chatkit.faces import Link
    from chatkit.hub import Hub
    from chatkit.session import Session

__all__ = ["IrcChannel", "IrcFace", "check_password"]

log = logging.getLogger(__name__)

SERVER_NAME = "chatkit.local"  # the server's name in numerics, unless configured
NETWORK_NAME = "chatkit"  # the network's name (001, NETWORK=), unless configured
ACCOUNT_CAPS = ("account-notify", "account-tag", "extended-join")
"""Offered when a plugin keeps accounts (the builtin ``accounts``)."""
# Targets of one PRIVMSG, NOTICE or KICK, rooms of one NAMES (ISUPPORT TARGMAX); more are ignored.
MAX_TARGETS = 4
MAX_USERHOST = 5  # nicks one USERHOST answers for (RFC 2812 3.6.8)
OPER_FREE = 2  # failed OPERs in a row from an address that cost no wait (oper_free_failures)
OPER_DELAY = (
    2.0  # seconds the first wait lasts ([faces.irc] oper_delay); it doubles with each failure after
)
OPER_MAX_DELAY = 600.0  # ...up to this ([faces.irc] oper_max_delay)
OPER_FORGET = 3600.0  # seconds after its last wait ended that an address's failures are forgotten
OPER_ADDRESSES = 10_000  # addresses whose failed OPERs the face remembers at most
NICKSERV_SOURCE = "NickServ!NickServ@services"  # who answers a PRIVMSG NickServ it does not know
CTCP_OWED = 5  # CTCP replies a client may send a nick free of flood control, per query of it
CTCP_OWED_NICKS = 32  # nicks a client may owe replies to at once (the rest pay as lines)
_OWED = "irc.ctcp_owed"  # session.data: folded nick -> CTCP replies owed to it
MAX_ISON = 100  # nicks one ISON answers for (a line holds about 250 short ones)
JOINS_PER_LINE = 4  # rooms of a JOIN or PART that cost one line of the flood allowance
MAX_WHO = 100  # users one WHO of a mask lists ([faces.irc] max_who); a room's WHO lists them all
MAX_PAGE = 500  # the history plugin's max_page unless configured: CHATHISTORY's limit
LUSERS_EVERY = 1.0  # seconds a registration's LUSERS counts are kept for the next ones
MAX_MASKS = 100  # the moderation plugin's max_masks unless configured: ISUPPORT MAXLIST
MESSAGE_TAGS = "message-tags"  # the capability TAGMSG needs, sender's and recipients'
ECHO_MESSAGE = "echo-message"
CHAN_MODES = "n"  # what every chat room is, in IRC's terms: no messages from outside (and,
# without moderation, no +t: any member sets the topic)
FLAG_MODES = {"invite_only": "i", "moderated": "m", "topic_ops": "t", "locked": "M"}
"""The ``flags`` of the moderation plugin's ``modes`` frame as channel modes."""
MODE_COMMANDS = {
    "+o": "op",
    "-o": "deop",
    "+b": "ban",
    "-b": "unban",
    "+q": "mute",
    "-q": "unmute",
    "+i": "inviteonly {room} on",
    "-i": "inviteonly {room} off",
    "+m": "moderated {room} on",
    "-m": "moderated {room} off",
    "+t": "topicops {room} on",
    "-t": "topicops {room} off",
    "+M": "lock {room}",
    "-M": "unlock {room}",
}
"""A channel mode change and the moderation plugin's chat command for it (``o`` and
``b`` take an argument: ``/op #room NICK``)."""
LIST_PER_LINE = 50
"""Rooms a ``LIST`` lists for each line of the flood allowance it costs."""
WHOIS_ROOMS_PER_LINE = 10
"""Rooms of a ``WHOIS``'s user (each one's operators looked up) a line of it pays for."""
UNKNOWN_WITH_ARG = "vhaeIk"
"""Channel modes chatkit does not have that take an argument on other servers whether
set or unset (voice, half-op, admin, ban exceptions, invite exceptions, a key)."""
UNKNOWN_SET_ARG = "lfjL"
"""Those that take one when set only (a limit, a forward, join throttles, a link)."""
# mIRC formatting (bold, colours, italics, reverse, reset ...): stripped from what IRC
# users say, since the other faces' clients would show them as U+FFFD.
_FORMATTING = re.compile(
    r"\x03(?:\d{1,2}(?:,\d{1,2})?)?|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
    r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)


class IrcFace:
    """IRC (RFC 1459/2812 as clients speak it today, with IRCv3 capabilities); see docs/irc.md."""

    name = "irc"

    def __init__(
        self,
        host: str | None = None,
        port: int | None = 6667,
        *,
        server_name: str = SERVER_NAME,
        network: str = NETWORK_NAME,
        operators: dict[str, str] | None = None,
        max_who: int = MAX_WHO,
        oper_delay: float = OPER_DELAY,
        oper_free_failures: int = OPER_FREE,
        oper_max_delay: float = OPER_MAX_DELAY,
    ) -> None:
        if max_who < 1:
            raise ValueError(f"max_who must be at least 1, not {max_who}")
        for name, value in (
            ("oper_delay", oper_delay),
            ("oper_free_failures", oper_free_failures),
            ("oper_max_delay", oper_max_delay),
        ):
            if value < 0:
                raise ValueError(f"{name} must be at least 0, not {value}")
        self.host = host
        """Address to listen on; ``None``: the server's."""
        self.port = port
        """Port to listen on (0: any free one); ``None``: the server's."""
        self.server_name = server_name
        """The server's name, as IRC clients see it (the source of numerics)."""
        self.network = network
        """The network's name (``001``, ISUPPORT ``NETWORK``)."""
        self.operators = dict(operators or {})
        """``OPER`` names and their passwords (plain, or ``sha256:HEX``)."""
        self.max_who = max_who
        """The most users one ``WHO`` of a mask (``WHO a*``, ``WHO 0``) lists."""
        self.oper_delay = oper_delay
        """Seconds an address waits after its failed ``OPER`` past
        :attr:`oper_free_failures` in a row; each failure after doubles it, up to
        :attr:`oper_max_delay` (0: no wait)."""
        self.oper_free_failures = oper_free_failures
        """Failed ``OPER`` commands in a row from an address that cost no wait (typos)."""
        self.oper_max_delay = oper_max_delay
        """The longest wait after a failed ``OPER``, in seconds."""
        self.codecs = CodecCache()
        """One codec per set of byte-changing capabilities in use."""
        self.started = time.time()
        """When the face was made (``003``'s date)."""
        self.lusers: tuple[float, tuple[int, int, int]] = (float("-inf"), (0, 0, 0))
        """When the counts of ``LUSERS`` that registrations show were taken, and
        the counts (users, invisible, rooms): at most once in ``LUSERS_EVERY`` seconds,
        since counting walks every session, and a reconnect storm of thousands would
        walk them thousands of times. Replaced whole by the readers, without a lock:
        a race only counts twice."""
        # Guards _oper_failures: every IRC reader's OPER reads and writes it.
        self._oper_lock = threading.Lock()
        self._oper_failures: dict[str, tuple[int, float]] = {}
        """Per address (an IPv6 one's network): failed OPERs in a row, and when the
        next one may be tried (monotonic)."""

    def oper_wait(self, address: str, ipv6_prefix: int = IPV6_PREFIX) -> float:
        """Seconds before ``address`` (an IPv6 one's network of ``ipv6_prefix`` bits)
        may try ``OPER`` again (0: now)."""
        with self._oper_lock:
            failures = self._oper_failures.get(address_key(address, ipv6_prefix))
        return 0.0 if failures is None else max(0.0, failures[1] - time.monotonic())

    def oper_failed(
        self, address: str, succeeded: bool = False, ipv6_prefix: int = IPV6_PREFIX
    ) -> None:
        """Count a failed ``OPER`` from ``address`` (the wait doubles each time), or
        forget its failures once one succeeds."""
        key = address_key(address, ipv6_prefix)
        with self._oper_lock:
            if succeeded:
                self._oper_failures.pop(key, None)
                return
            count, until = self._oper_failures.pop(key, (0, 0.0))
            now = time.monotonic()
            if now - until > OPER_FORGET:
                count = 0  # an hour without a failure: old typos are forgotten
            count += 1
            if len(self._oper_failures) >= OPER_ADDRESSES:
                del self._oper_failures[next(iter(self._oper_failures))]  # the oldest
            over = count - self.oper_free_failures
            step = self.oper_delay * 2 ** min(over - 1, 30)
            delay = 0.0 if over <= 0 else min(step, self.oper_max_delay)
            self._oper_failures[key] = (count, now + delay)

    def __repr__(self) -> str:
        return f"IrcFace(host={self.host!r}, port={self.port!r}, server_name={self.server_name!r})"

    def early(self, frame: Frame, greeted: bool = False) -> bytes:
        """``frame`` for a connection not registered yet: ERROR for a refusal, else a NOTICE."""
        return _early(self.server_name, frame.type, str(frame.fields.get("text", "")))

    def greeting(self) -> bytes | None:
        return None  # IRC clients speak first

    def open(self, hub: Hub, session: Session, link: Link) -> IrcChannel:
        return IrcChannel(self, hub, session, link)

    def isupport(self, hub: Hub) -> list[str]:
        """The ``005`` tokens for ``hub``'s settings."""
        limits = hub.config.limits
        tokens = [
            f"AWAYLEN={limits.max_away}",
            # chatkit folds nicks with Unicode case folding: for ASCII nicks that is
            # "ascii" ([ and { differ), and clients know no better name for the rest.
            "CASEMAPPING=ascii",
            "CHANMODES=bq,,,iMmnt" if moderation_on(hub) else "CHANMODES=,,,nt",
            f"CHANLIMIT=#:{limits.max_rooms}",
            f"CHANNELLEN={limits.max_room}",
            "CHANTYPES=#",
            f"NETWORK={self.network}",
            f"NICKLEN={limits.max_nick}",
            "PREFIX=(o)@",  # operators only: there is no voice (+v)
            f"TOPICLEN={limits.max_topic}",
            "TARGMAX="
            + ",".join(f"{c}:{MAX_TARGETS}" for c in ("PRIVMSG", "NOTICE", "KICK", "NAMES"))
            + ",WHOIS:1",  # WHOIS a,b answers a only
            "UTF8ONLY",
            "WHOX",
        ]
        if moderation_on(hub):
            tokens.append(f"MAXLIST=bq:{masks_limit(hub)}")
        if history_on(hub):
            tokens.append(f"CHATHISTORY={history_limit(hub)}")
            tokens.append("MSGREFTYPES=msgid,timestamp")
        return sorted(tokens)

    def capabilities(self, hub: Hub) -> tuple[str, ...]:
        """The capabilities ``CAP LS`` offers with ``hub``'s plugins and limits."""
        limits = hub.config.limits
        multiline = f"{MULTILINE}=max-bytes={limits.max_line},max-lines={limits.max_message_lines}"
        history = (CHATHISTORY_CAP,) if history_on(hub) else ()
        # SASL is offered when a plugin keeps accounts (the builtin `accounts`).
        accounts = any(True for _ in hub.hooks.impls("chatkit_authenticate"))
        # With accounts: sasl, and who is identified as what (account-notify ...).
        # (sasl's value, shown from CAP LS 302 on, lists its mechanisms: PLAIN alone.)
        sasl = ("sasl=PLAIN", *ACCOUNT_CAPS) if accounts else ()
        return (*CAPABILITIES, *history, multiline, *sasl)


def history_on(hub: Hub) -> bool:
    """Whether the history plugin (or one like it) answers ``history`` requests."""
    return hub.commands.get("history") is not None


def moderation_on(hub: Hub) -> bool:
    """Whether the moderation plugin (or one with its commands) is on: ``MODE`` changes."""
    return hub.commands.get("op") is not None and hub.commands.get("topicops") is not None


def masks_limit(hub: Hub) -> int:
    """Bans (and mutes) a room keeps at most: the moderation plugin's ``max_masks``."""
    value = hub.config.plugin_settings("moderation").get("max_masks", MAX_MASKS)
    return value if isinstance(value, int) and value > 0 else MAX_MASKS


def history_limit(hub: Hub) -> int:
    """The most messages one ``CHATHISTORY`` returns: the history plugin's ``max_page``."""
    value = hub.config.plugin_settings("history").get("max_page", MAX_PAGE)
    return value if isinstance(value, int) and value > 0 else MAX_PAGE


def check_password(given: str, stored: str) -> bool:
    """Whether ``given`` is the password ``stored`` in the config: plain text, or
    ``sha256:`` and the hex SHA-256 of it. Compared in constant time."""
    if stored.startswith("sha256:"):
        digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).hexdigest()
        return hmac.compare_digest(digest, (stored[7:].split() or [""])[0].lower())
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), stored.encode())


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(name: str) -> str:
    """``name`` as IRC clients compare it under ``CASEMAPPING=ascii``."""
    return name.translate(_ASCII_LOWER)


def _listed(key: str, wanted: list[str]) -> bool:
    """Whether the room of (folded) ``key`` is one a ``LIST`` of ``wanted`` (folded
    names, or masks with ``*`` and ``?``) asks for."""
    return any(
        wildcard_match(mask, key) if _WILDCARDS.intersection(mask) else mask == key
        for mask in wanted
    )


def _irc_info(session: Session) -> dict[str, Any]:
    """What the IRC face keeps of ``session`` (``session.data["irc"]``: realname, modes),
    or nothing for a client of another face."""
    info = session.data.get("irc")
    return info if isinstance(info, dict) else {}


@functools.lru_cache(maxsize=256)
def _early(server: str, kind: str, text: str) -> bytes:
    # Cached: in a storm the same refusal goes to thousands of connections.
    if kind == "error":
        return encode_lines([Message("ERROR", (f"Closing Link: * ({text})",))])
    return encode_lines(notices(server, "*", text))


class IrcChannel:
    """One IRC connection: its protocol object and the adapter to the hub."""

    def __init__(self, face: IrcFace, hub: Hub, session: Session, link: Link) -> None:
        self.face = face
        self.hub = hub
        self.session = session
        session.paced = True  # a line over the flood limit waits, as IRC servers do
        self.link = link
        self.protocol = IrcProtocol(
            face.server_name,
            face.network,
            face.isupport(hub),
            client_host=link.address[0],
            version=f"chatkit-{__version__}",
            created=datetime.fromtimestamp(face.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            capabilities=face.capabilities(hub),
        )
        """The connection's sans-I/O protocol state."""
        self.protocol.max_line = min(self.protocol.max_line, hub.config.limits.max_line)
        # As the hub judges it at login: in NFKC (a decomposed é is one letter), and
        # with the max_nick of now (a reload may change it).
        self.protocol.nick_problem = lambda nick: valid_nick(
            names.normalize(nick), hub.config.limits.max_nick
        )
        # Synchronize send(): frames for this client alone come from its reader and
        # from other threads (the watchdog's ping, a plugin's notice), and the
        # protocol's sending state (nick, MOTD, open batch) changes as it renders.
        # Never held across anything but rendering.
        self._send_lock = threading.Lock()
        self._style: Style = self.protocol.style
        link.codec = face.codecs.get(self._style)  # fan-outs encode in it from the start
        self._multiline: _Multiline | None = None  # a draft/multiline batch coming in
        self._dropping: str | None = None  # a refused batch's reference: its lines are dropped
        self._target_batches = itertools.count(1)  # CHATHISTORY TARGETS batch references
        self._lusers: list[Message] = []  # LUSERS lines counted for the welcome (register)
        self._captured: list[dict[str, Any]] | None = None  # a modes request being answered
        # The reader's thread while it runs a command sent to NickServ: the command's
        # replies and refusals, which come on that thread, are NOTICEs from NickServ
        # (other threads' frames for this client are not). Written by the reader only.
        self._services: int | None = None
        # Room to its operators (folded), asked before each join: the rooms it is in.
        self._ops: dict[str, set[str]] = {}
        self.modes: set[str] = set()
        """The client's user modes (only ``i``, which changes nothing here)."""
        # caps: the protocol's live set, for other IRC sessions to see who takes TAGMSG.
        session.data["irc"] = {"realname": "", "caps": self.protocol.caps}

    # -- the Channel interface -----------------------------------------------------------

    def encode(self, frame: Frame) -> bytes:
        with self._send_lock:
            if frame.type in ("reply", "error") and self._services == threading.get_ident():
                frame = Frame("irc", messages=self._from_nickserv(str(frame.fields["text"])))
            elif frame.type == "modes" and self._captured is not None:
                # The moderation plugin's answer to the face's own request (_modes).
                self._captured.append(dict(frame.fields))
                return b""
            if frame.type == "join" and "members" in frame.fields:
                frame = self._prefixed(frame)
                # The client's own join: the room's topic, if set, goes between the
                # JOIN and the names list (JOIN, 332, 333, 353, 366: RFC 2812 3.2.1,
                # and the modern docs' JOIN, which clients may rely on).
                topic = self.hub.topic(str(frame.fields.get("room")))
                if topic is not None:
                    frame = Frame("join", **{**frame.fields, "irc_topic": _topic_lines(topic)})
            elif frame.type == "welcome" and self._lusers:
                # Registration answers as though the client sent LUSERS (the modern
                # docs' registration, step 7), between ISUPPORT and the MOTD. (Counted
                # before the login: the welcome is encoded under the hub's lock.)
                lusers, self._lusers = self._lusers, []
                frame = Frame("welcome", **{**frame.fields, "irc_lusers": lusers})
            elif frame.type == "history_targets":  # the history plugin's, to TARGETS
                frame = Frame("irc", messages=self._target_lines(frame))
            elif frame.type == "topic" and frame.fields.get("join"):
                # A kept topic given back to the room (hub.restore_topic): what a join
                # shows of a topic, not a TOPIC from whoever set it once.
                frame = Frame("irc", messages=_topic_lines(dict(frame.fields)))
            data = self.protocol.send(frame)
            if frame.type == "notice" and self.hub.closing:
                # The server's shutdown notice: IRC clients also expect ERROR.
                data += self.protocol.send(Frame("irc_close", text="Server shutting down"))
            return data

    def farewell(self, reason: str) -> bytes:
        """``ERROR :Closing Link`` last when the server ends the connection (a KILL, a
        ban, a timeout; ``Connection.finish`` calls it), unless one was sent already
        (QUIT, a refusal, the shutdown's notice)."""
        with self._send_lock:
            if self.protocol.said_goodbye:
                return b""
            return self.protocol.send(Frame("irc_close", text=reason))

    def receive(self, data: bytes) -> bool:
        protocol, link = self.protocol, self.link
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        while True:
            # A burst of chat lines (PRIVMSG #room): parsed and sent as a run (hub.say_run).
            run = protocol.next_messages()
            if run:
                refused = functools.partial(self._refused, run)
                proceed = functools.partial(self._proceed, {room for room, _ in run})
                self.hub.say_run(self.session, run, refused, proceed)
                if link.finishing:
                    return False
                continue
            event = protocol.next_event()
            replies = protocol.replies()
            if replies:
                if self.session.unsettled:
                    self.hub.settle(self.session)  # answers come in the order of the lines
                self.send(*replies)
            if protocol.free_lines:
                # (PING, CAP, bad lines: no plugin sees them, so no flood control does)
                count, protocol.free_lines = protocol.free_lines, 0
                self.hub.free_line(self.session, count)
                if link.finishing:
                    return False
            style = protocol.style
            if style is not self._style and style != self._style:
                # CAP REQ changed what fan-outs must send this client: its codec.
                self._style = style
                link.codec = self.face.codecs.get(style)
            if event is None:
                return True
            if isinstance(event, Closed):
                return False
            link.pace(self._said_in(event))
            if link.finishing:
                return False
            self.act(event)
            if link.finishing:
                return False

    def _said_in(self, event: object) -> list[str]:
        """The rooms a PRIVMSG or NOTICE goes to, or a multiline batch at its end
        (``BATCH -ref``: its lines publish nothing before it), for ``Link.pace``; none
        for anything else."""
        if not isinstance(event, Command):
            return []
        message = event.message
        params = message.params
        if message.command in ("PRIVMSG", "NOTICE") and params and "batch" not in message.tags:
            return [target for target in params[0].split(",") if target.startswith("#")]
        batch = self._multiline
        if message.command == "BATCH" and params and params[0].startswith("-") and batch:
            return [batch.target] if batch.target.startswith("#") else []
        return []

    def _refused(self, run: list[tuple[str, str]], index: int, exc: CommandError) -> None:
        """A message of a run refused (``hub.say_run``): as :meth:`privmsg` tells it."""
        self.fail("PRIVMSG", run[index][0], exc)

    def _proceed(self, rooms: Iterable[str]) -> bool:
        """Before each message of a run to ``rooms``, as before each event: pace; go on
        unless closing."""
        self.link.pace(rooms)
        return not self.link.finishing

    # -- acting on events ----------------------------------------------------------------

    def send(self, *messages: Message) -> None:
        """Send IRC messages of the face's own (numerics: the nick is added) to the client."""
        self.session.send(Frame("irc", messages=list(messages)))

    def answer(self, *messages: Message) -> None:
        """:meth:`send` a PRIVMSG's or NOTICE's own answer (a numeric), after the
        reader's earlier messages are settled: act() does not settle before those
        commands, and a store's refusal of an earlier one comes at its settle()."""
        if self.session.unsettled:
            self.hub.settle(self.session)
        self.send(*messages)

    def act(self, event: Register | Authenticate | Command) -> None:
        """Act on one event; refusals go back to the client as numerics."""
        hub, session = self.hub, self.session
        if isinstance(event, Register):
            self.register(event)
            return
        if isinstance(event, Authenticate):
            self.authenticate(event)
            return
        message = event.message
        command = message.command
        if session.unsettled and command not in ("PRIVMSG", "NOTICE"):
            hub.settle(session)  # answers come in the order of the lines
        if command == "BATCH" or (
            "batch" in message.tags and (self._multiline is not None or self._dropping)
        ):
            self.batch(message)
            return
        if command == "TAGMSG":
            self.tagmsg(message)
            return
        handler = _HANDLERS.get(command)
        session.charged = False
        try:
            if command in _QUERIES:
                self._input(f"/{command.lower()}")
            if handler is not None:
                handler(self, message.params)
            else:
                self.chat_command(command, message.params)
        except CommandError as exc:
            if session.unsettled:
                hub.settle(session)
            session.error(exc.code, exc.text, irc_command=command, **exc.details)
            hub.free_line(session)  # (a refusal costs the server as much as a line)
        if not session.charged:
            # Answered without flood control seeing it (421, 461...): a free line, so
            # that such lines in a loop cannot take the server's core from the others.
            hub.free_line(session)

    def fail(self, command: str, target: str, exc: CommandError) -> None:
        """Tell the client that ``command`` failed for ``target``."""
        if self.session.unsettled:
            self.hub.settle(self.session)
        room = exc.details.get("target") if command == "NICK" else None
        more = {"room": room} if isinstance(room, str) else {}  # 435 names the room
        code, text = exc.code, exc.text
        if (
            command in ("PRIVMSG", "NOTICE")
            and code == "not_in_room"
            and target.startswith("#")
            and self.hub.who(target) is None
        ):
            # A room nobody is in does not exist: 401, "No such nick/channel" (RFC 2812
            # 3.3.1, ngIRCd, InspIRCd), not 404, which says the room is there.
            code, text = "no_such_nick", f"no room {target}; /join {target} to make it"
        how = None
        if exc.code == "nick_registered":
            # 433 is "in use" to clients, which show their own words for it (or pick
            # NICK_ at once), or its text beside a notice: that says why, and how to
            # take it, as an IRC client does (a /command of chatkit's is none of its).
            how = exc.text.replace("/identify ", "/msg NickServ IDENTIFY ")
            text = f"{target} is registered (see the notice)"
        self.session.error(code, text, irc_command=command, target=target, **more)
        if how is not None:
            self.session.notice(how)
        self.hub.free_line(self.session)  # (refused lines in a loop are paced too)

    def authenticate(self, event: Authenticate) -> None:
        """SASL PLAIN: check the credentials with the plugins, answer 900/903 or 904."""
        try:
            self.hub.authenticate(self.session, event.account, event.password)
        except CommandError as exc:
            with self._send_lock:
                self.protocol.sasl_result(None, exc.text)
        else:
            with self._send_lock:
                self.protocol.sasl_result(self.session.account or event.account)
        self.send(*self.protocol.replies())

    def register(self, event: Register) -> None:
        hub, session = self.hub, self.session
        fields: dict[str, Any] = {} if event.password is None else {"password": event.password}
        # Refused text (bidi = "refuse"): WHO and WHOIS show the nick, as for an empty one.
        with contextlib.suppress(CommandError):
            session.data["irc"]["realname"] = self._text(event.realname)
        self._modes(hub.config.default_room, joining=True)  # its operators, for the names list
        self._choose_replay()
        counted, (users, hidden, rooms) = self.face.lusers
        if time.monotonic() - counted >= LUSERS_EVERY:
            users, hidden, rooms = self._luser_counts()
            self.face.lusers = (time.monotonic(), (users, hidden, rooms))
        self._lusers = self._luser_lines((users + 1, hidden, rooms))  # (this one, about to log in)
        try:
            hub.allow_input(session, Hello(event.nick, fields=fields))
            hub.login(session, event.nick, fields)
        except CommandError as exc:
            if exc.code in ("nick_taken", "nick_registered", "bad_nick", "rate_limited"):
                if exc.code == "nick_registered":  # how, on IRC
                    exc = CommandError(f"{exc.text} (PASS it before NICK, or SASL)", exc.code)
                self.fail("NICK", event.nick, exc)
                return
            # Refused by a plugin (a wrong password...): IRC clients cannot ask again.
            session.send(Frame("irc_close", text=exc.text))
            session.disconnect(f"login refused: {exc.code}")
            return
        self.send()  # ends the MOTD if nothing after the welcome did

    def _choose_replay(self) -> None:
        """No replay on join for a client that negotiated ``draft/chathistory`` (it asks
        for what it lacks: the spec's SHOULD NOT, so that it sees no line twice); the
        server's default otherwise. Before each login and JOIN: CAP REQ may change it."""
        self.session.replay = 0 if CHATHISTORY_CAP in self.protocol.caps else None

    def chat_command(self, command: str, params: tuple[str, ...]) -> None:
        """A command IRC does not have: a chat command of that name, or ``421``."""
        name = command.lower()
        if not self.session.logged_in:
            self.send(Message(n.ERR_UNKNOWNCOMMAND, (command, "Unknown command")))
            return
        if command == "INVITE" and (
            len(params) < 2 or not params[0].strip(",") or not params[1].strip(",")
        ):
            # IRC's own command: IRC's answer (`INVITE nick` names no room).
            self.send(Message(n.ERR_NEEDMOREPARAMS, (command, "Not enough parameters")))
            return
        if self.hub.commands.get(name) is None:
            if command in ("KICK", "INVITE"):
                # IRC's own commands, which clients know: without the moderation plugin
                # nobody is a room's operator (482), not an unknown command (421).
                room = params[0] if command == "KICK" else params[1]
                text = "You're not channel operator (no room has operators here)"
                self.send(Message(n.ERR_CHANOPRIVSNEEDED, (room, text)))
                return
            self.send(Message(n.ERR_UNKNOWNCOMMAND, (command, "Unknown command")))
            return
        # Its arguments reach others (/me, /msg, a kick's reason): cleaned as messages are.
        line = self._text(f"/{name} {' '.join(params)}".rstrip())
        self.hub.allow_input(self.session, Say(line, command=True))
        self.hub.run_command(self.session, line, None)

    def kick(self, params: tuple[str, ...]) -> None:
        """``KICK #room nick[,nick...] [:reason]``, or as many rooms as nicks, paired
        (RFC 2812 3.2.8): the ``kick`` command once per nick, each refusal on its own."""
        if len(params) < 2 or not params[0].strip(",") or not params[1].strip(","):
            self.send(Message(n.ERR_NEEDMOREPARAMS, ("KICK", "Not enough parameters")))
            return
        rooms, nicks = params[0].split(","), params[1].split(",")
        if len(rooms) != 1 and len(rooms) != len(nicks):
            self.send(Message(n.ERR_NEEDMOREPARAMS, ("KICK", "One room, or one room per nick")))
            return
        reason = params[2:3]
        pairs = zip(rooms * len(nicks) if len(rooms) == 1 else rooms, nicks, strict=True)
        for room, nick in list(pairs)[:MAX_TARGETS]:
            if not nick:
                continue
            try:
                self.chat_command("KICK", (room, nick, *reason))
            except CommandError as exc:
                self.session.error(exc.code, exc.text, irc_command="KICK", **exc.details)

    def _text(self, text: str, *, newlines: bool = False) -> str:
        """``text`` that others will read (a message, a reason, a topic, a command's
        arguments, an away message): formatting codes removed, control characters
        replaced (a terminal escape, a carriage return that would forge a line; line
        breaks kept with ``newlines``), bidi controls as the ``bidi`` setting says.
        Raises :class:`CommandError` (``bad_text``) if that setting refuses them."""
        # Formatting codes are control characters: printable text has none.
        plain = text if text.isprintable() else _FORMATTING.sub("", text)
        try:
            return clean_text(plain, newlines=newlines, bidi=self.hub.config.bidi)
        except RemoteProtocolError as exc:
            raise CommandError(exc.text, exc.code) from None

    def _input(self, line: str) -> None:
        """Count a line against the input limits (flood), as the line face does."""
        self.hub.allow_input(self.session, Say(line, command=line.startswith("/")))

    # -- commands ------------------------------------------------------------------------

    def quit(self, params: tuple[str, ...]) -> None:
        try:
            reason = self._text(params[0]) if params and params[0] else ""
        except CommandError:
            reason = ""  # refused text: the client leaves all the same, without it
        text = f"Quit: {reason}" if reason else "Quit"  # as the others see it
        self.session.send(Frame("irc_close", text=text))
        self.session.disconnect(f"quit: {reason}" if reason else "quit")

    def privmsg(
        self, params: tuple[str, ...], command: str = "PRIVMSG", newlines: bool = False
    ) -> None:
        notice = command == "NOTICE"
        if not params or not params[0].strip(","):  # (",": no target either)
            if not notice:
                self.answer(Message(n.ERR_NORECIPIENT, (f"No recipient given ({command})",)))
            return
        if len(params) < 2 or not params[1]:
            if not notice:
                self.answer(Message(n.ERR_NOTEXTTOSEND, ("No text to send",)))
            return
        if names.fold(params[0]) == "nickserv" and not notice:
            self.nickserv(params[1])
            return
        parsed = _ctcp(params[1])
        if parsed is None:
            self.ctcp(params[0], params[1], command)
            return
        text, action = parsed
        hub, session = self.hub, self.session
        each: dict[str, str] = {}
        for target in params[0].split(","):
            each.setdefault(names.fold(target), target)  # each target once, in any case
        targets = list(each.values())
        if len(targets) > MAX_TARGETS and not notice:  # TARGMAX: the rest are refused
            for extra in targets[MAX_TARGETS:]:
                self.answer(Message(n.ERR_TOOMANYTARGETS, (extra, "Too many targets")))
        for target in targets[:MAX_TARGETS]:
            if not target or self.link.finishing:  # (closed while a target waited its turn)
                continue
            try:
                clean = self._text(text, newlines=newlines)
                if not clean.strip():  # only formatting (bold, colours): nothing to show
                    if not notice:
                        self.answer(Message(n.ERR_NOTEXTTOSEND, ("No text to send",)))
                    break
                if target.startswith("#"):
                    hub.allow_input(session, Say(clean, room=target))
                    # Consecutive messages are stored in a pipeline; settle() ends it.
                    hub.say(session, target, clean, action=action, notice=notice, defer=True)
                else:
                    # What the line face's plugins see of it: /msg, a command (a room's
                    # mute is no reason to refuse a private message).
                    verb = "describe" if action else "msg"
                    hub.allow_input(session, Say(f"/{verb} {target} {clean}", command=True))
                    if session.unsettled:
                        hub.settle(session)  # earlier room messages go first
                    sent = hub.private(session, target, clean, action=action, notice=notice)
                    to = self.hub.find(sent.to or target)
                    if to is session and ECHO_MESSAGE not in self.protocol.caps:
                        # To oneself (RFC 2812 3.3.1: the target gets it): the copy a
                        # client without echo-message is not sent of its own lines.
                        session.send(message_frame(sent))
                    away = self.hub.away(sent.to or target)  # (another node's too)
                    if away and not notice:  # RFC 2812: 301 to whoever messages them
                        self.answer(Message(n.RPL_AWAY, (sent.to or target, str(away))))
            except CommandError as exc:
                self.fail(command, target, exc)

    def nickserv(self, text: str) -> None:
        """``PRIVMSG NickServ :IDENTIFY [account] password`` (what IRC clients send to
        identify, by hand or on connecting), ``GHOST``, ``REGAIN`` or ``RECOVER nick
        password`` and ``REGISTER password [email]``: chatkit's ``/identify``, ``/regain``
        and ``/register``, answered as NOTICEs. The text is a password:
        it is neither stored nor sent to anyone (no one may hold the nick)."""
        if not self.session.logged_in:
            self.send(Message(n.ERR_NOTREGISTERED, ("You have not registered",)))
            return
        verb, _, rest = text.strip().partition(" ")
        # GHOST, REGAIN and RECOVER NICK PASSWORD (services' ways to take a nick back
        # from a connection of yours that dropped) are /regain NICK PASSWORD here: it
        # takes the nick from whoever holds it, another session of the account's too.
        command = {
            "IDENTIFY": "identify",
            "REGISTER": "register",
            "GHOST": "regain",
            "REGAIN": "regain",
            "RECOVER": "regain",
        }.get(verb.upper())
        if command is None or self.hub.commands.get(command) is None:
            self.send(
                *self._from_nickserv("There are no services here: /quote HELP lists commands")
            )
            return
        if command == "regain" and len(rest.split()) != 2:
            # (One word would be taken for a password: a failed attempt, throttled.)
            self.send(*self._from_nickserv(f"Usage: {verb.upper()} NICK PASSWORD"))
            return
        # Its answers, and its refusals, from NickServ: where the client shows them (the
        # NickServ window, beside what it sent), not as the server's notices.
        self._services = threading.get_ident()
        try:
            self.chat_command(command.upper(), tuple(rest.split()))
        except CommandError as exc:
            if self.session.unsettled:
                self.hub.settle(self.session)
            self.send(*self._from_nickserv(exc.text))
        finally:
            self._services = None

    def _from_nickserv(self, text: str) -> list[Message]:
        """``text`` as NOTICEs from NickServ to this client, a line each."""
        nick = self.protocol.nick
        return [
            Message("NOTICE", (nick, line), NICKSERV_SOURCE) for line in text.splitlines() or [""]
        ]

    def ctcp(self, targets: str, text: str, command: str) -> None:
        """A CTCP query (``PRIVMSG``) or reply (``NOTICE``) other than ACTION: VERSION,
        PING, TIME, DCC... It goes as it is to an IRC client it is addressed to, which
        answers it itself; not to a room, nor to a client of another face or of another
        node (none of them could answer), and it is neither stored nor filtered: it is
        not chat. Flood control counts it as a line to a nick, but for a reply
        (``NOTICE``) to a nick that queried this client: its client answers by
        itself, and a query flood must not spend the victim's allowance (at most
        :data:`CTCP_OWED` replies owed to one nick at a time)."""
        hub, session = self.hub, self.session
        echo = "echo-message" in self.protocol.caps
        for target in targets.split(",")[:MAX_TARGETS]:
            if not target:
                continue
            room = target.startswith("#")
            found = None if room else hub.find(target)
            missing = not room and (found is None or found.nick is None)
            if missing and command == "PRIVMSG" and self._remote(target) is None:
                self.answer(Message(n.ERR_NOSUCHNICK, (target, "No such nick/channel")))
                continue
            if found is None or found.nick is None or not _irc_info(found):
                # Dropped (a room; a client of another face or node): with echo-message
                # it is echoed all the same, as the spec allows for a message dropped
                # silently, so that the client does not wait for it forever.
                if echo:
                    session.send(
                        Frame("irc", messages=[Message(command, (target, text), self._source())])
                    )
                continue
            line = Message(command, (found.nick, text), self._source())
            # Its prefix made it too long (not cut, as encode_lines would: a CTCP's end).
            if len(line.line(trailing=True).encode("utf-8", "replace")) + 2 > MAX_LINE_BYTES:
                if command == "PRIVMSG":
                    self.answer(Message(n.ERR_INPUTTOOLONG, ("Input line was too long",)))
                continue
            # (Each session's owed counts are changed by other readers too: a lost
            # update under a race costs one reply a flood line, or spares one.)
            owed = session.data.get(_OWED)
            key = names.fold(found.nick)
            if command == "NOTICE" and owed and owed.get(key):
                # The answer to a query: not this client's own line.
                if owed[key] > 1:
                    owed[key] -= 1
                else:
                    owed.pop(key, None)
            else:
                try:
                    hub.allow_input(session, Say(f"/msg {target} {text}", command=True))
                except CommandError as exc:
                    self.fail(command, target, exc)
                    continue
            if session.unsettled:
                hub.settle(session)  # after the room messages sent before it
            if command == "PRIVMSG":
                theirs = found.data.setdefault(_OWED, {})
                mine = names.fold(session.nick or "")
                if mine in theirs or len(theirs) < CTCP_OWED_NICKS:
                    theirs[mine] = min(theirs.get(mine, 0) + 1, CTCP_OWED)
            found.send(Frame("irc", messages=[line]))
            if echo:  # as for any PRIVMSG or NOTICE
                session.send(Frame("irc", messages=[line]))

    def batch(self, message: Message) -> None:
        """A client's ``draft/multiline`` batch: ``BATCH +ref draft/multiline target``,
        PRIVMSGs (or NOTICEs) tagged ``batch=ref``, ``BATCH -ref``: one chat message
        of several lines (``draft/multiline-concat`` joins a line to the one before)."""
        limits = self.hub.config.limits
        params, open_ = message.params, self._multiline
        if message.command == "BATCH":
            ref = params[0] if params else ""
            if self._dropping is not None and ref == f"-{self._dropping}":
                self._dropping = None
                return
            if ref.startswith("+") and len(ref) > 1:
                if MULTILINE not in self.protocol.caps or len(params) < 3 or params[1] != MULTILINE:
                    self._batch_fail("MULTILINE_INVALID", text="Only draft/multiline batches")
                elif open_ is not None:
                    self._batch_fail("MULTILINE_INVALID", text="A batch is already open")
                else:
                    self._multiline = _Multiline(ref[1:], params[2])
                return
            if open_ is None or ref[1:] != open_.ref or not ref.startswith("-"):
                self._batch_fail("MULTILINE_INVALID", text="No such batch")
                return
            self._multiline = None
            lines: list[str] = []  # the batch's lines, each joined to its concat pieces
            for line, concat in open_.lines:
                if concat and lines:
                    lines[-1] += line
                else:
                    lines.append(line)
            # CTCP framing is each line's: /me over several lines is an ACTION a line.
            parsed = [_ctcp(line) for line in lines]
            if any(found is None for found in parsed):
                self._batch_fail("MULTILINE_INVALID", text="No CTCP but ACTION in a batch")
                return
            actions = {found[1] for found in parsed if found is not None}
            if len(actions) > 1:
                # One chat message is an action or not: a mix would lose the action.
                self._batch_fail("MULTILINE_INVALID", text="ACTION and plain lines in one batch")
                return
            text = "\n".join(found[0] for found in parsed if found is not None)
            if actions == {True}:
                text = f"\x01ACTION {text}\x01"  # one action of several lines
            if open_.command is not None and text.strip():
                self.privmsg((open_.target, text), open_.command, newlines=True)
            elif open_.command != "NOTICE":  # nothing but blank lines (or no line)
                self.send(Message(n.ERR_NOTEXTTOSEND, ("No text to send",)))
            return
        if self._dropping is not None and message.tags.get("batch") == self._dropping:
            return
        if open_ is None or message.tags.get("batch") != open_.ref:
            self._batch_fail("MULTILINE_INVALID", text="Lines of another batch")
            return
        command = message.command
        if command in ("PRIVMSG", "NOTICE") and open_.command not in (None, command):
            self._multiline, self._dropping = None, open_.ref
            self._batch_fail("MULTILINE_INVALID", text="PRIVMSG and NOTICE in one batch")
            return
        if command not in ("PRIVMSG", "NOTICE") or len(params) < 2:
            self._multiline, self._dropping = None, open_.ref
            self._batch_fail("MULTILINE_INVALID", text="Only PRIVMSG or NOTICE in a batch")
            return
        if names.fold(params[0]) != names.fold(open_.target):
            self._multiline, self._dropping = None, open_.ref
            self._batch_fail(
                "MULTILINE_INVALID_TARGET", open_.target, params[0], text="Not the batch's target"
            )
            return
        open_.command = command
        # A carriage return inside a line is a control character, as in any PRIVMSG;
        # not a line break, which would let a batch pass max_message_lines.
        line = params[1].replace("\r", "\ufffd")
        concat = "draft/multiline-concat" in message.tags
        # max-bytes counts the lines and the line feeds between them: none before the
        # first line, nor before a line that continues the one before (concat).
        open_.size += len(params[1].encode()) + (1 if open_.lines and not concat else 0)
        open_.lines.append((line, concat))
        if open_.size > limits.max_line:
            self._multiline, self._dropping = None, open_.ref
            self._batch_fail("MULTILINE_MAX_BYTES", str(limits.max_line), text="Too many bytes")
        elif len(open_.lines) > limits.max_message_lines:
            self._multiline, self._dropping = None, open_.ref
            limit = str(limits.max_message_lines)
            self._batch_fail("MULTILINE_MAX_LINES", limit, text="Too many lines")

    def _batch_fail(self, code: str, *context: str, text: str) -> None:
        self.send(Message("FAIL", ("BATCH", code, *context, text), self.face.server_name))

    def tagmsg(self, message: Message) -> None:
        """``@+typing=active TAGMSG #room`` (IRCv3 ``message-tags``): the client-only
        tags (``+`` keys: a typing notification, a reaction) go at once to the target's
        IRC users who negotiated ``message-tags`` (and back to the sender with
        ``echo-message``); no other face has a way to show them. They are not stored,
        nor ordered with the room's messages (a notification may pass a message in
        flight), and a TAGMSG without client-only tags does nothing."""
        params, session = message.params, self.session
        if not session.logged_in:
            self.send(Message(n.ERR_NOTREGISTERED, ("You have not registered",)))
            return
        if not params or not params[0]:
            self.send(Message(n.ERR_NORECIPIENT, ("No recipient given (TAGMSG)",)))
            return
        tags = {k: v for k, v in message.tags.items() if k.startswith("+") and len(k) > 1}
        if not tags or MESSAGE_TAGS not in self.protocol.caps:
            return
        try:
            # Others' clients show some (a reaction): cleaned as text is (a terminal
            # escape, a bell, bidi controls as the bidi setting says).
            tags = {key: self._text(value) for key, value in tags.items()}
        except CommandError:
            self.send(Message(n.ERR_CANNOTSENDTOCHAN, (params[0], "Cannot send: bad text")))
            return
        section = Message("TAGMSG", (), None, tags).line().partition(" ")[0]  # "@..."
        if len(section.encode()) - 1 > MAX_CLIENT_TAG_BYTES:
            # Cleaned (a control character is 3 bytes as U+FFFD), past what IRCv3 lets
            # client tags be: not relayed.
            self.send(Message(n.ERR_INPUTTOOLONG, ("Input line was too long (tags)",)))
            return
        target = params[0]
        self._input(f"/tagmsg {target}")  # counts against the flood limit as a line
        if target.startswith("#"):
            if names.fold(target) not in session.rooms:
                self.send(Message(n.ERR_CANNOTSENDTOCHAN, (target, "Cannot send to channel")))
                return
            target = self._room_name(target)
            try:
                # Held to the room's rules as a message is (a mute, a ban, +m).
                self.hub.filter_message(
                    session, ChatMessage(session.nick or "", "", target, account=session.account)
                )
            except CommandError:
                self.send(Message(n.ERR_CANNOTSENDTOCHAN, (target, "Cannot send to channel")))
                return
            found = (self.hub.find(nick) for nick in self.hub.who(target) or [])
            recipients = [s for s in found if s is not None]
        else:
            other = self.hub.find(target)
            if other is None or other.nick is None:
                self.send(Message(n.ERR_NOSUCHNICK, (target, "No such nick/channel")))
                return
            target = other.nick
            recipients = [other, session]
        echo = ECHO_MESSAGE in self.protocol.caps
        line = Message("TAGMSG", (target,), self._source(), tags)
        for recipient in {s.id: s for s in recipients}.values():
            caps = recipient.data.get("irc", {}).get("caps", ())
            if MESSAGE_TAGS in caps and (recipient is not session or echo):
                recipient.send(Frame("irc", messages=[line]))

    def notice(self, params: tuple[str, ...]) -> None:
        self.privmsg(params, "NOTICE")

    def join(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self.send(Message(n.ERR_NEEDMOREPARAMS, ("JOIN", "Not enough parameters")))
            return
        if params[0] == "0":
            self._input("/join 0")
            for room in list(self.session.rooms.values()):
                self._part(room, "left every room")
            return
        for room, refused in self._charged("/join", params[0]):
            try:
                if refused is not None:
                    raise refused
                self._modes(room, joining=True)  # its operators, for the join's names list
                self._choose_replay()
                named = self.hub.room_named(room)
                if named is not None and _ascii_lower(named) != _ascii_lower(room):
                    # The same room to chatkit (#TÉST is #Tést), another to the client
                    # (CASEMAPPING=ascii): told it is forwarded (470, which irssi follows
                    # into the window it opened), it does not wait for a JOIN #TÉST.
                    text = f"Forwarding to {named}: the same room, as it is spelled"
                    self.send(Message(n.ERR_LINKCHANNEL, (room, named, text)))
                self.hub.join(self.session, room)
            except CommandError as exc:
                self.fail("JOIN", room, exc)

    def part(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self.send(Message(n.ERR_NEEDMOREPARAMS, ("PART", "Not enough parameters")))
            return
        try:
            text = self._text(params[1]) if len(params) > 1 else ""
            reason = f"part: {text}" if text else "part"  # as /part gives it on every face
        except CommandError as exc:
            self.fail("PART", params[0], exc)
            return
        for room, refused in self._charged("/part", params[0]):
            if refused is not None:
                self.fail("PART", room, refused)
            else:
                self._part(room, reason)

    def _charged(self, command: str, rooms: str) -> Iterator[tuple[str, CommandError | None]]:
        """Each room of a JOIN or PART list, with the flood refusal that stops it (or
        ``None``). Every four rooms cost a line of the allowance: a line naming a hundred
        rooms is a hundred joins (and replays), and a client's autojoin of two dozen
        rooms still fits in the burst. Charged as the rooms are reached."""
        refused: CommandError | None = None
        for i, room in enumerate(room for room in rooms.split(",") if room):
            if self.link.finishing:
                return  # closed meanwhile (while a charge waited its turn): no more rooms
            if i % JOINS_PER_LINE == 0:
                refused = None
                try:
                    self._input(f"{command} {room}")
                except CommandError as exc:
                    refused = exc
            yield room, refused

    def _part(self, room: str, reason: str) -> None:
        try:
            self.hub.part(self.session, room, reason)
        except CommandError as exc:
            if exc.code == "not_in_room" and self.hub.who(room) is None:
                # A room that does not exist: 403, not 442 (RFC 2812 3.2.2).
                exc = CommandError(f"no room {room}", "no_such_room")
            self.fail("PART", room, exc)

    def nick(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self.send(Message(n.ERR_NONICKNAMEGIVEN, ("No nickname given",)))
            return
        self._input(f"/nick {params[0]}")
        try:
            self.hub.rename(self.session, params[0])
        except CommandError as exc:
            self.fail("NICK", params[0], exc)

    def names_reply(self, params: tuple[str, ...]) -> None:
        """``NAMES #a,#b``: each room's ``353`` lines, then ``366``. ``NAMES`` alone:
        those of the rooms the client is in (RFC 2812 lists every channel: ``LIST``
        does that here), then ``366 *``."""
        lines: list[Message] = []
        if not params or not params[0]:
            rooms = list(self.session.rooms.values())
            for _ in range(1, -(-len(rooms) // MAX_TARGETS)):
                self._input("/names")  # each four rooms a line, as NAMES of four costs
        else:
            asked = [self._room_name(room) for room in params[0].split(",")[:MAX_TARGETS]]
            rooms = list({names.fold(room): room for room in asked}.values())  # each once
        for room in rooms:  # (as the room spells itself, not as asked: clients compare)
            members = self._listed_members(room)
            ops = self._operators(room)
            members = [("@" if names.fold(m) in ops else "") + m for m in members]
            hosts = "userhost-in-names" in self.protocol.caps
            lines += names_lines(
                self.face.server_name, self.protocol.nick, room, members, hosts=hosts
            )
        if not params or not params[0] or len(rooms) > 1:
            # Several rooms: their 353s, then one 366 naming them all (RFC 1459 4.2.5).
            lines = [line for line in lines if line.command != n.RPL_ENDOFNAMES]
            named = ",".join(rooms) if params and params[0] else "*"
            lines.append(Message(n.RPL_ENDOFNAMES, (named, "End of /NAMES list.")))
        self.send(*lines)

    def who(self, params: tuple[str, ...]) -> None:
        """``WHO #room`` (its members), ``WHO nick``, or ``WHO mask [o]``: the users whose
        nick or realname matches (``*`` any characters, ``?`` one; ``0`` or nothing:
        everyone), at most :attr:`IrcFace.max_who`; ``o``: IRC operators only. A user
        with mode ``+i`` is listed by a mask only to those who share a room with it.

        WHOX (IRCv3): ``WHO mask [o]%FIELDS[,TOKEN]`` answers each with ``354`` and the
        fields asked for (``tcuihsnfdlaor``), in that order, instead of ``352``."""
        mask = params[0] if params and params[0] else "*"
        flags, percent, spec = (params[1] if len(params) > 1 else "").partition("%")
        fields, _, token = spec.partition(",")
        # (No field asked for, "%" alone: the plain 352, not a 354 with nothing.)
        whox = (fields, token[:3]) if percent and fields else None
        lines: list[Message] = []
        if mask.startswith("#"):
            members = self._listed_members(mask)
            room = self._room_name(mask)
            ops = self._operators(room)
            for nick in members:
                if flags == "o" and not self._info(nick).get("oper"):
                    continue  # WHO #room o: its IRC operators only
                lines.append(self._who_line(room, nick, names.fold(nick) in ops, whox))
        elif mask != "0" and not _WILDCARDS.intersection(mask):
            found = self.hub.find(mask)
            if found is not None and found.nick is not None:
                lines.append(self._who_line("*", found.nick, whox=whox))
            elif (remote := self._remote(mask)) is not None:
                lines.append(self._who_line("*", remote.nick, whox=whox))
        else:
            opers = flags == "o"
            for nick in self._who_matching("*" if mask == "0" else mask, opers=opers):
                lines.append(self._who_line("*", nick, whox=whox))
        lines.append(Message(n.RPL_ENDOFWHO, (mask, "End of /WHO list.")))
        self.send(*lines)

    def _listed_members(self, room: str) -> list[str]:
        """``room``'s members as ``NAMES`` and ``WHO #room`` list them: every one to a
        member; to anyone else, those without mode ``+i`` (RFC 2812 3.2.5, the modern
        docs' NAMES: an invisible user is seen only by those sharing a room)."""
        members = self.hub.who(room) or []
        if names.fold(room) in self.session.rooms:
            return members
        return [
            nick
            for nick in members
            if (found := self.hub.find(nick)) is None or not _irc_info(found).get("invisible")
        ]

    def _who_matching(self, mask: str, *, opers: bool) -> list[str]:
        """The nicks ``WHO mask`` lists (see :meth:`who`), at most ``max_who``."""
        pattern = names.fold(mask)
        shared: set[str] | None = None  # folded nicks sharing a room with this client
        found: list[str] = []
        for other in self.hub.sessions():
            nick = other.nick
            if nick is None:
                continue
            info = _irc_info(other)
            if opers and not info.get("oper"):
                continue
            if not (
                wildcard_match(pattern, names.fold(nick))
                or wildcard_match(pattern, names.fold(str(info.get("realname") or "")))
            ):
                continue
            if info.get("invisible") and other is not self.session:
                if shared is None:
                    shared = {
                        names.fold(member)
                        for room in list(self.session.rooms.values())
                        for member in self.hub.who(room) or []
                    }
                if names.fold(nick) not in shared:
                    continue
            found.append(nick)
            if len(found) >= self.face.max_who:
                return found
        relay = self.hub.relay
        if relay is None or opers:
            return found
        # Another node's members: those who share a room with this client (whether one
        # is +i, or an operator, is its own node's to know).
        mine = {names.fold(room) for room in self.session.rooms.values()}
        for member in relay.everyone():
            if not mine.intersection(names.fold(room) for room in member.rooms):
                continue
            if wildcard_match(pattern, names.fold(member.nick)):
                found.append(member.nick)
                if len(found) >= self.face.max_who:
                    break
        return found

    def _who_line(
        self, room: str, nick: str, op: bool = False, whox: tuple[str, str] | None = None
    ) -> Message:
        """One user's ``352`` (or, with ``whox``: its fields and token, ``354``)."""
        found = self.hub.find(nick)
        remote = None if found is not None else self._remote(nick)  # (another node's)
        info = {} if found is None else _irc_info(found)
        away = found.away if found is not None else remote is not None and remote.away
        here = ("G" if away else "H") + ("*" if info.get("oper") else "")
        here += "@" if op else ""
        realname = info.get("realname") or nick
        server = self.face.server_name
        if whox is None:
            params = (room, nick, USER_HOST, server, nick, here, f"0 {realname}")
            return Message(n.RPL_WHOREPLY, params)
        fields, token = whox
        account = found.account if found is not None else remote and remote.account
        values = {
            "t": token or "0",
            "c": room,
            "u": nick,
            "i": "255.255.255.255",  # (no client's address is shown)
            "h": USER_HOST,
            "s": server,
            "n": nick,
            "f": here,
            "d": "0",
            "l": "0",
            "a": account or "0",
            "o": "n/a",
            "r": realname,
        }
        return Message(n.RPL_WHOSPCRPL, tuple(values[f] for f in values if f in fields))

    def _operators(self, room: str) -> set[str]:
        """The operators of ``room``, folded (names lists, WHO, WHOIS)."""
        return {names.fold(str(nick)) for nick in self._modes(room).get("operators", [])}

    def _info(self, nick: str) -> dict[str, Any]:
        """The IRC details of the session called ``nick`` (empty for other faces')."""
        found = self.hub.find(nick)
        return {} if found is None else _irc_info(found)

    def _room_name(self, room: str) -> str:
        """``room`` as the chat spells it (``#General`` → ``#general``), if it exists."""
        return self.hub.room_named(room) or room

    def whois(self, params: tuple[str, ...]) -> None:
        if not params or not params[-1]:
            self.send(Message(n.ERR_NONICKNAMEGIVEN, ("No nickname given",)))
            return
        nick = params[-1].split(",")[0]
        found = self.hub.find(nick)
        if found is None or found.nick is None:
            remote = self._remote(nick)
            if remote is not None:
                self.send(*self._whois_remote(remote))
                return
            self.send(
                Message(n.ERR_NOSUCHNICK, (nick, "No such nick/channel")),
                Message(n.RPL_ENDOFWHOIS, (nick, "End of /WHOIS list.")),
            )
            return
        nick = found.nick
        rooms_of = list(found.rooms.values())
        for _ in range(1, -(-len(rooms_of) // WHOIS_ROOMS_PER_LINE)):
            self._input("/whois")  # (the operators of each room are looked up: work)
        info = self._info(nick)
        lines = [
            Message(n.RPL_WHOISUSER, (nick, nick, USER_HOST, "*", info.get("realname") or nick))
        ]
        key = names.fold(nick)
        rooms = [("@" if key in self._operators(r) else "") + r for r in rooms_of]
        lines += self._whois_rooms(nick, rooms)
        lines.append(Message(n.RPL_WHOISSERVER, (nick, self.face.server_name, "chatkit")))
        if info.get("oper"):
            lines.append(Message(n.RPL_WHOISOPERATOR, (nick, "is an IRC operator")))
        if found.account is not None:
            lines.append(Message(n.RPL_WHOISACCOUNT, (nick, found.account, "is logged in as")))
        if found.away:
            lines.append(Message(n.RPL_AWAY, (nick, found.away)))
        lines.append(Message(n.RPL_ENDOFWHOIS, (nick, "End of /WHOIS list.")))
        self.send(*lines)

    def whowas(self, params: tuple[str, ...]) -> None:
        """No nick history is kept: every nick gets ``406``, then ``369``. (irssi sends
        a WHOWAS after each WHOIS of an absent nick; ``421`` there reads as a fault.)"""
        if not params or not params[0]:
            self.send(Message(n.ERR_NONICKNAMEGIVEN, ("No nickname given",)))
            return
        nick = params[0].split(",")[0]  # the first, as WHOIS
        self.send(
            Message(n.ERR_WASNOSUCHNICK, (nick, "There was no such nickname")),
            Message(n.RPL_ENDOFWHOWAS, (nick, "End of WHOWAS")),
        )

    def topic(self, params: tuple[str, ...]) -> None:
        """``TOPIC #room``: ``332``/``333`` or ``331``; ``TOPIC #room :text`` sets it
        (``:`` alone clears it) for every member, who get ``TOPIC``."""
        if not params or not params[0]:
            self.send(Message(n.ERR_NEEDMOREPARAMS, ("TOPIC", "Not enough parameters")))
            return
        room = params[0]
        self._input(f"/topic {room}")
        if self.hub.who(room) is None:
            self.send(Message(n.ERR_NOSUCHCHANNEL, (room, "No such channel")))
            return
        if len(params) == 1:
            topic = self.hub.topic(room)
            if topic is None:
                self.send(Message(n.RPL_NOTOPIC, (self._room_name(room), "No topic is set")))
            else:
                self.send(*_topic_lines(topic))
            return
        try:
            self.hub.set_topic(self.session, room, self._text(params[1]))
        except CommandError as exc:
            self.fail("TOPIC", room, exc)

    def list_rooms(self, params: tuple[str, ...]) -> None:
        """``LIST``, ``LIST #a,#b`` or ``LIST #n*`` (``*`` any characters, ``?`` one):
        ``322`` for each room, ``323``. Each :data:`LIST_PER_LINE` rooms listed past the
        first cost a line of the flood allowance more (a LIST of thousands of rooms is
        that much work: flood control slows whoever asks for it again and again)."""
        wanted = [names.fold(r) for r in params[0].split(",")] if params else []
        wanted = [mask for mask in wanted if mask]
        rooms = [
            (room, count)
            for room, count in self.hub.rooms().items()
            if not wanted or _listed(names.fold(room), wanted)
        ]
        for _ in range(1, -(-len(rooms) // LIST_PER_LINE)):
            self._input("/list")  # (may wait, or refuse: the client's flood allowance)
        lines = [Message(n.RPL_LISTSTART, ("Channel", "Users  Name"))]
        for room, count in rooms:
            topic = self.hub.topic(room)
            text = topic["topic"] if topic else ""
            lines.append(Message(n.RPL_LIST, (room, str(count), text)))
        lines.append(Message(n.RPL_LISTEND, ("End of /LIST",)))
        self.send(*lines)

    def mode(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self.send(Message(n.ERR_NEEDMOREPARAMS, ("MODE", "Not enough parameters")))
            return
        target = params[0]
        if target.startswith("#"):
            self._input(f"/mode {target}")  # a query, or a change (others: channel_mode)
            if self.hub.who(target) is None:
                self.send(Message(n.ERR_NOSUCHCHANNEL, (target, "No such channel")))
                return
            room = self._room_name(target)
            if len(params) == 1:
                self._ask_modes(room, "modes")
                created = self.hub.created(room) or self.face.started
                self.send(Message(n.RPL_CREATIONTIME, (room, str(int(created)))))
            elif params[1].lstrip("+") in ("b", "") and len(params) == 2:
                self._ask_modes(room, "bans")
            elif params[1].lstrip("+") == "q" and len(params) == 2:
                self._ask_modes(room, "mutes")
            elif not moderation_on(self.hub):
                self.send(Message(n.ERR_CHANOPRIVSNEEDED, (room, "You're not channel operator")))
            else:
                self.channel_mode(room, params[1], list(params[2:]))
            return
        self._input("/mode")
        if names.fold(target) != names.fold(self.protocol.nick):
            if self.hub.find(target) is None and self._remote(target) is None:
                # Nobody by that nick, here or on another node: 401 (modern docs).
                self.send(Message(n.ERR_NOSUCHNICK, (target, "No such nick/channel")))
            else:
                self.send(Message(n.ERR_USERSDONTMATCH, ("Cant change mode for other users",)))
            return
        if len(params) == 1:
            self.send(Message(n.RPL_UMODEIS, ("+" + "".join(sorted(self.modes)),)))
            return
        change, sign, unknown = "", "+", False
        ops: dict[str, bool] = {}  # (-o: the rooms it was an operator of, to tell them)
        for char in params[1]:
            if char in "+-":
                sign = char
            elif char == "i":
                if (sign == "+") != ("i" in self.modes):
                    self.modes.symmetric_difference_update("i")
                    self.session.data["irc"]["invisible"] = "i" in self.modes  # for WHO masks
                    change += sign + char
            elif char == "o":
                if sign == "-" and "o" in self.modes:  # +o only through OPER
                    self.modes.discard("o")
                    self.session.data["irc"]["oper"] = None
                    ops = self._rooms_operated()
                    self.session.operator = False
                    change += "-o"
            else:
                unknown = True
        if change:
            self.send(Message("MODE", (self.protocol.nick, change), self._source()))
        if "-o" in change:
            self._tell_operator_changes(ops)
        if unknown:
            self.send(Message(n.ERR_UMODEUNKNOWNFLAG, ("Unknown MODE flag",)))

    def _modes(self, room: str, *, joining: bool = False) -> dict[str, Any]:
        """The moderation plugin's ``modes`` of ``room`` (``flags``, ``bans``, ``mutes``,
        ``operators``: the members who are), asked with a ``modes`` request; empty
        without the plugin. ``joining``: the client is about to join ``room``, whose
        operators are remembered for its join's names list (:meth:`_prefixed`)."""
        if not moderation_on(self.hub):
            return {}
        with self._send_lock:
            self._captured = []
        try:
            self.hub.request(self.session, Request("modes", {"room": room}))
        except CommandError:
            pass  # no plugin keeps modes
        finally:
            with self._send_lock:
                captured, self._captured = self._captured, None
        fields = captured[0] if captured else {}
        if not joining:
            return fields
        operators = fields.get("operators") or []
        with self._send_lock:
            # Only the rooms the client is in, and this one: not every room a client
            # names (NAMES, WHO, MODE of rooms that do not exist would grow it forever).
            mine = {names.fold(name) for name in self.session.rooms.values()}
            self._ops = {key: ops for key, ops in self._ops.items() if key in mine}
            self._ops[names.fold(room)] = {names.fold(str(nick)) for nick in operators}
        return fields

    def _rooms_operated(self) -> dict[str, bool]:
        """Before the client's server operator status changes: each of its rooms, and
        whether it is an operator there (with moderation an OPER is one of every
        room; without, an empty dict: there are no operators)."""
        if not moderation_on(self.hub):
            return {}
        nick = names.fold(self.session.nick or "")
        return {room: nick in self._operators(room) for room in self.session.rooms.values()}

    def _tell_operator_changes(self, before: dict[str, bool]) -> None:
        """After it changed (``before``: :meth:`_rooms_operated`): each room where the
        client's being an operator changed is told, ``MODE #room +o nick`` (or ``-o``)
        from the server, as names lists will have it."""
        nick = names.fold(self.session.nick or "")
        for room, was in before.items():
            now = nick in self._operators(room)
            if now != was:
                shown = self.session.nick or ""
                text = f"{shown} is {'an' if now else 'no longer an'} operator of {room}"
                self.hub.announce(text, room, mode="+o" if now else "-o", arg=shown)

    def _prefixed(self, frame: Frame) -> Frame:
        """The client's own join, its members ``@``-prefixed if operators (as last
        asked: the join is rendered under the hub's lock, where plugins are not asked).
        Under the send lock."""
        ops = self._ops.get(names.fold(str(frame.fields.get("room"))))
        if not ops:
            return frame
        members = [("@" if names.fold(m) in ops else "") + m for m in frame.fields["members"]]
        return Frame("join", **{**frame.fields, "members": members})

    def _ask_modes(self, room: str, what: str) -> None:
        """Answer ``MODE #room`` (``324``), ``MODE #room b`` (``367``, ``368``) or ``q``
        (``728``, ``729``) from the moderation plugin's modes; without it, from what
        every room is."""
        fields = self._modes(room)
        # (The room, the nick and the server's name: what a list's line holds besides
        # the mask and who set it, to see whether the pair fits: see _masks.)
        around = len(f":{self.face.server_name} 000 {self.session.nick} {room} q ".encode())
        if what == "bans":
            lines = [
                Message(n.RPL_BANLIST, (room, mask, *setter))
                for mask, setter in _masks(fields, "bans", around)
            ]
            lines.append(Message(n.RPL_ENDOFBANLIST, (room, "End of channel ban list")))
        elif what == "mutes":  # the quiet list, as solanum (charybdis) has it
            lines = [
                Message(n.RPL_QUIETLIST, (room, "q", mask, *setter))
                for mask, setter in _masks(fields, "mutes", around)
            ]
            lines.append(Message(n.RPL_ENDOFQUIETLIST, (room, "q", "End of channel quiet list")))
        else:
            flags = fields.get("flags", [])
            letters = "".join(sorted(CHAN_MODES + "".join(FLAG_MODES.get(f, "") for f in flags)))
            lines = [Message(n.RPL_CHANNELMODEIS, (room, "+" + letters))]
        self.send(*lines)

    def channel_mode(self, room: str, changes: str, args: list[str]) -> None:
        """``MODE #room +o-b+imtM nick mask``: each change is the moderation plugin's
        chat command (``/op #room nick``...), whose announcement every member sees (IRC
        clients as ``MODE``); a refusal is its numeric (``482``), an unknown mode ``472``.
        The line's first change was charged with it (:meth:`mode`); each other costs a
        line of the flood allowance, as its command would."""
        sign, charged = "+", True
        listed: set[str] = set()  # the lists asked for (+b-b: the ban list once)
        for char in changes:
            if char in "+-":
                sign = char
                continue
            if not charged:
                try:
                    self._input(f"/mode {room} {sign}{char}")
                except CommandError as exc:
                    self.fail("MODE", room, exc)
                    continue
            charged = False
            command = MODE_COMMANDS.get(sign + char)
            if command is None:
                if char != "n":  # +n: every room is; -n cannot be
                    self.send(Message(n.ERR_UNKNOWNMODE, (char, "is unknown mode char to me")))
                # Its argument is used up all the same, as other servers' modes take
                # theirs: the next change must not take it (+vb bob mask: ban mask).
                if args and (char in UNKNOWN_WITH_ARG or (sign == "+" and char in UNKNOWN_SET_ARG)):
                    args.pop(0)
                continue
            arg = ""
            if char in "obq":
                if not args:
                    if char in "bq" and char not in listed:
                        listed.add(char)
                        self._ask_modes(room, "bans" if char == "b" else "mutes")
                    continue  # +o without a nick: nothing to do (as IRC servers do)
                arg = args.pop(0)
            line = f"/{command.format(room=room)}" if not arg else f"/{command} {room} {arg}"
            try:
                self.hub.run_command(self.session, self._text(line), room)
            except CommandError as exc:
                target = arg if exc.code == "no_such_nick" else room
                self.fail("MODE", target, exc)

    def _source(self) -> str:
        nick = self.protocol.nick
        return f"{nick}!{nick}@{USER_HOST}"

    def authenticate_again(self, params: tuple[str, ...]) -> None:
        """``AUTHENTICATE`` once registered: SASL is for registration here (no
        re-authentication): ``907`` (IRCv3 SASL 3.1); ``/identify`` identifies later."""
        self.send(Message(n.ERR_SASLALREADY, ("You have already registered; use /identify",)))

    def away(self, params: tuple[str, ...]) -> None:
        try:
            # Cut to AWAYLEN, as servers do; the hub keeps it for every face (/away).
            text = (
                self._text(params[0][: self.hub.config.limits.max_away])
                if params and params[0]
                else None
            )
            away = self.hub.set_away(self.session, text)
        except CommandError as exc:
            self.session.error(exc.code, exc.text, irc_command="AWAY")
            return
        if away:
            self.send(Message(n.RPL_NOWAWAY, ("You have been marked as being away",)))
        else:
            self.send(Message(n.RPL_UNAWAY, ("You are no longer marked as being away",)))

    def _whois_rooms(self, nick: str, rooms: list[str]) -> list[Message]:
        """``319`` lines: as many rooms a line as fit in IRC's 512 bytes (someone in
        many long-named rooms)."""
        asker = self.protocol.nick  # (the numeric's first parameter: whoever asked)
        head = len(f":{self.face.server_name} {n.RPL_WHOISCHANNELS} {asker} {nick} :".encode())
        lines: list[Message] = []
        line: list[str] = []
        size = head
        for room in rooms:
            cost = len(room.encode()) + 1
            if line and size + cost > MAX_NAMES_LINE:
                lines.append(Message(n.RPL_WHOISCHANNELS, (nick, " ".join(line))))
                line, size = [], head
            line.append(room)
            size += cost
        if line:
            lines.append(Message(n.RPL_WHOISCHANNELS, (nick, " ".join(line))))
        return lines

    def _remote(self, nick: str) -> RemoteMember | None:
        """The session on another node of a cluster called ``nick``, if any."""
        relay = self.hub.relay
        return None if relay is None else relay.member(nick)

    def _whois_remote(self, member: RemoteMember) -> list[Message]:
        """``WHOIS`` of another node's member: what the cluster knows (its rooms, its
        account, its away message; not its realname)."""
        nick, server = member.nick, self.face.server_name
        lines = [Message(n.RPL_WHOISUSER, (nick, nick, USER_HOST, "*", nick))]
        lines += self._whois_rooms(nick, member.rooms)
        lines.append(Message(n.RPL_WHOISSERVER, (nick, server, "chatkit (another node)")))
        if member.account is not None:
            lines.append(Message(n.RPL_WHOISACCOUNT, (nick, member.account, "is logged in as")))
        if member.away:
            lines.append(Message(n.RPL_AWAY, (nick, member.away)))
        lines.append(Message(n.RPL_ENDOFWHOIS, (nick, "End of /WHOIS list.")))
        return lines

    def ison(self, params: tuple[str, ...]) -> None:
        if not params:
            self.send(Message(n.ERR_NEEDMOREPARAMS, ("ISON", "Not enough parameters")))
            return
        online = []
        for nick in " ".join(params).split()[:MAX_ISON]:
            found = self.hub.find(nick)
            if found is not None and found.nick is not None:
                online.append(found.nick)
            else:
                remote = self._remote(nick)
                if remote is not None:
                    online.append(remote.nick)
        self.send(Message(n.RPL_ISON, (" ".join(online),)))

    def userhost(self, params: tuple[str, ...]) -> None:
        if not params:
            self.send(Message(n.ERR_NEEDMOREPARAMS, ("USERHOST", "Not enough parameters")))
            return
        replies = []
        for nick in params[:MAX_USERHOST]:
            found = self.hub.find(nick)
            if found is not None and found.nick is not None:
                away = "-" if found.away else "+"
                oper = "*" if _irc_info(found).get("oper") else ""  # (RFC 2812 6: an operator)
                replies.append(f"{found.nick}{oper}={away}{found.nick}@{USER_HOST}")
            elif (remote := self._remote(nick)) is not None:
                away = "-" if remote.away else "+"
                replies.append(f"{remote.nick}={away}{remote.nick}@{USER_HOST}")
        self.send(Message(n.RPL_USERHOST, (" ".join(replies),)))

    def motd(self, params: tuple[str, ...]) -> None:
        if self.hub.commands.get("motd") is not None:
            self.hub.run_command(self.session, "/motd", None)  # its reply is the MOTD
        else:
            self.send(Message(n.ERR_NOMOTD, ("MOTD File is missing",)))

    def version(self, params: tuple[str, ...]) -> None:
        """``VERSION``: ``351``, then the ``005`` lines (what the server supports)."""
        text = "chatkit: one chat, many faces"
        version = Message(n.RPL_VERSION, (f"chatkit-{__version__}.", self.face.server_name, text))
        self.send(version, *self.protocol.isupport_lines())

    def time_reply(self, params: tuple[str, ...]) -> None:
        """``TIME``: ``391`` with the server's time (UTC: a Unix timestamp, and for people)."""
        now = datetime.now(UTC)
        when = now.strftime("%A %B %d %Y -- %H:%M:%S +00:00")
        server = self.face.server_name
        self.send(Message(n.RPL_TIME, (server, str(int(now.timestamp())), "0", when)))

    def help_reply(self, params: tuple[str, ...]) -> None:
        """``HELP``: the IRC commands, then the chat commands one may send as IRC commands,
        as ``704``, ``705`` lines and ``706``; ``HELP subject``: that command's usage, or
        ``524``. (``HELPOP`` is the same.)"""
        subject = params[0].lstrip("/").upper() if params and params[0] else ""
        if not subject:
            self.send(*_help_lines("*", self._help_index()))
            return
        usage = IRC_HELP.get(subject)
        command = self.hub.commands.get(subject.lower())
        if usage is not None:
            text = [usage]
        elif command is not None:
            text = [f"{subject} {command.usage}".rstrip(), f"{command.help} [{command.plugin}]"]
        else:
            self.send(Message(n.ERR_HELPNOTFOUND, (subject, "No help available on this topic")))
            return
        self.send(*_help_lines(subject, text))

    def _help_index(self) -> list[str]:
        """``HELP``'s text: every IRC command, then the chat commands IRC does not have."""
        irc = sorted(IRC_HELP)
        text = [f"chatkit {__version__}: IRC commands (HELP <command> for one):"]
        text += [" ".join(irc[i : i + 10]) for i in range(0, len(irc), 10)]
        chat = [c for c in self.hub.commands.all() if c.name.upper() not in IRC_HELP]
        if chat:
            text += ["", "Chat commands, sent as IRC commands (/quote HISTORY 20 in irssi):"]
            text += [f"{f'{c.name.upper()} {c.usage}'.rstrip()}: {c.help}" for c in chat]
        return text

    def admin_reply(self, params: tuple[str, ...]) -> None:
        """``ADMIN``: ``256`` to ``259`` (RFC 2812 3.4.9). chatkit keeps no
        administrator's details: the network, the software, and where to ask (the
        server operators, over ``/msg``)."""
        server = self.face.server_name
        self.send(
            Message(n.RPL_ADMINME, (server, "Administrative info")),
            Message(n.RPL_ADMINLOC1, (f"{self.face.network} ({server})",)),
            Message(n.RPL_ADMINLOC2, (f"chatkit {__version__}",)),
            Message(n.RPL_ADMINEMAIL, ("no address: ask a server operator",)),
        )

    def info_reply(self, params: tuple[str, ...]) -> None:
        """``INFO``: ``371`` lines on the software, then ``374``."""
        self.send(
            Message(n.RPL_INFO, (f"chatkit {__version__}: one chat, many faces",)),
            Message(n.RPL_ENDOFINFO, ("End of /INFO list.",)),
        )

    def lusers(self, params: tuple[str, ...]) -> None:
        self.send(*self._luser_lines())

    def _luser_counts(self) -> tuple[int, int, int]:
        """Users logged in, the invisible among them, and rooms (a walk of every session)."""
        sessions = self.hub.sessions()
        hidden = sum(1 for other in sessions if _irc_info(other).get("invisible"))
        return len(sessions), hidden, len(self.hub.rooms())

    def _luser_lines(self, counts: tuple[int, int, int] | None = None) -> list[Message]:
        """``LUSERS``' answer: ``251``, ``254``, ``255``, ``265``, ``266``, from ``counts``
        (:meth:`_luser_counts`: counted now if not given)."""
        users, hidden, rooms = counts or self._luser_counts()
        peak = str(max(self.hub.peak, users))
        return [
            Message(
                n.RPL_LUSERCLIENT,
                (f"There are {users - hidden} users and {hidden} invisible on 1 servers",),
            ),
            Message(n.RPL_LUSERCHANNELS, (str(rooms), "channels formed")),
            Message(n.RPL_LUSERME, (f"I have {users} clients and 0 servers",)),
            # One server: its local users are the network's.
            Message(
                n.RPL_LOCALUSERS, (str(users), peak, f"Current local users {users}, max {peak}")
            ),
            Message(
                n.RPL_GLOBALUSERS, (str(users), peak, f"Current global users {users}, max {peak}")
            ),
        ]

    def chathistory(self, params: tuple[str, ...]) -> None:
        """``CHATHISTORY sub target selector... limit`` (IRCv3 draft/chathistory): a
        ``history`` request to the plugins; the reply is a ``chathistory`` batch."""
        if not history_on(self.hub):
            self.send(Message(n.ERR_UNKNOWNCOMMAND, ("CHATHISTORY", "Unknown command")))
            return
        sub = params[0].upper() if params else "*"
        if sub == "TARGETS":
            self.chathistory_targets(params[1:])
            return
        wanted = {"LATEST": 3, "BEFORE": 3, "AFTER": 3, "AROUND": 3, "BETWEEN": 4}
        if sub not in wanted:
            self._fail("INVALID_PARAMS", sub, text="Unknown CHATHISTORY subcommand")
            return
        if len(params) < wanted[sub] + 1:
            self._fail("NEED_MORE_PARAMS", sub, text="Missing parameters")
            return
        target, limit_text = params[1], params[wanted[sub]]
        try:
            points = [
                None if sub == "LATEST" and p == "*" else _point(p) for p in params[2 : wanted[sub]]
            ]
            limit = int(limit_text) if limit_text.isdecimal() else 0
            if limit < 1:
                raise ValueError(limit_text)
        except ValueError as exc:
            self._fail("INVALID_PARAMS", sub, str(exc), text="Invalid selector or limit")
            return
        fields: dict[str, Any] = {"limit": min(limit, history_limit(self.hub))}
        fields["room" if target.startswith("#") else "with"] = target
        first = points[0]
        if sub == "LATEST" and first is not None:
            fields["after"] = first[1]
        elif sub == "BEFORE" and first is not None:
            fields["before"] = first[0]
        elif sub == "AFTER" and first is not None:
            fields.update(after=first[1], oldest=True)
        elif sub == "AROUND" and first is not None:
            fields["around"] = first[0]
        elif sub == "BETWEEN" and first is not None and points[1] is not None:
            second = points[1]
            if first[0] <= second[0]:  # counted from the first, forwards
                fields.update(after=first[1], before=second[0], oldest=True)
            else:  # counted from the first, backwards
                fields.update(before=first[0], after=second[1])
        request = Request("history", fields)
        with self._send_lock:
            self.protocol.expect_history(target)
        try:
            self.hub.allow_input(self.session, request)
            self.hub.request(self.session, request)
        except CommandError as exc:
            if exc.code in ("not_in_room", "bad_usage", "no_such_room", "no_such_nick"):
                text = f"Messages could not be retrieved: {exc.text}"  # why: not in it...
                self._fail("INVALID_TARGET", sub, target, text=text)
            elif exc.code == "bad_frame":
                self._fail("INVALID_PARAMS", sub, text=exc.text)
            else:
                self._fail("MESSAGE_ERROR", sub, target, text=exc.text)
        finally:
            with self._send_lock:
                self.protocol.expect_history(None)  # answered (or refused): no batch pending

    def chathistory_targets(self, params: tuple[str, ...]) -> None:
        """``CHATHISTORY TARGETS timestamp=A timestamp=B limit``: the rooms the client
        is in and its private conversations with messages between A and B (both
        included), each with its latest message's time, in a
        ``draft/chathistory-targets`` batch, oldest first; at most ``limit`` of them,
        counted from A (the earliest if A is before B, else the latest)."""
        if len(params) < 3:
            self._fail("NEED_MORE_PARAMS", "TARGETS", text="Missing parameters")
            return
        try:
            if not all(p.startswith("timestamp=") for p in params[:2]):
                raise ValueError(params[0] if not params[0].startswith("timestamp=") else params[1])
            first, second = _point(params[0]), _point(params[1])
            limit = int(params[2]) if params[2].isdecimal() else 0
            if limit < 1:
                raise ValueError(params[2])
        except ValueError as exc:
            self._fail("INVALID_PARAMS", "TARGETS", str(exc), text="Invalid timestamp or limit")
            return
        low, high = min(first[0], second[0]), max(first[1], second[1])
        fields = {
            "after": max(low - 1, 0),
            "before": min(high + 1, MAX_ID),
            "limit": min(limit, history_limit(self.hub)),
            "oldest": first[0] <= second[0],
        }
        request = Request("history_targets", fields)
        try:
            self.hub.allow_input(self.session, request)
            self.hub.request(self.session, request)
        except CommandError as exc:
            self._fail("MESSAGE_ERROR", "TARGETS", "*", text=exc.text)

    def _target_lines(self, frame: Frame) -> list[Message]:
        """The ``CHATHISTORY TARGETS`` lines of a ``history_targets`` frame (in a batch
        if the client negotiated ``batch``). Under the send lock."""
        server = self.face.server_name
        batch = "batch" in self.protocol.caps
        ref = f"t{next(self._target_batches)}"
        tags = {"batch": ref} if batch else {}
        lines = [
            Message("CHATHISTORY", ("TARGETS", str(t["target"]), str(t["ts"])), server, tags)
            for t in frame.fields.get("targets") or []
        ]
        if batch:
            start = Message("BATCH", (f"+{ref}", "draft/chathistory-targets"), server)
            lines = [start, *lines, Message("BATCH", (f"-{ref}",), server)]
        return lines

    def _fail(self, code: str, *context: str, text: str) -> None:
        """A ``FAIL CHATHISTORY`` standard reply."""
        self.send(Message("FAIL", ("CHATHISTORY", code, *context, text), self.face.server_name))

    def oper(self, params: tuple[str, ...]) -> None:
        """``OPER name password`` against ``[faces.irc.operators]``: ``381`` and user mode
        ``+o`` (shown in ``WHOIS`` and ``WHO``), and a server operator to the plugins
        (:attr:`Session.operator`: with ``moderation``, ``KILL`` and the like)."""
        if len(params) < 2:
            self.send(Message(n.ERR_NEEDMOREPARAMS, ("OPER", "Not enough parameters")))
            return
        self._input("/oper")  # attempts count against flood control, as commands do
        name, password = params[0], params[1]
        address = self.link.address[0]
        prefix = self.hub.config.limits.ipv6_prefix
        wait = self.face.oper_wait(address, prefix)
        if wait:
            # Guessing: each failure from an address doubles its wait, whatever the
            # connection (a reconnect does not reset it).
            self.send(
                Message(n.RPL_TRYAGAIN, ("OPER", f"Too many failed OPERs: wait {wait:.0f} s"))
            )
            return
        stored = self.face.operators.get(name)
        # An unknown name is told as a wrong password is: no listing the names.
        if stored is None or not check_password(password, stored):
            self.face.oper_failed(address, ipv6_prefix=prefix)
            log.warning("failed OPER as %r by %s from %s", name, self.protocol.nick, address)
            self.send(Message(n.ERR_PASSWDMISMATCH, ("Password incorrect",)))
            return
        self.face.oper_failed(address, succeeded=True, ipv6_prefix=prefix)
        log.info("%s is an IRC operator (OPER %s)", self.protocol.nick, name)
        self.session.data["irc"]["oper"] = name
        ops = self._rooms_operated()
        self.session.operator = True  # a server operator, to plugins (moderation's /kill)
        self.modes.add("o")
        self.send(
            Message(n.RPL_YOUREOPER, ("You are now an IRC operator",)),
            Message("MODE", (self.protocol.nick, "+o"), self._source()),
        )
        self._tell_operator_changes(ops)


@dataclass
class _Multiline:
    """A client's ``draft/multiline`` batch being received."""

    ref: str
    target: str
    command: str | None = None
    """PRIVMSG or NOTICE: every line of a batch is the same."""
    lines: list[tuple[str, bool]] = field(default_factory=list)
    """Each line's text, and whether it continues the one before (concat)."""
    size: int = 0


def _masks(fields: dict[str, Any], table: str, around: int) -> list[tuple[str, tuple[str, ...]]]:
    """Each mask of a ``modes`` frame's ``bans`` or ``mutes``, with who set it and when
    (Unix seconds) where the plugin kept them: ``367 #room mask [who set-ts]``, as the
    modern IRC client protocol has it, and the same for ``728``.

    The pair is left out where the line would not hold it whole (``around``: the bytes of
    the rest of the line; a line is cut from its end, and a time cut short is another
    time), where the mask could only be the line's trailing parameter (a leading ``:``),
    and where the time is not one (unreadable, or before 1970): a mask alone is a line
    every client reads."""
    set_by = fields.get("set_by")
    known = set_by.get(table) if isinstance(set_by, dict) else None
    out: list[tuple[str, tuple[str, ...]]] = []
    for mask in fields.get(table, []):
        mask = str(mask)
        setter: tuple[str, ...] = ()
        about = known.get(mask) if isinstance(known, dict) else None
        if isinstance(about, dict) and about.get("nick") and not mask.startswith(":"):
            try:
                when = int(datetime.fromisoformat(str(about.get("ts"))).timestamp())
            except (ValueError, OverflowError, OSError):
                when = -1
            who = source(str(about["nick"]))
            size = around + len(f"{mask} {who} {when}".encode("utf-8", "replace")) + 2
            if when >= 0 and size <= MAX_LINE_BYTES:
                setter = (who, str(when))
        out.append((mask, setter))
    return out


def _topic_lines(topic: dict[str, str]) -> list[Message]:
    """``332`` and ``333`` (who set it, when) for a room's topic."""
    try:
        when = str(int(datetime.fromisoformat(topic["ts"]).timestamp()))
    except ValueError:
        when = "0"
    room = topic["room"]
    return [
        Message(n.RPL_TOPIC, (room, topic["topic"])),
        Message(n.RPL_TOPICWHOTIME, (room, source(topic["nick"]), when)),
    ]


def _point(selector: str) -> tuple[int, int]:
    """A ``msgid=`` or ``timestamp=`` selector as message ids ``(below, above)``: the
    messages before it have ids below the first, those after it ids above the second.

    chatkit's ids are the milliseconds of their ``ts`` times 1000 plus a counter, so a
    time is the range of ids of its millisecond. Raises :class:`ValueError`.
    """
    kind, _, value = selector.partition("=")
    if kind == "msgid":
        if not value.isdecimal() or not 0 < int(value) <= MAX_ID:
            raise ValueError(selector)
        return int(value), int(value)
    if kind == "timestamp":
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(selector) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        ms = round(when.timestamp() * 1000)
        if ms < 0:
            raise ValueError(selector)
        return ms * 1000, ms * 1000 + 999
    raise ValueError(selector)


_WILDCARDS = frozenset("*?")


def _ctcp(text: str) -> tuple[str, bool] | None:
    """``(text, action)`` of a PRIVMSG's text; ``None`` for a CTCP message other than
    ACTION (see :meth:`IrcChannel.ctcp`)."""
    if not text.startswith("\x01"):
        return text, False
    body = text[1:].removesuffix("\x01")
    kind, _, rest = body.partition(" ")
    if kind.upper() == "ACTION":
        return rest, True
    return None


# Commands that answer from the server's state (or change only the client's own away
# message): each line costs a line of the flood allowance, as a /who or /rooms does on the
# line face. The others are charged where they act: each room of a JOIN or PART, each
# target of a PRIVMSG, a TOPIC, a MODE, a command; PING, PONG and QUIT cost nothing.
_QUERIES = frozenset(
    {"ADMIN", "AWAY", "HELP", "HELPOP", "INFO", "ISON", "LIST", "LUSERS", "MOTD", "NAMES", "TIME"}
    | {"USERHOST", "VERSION", "WHO", "WHOIS", "WHOWAS"}
)

IRC_HELP: dict[str, str] = {
    "AUTHENTICATE": "AUTHENTICATE PLAIN: SASL, before registration (CAP REQ sasl)",
    "AWAY": "AWAY [:message]: mark yourself away with a message; AWAY alone: back",
    "CAP": "CAP LS|LIST|REQ|END: negotiate IRCv3 capabilities",
    "CHATHISTORY": "CHATHISTORY LATEST|BEFORE|AFTER|AROUND|BETWEEN|TARGETS ...: history",
    "HELP": "HELP [command]: the commands, or one of them",
    "HELPOP": "HELPOP [command]: the same as HELP",
    "ADMIN": "ADMIN: who runs this server",
    "INFO": "INFO: about this server's software",
    "ISON": "ISON nick [nick ...]: which of them are connected",
    "JOIN": "JOIN #room[,#room ...]: join rooms (a new one is created); JOIN 0: leave all",
    "KICK": "KICK #room nick[,nick ...] [:reason]: remove someone from a room (its operators)",
    "LIST": "LIST [#room,...]: the rooms and how many are in each",
    "LUSERS": "LUSERS: how many are connected",
    "MODE": "MODE #room [+b|+q|changes ...]: a room's modes, bans, mutes; MODE yournick [+i]",
    "MOTD": "MOTD: the message of the day",
    "NAMES": "NAMES #room[,#room ...]: who is in a room (up to four rooms)",
    "NICK": "NICK newnick: change your nick",
    "NOTICE": "NOTICE #room|nick :text: a notice (never answered with an error)",
    "OPER": "OPER name password: become an IRC operator",
    "PART": "PART #room[,#room ...] [:reason]: leave rooms",
    "PING": "PING token: the server answers PONG token",
    "PRIVMSG": "PRIVMSG #room|nick[,...] :text: a message to a room or someone",
    "QUIT": "QUIT [:reason]: leave the chat",
    "TAGMSG": "TAGMSG #room|nick: client-only tags (typing), with message-tags",
    "TIME": "TIME: the server's time",
    "TOPIC": "TOPIC #room [:text]: show or set a room's topic (TOPIC #room : clears it)",
    "USERHOST": "USERHOST nick [nick ...]: their user@host, and whether away",
    "VERSION": "VERSION: the server's version",
    "WHO": "WHO #room|nick|mask [o]: who they are (mask: * and ?; 0: everyone)",
    "WHOIS": "WHOIS nick: about someone: rooms, account, away",
    "WHOWAS": "WHOWAS nick: no nick history is kept here",
}
"""``HELP``'s line for each IRC command the face answers (a test keeps it complete)."""


def _help_lines(subject: str, text: list[str]) -> list[Message]:
    """``704`` with the first line, ``705`` with the others, ``706``."""
    lines = [Message(n.RPL_HELPSTART, (subject, text[0]))]
    lines += [Message(n.RPL_HELPTXT, (subject, line)) for line in text[1:]]
    lines.append(Message(n.RPL_ENDOFHELP, (subject, "End of /HELP")))
    return lines


_HANDLERS: dict[str, Callable[[IrcChannel, tuple[str, ...]], None]] = {
    "ADMIN": IrcChannel.admin_reply,
    "AUTHENTICATE": IrcChannel.authenticate_again,
    "AWAY": IrcChannel.away,
    "CHATHISTORY": IrcChannel.chathistory,
    "HELP": IrcChannel.help_reply,
    "HELPOP": IrcChannel.help_reply,
    "ISON": IrcChannel.ison,
    "JOIN": IrcChannel.join,
    "KICK": IrcChannel.kick,
    "LIST": IrcChannel.list_rooms,
    "INFO": IrcChannel.info_reply,
    "LUSERS": IrcChannel.lusers,
    "MODE": IrcChannel.mode,
    "MOTD": IrcChannel.motd,
    "NAMES": IrcChannel.names_reply,
    "NICK": IrcChannel.nick,
    "NOTICE": IrcChannel.notice,
    "OPER": IrcChannel.oper,
    "PART": IrcChannel.part,
    "PRIVMSG": IrcChannel.privmsg,
    "QUIT": IrcChannel.quit,
    "TIME": IrcChannel.time_reply,
    "TOPIC": IrcChannel.topic,
    "USERHOST": IrcChannel.userhost,
    "VERSION": IrcChannel.version,
    "WHO": IrcChannel.who,
    "WHOIS": IrcChannel.whois,
    "WHOWAS": IrcChannel.whowas,
}
"""IRC commands and their handlers; any other goes to :meth:`IrcChannel.chat_command`."""
