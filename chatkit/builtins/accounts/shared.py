"""The accounts of a cluster, kept in its Redis: every node knows every account.

With the ``cluster`` plugin on, the ``accounts`` plugin keeps its accounts here
instead of in its SQLite file, so that a nick registered on one node is registered
on all of them: its owner identifies on any node, nobody registers it again on
another, and a password changed or an account dropped on one node holds on all.

Keys (``PREFIX`` is the cluster's):

* ``PREFIX:accounts``, a hash: an account's name (its nick, folded) -> JSON
  ``{"nick", "hash", "email", "created"}``.
* ``PREFIX:account_skeletons``, a hash: the :func:`chatkit.skeleton` of an account's nick
  -> its name. A nick that looks like a registered one is that account's (as in the
  SQLite store); Redis holds one account per skeleton. Each node, as it starts, adds
  the key of every account that lacks one (a key lost, or written by an older chatkit).
* ``PREFIX:invites``, a hash: a nick invited to register (folded) -> the inviting
  account's name.

Each change is one Lua script, so two nodes registering one nick at once cannot both
succeed. Every read asks Redis (a password changed elsewhere counts at once). While
Redis is unreachable, reads answer from what this node last read (every account at
start, and each one looked up since), and changes are refused with
``cluster_unavailable``. The first node to start copies its own SQLite accounts (from
before it joined the cluster) there and sets ``PREFIX:accounts_seeded``; the files of
nodes that start later are not read (an account dropped meanwhile would come back).

A Redis without the marker has lost its data (it restarted without persistence): the
first read or registration on a node that finds it so copies back every account that
node knows (every account at its start, each one registered or looked up on it since),
sets the marker again, then goes on; every other node does the same on its first read,
or within :data:`MARK_EVERY` (each node looks at the marker that often: one that sees
no login would otherwise leave its accounts out, for anyone to register on another
node, a restarted one that seeded Redis again). What no node knew, and the open
invitations, are lost.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from typing import Any

import redis

from chatkit import CommandError, fold, skeleton
from chatkit.builtins.accounts.store import Account, AccountStore

__all__ = ["SharedAccountStore"]

log = logging.getLogger(__name__)

_ERRORS = (redis.RedisError, OSError)
RETRY_EVERY = 1.0  # seconds between tries of an unreachable Redis on a login's path
MARK_EVERY = 1.0
"""Seconds between a node's looks at the marker (``PREFIX:accounts_seeded``) for a Redis
that lost its accounts, which it then copies back: one ``GET`` a second."""

LINK_BATCH = 500
"""Accounts whose look-alike keys one script call checks, at a node's start (Redis
does nothing else meanwhile)."""

LOST = "!lost"
"""What the look-up script answers when the marker is not the one the node knows."""

# KEYS: accounts, skeletons, seeded; ARGV: name, skeleton, the node's marker. The account of
# that very name, else the look-alike's (the account registered with that skeleton); LOST
# if the marker is not the node's: Redis lost its data (and maybe another node restored it).
_FIND = """
if redis.call('GET', KEYS[3]) ~= ARGV[3] then return '!lost' end
local row = redis.call('HGET', KEYS[1], ARGV[1])
if not row then
  local name = redis.call('HGET', KEYS[2], ARGV[2])
  if name then row = redis.call('HGET', KEYS[1], name) end
end
return row
"""

# KEYS: accounts, skeletons, invites, seeded; ARGV: name, skeleton, row, the node's marker.
# 1 if created (and its invitation used up); 0 if the name or a look-alike is registered
# already; -1 if the marker is not the node's: Redis lost its data, and registering before
# this node copied back what it knows could take a registered nick.
_CREATE = """
if redis.call('GET', KEYS[4]) ~= ARGV[4] then
  return -1
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""

# KEYS: accounts, skeletons; ARGV: name, skeleton, name, skeleton, ... Each account still
# registered gets its look-alike key where no account has it (a key lost, or a cluster
# written by a chatkit whose skeletons were others).
_LINK = """
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSETNX', KEYS[2], ARGV[i + 1], ARGV[i])
  end
end
return 1
"""

# KEYS: accounts; ARGV: name, hash.
_SET_HASH = """
local row = redis.call('HGET', KEYS[1], ARGV[1])
if not row then return 0 end
local account = cjson.decode(row)
if ARGV[3] ~= '' and account['hash'] ~= ARGV[3] then return 0 end
account['hash'] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(account))
return 1
"""

# KEYS: accounts, skeletons, invites; ARGV: name, skeleton. The invitations it gave go too.
_DELETE = """
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
local invites = redis.call('HGETALL', KEYS[3])
for i = 1, #invites, 2 do
  if invites[i + 1] == ARGV[1] then redis.call('HDEL', KEYS[3], invites[i]) end
end
return 1
"""


def _account(name: str, row: str) -> Account:
    data = json.loads(row)
    return Account(name, str(data["nick"]), str(data["hash"]), data.get("email"))


def _row(account: Account, created: float) -> str:
    fields: dict[str, Any] = {"nick": account.nick, "hash": account.hash, "email": account.email}
    return json.dumps({**fields, "created": created})


class SharedAccountStore:
    """The accounts of a cluster in its Redis (see the module's docstring).

    :param client: the cluster's Redis client (``decode_responses=True``).
    :param prefix: the cluster's key prefix.
    :param local: this node's SQLite store, whose accounts are copied to Redis.

    Every method may be called from any thread (the Redis client is thread-safe).
    """

    def __init__(self, client: redis.Redis, prefix: str, local: AccountStore) -> None:
        self.path = f"the cluster's Redis ({prefix}:accounts)"
        """Where the accounts are, for the log."""
        self._redis = client
        self._keys = (f"{prefix}:accounts", f"{prefix}:account_skeletons", f"{prefix}:invites")
        self._seeded = f"{prefix}:accounts_seeded"
        # The marker's value this node last saw (one per seeding): another value, or
        # none, means Redis lost its data since (below, _restore).
        self._mark: str | None = None
        # Held while copying accounts back to a Redis that lost them: once per node at a time.
        self._restoring = threading.Lock()
        self._retry_at = 0.0  # monotonic time before which reads do not try Redis
        self._find = client.register_script(_FIND)
        self._create = client.register_script(_CREATE)
        self._set_hash = client.register_script(_SET_HASH)
        self._delete = client.register_script(_DELETE)
        self._link = client.register_script(_LINK)
        # Synchronize access to the copy below: readers on many threads update it.
        self._lock = threading.Lock()
        # What this node last read of Redis, for reads while it is unreachable: name ->
        # account, and skeleton -> name.
        self._known: dict[str, Account] = {}
        self._skeletons: dict[str, str] = {}
        self._local = local
        try:
            # The first node to start seeds the cluster (and the first after Redis lost
            # its data): the marker says the cluster has had accounts of its own since.
            if client.set(self._seeded, secrets.token_hex(8), nx=True):
                self._mark = self._read_mark()
                self._import(local)
            elif local.everything()[0]:
                log.warning(
                    "accounts: the accounts of %s are not copied to the cluster, which has "
                    "had accounts of its own already (the first node to start seeds it)",
                    local.path,
                )
            self._mark = self._read_mark()
            rows = client.hgetall(self._keys[0])
            accounts = [_account(str(name), str(row)) for name, row in rows.items()]
            pairs = [arg for a in accounts for arg in (a.name, skeleton(a.nick))]
            for at in range(0, len(pairs), 2 * LINK_BATCH):
                self._link(keys=self._keys[:2], args=pairs[at : at + 2 * LINK_BATCH])
            for account in accounts:
                self._remember(account.name, account)
        except _ERRORS as exc:
            log.warning("accounts: cannot read the cluster's accounts yet (%s)", exc)
        self._closed = threading.Event()
        self._watch = threading.Thread(
            target=self._watch_mark, name="chatkit-accounts-mark", daemon=True
        )
        self._watch.start()

    def _watch_mark(self) -> None:
        """Every :data:`MARK_EVERY`, look whether Redis lost its accounts (the marker
        is not the one this node saw) and copy back those this node knows, as a
        look-up would; an unreachable Redis is tried again at the next look."""
        while not self._closed.wait(MARK_EVERY):
            try:
                if self._mark is not None and self._read_mark() != self._mark:
                    self._restore()
            except _ERRORS as exc:
                log.debug("accounts: cannot look at the cluster's accounts now: %s", exc)
                continue
            except Exception:  # (never let the watch die: the next look tries again)
                log.exception("accounts: could not look at the cluster's accounts")

    def _import(self, local: AccountStore) -> None:
        """Copy ``local``'s accounts and invitations to Redis (where another node starting
        at the same time did not already)."""
        accounts, invites = local.everything()
        for account, created in accounts:
            like = skeleton(account.nick)
            if (
                self._create(
                    keys=[*self._keys, self._seeded],
                    args=[account.name, like, _row(account, created), self._mark or ""],
                )
                == 1
            ):
                log.info("accounts: %s copied to the cluster", account.nick)
            else:
                found = self._row_now(account.name, like, self._mark)
                if found is None or json.loads(found)["hash"] != account.hash:
                    log.warning(
                        "accounts: %s (from %s) is not copied to the cluster: the cluster "
                        "has that nick, or one like it, registered already",
                        account.nick,
                        local.path,
                    )
        for name, inviter in invites:
            self._redis.hsetnx(self._keys[2], name, inviter)

    def _remember(self, name: str, account: Account | None, like: str | None = None) -> None:
        """Note what Redis said of ``name`` (and of the skeleton ``like``)."""
        with self._lock:
            if account is None:
                self._known.pop(name, None)
                if like is not None:
                    self._skeletons.pop(like, None)
                return
            self._known[account.name] = account
            self._skeletons[skeleton(account.nick)] = account.name

    def _retry_later(self) -> None:
        """Readers do not wait for an unreachable Redis at every login (a partition can
        make each try take seconds): the next tries wait ``RETRY_EVERY``."""
        with self._lock:
            if time.monotonic() >= self._retry_at:
                self._retry_at = time.monotonic() + RETRY_EVERY

    @staticmethod
    def _unavailable() -> CommandError:
        return CommandError(
            "accounts are unavailable while this server has lost the other servers (Redis); "
            "try again later",
            "cluster_unavailable",
        )

    def close(self) -> None:
        """Stop watching the marker; close the node's own store (the Redis client is
        the cluster's)."""
        self._closed.set()
        self._watch.join()
        self._local.close()

    def get(self, name: str) -> Account | None:
        """The account called ``name`` (folded), or ``None``."""
        try:
            if time.monotonic() < self._retry_at:
                raise redis.ConnectionError("Redis was unreachable a moment ago")
            row = self._look_up(name, "")  # no skeleton: this very name only
        except _ERRORS:
            self._retry_later()
            with self._lock:
                return self._known.get(name)
        account = None if row is None else _account(name, row)
        self._remember(name, account)
        return account

    def _look_up(self, name: str, like: str) -> str | None:
        """The row of ``name`` (or of the account of skeleton ``like``), from Redis;
        copies this node's accounts back first if Redis lost them."""
        keys = [self._keys[0], self._keys[1], self._seeded]
        row = self._find(keys=keys, args=[name, like, self._mark or ""])
        if row == LOST:
            self._restore()
            row = self._find(keys=keys, args=[name, like, self._mark or ""])
        return None if row is None or row == LOST else str(row)

    def refresh(self, name: str) -> None:
        """Read ``name`` again from Redis: another node changed its password or dropped
        it. A plain read (no retry gate, no copying back); if Redis cannot say, this
        node forgets what it had of it rather than keep a password that is no longer
        the account's (it would copy it back to a Redis that lost its data)."""
        try:
            row = self._find(
                keys=[*self._keys[:2], self._seeded], args=[name, "", self._mark or ""]
            )
        except _ERRORS:
            row = LOST
        if row == LOST:
            self._remember(name, None)
            return
        self._remember(name, None if row is None else _account(name, str(row)))

    def _row_now(self, name: str, like: str, mark: str | None) -> str | None:
        """The row Redis has for ``name`` (or the look-alike ``like``) under the marker
        ``mark``; ``None`` if none, or if the marker is another already (lost again)."""
        row = self._find(keys=[*self._keys[:2], self._seeded], args=[name, like, mark or ""])
        return None if row is None or row == LOST else str(row)

    def _read_mark(self) -> str | None:
        value = self._redis.get(self._seeded)
        return None if value is None else str(value)

    def _restore(self) -> None:
        """The marker is not the one this node saw: Redis lost its accounts since (a
        node that seeded it again set a new one). Copy back those this node knows."""
        with self._restoring:
            seen = self._mark
            # Only one node sets a new marker; every node copies its accounts back.
            self._redis.set(self._seeded, secrets.token_hex(8), nx=True)
            mark = self._read_mark()
            if mark == seen or mark is None:
                return  # restored meanwhile by this node's other thread; or lost again
            if seen is None:
                self._mark = mark
                return  # this node never read Redis (it was down at its start): nothing lost
            with self._lock:
                known = list(self._known.values())
            copied, differ = 0, []
            for account in known:
                created = self._create(
                    keys=[*self._keys, self._seeded],
                    args=[
                        account.name,
                        skeleton(account.nick),
                        _row(account, time.time()),
                        mark or "",
                    ],
                )
                copied += created == 1
                if created != 1:
                    found = self._row_now(account.name, skeleton(account.nick), mark)
                    if found is None:
                        continue  # (lost again meanwhile: the next look copies it back)
                    if json.loads(found)["hash"] != account.hash:
                        differ.append(account.nick)
            # The new marker is this node's only now, every account copied: until then its
            # own look-ups found Redis lost and waited for this copy (registering a nick
            # it was about to put back is not possible meanwhile), and a Redis error
            # in the middle (raised) leaves the old one: the next look copies again.
            self._mark = mark
        if not known:  # (nothing of this node's lost: the cluster logs Redis's loss itself)
            log.info("accounts: the cluster's Redis had lost its data; no account to copy back")
            return
        log.error(
            "accounts: the cluster's Redis had lost its accounts (restarted without its "
            "data?): %d of the %d this node knew copied back; run Redis with persistence",
            copied,
            len(known),
        )
        if differ:
            # Registered again by someone else while Redis had lost them, or (rarely) given
            # a new password on a node whose copy was put back first: the operator looks.
            log.error(
                "accounts: in the cluster with another password than this node knew (not "
                "copied back): %s; if their owners' passwords no longer work, someone "
                "registered them while Redis had lost them: /resetpass them",
                ", ".join(sorted(differ)),
            )

    def find(self, nick: str) -> Account | None:
        """The account whose nick ``nick`` is, or looks like, or ``None``."""
        name, like = fold(nick), skeleton(nick)
        try:
            if time.monotonic() < self._retry_at:
                raise redis.ConnectionError("Redis was unreachable a moment ago")
            row = self._look_up(name, like)
        except _ERRORS:
            self._retry_later()
            with self._lock:
                other = self._skeletons.get(like)
                found = self._known.get(name)
                return found or (None if other is None else self._known.get(other))
        if row is None:
            self._remember(name, None, like)
            return None
        data = json.loads(row)
        account = Account(
            fold(str(data["nick"])), str(data["nick"]), str(data["hash"]), data.get("email")
        )
        self._remember(account.name, account)
        return account

    def create(self, account: Account) -> bool:
        """Add ``account`` and use up its invitation; False if it, or a look-alike, is
        registered. Raises ``cluster_unavailable`` while Redis is unreachable."""
        like = skeleton(account.nick)
        try:
            done = self._create(
                keys=[*self._keys, self._seeded],
                args=[account.name, like, _row(account, time.time()), self._mark or ""],
            )
            if done == -1:  # Redis lost its accounts: those this node knows go back first
                self._restore()
                done = self._create(
                    keys=[*self._keys, self._seeded],
                    args=[account.name, like, _row(account, time.time()), self._mark or ""],
                )
        except _ERRORS:
            raise self._unavailable() from None
        if done == -1:
            raise self._unavailable()
        if done == 1:
            self._remember(account.name, account)
        return bool(done == 1)

    def set_hash(self, name: str, hash: str, *, old: str | None = None) -> None:
        """Replace the password hash of account ``name`` (with ``old``: only if it is
        still that one)."""
        try:
            changed = self._set_hash(keys=self._keys[:1], args=[name, hash, old or ""])
        except _ERRORS:
            raise self._unavailable() from None
        with self._lock:
            known = self._known.get(name)
            if known is not None and changed:
                self._known[name] = Account(known.name, known.nick, hash, known.email)

    def delete(self, name: str) -> None:
        """Delete account ``name`` (and the invitations it gave)."""
        account = self.get(name)
        like = skeleton(account.nick if account is not None else name)
        try:
            self._delete(keys=self._keys, args=[name, like])
        except _ERRORS:
            raise self._unavailable() from None
        self._remember(name, None, like)

    def invite(self, name: str, inviter: str) -> None:
        """Let nick ``name`` (folded) register; ``inviter`` is the account inviting."""
        try:
            self._redis.hset(self._keys[2], name, inviter)
        except _ERRORS:
            raise self._unavailable() from None

    def invites_by(self, inviter: str) -> int:
        """How many invitations account ``inviter`` has open."""
        try:
            invites = self._redis.hgetall(self._keys[2])
        except _ERRORS:
            raise self._unavailable() from None
        return sum(1 for who in invites.values() if who == inviter)

    def invited(self, name: str) -> bool:
        """Whether nick ``name`` (folded) was invited to register."""
        try:
            return bool(self._redis.hexists(self._keys[2], name))
        except _ERRORS:
            raise self._unavailable() from None
