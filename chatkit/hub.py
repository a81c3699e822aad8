"""The chat itself: who is logged in, which rooms exist, and where each line goes.

Every method runs on the reader thread of the client that caused it. One lock
guards all chat state; it is never held across a hook call or socket I/O. Frames
are queued to recipients under the lock (a buffer append each), so every member of
a room sees that room's events in the same order, the order of their ids; the
writer thread is woken once, after the lock is released.

Messages and joins are delivered through lanes (:mod:`chatkit.lanes`): each gets
an entry in its room's lane under the lock that gives it its id, and is delivered
in lane order. Without a plugin that stores messages or replays rooms, an entry is
born ready and delivered at once, under that same lock; with one, a message is
stored before anyone receives it, and a joiner gets the room's replay, then live
traffic, with nothing missing or doubled (the lanes module explains how). One
shortcut: with nothing to store, a burst's messages (:meth:`Hub.say_run`) whose
room's lane is empty are published under that lock with no entry at all.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from chatkit import names
from chatkit.commands import CommandContext, CommandRegistry, split_command
from chatkit.errors import CommandError
from chatkit.events import Hello, Message, Request, Say
from chatkit.frames import Frame
from chatkit.lanes import Lane, Lanes, MessageEntry
from chatkit.names import valid_room
from chatkit.protocol import clean_text
from chatkit.results import Drop, Reject, Wait
from chatkit.version import __version__

if TYPE_CHECKING:
    from chatkit.config import Config
    from chatkit.hooks import HookRunner
    from chatkit.session import Session
    from chatkit.transport import Feed, Outbox

__all__ = ["Hub", "Relay", "message_frame", "valid_nick", "valid_room"]

log = logging.getLogger(__name__)

_NICK_EXTRA = set("_-.[]{}|^`")
READY_EVERY = 1.0  # seconds during which readiness() answers what the plugins last said
SERVICE_NICKS = frozenset(
    ("nickserv", "chanserv", "operserv", "memoserv", "hostserv", "botserv", "saslserv", "global")
)
"""Nicks nobody may take (folded): IRC networks' services, to which IRC clients send
passwords (``PRIVMSG NickServ :IDENTIFY ...``): whoever held one would read them. The IRC
face answers ``NickServ``'s ``IDENTIFY`` and ``REGISTER`` itself."""
_SERVICE_SKELETONS = frozenset(names.skeleton(nick) for nick in SERVICE_NICKS)

# A Wait (chatkit_allow_input) holds a reader back for its seconds, within these bounds (a
# plugin's Wait(0) returned over and over would spin a core), looking every WAIT_SLICE
# whether its connection is closing.
MIN_WAIT = 0.01
MAX_WAIT = 60.0
WAIT_SLICE = 0.05


RESUME_BYTES = 18  # random bytes of a welcome's resume secret (24 characters)
RESUMED_PREFIX = "Gone"  # a session a reconnect took its nick from is renamed Gone<id>
MAX_LOGIN_REFUSALS = 10
"""Rooms of one ``hello`` refused with an ``error`` each; the rest are one more."""


def valid_nick(nick: str, max_len: int) -> str | None:
    """Why ``nick`` is not acceptable, or ``None`` if it is."""
    rule = (
        f"nicks are 1 to {max_len} letters, digits or _-.[]{{}}|^` "
        "and do not start with a digit, '-' or '.'"
    )
    if not nick or len(nick) > max_len:
        return rule
    if nick[0].isdigit() or nick[0] in "-.":
        return rule
    if not all(c.isalnum() or c in _NICK_EXTRA for c in nick):
        return rule
    if not (nick.isascii() or names.BLANK_LETTERS.isdisjoint(nick)):
        return rule  # a letter that shows as nothing
    if names.skeleton(nick) in _SERVICE_SKELETONS:  # (NickServ, or one that looks like it)
        return f"{nick} is the name of an IRC service, which no one may take"
    return None


_key = names.fold  # a room's or nick's key in the hub's maps
_OWN_FIELDS = frozenset(("type", "code", "text"))  # an error frame's, not a Reject's details


def _room_looks(room: str) -> tuple[str, str]:
    """The two keys a room name looks like another by: its skeleton (in any case), and
    its skeleton as shown (a capital I for an l: ``#generaI``), marked apart."""
    return names.skeleton(room), "\x00" + names.shown_skeleton(room)


def _stopping() -> CommandError:
    """The refusal of a message said as the server stops: not stored, not sent (what
    was accepted before is delivered before the shutdown notice). A new one each time:
    an exception raised again keeps the tracebacks of every raise."""
    return CommandError("the server is shutting down: not sent", "closing")


def _shared_reason(reasons: list[str]) -> str:
    """One leave frame's reason for several rooms: theirs if they see the same, else the
    bare ``quit`` (one of them did not let the client's words through)."""
    first = reasons[0]
    return first if all(r == first for r in reasons) else first.partition(": ")[0]


def _one_line(reason: str) -> str:
    """A leave's reason on one line: a client's line breaks in it (``/part #a x\n12:00
    <admin> ...``) would print as a line of chat of someone else's."""
    return " ".join(reason.splitlines())


def _iso(ms: int) -> str:
    """``ms`` (since the epoch) as UTC ISO 8601 with milliseconds. The part up to the
    second is cached: formatting a datetime for every message cost 4 % of a fan-out;
    and so is the last millisecond's text, which a burst's messages share."""
    global _iso_second, _iso_milli
    last = _iso_milli  # one read: another thread may replace it meanwhile
    if last[0] == ms:
        return last[1]
    second, milli = divmod(ms, 1000)
    cached = _iso_second  # one read: another thread may replace it meanwhile
    if cached[0] != second:
        when = datetime.fromtimestamp(second, UTC)
        cached = _iso_second = (second, when.strftime("%Y-%m-%dT%H:%M:%S"))
    text = f"{cached[1]}.{milli:03d}Z"
    _iso_milli = (ms, text)
    return text


_iso_second: tuple[int, str] = (-1, "")  # the last second _iso formatted, and its text
_iso_milli: tuple[int, str] = (-1, "")  # the last millisecond _iso formatted, and its text


def utc_now() -> str:
    """The current time as UTC ISO 8601 with milliseconds (``2026-11-24T09:45:00.123Z``)."""
    return _iso(time.time_ns() // 1_000_000)


class IdClock:
    """Message ids: unique and time-ordered, also across restarts.

    An id is milliseconds since the epoch times 1000 plus a counter, so ids keep
    increasing as long as the clock does not go back by more than the gap between
    two runs. Not thread-safe: the hub calls it under its lock.
    """

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> tuple[int, str]:
        """A new id and its timestamp (UTC ISO 8601 with milliseconds)."""
        self._last = max(self._last + 1, time.time_ns() // 1_000_000 * 1000)
        return self._last, _iso(self._last // 1000)

    @property
    def last(self) -> int:
        """The last id given out (0 before the first)."""
        return self._last

    def advance(self, last: int) -> None:
        """Make every later id greater than ``last`` (e.g. the last one stored)."""
        self._last = max(self._last, last)


class Relay(Protocol):
    """What a hub in a cluster sends its messages through: the builtin ``cluster`` plugin
    is one (docs/cluster.md). A plugin sets :attr:`Hub.relay` at ``chatkit_server_start``.

    With a relay, a room or private message that passed the filters on this node is
    handed to :meth:`publish` instead of being given an id and delivered here: the
    relay sequences it with every other node's (one order per room, cluster-wide) and
    delivers it on this node too, through :meth:`Hub.deliver`, in that order. The
    store hooks are not called for it (the relay feeds the history it keeps);
    ``chatkit_on_message`` runs once it is delivered here.
    """

    def publish(self, session: Session, message: Message) -> Callable[[], None]:
        """Send ``message`` (from ``session``, filters passed) to be sequenced across
        the cluster; return at once a function that waits until it is delivered to
        this node's recipients, with ``message.id`` and ``message.ts`` set.

        Both run on the sender's reader thread, no lock held: the hub calls the
        function at once, or, for a reader's own lines (``defer``), in
        :meth:`Hub.settle`, so a client's consecutive messages are sent in a
        pipeline. The function raises :class:`CommandError` if the message was not
        delivered (``no_such_nick``...).
        """
        ...

    def members(self, room: str) -> list[str]:
        """The nicks of the other nodes' members of ``room``. Any thread; also called
        under the hub's lock (for a joiner's list of members), so it must not call
        into the hub."""
        ...

    def rooms(self) -> dict[str, int]:
        """The rooms of the other nodes' members, each with their number there (any
        thread, no hub lock)."""
        ...

    def locate(self, nick: str) -> str | None:
        """The nick, as shown, of a session on another node called ``nick`` (any
        case), or ``None`` (any thread, no hub lock)."""
        ...

    def member(self, nick: str) -> RemoteMember | None:
        """What this node knows of the session on another node called ``nick`` (any
        case), or ``None``: for ``WHOIS`` and the like (any thread, no hub lock)."""
        ...

    def renamed(self, session: Session, old: str) -> None:
        """``session``, of this node, is called ``old`` no more: called under the hub's
        lock as its new nick takes effect, before anyone can find it by either, so
        that the relay knows which nick its sequence has for it until the rename is
        sequenced too (a private message sequenced before the rename is for it, under
        ``old``). Must not call into the hub."""
        ...

    def forget(self, account: str, why: str) -> None:
        """Have the other nodes make their sessions identified to ``account`` no
        longer identified (:meth:`Hub.forget_account`: ``why`` says what happened to
        it). Any thread; returns at once."""

    def everyone(self) -> list[RemoteMember]:
        """Every session on the other nodes, as :meth:`member` describes them: for a
        ``WHO`` of a mask (any thread, no hub lock)."""
        ...


class RemoteMember(NamedTuple):
    """A session on another node of a cluster, as :meth:`Relay.member` describes it."""

    nick: str
    """Its nick, as shown."""
    rooms: list[str]
    """The rooms it is in (display names)."""
    account: str | None
    """The account it is identified to, if any."""
    away: str | None = None
    """Its away message, if it is away."""


class Room:
    """A room and its members. Guarded by the hub's lock."""

    def __init__(self, name: str, feed: Feed) -> None:
        self.name = name
        """The display name, as its first member typed it."""
        self.members: dict[int, Session] = {}
        """Members by session id, in join order."""
        self.feed = feed
        """The members' transports, as the outbox fans the room's messages out to them:
        kept with :attr:`members` (added and removed under the same acquisition)."""
        self.lane = Lane(name, self.members.values(), feed)
        """Deliveries to the room waiting for their turn, in id order (chatkit.lanes).
        A room with entries here is kept even when it has no members."""
        self.topic: dict[str, str] | None = None
        """The room's topic (the ``topic`` frame's fields), or ``None``. Kept in memory
        while the room exists."""
        self.created = time.time()
        """When it was created (on this server): IRC's ``329``."""


class Hub:
    """Sessions, nicks (unique ignoring case, width and look-alike letters), rooms and routing."""

    def __init__(
        self,
        config: Config,
        hooks: HookRunner,
        commands: CommandRegistry,
        outbox: Outbox,
    ) -> None:
        self.config = config
        """The server's configuration."""
        self.hooks = hooks
        """Calls the plugins' hooks."""
        self.commands = commands
        """The registered commands."""
        self.closing = False
        """Set at shutdown: leaving clients are no longer announced to the others."""
        self.stopping = False
        """Set at shutdown, before :attr:`closing`: new messages are refused (``closing``)
        while those accepted are delivered (:meth:`undelivered` counts them)."""
        self._outbox = outbox
        # Synchronize access to the chat state: _sessions, _rooms, _ids, each
        # session's nick, rooms and current_room, and the lanes with their entries
        # (self._lanes takes it too). Never held across a hook call or socket I/O;
        # frames are only appended to send queues under it.
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}  # folded nick (names.fold) -> session
        self._rooms: dict[str, Room] = {}  # folded room name -> room
        # Look-alike names (names.skeleton): the skeleton of each nick and room in use,
        # so a name that looks like one in use is refused. The default room's is kept
        # for good, so no room can pass for it even while it is empty.
        self._nick_skeletons: dict[str, Session] = {}
        # ... and each nick's skeleton as shown (names.shown_skeleton: case kept), for
        # what folding hides: a capital I passing for an l.
        self._nick_looks: dict[str, Session] = {}
        # A room's two keys (_room_looks: its skeleton, and its skeleton as shown) ->
        # the room (folded) that holds them.
        self._room_skeletons: dict[str, str] = dict.fromkeys(
            _room_looks(config.default_room), _key(config.default_room)
        )
        self._ids = IdClock()
        # Sequenced delivery (chatkit.lanes): it shares this lock and calls back, under
        # it, to queue frames, to make a joiner a member, and to forget an empty room.
        self._lanes = Lanes(
            self._lock,
            hooks,
            fanout=self._fanout_many,
            enter=self._admit,
            emptied=self._lane_emptied,
            wake=outbox.wake,
            publish=self._publish,
        )
        self.relay: Relay | None = None
        """Set by a plugin (the builtin ``cluster``) that sequences messages across
        several servers: see :class:`Relay`. ``None``: messages are delivered here."""
        self._any_relayed = False  # set once a message went through the relay (see settle)
        # When the plugins were last asked whether the server is ready, and what they said
        # (see readiness): replaced whole, read without a lock.
        self._readiness: tuple[float, list[str]] = (float("-inf"), [])
        # Held by the one reader asking the plugins (see readiness); guards nothing else.
        self._ready_lock = threading.Lock()
        self.deliveries = 0
        """Chat frames (messages, joins, leaves, nicks, notices) queued to recipients
        since start (a metric; under the lock)."""
        self.logins = 0
        """Logins since start (a metric; under the lock)."""
        self.peak = 0
        """The most sessions logged in at once since start (IRC's ``LUSERS``; under the lock)."""
        self.messages = 0
        """Messages (room and private) accepted since start (a metric; under the lock)."""

    def prepare(self) -> None:
        """Decide, once the plugins are configured, what deliveries wait for.

        A message waits to be stored when a plugin implements
        ``chatkit_store_messages`` or ``chatkit_store_message``, a join for its
        replay when one implements ``chatkit_room_replay``; otherwise each is
        delivered at once, under the lock that gave it its place (see
        :mod:`chatkit.lanes`).
        """
        self._lanes.prepare()

    def ensure_ids_after(self, last_id: int) -> None:
        """Make every message id from now on greater than ``last_id``.

        For a plugin that stores messages, at ``chatkit_server_start``: ids then
        stay unique and increasing even if the clock went back since the last run.
        """
        with self._lock:
            self._ids.advance(last_id)

    # -- reading the state (any thread) ---------------------------------------

    def find(self, nick: str) -> Session | None:
        """The logged-in session called ``nick`` (any case), or ``None``."""
        with self._lock:
            found = self._sessions.get(_key(nick))
            return found if found is not None and found.welcomed else None

    def find_like(self, nick: str) -> Session | None:
        """The logged-in session whose nick is ``nick`` or looks like it (the same
        :func:`~chatkit.skeleton`, or the same skeleton as shown: one session at most
        holds a nick of each), or ``None``. Two look-ups, not a walk through every
        session."""
        with self._lock:
            found = self._nick_skeletons.get(names.skeleton(nick))
            if found is None:
                found = self._nick_looks.get(names.shown_skeleton(nick))
            return found if found is not None and found.welcomed else None

    def away(self, nick: str) -> str | None:
        """The away message of whoever is called ``nick``, on this node or (with a
        :attr:`relay`) another; ``None`` if they are here, or nobody is (any thread)."""
        found = self.find(nick)
        if found is not None:
            return found.away
        relay = self.relay
        member = None if relay is None else relay.member(nick)
        return None if member is None else member.away

    def sessions(self) -> list[Session]:
        """Every logged-in session."""
        with self._lock:
            return [s for s in self._sessions.values() if s.welcomed]

    def who(self, room: str) -> list[str] | None:
        """The nicks in ``room`` in join order, or ``None`` if no such room.

        With a :attr:`relay`, the other nodes' members follow this node's."""
        with self._lock:
            found = self._rooms.get(_key(room))
            local = None if found is None else [s.nick or "" for s in found.members.values()]
        relay = self.relay
        remote = [] if relay is None else relay.members(room)
        return local + remote if local is not None else (remote or None)

    def rooms(self) -> dict[str, int]:
        """Every room with its number of members, sorted by name (with a :attr:`relay`,
        the other nodes' rooms and members too)."""
        with self._lock:
            local = {r.name: len(r.members) for r in sorted(self._rooms.values(), key=_room_key)}
        if self.relay is None:
            return local
        merged = {_key(name): (name, count) for name, count in local.items()}
        for name, count in self.relay.rooms().items():
            shown, here = merged.get(_key(name), (name, 0))
            merged[_key(name)] = (shown, here + count)
        return dict(merged[key] for key in sorted(merged))

    def room_named(self, room: str) -> str | None:
        """``room`` as the chat spells it (``#General`` is ``#general``'s), or ``None`` if
        there is no such room (with a :attr:`relay`, on any node).

        Takes no lock for this node's rooms (one dict look-up and one attribute read):
        a face asks once per room a command names, and :meth:`rooms` sorts them all."""
        found = self._rooms.get(_key(room))
        if found is not None:
            return found.name
        relay = self.relay
        if relay is not None:
            key = _key(room)
            return next((name for name in relay.rooms() if _key(name) == key), None)
        return None

    def topic(self, room: str) -> dict[str, str] | None:
        """The topic of ``room``: ``{"room", "topic", "nick", "ts"}`` (who set it, when),
        or ``None`` if it has none or there is no such room.

        Takes no lock (a face calls it while rendering a join, under the hub's lock): it
        reads two references, and a topic is replaced, never changed in place.
        """
        found = self._rooms.get(_key(room))
        topic = None if found is None else found.topic
        return None if topic is None else dict(topic)

    def created(self, room: str) -> float | None:
        """When ``room`` was created on this server (seconds since the epoch), or
        ``None`` if there is no such room. Takes no lock: one reference read."""
        found = self._rooms.get(_key(room))
        return None if found is None else found.created

    # -- what a face calls for its clients' events ----------------------------------

    def allow_input(self, session: Session, event: Hello | Say | Request) -> None:
        """Run ``chatkit_allow_input`` on an event; raise :class:`CommandError` if refused.

        A face calls it first for every hello, say and request it acts on, on the
        client's reader thread with no lock held: a :class:`Wait` makes that thread
        deliver the client's earlier messages (which no other reader may deliver, see
        settle()), sleep, and ask again.
        """
        session.charged = True
        while True:
            result = self.hooks.first(
                "chatkit_allow_input", _reject, (Reject, Wait), client=session, event=event
            )
            if not isinstance(result, Wait):
                self._check(result)
                return
            if session.unsettled:
                self.settle(session)  # (held back, they would hold up their rooms)
            if self._excess(session):
                raise CommandError("the connection is closing", "closing")
            # In slices, to give up as soon as the connection is closing (a KILL, a
            # kick from the server, the shutdown): what waits is not acted on then.
            until = time.monotonic() + min(max(result.seconds, MIN_WAIT), MAX_WAIT)
            while (left := until - time.monotonic()) > 0:
                time.sleep(min(left, WAIT_SLICE))
                if session.transport.finishing or self.closing or self.stopping:
                    raise CommandError("the connection is closing", "closing")

    def free_line(self, session: Session, count: int = 1) -> None:
        """Count ``count`` lines of ``session`` that no plugin sees (pings, pongs, lines
        refused unread: bad JSON, bad UTF-8, too long; IRC's CAP and bad commands)
        against ``free_lines`` at once and ``free_line_rate`` a second. Past them the
        client is paused: this sleeps, on its reader thread (a face calls it there,
        with no lock held), until it is within them again, in slices, returning as soon
        as the connection is closing. Its earlier messages are delivered first (no
        other reader may, see settle()).

        So a client sending pings or junk in a loop, which flood control never sees,
        cannot take the server's core from the others: TCP holds its lines meanwhile.
        """
        limits = self.config.limits
        rate = limits.free_line_rate
        now = time.monotonic()
        free = min(float(limits.free_lines), session.free + (now - session.free_at) * rate)
        session.free, session.free_at = free - count, now
        if session.free >= 0:
            return
        if session.unsettled:
            self.settle(session)  # (what it sent before is delivered, excess or not)
        # (Not while the shutdown refuses every message, closing: a client still sending
        # then would be cut, losing what it is owed, and the notice. It is paced, and
        # goes on when the notice goes out: closing.)
        if not self.stopping and self._excess(session):
            return
        until = now + min(-session.free / rate, MAX_WAIT)
        while (left := until - time.monotonic()) > 0:
            time.sleep(min(left, WAIT_SLICE))
            if session.transport.finishing or self.closing:
                return

    def _excess(self, session: Session) -> bool:
        """Before a client is paused: one that has sent more than ``max_recvq`` bytes the
        server has not read yet is disconnected (excess flood: True); else what it sent,
        and left, would be acted on at the paced rate for minutes after it went."""
        unread = session.transport.unread()
        limit = self.config.limits.max_recvq
        if unread <= limit:
            return False
        session.error(
            "excess_flood",
            f"you sent {unread} bytes the server has not read while you are paused, over "
            f"max_recvq ({limit}): disconnected",
        )
        session.disconnect("excess flood")
        return True

    def request(self, session: Session, request: Request) -> None:
        """Hand a frame of a type the core does not know to the plugins (logged in or not).

        Raises :class:`CommandError`: ``not_logged_in`` if no plugin answers a client
        that has not logged in, ``bad_frame`` if none answers one that has, or a
        plugin's refusal.
        """
        result = self.hooks.first(
            "chatkit_handle_request",
            _request_failed,
            (bool, Reject),
            false_is_none=True,  # (``return request.type == "mine"``)
            client=session,
            request=request,
        )
        if result is None and not session.logged_in:
            raise CommandError("log in first: send a hello frame", "not_logged_in")
        if result is None:
            raise CommandError(
                f"unknown frame type {request.type!r} "
                "(expected hello, say, ping, pong, or one a plugin handles)",
                "bad_frame",
            )
        self._check(result)

    def authenticate(self, session: Session, account: str, password: str) -> None:
        """Check ``account``'s ``password`` for ``session`` before login (IRC SASL):
        ``chatkit_authenticate``. Raises :class:`CommandError`: the plugin's refusal,
        or ``no_accounts`` if no plugin keeps accounts."""
        result = self.hooks.first(
            "chatkit_authenticate",
            _reject,
            (bool, Reject),
            client=session,
            account=account,
            password=password,
        )
        if result is None:
            raise CommandError("this server keeps no accounts", "no_accounts")
        if result is False:
            raise CommandError("wrong account name or password", "bad_password")
        self._check(result)

    def readiness(self) -> list[str]:
        """Why this server should take no new clients now: what each plugin's
        ``chatkit_check_ready`` names (one that raises, or answers with something other
        than text, is a problem too); empty when it is ready.

        Asked of the plugins once in ``READY_EVERY`` seconds at most: a client may send
        pings as fast as it likes (they are never refused), and a plugin that fails
        would log a traceback for each."""
        at, problems = self._readiness  # (one read: the asker replaces it whole)
        if time.monotonic() - at < READY_EVERY:
            return list(problems)
        # One reader asks; the others meanwhile give the last answer (or, before the
        # first, wait for it).
        if not self._ready_lock.acquire(blocking=at == float("-inf")):
            return list(problems)
        try:
            at, problems = self._readiness
            if time.monotonic() - at >= READY_EVERY:  # (not asked while this one waited)
                problems = self._ask_ready()
                self._readiness = (time.monotonic(), problems)
        finally:
            self._ready_lock.release()
        return list(problems)

    def _ask_ready(self) -> list[str]:
        hooks, name = self.hooks, "chatkit_check_ready"
        hooks.watch(name)
        problems: list[str] = []
        for impl in hooks.impls(name):
            answer = hooks.call(
                name, impl, lambda plugin: f"{plugin}: its readiness check failed", timed=False
            )
            if answer is None:
                continue
            if not isinstance(answer, str) or not answer:
                log.error("plugin %r answered %s with %r, not text", impl.plugin_name, name, answer)
                answer = f"{impl.plugin_name}: its readiness check failed"
            problems.append(answer)
        return problems

    def run_command(self, session: Session, text: str, room: str | None) -> None:
        """Run the command line ``text`` (``/name args``) typed by ``session``.

        If the command changed the session's account (``/identify``, ``/logout``...),
        everyone who shares a room with it, and itself, gets an ``account`` frame."""
        name, args = split_command(text)
        if room:
            # As the hello and /join take it ("#" may be left out), and as the room is
            # spelled if the client is in it: a command compares it as it likes.
            typed = names.room_name(names.normalize(room.strip()))
            room = session.rooms.get(_key(typed), typed)
        ctx = CommandContext(session, name, args, room or session.current_room, self)
        before = session.account
        done = False
        try:
            done = self.commands.dispatch(ctx)
        finally:
            if session.account != before and session.welcomed:
                self._account_changed(session)
                self.hooks.notify("chatkit_on_account", client=session)
        if not done:
            # Refused (unknown, bad usage...): paced past free_lines, as refusals are.
            self.free_line(session)

    def _account_changed(self, session: Session) -> None:
        """Tell ``session`` and everyone who shares a room with it its account now."""
        frame = Frame("account", nick=session.nick, account=session.account)
        self._tell_company(session, frame, itself=True)

    def _tell_company(
        self,
        session: Session,
        frame: Frame,
        *,
        itself: bool = False,
        rooms: Collection[str] | None = None,
    ) -> None:
        """Queue ``frame`` to everyone who shares a room with ``session`` (each once),
        and to ``session`` itself if ``itself``; only those of ``rooms`` (folded) if given."""
        with self._lock:
            if session.nick is None:
                return
            seen: dict[int, Session] = {session.id: session}
            lanes = [self._lanes.private]
            for key in session.rooms if rooms is None else rooms:
                found = self._rooms.get(key)
                if found is not None:
                    seen.update(found.members)
                    lanes.append(found.lane)
            wake = False
            if itself:
                self.deliveries += 1
                wake = session.push(frame)
            del seen[session.id]
            members = list(seen.values())
            if session.renaming and members:
                # Its nick frame waits in the lanes for the others (see rename): this
                # one names the new nick, so it goes behind it, as a leave does.
                wake |= self._lanes.barrier(lambda: self._fanout(frame, members), lanes)
            else:
                wake |= self._fanout(frame, members)
        self._wake_if(wake)

    # -- login and logout -------------------------------------------------------

    def login(
        self,
        session: Session,
        nick: str,
        fields: dict[str, Any] | None = None,
        *,
        room: str | None = None,
        rooms: Sequence[str] | None = None,
    ) -> None:
        """Log ``session`` in as ``nick`` and join the default room, or ``room``, or
        each of ``rooms`` in order (a reconnecting client's; the last is its current
        room). A room's ``#`` may be left out.

        ``fields`` are the login's other fields (a ``hello`` frame's ``password``...),
        for ``chatkit_allow_login``. Raises :class:`CommandError` (``bad_nick``,
        ``nick_taken``, or a plugin's refusal); the client may then try again. A room
        it cannot join (a bad name, a plugin's refusal, more than ``max_rooms``) does
        not refuse the login: the client is told (an ``error`` after the ``welcome``,
        whose ``rooms`` leaves it out), and is in the others.
        """
        limits = self.config.limits
        nick = names.normalize(nick)
        problem = valid_nick(nick, limits.max_nick)
        if problem:
            raise CommandError(f"bad nick {nick!r}: {problem}", "bad_nick")
        account = session.account  # (an account the login proves is only the login's)
        resume = (fields or {}).get("resume")
        if isinstance(resume, str) and resume:
            self._resume(session, nick, resume)
        try:
            self._check(
                self.hooks.first(
                    "chatkit_allow_login",
                    _reject,
                    Reject,
                    client=session,
                    nick=nick,
                    fields=fields or {},
                )
            )
            # The nick is the session's from here, but nobody sees the session (find,
            # sessions) until it is welcomed, below: nothing reaches it before the
            # welcome.
            with self._lock:
                self._check_nick_free(session, nick)
                self._sessions[_key(nick)] = session
                self._nick_skeletons[names.skeleton(nick)] = session
                self._nick_looks[names.shown_skeleton(nick)] = session
                session.nick = nick
        except CommandError:
            session.account = account
            raise
        wanted = list(rooms) if rooms is not None else [room or self.config.default_room]
        accepted: list[str] = []
        refused: list[tuple[str, Reject]] = []
        seen: set[str] = set()
        looks: dict[str, str] = {}  # a look -> the accepted room new rooms must not look like
        for at, name in enumerate(wanted):
            name = names.room_name(names.normalize(name.strip()))  # as /join takes it
            if _key(name) in seen:
                continue  # (named twice: joined, or refused, once)
            seen.add(_key(name))
            if len(accepted) >= limits.max_rooms:  # (one error for all the rest)
                rest = {name: None}  # (the rest as named, those joined or refused left out)
                for other in wanted[at + 1 :]:
                    other = names.room_name(names.normalize(other.strip()))
                    if _key(other) not in seen:
                        seen.add(_key(other))
                        rest[other] = None
                most = f"{limits.max_rooms} rooms at most (max_rooms)"
                refused.append((", ".join(rest), Reject(most, "too_many_rooms")))
                break
            problem = valid_room(name, limits.max_room)
            like = next((looks[k] for k in _room_looks(name) if k in looks), None)
            if problem:
                allowed = Reject(f"bad room name {name!r}: {problem}", "bad_room")
            elif like is not None:  # (two new rooms of one hello that look alike)
                allowed = Reject(f"room {name!r} looks like {like!r}", "bad_room")
            elif (clash := self._looks_like_a_room(name)) is not None:
                allowed = clash  # (the welcome names no room it will not join)
            else:
                # With the nick and the account the login proved: a ban holds here too.
                allowed = self.hooks.first(
                    "chatkit_allow_join", _reject, Reject, client=session, room=name
                )
            if allowed is None:
                accepted.append(name)
                for look in _room_looks(name):
                    looks.setdefault(look, name)
            else:
                refused.append((name, allowed))
        session.resume = secrets.token_urlsafe(RESUME_BYTES)
        welcome = Frame(
            "welcome",
            nick=nick,
            server="chatkit",
            version=__version__,
            rooms=accepted,
            max_line=limits.max_line,  # what a client may send (the web page checks it)
            resume=session.resume,  # (its own: a reconnect takes the nick back with it)
        )
        with self._lock:
            session.welcomed = True
            self.logins += 1
            self.peak = max(self.peak, len(self._sessions))
            wake = session.push(welcome)
        # What a plugin sends at login (a message of the day) comes before the
        # room's join and replay, as on IRC: welcome, MOTD, join, replay. The writer
        # is woken once for the welcome and the join (see _join), not once each: a
        # login costs one wake-up less (churn).
        try:
            self.hooks.notify("chatkit_on_login", client=session)
        except BaseException:
            self._wake_if(wake)
            raise
        if not accepted:
            self._wake_if(wake)
        for name, refusal in refused[:MAX_LOGIN_REFUSALS]:
            # (`room`: which one, for a client that rejoins several: a page marks it left.
            # The rest past max_rooms are one error, naming no one room.)
            one = {} if refusal.code == "too_many_rooms" else {"room": name}
            session.error(refusal.code, f"cannot join {name}: {refusal.reason}", **one)
        if len(refused) > MAX_LOGIN_REFUSALS:  # (a hostile list: one line for the rest)
            more = len(refused) - MAX_LOGIN_REFUSALS
            session.error("bad_room", f"and {more} more rooms not joined")
        for index, name in enumerate(accepted):
            try:
                joined = self._join(session, name, wake=wake if index == 0 else False)
            except CommandError as exc:
                # (A room that came to look like this one meanwhile: the others still.)
                session.error(exc.code, f"cannot join {name}: {exc.text}", room=name)
                continue
            if joined is not None:
                self.hooks.notify("chatkit_on_join", client=session, room=joined)

    def logout(self, session: Session, reason: str) -> None:
        """Remove a session that is gone: leave every room, free its nick, call hooks.

        Does nothing for a session that never logged in; idempotent.
        """
        reason = _one_line(reason)
        # Each room's members see the client's own words only if it may say them there.
        reasons = self._reasons(session, list(session.rooms.values()), reason)
        with self._lock:
            if session.nick is None or self._sessions.get(_key(session.nick)) is not session:
                return
            del self._sessions[_key(session.nick)]
            session.leaving = True
            self._nick_skeletons.pop(names.skeleton(session.nick), None)
            self._nick_looks.pop(names.shown_skeleton(session.nick), None)
            left = list(session.rooms.values())
            # Each member of any of those rooms gets one `leave` naming every room it
            # shared with the session, not one per room ("* bob left #a, #b (quit)").
            shared: dict[int, tuple[Session, list[str]]] = {}
            for name in left:
                for member in self._rooms[_key(name)].members.values():
                    if member is not session:
                        shared.setdefault(member.id, (member, []))[1].append(name)
                self._leave(session, name, reasons.get(name, reason), announce=False)
            wake = False
            if not self.closing:
                # Members sharing the same rooms get the same frame: one encoding each.
                groups: dict[tuple[str, ...], list[Session]] = {}
                for member, rooms in shared.values():
                    groups.setdefault(tuple(rooms), []).append(member)
                ts = utc_now()
                frames = [
                    (
                        Frame(
                            "leave",
                            room=names_[0],
                            nick=session.nick,
                            ts=ts,
                            reason=_shared_reason([reasons.get(n, reason) for n in names_]),
                            rooms=list(names_),
                        ),
                        members,
                    )
                    for names_, members in groups.items()
                ]

                def deliver() -> bool:
                    told = False
                    for frame, members in frames:
                        told |= self._fanout(frame, members)
                    return told

                if session.renaming:
                    # Behind its nick frame, which waits in the lanes (see rename).
                    lanes = [self._rooms[k].lane for k in map(_key, left) if k in self._rooms]
                    wake = self._lanes.barrier(deliver, [*lanes, self._lanes.private])
                else:
                    wake = deliver()
        self._wake_if(wake)
        for name in left:
            said = reasons.get(name, reason)
            self.hooks.notify("chatkit_on_leave", client=session, room=name, reason=said, by=None)
        self.hooks.notify("chatkit_on_logout", client=session, reason=reason)

    # -- rooms -------------------------------------------------------------------

    def join(self, session: Session, room: str) -> bool:
        """Join ``room`` (creating it) and make it current; False if already a member.

        Raises :class:`CommandError` for a bad name or a plugin's refusal.
        """
        room = names.normalize(room)
        problem = valid_room(room, self.config.limits.max_room)
        if problem:
            raise CommandError(f"bad room name {room!r}: {problem}", "bad_room")
        with self._lock:
            if _key(room) in session.rooms:
                session.current_room = session.rooms[_key(room)]
                return False
            limit = self.config.limits.max_rooms
            if len(session.rooms) >= limit:
                raise CommandError(
                    f"you are in {len(session.rooms)} rooms, the most one client may be in "
                    f"(max_rooms); /part one to join {room}",
                    "too_many_rooms",
                )
            self._check_room_name(room)
        self._check(
            self.hooks.first("chatkit_allow_join", _reject, Reject, client=session, room=room)
        )
        if session.away is not None:
            # Its join's away field is words said to the room: not where it is muted.
            if self.may_speak(session, room):
                session.quiet = session.quiet.difference([_key(room)])
            else:
                session.quiet = session.quiet.union([_key(room)])
        name = self._join(session, room)
        if name is None:
            return False
        self.hooks.notify("chatkit_on_join", client=session, room=name)
        return True

    def _join(self, session: Session, room: str, *, wake: bool = False) -> str | None:
        """Join ``room`` through its lane, replay first; its display name, or None if not
        joined. ``wake``: the writer must be woken for what the caller queued already
        (woken here, once for both, before any wait)."""
        self._lanes.check_not_storing(f"a join of {room}")
        try:
            with self._lock:
                if _key(room) in session.rooms:
                    return None
                found = self._rooms.get(_key(room)) or self._new_room(room)
                self._lanes.check_not_replaying(found.lane, f"a join of {found.name}")
                # Ids are given out and entries posted under this lock, so every message
                # of the room with an id up to the last one given out is ahead in the lane.
                entry = self._lanes.join(session, found.name, self._ids.last)
                wake |= self._lanes.post(found.lane, entry)
        finally:
            self._wake_if(wake)
        # Waits for the earlier messages, reads the replay, then delivers the join.
        return found.name if self._lanes.enter(entry, found.lane) else None

    def part(
        self, session: Session, room: str, reason: str = "part", *, by: str | None = None
    ) -> None:
        """Leave ``room``; raises :class:`CommandError` ``not_in_room`` if not a member.

        ``by``: the nick of the operator who removed ``session`` (a kick), which the
        ``leave`` frame carries (IRC clients see ``KICK``)."""
        reason = _one_line(reason)
        if by is None:  # (a kick's reason is its operator's words)
            known = session.rooms.get(_key(room))
            if known is not None:
                reason = self._reasons(session, [known], reason).get(known, reason)
        with self._lock:
            name = session.rooms.get(_key(room))
            if name is None:
                raise CommandError(f"you are not in {room}", "not_in_room")
            wake = self._leave(session, name, reason, announce=True, tell_self=True, by=by)
        self._wake_if(wake)
        self.hooks.notify("chatkit_on_leave", client=session, room=name, reason=reason, by=by)

    def _reasons(self, session: Session, rooms: list[str], reason: str) -> dict[str, str]:
        """A leave's reason as each of ``rooms`` sees it: the client's own words in it
        (``part: WORDS``, ``quit: WORDS``) pass the message filters as words said in the
        room would (a muted member's, a banned one's, the profanity plugin's masks); a
        room whose filter drops them sees ``part`` or ``quit`` alone. No lock held (the
        hooks run)."""
        kind, colon, words = reason.partition(": ")
        if not colon or kind not in ("part", "quit") or not rooms:
            return {}
        if not self.hooks.wanted("chatkit_filter_message"):
            return {}
        out = {}
        for room in rooms:
            message = Message(nick=session.nick or "", text=words, room=room, leave=kind)
            message.account = session.account
            try:
                self._filter(session, message)
            except CommandError:
                out[room] = kind
                continue
            out[room] = f"{kind}: {' '.join(message.text.splitlines())}"
        return out

    def set_topic(self, session: Session, room: str, text: str) -> None:
        """Set the topic of ``room`` (a member only; ``""`` clears it) and send the
        ``topic`` frame to every member. Raises :class:`CommandError` ``not_in_room``,
        ``bad_text`` for a topic over ``max_topic`` characters (390) or of several lines,
        or a plugin's refusal (``chatkit_allow_topic``); then runs ``chatkit_on_topic``."""
        text, most = text.strip(), self.config.limits.max_topic
        if len(text) > most or "\n" in text:
            raise CommandError(f"a topic is one line of at most {most} characters", "bad_text")
        self._member_room(session, room)
        self._check(
            self.hooks.first(
                "chatkit_allow_topic", _reject, Reject, client=session, room=room, topic=text
            )
        )
        with self._lock:
            name = session.rooms.get(_key(room))
            if name is None:
                raise CommandError(f"you are not in {room}", "not_in_room")
            found = self._rooms[_key(name)]
            fields = {"room": name, "topic": text, "nick": session.nick or "", "ts": utc_now()}
            found.topic = fields if text else None
            wake = self._fanout(Frame("topic", **fields), found.members.values())
        self._wake_if(wake)
        self.hooks.notify("chatkit_on_topic", client=session, room=name, topic=dict(fields))

    def set_away(self, session: Session, text: str | None) -> str | None:
        """Mark ``session`` away with ``text`` (``None`` or blank: back) and return
        what is set. Anyone who messages it privately is told, ``/who``, IRC's ``WHO``
        and ``WHOIS`` show it, and a change is an ``away`` frame to everyone who shares a
        room with it (not to itself), then ``chatkit_on_away`` (the ``cluster`` plugin
        tells the other nodes). Raises :class:`CommandError` ``bad_text`` for a message
        over ``max_away`` characters (200) or of several lines."""
        # (Control characters as U+FFFD, as in a message: a plugin's text too reaches
        # terminals and IRC clients as it is.)
        bidi = "allow" if self.config.bidi == "allow" else "replace"
        text = clean_text((text or "").strip(), newlines=True, bidi=bidi)
        most = self.config.limits.max_away
        if len(text) > most or "\n" in text:
            raise CommandError(
                f"an away message is one line of at most {most} characters", "bad_text"
            )
        before, session.away = session.away, text or None
        if session.away != before and session.welcomed:
            # Told only where it may speak: away text is something it says to the
            # room (a mute, a ban, +m would hold back its words, not this).
            rooms = [
                key for key, room in list(session.rooms.items()) if self.may_speak(session, room)
            ]
            session.quiet = frozenset(session.rooms).difference(rooms)
            frame = Frame("away", nick=session.nick, text=session.away)
            self._tell_company(session, frame, rooms=rooms)
            self.hooks.notify("chatkit_on_away", client=session)
        return session.away

    def account_deleted(self, account: str) -> None:
        """Tell the plugins that ``account`` (a name, case-folded) was deleted:
        ``chatkit_on_account_deleted``, so that what they keep for it does not pass to
        whoever registers the name next; first, every session still identified to it
        is no longer (:meth:`forget_account`). For a plugin that keeps accounts (the
        builtin ``accounts``' ``/drop``), once it deleted it."""
        # (The other nodes of a cluster learn of it with the deletion itself.)
        self.forget_account(account, "deleted", everywhere=False)
        self.hooks.notify("chatkit_on_account_deleted", account=account)

    def forget_account(
        self, account: str, why: str, *, keep: Session | None = None, everywhere: bool = True
    ) -> int:
        """Make every session here identified to ``account`` (but ``keep``) no longer
        identified, ``why`` being what happened to the account ("deleted", "given a
        new password"): each is told (a notice, and the ``account`` frame to it and
        to who shares a room with it), then ``chatkit_on_account`` runs for it; with
        ``everywhere``, the other nodes of a cluster too (:meth:`Relay.forget`).
        Returns how many there were here.

        A session left identified to a deleted account would own whoever registers
        the name next (its nick, its private history, its rooms' operator rights).
        Runs on the caller's thread: the one place where a session's ``account``
        changes off its own reader thread (an attribute: a reader sees the old
        account or the new one)."""
        with self._lock:
            # (A session not welcomed yet proves its account again at its login.)
            found = [
                s
                for s in self._sessions.values()
                if s.account == account and s is not keep and s.welcomed
            ]
            # Taken here, under the lock: two calls at once for one account (this
            # node's and the cluster's) tell each session once.
            for session in found:
                session.account = None
        relay = self.relay
        if everywhere and relay is not None:
            relay.forget(account, why)
        for session in found:
            session.notice(f"the account {account} was {why}: you are no longer identified")
            self._account_changed(session)
            self.hooks.notify("chatkit_on_account", client=session)
        return len(found)

    def restore_topic(self, room: str, topic: dict[str, str]) -> bool:
        """Give ``room``, which has no topic, ``topic`` (``{"topic", "nick", "ts"}``: a
        topic a plugin kept, who set it and when) and send the ``topic`` frame to its
        members with ``join`` (the room's topic as it is, not one set now, as a joiner
        finds it: the IRC face shows ``332``/``333``, not a ``TOPIC`` from its setter).
        For plugins that keep topics across restarts (``moderation``); False (nothing
        changes) if there is no such room or it has a topic already."""
        text = str(topic.get("topic", "")).strip()
        if not text or len(text) > self.config.limits.max_topic or "\n" in text:
            return False
        with self._lock:
            found = self._rooms.get(_key(room))
            if found is None or found.topic is not None:
                return False
            nick, ts = str(topic.get("nick") or ""), str(topic.get("ts") or utc_now())
            fields = {"room": found.name, "topic": text, "nick": nick, "ts": ts}
            found.topic = fields
            # Each member's own frame, through its channel (rare: a room's first join
            # after a restart, or after it emptied, and its few members then).
            wake = False
            for member in found.members.values():
                self.deliveries += 1
                wake |= member.push(Frame("topic", **fields, join=True))
        self._wake_if(wake)
        return True

    def replace_topic(self, room: str, topic: dict[str, str]) -> bool:
        """Make ``topic`` (``{"topic", "nick", "ts"}``; ``"topic": ""`` clears it) the
        topic of ``room`` and send the ``topic`` frame to its members, running no hook:
        for a topic set elsewhere (the ``cluster`` plugin: on another node). False
        (nothing changes, nobody is told) if there is no such room here, the topic is
        not one line of at most ``max_topic`` characters, or it is the room's topic already."""
        text = str(topic.get("topic", "")).strip()
        if len(text) > self.config.limits.max_topic or "\n" in text:
            return False
        with self._lock:
            found = self._rooms.get(_key(room))
            if found is None:
                return False
            nick, ts = str(topic.get("nick") or ""), str(topic.get("ts") or utc_now())
            fields = {"room": found.name, "topic": text, "nick": nick, "ts": ts}
            if found.topic == fields or (found.topic is None and not text):
                return False
            found.topic = fields if text else None
            wake = self._fanout(Frame("topic", **fields), found.members.values())
        self._wake_if(wake)
        return True

    def _admit(self, session: Session, room: str) -> bool | None:
        """Deliver a join: add ``session`` to ``room`` and queue the ``join`` to every
        member (its own, naming the members, to itself alone). True if the writer must
        be woken; None if the session logged out meanwhile (while its replay was read)
        or is a member already (a plugin joined it). The lanes' ``enter``: the room
        exists, its lane holds the join.
        """
        assert self._lock.locked()
        if session.nick is None or self._sessions.get(_key(session.nick)) is not session:
            return None
        if _key(room) in session.rooms:
            return None
        found = self._rooms[_key(room)]
        others = list(found.members.values())
        found.members[session.id] = session
        found.feed.add(session.transport)
        session.rooms[_key(room)] = found.name
        session.current_room = found.name
        ts = utc_now()
        frame = Frame(
            "join",
            room=found.name,
            nick=session.nick,
            ts=ts,
            **_account(session),
            **_away(session, _key(room)),
        )
        if not session.codec.join_members:
            # The joiner gets the frame everybody gets (one encoding per codec), then
            # the room's topic if it has one, read here under the lock with the join:
            # a topic set a moment before is in it, one set a moment after reaches the
            # joiner as a member.
            others.append(session)
            wake = self._fanout(frame, others)
            if found.topic is not None:
                self.deliveries += 1
                # "join": the room's topic as it is, not one being set now.
                wake |= session.push(Frame("topic", **found.topic, join=True))
            return wake
        # A face that lists the members with the join (IRC: the names list) gets its
        # own join alone, through its channel, naming them as of this very join.
        members = [member.nick for member in found.members.values()]
        if self.relay is not None:
            members += self.relay.members(found.name)  # the other nodes' members too
        own = Frame(
            "join", room=found.name, nick=session.nick, ts=ts, members=members, **_account(session)
        )
        self.deliveries += 1
        return self._fanout(frame, others) | session.push(own)

    def _check_room_name(self, room: str) -> None:
        """Raise ``bad_room`` if ``room`` is new and looks like a room in use."""
        assert self._lock.locked()
        if _key(room) in self._rooms:
            return
        other = next(
            (o for k in _room_looks(room) if (o := self._room_skeletons.get(k)) is not None), None
        )
        if other is not None and other != _key(room):
            like = self._rooms[other].name if other in self._rooms else self.config.default_room
            raise CommandError(
                f"room {room!r} looks like {like!r} (letters that look the same, of any "
                f"script or case, count as the same); /join {like} or pick another name",
                "bad_room",
            )

    def _looks_like_a_room(self, room: str) -> Reject | None:
        """:meth:`_check_room_name`'s refusal of ``room``, as a :class:`Reject`."""
        if room == self.config.default_room:
            return None  # (always there, and like itself)
        with self._lock:
            try:
                self._check_room_name(room)
            except CommandError as exc:
                return Reject(exc.text, exc.code)
        return None

    def _new_room(self, room: str) -> Room:
        """Create ``room`` (checked by :meth:`_check_room_name` before any change)."""
        assert self._lock.locked()
        self._check_room_name(room)
        found = self._rooms[_key(room)] = Room(room, self._outbox.feed(_key(room)))
        for look in _room_looks(room):
            self._room_skeletons.setdefault(look, _key(room))
        return found

    def _lane_emptied(self, lane: Lane) -> None:
        """The lanes' ``emptied``: forget the room of ``lane`` if it is still empty."""
        assert self._lock.locked()
        room = self._rooms.get(_key(lane.name))
        if room is not None and room.lane is lane and not room.members and not lane:
            self._forget_room(room)

    def _forget_room(self, room: Room) -> None:
        """Drop ``room``, empty and with nothing in its lane."""
        assert self._lock.locked()
        del self._rooms[_key(room.name)]
        for look in _room_looks(room.name):
            if self._room_skeletons.get(look) == _key(room.name) != _key(self.config.default_room):
                del self._room_skeletons[look]

    def _leave(
        self,
        session: Session,
        name: str,
        reason: str,
        *,
        announce: bool,
        tell_self: bool = False,
        by: str | None = None,
    ) -> bool:
        """Remove ``session`` from room ``name``; queue the ``leave`` to who should see it."""
        assert self._lock.locked()
        room = self._rooms[_key(name)]
        del room.members[session.id]
        room.feed.remove(session.transport)
        del session.rooms[_key(name)]
        if session.current_room == name:
            session.current_room = next(reversed(session.rooms.values()), None)
        if not room.members and not room.lane:
            self._forget_room(room)
        wake = False
        if announce:
            kicked = {} if by is None else {"by": by}
            frame = Frame(
                "leave", room=name, nick=session.nick, ts=utc_now(), reason=reason, **kicked
            )
            members = list(room.members.values())
            if tell_self:
                wake = session.push(frame)
            if session.renaming and members:
                # Its nick frame waits in the lanes for the others: the leave, which
                # names the new nick, goes behind it. (Members left: the room and its
                # lane are still there, and a rejoin's join goes behind it too.)
                wake |= self._lanes.barrier(
                    lambda: self._fanout(frame, members), [room.lane, self._lanes.private]
                )
            else:
                wake |= self._fanout(frame, members)
        return wake

    # -- nicks -------------------------------------------------------------------

    def _resume(self, session: Session, nick: str, secret: str) -> None:
        """A ``hello`` with the ``resume`` secret of the session holding ``nick`` here
        (its ``welcome``'s): that session is a connection of the same client that died
        unseen (a phone that lost its network: the server learns it only at its idle
        timeout), so it is renamed to a guest nick and closed, and the nick is free for
        this login. A wrong secret, or none held, changes nothing (the login then finds
        the nick taken, as without one)."""
        holder = self.find(nick)
        if (
            holder is None
            or holder is session
            or holder.resume is None
            or not hmac.compare_digest(holder.resume.encode(), secret.encode())
        ):
            return
        holder.resume = None  # (once)
        log.info("%s reconnected: its earlier connection is closed", nick)
        try:
            self.rename(holder, f"{RESUMED_PREFIX}{holder.id}", forced=True)
        except CommandError as exc:
            if exc.code != "not_logged_in":
                raise  # (it left meanwhile: the nick is free)
        holder.disconnect("replaced by a new connection")

    def may_speak(self, session: Session, room: str) -> bool:
        """Whether the filters (``chatkit_filter_message``) let ``session`` speak in
        ``room``, asked with an empty message: where its away message is told (the
        ``cluster`` plugin tells the other nodes which rooms those are)."""
        try:
            self._filter(session, Message(session.nick or "", "", room, account=session.account))
        except CommandError:
            return False
        return True

    def filter_message(self, session: Session, message: Message) -> None:
        """Run ``chatkit_filter_message`` on ``message``, which goes to its room or
        nick some other way than :meth:`say` and :meth:`private` (an IRC ``TAGMSG``:
        a typing notification, a reaction; its ``text`` is empty): raise
        :class:`CommandError` ``dropped`` if a filter drops it (a mute, a ban, a
        moderated room)."""
        self._filter(session, message)

    def allow_nick(self, session: Session, nick: str) -> None:
        """Run ``chatkit_allow_nick`` for ``session`` taking ``nick``; raise
        :class:`CommandError` if refused. What :meth:`rename` does first, for a
        plugin that renames a client after something of its own (``/identify``
        renames to the account's nick: a ban or a mute the client is under holds)."""
        self._check(
            self.hooks.first("chatkit_allow_nick", _reject, Reject, client=session, nick=nick)
        )

    def rename(self, session: Session, new: str, *, forced: bool = False) -> None:
        """Change ``session``'s nick and tell everyone who shares a room with it.

        ``forced``: a rename a plugin makes of its own accord (the ``accounts`` plugin
        moving a guest off a registered nick), which no ``chatkit_allow_nick`` may
        refuse. Raises :class:`CommandError` (``bad_nick``, ``nick_taken``, a refusal;
        ``not_logged_in`` if ``session`` logged out). It gets its ``nick`` frame at
        once; everyone sharing a room with it gets theirs after the messages its rooms'
        lanes hold (its own, still being stored, went out under the old nick).
        """
        new = names.normalize(new)
        problem = valid_nick(new, self.config.limits.max_nick)
        if problem:
            raise CommandError(f"bad nick {new!r}: {problem}", "bad_nick")
        if new == session.nick:
            return  # no change: nothing to allow (a ban on changing nicks refuses none)
        if not forced:
            self.allow_nick(session, new)
        with self._lock:
            old = session.nick
            if old is None or self._sessions.get(_key(old)) is not session:
                # Logged out (or renamed by a plugin's thread that checked before
                # the lock): its old nick may be someone else's by now.
                raise CommandError("not logged in", "not_logged_in")
            self._check_nick_free(session, new)
            if old == new:
                return
            del self._sessions[_key(old)]
            self._nick_skeletons.pop(names.skeleton(old), None)
            self._nick_looks.pop(names.shown_skeleton(old), None)
            self._sessions[_key(new)] = session
            self._nick_skeletons[names.skeleton(new)] = session
            self._nick_looks[names.shown_skeleton(new)] = session
            session.nick = new
            if self.relay is not None:
                self.relay.renamed(session, old)
            audience: dict[int, Session] = {}
            lanes = [self._lanes.private]
            for key in session.rooms:
                room = self._rooms[key]
                audience.update(room.members)
                lanes.append(room.lane)
            audience.pop(session.id, None)
            # The client's own nick change goes to it alone, through its face's
            # protocol, which may need to know its nick (IRC numerics name it).
            frame = Frame("nick", old=old, new=new)
            self.deliveries += 1
            # Its own at once: what it is sent from now on names the new nick (IRC
            # numerics, its joins), and it knows what it said before.
            wake = session.push(frame)
            members = list(audience.values())
            if members:

                def deliver() -> bool:
                    session.renaming -= 1
                    return self._fanout(frame, members)

                # The others' after what the lanes hold: its messages being stored went
                # out under the old nick, and must reach them before the nick is
                # another's (a forced rename, on another thread, does not wait for its
                # reader to settle them). Its leaves meanwhile wait too (_leave,
                # logout): after the nick they name.
                session.renaming += 1
                wake |= self._lanes.barrier(deliver, lanes)
        self._wake_if(wake)
        self.hooks.notify("chatkit_on_nick", client=session, old=old)

    def _check_nick_free(self, session: Session, nick: str) -> None:
        """Raise ``nick_taken`` if another session has ``nick`` or a nick that looks
        like it (same skeleton: ``alice`` spelled with a Cyrillic a beside ``alice``)."""
        assert self._lock.locked()
        other = self._sessions.get(_key(nick))
        if other is not None and other is not session:
            raise CommandError(f"nick {nick!r} is taken; try another", "nick_taken")
        other = self._nick_skeletons.get(names.skeleton(nick))
        if other is None or other is session:
            other = self._nick_looks.get(names.shown_skeleton(nick))
        if other is not None and other is not session:
            raise CommandError(
                f"nick {nick!r} looks like {other.nick!r}, which is taken "
                "(letters that look the same, of any script or case, count as the same); "
                "try another",
                "nick_taken",
            )

    # -- messages ----------------------------------------------------------------

    def say(
        self,
        session: Session,
        room: str | None,
        text: str,
        *,
        action: bool = False,
        notice: bool = False,
        defer: bool = False,
    ) -> Message:
        """Send ``text`` to ``room`` (default: the current room) through the filters;
        ``action`` for ``/me``, ``notice`` for a notice (:attr:`Message.notice`).

        Returns the delivered :class:`Message`, or raises :class:`CommandError`
        (``not_in_room``, ``dropped``, ``not_stored``). With ``defer`` (the
        reader's own lines) it returns once the message is being stored (with a
        store): :meth:`settle` then delivers it, or tells the sender on its turn
        that a store refused it (``not_stored``).
        """
        self._lanes.check_not_storing("a message")
        name = self._member_room(session, room)
        text = self._said(text)
        message = Message(
            nick=session.nick or "",
            text=text,
            room=name,
            action=action,
            notice=notice,
            account=session.account,
        )
        self._filter(session, message)
        if self.relay is not None:
            return self._relayed(self.relay, session, message, defer)
        with self._lock:
            if self.stopping:  # (under the lock: Server.shutdown sets it under it too)
                raise _stopping()
            found = self._rooms.get(_key(name))
            if found is None or session.id not in found.members:
                raise CommandError(f"you are not in {name}", "not_in_room")
            self._lanes.check_not_replaying(found.lane, f"a message to {found.name}")
            message.id, message.ts = self._ids.next()
            self.messages += 1
            message.room = found.name
            message.nick = session.nick or ""  # (renamed since it was made: the nick now)
            frame = message_frame(message)
            frame.origin = session.id  # its sender may not want it back (Codec.echo)
            entry = self._lanes.message(frame, defer=defer)
            wake = self._lanes.post(found.lane, entry)  # delivered now if born ready
        self._wake_if(wake)
        # Stores it (if a plugin stores messages), sees it delivered, runs chatkit_on_message.
        self._lanes.send(session, message, entry, found.lane, defer=defer)
        return message

    def say_run(
        self,
        session: Session,
        run: Sequence[tuple[str | None, str]],
        refused: Callable[[int, CommandError], None],
        proceed: Callable[[], bool],
    ) -> None:
        """Send a reader's run of plain room messages, ``(room, text)`` each (``room``
        ``None``: the current one), as the reader's own lines: for each in turn, what
        ``allow_input(session, Say(text, room))`` then ``say(session, room, text,
        defer=True)`` do, in fewer steps. The faces call it for a burst of chat lines
        read at once (the hot path of docs/performance.md).

        ``proceed()`` is called before each message, as a face's loop does before each
        event: it paces the reader, and returns False once the connection is closing,
        which drops the rest of the run. A message refused (by ``chatkit_allow_input``,
        a filter, or ``not_in_room``) is reported, after the messages before it are
        delivered (:meth:`settle`), by ``refused(index in run, error)``, and the run
        goes on; one a store refuses is reported on its turn in its room's lane, as an
        ``error`` frame (``not_stored``, with the ``room``).

        With a veto or filter hook implemented, each message is posted before the next
        one's hooks run, as one by one (a hook may kick or disconnect the sender, and
        later hooks see earlier messages posted). Without (the common case: flood
        control off, no moderation, no filter), nothing runs between the messages: the
        run is posted under one acquisition of the lock, so ``proceed()`` is called
        once, then it is stored with one call of each store hook (``Lanes.send_run``).
        """
        self._lanes.check_not_storing("a run of messages")
        if self.stopping:
            for index, _said in enumerate(run):
                refused(index, _stopping())
            return
        if self.relay is not None:  # each message goes to the relay on its own
            for index, (room, text) in enumerate(run):
                if not proceed():
                    return
                try:
                    self.allow_input(session, Say(text, room))
                    self.say(session, room, text, defer=True)
                except CommandError as exc:
                    self.settle(session)
                    refused(index, exc)
            return
        hooks = self.hooks
        # Asked once for the run (a reload meanwhile applies from the next one).
        check = hooks.wanted("chatkit_allow_input")
        filters = hooks.wanted("chatkit_filter_message")
        one_by_one = check or filters
        if not one_by_one and not proceed():
            return
        passed: list[tuple[int, Message]] = []
        for index, (room, text) in enumerate(run):
            if one_by_one and not proceed():
                return
            try:
                if check:
                    self.allow_input(session, Say(text, room))
                name = self._member_room(session, room)
                message = Message(session.nick or "", text, name, account=session.account)
                if filters:
                    self._filter(session, message)
            except CommandError as exc:
                self._post_run(session, passed, refused)
                passed = []
                self.settle(session)  # answers come in the order of the lines
                refused(index, exc)
                continue
            passed.append((index, message))
            if one_by_one:
                self._post_run(session, passed, refused)
                passed = []
        self._post_run(session, passed, refused)

    def _post_run(
        self,
        session: Session,
        run: list[tuple[int, Message]],
        refused: Callable[[int, CommandError], None],
    ) -> None:
        """Give :meth:`say_run`'s filtered messages their ids, under one acquisition of
        the lock, and publish them to their rooms there (nothing to store, nothing in
        their lanes, nothing of the sender's unsettled), or post them as lane entries
        and then hand them to the lanes (``Lanes.send_run``)."""
        lanes, rooms, ids, sid = self._lanes, self._rooms, self._ids, session.id
        start, halted = 0, False
        while start < len(run):
            posted: list[tuple[int, Message, MessageEntry, Lane]] = []
            published: list[tuple[Message, Frame, Lane]] = []
            failed: tuple[int, str] | None = None
            # With nothing to store and nothing of the sender's waiting to be settled,
            # a message whose room's lane is empty is published at once: nothing is
            # ahead of it, and what is posted later goes behind it. The first one
            # that cannot be ends that, so the sender's messages keep their order.
            direct = not lanes.stores and not session.unsettled
            wake = False
            with self._lock:
                if self.stopping:  # (under the lock, as in say)
                    halted = True
                    break
                nick = session.nick or ""
                if nick != run[start][1].nick:  # renamed since they were made: the nick now
                    for _, message in run[start:]:
                        message.nick = nick
                named: str | None = None  # the room of the message before, found below
                name, lane = "", lanes.private  # (set with named)
                frames: list[Frame] = []  # published directly, not yet handed to lane
                for index, message in run[start:]:
                    if message.room != named:
                        found = rooms.get(_key(message.room or ""))
                        if found is None or sid not in found.members:
                            failed = (index, message.room or "")
                            break
                        if frames:
                            wake |= lanes.publish(lane, frames)
                            frames = []
                        named, name, lane = message.room, found.name, found.lane
                    message.id, message.ts = ids.next()
                    message.room = name
                    if message.account is None:  # message_frame's fields, fewer steps
                        frame = Frame(
                            "message",
                            id=message.id,
                            ts=message.ts,
                            room=name,
                            nick=message.nick,
                            text=message.text,
                        )
                    else:
                        frame = message_frame(message)
                    frame.origin = sid  # its sender may not want it back (Codec.echo)
                    if direct and not lane:
                        frames.append(frame)
                        published.append((message, frame, lane))
                        continue
                    if frames:
                        wake |= lanes.publish(lane, frames)
                        frames = []
                    direct = False
                    entry = lanes.message(frame, defer=True)
                    lanes.post(lane, entry)  # (never born ready: no wake)
                    posted.append((index, message, entry, lane))
                if frames:
                    wake |= lanes.publish(lane, frames)
                self.messages += len(posted) + len(published)
            self._wake_if(wake)
            if published and self.hooks.wanted("chatkit_on_message"):
                for message, frame, lane in published:
                    if posted:
                        # A hook may post behind one of this pass's entries, which only
                        # this reader's settle() makes ready: the published messages'
                        # hooks wait for it, and run there, in order with the others'.
                        lanes.delivered(session, message, frame, lane)
                    else:
                        self.hooks.notify("chatkit_on_message", client=session, message=message)
            if posted:
                # Stored with one call of each store hook; a refusal (not_stored) is
                # reported on its turn in the lane.
                lanes.send_run(session, posted)
            if failed is None:
                return
            start += len(posted) + len(published) + 1
            self.settle(session)  # answers come in the order of the lines
            refused(failed[0], CommandError(f"you are not in {failed[1]}", "not_in_room"))
        if halted:  # the server is stopping: the rest is refused, neither stored nor sent
            self.settle(session)
            for index, _message in run[start:]:
                refused(index, _stopping())

    def private(
        self,
        session: Session,
        nick: str,
        text: str,
        *,
        action: bool = False,
        notice: bool = False,
    ) -> Message:
        """Send ``text`` privately to ``nick``; both sides receive the ``private`` frame
        (``action``, ``notice``: as for :meth:`say`).

        Raises :class:`CommandError` (``no_such_nick``, ``dropped``).
        """
        self._lanes.check_not_storing("a private message")
        target = self.find(nick)
        relay = self.relay
        remote = None if relay is None or target is not None else relay.locate(nick)
        if target is None and remote is None:
            raise CommandError(f"no one is called {nick!r}", "no_such_nick")
        to = remote if target is None else target.nick
        text = self._said(text)
        message = Message(
            nick=session.nick or "",
            text=text,
            to=to,
            action=action,
            notice=notice,
            account=session.account,
        )
        self._filter(session, message)
        if relay is not None:
            return self._relayed(relay, session, message)
        assert target is not None
        lane = self._lanes.private
        with self._lock:
            if self.stopping:
                raise _stopping()
            if target.nick is None or self._sessions.get(_key(target.nick)) is not target:
                raise CommandError(f"{nick} has left", "no_such_nick")
            message.id, message.ts = self._ids.next()
            self.messages += 1
            message.to = target.nick
            message.nick = session.nick or ""  # (renamed since it was made: the nick now)
            frame = message_frame(message)
            frame.origin = session.id  # its sender may not want it back (Codec.echo)
            parties = list({session.id: session, target.id: target}.values())
            entry = self._lanes.message(frame, parties)
            wake = self._lanes.post(lane, entry)
        self._wake_if(wake)
        self._lanes.send(session, message, entry, lane)
        return message

    def _relayed(
        self, relay: Relay, session: Session, message: Message, defer: bool = False
    ) -> Message:
        """Hand a filtered message to the relay, which delivers it (see :class:`Relay`);
        with ``defer``, :meth:`settle` waits for it."""
        if self.stopping:
            raise _stopping()
        wait = relay.publish(session, message)
        with self._lock:
            self.messages += 1
        if defer:
            # Waits in the session's unsettled list with the lanes' records, so that
            # whoever settles (the reader, a face before a ping) waits for it too.
            self._any_relayed = True
            session.unsettled.append(_Relayed(message, wait))
            return message
        wait()
        self.hooks.notify("chatkit_on_message", client=session, message=message)
        return message

    def _settle_relayed(self, session: Session) -> None:
        """Wait for the relayed messages ``session`` sent, in order; report refusals."""
        relayed = [r for r in session.unsettled if isinstance(r, _Relayed)]
        session.unsettled = [r for r in session.unsettled if not isinstance(r, _Relayed)]
        for message, wait in relayed:
            try:
                wait()
            except CommandError as exc:
                session.error(exc.code, exc.text, **exc.details)
                continue
            self.hooks.notify("chatkit_on_message", client=session, message=message)

    def deliver(
        self,
        frames: Sequence[Frame],
        *,
        room: str | None = None,
        nicks: Iterable[str] = (),
        rooms: Iterable[str] = (),
        sessions: Iterable[Session] = (),
    ) -> None:
        """Deliver frames sequenced elsewhere (by a :class:`Relay`) to this node's sessions.

        * ``room``: to the room's members here, in the room's lane: after what is
          ahead of it (a join waiting for its replay), before what comes later; a run
          of frames leaves as one piece per member. A room with no member here gets
          nothing.
        * ``nicks``: to the sessions here with these nicks (a private message), in
          the lane of private messages; ``sessions``: to these sessions the same way,
          whatever their nicks are by then (those logged out meanwhile get nothing). A
          relay that found its recipients passes them, not their nicks: a rename on
          another thread between its look-up and this call would miss them.
        * ``rooms``: to every member here of any of these rooms, one frame each,
          behind what those rooms' lanes hold (another node's member renamed, lost,
          identified or away: after its earlier joins and messages there).

        Frames with an ``id`` make every later id greater, under the lock that posts
        them: a join posted afterwards replays up to them (``chatkit_room_replay``'s
        ``last_id``) and receives nothing before them live. Any thread (the relay's
        reader), no lock held; calls no hook. Set ``frame.origin`` to the sender's
        session id for a message sent from here (``Codec.echo``).
        """
        wake = False
        with self._lock:
            for frame in frames:
                if isinstance(frame.fields.get("id"), int):
                    self._ids.advance(frame.fields["id"])
            if room is not None:
                found = self._rooms.get(_key(room))
                if found is not None and not found.lane:
                    # Nothing ahead: what the lane would do with a ready run at its head.
                    wake |= self._publish(frames, found.feed)
                elif found is not None:
                    for frame in frames:
                        wake |= self._lanes.post(found.lane, MessageEntry(frame, True))
            parties = {
                s.id: s
                for n in nicks
                if (s := self._sessions.get(_key(n))) is not None and s.welcomed
            }
            for s in sessions:  # (still here: the one its nick names)
                if s.nick and self._sessions.get(_key(s.nick)) is s and s.welcomed:
                    parties[s.id] = s
            if parties:
                for frame in frames:
                    entry = MessageEntry(frame, True, list(parties.values()))
                    wake |= self._lanes.post(self._lanes.private, entry)
            audience: dict[int, Session] = {}
            lanes = []
            for name in rooms:
                found = self._rooms.get(_key(name))
                if found is not None:
                    audience.update(found.members)
                    lanes.append(found.lane)
            if audience:
                members = list(audience.values())
                wake |= self._lanes.barrier(lambda: self._fanout_many(frames, members), lanes)
        self._wake_if(wake)

    def stop_messages(self) -> None:
        """Refuse every message from now on (``closing``): sets :attr:`stopping` under
        the lock that a message's id is given under, so that none is given one after
        this returns (``undelivered`` then only falls)."""
        with self._lock:
            self.stopping = True

    def undelivered(self) -> int:
        """How many messages (and joins) wait in the lanes for their turn: accepted (and
        stored, with a store), not delivered yet. The shutdown waits for none."""
        with self._lock:
            return len(self._lanes.private) + sum(len(r.lane) for r in self._rooms.values())

    def settle(self, session: Session) -> None:
        """Deliver the messages ``session`` sent while their storing went on.

        Called on the session's reader thread. Waits until they are stored,
        delivers them in lane order, then runs ``chatkit_on_message`` for each (a
        refused one was reported to the sender on its turn). Returns once all are
        delivered, so whatever the client sent next is answered after them. With a
        :attr:`relay`, waits for the relay to deliver them.
        """
        if self._any_relayed and any(isinstance(record, _Relayed) for record in session.unsettled):
            self._settle_relayed(session)
        self._lanes.settle(session)

    def announce(self, text: str, room: str | None = None, **fields: Any) -> None:
        """Send a ``notice`` to everyone in ``room``, or to everyone if ``room`` is None.

        The frame names the ``room`` (so a client in several rooms knows which one);
        ``fields`` are added to it: what a face may render otherwise (the IRC face shows
        a notice with ``mode``, ``arg`` and ``by`` as ``MODE``). Control characters in
        ``text`` become U+FFFD, line breaks kept (text mode marks each line as the
        notice's: none passes for a line of chat)."""
        text = clean_text(str(text), newlines=True)
        with self._lock:
            if room is None:
                members: Iterable[Session] = [s for s in self._sessions.values() if s.welcomed]
            else:
                found = self._rooms.get(_key(room))
                members = [] if found is None else list(found.members.values())
            if room is not None:
                fields["room"] = found.name if found is not None else room
            wake = self._fanout(Frame("notice", text=text, **fields), members)
        self._wake_if(wake)

    # -- helpers -------------------------------------------------------------------

    def _member_room(self, session: Session, room: str | None) -> str:
        """The room ``session`` means (its current one for ``None`` or ``""``; its ``#``
        may be left out, as a hello's and /join's), or ``not_in_room``.

        Read without the lock (one attribute read, one dict look-up: each atomic), so
        it may be stale by the time the caller acts: every caller checks membership
        again under the lock before it changes anything.
        """
        if not room:
            current = session.current_room
            if current is None:
                raise CommandError("you are in no room; /join #room first", "not_in_room")
            return current
        name = session.rooms.get(_key(room))
        if name is None:
            room = names.room_name(room)
            name = session.rooms.get(_key(room))
            if name is None:
                raise CommandError(f"you are not in {room}; /join {room} first", "not_in_room")
        return name

    def _said(self, text: str) -> str:
        """A message's ``text`` as a plugin may give it to :meth:`say` or :meth:`private`:
        text, control characters cleaned (line breaks kept; bidi controls as ``bidi``
        says, replaced if it refuses them), as a client's is when it is read; ``dropped``
        if nothing is left. A client's own text is clean already: one check in C."""
        if isinstance(text, str) and text.isprintable() and text.strip():
            return text
        bidi = "allow" if self.config.bidi == "allow" else "replace"
        text = clean_text(str(text), newlines=True, bidi=bidi).strip("\n")
        if not text.strip():
            raise CommandError("message not delivered: it is empty", "dropped")
        return text

    def _filter(self, session: Session, message: Message) -> None:
        text = message.text
        result = self.hooks.first(
            "chatkit_filter_message", _drop, Drop, client=session, message=message
        )
        if isinstance(result, Drop):
            raise CommandError(f"message not delivered: {result.reason}", "dropped")
        if message.text is not text:
            # A filter's text is checked as a client's is: text, control characters
            # cleaned (line breaks kept), not empty, max_message_lines at most.
            try:
                changed = self._said(message.text)
            except CommandError:
                why = "message not delivered: a filter left it empty"
                raise CommandError(why, "dropped") from None
            most = self.config.limits.max_message_lines
            if changed.count("\n") >= most:
                changed = "\n".join(changed.split("\n")[:most])
            message.text = changed

    def _check(self, result: object) -> None:
        if isinstance(result, Reject):
            # (An error frame's own fields are the Reject's reason and code, whatever
            # its details say.)
            details = {k: v for k, v in result.details.items() if k not in _OWN_FIELDS}
            raise CommandError(result.reason, result.code, **details)

    def _fanout(self, frame: Frame, sessions: Iterable[Session]) -> bool:
        """Queue ``frame`` to each session: one encoding per codec, one append each.

        Returns True if the writer must be woken (the caller does it after
        releasing the lock).
        """
        assert self._lock.locked()
        conns = [session.transport for session in sessions]
        self.deliveries += len(conns)
        return self._outbox.fanout(frame, conns)

    def _fanout_many(self, frames: Sequence[Frame], sessions: Iterable[Session]) -> bool:
        """:meth:`_fanout` for a run of frames to the same sessions, as one piece each
        (the lanes' ``fanout``)."""
        assert self._lock.locked()
        conns = [session.transport for session in sessions]
        self.deliveries += len(conns) * len(frames)
        return self._outbox.fanout_many(frames, conns)

    def _publish(self, frames: Sequence[Frame], feed: Feed) -> bool:
        """Queue a room's run of messages to its members in one step (the lanes' ``publish``)."""
        assert self._lock.locked()
        self.deliveries += len(feed) * len(frames)
        return feed.publish(frames)

    def _wake_if(self, wake: bool) -> None:
        if wake:
            self._outbox.wake()


class _Relayed(NamedTuple):
    """A reader's own message handed to the relay, waiting for :meth:`Hub.settle`."""

    message: Message
    wait: Callable[[], None]


def _away(session: Session, key: str) -> dict[str, str]:
    """The ``away`` field of a join to the room of ``key``: the joiner's away message,
    if it is away (and may speak there: :attr:`Session.quiet`)."""
    away = session.away
    return {} if away is None or key in session.quiet else {"away": away}


def _account(session: Session) -> dict[str, str]:
    """The ``account`` field of the frames a session causes, if it is identified."""
    return {} if session.account is None else {"account": session.account}


def _room_key(room: Room) -> str:
    return _key(room.name)


def _reject(plugin: str) -> Reject:
    return Reject(f"internal error in plugin {plugin!r}; try again later", "internal_error")


def _drop(plugin: str) -> Drop:
    return Drop(f"internal error in plugin {plugin!r}")


def _request_failed(plugin: str) -> Reject:
    return Reject(f"internal error in plugin {plugin!r}", "internal_error")


def message_frame(message: Message, **extra: Any) -> Frame:
    """The ``message`` (room) or ``private`` frame of a message that has an id."""
    fields: dict[str, Any] = {"id": message.id, "ts": message.ts}
    if message.room is not None:
        fields.update(room=message.room, nick=message.nick, text=message.text)
        kind = "message"
    else:
        fields.update({"from": message.nick, "to": message.to, "text": message.text})
        kind = "private"
    if message.action:
        fields["action"] = True
    if message.notice:
        fields["notice"] = True
    if message.account is not None:
        fields["account"] = message.account
    fields.update(extra)
    return Frame(kind, **fields)
