"""Accounts: registered nicks, with a password only their owner knows. On by default.

An account is a registered nick. ``/register PASSWORD [EMAIL]`` registers the nick
you have; afterwards nobody can log in with it, or take it with ``/nick``, without
the password: a ``hello`` with ``password`` (IRC: ``PASS`` or SASL ``PLAIN``), or
``/identify [NICK] PASSWORD`` once logged in under another nick. A login with a
registered nick and no password is refused with ``nick_registered`` (or, with
``grace`` set, allowed for that many seconds, then renamed to a guest nick unless
the client identifies). A nick that looks like a registered one (the same
``chatkit.skeleton``: another case, letters of another script) counts as it, for
logins, ``/nick`` and ``/register``. ``/logout`` forgets the identification, ``/passwd OLD NEW``
changes the password, ``/drop PASSWORD`` deletes the account; a server operator's
``/resetpass NICK`` gives the account a new password it makes up (a forgotten one). In
``invite`` mode,
``/vouch NICK`` (an identified user) lets NICK register.

Passwords are hashed with argon2 (argon2-cffi's default parameters; a hash made
with older parameters is redone at the next login) and never logged. Failed
logins are throttled per account and per address: after a few free failures
each one doubles the wait, and attempts meanwhile are refused with
``auth_throttled`` and ``retry_after``.

Settings (``[plugins.accounts]``):

* ``db``: the accounts file; by default beside the history database
  (``NAME.accounts.sqlite3`` for ``NAME.sqlite3``), in memory if history is. With the
  ``cluster`` plugin the accounts are the cluster's, in its Redis (``shared.py``).
* ``registration`` ("open"): ``open``, ``closed`` (nobody registers) or ``invite``
  (only nicks an identified user vouched for).
* ``grace`` (0): seconds a client may hold a registered nick before identifying;
  0 refuses the login instead.
* ``min_password`` (8): shortest password, in characters.
* ``free_failures`` (3): failed logins per account before delays begin.
* ``free_failures_per_address`` (10): the same, per client address.
* ``delay`` (1.0): seconds of the first delay; each further failure doubles it.
* ``max_delay`` (300): the longest delay, in seconds.
* ``hash_wait`` (10): seconds a password check waits for one of the four hashing
  slots before it is refused (``auth_throttled``): a crowd retries, not queues.
"""

from __future__ import annotations

import logging
import math
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chatkit import (
    CommandContext,
    CommandError,
    Config,
    Register,
    Reject,
    Server,
    Session,
    UsageError,
    address_key,
    check_settings,
    fold,
    hookimpl,
    number_setting,
    shown_skeleton,
    skeleton,
    valid_nick,
)
from chatkit.builtins.accounts.shared import SharedAccountStore
from chatkit.builtins.accounts.store import Account, AccountStore, Store, looks

__all__ = ["Accounts", "Throttle", "accounts_db"]

log = logging.getLogger(__name__)

MIN_PASSWORD = 8  # characters: NIST SP 800-63B's minimum for a chosen password
FREE_FAILURES = 3  # failed logins per account before delays: typos cost nothing
FREE_FAILURES_PER_ADDRESS = 10  # per address: a few accounts' worth of typos
DELAY = 1.0  # seconds of the first delay, doubled by each further failure
MAX_DELAY = 300.0  # seconds at most: 5 minutes, as a locked-out person can bear
FORGET_AFTER = 3600.0  # seconds after its last failure a counter is forgotten
MAX_TRACKED = 100_000  # counters kept at most: a flood of addresses cannot fill memory
MAX_CHECKS_PER_MINUTE = 60  # password checks (each an argon2 hash: ~50 ms of a core) per
# client address a minute, right passwords too, at once at most as many: a class logging in
# behind one NAT fits, and one client repeating a right password costs a core 5 % at most
MAX_REGISTRATIONS_PER_HOUR = 30  # accounts one client address registers an hour, at once
# at most as many: a class registering behind one NAT fits, one client cannot fill the file
HASH_WAIT = 10.0  # seconds a password check waits for a hashing slot before it is refused
# (auth_throttled): a crowd past what the cores hash meanwhile retries instead of queueing
MAX_HASHING = 4  # argon2 hashes computed at once (each takes 64 MiB and ~50 ms): a crowd of
# logins waits its turn instead of exhausting memory
GUEST_PREFIX = "Guest"
RESET_BYTES = 12  # random bytes of a password /resetpass makes (16 characters, 96 bits)
MAX_INVITES = 20  # invitations (/vouch) one account has open at once: each is a row kept until
# the nick registers
_CHANGED = (
    "the account changed while its password was checked (a new password, or dropped): try again"
)
_FREE = object()  # client.data["accounts"] from chatkit_allow_login: no account to check

SETTINGS = (
    "db",
    "registration",
    "grace",
    "min_password",
    "free_failures",
    "free_failures_per_address",
    "delay",
    "max_delay",
    "max_invites",
    "max_checks_per_minute",
    "max_registrations_per_hour",
    "hash_wait",
)


def accounts_db(config: Config) -> str | Path:
    """The accounts file: the ``db`` setting, else beside the history database."""
    return config.plugin_path("accounts", beside="accounts")


class Throttle:
    """Failed logins per key (an account, an address), with growing delays.

    ``free`` failures cost nothing; each further one makes the key wait ``delay``
    seconds, doubled per failure, at most ``max_delay``. Safe from any thread.
    """

    def __init__(self, free: int, delay: float, max_delay: float) -> None:
        self.free = free
        self.delay = delay
        self.max_delay = max_delay
        # Synchronize access to the counters: logins run on many reader threads.
        self._lock = threading.Lock()
        # key: (count, until, last, until before the last failure: what undo() restores)
        self._failures: dict[str, tuple[int, float, float, float]] = {}

    def wait(self, key: str, now: float) -> float:
        """Seconds ``key`` must still wait before its next attempt (0: none)."""
        with self._lock:
            entry = self._failures.get(key)
        return 0.0 if entry is None else max(0.0, entry[1] - now)

    def attempt(self, key: str, now: float) -> float:
        """Begin an attempt of ``key``: the seconds it must still wait (0: none), or, if
        it need not, count the attempt as a failure at once (:meth:`undo` it if it
        succeeds). One step under the lock, so that attempts at the same moment (many
        connections, each with a guess) cannot all pass before any has failed."""
        with self._lock:
            entry = self._failures.get(key)
            wait = 0.0 if entry is None else max(0.0, entry[1] - now)
            if wait == 0:
                self._fail(key, now)
            return wait

    def undo(self, key: str) -> None:
        """Take back the failure :meth:`attempt` counted (the attempt succeeded)."""
        with self._lock:
            entry = self._failures.get(key)
            if entry is None:
                return
            count, _until, last, before = entry
            if count <= 1:
                del self._failures[key]
            else:
                # The wait as it was: an attempt that succeeded, or was refused before
                # any password was checked, must not lengthen it (else one wrong guess
                # now and then would keep the owner waiting at max_delay for free).
                self._failures[key] = (count - 1, before, last, before)

    def fail(self, key: str, now: float) -> None:
        """Count a failure of ``key``."""
        with self._lock:
            self._fail(key, now)

    def _fail(self, key: str, now: float) -> None:
        assert self._lock.locked()
        count, before, last, _ = self._failures.get(key, (0, 0.0, now, 0.0))
        if now - last > FORGET_AFTER:
            count, before = 0, 0.0
        count += 1
        until = now
        if count > self.free:
            until = now + min(self.max_delay, self.delay * 2 ** min(count - self.free - 1, 60))
        if len(self._failures) >= MAX_TRACKED:
            self._forget(now)
        self._failures[key] = (count, until, now, before)

    def succeed(self, key: str) -> None:
        """Forget ``key``'s failures."""
        with self._lock:
            self._failures.pop(key, None)

    def _forget(self, now: float) -> None:
        assert self._lock.locked()
        for key, (_, until, last, _before) in list(self._failures.items()):
            if now - last > FORGET_AFTER or until <= now:
                del self._failures[key]
        while len(self._failures) >= MAX_TRACKED:  # all recent: forget the oldest
            del self._failures[next(iter(self._failures))]


class Budget:
    """Events per key (a client address) and ``period`` (seconds: a minute unless said),
    as a token bucket: ``per_minute`` at once at most, refilled at ``per_minute`` a
    period. Safe from any thread."""

    def __init__(self, per_minute: int, period: float = 60.0) -> None:
        self.per_minute = per_minute
        self.period = period
        # Synchronize access to the buckets: checks run on many reader threads.
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key: (tokens, when)

    def take(self, key: str, now: float) -> float:
        """Take one event for ``key``: 0 if it may happen now, else the seconds until
        it may (nothing is taken then)."""
        rate = self.per_minute / self.period
        with self._lock:
            tokens, when = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - when) * rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return (1 - tokens) / rate
            if len(self._buckets) >= MAX_TRACKED and key not in self._buckets:
                # Forget the full ones (as good as new), then the oldest.
                for old, (left, at) in list(self._buckets.items()):
                    if left + (now - at) * rate >= self.per_minute:
                        del self._buckets[old]
                while len(self._buckets) >= MAX_TRACKED:
                    del self._buckets[next(iter(self._buckets))]
            self._buckets[key] = (tokens - 1, now)
            return 0.0

    def give_back(self, key: str) -> None:
        """Undo a :meth:`take` of ``key`` (the event did not happen after all)."""
        with self._lock:
            found = self._buckets.get(key)
            if found is not None:
                tokens, when = found
                self._buckets[key] = (min(float(self.per_minute), tokens + 1), when)


class Accounts:
    """The ``accounts`` plugin; one instance per server, registered only when enabled."""

    def __init__(self) -> None:
        self.store: Store | None = None
        """The open store (after ``chatkit_configure``)."""
        self.registration = "open"
        """``open``, ``closed`` or ``invite``."""
        self.grace = 0.0
        """Seconds to identify for a registered nick taken without its password."""
        self.min_password = MIN_PASSWORD
        self.hasher = PasswordHasher()
        """argon2-cffi's hasher, with its default parameters."""
        self.by_account = Throttle(FREE_FAILURES, DELAY, MAX_DELAY)
        """Failed logins per account."""
        self.by_address = Throttle(FREE_FAILURES_PER_ADDRESS, DELAY, MAX_DELAY)
        """Failed logins per client address."""
        self.registrations = Budget(MAX_REGISTRATIONS_PER_HOUR, period=3600.0)
        """Accounts registered per client address (``max_registrations_per_hour``)."""
        # Bound the argon2 work in flight: each hash holds 64 MiB while it runs.
        self._hashing = threading.BoundedSemaphore(MAX_HASHING)
        self.ipv6_prefix = 64
        """Bits of an IPv6 address that count as one address (``[limits] ipv6_prefix``)."""
        self.hash_wait = HASH_WAIT
        """Seconds a password check waits for a hashing slot (``hash_wait``)."""
        self._server: Server | None = None
        # Guards _changes: /passwd and /drop count, every proof reads (one int).
        self._changes_lock = threading.Lock()
        self._changes = 0
        """How many times an account was given a new password or dropped here: a
        proof whose hash was read before a change (its password checked against
        the old hash) proves nothing after it (:meth:`_prove`). One count for all
        accounts, read once a login: a change elsewhere during a login's check
        only makes it try again."""

    def _changed(self) -> None:
        """An account got a new password, or was dropped: proofs in flight are void."""
        with self._changes_lock:
            self._changes += 1

    def _prove(self, client: Session, name: str, seen: int) -> bool:
        """Make ``client`` identified to account ``name``, whose password it proved
        (``seen``: :attr:`_changes` before its hash was read), unless an account
        changed since: a /passwd or /drop meanwhile, which let go of whoever it
        found identified (``hub.forget_account``), must not miss this one."""
        client.account = name
        client.data["accounts.proof"] = seen
        if self._changes == seen:
            return True
        client.account = None
        return False

    # -- startup and shutdown ------------------------------------------------------

    # After history's: a bad history database is reported as history's problem.
    @hookimpl
    def chatkit_check_config(self, config: Config) -> None:
        self._read(config)

    @hookimpl(trylast=True)
    def chatkit_configure(self, config: Config) -> None:
        self._read(config)
        self.store = AccountStore(accounts_db(config))
        log.info("accounts in %s", self.store.path)

    def _read(self, config: Config) -> None:
        """Read and check the settings (opens nothing: ``chatkit check`` calls it too)."""
        settings = config.plugin_settings("accounts")
        check_settings("accounts", settings, SETTINGS)
        accounts_db(config)  # (a db that is no file name: UsageError)
        registration = settings.get("registration", "open")
        if registration not in ("open", "closed", "invite"):
            raise UsageError(
                f"accounts: registration must be 'open', 'closed' or 'invite', not {registration!r}"
            )
        self.registration = registration
        self.grace = number_setting("accounts", settings, "grace", 0, 0)
        self.min_password = int(
            number_setting("accounts", settings, "min_password", MIN_PASSWORD, 1)
        )
        delay = number_setting("accounts", settings, "delay", DELAY, 0.001)
        max_delay = number_setting("accounts", settings, "max_delay", MAX_DELAY, delay)
        free = int(number_setting("accounts", settings, "free_failures", FREE_FAILURES, 0))
        per_address = number_setting(
            "accounts", settings, "free_failures_per_address", FREE_FAILURES_PER_ADDRESS, 0
        )
        self.max_invites = int(number_setting("accounts", settings, "max_invites", MAX_INVITES, 1))
        self.checks = Budget(
            int(
                number_setting(
                    "accounts", settings, "max_checks_per_minute", MAX_CHECKS_PER_MINUTE, 1
                )
            )
        )
        registrations = number_setting(
            "accounts", settings, "max_registrations_per_hour", MAX_REGISTRATIONS_PER_HOUR, 1
        )
        self.registrations = Budget(int(registrations), period=3600.0)
        self.by_account = Throttle(free, delay, max_delay)
        self.by_address = Throttle(int(per_address), delay, max_delay)
        self.ipv6_prefix = config.limits.ipv6_prefix
        self.hash_wait = number_setting("accounts", settings, "hash_wait", HASH_WAIT, 0.001)

    @hookimpl
    def chatkit_server_start(self, server: Server) -> None:
        self._server = server
        # In a cluster the accounts are the cluster's, in its Redis (accounts/shared.py).
        cluster = server.pluginmanager.get_plugin("cluster")
        client = getattr(cluster, "redis", None)
        if cluster is not None and client is not None and isinstance(self.store, AccountStore):
            self.store = SharedAccountStore(client, str(cluster.prefix), self.store)
            log.info("accounts in %s", self.store.path)

    @hookimpl
    def chatkit_server_stop(self, server: Server) -> None:
        if self.store is not None:
            self.store.close()

    @property
    def _store(self) -> Store:
        if self.store is None:
            raise RuntimeError("the accounts plugin is not configured")
        return self.store

    # -- checking passwords ----------------------------------------------------------

    def check(self, client: Session, account: Account, password: str) -> Reject | None:
        """Check ``password`` for ``account``, throttled; ``None`` if it is right."""
        now = time.monotonic()
        address = f"address {self._address(client)}"
        name = f"account {account.name}"
        # Each attempt counts as a failure from its start (the throttles' attempt()),
        # undone if the password is right.
        wait = self.by_account.attempt(name, now)
        if wait == 0:
            wait = self.by_address.attempt(address, now)
            if wait > 0:
                self.by_account.undo(name)
        if wait > 0:
            retry = math.ceil(wait * 1000) / 1000
            return Reject(
                f"too many failed logins: wait {retry:.3g} s",
                "auth_throttled",
                {"retry_after": retry},
            )
        # Only an attempt that will be hashed takes from the address's budget.
        refused = self._budget(client, now)
        if refused is not None:
            self.by_account.undo(name)
            self.by_address.undo(address)
            return refused
        if not self._hashing.acquire(timeout=self.hash_wait):
            self.by_account.undo(name)
            self.by_address.undo(address)
            return _busy()
        try:
            self.hasher.verify(account.hash, password)
        except (VerificationError, InvalidHashError):
            log.info("failed login for account %s from %s", account.nick, client.address[0])
            return Reject(f"wrong password for {account.nick}", "bad_password")
        finally:
            self._hashing.release()
        self.by_account.succeed(name)
        self.by_address.undo(address)
        if self.hasher.check_needs_rehash(account.hash):
            # Only over the hash just checked: a /passwd (or a /drop and a new account)
            # meanwhile wins. The store may be unreachable or unwritable (the cluster's
            # Redis, a full disk): then it is rehashed at a later login, and this one
            # goes on.
            try:
                self._store.set_hash(account.name, self._hash(password), old=account.hash)
            except (CommandError, sqlite3.Error) as exc:
                log.warning("accounts: could not rehash %s's password: %s", account.nick, exc)
        return None

    def _address(self, client: Session) -> str:
        """What ``client``'s address counts as (an IPv6 client's network: ``ipv6_prefix``)."""
        # (The server's, as it is now: a reload changes it without restarting accounts.)
        server = self._server
        prefix = self.ipv6_prefix if server is None else server.config.limits.ipv6_prefix
        return address_key(client.address[0], prefix)

    def _budget(self, client: Session, now: float) -> Reject | None:
        """``auth_throttled`` if ``client``'s address has used up its password checks
        for now (``max_checks_per_minute``), right passwords included."""
        wait = self.checks.take(self._address(client), now)
        if wait == 0:
            return None
        retry = math.ceil(wait * 1000) / 1000
        return Reject(
            f"too many password checks from your address: wait {retry:.3g} s",
            "auth_throttled",
            {"retry_after": retry},
        )

    @staticmethod
    def _is_registered(nick: str, account: Account) -> str:
        """Says that ``nick`` is ``account``'s, or looks like it."""
        if fold(nick) == account.name:
            return f"{nick} is registered"
        return f"{nick} looks like {account.nick}, which is registered"

    @classmethod
    def _taken(cls, nick: str, account: Account) -> str:
        """The words of a refusal to register ``nick``, ``account``'s or a look-alike."""
        if fold(nick) == account.name:
            return f"{nick} is already registered"
        return cls._is_registered(nick, account)

    def _hash(self, password: str) -> str:
        """The argon2 hash of ``password``; ``auth_throttled`` if no hashing slot frees
        within ``hash_wait``."""
        if not self._hashing.acquire(timeout=self.hash_wait):
            busy = _busy()
            raise CommandError(busy.reason, busy.code, **busy.details)
        try:
            return self.hasher.hash(password)
        finally:
            self._hashing.release()

    def _registered(self, nick: str) -> Account | None:
        """The account of ``nick``: registered as it is, or as a nick it looks like
        (``ALICE``, or ``alice`` spelled with a Cyrillic a, are ``alice``'s; and so is
        ``aIice``, a capital I for the l, which looks like it only as shown)."""
        found = self._store.find(nick)  # (the SQLite store: by both keys of its look)
        if found is None and not isinstance(self._store, AccountStore):
            # A cluster's store (Redis) keeps one key of a look (skeleton: case folded,
            # so aIice's is aiice's): the nick as shown (aIice reads alice) is looked up
            # as a nick of its own. (There, a registered aIice is not found from an
            # alice: see docs/cluster.md.)
            shown = shown_skeleton(nick)
            if skeleton(shown) != skeleton(nick):
                found = self._store.find(shown)
        return found

    @hookimpl
    def chatkit_authenticate(
        self, client: Session, account: str, password: str
    ) -> bool | Reject | None:
        seen = self._changes
        found = self._registered(account)
        if found is None:
            return Reject(f"no account {account!r}", "bad_password")
        refused = self.check(client, found, password)
        if refused is not None:
            return refused
        if not self._prove(client, found.name, seen):
            return Reject(_CHANGED, "bad_password")
        return True

    @hookimpl(tryfirst=True)  # so that the others (a ban's) see the account it proves
    def chatkit_allow_login(
        self, client: Session, nick: str, fields: dict[str, Any]
    ) -> Reject | None:
        # What an earlier, refused attempt (nick_taken...) told chatkit_on_login is void.
        client.data.pop("accounts", None)
        proof = client.data.get("accounts.proof")
        if client.account is not None and proof is not None and proof != self._changes:
            # Proven here before the login (IRC SASL), and an account changed since: it
            # may be this one (dropped, or given a new password). Proven again, or not.
            client.account = None
        seen = self._changes
        account = self._registered(nick)
        if account is None or client.account == account.name:
            # chatkit_on_login has nothing to do for this nick: it need not look it
            # up again (a look-up is about a twentieth of a whole login's CPU).
            client.data["accounts"] = _FREE
            if account is not None:  # proven before the login (SASL): the nick is its
                self._regain(account, client, "logged in with its password")
            return None
        password = fields.get("password")
        if password is None:
            if self.grace:
                return None  # chatkit_on_login starts the clock
            return Reject(
                f"{self._is_registered(nick, account)}: log in with its password, "
                "or take another nick",
                "nick_registered",
            )
        if not isinstance(password, str):
            return Reject("hello: 'password' must be a string", "bad_frame")
        refused = self.check(client, account, password)
        if refused is None:
            # Proven: the session's now, so that later hooks of the login (a ban's
            # chatkit_allow_login and chatkit_allow_join) see it; the hub takes it
            # back if the login is refused after all (nick_taken...).
            if not self._prove(client, account.name, seen):
                return Reject(_CHANGED, "bad_password")
            client.data["accounts"] = account.name  # chatkit_on_login need not look
            self._regain(account, client, "logged in with its password")
        return refused

    def _regain(self, account: Account, client: Session, how: str) -> None:
        """The nick is the account's, proven by a login: one holding it unidentified (a
        grace period, or its account's password changed since), or a session of the
        account's own that dropped, gives it up, rather than refuse the owner
        (nick_taken)."""
        if self._server is None:
            return
        try:
            self._evict(self._server.hub, account.nick, account.name, client, how)
        except CommandError as exc:  # (the login goes on: nick_taken, if still held)
            log.info("could not rename the holder of %s: %s", account.nick, exc.text)
        self._evict_elsewhere(account, how, regain=True, claim=client)

    def _evict_elsewhere(
        self, account: Account, how: str, *, regain: bool, claim: Session | None = None
    ) -> None:
        """In a cluster, have the other nodes do :meth:`_evict` for ``account``'s nick
        (the ``cluster`` plugin's ``take_over``): at once, or, with ``claim``, if its
        coming claim of the nick finds it held on another node (docs/cluster.md)."""
        cluster = None if self._server is None else self._server.pluginmanager.get_plugin("cluster")
        take_over = getattr(cluster, "take_over", None)
        if take_over is not None:
            take_over(account.nick, account.name, how, regain=regain, claim=claim)

    def changed_elsewhere(self, account: str) -> None:
        """Another node of a cluster gave ``account`` a new password or dropped it (the
        ``cluster`` plugin, on its reader's thread): read it again, so that what this
        node would copy back to a Redis that lost its data is the account as it is now,
        not the password it had (a leaked one, replaced with ``/resetpass``)."""
        refresh = getattr(self.store, "refresh", None)  # (the cluster's store: it caches)
        if refresh is not None:
            refresh(account)

    def evict_here(self, nick: str, account: str, how: str, *, regain: bool) -> None:
        """:meth:`_evict` asked for by another node of a cluster (the ``cluster``
        plugin, on its reader's thread): a login or ``/regain`` there proved
        ``account``, whose nick is ``nick``, and a session here may hold it."""
        if self._server is None:
            return
        try:
            self._evict(self._server.hub, nick, account, None, how, regain=regain)
        except CommandError as exc:
            log.info("could not rename the holder of %s: %s", nick, exc.text)

    @hookimpl
    def chatkit_on_login(self, client: Session) -> None:
        proven = client.data.pop("accounts", None)
        if proven is _FREE:
            return  # not registered (or its owner's): chatkit_allow_login looked
        if proven is not None:
            client.account = proven
            return
        account = self._registered(client.nick or "")
        if account is None or client.account == account.name:
            return
        client.notice(
            f"{client.nick} is registered: /identify PASSWORD within {self.grace:g} s, "
            "or you will be renamed"
        )
        timer = threading.Timer(self.grace, self._expire, (client, account))
        timer.daemon = True
        timer.start()

    def _expire(self, client: Session, account: Account) -> None:
        """The grace is over (a timer thread): rename a client still holding
        ``account``'s nick (or a look-alike of it) unidentified."""
        if client.nick is None or client.account == account.name:
            return
        if not _looks_like(client.nick, account.nick):
            return
        if self._server is None or self._server.hub.find(client.nick) is not client:
            return
        try:
            self._server.hub.rename(client, f"{GUEST_PREFIX}{client.id}", forced=True)
        except CommandError as exc:
            if exc.code != "not_logged_in":  # (it left meanwhile: nothing to do)
                log.warning("could not rename %s after its grace", client.nick, exc_info=True)

    @hookimpl
    def chatkit_allow_nick(self, client: Session, nick: str) -> Reject | None:
        account = self._registered(nick)
        if account is None or client.account == account.name:
            return None
        return Reject(
            f"{self._is_registered(nick, account)}: /identify {account.nick} PASSWORD to take it",
            "nick_registered",
        )

    # -- commands ----------------------------------------------------------------------

    @hookimpl
    def chatkit_register_commands(self, register: Register) -> None:
        register("register", self.register, help="register your nick", usage="PASSWORD [EMAIL]")
        register(
            "identify",
            self.identify,
            help="prove you own a registered nick (and take it)",
            usage="[NICK] PASSWORD",
        )
        register(
            "regain",
            self.regain,
            help="take your registered nick back, from another session of yours too",
            usage="NICK PASSWORD",
        )
        register("logout", self.logout, help="forget that you identified")
        register("passwd", self.passwd, help="change your password", usage="OLD NEW")
        register("drop", self.drop, help="delete your account", usage="PASSWORD")
        register(
            "resetpass",
            self.resetpass,
            help="give NICK's account a new password, shown to you (server operators)",
            usage="NICK",
        )
        register(
            "vouch", self.vouch, help="let NICK register (invite-only registration)", usage="NICK"
        )

    def register(self, ctx: CommandContext) -> None:
        words = ctx.args.split()
        if not 1 <= len(words) <= 2:
            raise ctx.usage_error()
        nick = ctx.client.nick or ""
        name = fold(nick)
        if self.registration == "closed":
            raise CommandError("registration is closed on this server", "registration_closed")
        if self.registration == "invite" and not self._store.invited(name):
            raise CommandError(
                f"registration is by invitation: ask a registered user to /vouch {nick}",
                "not_invited",
            )
        password = words[0]
        if len(password) < self.min_password:
            raise CommandError(
                f"password too short: at least {self.min_password} characters", "bad_password"
            )
        email = words[1] if len(words) == 2 else None
        if email is not None and ("@" not in email or len(email) > 254):
            raise CommandError(f"not an email address: {email!r}", "bad_usage")
        existing = self._registered(nick)
        if existing is not None:
            raise CommandError(self._taken(nick, existing), "nick_registered")
        now = time.monotonic()
        address = self._address(ctx.client)
        wait = self.registrations.take(address, now)
        if wait:
            retry = math.ceil(wait)
            raise CommandError(
                f"too many accounts registered from your address (max_registrations_per_hour):"
                f" wait {retry} s",
                "auth_throttled",
                retry_after=retry,
            )
        try:
            refused = self._budget(ctx.client, now)  # hashing it is a check's cost
            if refused is not None:
                raise CommandError(refused.reason, refused.code, **refused.details)
            if not self._store.create(Account(name, nick, self._hash(password), email)):
                raise CommandError(f"{nick} is already registered", "nick_registered")
        except BaseException:
            self.registrations.give_back(address)  # (only a registration counts)
            raise
        ctx.client.account = name
        log.info("%s registered", nick)
        ctx.reply(f"{nick} is registered to you; identified", account=nick)

    def regain(self, ctx: CommandContext) -> None:
        """``/regain NICK PASSWORD``: ``/identify NICK PASSWORD`` that takes the nick from
        another session of the account's own too (a connection that dropped and has not
        timed out yet), as services' REGAIN does."""
        if len(ctx.args.split()) != 2:
            raise ctx.usage_error()
        self.identify(ctx, regain=True)

    def identify(self, ctx: CommandContext, *, regain: bool = False) -> None:
        words = ctx.args.split()
        if not 1 <= len(words) <= 2:
            raise ctx.usage_error()
        client = ctx.client
        nick = words[0] if len(words) == 2 else client.nick or ""
        seen = self._changes
        account = self._registered(nick)
        if account is None:
            raise CommandError(f"{nick} is not registered", "no_account")
        refused = self.check(client, account, words[-1])
        if refused is not None:
            raise CommandError(refused.reason, refused.code, **refused.details)
        if not self._prove(client, account.name, seen):
            raise CommandError(_CHANGED, "bad_password")
        done = f"you are identified as {account.nick}"
        if client.nick is not None and fold(client.nick) != account.name:
            try:
                # A holder on another node gives way if the claim of the nick (the
                # cluster's part of allow_nick, after the others allowed it) finds it there.
                self._evict_elsewhere(account, "identified", regain=regain, claim=client)
                # Not out of a ban or a mute under the nick it has (moderation).
                ctx.hub.allow_nick(client, account.nick)
                self._evict(
                    ctx.hub, account.nick, account.name, client, "identified", regain=regain
                )
                ctx.hub.rename(client, account.nick, forced=True)
            except CommandError as exc:
                # Identified all the same (the nick may be refused: a ban of it, a mute).
                done += f"; you keep the nick {client.nick}: {exc.text}"
        ctx.reply(done, account=account.nick)

    @staticmethod
    def _evict(
        hub: Any, nick: str, account: str, client: Session | None, how: str, *, regain: bool = True
    ) -> None:
        """Rename to a guest nick whoever here holds ``nick``, ``account``'s, or one that
        looks like it, without being identified as it (a grace period; a session whose
        account's password changed); with ``regain``, another session of the account's
        own too (a connection that dropped and has not timed out yet: services' REGAIN).
        ``client`` proved the account (``how``) and asks for the nick: a login with the
        password, ``/regain``; an ``/identify`` leaves the account's other sessions their
        nicks (``None``: another node's client, :meth:`evict_here`). Raises the rename's
        :class:`CommandError`, but for a holder that left meanwhile."""
        holder = hub.find_like(nick)  # (every password login asks: one look-up)
        if holder is None or holder is client or (holder.account == account and not regain):
            return
        mine = holder.account in (None, account)
        if not mine and skeleton(holder.nick or "") != skeleton(nick):
            return  # like it as shown only (aIice), another account's nick: the hub refuses
        holder.notice(f"{nick} {how}: you are renamed")
        try:
            hub.rename(holder, f"{GUEST_PREFIX}{holder.id}", forced=True)
        except CommandError as exc:
            if exc.code != "not_logged_in":
                raise  # (it left meanwhile: the nick is free)

    def logout(self, ctx: CommandContext) -> None:
        if ctx.client.account is None:
            raise CommandError("you are not identified", "not_identified")
        ctx.client.account = None
        ctx.reply("you are no longer identified")

    def _own(self, ctx: CommandContext) -> Account:
        name = ctx.client.account
        account = None if name is None else self._store.get(name)
        if account is None:
            raise CommandError("identify first: /identify PASSWORD", "not_identified")
        return account

    def passwd(self, ctx: CommandContext) -> None:
        words = ctx.args.split()
        if len(words) != 2:
            raise ctx.usage_error()
        account = self._own(ctx)
        refused = self.check(ctx.client, account, words[0])
        if refused is not None:
            raise CommandError(refused.reason, refused.code, **refused.details)
        if len(words[1]) < self.min_password:
            raise CommandError(
                f"password too short: at least {self.min_password} characters", "bad_password"
            )
        self._store.set_hash(account.name, self._hash(words[1]))
        self._changed()
        log.info("%s changed its password", account.nick)
        # Whoever else is identified with the old password is not with the new one.
        others = ctx.hub.forget_account(account.name, "given a new password", keep=ctx.client)
        # And one of them holding the account's nick gives it up (it would keep it
        # unidentified for as long as it stays, reading what is sent to the nick).
        self._evict(ctx.hub, account.nick, account.name, ctx.client, "was given a new password")
        self._evict_elsewhere(account, "was given a new password", regain=True)
        ctx.reply(
            "password changed"
            + (f"; {others} other session(s) no longer identified" if others else "")
        )

    def _server_operator(self, client: Session) -> bool:
        """Whether ``client`` is a server operator: by its face (IRC's ``OPER``), or to
        the ``moderation`` plugin, which names them (``server_operators``)."""
        if client.operator:
            return True
        moderation = (
            None if self._server is None else self._server.pluginmanager.get_plugin("moderation")
        )
        is_server_operator = getattr(moderation, "is_server_operator", None)
        return bool(is_server_operator is not None and is_server_operator(client))

    def resetpass(self, ctx: CommandContext) -> None:
        # A forgotten password: a server operator gives the account a new one, made up
        # here and shown to the operator only, to pass on (the owner /passwd-s it).
        words = ctx.args.split()
        if len(words) != 1:
            raise ctx.usage_error()
        if not self._server_operator(ctx.client):
            raise CommandError("only server operators may do that", "not_server_operator")
        account = self._store.get(fold(words[0]))
        if account is None:
            raise CommandError(f"{words[0]} is not registered", "no_account")
        password = secrets.token_urlsafe(max(RESET_BYTES, self.min_password))
        self._store.set_hash(account.name, self._hash(password))
        self._changed()
        by = ctx.client.nick or ""
        log.info("%s's password was reset by %s", account.nick, by)
        why = "given a new password by a server operator (ask them for it)"
        others = ctx.hub.forget_account(account.name, why, keep=ctx.client)
        self._evict(ctx.hub, account.nick, account.name, ctx.client, "was given a new password")
        self._evict_elsewhere(account, "was given a new password", regain=True)
        ctx.reply(
            f"{account.nick}'s new password is {password} (tell them; /passwd changes it)"
            + (f"; {others} session(s) no longer identified" if others else ""),
            nick=account.nick,
            password=password,
        )

    def drop(self, ctx: CommandContext) -> None:
        words = ctx.args.split()
        if len(words) != 1:
            raise ctx.usage_error()
        account = self._own(ctx)
        refused = self.check(ctx.client, account, words[0])
        if refused is not None:
            raise CommandError(refused.reason, refused.code, **refused.details)
        self._store.delete(account.name)
        self._changed()
        ctx.client.account = None
        log.info("account %s dropped", account.nick)
        # Its private history and operator rights are not the next registrant's.
        ctx.hub.account_deleted(account.name)
        ctx.reply(f"account {account.nick} deleted")

    def vouch(self, ctx: CommandContext) -> None:
        nick = ctx.args.strip()
        if not nick or " " in nick:
            raise ctx.usage_error()
        if self.registration != "invite":
            raise CommandError(
                f"registration is {self.registration} here: /vouch is for registration = invite",
                "bad_usage",
            )
        problem = valid_nick(nick, ctx.hub.config.limits.max_nick)
        if problem:
            raise CommandError(f"bad nick {nick!r}: {problem}", "bad_nick")
        account = self._own(ctx)
        existing = self._registered(nick)
        if existing is not None:
            raise CommandError(self._taken(nick, existing), "nick_registered")
        if self._store.invites_by(account.name) >= self.max_invites:
            raise CommandError(
                f"you have {self.max_invites} invitations open, the most one account may "
                "(max_invites); they are used up as the nicks register",
                "too_many_invites",
            )
        self._store.invite(fold(nick), account.name)
        ctx.reply(f"{nick} may register now")


def _looks_like(nick: str, other: str) -> bool:
    """Whether ``nick`` looks like ``other`` as the store compares them (a key of one
    is a key of the other: :func:`~chatkit.builtins.accounts.store.looks`; ``aIice``
    and ``alice``)."""
    return not set(looks(nick)).isdisjoint(looks(other))


def _busy() -> Reject:
    """The refusal of a password check that found no hashing slot in time."""
    return Reject(
        "the server is busy checking passwords: try again in a moment",
        "auth_throttled",
        {"retry_after": 1.0},
    )
