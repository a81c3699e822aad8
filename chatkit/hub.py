"""The chat itself: who is logged in, which rooms exist, and where each line goes.

Every method runs on the reader thread of the client that caused it. One lock
guards all chat state; it is never held across a hook call or socket I/O. Frames
are queued to recipients under the lock (a buffer append each), so every member of
a room sees that room's events in the same order, the order of their ids; the
writer thread is woken once, after the lock is released.

When a plugin stores messages (``chatkit_store_message``) or replays a room to
joiners (``chatkit_room_replay``), deliveries are *sequenced*: a message gets its
id under the lock and waits in its room's lane (a FIFO of pending deliveries) while
its sender's thread calls the store hooks without the lock; whoever finds the head
of a lane ready delivers it and every ready entry behind it, under the lock. So a
message is stored before anyone receives it, and members still see ids in order.
A store hook may answer with a future: the sender's reader then reads on, and
:meth:`Hub.settle` delivers the client's stored messages before the reader waits
for input or handles anything but a message (docs/architecture.md walks through it).
A join waits in the same lane: when it reaches the head, every earlier message has
been stored and delivered and no later one is delivered until the joiner has its
replay, so the replay and the live messages neither overlap nor leave a gap.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chatkit import names
from chatkit.commands import CommandContext, CommandRegistry, split_command
from chatkit.errors import CommandError
from chatkit.events import Hello, Message, Request, Say
from chatkit.frames import Frame
from chatkit.results import Drop, Reject
from chatkit.version import __version__

if TYPE_CHECKING:
    from chatkit.config import Config
    from chatkit.hooks import HookRunner
    from chatkit.session import Session
    from chatkit.transport import Outbox

__all__ = ["Hub", "message_frame", "valid_nick", "valid_room"]

_NICK_EXTRA = set("_-.[]{}|^`")


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
    return None


def valid_room(room: str, max_len: int) -> str | None:
    """Why ``room`` is not an acceptable room name, or ``None`` if it is."""
    body = room[1:]
    if (
        not room.startswith("#")
        or not body
        or len(room) > max_len
        or not all(c.isalnum() or c in "_-." for c in body)
    ):
        return f"room names are '#' and 1 to {max_len - 1} letters, digits, '_', '-' or '.'"
    return None


def _key(name: str) -> str:
    return names.fold(name)


def _iso(ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


class Room:
    """A room and its members. Guarded by the hub's lock."""

    def __init__(self, name: str) -> None:
        self.name = name
        """The display name, as its first member typed it."""
        self.members: dict[int, Session] = {}
        """Members by session id, in join order."""
        self.lane: deque[_Entry] = deque()
        """Sequenced deliveries waiting for their turn, in id order (see the module doc).
        A room with entries here is kept even when it has no members."""


class _Entry:
    """A pending delivery in a lane. Every field is guarded by the hub's lock."""

    __slots__ = ("done", "event", "ready")

    def __init__(self) -> None:
        self.ready = False
        """Set when the entry may be delivered (stored, or replay read)."""
        self.done = False
        """Set once delivered (or given up)."""
        self.event: threading.Event | None = None
        """Created, under the lock, only by an owner that has to wait; set with :attr:`done`
        (or, for a join, when it reaches the head of its lane)."""

    def deliver(self, hub: Hub) -> bool:
        """Deliver under the hub's lock; True if the writer must be woken."""
        raise NotImplementedError


class _MessageEntry(_Entry):
    """A room or private message between id assignment and delivery."""

    __slots__ = ("audience", "frame", "refusal", "tell")

    def __init__(self, frame: Frame, audience: Room | list[Session]) -> None:
        super().__init__()
        self.frame = frame
        self.audience = audience
        """The room (its members at delivery time) or the two parties of a private message."""
        self.refusal: Drop | None = None
        """Set if a store hook refused the message: it is then delivered to nobody."""
        self.tell: Session | None = None
        """For a message settled later: the sender, told of a refusal in lane order."""

    def deliver(self, hub: Hub) -> bool:
        if self.refusal is not None:
            if self.tell is None:
                return False
            text = f"message not delivered: {self.refusal.reason}"
            return self.tell.push(Frame("error", code="not_stored", text=text))
        members = (
            self.audience.members.values() if isinstance(self.audience, Room) else self.audience
        )
        return hub._fanout(self.frame, members)


class _JoinEntry(_Entry):
    """A join waiting for its turn, then for its replay."""

    __slots__ = ("joined", "last_id", "replay", "room", "session", "turn")

    def __init__(self, session: Session, room: Room, last_id: int) -> None:
        super().__init__()
        self.session = session
        self.room = room
        self.last_id = last_id
        """The last id given out when the join entered the lane: messages with ids up
        to it are delivered before the join, later ones after it."""
        self.turn = False
        """Set when the entry is at the head of its lane: every earlier message is
        delivered, so the replay may be read."""
        self.replay: list[Frame] = []
        self.joined = False
        """Whether delivering it made the session a member."""

    def deliver(self, hub: Hub) -> bool:
        session = self.session
        if session.nick is None or hub._sessions.get(_key(session.nick)) is not session:
            return False  # logged out while its replay was read
        if _key(self.room.name) in session.rooms:
            return False  # joined meanwhile (by a plugin)
        wake = hub._enter(session, self.room.name)
        for frame in self.replay:
            wake |= session.push(frame)
        self.joined = True
        return wake


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
        self._outbox = outbox
        # Synchronize access to the chat state: _sessions, _rooms, _ids and each
        # session's nick, rooms and current_room. Never held across a hook call or
        # socket I/O; frames are only appended to send queues under it.
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}  # folded nick (names.fold) -> session
        self._rooms: dict[str, Room] = {}  # folded room name -> room
        # Look-alike names (names.skeleton): the skeleton of each nick and room in use,
        # so a name that looks like one in use is refused. The default room's is kept
        # for good, so no room can pass for it even while it is empty.
        self._nick_skeletons: dict[str, Session] = {}
        self._room_skeletons: dict[str, str] = {
            names.skeleton(config.default_room): _key(config.default_room)
        }
        self._ids = IdClock()
        self._sequenced = False  # set by prepare(): deliveries go through lanes
        self._private_lane: deque[_Entry] = deque()  # sequenced private messages
        self.deliveries = 0
        """Chat frames (messages, joins, leaves, nicks, notices) queued to recipients
        since start (a metric; under the lock)."""

    def prepare(self) -> None:
        """Decide, once the plugins are configured, whether deliveries are sequenced.

        They are when any plugin implements ``chatkit_store_message`` or
        ``chatkit_room_replay`` (see the module doc); otherwise a message is
        fanned out at once, under the lock that gave it its id.
        """
        hooks = ("chatkit_store_message", "chatkit_room_replay")
        self._sequenced = any(next(iter(self.hooks.impls(name)), None) for name in hooks)

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

    def sessions(self) -> list[Session]:
        """Every logged-in session."""
        with self._lock:
            return [s for s in self._sessions.values() if s.welcomed]

    def who(self, room: str) -> list[str] | None:
        """The nicks in ``room`` in join order, or ``None`` if no such room."""
        with self._lock:
            found = self._rooms.get(_key(room))
            return None if found is None else [s.nick or "" for s in found.members.values()]

    def rooms(self) -> dict[str, int]:
        """Every room with its number of members, sorted by name."""
        with self._lock:
            return {r.name: len(r.members) for r in sorted(self._rooms.values(), key=_room_key)}

    # -- what a face calls for its clients' events ----------------------------------

    def allow_input(self, session: Session, event: Hello | Say | Request) -> None:
        """Run ``chatkit_allow_input`` on an event; raise :class:`CommandError` if refused.

        A face calls it first for every hello, say and request it acts on.
        """
        self._check(self.hooks.first("chatkit_allow_input", _reject, client=session, event=event))

    def request(self, session: Session, request: Request) -> None:
        """Hand a frame of a type the core does not know to the plugins (logged in or not).

        Raises :class:`CommandError`: ``not_logged_in`` if no plugin answers a client
        that has not logged in, ``bad_frame`` if none answers one that has, or a
        plugin's refusal.
        """
        result = self.hooks.first(
            "chatkit_handle_request", _request_failed, client=session, request=request
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

    def run_command(self, session: Session, text: str, room: str | None) -> None:
        """Run the command line ``text`` (``/name args``) typed by ``session``."""
        name, args = split_command(text)
        ctx = CommandContext(session, name, args, room or session.current_room, self)
        self.commands.dispatch(ctx)

    # -- login and logout -------------------------------------------------------

    def login(self, session: Session, nick: str, fields: dict[str, Any] | None = None) -> None:
        """Log ``session`` in as ``nick`` and join the default room.

        ``fields`` are the login's other fields (a ``hello`` frame's ``password``...),
        for ``chatkit_allow_login``. Raises :class:`CommandError` (``bad_nick``,
        ``nick_taken``, or a plugin's refusal); the client may then try again.
        """
        limits = self.config.limits
        nick = names.normalize(nick)
        problem = valid_nick(nick, limits.max_nick)
        if problem:
            raise CommandError(f"bad nick {nick!r}: {problem}", "bad_nick")
        self._check(
            self.hooks.first(
                "chatkit_allow_login", _reject, client=session, nick=nick, fields=fields or {}
            )
        )
        room = self.config.default_room
        allowed = self.hooks.first("chatkit_allow_join", _reject, client=session, room=room)
        joined = allowed is None
        welcome = Frame(
            "welcome",
            nick=nick,
            server="chatkit",
            version=__version__,
            rooms=[room] if joined else [],
        )
        with self._lock:
            self._check_nick_free(session, nick)
            self._sessions[_key(nick)] = session
            self._nick_skeletons[names.skeleton(nick)] = session
            session.nick = nick
            session.welcomed = True
            wake = session.push(welcome)
        self._wake_if(wake)
        # What a plugin sends at login (a message of the day) comes before the
        # room's join and replay, as on IRC: welcome, MOTD, join, replay.
        self.hooks.notify("chatkit_on_login", client=session)
        if not joined:
            session.error(allowed.code, f"cannot join {room}: {allowed.reason}")
            return
        if self._sequenced:
            joined = self._sequenced_join(session, room)
        else:
            with self._lock:
                wake = self._enter(session, room)
            self._wake_if(wake)
        if joined:
            self.hooks.notify("chatkit_on_join", client=session, room=session.current_room)

    def logout(self, session: Session, reason: str) -> None:
        """Remove a session that is gone: leave every room, free its nick, call hooks.

        Does nothing for a session that never logged in; idempotent.
        """
        with self._lock:
            if session.nick is None or self._sessions.get(_key(session.nick)) is not session:
                return
            del self._sessions[_key(session.nick)]
            self._nick_skeletons.pop(names.skeleton(session.nick), None)
            left = list(session.rooms.values())
            # Each member of any of those rooms gets one `leave` naming every room it
            # shared with the session, not one per room ("* bob left #a, #b (quit)").
            shared: dict[int, tuple[Session, list[str]]] = {}
            for name in left:
                for member in self._rooms[_key(name)].members.values():
                    if member is not session:
                        shared.setdefault(member.id, (member, []))[1].append(name)
                self._leave(session, name, reason, announce=False)
            wake = False
            if not self.closing:
                # Members sharing the same rooms get the same frame: one encoding each.
                groups: dict[tuple[str, ...], list[Session]] = {}
                for member, rooms in shared.values():
                    groups.setdefault(tuple(rooms), []).append(member)
                ts = utc_now()
                for names_, members in groups.items():
                    frame = Frame(
                        "leave",
                        room=names_[0],
                        nick=session.nick,
                        ts=ts,
                        reason=reason,
                        rooms=list(names_),
                    )
                    wake |= self._fanout(frame, members)
        self._wake_if(wake)
        for name in left:
            self.hooks.notify("chatkit_on_leave", client=session, room=name, reason=reason)
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
            self._check_room_name(room)
        self._check(self.hooks.first("chatkit_allow_join", _reject, client=session, room=room))
        if self._sequenced:
            if not self._sequenced_join(session, room):
                return False
            with self._lock:
                name = session.rooms[_key(room)]
        else:
            with self._lock:
                if _key(room) in session.rooms:  # joined meanwhile by a plugin
                    return False
                wake = self._enter(session, room)
                name = session.rooms[_key(room)]
            self._wake_if(wake)
        self.hooks.notify("chatkit_on_join", client=session, room=name)
        return True

    def _sequenced_join(self, session: Session, room: str) -> bool:
        """Join ``room`` through its lane, with the replay first; False if not joined."""
        with self._lock:
            if _key(room) in session.rooms:
                return False
            found = self._rooms.get(_key(room)) or self._new_room(room)
            # Ids are given out and entries appended under this lock, so every
            # message of the room with an id up to last_id is ahead in the lane.
            entry = _JoinEntry(session, found, self._ids.last)
            found.lane.append(entry)
            entry.turn = found.lane[0] is entry
            if not entry.turn:
                entry.event = threading.Event()
        replay: list[Frame] | None = None
        try:
            if entry.event is not None:
                entry.event.wait()  # until every earlier message of the room is delivered
            replay = self.hooks.first(
                "chatkit_room_replay",
                _no_replay,
                client=session,
                room=found.name,
                last_id=entry.last_id,
            )
        finally:
            # Always, or the room's later deliveries would wait behind this entry forever.
            with self._lock:
                entry.replay = list(replay or [])
                entry.ready = True
                wake = self._drain_room(found)
        self._wake_if(wake)
        return entry.joined

    def part(self, session: Session, room: str, reason: str = "part") -> None:
        """Leave ``room``; raises :class:`CommandError` ``not_in_room`` if not a member."""
        with self._lock:
            name = session.rooms.get(_key(room))
            if name is None:
                raise CommandError(f"you are not in {room}", "not_in_room")
            wake = self._leave(session, name, reason, announce=True, tell_self=True)
        self._wake_if(wake)
        self.hooks.notify("chatkit_on_leave", client=session, room=name, reason=reason)

    def _enter(self, session: Session, room: str) -> bool:
        """Add ``session`` to ``room`` and queue the ``join`` to every member (itself too)."""
        assert self._lock.locked()
        found = self._rooms.get(_key(room)) or self._new_room(room)
        others = list(found.members.values())
        found.members[session.id] = session
        session.rooms[_key(room)] = found.name
        session.current_room = found.name
        ts = utc_now()
        frame = Frame("join", room=found.name, nick=session.nick, ts=ts)
        # The joiner's own join goes to it alone, through its face's protocol (which
        # may need to know: IRC follows it with the names list), and names the members.
        members = [member.nick for member in found.members.values()]
        own = Frame("join", room=found.name, nick=session.nick, ts=ts, members=members)
        self.deliveries += 1
        return self._fanout(frame, others) | session.push(own)

    def _check_room_name(self, room: str) -> None:
        """Raise ``bad_room`` if ``room`` is new and looks like a room in use."""
        assert self._lock.locked()
        if _key(room) in self._rooms:
            return
        other = self._room_skeletons.get(names.skeleton(room))
        if other is not None and other != _key(room):
            like = self._rooms[other].name if other in self._rooms else self.config.default_room
            raise CommandError(
                f"room {room!r} looks like {like!r} (letters from other scripts that look "
                f"the same count as the same); /join {like} or pick another name",
                "bad_room",
            )

    def _new_room(self, room: str) -> Room:
        """Create ``room`` (checked by :meth:`_check_room_name` before any change)."""
        assert self._lock.locked()
        self._check_room_name(room)
        found = self._rooms[_key(room)] = Room(room)
        self._room_skeletons.setdefault(names.skeleton(room), _key(room))
        return found

    def _forget_room(self, room: Room) -> None:
        """Drop ``room``, empty and with nothing in its lane."""
        assert self._lock.locked()
        del self._rooms[_key(room.name)]
        skeleton = names.skeleton(room.name)
        if self._room_skeletons.get(skeleton) == _key(room.name) != _key(self.config.default_room):
            del self._room_skeletons[skeleton]

    def _leave(
        self, session: Session, name: str, reason: str, *, announce: bool, tell_self: bool = False
    ) -> bool:
        """Remove ``session`` from room ``name``; queue the ``leave`` to who should see it."""
        assert self._lock.locked()
        room = self._rooms[_key(name)]
        del room.members[session.id]
        del session.rooms[_key(name)]
        if session.current_room == name:
            session.current_room = next(reversed(session.rooms.values()), None)
        if not room.members and not room.lane:
            self._forget_room(room)
        wake = False
        if announce:
            frame = Frame("leave", room=name, nick=session.nick, ts=utc_now(), reason=reason)
            wake = self._fanout(frame, room.members.values())
            if tell_self:
                wake |= session.push(frame)
        return wake

    # -- nicks -------------------------------------------------------------------

    def rename(self, session: Session, new: str) -> None:
        """Change ``session``'s nick and tell everyone who shares a room with it.

        Raises :class:`CommandError` (``bad_nick``, ``nick_taken``, a refusal).
        """
        new = names.normalize(new)
        problem = valid_nick(new, self.config.limits.max_nick)
        if problem:
            raise CommandError(f"bad nick {new!r}: {problem}", "bad_nick")
        self._check(self.hooks.first("chatkit_allow_nick", _reject, client=session, nick=new))
        with self._lock:
            old = session.nick
            assert old is not None
            self._check_nick_free(session, new)
            if old == new:
                return
            del self._sessions[_key(old)]
            self._nick_skeletons.pop(names.skeleton(old), None)
            self._sessions[_key(new)] = session
            self._nick_skeletons[names.skeleton(new)] = session
            session.nick = new
            audience: dict[int, Session] = {}
            for key in session.rooms:
                audience.update(self._rooms[key].members)
            audience.pop(session.id, None)
            # The client's own nick change goes to it alone, through its face's
            # protocol, which may need to know its nick (IRC numerics name it).
            frame = Frame("nick", old=old, new=new)
            self.deliveries += 1
            wake = self._fanout(frame, audience.values()) | session.push(frame)
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
        if other is not None and other is not session:
            raise CommandError(
                f"nick {nick!r} looks like {other.nick!r}, which is taken "
                "(letters from other scripts that look the same count as the same); "
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
        defer: bool = False,
    ) -> Message:
        """Send ``text`` to ``room`` (default: the current room) through the filters.

        Returns the delivered :class:`Message`, or raises :class:`CommandError`
        (``not_in_room``, ``dropped``, ``not_stored``). With ``defer`` (the
        reader's own lines) it may return once the message is being stored; it is
        then delivered by :meth:`settle`.
        """
        name = self._member_room(session, room)
        message = Message(nick=session.nick or "", text=text, room=name, action=action)
        self._filter(session, message)
        with self._lock:
            found = self._rooms.get(_key(name))
            if found is None or session.id not in found.members:
                raise CommandError(f"you are not in {name}", "not_in_room")
            message.id, message.ts = self._ids.next()
            message.room = found.name
            frame = message_frame(message)
            frame.origin = session.id  # its sender may not want it back (Codec.echo)
            if self._sequenced:
                entry = _MessageEntry(frame, found)
                found.lane.append(entry)
            else:
                wake = self._fanout(frame, found.members.values())
        if self._sequenced:
            if not self._store_and_deliver(session, message, entry, found, defer):
                return message  # settle() delivers it and calls chatkit_on_message
        else:
            self._wake_if(wake)
        self.hooks.notify("chatkit_on_message", client=session, message=message)
        return message

    def private(self, session: Session, nick: str, text: str, *, action: bool = False) -> Message:
        """Send ``text`` privately to ``nick``; both sides receive the ``private`` frame.

        Raises :class:`CommandError` (``no_such_nick``, ``dropped``).
        """
        target = self.find(nick)
        if target is None:
            raise CommandError(f"no one is called {nick!r}", "no_such_nick")
        message = Message(nick=session.nick or "", text=text, to=target.nick, action=action)
        self._filter(session, message)
        with self._lock:
            if target.nick is None or self._sessions.get(_key(target.nick)) is not target:
                raise CommandError(f"{nick} has left", "no_such_nick")
            message.id, message.ts = self._ids.next()
            message.to = target.nick
            frame = message_frame(message)
            frame.origin = session.id  # its sender may not want it back (Codec.echo)
            parties = list({session.id: session, target.id: target}.values())
            if self._sequenced:
                entry = _MessageEntry(frame, parties)
                self._private_lane.append(entry)
            else:
                wake = self._fanout(frame, parties)
        if self._sequenced:
            self._store_and_deliver(session, message, entry, None)
        else:
            self._wake_if(wake)
        self.hooks.notify("chatkit_on_message", client=session, message=message)
        return message

    def _store_and_deliver(
        self,
        session: Session,
        message: Message,
        entry: _MessageEntry,
        room: Room | None,
        defer: bool = False,
    ) -> bool:
        """Call the store hooks, then deliver in lane order; True once delivered.

        Runs on the sender's thread without the lock. If a store hook answered
        with a future and ``defer`` is set, returns False at once: the message
        is then delivered by :meth:`settle`, which the sender's reader calls
        before it waits for more input or handles anything but a message.
        """
        # Refused until the hooks answer: nothing is delivered unstored, even if a
        # BaseException (KeyboardInterrupt) escapes them.
        refusal: Drop | None = Drop("it could not be stored (internal error)")
        futures: list[Future[Any]] = []
        deferred = False
        try:
            results = self.hooks.collect(
                "chatkit_store_message", _not_stored, _is_drop, client=session, message=message
            )
            refusal = None  # the hooks answered
            for result in results:
                if isinstance(result, Future):
                    futures.append(result)
                elif isinstance(result, Drop):
                    refusal = result
            if futures and refusal is None:
                if defer:
                    entry.tell = session  # a refusal is then reported in lane order
                    session.unsettled.append((message, entry, futures, room))
                    deferred = True
                    return False
                refusal = _outcome(futures)
        finally:
            if not deferred:
                if defer and session.unsettled:
                    # This reader's earlier messages are ahead in the lane and only it
                    # marks them ready: finish them first, or it would wait for itself.
                    self.settle(session)
                # Always, or the lane's later deliveries would wait behind it forever.
                self._deliver_stored(entry, room, refusal)
        return True

    def settle(self, session: Session) -> None:
        """Deliver the messages ``session`` sent while their storing went on.

        Called on the session's reader thread. Waits until they are stored,
        delivers them (in lane order, all under one acquisition of the lock),
        then, in order, runs ``chatkit_on_message`` for each (a refused one was
        reported to the sender on its turn in the lane). Returns once all are
        delivered, so whatever the client sent next is answered after them.
        """
        while session.unsettled:
            records, session.unsettled = session.unsettled, []
            refusals: list[Drop | None] = []
            last: tuple[list[Future[Any]], Drop | None] | None = None
            for _message, _entry, futures, _room in records:
                # Messages committed together share one future: wait for it once.
                if last is None or last[0] != futures:
                    last = (futures, _outcome(futures))
                refusals.append(last[1])
            with self._lock:
                lanes: dict[int, Room | None] = {}
                for (_message, entry, _futures, room), refusal in zip(
                    records, refusals, strict=True
                ):
                    entry.refusal = refusal
                    entry.ready = True
                    lanes[id(room)] = room
                wake = False
                for room in lanes.values():
                    wake |= self._drain_room(room) if room else self._drain(self._private_lane)
                for _message, entry, _futures, _room in records:
                    if not entry.done:
                        # An earlier entry is not ready yet: its owner delivers this one.
                        entry.event = threading.Event()
            self._wake_if(wake)
            for (message, entry, _futures, _room), refusal in zip(records, refusals, strict=True):
                if entry.event is not None:
                    entry.event.wait()
                if refusal is None:  # (a refusal was sent to the sender on delivery)
                    self.hooks.notify("chatkit_on_message", client=session, message=message)

    def _deliver_stored(
        self, entry: _MessageEntry, room: Room | None, refusal: Drop | None
    ) -> None:
        """Mark ``entry`` stored (or refused), deliver what is ready, and wait for it."""
        with self._lock:
            entry.refusal = refusal
            entry.ready = True
            wake = self._drain_room(room) if room else self._drain(self._private_lane)
            if not entry.done:
                # An earlier entry is not ready yet: its owner delivers this one.
                entry.event = threading.Event()
        self._wake_if(wake)
        if entry.event is not None:
            entry.event.wait()
        if refusal is not None:
            raise CommandError(f"message not delivered: {refusal.reason}", "not_stored")

    def announce(self, text: str, room: str | None = None) -> None:
        """Send a ``notice`` to everyone in ``room``, or to everyone if ``room`` is None."""
        with self._lock:
            if room is None:
                members: Iterable[Session] = [s for s in self._sessions.values() if s.welcomed]
            else:
                found = self._rooms.get(_key(room))
                members = [] if found is None else list(found.members.values())
            wake = self._fanout(Frame("notice", text=text), members)
        self._wake_if(wake)

    # -- helpers -------------------------------------------------------------------

    def _drain(self, lane: deque[_Entry]) -> bool:
        """Deliver the ready entries at the head of ``lane``; True if the writer must be woken."""
        assert self._lock.locked()
        wake = False
        while lane and lane[0].ready:
            entry = lane[0]
            if isinstance(entry, _MessageEntry) and isinstance(entry.audience, Room):
                # A run of stored messages to one room leaves as one piece per member.
                run: list[_MessageEntry] = []
                while lane:
                    head = lane[0]
                    if not (
                        head.ready
                        and isinstance(head, _MessageEntry)
                        and head.audience is entry.audience
                        and head.refusal is None
                    ):
                        break
                    run.append(head)
                    lane.popleft()
                if run:
                    wake |= self._fanout_many(
                        [e.frame for e in run], entry.audience.members.values()
                    )
                    for done in run:
                        done.done = True
                        if done.event is not None:
                            done.event.set()
                    continue
            lane.popleft()
            wake |= entry.deliver(self)
            entry.done = True
            if entry.event is not None:
                entry.event.set()
        if lane:
            head = lane[0]
            if isinstance(head, _JoinEntry) and not head.turn:
                head.turn = True  # every earlier entry is delivered: its replay may be read
                if head.event is not None:
                    head.event.set()
        return wake

    def _drain_room(self, room: Room) -> bool:
        """:meth:`_drain` for a room's lane; forget the room once it is empty."""
        wake = self._drain(room.lane)
        if not room.members and not room.lane and self._rooms.get(_key(room.name)) is room:
            self._forget_room(room)
        return wake

    def _member_room(self, session: Session, room: str | None) -> str:
        with self._lock:
            if room is None:
                if session.current_room is None:
                    raise CommandError("you are in no room; /join #room first", "not_in_room")
                return session.current_room
            name = session.rooms.get(_key(room))
        if name is None:
            raise CommandError(f"you are not in {room}; /join {room} first", "not_in_room")
        return name

    def _filter(self, session: Session, message: Message) -> None:
        result = self.hooks.first("chatkit_filter_message", _drop, client=session, message=message)
        if isinstance(result, Drop):
            raise CommandError(f"message not delivered: {result.reason}", "dropped")

    def _check(self, result: object) -> None:
        if isinstance(result, Reject):
            raise CommandError(result.reason, result.code, **result.details)

    def _fanout(self, frame: Frame, sessions: Iterable[Session]) -> bool:
        """Queue ``frame`` to each session: one encoding per codec, one append each.

        Returns True if the writer must be woken (the caller does it after
        releasing the lock).
        """
        assert self._lock.locked()
        conns = [session.transport for session in sessions]
        self.deliveries += len(conns)
        return self._outbox.fanout(frame, conns)

    def _fanout_many(self, frames: list[Frame], sessions: Iterable[Session]) -> bool:
        """:meth:`_fanout` for a run of frames to the same sessions, as one piece each."""
        assert self._lock.locked()
        conns = [session.transport for session in sessions]
        self.deliveries += len(conns) * len(frames)
        return self._outbox.fanout_many(frames, conns)

    def _wake_if(self, wake: bool) -> None:
        if wake:
            self._outbox.wake()


def _room_key(room: Room) -> str:
    return _key(room.name)


def _reject(plugin: str) -> Reject:
    return Reject(f"internal error in plugin {plugin!r}; try again later", "internal_error")


def _drop(plugin: str) -> Drop:
    return Drop(f"internal error in plugin {plugin!r}")


def _request_failed(plugin: str) -> Reject:
    return Reject(f"internal error in plugin {plugin!r}", "internal_error")


def _is_drop(result: object) -> bool:
    return isinstance(result, Drop)


def _outcome(futures: list[Future[Any]]) -> Drop | None:
    """Wait for a message's store futures: ``None`` if all succeeded, else a :class:`Drop`."""
    for future in futures:
        try:
            future.result()
        except Exception as exc:
            return Drop(str(exc) or type(exc).__name__)
    return None


def _not_stored(plugin: str) -> Drop:
    return Drop(f"it could not be stored (internal error in plugin {plugin!r})")


def _no_replay(plugin: str) -> None:
    return None


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
    fields.update(extra)
    return Frame(kind, **fields)
