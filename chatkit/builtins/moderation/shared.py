"""A cluster's moderation, kept in its Redis: every node enforces every ban.

With the ``cluster`` plugin on, the ``moderation`` plugin keeps its operators, bans,
mutes, invitations, room flags and topics here instead of in its SQLite file, so that
a ban set on one node holds on all of them (a banned client cannot come back through
another node), and tells the other nodes what it did on
``PREFIX:moderation`` (Redis pub/sub), so that announcements, ``/kick``, ``/kill`` and
``/gline`` reach members of every node.

Keys (``PREFIX`` is the cluster's):

* ``PREFIX:moderation:TABLE:ROOM``, a set per table (``ops``, ``bans``, ``mutes``,
  ``invites``, ``flags``) and room (folded; ``*`` holds the server's bans).
* ``PREFIX:moderation:setters:TABLE:ROOM``, a hash: who set each ban or mute, and when
  (``["nick", "ts"]`` in JSON).

Kept topics are the cluster's own (``PREFIX:topics``, in the log's order): a node's
file's kept topics go there when it seeds the cluster (see :meth:`topic`).

Each node caches what it read (every message reads its room's mutes and flags). A
change is written and announced on the channel in one transaction; every node, this
one too, drops its copy of that set when the announcement arrives. A read that
started before a change's announcement arrived is not cached (a generation count), so
no node keeps a stale copy. While the channel is not listened to (Redis unreachable,
or reconnecting), nothing is cached: reads go to Redis (one reader at a time while it
seems away: see ``_read``), and if Redis does not answer, to the last copy (or
nothing: no ban is known). Changes are then refused with
``cluster_unavailable``. The first node that starts with settings in its own SQLite
file (from before it joined the cluster) adds them to Redis's, unless the cluster has
had settings already (the key ``PREFIX:moderation:seeded``, set by every change: a
later node's file would bring back a ban lifted meanwhile).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from chatkit import CommandError
from chatkit.builtins.moderation.store import CACHE_ENTRIES, FIRST_CLAIM, ModerationStore

__all__ = ["SharedModerationStore", "unavailable"]

log = logging.getLogger(__name__)

_ERRORS = (redis.RedisError, OSError)
PING_EVERY = 5.0  # seconds between pings on the channel's connection
SILENT = 3 * PING_EVERY  # seconds without a word from Redis that count as a lost connection
RETRY_EVERY = 1.0  # seconds between tries of an unreachable Redis on a reader's path
SLOW_READ = 0.25  # seconds after which a read from Redis makes it suspect (see _read)
TABLES = ("ops", "bans", "mutes", "invites", "flags")


def unavailable() -> CommandError:
    """The refusal of a change while this node has lost the cluster's Redis."""
    return CommandError(
        "this server has lost the other servers (Redis) for now: try again later",
        "cluster_unavailable",
    )


class SharedModerationStore:
    """A cluster's moderation settings in its Redis (see the module's docstring), with
    the interface of :class:`~chatkit.builtins.moderation.store.ModerationStore`.

    :param client: the cluster's Redis client (``decode_responses=True``).
    :param prefix: the cluster's key prefix.
    :param node: this node's name, to tell its own announcements from the others'.
    :param local: this node's SQLite store, whose settings are added to Redis's.
    :param cache_entries: the most (table, room) pairs cached.

    :attr:`on_action` is called, on the listening thread, with each action another node
    announced (a dict with ``"do"``).
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        node: str,
        local: ModerationStore,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        self.path = f"the cluster's Redis ({prefix}:moderation:*)"
        """Where the settings are, for the log."""
        self.on_action: Callable[[dict[str, Any]], None] | None = None
        self._redis = client
        self._prefix = prefix
        self._channel = f"{prefix}:moderation"
        self._node = node
        self._local = local
        self._cache_entries = cache_entries
        # Synchronize the cache, its generation and the listening flag: reads on every
        # reader thread, invalidations on the listening thread.
        self._lock = threading.Lock()
        # (table, room): its rows; ("setters", "TABLE:ROOM"): who set them, and when.
        self._cache: dict[tuple[str, str], Any] = {}
        self._generation = 0  # moves at every invalidation: a read older than it is not cached
        self._listening = False  # the channel is subscribed: cached copies are kept fresh
        self._retry_at = 0.0  # monotonic time before which reads do not try Redis
        self._failed = False  # the last read from Redis failed (see _read)
        self._reading: dict[int, float] = {}  # reads from Redis under way: when each began
        self._tokens = itertools.count()
        # Keys found holding what is not UTF-8 (logged once each). Not under the lock:
        # a set's add and membership test are atomic.
        self._junk: set[str] = set()
        # The same Redis, without decoding: a set member or hash value that is not UTF-8
        # (junk) is then left out alone, not the whole answer (see _texts).
        pool = client.connection_pool
        kwargs = {**pool.connection_kwargs, "decode_responses": False}
        self._raw = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        )
        self._subscribed = threading.Event()  # set once the channel is first subscribed
        self._stopped = threading.Event()
        try:
            self._import(local)
        except _ERRORS as exc:
            log.warning("moderation: cannot copy this node's settings to the cluster (%s)", exc)
        self._release = client.register_script(self._RELEASE)  # (a claim still its own)
        self._thread = threading.Thread(target=self._listen, name="chatkit-moderation", daemon=True)
        self._thread.start()
        self._subscribed.wait(5)

    _RELEASE = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
        "return 0"
    )

    def _key(self, table: str, room: str) -> str:
        return f"{self._prefix}:moderation:{table}:{room}"

    def _setters(self, table: str, room: str) -> str:
        """The key of the hash of who set each value of ``room``'s ``table``, and when."""
        return self._key("setters", f"{table}:{room}")

    def _import(self, local: ModerationStore) -> None:
        """Add ``local``'s settings to Redis's if the cluster never had any (sets merge; a
        kept topic goes to the cluster's topics, where one Redis has wins)."""
        rows, topics = local.everything()
        if not (rows or topics):
            return
        if not self._redis.set(self._seeded, self._node, nx=True):
            log.warning(
                "moderation: the settings of %s are not added to the cluster's, which has "
                "had settings already (the first node to start with some seeds it)",
                local.path,
            )
            return
        pipe = self._redis.pipeline()
        for table, room, value in rows:
            pipe.sadd(self._key(table, room), value)
        for table, room, value, nick, ts in local.all_setters():
            pipe.hsetnx(self._setters(table, room), value, json.dumps((nick, ts)))
        for room, topic in topics.items():  # (into the cluster's topics: see topic())
            pipe.hsetnx(f"{self._prefix}:topics", room, json.dumps({"room": room, **topic}))
        # Nodes that cached these sets (empty) before: every node starts its cache afresh.
        pipe.publish(self._channel, json.dumps({"node": self._node, "flush": True}))
        pipe.execute()
        if rows or topics:
            log.info("moderation: this node's settings were added to the cluster's")

    # -- the channel -------------------------------------------------------------------

    def _listen(self) -> None:
        """Follow the channel: drop cached sets as they change, pass on the others'
        actions. Reconnects (0.1 s, doubling up to 2 s) until :meth:`close`."""
        delay = 0.1
        while not self._stopped.is_set():
            pubsub = self._redis.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._channel)
                # Cache nothing until Redis confirms: a change published before that
                # would go unseen.
                deadline = time.monotonic() + 5
                while True:
                    first = pubsub.get_message(timeout=0.5)
                    if first is not None and first.get("type") == "subscribe":
                        break
                    if time.monotonic() > deadline or self._stopped.is_set():
                        raise redis.TimeoutError("no answer to SUBSCRIBE")
                mark = self._data_mark()
                with self._lock:
                    # What changed while nobody listened is unknown: start afresh.
                    self._cache.clear()
                    self._generation += 1
                    self._listening = True
                self._subscribed.set()
                delay = 0.1
                self._follow(pubsub, mark)
            except _ERRORS as exc:
                log.debug("moderation: not listening to %s (%s)", self._channel, exc)
            finally:
                with self._lock:
                    self._listening = False
                    self._generation += 1
                with contextlib.suppress(*_ERRORS):
                    pubsub.close()
            self._subscribed.set()  # (a start without Redis does not wait any longer)
            self._stopped.wait(delay)
            delay = min(delay * 2, 2.0)

    def _data_mark(self) -> str:
        """The token of the moderation data Redis holds (``PREFIX:moderation:mark``),
        made by the first node to look: a Redis that lost its data (``FLUSHALL``, a
        restart without persistence) has none, or another node's new one."""
        self._redis.set(self._mark, secrets.token_hex(8), nx=True)
        return str(self._redis.get(self._mark))

    def _follow(self, pubsub: Any, mark: str) -> None:
        """Apply what the channel brings until :meth:`close`; raise a Redis error if the
        connection is lost, or silent (no answer to a ping) for ``SILENT`` seconds: a
        NAT or a load balancer may drop an idle connection without a word. With each
        ping, see that Redis still has the data the cache copied (:meth:`_data_mark`):
        the loss of it announces nothing on the channel."""
        heard = pinged = time.monotonic()
        while not self._stopped.is_set():
            message = pubsub.get_message(timeout=0.5)
            now = time.monotonic()
            if message is not None:
                heard = now
                if message.get("type") == "message":
                    self._apply(str(message["data"]))
            if now - pinged >= PING_EVERY:
                pubsub.ping()
                pinged = now
                if (now_mark := self._data_mark()) != mark:
                    mark = now_mark
                    with self._lock:
                        self._cache.clear()
                        self._generation += 1
                    log.error(
                        "moderation: Redis lost the cluster's moderation settings (restarted "
                        "without persistence, or flushed): bans, mutes, operators and flags "
                        "set since the nodes started are gone"
                    )
            if now - heard > SILENT:
                raise redis.ConnectionError(f"nothing from Redis for {SILENT:g} s")

    def _apply(self, data: str) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            log.warning("moderation: not JSON on %s: %.80r", self._channel, data)
            return
        if not isinstance(event, dict):
            return
        if "table" in event and event.get("node") == self._node and not event.get("flush"):
            # This node's own change: _change dropped its copies as it wrote, under a
            # new generation. Dropped again now, a copy read since (fresh) would be
            # lost, and the next reader would wait on Redis for it: for as long as a
            # socket timeout if Redis has stopped answering meanwhile.
            return
        if "table" in event or event.get("flush"):
            with self._lock:
                if event.get("flush"):
                    self._cache.clear()
                else:
                    table, room = str(event["table"]), str(event.get("room"))
                    self._cache.pop((table, room), None)
                    self._cache.pop(("setters", f"{table}:{room}"), None)
                self._generation += 1
        elif event.get("node") != self._node and self.on_action is not None:
            try:
                self.on_action(event)
            except Exception:
                log.exception("moderation: acting on %.200r failed", event)

    def announce(self, action: dict[str, Any]) -> int:
        """Tell the other nodes of ``action`` (they call their :attr:`on_action`); return
        how many other nodes listened (Redis counts the channel's subscribers: this
        node's own listener, once subscribed, is one of them)."""
        with self._lock:
            mine = 1 if self._listening else 0
        try:
            got = self._redis.publish(self._channel, json.dumps({**action, "node": self._node}))
        except _ERRORS:
            raise unavailable() from None
        return max(0, int(got) - mine)

    # -- the store's interface ---------------------------------------------------------

    def close(self) -> None:
        """Stop listening (within half a second) and close the node's own store."""
        self._stopped.set()
        self._thread.join(timeout=5)
        self._raw.connection_pool.disconnect()
        self._local.close()

    def rows(self, table: str, room: str) -> list[str]:
        """The accounts (``ops``), masks (``bans``, ``mutes``, ``invites``) or flags of
        ``room``, sorted."""
        key = self._key(table, room)

        def fetch() -> list[str]:
            return sorted(self._texts(key, self._raw.smembers(key)))

        found: list[str] = self._read((table, room), fetch, [])
        return found

    def setters(self, table: str, room: str) -> dict[str, tuple[str, str]]:
        """As :meth:`ModerationStore.setters`, from the cluster's hash of them (cached
        as :meth:`rows` is; while Redis is away, the last copy, or none)."""
        key = self._setters(table, room)

        def fetch() -> dict[str, tuple[str, str]]:
            out: dict[str, tuple[str, str]] = {}
            for pair in self._raw.hgetall(key).items():
                texts = self._texts(key, pair)
                if len(texts) != 2:
                    continue  # (one of them is not UTF-8)
                value, setter = texts
                try:
                    nick, ts = json.loads(setter)
                except Exception:  # junk in Redis: not JSON, too deep, not a pair
                    continue
                if isinstance(nick, str) and isinstance(ts, str):
                    out[value] = (nick, ts)
            return out

        found: dict[str, tuple[str, str]] = self._read(("setters", f"{table}:{room}"), fetch, {})
        return found

    def _texts(self, key: str, items: Iterable[bytes | str]) -> list[str]:
        """``items`` of ``key`` as text; one that is not UTF-8 (junk in Redis) is left out,
        and logged once per key."""
        out: list[str] = []
        for item in items:
            try:
                out.append(item if isinstance(item, str) else item.decode())
            except UnicodeDecodeError:
                if key not in self._junk:
                    self._junk.add(key)  # (a set's add is atomic: at worst, logged twice)
                    log.warning("moderation: %s holds what is not UTF-8: left out", key)
        return out

    def _read(self, key: tuple[str, str], fetch: Callable[[], Any], empty: Any) -> Any:
        """What ``fetch`` reads from Redis, cached under ``key`` while the channel is
        listened to (its notes drop a copy that changed). Redis away: the last copy, or
        ``empty``. Readers do not wait for Redis on every message meanwhile (a partition
        can make each try take seconds): while Redis is suspect (not listened to, its last
        read failed, or a read has taken ``SLOW_READ`` already), one reader tries it, at
        most once a ``RETRY_EVERY``, and the others take the last copy."""
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and self._listening:
                return cached
            now = time.monotonic()
            if now < self._retry_at:
                return empty if cached is None else cached  # Redis was away a moment ago
            suspect = (
                not self._listening
                or self._failed
                or any(now - at > SLOW_READ for at in self._reading.values())
            )
            if suspect and self._reading:
                return empty if cached is None else cached  # another reader is trying
            token = next(self._tokens)
            self._reading[token] = now
            generation = self._generation
        try:
            found = fetch()
        except _ERRORS:
            with self._lock:
                self._failed = True
                self._retry_at = time.monotonic() + RETRY_EVERY
            return empty if cached is None else cached
        finally:
            with self._lock:
                del self._reading[token]
        with self._lock:
            self._failed = False
            if self._listening and generation == self._generation:
                if len(self._cache) >= self._cache_entries:
                    self._cache.clear()  # any client may ask about any room name
                self._cache[key] = found
        return found

    def _change(
        self, table: str, room: str, value: str, add: bool, setter: tuple[str, str] | None = None
    ) -> int:
        note = json.dumps({"node": self._node, "table": table, "room": room})
        setters = self._setters(table, room)
        try:
            pipe = self._redis.pipeline()  # MULTI/EXEC: the change and its announcement
            pipe.set(self._seeded, self._node)
            if add:
                pipe.sadd(self._key(table, room), value)
                if setter is not None:  # (a value added again keeps its first setter)
                    pipe.hsetnx(setters, value, json.dumps(setter))
            else:
                pipe.srem(self._key(table, room), value)
                pipe.hdel(setters, value)
            pipe.publish(self._channel, note)
            changed = pipe.execute()[1]
        except _ERRORS:
            raise unavailable() from None
        with self._lock:
            self._cache.pop((table, room), None)
            self._cache.pop(("setters", f"{table}:{room}"), None)
            self._generation += 1
        return int(changed)

    def rooms_with(self, table: str, value: str) -> list[str]:
        """The rooms (folded) whose ``table`` holds ``value`` (an account's ``ops``):
        a scan of the cluster's sets. Raises ``cluster_unavailable`` while Redis is away."""
        prefix = self._key(table, "")
        try:
            return sorted(
                str(key)[len(prefix) :]
                for key in self._redis.scan_iter(match=prefix + "*", count=500)
                if self._redis.sismember(key, value)
            )
        except _ERRORS:
            raise unavailable() from None

    def add(self, table: str, room: str, value: str, by: str = "", ts: str = "") -> None:
        self._change(table, room, value, add=True, setter=(by, ts) if by and ts else None)

    def remove(self, table: str, room: str, value: str) -> bool:
        return self._change(table, room, value, add=False) > 0

    def claim_first(self, room: str, token: str) -> bool:
        """As :meth:`ModerationStore.claim_first`, for every node: a key set only if
        absent, for :data:`FIRST_CLAIM` seconds, which also covers the time the join
        takes to reach the other nodes (the claim is not given back at the join: a
        node learns of another's members through the log, a moment later). Redis
        unreachable: this node's own claim."""
        try:
            return bool(
                self._redis.set(
                    self._key("first", room), token, nx=True, px=int(FIRST_CLAIM * 1000)
                )
            )
        except _ERRORS:
            return self._local.claim_first(room, token)

    def release_first(self, room: str, token: str, *, left: bool = False) -> None:
        """Once the claimant has joined, nothing: the claim expires (see
        :meth:`claim_first`); once it ``left`` the room, the claim ends, if it is still
        its own (a room emptied at once gets a first member again at once)."""
        self._local.release_first(room, token, left=left)
        if left:
            with contextlib.suppress(*_ERRORS):
                self._release(keys=[self._key("first", room)], args=[token])

    def topic(self, room: str) -> dict[str, str] | None:
        """``None``: in a cluster the topics are the cluster's (``PREFIX:topics``, set
        in the log's order, given back to a room's first member on each node); a
        second copy here, written by each node outside that order, could disagree and
        bring back a topic the log had replaced."""
        return None

    def keep_topic(self, room: str, topic: str, nick: str, ts: str) -> None:
        """Nothing: see :meth:`topic`."""

    @property
    def _mark(self) -> str:
        return f"{self._prefix}:moderation:mark"

    @property
    def _seeded(self) -> str:
        return f"{self._prefix}:moderation:seeded"
