"""Several servers as one chat, through Redis (docs/cluster.md).

Off by default: ``chatkit serve --redis redis://HOST:6379/0`` turns it on (or
``--plugin cluster`` with ``[plugins.cluster] url = ...``). Every server ("node")
with the same Redis (and ``prefix``) serves the same rooms, nicks and history.

* **One log.** Every message and every change of presence goes into one Redis
  stream, ``PREFIX:log`` (``XADD`` in a Lua script, trimmed to about ``log_max``
  entries). Its entry ids, given in Redis, are the cluster's order (never more than
  1000 in one millisecond, see ``_APPEND``): each node reads the stream
  on a thread of its own and delivers every entry, its own members' messages too,
  in stream order (:meth:`chatkit.Hub.deliver`), so every member of a room on every
  node sees the same messages in the same order, with the same ids (``MS-SEQ``
  becomes ``MS * 1000 + SEQ``, the format of a single server's ids).
* **Nicks** are keys ``PREFIX:nick:SKELETON`` (``SET NX``, the owning node as value,
  expiring after ``lease`` seconds), renewed by a heartbeat thread.
* **Presence**: each node keeps its members in the hash ``PREFIX:members:NODE``
  (nick and rooms) and beats in the sorted set ``PREFIX:nodes`` (score: the time of
  its last heartbeat, in ms). A node whose heartbeat is older than ``lease`` is
  declared lost by the first node to remove it (``ZREM``): its members leave with
  reason ``node lost``.
* **Topics** go through the log too, kept in the hash ``PREFIX:topics`` for nodes
  that start later (a node that reconnects to a Redis that lost its data puts back
  those it knows).
* **History**: each node's ``history`` store (SQLite) is fed from the log, so
  replays and ``/history`` read the same messages, with the same ids, everywhere; a
  node that starts catches up from the log (what Redis still keeps of it).

Settings (``[plugins.cluster]``): ``url`` (required), ``lease`` (10 seconds),
``prefix`` (``"chatkit"``), ``log_max`` (100000 entries), ``node`` (this node's
name; default ``HOST-PID-RANDOM``), ``timeout`` (5 seconds a sender waits for its
message to come back from Redis before it is delivered here only).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pluggy
import redis

from chatkit import (
    CommandError,
    Config,
    Frame,
    Message,
    Reject,
    RemoteMember,
    Server,
    Session,
    UsageError,
    check_settings,
    fold,
    hookimpl,
    message_frame,
    number_setting,
    skeleton,
)

if TYPE_CHECKING:
    from redis.client import Pipeline

log = logging.getLogger(__name__)

SETTINGS = ("url", "lease", "prefix", "log_max", "node", "timeout")
LEASE = 10.0
LOG_MAX = 100_000
TIMEOUT = 5.0
BLOCK_MS = 1000  # how long one XREAD waits for entries (then the reader checks for stop)
FUTURE_MS = 86_400_000  # a log entry's id this far (ms) past the clock is no node's: skipped
BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0)  # seconds between reconnection attempts

_REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)

TAKE_OVER_WAIT = 2.0
"""Seconds a claim of a nick proven by its account's password (a login, ``/regain``,
``/identify``) waits, when another node holds it, for that node's session to give way
(:meth:`Cluster.take_over`): a log entry read there and a rename's give-back, a few
milliseconds on a healthy cluster. Then the claim is refused (``nick_taken``)."""
TAKE_OVER_POLL = 0.02  # seconds between the waiting claim's tries
EVICT_SLACK = 10.0  # seconds past TAKE_OVER_WAIT after which an evict entry read (late, after
# an outage) is ignored: the login that asked is over, its session may be someone's now
_TAKE_OVER = "cluster.take_over"  # client.data: take_over's (skeleton, evict entry, when)

HELD_AGE = 300.0
"""Seconds after which a claim of a session not logged in (a login refused after it
claimed its nick) is forgotten."""

_PRESENCE = frozenset(("join", "part", "nick", "quit", "account", "away", "hello"))
"""Log entries of who is where: what a node's snapshot of the members holds."""


def _warn_if_forgetful(client: Any, url: str) -> None:
    """Log a warning if Redis keeps nothing on disk (no ``appendonly``, no ``save``): a
    restart of it loses the cluster's accounts and moderation (docs/cluster.md). A
    Redis that does not answer ``CONFIG GET`` (a managed one) is taken at its word."""
    try:
        appendonly = client.config_get("appendonly").get("appendonly")
        save = client.config_get("save").get("save")
    except (redis.RedisError, OSError, AttributeError):
        return
    if appendonly == "no" and not save:
        log.warning(
            'cluster: Redis at %s keeps nothing on disk (appendonly no, save ""): if it '
            "restarts, the cluster's accounts come back only from the nodes running then, "
            "and its bans, mutes and operators are lost; run it with appendonly yes",
            url,
        )


def _entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``MS-SEQ``) as a number pair, to compare."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


GUEST_PREFIX = "Guest"
GUEST_TRIES = 5
"""Guest nicks tried (``Guest12``, ``Guest12_1``, ...) for a session whose nick another
node holds."""

# Take a nick: free, or ours already (a login that failed after taking it) -> 1; another
# node's -> 0. ARGV: the node, the lease (ms), the claim's value ("NODE:N", the claiming
# session's), and "1" for a login's or rename's claim, which makes an own key that
# claim's (a quick reconnect: the quit's give-back, run later, must not free it), or ""
# for a renewal, which keeps the value. A key of the node's name alone is an older
# chatkit's, of this node.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
local ours = owner == ARGV[1] or (owner and string.sub(owner, 1, #ARGV[1] + 1) == ARGV[1] .. ':')
if not owner or (ours and ARGV[4] == '1') then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
  return 1
end
if ours then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
# Append entries to the log (KEYS[1]; ARGV: the approximate length to trim to, then per
# entry its number of fields and its field, value, ...) with the ids XADD's '*' would give,
# except that the counter never passes 999: a thousandth entry in one millisecond takes the
# next millisecond's first id. A message's id is MS * 1000 + SEQ, so a SEQ of 1000 would
# repeat an id. Redis's clock, as '*' uses. A run of entries per call: alone, an entry
# costs about five bare XADDs of Redis's time; in a run of ten or more, about two.
_APPEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms, seq = now, -1
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local lms, lseq = string.match(last[1][1], '^(%d+)-(%d+)$')
  lms, lseq = tonumber(lms), tonumber(lseq)
  if lms >= now then
    ms, seq = lms, lseq
  end
end
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  seq = seq + 1
  if seq > 999 then
    ms, seq = ms + 1, 0
  end
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], string.format('%d-%d', ms, seq),
    unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return seq
"""
# Let go of a nick if it is still the claim's (ARGV[1]: the claim's value).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def redact(url: str, keys: Sequence[str] = ("password",)) -> str:
    """``url`` without its password (``redis://:***@host:6379/0``, and
    ``?password=***``, the other place redis-py takes one), fit for a log; ``keys``: the
    words that make a query's key a secret (``chatkit check`` hides ``token`` too)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is not None:
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{user}:***@{host}")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(word in k.lower() for k, _ in pairs for word in keys):
        hidden = [(k, "***" if any(w in k.lower() for w in keys) else v) for k, v in pairs]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    elif password is None:
        return url  # nothing hidden: as written (urlunsplit would respell unix:///path)
    return urlunsplit(parts)


def password_of(url: str) -> str | None:
    """The password ``url`` gives Redis (in its user part or its query), or ``None``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return None
    if password is None:  # (redis-py takes the user part's first, then the query's first)
        password = next((v for k, v in parse_qsl(parts.query) if k == "password"), None)
    return password


def stream_id(ident: int) -> str:
    """The stream entry id of message id ``ident`` (``MS-SEQ``)."""
    return f"{ident // 1000}-{ident % 1000}"


def message_id(entry: str) -> int:
    """The message id of stream entry id ``entry``: ``MS * 1000 + SEQ``."""
    ms, _, seq = entry.partition("-")
    return int(ms) * 1000 + min(int(seq or 0), 999)


def iso(ident: int) -> str:
    """The UTC ISO 8601 time (milliseconds) of message id ``ident``."""
    when = datetime.fromtimestamp(ident // 1000 / 1000, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now_ts() -> str:
    return iso(time.time_ns() // 1_000_000 * 1000)


@dataclass
class Member:
    """A session on another node, as this node knows it from the log."""

    nick: str
    rooms: dict[str, str] = field(default_factory=dict)
    """Folded room name -> display name."""
    account: str | None = None
    """The account it is identified to (the ``accounts`` plugin), if any."""
    away: str | None = None
    """Its away message, if it is away."""


@dataclass
class _Item:
    """What the publisher sends in its next pipeline: a log entry and other commands."""

    entry: dict[str, str] | None
    ops: list[Callable[[Pipeline], object]]


def _renamed_sid(entry: dict[str, str] | None) -> int | None:
    """The session id of a ``nick`` log entry of this node's (see ``Cluster._renames``),
    else ``None``."""
    if entry is None or entry.get("t") != "nick":
        return None
    try:
        sid = json.loads(entry["d"]).get("sid")
    except (KeyError, ValueError, AttributeError):
        return None
    return sid if isinstance(sid, int) else None


class Cluster:
    """The ``cluster`` plugin: a :class:`chatkit.hub.Relay` over Redis."""

    chatkit_restart_only = "it is this node in the cluster"
    """Never restarted by a reload (:func:`chatkit.plugins.plan_reload`): a new instance
    would be a new node, its members seen to leave the old one and be renamed."""

    def __init__(self) -> None:
        self.url = ""
        self.lease = LEASE
        self.prefix = "chatkit"
        self.log_max = LOG_MAX
        self.timeout = TIMEOUT
        self.node = ""
        # redis-py types its answers as unions (bytes or str, sync or async); this
        # client decodes (decode_responses), so it is used as Any.
        self.redis: Any = None
        self._server: Server | None = None
        self._store: Any = None  # the history plugin's MessageStore, if it runs
        self._private = False  # whether it stores private messages (its `private`)
        self._lock = threading.Lock()  # guards everything below
        self._remote: dict[str, dict[str, Member]] = {}  # node -> folded nick -> member
        self._missing: dict[str, float] = {}  # node absent from PREFIX:nodes -> since
        self._pending: dict[int, Future[int]] = {}  # token of a message -> its id
        self._given_up: set[int] = set()  # tokens delivered here only (Redis failed)
        self._topics: dict[str, dict[str, Any]] = {}  # folded room -> its topic's fields
        # Topics set here while Redis was unreachable (folded room -> the last one):
        # published once it is back.
        self._topics_while_down: dict[str, tuple[str, dict[str, str]]] = {}
        self._queue: list[_Item] = []
        self._cond = threading.Condition(self._lock)
        self._tokens = itertools.count(1)
        self._up = False
        self._stopping = False
        self._resync = False  # the log said this node was lost: announce it again
        self._last = "0-0"  # the last log entry read
        self._snapshot_at = "0-0"  # the log's last entry when the members were read
        self._bad_top: str | None = None  # an entry with an id from the future, read last
        self._reported_top: str | None = None  # the last such entry logged
        self._epoch = ""  # the token of Redis's data when this node joined (_data_mark)
        self._joined = False  # set once the reader knows where to start reading the log
        self._local_id = 0
        # This node's renames not yet read back from the log: session id -> the session
        # and its nicks before them, oldest first (the first is its nick in the log's
        # order). A private message is delivered by nick as the log has it (see
        # _as_logged). Emptied when Redis is lost (the entries not sent are dropped;
        # the hello says everything again).
        self._renames: dict[int, tuple[Session, list[str]]] = {}
        self._down_since: float | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        # Counters for /stats.
        self.outages = 0
        self.local_only = 0
        """Messages delivered to this node's members only: Redis was unreachable."""
        self._local_only_at_loss = 0  # local_only when Redis was last lost (under _lock)
        # Redis's clock less this node's, in ms, as of the last connection: log entries'
        # ids are Redis's time (a late evict entry is late by that clock).
        self._clock_offset_ms = 0
        self.dropped_events = 0
        """Presence changes not sent while Redis was unreachable (resent as a whole)."""
        self.lost_nodes = 0
        self.nick_conflicts = 0
        """Nicks of this node found held by another node, each conflict counted once."""
        # Skeletons of this node's nicks held by another node, each with when a look
        # (the heartbeat's, or a reconnection's) last found it so: a conflict lasts until
        # one side leaves, and is counted and logged when it starts. The heartbeat
        # thread's, and the reader's at a reconnection (_announce): under _lock.
        self._conflicts: dict[str, float] = {}
        # The value of each session's claim of a nick key, by (session id, skeleton):
        # a quit's or rename's give-back frees the key only if it still holds that
        # session's claim (a quick reconnect's login, claiming the nick anew before the
        # quit's give-back ran, keeps it). Under _lock.
        self._held: dict[tuple[int, str], tuple[str, float]] = {}  # (value, when made)
        self._claim_ids = itertools.count(1)

    # -- startup and shutdown ---------------------------------------------------------

    @hookimpl
    def chatkit_check_config(self, config: Config) -> None:
        self._read(config)

    @hookimpl
    def chatkit_configure(self, config: Config, pluginmanager: pluggy.PluginManager) -> None:
        url = self._read(config)
        try:
            client = redis.Redis.from_url(
                url, socket_timeout=5, socket_connect_timeout=2, decode_responses=True
            )
            client.ping()
        except redis.AuthenticationError as exc:
            # (No password where Redis wants one: "HELLO must be called with the client
            # already authenticated...", as redis-py sends HELLO first.)
            wanted = "a wrong password" if password_of(url) else "no password, and it wants one"
            raise UsageError(
                f"cluster: Redis at {self.url} refused the connection: {wanted} "
                f"(redis://:PASSWORD@HOST:6379/0; Redis said: {exc})"
            ) from None
        except (redis.RedisError, OSError) as exc:
            raise UsageError(f"cluster: cannot reach Redis at {self.url}: {exc}") from None
        self.redis = client
        _warn_if_forgetful(client, self.url)
        try:
            seconds, micros = client.time()
            self._clock_offset_ms = int(seconds) * 1000 + int(micros) // 1000 - _now_ms()
        except (redis.RedisError, OSError, ValueError, TypeError):
            self._clock_offset_ms = 0
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._append = client.register_script(_APPEND)
        log.info("cluster: node %s on %s (lease %gs)", self.node, self.url, self.lease)

    def _read(self, config: Config) -> str:
        """Read and check the settings; return the Redis URL as written (with its
        password). Opens nothing: ``chatkit check`` calls it too."""
        settings = config.plugin_settings("cluster")
        check_settings("cluster", settings, SETTINGS)
        url = settings.get("url")
        if not isinstance(url, str) or not url:
            raise UsageError("cluster: url must be a Redis URL (redis://HOST:6379/0)")
        self.url = redact(url)
        """The Redis URL without its password, for logs and messages."""
        self.lease = number_setting("cluster", settings, "lease", LEASE, 0.5)
        self.timeout = number_setting("cluster", settings, "timeout", TIMEOUT, 0.1)
        self.log_max = int(number_setting("cluster", settings, "log_max", LOG_MAX, 100))
        prefix = settings.get("prefix", "chatkit")
        node = settings.get("node", f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}")
        for key, value in (("prefix", prefix), ("node", node)):
            if not isinstance(value, str) or not value or any(c in value for c in ": \n"):
                raise UsageError(f"cluster: {key} must be a word without ':', not {value!r}")
        self.prefix, self.node = prefix, node
        try:
            # Builds a connection as serve would, without connecting: the URL's options
            # are read (a bad value, or one Redis's client does not take, is refused).
            redis.ConnectionPool.from_url(url).make_connection()
        except ValueError as exc:  # (its scheme, a port or an option's value)
            raise UsageError(f"cluster: url {self.url!r} is not a Redis URL: {exc}") from None
        except TypeError as exc:  # (an option no connection takes: ?tiemout=5)
            raise UsageError(
                f"cluster: url {self.url!r} has an option Redis's client does not take: {exc}"
            ) from None
        return url

    @hookimpl
    def chatkit_server_start(self, server: Server) -> None:
        self._server = server
        history = server.pluginmanager.get_plugin("history")
        self._store = getattr(history, "store", None)
        # Private messages are stored too if the history plugin stores them (its setting).
        self._private = bool(getattr(history, "private", False))
        try:
            self._connect(start=True)
        except _REDIS_ERRORS as exc:
            self._set_down(exc)
        server.hub.relay = self
        for name, target in (
            ("reader", self._read_loop),
            ("publisher", self._publish_loop),
            ("heartbeat", self._heartbeat_loop),
        ):
            thread = threading.Thread(target=target, name=f"cluster-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    @hookimpl
    def chatkit_server_stop(self, server: Server) -> None:
        if server.hub.relay is self:
            server.hub.relay = None
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=BLOCK_MS / 1000 + 6)
        if self.redis is not None and self._up:
            try:
                # Its members have left (their parts and quits went first): the others
                # forget the node at once instead of a lease later.
                pipe = self.redis.pipeline(transaction=False)
                pipe.zrem(self._key("nodes"), self.node)
                pipe.delete(self._key("members", self.node))
                entry = {"n": self.node, "t": "lost", "d": json.dumps({"node": self.node})}
                self._log(pipe, entry)
                pipe.execute()
            except _REDIS_ERRORS as exc:
                log.warning("cluster: could not leave cleanly: %s", exc)
        if self.redis is not None:
            self.redis.close()

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def _redis(self) -> Any:
        if self.redis is None:
            raise RuntimeError("the cluster plugin is not configured")
        return self.redis

    # -- connection state -------------------------------------------------------------

    def _connect(self, *, start: bool = False) -> None:
        """(Re)join the cluster: read where the log ends and who is where, take this
        node's nicks again and announce its members. Raises a Redis error."""
        r = self._redis
        if not self._joined:
            beat = r.zscore(self._key("nodes"), self.node)
            if beat is not None and _now_ms() - beat < self.lease * 1000:
                # Two servers with one name would take each other's members and nicks
                # for their own: say so (a quick restart of this one sees its own beat).
                log.error(
                    "cluster: node %s beat %.1f s ago: if another server runs under this "
                    "name, stop one (each needs a name of its own: [plugins.cluster] node)",
                    self.node,
                    (_now_ms() - beat) / 1000,
                )
            # The first time (at start, or when Redis came only later): live traffic
            # from the log's end on, the history store caught up to it.
            last = r.xrevrange(self._key("log"), count=1)
            self._last = last[0][0] if last else "0-0"
            self._catch_up_history()
            self._joined = True
            self._epoch = self._data_mark(r)
        elif not start and (mark := self._data_mark(r)) != self._epoch:
            self._epoch = mark
            self._restore_topics(r)
        # (A bad value, not a node's, is skipped: it must not keep the node from Redis.)
        kept = {
            room: topic
            for room, value in r.hgetall(self._key("topics")).items()
            if (topic := _loads(value)) is not None
        }
        with self._lock:
            self._topics = kept
        # Where the log was before the members below were read: presence entries up to
        # there are in them (each was written with its entry), and the reader, going
        # on from where it was, skips them (messages, topics: delivered late, in order).
        top = r.xrevrange(self._key("log"), count=1)
        self._snapshot_at = top[0][0] if top else "0-0"
        live = self._live_nodes()
        snapshot: dict[str, dict[str, Member]] = {}
        for node in live:
            if node == self.node:
                continue
            members = r.hgetall(self._key("members", node))
            snapshot[node] = {
                k: member for k, v in members.items() if (member := _read_member(v)) is not None
            }
        self._apply_snapshot(snapshot)
        # Up before the announcement, so that no join or part falls between its snapshot
        # and the publisher (if it fails, _set_down marks the node down again).
        with self._lock:
            was_down = self._down_since is not None
            self._renames.clear()  # (the announcement below has every nick as it is)
            self._up = True
            self._resync = False
            down_for = 0.0 if self._down_since is None else time.monotonic() - self._down_since
            self._down_since = None
            lost = self.local_only - self._local_only_at_loss
        self._announce()
        # Topics set here meanwhile: later in the log than any set elsewhere during the
        # outage, so they win there too (every node applies the log in its order).
        with self._lock:
            topics, self._topics_while_down = self._topics_while_down, {}
        for folded, (room, topic) in topics.items():
            if not self._send_topic(room, topic):
                with self._lock:  # down again: the next reconnection sends it
                    self._topics_while_down.setdefault(folded, (room, topic))
        if was_down and not start:
            log.warning(
                "cluster: Redis is back after %.1fs (%d message(s) meanwhile reached this "
                "node's members only)",
                down_for,
                lost,
            )
            self._notice("cluster: connected to the other servers again")

    def _set_down(self, exc: BaseException) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._up = False
            self._down_since = time.monotonic()
            self._local_only_at_loss = self.local_only  # (the next "back" counts from here)
            self._renames.clear()
            self.outages += 1
            pending, self._pending = self._pending, {}
            self._given_up.update(pending)
            self.dropped_events += len(self._queue)
            self._queue.clear()
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionError(str(exc)))
        log.warning(
            "cluster: lost Redis at %s (%s); serving this node's members only, reconnecting",
            self.url,
            exc or type(exc).__name__,
        )
        self._notice(
            "cluster: lost the connection to the other servers; messages reach this "
            "server's members only until it is back"
        )

    @hookimpl
    def chatkit_check_ready(self) -> str | None:
        # Down, this node serves its own members only, and their nicks are unique on it
        # alone: a load balancer should send new clients to a node that is connected.
        with self._lock:
            if self._server is None or self._up or self._down_since is None:
                return None
            down = time.monotonic() - self._down_since
        return (
            f"cluster: no connection to Redis for {down:.0f} s: this server reaches its "
            "own members only"
        )

    def _notice(self, text: str) -> None:
        if self._server is not None and not self._stop.is_set():
            self._server.hub.announce(text)

    def stats(self) -> dict[str, Any]:
        """What ``/stats`` shows of the cluster."""
        with self._lock:
            down = None if self._down_since is None else time.monotonic() - self._down_since
            return {
                "node": self.node,
                "redis": "up" if self._up else "down",
                "down_for": None if down is None else round(down, 3),
                "nodes": 1 + len(self._remote),
                "remote_members": sum(len(m) for m in self._remote.values()),
                "outages": self.outages,
                "local_only_messages": self.local_only,
                "dropped_events": self.dropped_events,
                "lost_nodes": self.lost_nodes,
                "nick_conflicts": self.nick_conflicts,
            }

    # -- nicks ---------------------------------------------------------------------

    def _value(self, session: Session, like: str, *, fresh: bool = False) -> str:
        """The value of ``session``'s claim of the nick key ``like`` ("NODE:N"): a new
        one if ``fresh`` (a login's, a rename's) or if it has none yet."""
        with self._lock:
            held = None if fresh else self._held.get((session.id, like))
            if held is None:
                held = self._held[session.id, like] = (
                    f"{self.node}:{next(self._claim_ids)}",
                    time.monotonic(),
                )
            return held[0]

    def take_over(
        self, nick: str, account: str, how: str, *, regain: bool, claim: Session | None = None
    ) -> None:
        """Have the other nodes rename a session of theirs holding ``nick`` (or a
        look-alike), ``account``'s, as the ``accounts`` plugin renames one of this node's
        (its ``evict_here``: an unidentified holder; with ``regain``, a session of the
        account's own too). ``how`` says why (``logged in with its password``). At once;
        or, with ``claim``, only if ``claim``'s coming claim of the nick (its login's, its
        rename's) finds another node holding it, and that claim then waits for it, up to
        :data:`TAKE_OVER_WAIT`: services' REGAIN across the cluster. Any thread."""
        data = {"nick": nick, "account": account, "how": how, "regain": regain}
        data["claim"] = claim is not None  # (a login's, over soon; or a new password's)
        if not regain and claim is not None:
            with self._lock:
                holder = self._remote_member(nick)
            if holder is not None and holder.account == account:
                return  # (a session of the account's own keeps it: no use waiting)
        if claim is None:
            self._send("evict", data)
        else:  # (its own thread's; its claim uses it if made soon, as this account)
            claim.data[_TAKE_OVER] = (skeleton(nick), data, time.monotonic())

    def _take(self, client: Session, nick: str) -> Reject | None:
        like = skeleton(nick)
        ticket = client.data.get(_TAKE_OVER)
        if ticket is not None and ticket[0] == like:
            del client.data[_TAKE_OVER]  # (used once, by this claim; another's is left)
            fresh = time.monotonic() - ticket[2] < TAKE_OVER_WAIT
            if not fresh or client.account != ticket[1]["account"]:
                ticket = None  # (a refused claim's left over, or proven no longer)
        else:
            ticket = None
        if not self._up:
            return None  # unique on this node only until Redis is back
        # (Claimed anew even when a session here holds it: an /identify takes it from
        # that one, which the hub may refuse otherwise. A refused claim leaves the key
        # this session's value: the holder's give-back then frees nothing, and the key
        # lapses with its lease.)
        value = self._value(client, like, fresh=True)
        try:
            took = self._claim(
                keys=[self._key("nick", like)],
                args=[self.node, int(self.lease * 1000), value, "1"],
            )
        except _REDIS_ERRORS as exc:
            self._set_down(exc)
            return None
        if not took and ticket is not None and self._send("evict", ticket[1]):
            took = self._wait_for(like, value)
        if took:
            return None
        with self._lock:
            self._held.pop((client.id, like), None)
        return Reject(f"nick {nick!r} is taken (on another server); try another", "nick_taken")

    def _wait_for(self, like: str, value: str) -> bool:
        """Claim the nick key ``like`` with ``value`` until it is free or ours, up to
        :data:`TAKE_OVER_WAIT` (another node's session giving the nick way): whether
        it was (or Redis was lost meanwhile: the nick is unique on this node alone)."""
        deadline = time.monotonic() + TAKE_OVER_WAIT
        while time.monotonic() < deadline and not self._stop.wait(TAKE_OVER_POLL):
            try:
                if self._claim(
                    keys=[self._key("nick", like)],
                    args=[self.node, int(self.lease * 1000), value, "1"],
                ):
                    return True
            except _REDIS_ERRORS as exc:
                self._set_down(exc)
                return True
        return False

    def _give_back(self, session: Session, nick: str) -> Callable[[Pipeline], object]:
        """The pipeline op that frees the nick key of ``session``'s ``nick`` (after its
        quit or rename entry), if its claim is still the key's value: a login of the
        same nick here since (a quick reconnect) claimed it anew, and keeps it."""
        like = skeleton(nick)
        key = self._key("nick", like)
        with self._lock:
            held = self._held.pop((session.id, like), None)

        def op(pipe: Pipeline) -> object:
            if held is None:
                return None  # (never claimed: Redis was away)
            return self._release(keys=[key], args=[held[0]], client=pipe)

        return op

    @hookimpl(trylast=True)
    def chatkit_allow_login(self, client: Session, nick: str, fields: dict[str, Any]) -> Any:
        return self._take(client, nick)

    @hookimpl(trylast=True)
    def chatkit_allow_nick(self, client: Session, nick: str) -> Any:
        return self._take(client, nick)

    # -- this node's presence, published ------------------------------------------------

    def _send(self, kind: str, data: dict[str, Any], *ops: Callable[[Pipeline], object]) -> bool:
        """Queue a log entry (and pipeline ops) for the publisher; False while Redis is
        unreachable (the entry is dropped)."""
        entry = {"n": self.node, "t": kind, "d": json.dumps(data)}
        with self._cond:
            if not self._up:
                self.dropped_events += 1
                return False
            self._queue.append(_Item(entry, list(ops)))
            self._cond.notify()
        return True

    def _member_op(self, session: Session) -> Callable[[Pipeline], object]:
        key, nick = self._key("members", self.node), session.nick or ""
        value = json.dumps(_member_fields(session))

        def op(pipe: Pipeline) -> object:
            return pipe.hset(key, fold(nick), value)

        return op

    def _forget_op(self, nick: str) -> Callable[[Pipeline], object]:
        key = self._key("members", self.node)

        def op(pipe: Pipeline) -> object:
            return pipe.hdel(key, fold(nick))

        return op

    @hookimpl
    def chatkit_on_join(self, client: Session, room: str) -> None:
        data = {"nick": client.nick, "room": room}
        if client.account is not None:
            data["account"] = client.account
        if client.away is not None and fold(room) not in client.quiet:
            data["away"] = client.away
        self._send("join", data, self._member_op(client))
        with self._lock:
            topic = self._topics.get(fold(room))
        if topic is not None:
            # The room is new here (its topic was set on another node), or has it already.
            self._hub.restore_topic(room, topic)

    @hookimpl
    def chatkit_on_topic(self, client: Session, room: str, topic: dict[str, str]) -> None:
        if not self._send_topic(room, topic):
            # Redis is unreachable: the other nodes get it once it is back (_connect).
            with self._lock:
                self._topics_while_down[fold(room)] = (room, topic)

    def _data_mark(self, r: redis.Redis) -> str:
        """The token of the data this Redis holds (``PREFIX:epoch``), made by the first
        node to look: a Redis restarted without its data has none until a node makes
        another, so a node whose token differs knows its Redis lost what it had. (The
        log's end would not tell: another node may have written to it first.)"""
        key = self._key("epoch")
        r.set(key, secrets.token_hex(8), nx=True)
        return str(r.get(key))

    def _restore_topics(self, r: redis.Redis) -> None:
        """Put back the topics this node knew into a Redis that lost them (each node
        does; the first to write a room's topic wins), for the nodes that start later."""
        with self._lock:
            known = dict(self._topics)
        pipe = r.pipeline(transaction=False)
        for room, topic in known.items():
            pipe.hsetnx(self._key("topics"), room, json.dumps(topic))
        pipe.execute()
        log.error(
            "cluster: Redis lost its data (restarted without persistence?): %d topics put "
            "back from this node; run Redis with persistence",
            len(known),
        )

    def _send_topic(self, room: str, topic: dict[str, str]) -> bool:
        """Log a topic set (or cleared) here, and keep it in ``PREFIX:topics``."""
        key, value = self._key("topics"), json.dumps(topic)

        def op(pipe: Pipeline) -> object:
            if topic.get("topic"):
                return pipe.hset(key, fold(room), value)
            return pipe.hdel(key, fold(room))

        return self._send("topic", topic, op)

    @hookimpl
    def chatkit_on_leave(self, client: Session, room: str, reason: str, by: str | None) -> None:
        if by is None and client.leaving:
            # Its logout's leaves (the hub has let it go already): the quit's entry says
            # them all at once, so the other nodes' members see one leave naming every
            # room (an IRC client: QUIT), as this node's do, not a part per room.
            return
        data = {"nick": client.nick, "room": room, "reason": reason}
        if by is not None:
            data["by"] = by  # a kick: IRC clients on every node see KICK
        self._send("part", data, self._member_op(client))

    @hookimpl
    def chatkit_on_nick(self, client: Session, old: str) -> None:
        ops = [self._forget_op(old), self._member_op(client)]
        if skeleton(old) != skeleton(client.nick or ""):
            ops.append(self._give_back(client, old))
        self._send("nick", {"old": old, "new": client.nick, "sid": client.id}, *ops)

    @hookimpl
    def chatkit_on_away(self, client: Session) -> None:
        data: dict[str, Any] = {"nick": client.nick, "text": client.away}
        if self._server is not None:
            # The rooms told, as here: not those where a mute holds it (Hub.set_away).
            hub = self._server.hub
            data["rooms"] = [r for r in list(client.rooms.values()) if hub.may_speak(client, r)]
        self._send("away", data, self._member_op(client))

    @hookimpl
    def chatkit_on_account(self, client: Session) -> None:
        data = {"nick": client.nick, "account": client.account}
        self._send("account", data, self._member_op(client))

    def forget(self, account: str, why: str) -> None:
        """:meth:`Relay.forget`: a log entry the other nodes act on."""
        self._send("forget", {"account": account, "why": why})

    @hookimpl
    def chatkit_on_account_deleted(self, account: str) -> None:
        # Every node's history store holds the account's messages (fed from the log).
        self._send("deleted", {"account": account})

    @hookimpl
    def chatkit_on_logout(self, client: Session, reason: str) -> None:
        nick = client.nick or ""
        self._send(
            "quit",
            {"nick": nick, "reason": reason},
            self._forget_op(nick),
            self._give_back(client, nick),
        )

    def _give_way(self, sessions: list[Session]) -> None:
        """Rename to a guest nick each of ``sessions``, whose nick another node holds
        (it took it while this one was cut off from Redis, and Redis gave it to that
        one): two sessions with one nick would both get its private messages. The one
        whose node holds the key keeps it, as an IRC network ends a nick collision."""
        assert self._server is not None
        for session in sessions:
            nick = session.nick or ""
            guest = next(
                (
                    f"{GUEST_PREFIX}{session.id}{tail}"
                    for tail in ("", *(f"_{n}" for n in range(1, GUEST_TRIES)))
                    if self._take(session, f"{GUEST_PREFIX}{session.id}{tail}") is None
                ),
                None,
            )
            if guest is None:
                continue  # (the next look tries again)
            session.notice(
                f"{nick} was taken on another server while this one was cut off from the "
                "others: you are renamed"
            )
            try:
                self._server.hub.rename(session, guest, forced=True)
            except CommandError:
                pass  # it left, or took another nick, meanwhile
            else:
                log.warning("cluster: %s renamed %s (its nick is another node's)", nick, guest)

    def _announce(self) -> None:
        """Write this node's members and nicks anew and tell the others (``hello``)."""
        assert self._server is not None
        r = self._redis
        sessions = [s for s in self._server.hub.sessions() if s.nick]
        lost = []
        for session in sessions:
            nick = session.nick or ""
            key = skeleton(nick)
            value = self._value(session, key)
            if not self._claim(
                keys=[self._key("nick", key)], args=[self.node, int(self.lease * 1000), value, ""]
            ):
                with self._lock:
                    new = key not in self._conflicts
                    self._conflicts[key] = time.monotonic()
                    self.nick_conflicts += new
                if new:
                    log.warning("cluster: nick %s was taken on another node meanwhile", nick)
                lost.append(session)
        self._give_way(lost)
        sessions = [s for s in self._server.hub.sessions() if s.nick]
        members = {fold(s.nick or ""): json.dumps(_member_fields(s)) for s in sessions}
        pipe = r.pipeline(transaction=True)
        pipe.zadd(self._key("nodes"), {self.node: _now_ms()})
        pipe.delete(self._key("members", self.node))
        if members:
            pipe.hset(self._key("members", self.node), mapping=members)
        data = {"members": {k: json.loads(v) for k, v in members.items()}}
        entry = {"n": self.node, "t": "hello", "d": json.dumps(data)}
        self._log(pipe, entry)
        pipe.execute()

    # -- messages (the hub's Relay) --------------------------------------------------------

    def publish(self, session: Session, message: Message) -> Callable[[], None]:
        """Queue ``message`` for the log; the function returned waits until the reader
        delivered it here (or, Redis lost, delivers it here alone)."""
        token = next(self._tokens)
        future: Future[int] = Future()
        data: dict[str, Any] = {
            "k": token,
            "sid": session.id,
            "nick": message.nick,
            "text": message.text,
        }
        if message.room is not None:
            data["room"] = message.room
        else:
            data["to"] = message.to
            # For the history of private messages, kept by the account of each side.
            to_account = self._account_of(message.to or "")
            if to_account is not None:
                data["to_account"] = to_account
        if message.action:
            data["action"] = True
        if message.notice:
            data["notice"] = True
        if message.account is not None:
            data["account"] = message.account
        entry = {"n": self.node, "t": "msg", "d": json.dumps(data)}
        with self._cond:
            up = self._up
            if up:
                self._pending[token] = future
                self._queue.append(_Item(entry, []))
                self._cond.notify()

        def wait() -> None:
            if not up:
                self._deliver_here(session, message)
                return
            try:
                ident = future.result(timeout=self.timeout)
            except (FutureTimeout, ConnectionError):
                with self._lock:
                    if self._pending.pop(token, None) is not None:
                        self._given_up.add(token)  # if the log brings it later: not again here
                    given_up = token in self._given_up
                if given_up:
                    if message.room is not None:
                        # Before its echo: delivered here, the others may not get it
                        # (or may: Redis may only be slow, and log it after all).
                        session.notice(
                            f"the other servers did not confirm this message within "
                            f"{self.timeout:g} s: this server's members get it, the "
                            "others may not"
                        )
                    self._deliver_here(session, message)
                    return
                ident = future.result()  # the reader has it: it is being delivered
            message.id, message.ts = ident, iso(ident)

        return wait

    def _deliver_here(self, session: Session, message: Message) -> None:
        """Deliver a message to this node's members only (Redis is unreachable)."""
        assert self._server is not None
        with self._lock:
            self.local_only += 1
            self._local_id = max(
                self._local_id + 1,
                message_id(self._last) + 1,
                time.time_ns() // 1_000_000 * 1000,
            )
            ident = self._local_id
        message.id, message.ts = ident, iso(ident)
        frame = message_frame(message)
        frame.origin = session.id
        hub = self._server.hub
        if message.room is not None:
            hub.deliver([frame], room=message.room)
        else:
            recipient = hub.find(message.to or "")
            if recipient is None:
                raise CommandError(
                    f"{message.to} is on another server, which cannot be reached now",
                    "no_such_nick",
                )
            hub.deliver([frame], sessions=(session, recipient))  # (renamed since: still them)

    def members(self, room: str) -> list[str]:
        key = fold(room)
        with self._lock:
            return [
                member.nick
                for node in self._remote.values()
                for member in node.values()
                if key in member.rooms
            ]

    def rooms(self) -> dict[str, int]:
        counts: dict[str, tuple[str, int]] = {}
        with self._lock:
            for node in self._remote.values():
                for member in node.values():
                    for key, room in member.rooms.items():
                        shown, count = counts.get(key, (room, 0))
                        counts[key] = (shown, count + 1)
        return dict(counts.values())

    def member(self, nick: str) -> RemoteMember | None:
        with self._lock:  # the log reader changes a member's rooms meanwhile
            found = self._remote_member(nick)
            if found is None:
                return None
            return RemoteMember(found.nick, list(found.rooms.values()), found.account, found.away)

    def renamed(self, session: Session, old: str) -> None:
        """:meth:`Relay.renamed`: under the hub's lock, before the rename shows (the
        ``nick`` entry is logged by ``chatkit_on_nick``, after it)."""
        with self._lock:
            if self._up:  # (down, nothing is logged: the hello at reconnection says it)
                self._renames.setdefault(session.id, (session, []))[1].append(old)

    def _as_logged(self, nick: str) -> Session | None:
        """This node's session called ``nick`` at the point of the log being applied:
        one renamed since keeps its old nick there until its ``nick`` entry is read
        back, and one renamed to ``nick`` has it only then. (The hub's lock is never
        taken under ours: the hub calls the relay with its lock held.)"""
        assert self._server is not None
        key = fold(nick)
        with self._lock:
            logged = {sid: (session, olds[0]) for sid, (session, olds) in self._renames.items()}
        for session, first in logged.values():
            if fold(first) == key:
                return session
        found = self._server.hub.find(nick)
        return None if found is None or found.id in logged else found

    def _remote_member(self, nick: str) -> Member | None:
        """The member of another node called ``nick`` (any case), or ``None``; the
        caller holds ``_lock``."""
        assert self._lock.locked()
        key = fold(nick)
        for node in self._remote.values():
            found = node.get(key)
            if found is not None:
                return found
        return None

    def everyone(self) -> list[RemoteMember]:
        with self._lock:
            return [
                RemoteMember(m.nick, list(m.rooms.values()), m.account, m.away)
                for node in self._remote.values()
                for m in node.values()
            ]

    def locate(self, nick: str) -> str | None:
        with self._lock:
            found = self._remote_member(nick)
            return None if found is None else found.nick

    def _log(self, pipe: redis.client.Pipeline, *entries: dict[str, str]) -> None:
        """Queue in ``pipe`` the append of ``entries``, in order, to the log (``_APPEND``)."""
        args: list[str | int] = [self.log_max]
        for entry in entries:
            args.append(2 * len(entry))
            args.extend(part for pair in entry.items() for part in pair)
        self._append(keys=[self._key("log")], args=args, client=pipe)

    # -- threads ---------------------------------------------------------------------

    def _publish_loop(self) -> None:
        """Send queued entries, as many as are waiting, in one pipeline (one round trip)."""
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                items, self._queue = self._queue[:1000], self._queue[1000:]
            try:
                pipe = self._redis.pipeline(transaction=False)
                run: list[dict[str, str]] = []  # entries with no commands between them
                for item in items:
                    if item.ops and run:
                        self._log(pipe, *run)
                        run = []
                    for op in item.ops:
                        op(pipe)
                    if item.entry is not None:
                        run.append(item.entry)
                if run:
                    self._log(pipe, *run)
                pipe.execute()
            except _REDIS_ERRORS as exc:
                self._set_down(exc)
            except Exception:
                log.exception("cluster: publishing failed")
                # (A command Redis refused: WRONGTYPE, OOM, READONLY.) Which of this
                # batch's entries were logged is unknown (a pipeline is not a
                # transaction): a session with a rename among them waits for no read-back
                # from here; the others' sessions keep theirs, logged by earlier batches.
                # (A read-back of one of this batch's renames that was logged after all
                # then finds no record, or, if the session renamed again meanwhile, a
                # record of a rename from another nick: it is left waiting, see _apply.)
                lost = {sid for item in items if (sid := _renamed_sid(item.entry)) is not None}
                with self._lock:
                    for sid in lost:
                        self._renames.pop(sid, None)

    def _read_loop(self) -> None:
        """Read the log in order and deliver it here; reconnect when Redis is lost."""
        failures = 0
        while not self._stop.is_set():
            try:
                if not self._up:
                    self._redis.ping()
                    self._connect()
                    failures = 0
                entries = self._redis.xread(
                    {self._key("log"): self._last}, count=1000, block=BLOCK_MS
                )
                for _stream, batch in entries:
                    self._bad_top = None
                    self._apply(batch)
                    if self._bad_top is not None:
                        self._stop.wait(1)  # (XREAD would return it at once, again)
            except _REDIS_ERRORS as exc:
                self._set_down(exc)
                self._stop.wait(BACKOFF[min(failures, len(BACKOFF) - 1)])
                failures += 1
            except Exception:
                log.exception("cluster: reading the log failed")
                self._stop.wait(1)

    def _heartbeat_loop(self) -> None:
        """Renew this node's nicks and heartbeat; declare silent nodes lost."""
        interval = max(self.lease / 4, 0.1)
        while not self._stop.wait(interval):
            if not self._up or self._server is None:
                continue
            try:
                mark = self._data_mark(self._redis)
                if mark != self._epoch:
                    # Redis lost its data while this node stayed connected (FLUSHALL, or
                    # a restart between two reads): put back what this node knows, its
                    # members and the topics, for nodes that start later. (The reader
                    # thread checks too, when it reconnects: at worst both put it back,
                    # which changes nothing.)
                    self._restore_topics(self._redis)
                    with self._lock:
                        self._resync = True
                    self._epoch = mark  # (once they are back: a failure tries again)
                if self._resync:
                    self._announce()
                    with self._lock:
                        self._resync = False
                self._beat()
            except _REDIS_ERRORS as exc:
                self._set_down(exc)
            except Exception:
                log.exception("cluster: heartbeat failed")

    def _beat(self) -> None:
        assert self._server is not None
        r = self._redis
        lease_ms = int(self.lease * 1000)
        pipe = r.pipeline(transaction=False)
        pipe.zadd(self._key("nodes"), {self.node: _now_ms()})
        sessions = [s for s in self._server.hub.sessions() if s.nick]
        nicks = [s.nick or "" for s in sessions]
        for session, nick in zip(sessions, nicks, strict=True):
            like = skeleton(nick)
            self._claim(
                keys=[self._key("nick", like)],
                args=[self.node, lease_ms, self._value(session, like), ""],
                client=pipe,
            )
        # Claims of logins that never got in (refused after the claim) are forgotten,
        # long after any login could still be under way.
        with self._lock:
            holding = {(s.id, skeleton(n)) for s, n in zip(sessions, nicks, strict=True)}
            old = time.monotonic() - HELD_AGE
            for key in [k for k, (_, at) in self._held.items() if at < old and k not in holding]:
                del self._held[key]
        looked = time.monotonic()
        results = pipe.execute()
        held = {
            skeleton(nick): nick for nick, took in zip(nicks, results[1:], strict=True) if not took
        }
        with self._lock:
            new = [nick for key, nick in held.items() if key not in self._conflicts]
            # This look's conflicts (one that ended is forgotten: again, it is new), and
            # those a reconnection found after this look began, which it could not see:
            # forgotten, they would be counted again at the next beat.
            kept = {key: at for key, at in self._conflicts.items() if at > looked}
            self._conflicts = {**kept, **dict.fromkeys(held, looked)}
            self.nick_conflicts += len(new)
        if new:
            log.warning("cluster: nicks of this node held by another node: %s", ", ".join(new))
        hub = self._server.hub
        self._give_way([s for s in map(hub.find, held.values()) if s is not None])
        dead = r.zrangebyscore(self._key("nodes"), "-inf", _now_ms() - lease_ms)
        for node in dead:
            if node != self.node and r.zrem(self._key("nodes"), node):
                # This node won the removal: it tells everyone, once.
                pipe = r.pipeline(transaction=False)
                pipe.delete(self._key("members", node))
                entry = {"n": self.node, "t": "lost", "d": json.dumps({"node": node})}
                self._log(pipe, entry)
                pipe.execute()
        # Nodes this one knows that Redis does not (Redis lost its data): gone after a lease.
        live = set(self._live_nodes())
        now = time.monotonic()
        forget = []
        with self._lock:
            for node in self._remote:
                if node in live:
                    self._missing.pop(node, None)
                elif now - self._missing.setdefault(node, now) > self.lease:
                    forget.append(node)
        for node in forget:
            self._lose(node)

    def _live_nodes(self) -> list[str]:
        since = _now_ms() - int(self.lease * 1000)
        nodes: list[str] = self._redis.zrangebyscore(self._key("nodes"), since, "+inf")
        return nodes

    # -- applying the log --------------------------------------------------------------

    def _apply(self, batch: list[tuple[str, dict[str, str]]]) -> None:
        """Apply a batch of log entries: store its room messages, then deliver in order."""
        parsed: list[tuple[str, str, str, dict[str, Any]]] = []
        futures: list[Future[None]] = []
        future_ms = _now_ms() + FUTURE_MS
        read = self._last  # the last entry of the batch read (good or bad)
        for entry_id, fields in batch:
            # Whatever is in the stream (another program's XADD, a node of another
            # version) is checked: a bad entry is skipped and logged, never retried.
            try:
                if int(entry_id.partition("-")[0]) > future_ms:
                    # An id no clock gives (the stream's top would stop every append):
                    # not read past, so the log goes on once it is removed (_read_loop).
                    if self._reported_top != entry_id:  # (once, not at every read)
                        self._reported_top = entry_id
                        log.error(
                            "cluster: the log has an entry %s from the future: nothing can "
                            "be appended after it; remove it (XDEL %s %s, then XSETID to "
                            "the last entry before it)",
                            entry_id,
                            self._key("log"),
                            entry_id,
                        )
                    self._bad_top = entry_id
                    break
                data = json.loads(fields["d"])
                node, kind = fields["n"], fields["t"]
                if not (isinstance(data, dict) and isinstance(node, str) and isinstance(kind, str)):
                    raise ValueError("not an entry")
                # (A message of this node's that it gave up waiting for, and delivered
                # here alone, is stored all the same once the log has it: every node's
                # history then holds it, under the log's id. Only its delivery here is
                # skipped, below.)
                stored = kind == "msg" and self._stores(data)
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                log.warning("cluster: skipped a bad log entry %s (%s)", entry_id, exc)
                read = entry_id  # (read past it)
                continue
            read = entry_id
            parsed.append((entry_id, node, kind, data))
            if stored:
                try:
                    futures.append(self._submit(message_id(entry_id), data))
                except Exception as exc:
                    log.warning("cluster: message %s not stored: %s", entry_id, exc)
        for future in futures[-1:]:  # one commit takes them all, in order
            try:
                future.result()
            except Exception as exc:
                log.warning("cluster: messages not stored in history: %s", exc)
        # Consecutive messages to one room leave as one run: one piece per member.
        run: list[tuple[Frame, Future[int] | None, int]] = []
        run_room = ""
        for entry_id, node, kind, data in parsed:
            try:
                if kind == "msg" and "room" in data:
                    if run and fold(data["room"]) != fold(run_room):
                        self._deliver_run(run_room, run)
                    run_room = data["room"]
                    self._message(entry_id, node, data, run)
                elif kind in _PRESENCE and _entry_key(entry_id) <= _entry_key(self._snapshot_at):
                    # Said already by the snapshot of the others' members this node
                    # read as it joined again (who is where now): applied again, a
                    # member renamed meanwhile would join twice.
                    pass
                else:
                    self._deliver_run(run_room, run)
                    self._apply_one(entry_id, node, kind, data)
            except Exception:
                log.exception("cluster: could not apply log entry %s", entry_id)
            self._last = entry_id
        self._deliver_run(run_room, run)
        self._last = read

    def _message(
        self,
        entry_id: str,
        node: str,
        data: dict[str, Any],
        run: list[tuple[Frame, Future[int] | None, int]],
    ) -> None:
        """Add a room message of the log to ``run`` (unless delivered here already)."""
        ident = message_id(entry_id)
        frame = message_frame(_message(ident, data))
        future = None
        if node == self.node:
            with self._lock:
                if data.get("k") in self._given_up:
                    self._given_up.discard(data["k"])
                    return  # delivered here already, when Redis seemed lost
                future = self._pending.pop(data.get("k", 0), None)
            frame.origin = data.get("sid")
        run.append((frame, future, ident))

    def _stores(self, data: dict[str, Any]) -> bool:
        """Whether the message ``data`` of the log goes in this node's history."""
        return self._store is not None and ("room" in data or self._private)

    def _submit(self, ident: int, data: dict[str, Any]) -> Future[None]:
        """Queue a message of the log for this node's history (a private one with the
        accounts of both sides, as the history plugin stores one)."""
        accounts = (data.get("account"), data.get("to_account")) if "to" in data else (None, None)
        return cast("Future[None]", self._store.submit(_message(ident, data), accounts))

    def _deliver_run(self, room: str, run: list[tuple[Frame, Future[int] | None, int]]) -> None:
        """Deliver ``run`` (messages to ``room``), then wake their senders here; empty it."""
        if not run:
            return
        try:
            self._hub.deliver([frame for frame, _future, _ident in run], room=room)
        finally:
            for _frame, future, ident in run:
                if future is not None and not future.done():
                    future.set_result(ident)
            run.clear()

    def _apply_one(self, entry_id: str, node: str, kind: str, data: dict[str, Any]) -> None:
        assert self._server is not None
        hub = self._server.hub
        mine = node == self.node
        if kind == "msg":  # a private message (room messages go in runs)
            ident = message_id(entry_id)
            message = _message(ident, data)
            frame = message_frame(message)
            future = None
            if mine:
                with self._lock:
                    if data.get("k") in self._given_up:
                        self._given_up.discard(data["k"])
                        return  # delivered here already, when Redis seemed lost
                    future = self._pending.pop(data.get("k", 0), None)
                frame.origin = data.get("sid")
            to = message.to or ""
            recipient, sender = self._as_logged(to), self._as_logged(message.nick)
            with self._lock:
                gone = recipient is None and self._remote_member(to) is None
            if gone:
                # The recipient left, or was renamed, before this message in the log's
                # order (this node applied that first, as every node does): nobody
                # gets it; its sender here is told, as on one server ("has left").
                if future is not None:
                    future.set_exception(CommandError(f"{to} has left", "no_such_nick"))
                return
            # By session: either may be renamed again by now (its nick would miss it).
            parties = [s for s in (sender, recipient) if s is not None]
            hub.deliver([frame], sessions=parties)
            if future is not None:
                future.set_result(ident)
        elif kind == "lost":
            if data.get("node") == self.node:
                log.warning("cluster: the others took this node for lost; announcing it again")
                with self._lock:
                    self._resync = True
            else:
                self._lose(str(data.get("node")))
        elif kind == "topic":
            # Every node's, this one's too, in the log's order: where two nodes set one
            # room's topic at once, the one later in the log is the topic everywhere.
            with self._lock:
                if data.get("topic"):
                    self._topics[fold(data["room"])] = data
                else:
                    self._topics.pop(fold(data["room"]), None)
            hub.replace_topic(data["room"], data)
        elif kind == "evict":
            # (A node's own: its accounts plugin renamed whoever held it here first.
            # One read late, after an outage, asked for a login long over: not acted on.)
            accounts = self._server.pluginmanager.get_plugin("accounts")
            evict_here = getattr(accounts, "evict_here", None)
            # (By Redis's clock, which gave the entry its id: the node's may differ.)
            age = _now_ms() + self._clock_offset_ms - _entry_key(entry_id)[0]
            late = age > (TAKE_OVER_WAIT + EVICT_SLACK) * 1000
            claim = bool(data.get("claim", True))
            if not mine and evict_here is not None and not (late and claim):
                evict_here(
                    str(data["nick"]),
                    str(data["account"]),
                    str(data["how"]),
                    # A new password's, read late: its unidentified holders still go,
                    # not a session of the account's own (it may have proven it since).
                    regain=bool(data.get("regain")) and not late,
                )
        elif kind == "forget":
            if not mine:  # (this node's own went at once)
                hub.forget_account(str(data["account"]), str(data["why"]), everywhere=False)
                self._changed_elsewhere(str(data["account"]))
        elif kind == "deleted":
            if not mine and self._server is not None:
                # This node's sessions identified to it are no longer (the deleting
                # node did its own in hub.account_deleted).
                hub.forget_account(str(data["account"]), "deleted", everywhere=False)
                self._changed_elsewhere(str(data["account"]))
            # Here too (its own hook did it already): log entries ahead of this one
            # may have been stored since, with the account on them.
            if self._store is not None:
                try:
                    self._store.detach_account(str(data["account"]))
                except Exception as exc:  # StoreError: the database refused
                    log.error("cluster: cannot detach a deleted account: %s", exc)
        elif mine:
            if kind == "nick":  # read back: the log has it now
                with self._lock:
                    renamed = self._renames.get(data.get("sid", 0))
                    # Only the rename this entry logged: one of a batch Redis refused
                    # (its record given up, yet maybe logged: a pipeline is not a
                    # transaction) is older than the session's waiting renames, whose
                    # first left from the nick that rename gave (another old nick).
                    if renamed is not None and renamed[1][0] == data.get("old"):
                        del renamed[1][0]
                        if not renamed[1]:
                            del self._renames[data["sid"]]
            return  # this node's own presence: shown here when it happened
        elif kind == "join":
            away = data.get("away")
            self._join(
                node,
                data["nick"],
                data["room"],
                data.get("account"),
                away if isinstance(away, str) else None,
            )
        elif kind == "account":
            self._account(node, data["nick"], data.get("account"))
        elif kind == "away":
            text, told = data.get("text"), data.get("rooms")
            told = {fold(r) for r in told if isinstance(r, str)} if isinstance(told, list) else None
            self._away(node, data["nick"], text if isinstance(text, str) else None, told)
        elif kind == "part":
            self._part(node, data["nick"], data["room"], data.get("reason", "part"), data.get("by"))
        elif kind == "nick":
            self._rename(node, data["old"], data["new"])
        elif kind == "quit":
            with self._lock:
                member = self._remote.get(node, {}).pop(fold(data["nick"]), None)
            if member is not None and member.rooms:
                self._leave_all(member, data.get("reason", "quit"))
        elif kind == "hello":
            members = {k: _member(json.dumps(v)) for k, v in data["members"].items()}
            self._apply_node(node, members)

    def _changed_elsewhere(self, account: str) -> None:
        """Another node changed ``account``'s password or dropped it: this node's
        ``accounts`` plugin reads it again (what it knows of it is what it would copy
        back to a Redis that lost its data: not an old password)."""
        assert self._server is not None
        accounts = self._server.pluginmanager.get_plugin("accounts")
        changed = getattr(accounts, "changed_elsewhere", None)
        if changed is not None:
            try:
                changed(account)
            except Exception:  # (the log's reader goes on whatever a plugin does)
                log.exception("cluster: the accounts plugin failed to read %s again", account)

    def _join(
        self, node: str, nick: str, room: str, account: str | None = None, away: str | None = None
    ) -> None:
        with self._lock:
            member = self._remote.setdefault(node, {}).setdefault(fold(nick), Member(nick))
            member.account, member.away = account, away
            if fold(room) in member.rooms:
                return
            member.rooms[fold(room)] = room
        self._hub.deliver([_join_frame(room, nick, account, away)], room=room)

    def _away(self, node: str, nick: str, text: str | None, told: set[str] | None) -> None:
        """Another node's member went away (or came back): tell those who share a
        room with it (of ``told``, folded, if given: the rooms its node told)."""
        with self._lock:
            member = self._remote.get(node, {}).get(fold(nick))
            if member is None or member.away == text:
                return
            member.away = text
            rooms = [r for k, r in member.rooms.items() if told is None or k in told]
        if rooms:
            self._hub.deliver([Frame("away", nick=member.nick, text=text)], rooms=rooms)

    def _account(self, node: str, nick: str, account: str | None) -> None:
        """Another node's member identified (or no longer): tell those who share a room."""
        with self._lock:
            member = self._remote.get(node, {}).get(fold(nick))
            if member is None:
                return
            member.account = account
            rooms = list(member.rooms.values())
        if rooms:
            self._hub.deliver([Frame("account", nick=member.nick, account=account)], rooms=rooms)

    def _account_of(self, nick: str) -> str | None:
        """The account of whoever is called ``nick``, here or on another node."""
        found = self._hub.find(nick)
        if found is not None:
            return cast(str | None, found.account)
        with self._lock:
            member = self._remote_member(nick)
            return None if member is None else member.account

    def _part(self, node: str, nick: str, room: str, reason: str, by: str | None = None) -> None:
        with self._lock:
            member = self._remote.get(node, {}).get(fold(nick))
            if member is None or member.rooms.pop(fold(room), None) is None:
                return
        fields = {"room": room, "nick": nick, "ts": _now_ts(), "reason": reason}
        if by is not None:
            fields["by"] = by
        frame = Frame("leave", **fields)
        self._hub.deliver([frame], room=room)

    def _rename(self, node: str, old: str, new: str) -> None:
        with self._lock:
            members = self._remote.setdefault(node, {})
            member = members.pop(fold(old), None)
            if member is None:
                return
            member.nick = new
            members[fold(new)] = member
            rooms = list(member.rooms.values())
        self._hub.deliver([Frame("nick", old=old, new=new)], rooms=rooms)

    def _leave_all(self, member: Member, reason: str) -> None:
        rooms = list(member.rooms.values())
        if not rooms:
            return
        frame = Frame(
            "leave", room=rooms[0], nick=member.nick, ts=_now_ts(), reason=reason, rooms=rooms
        )
        self._hub.deliver([frame], rooms=rooms)

    def _lose(self, node: str) -> None:
        with self._lock:
            members = self._remote.pop(node, None)
            self._missing.pop(node, None)
            if members:
                self.lost_nodes += 1
        if not members:
            return  # (a node that stopped cleanly: its members left already)
        log.warning("cluster: node %s lost; its %d members leave", node, len(members))
        for member in members.values():
            self._leave_all(member, "node lost")

    def _apply_node(self, node: str, members: dict[str, Member]) -> None:
        """Make ``node``'s members here what it says they are, telling the difference."""
        with self._lock:
            before = self._remote.get(node, {})
            self._remote[node] = {}
        for key, member in before.items():
            now = members.get(key)
            for room_key, room in member.rooms.items():
                if now is None or room_key not in now.rooms:
                    frame = Frame("leave", room=room, nick=member.nick, ts=_now_ts(), reason="quit")
                    self._hub.deliver([frame], room=room)
        with self._lock:
            self._remote[node] = members
        for key, member in members.items():
            old = before.get(key)
            for room_key, room in member.rooms.items():
                if old is None or room_key not in old.rooms:
                    frame = _join_frame(room, member.nick, member.account, member.away)
                    self._hub.deliver([frame], room=room)
            shared = [room for key, room in member.rooms.items() if old and key in old.rooms]
            if old is not None and old.away != member.away and shared:
                # (went away, or came back, while this node did not hear it)
                away = Frame("away", nick=member.nick, text=member.away)
                self._hub.deliver([away], rooms=shared)

    def _apply_snapshot(self, snapshot: dict[str, dict[str, Member]]) -> None:
        """Take the members of the live nodes as Redis has them. A node known here
        that Redis does not list is lost a lease later (:meth:`_beat`), unless it
        announces itself meanwhile (after Redis restarted empty, every node does)."""
        for node, members in snapshot.items():
            self._apply_node(node, members)

    @property
    def _hub(self) -> Any:
        assert self._server is not None
        return self._server.hub

    def _catch_up_history(self) -> None:
        """Store in this node's history what the log keeps that it does not have yet."""
        if self._store is None:
            return
        start = stream_id(self._store.last_id())
        stop = self._last
        while True:
            batch = self._redis.xrange(self._key("log"), f"({start}", stop, count=1000)
            if not batch:
                return
            futures = []
            for entry_id, fields in batch:
                if fields.get("t") != "msg":
                    continue
                data = _loads(fields.get("d", "{}"))
                try:
                    if data is not None and self._stores(data):
                        futures.append(self._submit(message_id(entry_id), data))
                except (KeyError, ValueError, TypeError, AttributeError) as exc:
                    log.warning("cluster: skipped a bad log entry %s (%s)", entry_id, exc)
            for future in futures[-1:]:
                future.result()
            start = batch[-1][0]
            if start == stop:
                return


def _message(ident: int, data: dict[str, Any]) -> Message:
    return Message(
        nick=str(data.get("nick", "")),
        text=str(data.get("text", "")),
        room=data.get("room"),
        to=data.get("to"),
        action=bool(data.get("action", False)),
        notice=bool(data.get("notice", False)),
        id=ident,
        ts=iso(ident),
        account=data.get("account"),
    )


def _loads(value: str) -> dict[str, Any] | None:
    """The JSON object ``value`` holds, or ``None`` (logged) if it holds none."""
    try:
        data = json.loads(value)
    except (ValueError, TypeError):
        data = None
    if not isinstance(data, dict):
        log.warning("cluster: skipped a bad value in Redis: %.80r", value)
        return None
    return data


def _read_member(value: str) -> Member | None:
    """:func:`_member`, or ``None`` (logged) for a value that is not one."""
    try:
        return _member(value)
    except (ValueError, TypeError, AttributeError) as exc:
        log.warning("cluster: skipped a bad member in Redis (%s): %.80r", exc, value)
        return None


def _member(value: str) -> Member:
    data = json.loads(value)
    rooms = {fold(room): room for room in data.get("rooms", [])}
    account, away = data.get("account"), data.get("away")
    return Member(
        str(data.get("nick", "")),
        rooms,
        account if isinstance(account, str) else None,
        away if isinstance(away, str) else None,
    )


def _member_fields(session: Session) -> dict[str, Any]:
    """A local member as ``PREFIX:members:NODE`` and ``hello`` entries hold it."""
    fields: dict[str, Any] = {"nick": session.nick, "rooms": list(session.rooms.values())}
    if session.account is not None:
        fields["account"] = session.account
    if session.away is not None:
        fields["away"] = session.away
    return fields


def _join_frame(room: str, nick: str, account: str | None, away: str | None = None) -> Frame:
    """The ``join`` frame of another node's member (with its account and away message,
    as a local one's)."""
    fields: dict[str, Any] = {"room": room, "nick": nick, "ts": _now_ts()}
    if account is not None:
        fields["account"] = account
    if away is not None:
        fields["away"] = away
    return Frame("join", **fields)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
