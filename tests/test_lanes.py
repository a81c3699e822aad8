"""The sequenced-delivery engine alone (chatkit.lanes), with no hub, socket or server.

A small stand-in plays the hub's part (the lock, one room, a fan-out that records
what each session receives) and drives the engine as the hub does: post under the
lock, then send or enter without it. Store and replay hooks are plugins whose
answers the tests control, so every interleaving below is forced, not hoped for;
threads that must block are waited for with deadlines.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import pytest

from chatkit.codecs import JSON_CODEC
from chatkit.errors import CommandError
from chatkit.events import Message
from chatkit.frames import Frame
from chatkit.hooks import HookRunner
from chatkit.hookspecs import hookimpl
from chatkit.lanes import Entry, Lane, Lanes
from chatkit.plugins import new_plugin_manager
from chatkit.results import Drop
from chatkit.session import Session
from chatkit.testing import wait_until

DEADLINE = 10.0  # seconds: a generous bound for conditions that hold at once when all is well


class Inbox:
    """A session's transport that keeps the frames it is sent."""

    codec = JSON_CODEC
    address = ("127.0.0.1", 1)
    finishing = False

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def push(self, frame: Frame) -> bool:
        self.frames.append(frame)
        return True

    def finish(self, reason: str) -> None:
        pass

    def abort(self, reason: str) -> None:
        pass

    def unread(self) -> int:
        return 0


class Store:
    """A store plugin: each message gets a future the test completes, or fails
    (at once for the texts in :attr:`errors`)."""

    def __init__(self) -> None:
        self.futures: dict[str, Future[None]] = {}
        self.errors: dict[str, Exception] = {}

    @hookimpl
    def chatkit_store_message(self, client: Session, message: Message) -> Future[None]:
        future: Future[None] = Future()
        if message.text in self.errors:
            future.set_exception(self.errors[message.text])
        self.futures[message.text] = future
        return future

    def stored(self, *texts: str) -> None:
        for text in texts:
            self.futures[text].set_result(None)


class RunStore:
    """A store plugin of runs (``chatkit_store_messages``): records each call's texts
    and answers each message by its text: ``None`` (stored), a :class:`Drop` for
    "refuse ...", a future the test completes for "later ...". :attr:`special` may
    replace the whole answer (a Drop for all, a wrong length, an exception to raise)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.futures: dict[str, Future[None]] = {}
        self.special: object = None

    @hookimpl
    def chatkit_store_messages(self, client: Session, messages: Sequence[Message]) -> object:
        self.calls.append([m.text for m in messages])
        if isinstance(self.special, BaseException):
            raise self.special
        if self.special is not None:
            return self.special
        answers: list[object] = []
        for message in messages:
            if message.text.startswith("refuse"):
                answers.append(Drop("the disk is full"))
            elif message.text.startswith("later"):
                answers.append(self.futures.setdefault(message.text, Future()))
            else:
                answers.append(None)
        return answers


class EachStore:
    """A store plugin of single messages: records the texts it is called for."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    @hookimpl
    def chatkit_store_message(self, client: Session, message: Message) -> None:
        self.texts.append(message.text)


class Replay:
    """A replay plugin that blocks until released, and records the ``last_id`` it got."""

    def __init__(self) -> None:
        self.called = threading.Event()
        self.release = threading.Event()
        self.last_id: int | None = None

    @hookimpl
    def chatkit_room_replay(self, client: Session, room: str, last_id: int) -> list[Frame]:
        self.last_id = last_id
        self.called.set()
        assert self.release.wait(DEADLINE)
        return [Frame("message", text="stored earlier", history=True)]


class Notified:
    """Records ``chatkit_on_message``, in call order."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    @hookimpl
    def chatkit_on_message(self, client: Session, message: Message) -> None:
        self.texts.append(message.text)


class Hub:
    """The hub's part: its lock, one room with its lane, and the callbacks."""

    def __init__(self, *plugins: Any) -> None:
        pm = new_plugin_manager()
        self.notified = Notified()
        for plugin in (*plugins, self.notified):
            pm.register(plugin)
        self.lock = threading.Lock()
        self.members: dict[int, Session] = {}
        self.lane = Lane("#room", self.members.values())
        self.runs: list[list[str]] = []  # the texts of each fan-out, in order
        self.emptied: list[Lane] = []
        self.gone: set[int] = set()  # ids of sessions "logged out"
        self.wakes = 0
        self.lanes = Lanes(
            self.lock,
            HookRunner(pm),
            fanout=self._fanout,
            enter=self._enter,
            emptied=self.emptied.append,
            wake=self._wake,
        )
        self.lanes.prepare()
        self._ids = 0

    def _fanout(self, frames: Sequence[Frame], sessions: Iterable[Session]) -> bool:
        assert self.lock.locked()
        self.runs.append([f.fields["text"] for f in frames])
        for session in sessions:
            for frame in frames:
                session.push(frame)
        return True

    def _enter(self, session: Session, room: str) -> bool | None:
        assert self.lock.locked()
        if session.id in self.members or session.id in self.gone:
            return None
        self.members[session.id] = session
        return self._fanout([Frame("join", room=room, nick=session.nick, text="join")], [session])

    def _wake(self) -> None:
        self.wakes += 1

    def session(self, nick: str, member: bool = True) -> Session:
        session = Session(Inbox(), self._wake)
        session.nick = nick
        if member:
            self.members[session.id] = session
        return session

    def say(
        self,
        session: Session,
        text: str,
        *,
        defer: bool = False,
        to: Collection[Session] | None = None,
    ) -> Message:
        """As ``Hub.say`` (``to``: as ``Hub.private``, on the private lane)."""
        lane = self.lane if to is None else self.lanes.private
        message = Message(nick=session.nick or "", text=text, room=lane.name or None)
        with self.lock:
            self._ids += 1
            message.id = self._ids
            frame = Frame("message", id=message.id, text=text)
            entry = self.lanes.message(frame, to)
            wake = self.lanes.post(lane, entry)
        if wake:
            self._wake()
        self.lanes.send(session, message, entry, lane, defer=defer)
        return message

    def say_run(self, session: Session, *run: str) -> None:
        """As ``Hub.say_run`` with a store: the run posted under one acquisition of the
        lock, then stored at once (refusals come on their turn, at settle())."""
        posted = []
        with self.lock:
            for index, text in enumerate(run):
                self._ids += 1
                message = Message(nick=session.nick or "", text=text, room=self.lane.name)
                message.id = self._ids
                frame = Frame("message", id=message.id, room=self.lane.name, text=text)
                entry = self.lanes.message(frame, defer=True)
                self.lanes.post(self.lane, entry)
                posted.append((index, message, entry, self.lane))
        self.lanes.send_run(session, posted)

    def join(self, session: Session) -> bool:
        """As ``Hub.join``: the last id given out is read under the lock of the post."""
        with self.lock:
            entry = self.lanes.join(session, self.lane.name, self._ids)
            self.lanes.post(self.lane, entry)
        return self.lanes.enter(entry, self.lane)

    def pending(self) -> list[Entry]:
        with self.lock:
            return list(self.lane)


def texts(session: Session) -> list[str]:
    inbox = session.transport
    assert isinstance(inbox, Inbox)
    return [f.fields["text"] for f in inbox.frames]


def codes(session: Session) -> list[str]:
    inbox = session.transport
    assert isinstance(inbox, Inbox)
    return [f.fields.get("code", f.type) for f in inbox.frames]


@pytest.fixture
def threads() -> Iterator[Callable[[Callable[[], object]], threading.Thread]]:
    """Start a daemon thread; every one started is joined (with a deadline) afterwards."""
    started: list[threading.Thread] = []

    def start(target: Callable[[], object]) -> threading.Thread:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.join(DEADLINE)
        assert not thread.is_alive()


def test_with_nothing_to_store_a_message_is_born_ready_and_delivered_at_once() -> None:
    """No store hook: a message is delivered under the lock that gave it its id,
    chatkit_on_message has run when send() returns, and the lane stays empty."""
    hub = Hub()
    alice, bob = hub.session("alice"), hub.session("bob")
    hub.say(alice, "one")
    hub.say(bob, "two", defer=True)  # nothing to defer: delivered at once too
    assert texts(alice) == texts(bob) == ["one", "two"]
    assert hub.runs == [["one"], ["two"]]
    assert hub.notified.texts == ["one", "two"]
    assert not hub.lane and not alice.unsettled and not bob.unsettled


def test_members_see_ids_in_order_whatever_order_messages_are_stored_in(
    threads: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    """Stored last to first, three messages of two senders still arrive in id order,
    as one run; the sender whose message was stored first waits for the earlier one."""
    store = Store()
    hub = Hub(store)
    alice, bob, carol = hub.session("alice"), hub.session("bob"), hub.session("carol")
    for sender, text in ((alice, "m1"), (bob, "m2"), (alice, "m3")):
        hub.say(sender, text, defer=True)  # a future: deferred to settle()
    assert texts(carol) == [] and len(alice.unsettled) == 2 and len(bob.unsettled) == 1
    store.stored("m3", "m2")
    [(_message, m2, _futures, _lane)] = bob.unsettled
    threads(lambda: hub.lanes.settle(bob))
    wait_until(lambda: m2.ready, DEADLINE)  # stored, but m1 ahead of it is not: bob's reader waits
    assert texts(carol) == [] and not m2.done
    store.stored("m1")
    hub.lanes.settle(alice)  # delivers m1, m2 and m3, in one piece per member
    wait_until(lambda: not bob.unsettled and m2.done, DEADLINE)
    for member in (alice, bob, carol):
        assert texts(member) == ["m1", "m2", "m3"]
    assert hub.runs == [["m1", "m2", "m3"]]
    wait_until(lambda: len(hub.notified.texts) == 3, DEADLINE)
    assert sorted(hub.notified.texts) == ["m1", "m2", "m3"]
    assert not hub.lane


def test_a_refusal_is_reported_to_its_sender_in_lane_order(
    threads: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    """A message whose store fails reaches nobody; its sender is told `not_stored` on
    its turn, between the messages before and after it, and no on_message runs for it."""
    store = Store()
    hub = Hub(store)
    alice, bob = hub.session("alice"), hub.session("bob")
    hub.say(alice, "m1", defer=True)
    hub.say(bob, "m2", defer=True)
    hub.say(alice, "m3", defer=True)
    store.futures["m2"].set_exception(OSError("disk full"))
    threads(lambda: hub.lanes.settle(bob))  # waits for m1, ahead of its refusal
    store.stored("m1", "m3")
    hub.lanes.settle(alice)
    wait_until(lambda: not hub.lane and not bob.unsettled, DEADLINE)
    assert texts(alice) == ["m1", "m3"]
    assert codes(bob) == ["message", "not_stored", "message"]
    inbox = bob.transport
    assert isinstance(inbox, Inbox)
    assert "disk full" in inbox.frames[1].fields["text"]
    assert hub.notified.texts == ["m1", "m3"]


def test_a_refusal_not_deferred_raises_and_reaches_nobody() -> None:
    """Outside a reader's pipeline (defer off) the sender waits for its store, and a
    refusal is raised to it as `not_stored`; the lane goes on behind it."""
    store = Store()
    hub = Hub(store)
    alice, bob = hub.session("alice"), hub.session("bob")
    store.errors["m1"] = OSError("disk full")
    with pytest.raises(CommandError) as refused:
        hub.say(alice, "m1")
    assert refused.value.code == "not_stored" and "disk full" in refused.value.text
    assert texts(alice) == texts(bob) == [] and not hub.lane
    assert hub.notified.texts == []
    store.errors.clear()
    hub.say(alice, "m2", defer=True)
    store.stored("m2")
    hub.lanes.settle(alice)
    assert texts(alice) == texts(bob) == ["m2"]


def test_a_join_waits_for_earlier_messages_and_its_replay_comes_before_later_ones(
    threads: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    """The join-replay guarantee: a join reads its replay once every earlier message is
    stored and delivered (last_id: the last of them), and a message sent meanwhile
    reaches the joiner after its join and replay, not before and not twice."""
    store, replay = Store(), Replay()
    hub = Hub(store, replay)
    alice = hub.session("alice")
    bob = hub.session("bob", member=False)
    first = hub.say(alice, "m1", defer=True)
    joined: list[bool] = []
    threads(lambda: joined.append(hub.join(bob)))
    wait_until(lambda: len(hub.pending()) == 2, DEADLINE)  # m1, then the join
    assert not replay.called.is_set()  # m1 is not stored yet: not the join's turn
    store.stored("m1")
    hub.lanes.settle(alice)
    assert replay.called.wait(DEADLINE) and replay.last_id == first.id
    assert texts(alice) == ["m1"] and texts(bob) == []
    threads(lambda: hub.say(alice, "m2"))  # waits for its store, then behind the join
    wait_until(lambda: "m2" in store.futures, DEADLINE)
    store.stored("m2")
    wait_until(lambda: hub.pending()[1].ready, DEADLINE)
    assert texts(bob) == []
    replay.release.set()
    wait_until(lambda: joined == [True] and not hub.lane, DEADLINE)
    assert texts(bob) == ["join", "stored earlier", "m2"]
    assert texts(alice) == ["m1", "m2"]
    wait_until(lambda: hub.notified.texts == ["m1", "m2"], DEADLINE)


def test_a_message_born_ready_still_waits_behind_a_join(
    threads: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    """With a replay hook and no store hook, messages are born ready, and the guarantee
    holds: one sent while a join reads its replay waits for the join."""
    replay = Replay()
    hub = Hub(replay)
    alice = hub.session("alice")
    bob = hub.session("bob", member=False)
    hub.say(alice, "m1")  # born ready, nothing ahead: delivered at once
    threads(lambda: hub.join(bob))
    assert replay.called.wait(DEADLINE) and replay.last_id == 1
    sent = threads(lambda: hub.say(alice, "m2"))
    wait_until(lambda: len(hub.pending()) == 2, DEADLINE)
    assert texts(bob) == [] and sent.is_alive()  # send() returns once m2 is delivered
    replay.release.set()
    wait_until(lambda: not hub.lane and not sent.is_alive(), DEADLINE)
    assert texts(bob) == ["join", "stored earlier", "m2"]
    assert texts(alice) == ["m1", "m2"]


def test_private_messages_go_to_their_parties_in_id_order(
    threads: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    """The private lane: each entry carries its own audience and waits its turn; two
    ready private messages are never merged into one run."""
    store = Store()
    hub = Hub(store)
    alice, bob, carol = hub.session("alice"), hub.session("bob"), hub.session("carol")
    hub.say(alice, "to bob", defer=True, to=[alice, bob])
    hub.say(carol, "to alice", defer=True, to=[carol, alice])
    store.stored("to bob", "to alice")
    [(_message, second, _futures, _lane)] = carol.unsettled
    threads(lambda: hub.lanes.settle(carol))
    wait_until(lambda: second.ready, DEADLINE)  # behind alice's, not settled yet
    hub.lanes.settle(alice)
    wait_until(lambda: second.done, DEADLINE)
    assert texts(alice) == ["to bob", "to alice"]
    assert texts(bob) == ["to bob"] and texts(carol) == ["to alice"]
    assert hub.runs == [["to bob"], ["to alice"]]
    assert not hub.lanes.private and hub.emptied == []


def test_a_join_that_delivers_nothing_reports_its_empty_room() -> None:
    """When a join delivers nothing (its session logged out meanwhile) and the room has
    no member, the hub is told the lane and the room are empty (to forget the room)."""
    hub = Hub()
    ghost = hub.session("ghost", member=False)
    hub.gone.add(ghost.id)
    assert not hub.join(ghost)
    assert hub.emptied == [hub.lane] and not hub.lane
    bob = hub.session("bob", member=False)
    assert hub.join(bob)
    assert hub.emptied == [hub.lane]  # not again: bob is in the room
    assert texts(bob) == ["join"]


def test_a_run_is_stored_with_one_call_and_leaves_as_one_piece() -> None:
    """A reader's run: one call of chatkit_store_messages for all of it (one of
    chatkit_store_message per message, for a plugin of single messages); settle()
    delivers it as one piece per member, then runs on_message for each."""
    runs, each = RunStore(), EachStore()
    hub = Hub(runs, each)
    alice, bob = hub.session("alice"), hub.session("bob")
    hub.say_run(alice, "m1", "later m2", "m3")
    assert runs.calls == [["m1", "later m2", "m3"]]
    assert each.texts == ["m1", "later m2", "m3"]
    assert texts(bob) == [] and len(alice.unsettled) == 3
    runs.futures["later m2"].set_result(None)
    hub.lanes.settle(alice)
    assert texts(bob) == texts(alice) == ["m1", "later m2", "m3"]
    assert hub.runs == [["m1", "later m2", "m3"]]
    assert hub.notified.texts == ["m1", "later m2", "m3"]
    assert not hub.lane and not alice.unsettled


def test_a_message_of_a_run_refused_at_once_is_reported_on_its_turn() -> None:
    """A Drop for one message of a run: the sender is told on the message's turn in
    the lane (after the messages before it, naming the room), nobody receives it, and
    later store plugins are not called for it."""
    runs, each = RunStore(), EachStore()
    hub = Hub(each, runs)  # (registered last, the run plugin is called first)
    alice, bob = hub.session("alice"), hub.session("bob")
    hub.say_run(alice, "m1", "refuse m2", "m3")
    assert each.texts == ["m1", "m3"]
    hub.lanes.settle(alice)
    assert codes(alice) == ["message", "not_stored", "message"]
    inbox = alice.transport
    assert isinstance(inbox, Inbox)
    assert inbox.frames[1].fields["room"] == "#room"
    assert texts(bob) == ["m1", "m3"]
    assert hub.notified.texts == ["m1", "m3"]
    assert not hub.lane


class Refuser:
    """A store plugin of single messages that refuses texts starting with "no"."""

    @hookimpl
    def chatkit_store_message(self, client: Session, message: Message) -> Drop | None:
        return Drop("not this one") if message.text.startswith("no") else None


def test_the_two_store_hooks_are_called_in_the_plugins_order() -> None:
    """A plugin of single messages called before a plugin of runs keeps the messages
    it refuses from it: the run plugin gets the rest only."""
    runs = RunStore()
    hub = Hub(runs, Refuser())  # (registered last, the refuser is called first)
    alice, bob = hub.session("alice"), hub.session("bob")
    hub.say_run(alice, "m1", "no m2", "m3")
    assert runs.calls == [["m1", "m3"]]
    hub.lanes.settle(alice)
    assert codes(alice) == ["message", "not_stored", "message"]
    assert texts(bob) == ["m1", "m3"]


def test_a_failed_future_refuses_only_its_message_of_the_run() -> None:
    """Per-message futures: the one that fails is reported on its turn in the lane."""
    runs = RunStore()
    hub = Hub(runs)
    alice, bob = hub.session("alice"), hub.session("bob")
    hub.say_run(alice, "later 1", "later 2", "later 3")
    runs.futures["later 2"].set_exception(OSError("disk on fire"))
    runs.futures["later 1"].set_result(None)
    runs.futures["later 3"].set_result(None)
    hub.lanes.settle(alice)
    assert codes(alice) == ["message", "not_stored", "message"]
    assert texts(bob) == ["later 1", "later 3"]
    assert hub.notified.texts == ["later 1", "later 3"]


@pytest.mark.parametrize(
    "special",
    [Drop("read-only"), [None], "nonsense", OSError("disk on fire")],
    ids=["drop-for-all", "wrong-length", "wrong-type", "raises"],
)
def test_a_run_answered_for_all_at_once_or_wrongly_is_refused_whole(special: object) -> None:
    """A Drop for all, an answer that is not one per message, or an exception: every
    message of the run is refused, in order, and later messages go on."""
    runs = RunStore()
    runs.special = special
    hub = Hub(runs)
    alice, bob = hub.session("alice"), hub.session("bob")
    hub.say_run(alice, "m1", "m2")
    hub.lanes.settle(alice)
    assert codes(alice) == ["not_stored", "not_stored"]
    assert texts(bob) == [] and not hub.lane
    runs.special = None
    hub.say_run(alice, "m3")
    hub.lanes.settle(alice)
    assert texts(bob) == ["m3"]


class PingBot:
    """Answers "ping" in the room, as bob, from chatkit_on_message (a bot plugin)."""

    def __init__(self) -> None:
        self.hub: Hub | None = None
        self.bob: Session | None = None

    @hookimpl
    def chatkit_on_message(self, client: Session, message: Message) -> None:
        if message.text == "ping" and self.hub is not None and self.bob is not None:
            self.hub.say(self.bob, "pong")


def test_a_hook_saying_more_after_a_refusal_in_a_run_does_not_wait_for_the_run(
    threads: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    """A run with a refused message and a bot answering its first one: the bot's
    answer goes behind the whole run, which is handed on before any hook runs (the
    reader used to deliver the messages before the refusal, run their hooks, and wait
    forever in the bot's answer for the rest of its own run)."""
    runs, bot = RunStore(), PingBot()
    hub = Hub(runs, bot)
    alice, bob, carol = hub.session("alice"), hub.session("bob"), hub.session("carol")
    bot.hub, bot.bob = hub, bob

    def reader() -> None:
        hub.say_run(alice, "ping", "refuse x", "m3")
        hub.lanes.settle(alice)

    threads(reader)
    wait_until(lambda: texts(carol) == ["ping", "m3", "pong"], DEADLINE)
    assert not hub.lane


def test_a_hook_saying_more_between_two_lines_stored_at_once_does_not_wait_for_them(
    threads: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    """Two lines of one reader, each on its own (``say(defer=True)``), stored at once by
    a plugin of single messages, and a bot answering the first: the second line waits
    for the reader's settle() too, so the bot's answer goes behind both (the reader used
    to settle the first line before delivering the second, and the bot's answer waited
    forever behind it)."""
    bot = PingBot()
    hub = Hub(EachStore(), bot)
    alice, bob, carol = hub.session("alice"), hub.session("bob"), hub.session("carol")
    bot.hub, bot.bob = hub, bob

    def reader() -> None:
        hub.say(alice, "ping", defer=True)
        hub.say(alice, "x", defer=True)
        hub.lanes.settle(alice)

    threads(reader)
    wait_until(lambda: texts(carol) == ["ping", "x", "pong"], DEADLINE)
    assert not hub.lane


def test_a_base_exception_from_a_run_store_holds_up_nothing() -> None:
    """A BaseException escaping chatkit_store_messages reaches the reader, but the
    run's entries are given up: a message of another sender behind them is delivered."""
    runs, store = RunStore(), Store()
    hub = Hub(runs, store)
    alice, bob, carol = hub.session("alice"), hub.session("bob"), hub.session("carol")
    runs.special = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        hub.say_run(alice, "m1", "m2")
    assert not hub.lane and not alice.unsettled
    runs.special = None
    hub.say(bob, "m3", defer=True)
    store.stored("m3")
    hub.lanes.settle(bob)
    assert texts(carol) == ["m3"]


def test_a_barrier_comes_after_what_its_lanes_held_and_before_what_follows(
    threads: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    """A rename's nick frame (a barrier, in the room's lane and the private one) waits
    for what each lane held when it was posted, holds up what is posted behind it, and
    goes to its audience once and to its own session alone."""
    store = Store()
    hub = Hub(store)
    alice, carol = hub.session("alice"), hub.session("carol")
    hub.say(alice, "m1", defer=True)  # being stored
    hub.say(carol, "p1", defer=True, to=[carol, alice])  # a private message, being stored
    nick = Frame("nick", text="nick")

    def deliver() -> bool:
        hub._fanout([nick], [carol])
        return alice.push(nick)

    with hub.lock:
        assert not hub.lanes.barrier(deliver, [hub.lanes.private, hub.lane])
    hub.say(alice, "m2", defer=True)
    store.stored("m2", "m1")
    threads(lambda: hub.lanes.settle(alice))
    wait_until(lambda: texts(carol) == ["m1"], DEADLINE)  # the barrier waits for p1
    assert texts(alice) == ["m1"]
    store.stored("p1")
    hub.lanes.settle(carol)
    wait_until(lambda: texts(carol) == ["m1", "p1", "nick", "m2"], DEADLINE)
    assert texts(alice) == ["m1", "p1", "nick", "m2"]
    assert not hub.lane and not hub.lanes.private


def test_a_barrier_in_empty_lanes_is_delivered_at_once() -> None:
    hub = Hub()
    alice, carol = hub.session("alice"), hub.session("carol")
    with hub.lock:
        assert hub.lanes.barrier(
            lambda: hub._fanout([Frame("nick", text="nick")], [carol]), [hub.lane]
        )
    assert texts(carol) == ["nick"] and texts(alice) == [] and not hub.lane
