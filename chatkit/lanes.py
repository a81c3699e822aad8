"""Sequenced delivery: lanes, their entries, and settling.

Everything the chat delivers in a room's order goes through a *lane*: a FIFO of
*entries* in id order (but for one shortcut, :meth:`Lanes.publish`: with nothing to
store, a message whose lane is empty may skip it, nothing being ahead of it). Each
room has one (``hub.Room.lane``) and private messages share one
(:attr:`Lanes.private`). An entry is a message (to the lane's room, or to
the two parties of a private message), a join (with its replay), or a barrier (a
rename's ``nick`` frame to the others: one entry in several lanes, delivered when at
the head of all of them, :meth:`Lanes.barrier`). It is appended
(:meth:`Lanes.post`) under the hub's lock, the very acquisition that gives a
message its id, so a lane's order is the id order.

An entry is delivered once it is *ready* and everything ahead of it is delivered:
whoever makes the head of a lane ready delivers it and every ready entry behind it,
under the lock (``Lanes._drain``). So every member of a room sees its events in id
order, whichever thread finished first.

An entry is born ready when there is nothing to wait for: a message when no plugin
stores messages (``chatkit_store_messages``, ``chatkit_store_message``) and it is not
a reader's own line, a join
when none replays rooms (``chatkit_room_replay``). A ready entry posted to an empty
lane is delivered at once, under the lock that gave it its id. A reader's own line
(``defer``) with nothing to store waits only for the reader's :meth:`Lanes.settle`,
which makes its run ready at once: a burst read in one ``recv`` leaves as one piece
per member (the hot path of docs/architecture.md). Otherwise:

- A message waits while its sender's thread calls the store hooks, without the
  lock (storing is I/O). Then it is marked ready, or refused: a refused message is
  delivered to nobody, and its sender is told on its turn in the lane. A store
  hook may answer with a future; for the reader's own lines (a burst's messages
  are stored with one call of each hook, :meth:`Lanes.send_run`) the reader then
  goes on with its client's next line, and :meth:`Lanes.settle` waits for the futures and
  delivers, before the reader waits for input or handles anything but a message.
- A join waits for its *turn*, the head of its lane. Every message of the room with
  an id up to the last one given out when the join was posted is then stored and
  delivered, and every later one waits behind it. The joiner's thread reads the
  replay for that id (``chatkit_room_replay``, no lock held), then the join is
  delivered: the joiner becomes a member and gets its ``join``, the replay, then
  live traffic, with no message missing or doubled. This is the *join-replay
  guarantee*; it holds whether or not messages are born ready, since a ready
  message posted behind a pending join waits for it.

An owner that has to wait for others (its entry is ready but something ahead is
not, or its join is not at the head) sleeps on an event created, under the lock,
only in that case; whoever delivers the entry, or brings the join to the head,
sets it. Before it sleeps, a thread settles what its own reader deferred (a hook
saying into a room between two of its reader's messages): that may be ahead, and
no other thread would ever make it ready.

This module knows no room, nick or socket: the hub hands it its lock and three
callbacks (see :class:`Lanes`), and each lane the members it delivers to.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeGuard

from chatkit.errors import CommandError
from chatkit.frames import Frame
from chatkit.results import Drop

if TYPE_CHECKING:
    from chatkit.events import Message
    from chatkit.hooks import HookRunner
    from chatkit.session import Session
    from chatkit.transport import Feed

__all__ = ["BarrierEntry", "Entry", "JoinEntry", "Lane", "Lanes", "MessageEntry"]

log = logging.getLogger(__name__)

Fanout = Callable[[Sequence[Frame], Iterable["Session"]], bool]
"""Queue frames, in order, to sessions as one piece each; True if the writer must be
woken. Called under the hub's lock."""

Publish = Callable[[Sequence[Frame], "Feed"], bool]
"""Queue frames, in order, to a room's members through its :class:`~chatkit.transport.Feed`
(one step whatever the number of members); True if the writer must be woken. Called
under the hub's lock."""

Enter = Callable[["Session", str], "bool | None"]
"""Make a session a member of a room (by name) and queue the ``join`` to every member:
True if the writer must be woken, ``None`` if it cannot join any more (it logged out,
or is a member already). Called under the hub's lock."""

Emptied = Callable[["Lane"], None]
"""Told, under the hub's lock, that a room's lane and its room are both empty."""


class Latch:
    """A one-shot event for an entry's owner to wait on: ``threading.Event`` without
    its ``Condition``, which costs about twenty times as much to make (measured:
    8.7 µs against 0.4 µs), and under load most entries of a busy room wait behind
    another's.

    :meth:`set` is called only under the hub's lock, so never twice at once; once
    set, :meth:`wait` returns at once, as ``Event.wait`` does.
    """

    __slots__ = ("_lock", "_open")

    def __init__(self) -> None:
        # Held from birth until set(): wait() blocks on it. Guards nothing else.
        self._lock = threading.Lock()
        self._lock.acquire()
        self._open = False

    def set(self) -> None:
        if not self._open:
            self._open = True
            self._lock.release()

    def wait(self) -> None:
        with self._lock:
            pass


class Entry:
    """A delivery waiting in a lane. Every field is guarded by the hub's lock."""

    __slots__ = ("done", "event", "ready", "turn")

    def __init__(self, ready: bool) -> None:
        self.ready = ready
        """Set when the entry may be delivered (stored, or replay read); born set when
        there is nothing to wait for."""
        self.done = False
        """Set once delivered (or given up)."""
        self.turn = False
        """Set when the entry is at the head of its lane: everything ahead is delivered."""
        self.event: Latch | None = None
        """Created, under the lock, only for an owner that has to wait; set with
        :attr:`done` (or, for a join that is not ready, with :attr:`turn`)."""


class MessageEntry(Entry):
    """A room or private message between id assignment and delivery."""

    __slots__ = ("audience", "frame", "refusal", "tell")

    def __init__(
        self, frame: Frame, ready: bool, audience: Collection[Session] | None = None
    ) -> None:
        # Entry's fields, set here rather than by super().__init__(): one call less
        # per message on the hot path.
        self.ready = ready
        self.done = False
        self.turn = False
        self.event: Latch | None = None
        self.frame = frame
        self.audience = audience
        """The two parties of a private message; ``None`` for the lane's room, whose
        members are read at delivery."""
        self.refusal: Drop | None = None
        """Set if a store hook refused the message: it is then delivered to nobody."""
        self.tell: Session | None = None
        """For a message settled later: the sender, told of a refusal in lane order."""


class JoinEntry(Entry):
    """A join waiting for its turn, then for its replay."""

    __slots__ = ("joined", "last_id", "replay", "room", "session")

    def __init__(self, session: Session, room: str, last_id: int, ready: bool) -> None:
        super().__init__(ready)
        self.session = session
        self.room = room
        """The room's display name."""
        self.last_id = last_id
        """The last id given out when the join was posted: messages with ids up to it
        are delivered before the join, later ones after it."""
        self.replay: list[Frame] = []
        self.joined = False
        """Whether delivering it made the session a member."""


class BarrierEntry(Entry):
    """A delivery for several lanes at once (a rename's ``nick`` frame), made once it
    is at the head of each: after everything posted to any of them before it (the
    renamed client's messages still being stored, under its old nick), and before
    anything posted after. Each lane waits behind it meanwhile."""

    __slots__ = ("deliver", "lanes", "reached")

    def __init__(self, deliver: Callable[[], bool], lanes: list[Lane]) -> None:
        super().__init__(True)
        self.deliver = deliver
        """Queues its frames (under the hub's lock); True if the writer must be woken."""
        self.lanes = lanes
        self.reached: set[int] = set()
        """The ids of the lanes it is at the head of (a lane compares by contents)."""


class Lane(deque[Entry]):
    """Deliveries waiting for their turn, in id order. Guarded by the hub's lock."""

    __slots__ = ("audience", "feed", "name")

    def __init__(
        self, name: str = "", audience: Collection[Session] = (), feed: Feed | None = None
    ) -> None:
        super().__init__()
        self.name = name
        """The room's display name; empty for the lane of private messages."""
        self.audience = audience
        """Who the lane's room messages go to: the room's members, as a live view
        (``dict.values()``), read at delivery."""
        self.feed = feed
        """The room's feed, if it has one: its runs of messages are then published to
        it (the lanes' ``publish``) instead of queued to each member of :attr:`audience`."""


class Lanes:
    """The sequenced-delivery engine of one hub.

    It shares the hub's ``lock`` (every lane and entry is guarded by it, with the
    chat state they are delivered from) and calls back into the hub, under that
    lock: ``fanout`` to queue frames to sessions, ``publish`` (optional) to queue
    them to a lane's :attr:`Lane.feed` in one step, ``enter`` to deliver a join, and
    ``emptied`` when a room's lane drains while the room has no member (so the hub
    may forget the room). ``wake`` wakes the writer; it is called without the lock.
    ``hooks`` calls the store, replay and ``chatkit_on_message`` hooks, always on the
    sender's (or joiner's) thread with no lock held.
    """

    def __init__(
        self,
        lock: threading.Lock,
        hooks: HookRunner,
        *,
        fanout: Fanout,
        enter: Enter,
        emptied: Emptied,
        wake: Callable[[], None],
        publish: Publish | None = None,
    ) -> None:
        self._lock = lock
        self._hooks = hooks
        self._fanout = fanout
        self._publish = publish
        self._enter = enter
        self._emptied = emptied
        self._wake = wake
        self._store = False  # set by prepare(): messages wait to be stored
        self._store_runs = False  # set by prepare(): chatkit_store_messages is implemented
        self._store_each = False  # set by prepare(): chatkit_store_message is implemented
        self._replay = False  # set by prepare(): joins wait to read their replay
        # Per thread: the session whose deferred messages (session.unsettled) the thread
        # left to settle, its reader's, and whether it is in a store hook (storing).
        # Each thread reads and writes only its own.
        self._owner = threading.local()
        self.private = Lane()
        """The lane of every private message; each entry carries its own audience."""

    def prepare(self) -> None:
        """Once the plugins are configured, see which entries can be born ready."""
        self._store_runs = self._implemented("chatkit_store_messages")
        self._store_each = self._implemented("chatkit_store_message")
        self._store = self._store_runs or self._store_each
        self._replay = self._implemented("chatkit_room_replay")

    @property
    def stores(self) -> bool:
        """Whether messages wait to be stored (a plugin implements ``chatkit_store_messages``
        or ``chatkit_store_message``)."""
        return self._store

    def _implemented(self, name: str) -> bool:
        return next(iter(self._hooks.impls(name)), None) is not None

    # -- under the hub's lock -------------------------------------------------

    def message(
        self,
        frame: Frame,
        audience: Collection[Session] | None = None,
        *,
        defer: bool = False,
    ) -> MessageEntry:
        """A message entry (``audience``: the parties of a private message); to :meth:`post`.

        With ``defer`` (a reader's own line, which the reader settles before it waits
        for more input) it is never born ready, even when nothing stores messages:
        :meth:`settle` makes the reader's run of messages ready at once, and the run
        leaves as one piece per member instead of one per message.
        """
        return MessageEntry(frame, not self._store and not defer, audience)

    def join(self, session: Session, room: str, last_id: int) -> JoinEntry:
        """A join entry for ``room`` (its display name); to :meth:`post`.

        ``last_id`` must be the last id given out, read under the same acquisition
        of the lock as the post: every message of the room up to it is then ahead.
        """
        return JoinEntry(session, room, last_id, not self._replay)

    def post(self, lane: Lane, entry: Entry) -> bool:
        """Append ``entry`` to ``lane``; deliver it at once if it is ready and first.

        Called under the hub's lock. Returns True if the writer must be woken
        (after releasing the lock). Then, without the lock, hand a message to
        :meth:`send` and a join to :meth:`enter`.
        """
        assert self._lock.locked()
        lane.append(entry)
        if lane[0] is not entry:
            if entry.ready or isinstance(entry, JoinEntry):
                # Its owner will wait: for its delivery, or for a join's turn.
                entry.event = Latch()
            return False
        if entry.ready:
            return self._drain(lane)  # nothing ahead: born ready is delivered now
        entry.turn = True
        return False

    def barrier(self, deliver: Callable[[], bool], lanes: list[Lane]) -> bool:
        """Call ``deliver`` once everything posted to ``lanes`` so far is delivered (a
        :class:`BarrierEntry`); at once if they are all empty. Called under the hub's
        lock, as ``deliver`` is; True if the writer must be woken."""
        assert self._lock.locked()
        entry = BarrierEntry(deliver, lanes)
        wake = False
        for lane in lanes:
            lane.append(entry)
            if lane[0] is entry:
                wake |= self._drain(lane)
        return wake

    def publish(self, lane: Lane, frames: Sequence[Frame]) -> bool:
        """Deliver room messages now, bypassing the entries: only when ``lane`` is
        empty (nothing ahead of them) and nothing stores messages (nothing to wait
        for). Called under the hub's lock; True if the writer must be woken."""
        assert self._lock.locked() and not lane and not self._store
        return self._to_room(frames, lane)

    # -- on the owner's thread, without the lock -------------------------------

    def delivered(self, session: Session, message: Message, frame: Frame, lane: Lane) -> None:
        """Have ``session``'s :meth:`settle` run ``chatkit_on_message`` for a message
        :meth:`publish` delivered, in order with the reader's messages posted after it
        (their entries are ready only then: a hook run before could wait behind them)."""
        entry = MessageEntry(frame, True)
        entry.done = True
        session.unsettled.append((message, entry, [], lane))
        self._owner.session = session

    def send(
        self,
        session: Session,
        message: Message,
        entry: MessageEntry,
        lane: Lane,
        *,
        defer: bool = False,
    ) -> None:
        """Finish a posted message: store it, see it delivered, run ``chatkit_on_message``.

        Runs on the sender's thread without the lock. Raises :class:`CommandError`
        ``not_stored`` if it was refused. With ``defer`` (a reader's own line),
        returns once the store hooks answered: :meth:`settle` then delivers it (or
        tells the sender of its refusal, on its turn) and runs ``chatkit_on_message``.
        """
        # Read without the lock: after post() only this thread changes ready and event
        # (a born-ready entry gets its event in post(), under the lock, or never).
        if not entry.ready and not self._store:
            # Deferred with nothing to store: ready when the reader settles (message()).
            assert defer
            entry.tell = session
            session.unsettled.append((message, entry, [], lane))
            self._owner.session = session
            return
        if not entry.ready:
            if not self._store_and_deliver(session, message, entry, lane, defer):
                return
        elif entry.event is not None:
            self._settle_own()
            entry.event.wait()  # born ready behind an entry that is not: its owner delivers
        self._hooks.notify("chatkit_on_message", client=session, message=message)

    def send_run(
        self, session: Session, run: Sequence[tuple[int, Message, MessageEntry, Lane]]
    ) -> None:
        """Finish a reader's run of posted messages (``Hub.say_run``; each with the
        caller's index, unused here): store them all with one call of each store
        hook, and leave them to :meth:`settle`, which delivers them with
        ``chatkit_on_message``.

        Runs on the reader's thread without the lock. A message refused (at once, or
        by a failed future) is reported to the sender on its turn in the lane, as
        ``not_stored``: every entry of the run is handed on before any hook runs
        again, so none waits behind an entry that only this thread would make ready.
        """
        if not self._store:
            unsettled = session.unsettled
            # Nothing to store: ready when the reader settles (message()).
            for _index, message, entry, lane in run:
                entry.tell = session
                unsettled.append((message, entry, [], lane))
            self._owner.session = session
            return
        handed = False
        try:
            outcomes = self._store_all(session, [message for _i, message, _e, _l in run])
            unsettled = session.unsettled
            for (_index, message, entry, lane), (futures, refusal) in zip(
                run, outcomes, strict=True
            ):
                entry.tell = session  # a refusal is told on its turn in the lane
                if refusal is not None:
                    futures = _refused(refusal)
                unsettled.append((message, entry, futures, lane))
            handed = True
        finally:
            if not handed:
                # A BaseException (KeyboardInterrupt) escaped the hooks: nothing of the
                # run is stored, and its entries must not hold up their lanes forever.
                self._give_up([(entry, lane) for _i, _m, entry, lane in run])
        self._owner.session = session

    def check_not_storing(self, what: str) -> None:
        """Raise :class:`RuntimeError` if this thread is in a store hook: what it would
        send (or a join it would wait for) goes behind the messages being stored,
        which wait for the hook, so it would wait forever. Called by the hub's
        :meth:`~chatkit.hub.Hub.say`, ``say_run``, ``private`` and joins first."""
        if getattr(self._owner, "storing", False):
            raise RuntimeError(
                f"{what} from a store hook (chatkit_store_message or chatkit_store_messages):"
                " a store hook must not send messages or join rooms; the messages it is"
                " storing hold up their rooms until it returns"
            )

    def check_not_replaying(self, lane: Lane, what: str) -> None:
        """Raise :class:`RuntimeError` if this thread is reading a replay of ``lane``'s
        room (``chatkit_room_replay``): the join being replayed holds the room, and what
        the hook would send there (or a join it would wait for) goes behind it, so it
        would wait forever. Called by the hub under its lock, once the room is found."""
        if getattr(self._owner, "replaying", None) is lane:
            raise RuntimeError(
                f"{what} from chatkit_room_replay for the room it replays: the join being "
                "replayed holds the room until the hook returns (send it from "
                "chatkit_on_join instead)"
            )

    def _give_up(self, entries: Sequence[tuple[MessageEntry, Lane]]) -> None:
        """Mark ``entries`` refused and deliver what they no longer hold up."""
        with self._lock:
            for entry, _lane in entries:
                entry.refusal = _UNANSWERED
                entry.ready = True
            wake = False
            for lane in {id(lane): lane for _entry, lane in entries}.values():
                wake |= self._drain(lane)
        if wake:
            self._wake()

    def _store_all(
        self, session: Session, messages: Sequence[Message]
    ) -> list[tuple[list[Future[Any]], Drop | None]]:
        """Call the store hooks for ``messages``, plugin by plugin in the plugins'
        order (``chatkit_store_messages`` once for the messages not refused yet,
        ``chatkit_store_message`` for each of them): for each message, the futures to
        wait for, and its refusal if refused at once (later plugins skip it)."""
        hooks = self._hooks
        count = len(messages)
        outcomes: list[tuple[list[Future[Any]], Drop | None]] = [_STORED] * count
        timed = False  # this call of chatkit_store_messages is sampled
        each_timed: list[bool] = []  # each message's call of chatkit_store_message is
        if self._store_runs:
            hooks.watch("chatkit_store_messages", client=session, messages=messages)
            timed = hooks.sampled("chatkit_store_messages")
        if self._store_each:
            for message in messages:
                hooks.watch("chatkit_store_message", client=session, message=message)
                each_timed.append(hooks.sampled("chatkit_store_message"))
        alone: dict[int, list[Future[Any]]] = {}  # messages sharing a future share its list
        owner = self._owner
        owner.storing = True  # check_not_storing refuses what would wait for this call
        try:
            for name, impl in hooks.ordered(_STORE_HOOKS):
                open_ = [i for i, (_futures, refusal) in enumerate(outcomes) if refusal is None]
                if not open_:
                    break
                if name == "chatkit_store_message":
                    answers: Sequence[object] = [
                        hooks.call(
                            name,
                            impl,
                            _not_stored,
                            each_timed[i],
                            client=session,
                            message=messages[i],
                        )
                        for i in open_
                    ]
                else:
                    given = messages if len(open_) == count else [messages[i] for i in open_]
                    result = hooks.call(
                        name, impl, _not_stored, timed, client=session, messages=given
                    )
                    if result is None:
                        continue
                    if isinstance(result, Future) and len(open_) == count and _all_stored(outcomes):
                        outcomes = [([result], None)] * count  # one future for all: the common case
                        continue
                    answers = _per_message(result, len(given), impl.plugin_name)
                for i, answer in zip(open_, answers, strict=True):
                    if answer is None:
                        continue
                    futures, _refusal = outcomes[i]
                    if isinstance(answer, Drop):
                        outcomes[i] = (futures, answer)
                    elif not isinstance(answer, Future):
                        log.error(
                            "plugin %r answered %r for a message from %s, which takes None, a"
                            " Future or a Drop: refused",
                            impl.plugin_name,
                            answer,
                            name,
                        )
                        outcomes[i] = (futures, _UNANSWERED)
                    elif futures:
                        outcomes[i] = ([*futures, answer], None)
                    else:
                        shared = alone.get(id(answer))
                        if shared is None:
                            shared = alone[id(answer)] = [answer]
                        outcomes[i] = (shared, None)
        finally:
            owner.storing = False
        return outcomes

    def enter(self, entry: JoinEntry, lane: Lane) -> bool:
        """Finish a posted join: wait for its turn, read the replay, deliver; True if joined.

        Runs on the joiner's thread without the lock (``ready`` and ``event`` are read
        without it, as in :meth:`send`).
        """
        if entry.ready:
            if entry.event is not None:
                self._settle_own()
                entry.event.wait()  # born ready behind an entry that is not: its owner delivers
            return entry.joined
        replay: list[Frame] | None = None
        try:
            if entry.event is not None:
                self._settle_own()
                entry.event.wait()  # until every earlier message of the room is delivered
            # (Restored after: a replay hook may join someone to another room, whose
            # own replay runs inside this one.)
            replaying, self._owner.replaying = getattr(self._owner, "replaying", None), lane
            try:
                replay = self._hooks.first(
                    "chatkit_room_replay",
                    _no_replay,
                    (list, tuple),
                    client=entry.session,
                    room=entry.room,
                    last_id=entry.last_id,
                )
            finally:
                self._owner.replaying = replaying
            if replay and not all(isinstance(frame, Frame) for frame in replay):
                log.error(
                    "chatkit_room_replay for %s returned items that are not Frames (%r...):"
                    " %s joins without a replay",
                    entry.room,
                    next(f for f in replay if not isinstance(f, Frame)),
                    entry.session.nick,
                )
                replay = None
        finally:
            # Always, or the room's later deliveries would wait behind this entry forever.
            with self._lock:
                entry.replay = list(replay or [])
                entry.ready = True
                wake = self._drain(lane)  # at its turn, ready: delivered now
        if wake:
            self._wake()
        return entry.joined

    def _store_and_deliver(
        self,
        session: Session,
        message: Message,
        entry: MessageEntry,
        lane: Lane,
        defer: bool,
    ) -> bool:
        """Call the store hooks, then deliver in lane order; True once delivered.

        With ``defer`` (a reader's own line), returns False once the hooks answered:
        :meth:`settle`, which the sender's reader calls before it waits for more
        input or handles anything but a message, delivers the message (or tells the
        sender of its refusal, on its turn). Settling here instead would run the
        hooks of the reader's earlier messages while this entry, which only this
        thread makes ready, holds up their room: a hook saying more there would
        wait for it forever.
        """
        try:
            ((futures, refusal),) = self._store_all(session, (message,))
            if defer:
                entry.tell = session  # a refusal is then reported in lane order
                if refusal is not None:
                    futures = _refused(refusal)
                session.unsettled.append((message, entry, futures, lane))
                self._owner.session = session
                return False
            if futures and refusal is None:
                refusal = _outcome(futures)
        except BaseException:
            # (KeyboardInterrupt): nothing is delivered unstored, and the lane's later
            # deliveries must not wait behind this entry forever.
            self._give_up([(entry, lane)])
            raise
        self._deliver_stored(entry, lane, refusal)
        return True

    def _deliver_stored(self, entry: MessageEntry, lane: Lane, refusal: Drop | None) -> None:
        """Mark ``entry`` stored (or refused), deliver what is ready, and wait for it."""
        with self._lock:
            entry.refusal = refusal
            entry.ready = True
            wake = self._drain(lane)
            if not entry.done:
                # An earlier entry is not ready yet: its owner delivers this one.
                entry.event = Latch()
        if wake:
            self._wake()
        if entry.event is not None:
            self._settle_own()
            entry.event.wait()
        if refusal is not None:
            raise CommandError(f"message not delivered: {refusal.reason}", "not_stored")

    def _settle_own(self) -> None:
        """Before this thread waits for an entry to be delivered: settle what its reader
        deferred, which may be ahead of that entry and which only this thread makes
        ready. (A hook saying into a room, as anyone, between two of its reader's
        messages, or a join from one: it would otherwise wait forever.)"""
        session = getattr(self._owner, "session", None)
        if session is not None and session.unsettled:
            self.settle(session)

    def settle(self, session: Session) -> None:
        """Deliver the messages ``session`` sent while their storing went on.

        Called on the session's reader thread. Waits until they are stored,
        delivers them (in lane order, all under one acquisition of the lock),
        then, in order, runs ``chatkit_on_message`` for each (a refused one was
        reported to the sender on its turn in the lane). Returns once all are
        delivered, so whatever the client sent next is answered after them.
        """
        if not self._store:
            self._settle_unstored(session)
        else:
            self._settle_stored(session)
        if getattr(self._owner, "session", None) is session:
            self._owner.session = None  # (not to keep a logged-out session alive)

    def _settle_stored(self, session: Session) -> None:
        """:meth:`settle` when messages are stored: wait for their futures first."""
        while session.unsettled:
            records, session.unsettled = session.unsettled, []
            refusals: list[Drop | None] = []
            last: tuple[list[Future[Any]], Drop | None] | None = None
            for _message, _entry, futures, _lane in records:
                # Messages committed together share one future: wait for it once.
                if last is None or last[0] != futures:
                    last = (futures, _outcome(futures))
                refusals.append(last[1])
            with self._lock:
                lanes: dict[int, Lane] = {}
                for (_message, entry, _futures, lane), refusal in zip(
                    records, refusals, strict=True
                ):
                    entry.refusal = refusal
                    entry.ready = True
                    lanes[id(lane)] = lane
                wake = False
                for lane in lanes.values():
                    wake |= self._drain(lane)
                for _message, entry, _futures, _lane in records:
                    if not entry.done:
                        # An earlier entry is not ready yet: its owner delivers this one.
                        entry.event = Latch()
            if wake:
                self._wake()
            for (message, entry, _futures, _lane), refusal in zip(records, refusals, strict=True):
                if entry.event is not None:
                    entry.event.wait()
                if refusal is None:  # (a refusal was sent to the sender on delivery)
                    self._hooks.notify("chatkit_on_message", client=session, message=message)

    def _settle_unstored(self, session: Session) -> None:
        """:meth:`settle` when nothing stores messages: no future to wait for and no
        refusal, so the run is made ready and delivered at once (the hot path)."""
        while session.unsettled:  # (an on_message hook may have said more)
            records, session.unsettled = session.unsettled, []
            with self._lock:
                for record in records:
                    record[1].ready = True
                wake = False
                drained: Lane | None = None
                for _message, entry, _futures, lane in records:
                    if lane is not drained:  # mostly one lane: drained once for the run
                        wake |= self._drain(lane)
                        drained = lane
                    if not entry.done:
                        # An earlier entry is not ready yet: its owner delivers this one.
                        entry.event = Latch()
            if wake:
                self._wake()
            notify = self._hooks.notify
            told = self._hooks.wanted("chatkit_on_message")  # (asked once for the run)
            for message, entry, _futures, _lane in records:
                if entry.event is not None:
                    entry.event.wait()
                if told:
                    notify("chatkit_on_message", client=session, message=message)

    # -- delivery, under the hub's lock -----------------------------------------

    def _drain(self, lane: Lane) -> bool:
        """Deliver the ready entries at the head of ``lane``; True if the writer must be woken."""
        assert self._lock.locked()
        wake = False
        while lane and lane[0].ready:
            entry = lane.popleft()
            if not isinstance(entry, MessageEntry):
                if isinstance(entry, BarrierEntry):
                    entry.reached.add(id(lane))
                    if len(entry.reached) < len(entry.lanes):
                        lane.appendleft(entry)  # the lane waits for the others to reach it
                        break
                    wake |= self._pass(entry, lane)
                    continue
                assert isinstance(entry, JoinEntry)
                wake |= self._deliver_join(entry)
            elif entry.refusal is not None:
                if entry.tell is not None:
                    wake |= entry.tell.push(_not_stored_error(entry))
            elif entry.audience is not None:  # a private message, to its parties
                wake |= self._fanout((entry.frame,), entry.audience)
            elif not (lane and _runs_on(lane[0])):  # a room message on its own
                wake |= self._to_room((entry.frame,), lane)
            else:
                # A run of ready messages to the room leaves as one piece per member.
                run = [entry]
                while lane and _runs_on(head := lane[0]):
                    lane.popleft()
                    run.append(head)
                wake |= self._to_room([done.frame for done in run], lane)
                for done in run[1:]:
                    _delivered(done)
            _delivered(entry)
        if lane:
            first = lane[0]
            if not first.turn:
                first.turn = True  # everything ahead is delivered: a join may read its replay
                if first.event is not None:
                    first.event.set()
        elif lane.name and not lane.audience:
            self._emptied(lane)
        return wake

    def _pass(self, entry: BarrierEntry, lane: Lane) -> bool:
        """Deliver a barrier at the head of every lane of its (popped from ``lane``),
        and drain its other lanes behind it."""
        wake = entry.deliver()
        _delivered(entry)
        for other in entry.lanes:
            if other is not lane:
                assert other[0] is entry
                other.popleft()
                wake |= self._drain(other)
        return wake

    def _to_room(self, frames: Sequence[Frame], lane: Lane) -> bool:
        """Queue a room's messages to its members: published to its feed if it has one."""
        if lane.feed is not None and self._publish is not None:
            return self._publish(frames, lane.feed)
        return self._fanout(frames, lane.audience)

    def _deliver_join(self, entry: JoinEntry) -> bool:
        wake = self._enter(entry.session, entry.room)
        if wake is None:
            return False  # logged out while its replay was read, or joined meanwhile
        session = entry.session
        for frame in entry.replay:
            wake |= session.push(frame)
        entry.joined = True
        return wake


def _not_stored_error(entry: MessageEntry) -> Frame:
    """The ``error`` telling a sender its message was refused: it names the room of a
    room message, and says whether the message was a notice (a face may answer a
    notice with nothing, as IRC's rules have it)."""
    assert entry.refusal is not None
    error = Frame("error", code="not_stored", text=f"message not delivered: {entry.refusal.reason}")
    fields = entry.frame.fields
    if entry.audience is None and "room" in fields:
        error.fields["room"] = fields["room"]
    if fields.get("notice"):
        error.fields["notice"] = True
    return error


def _delivered(entry: Entry) -> None:
    entry.done = True
    if entry.event is not None:
        entry.event.set()  # its owner waits for it


def _runs_on(entry: Entry) -> TypeGuard[MessageEntry]:
    """Whether ``entry`` joins a run of ready messages to the lane's room."""
    return (
        entry.ready
        and isinstance(entry, MessageEntry)
        and entry.audience is None
        and entry.refusal is None
    )


def _outcome(futures: list[Future[Any]]) -> Drop | None:
    """Wait for a message's store futures: ``None`` if all succeeded, else a :class:`Drop`."""
    for future in futures:
        try:
            future.result()
        except _Refusal as refusal:
            return refusal.drop
        except Exception as exc:
            return Drop(str(exc) or type(exc).__name__)
    return None


_UNANSWERED = Drop("it could not be stored (internal error)")  # (immutable: one for all)
_STORED: tuple[list[Future[Any]], Drop | None] = ([], None)  # (never changed: one for all)


_STORE_HOOKS = ("chatkit_store_messages", "chatkit_store_message")


def _per_message(result: object, count: int, plugin: str) -> Sequence[object]:
    """A ``chatkit_store_messages`` answer for ``count`` messages, one per message."""
    if isinstance(result, (Future, Drop)):
        return (result,) * count
    if isinstance(result, (list, tuple)) and len(result) == count:
        return result
    log.error(
        "plugin %r returned %r from chatkit_store_messages for %d message(s), which takes"
        " None, a Future, a Drop or a sequence of one of those per message: refused",
        plugin,
        result,
        count,
    )
    return (_UNANSWERED,) * count


class _Refusal(Exception):
    """A store hook's refusal, carried by a failed future to :meth:`Lanes.settle`."""

    def __init__(self, drop: Drop) -> None:
        super().__init__(drop.reason)
        self.drop = drop


def _refused(refusal: Drop) -> list[Future[Any]]:
    """A message refused at once, as a failed future: reported on its turn in the lane."""
    future: Future[Any] = Future()
    future.set_exception(_Refusal(refusal))
    return [future]


def _all_stored(outcomes: list[tuple[list[Future[Any]], Drop | None]]) -> bool:
    """Whether no hook has answered anything but ``None`` for any of ``outcomes`` yet."""
    return outcomes.count(_STORED) == len(outcomes)


def _not_stored(plugin: str) -> Drop:
    return Drop(f"it could not be stored (internal error in plugin {plugin!r})")


def _no_replay(plugin: str) -> None:
    return None
