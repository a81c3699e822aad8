"""Moderation: room operators, kicks, bans and mutes; server operators. Off by default.

A room's operators are the first to join it while it has none, and the accounts named
in ``operators``. An operator that identified (the ``accounts`` plugin) stays one
across restarts; one that did not, for as long as it is connected. Operators may
``/op NICK`` and ``/deop NICK``, ``/kick NICK [REASON]``, ``/ban MASK`` and
``/unban MASK``, ``/mute NICK`` and ``/unmute NICK``, each in the current room or in
the room named first (``/kick #den bob``: so IRC's ``KICK #den bob :reason`` works as
it is); every action is announced in the room and logged. Server operators (the
accounts named in ``server_operators``, and IRC users who gave ``OPER`` a name and password
of ``[faces.irc.operators]``) are operators of every room and may
``/kill NICK [REASON]`` (disconnect), ``/gline MASK`` and ``/ungline MASK`` (a ban from
the whole server: matching clients are disconnected and cannot log in; ``/gline`` alone
lists them) and ``/wall TEXT``
(a notice to everyone), and ``/reload`` (what SIGHUP does: the config file read again
and applied, with nobody disconnected; the reply says what changed).

``/invite NICK`` tells NICK of a room the inviter is in; it lets NICK into a room made
invite-only with ``/inviteonly on`` (``invite_only``), where only operators invite;
``/lock`` lets only identified clients speak (``room_locked``); ``/moderated on`` only
operators (``moderated``); ``/topicops on`` lets only operators
set the topic (``not_room_operator``). A ``modes`` request (``{"type": "modes",
"room": "#den"}``) answers with the room's settings (a ``modes`` frame: ``flags``,
``bans``), which the IRC face shows as ``324`` and the ban list.

Topics are kept too (``chatkit_on_topic``): a room's topic comes back
(``hub.restore_topic``) when someone joins it after a restart or after it emptied.

A mask is ``NICK!ACCOUNT@ADDRESS`` with ``*`` and ``?`` wildcards, compared ignoring
case; a bare nick is ``NICK!*@*`` (``/ban *!*@203.0.113.*``, ``/ban *!mallory@*``). A
banned client cannot join (``banned``); a muted one cannot speak in the room
(``muted``). Bans, mutes and identified operators are kept in SQLite (``store.py``) and
survive a restart; in a cluster they are the cluster's, in its Redis (``shared.py``), and
what operators do reaches every node's members.

Settings (``[plugins.moderation]``): ``db`` (default: beside the history database,
``NAME.moderation.sqlite3``; in memory if history is), ``operators`` (a table: room
to a list of accounts), ``server_operators`` (a list of accounts), ``max_masks``,
``invite_hours`` (how long an unused invitation holds: 24).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from datetime import UTC, datetime
from typing import Any

from chatkit import (
    SHOWN_HOST,
    CommandContext,
    CommandError,
    Config,
    Drop,
    Frame,
    Hello,
    Message,
    Register,
    Reject,
    Request,
    Say,
    Server,
    Session,
    UsageError,
    check_settings,
    fold,
    hookimpl,
    number_setting,
    room_name,
    shown_skeleton,
    skeleton,
    valid_nick,
    valid_room,
    wildcard_match,
)
from chatkit.builtins.moderation.shared import SharedModerationStore
from chatkit.builtins.moderation.store import CACHE_ENTRIES, FIRST_CLAIM, ModerationStore, Store

__all__ = ["CACHE_ENTRIES", "Moderation", "ModerationStore", "matches"]

log = logging.getLogger(__name__)

SETTINGS = ("db", "invite_hours", "max_masks", "operators", "server_operators")
INVITE_HOURS = 24.0  # hours an /invite into an invite-only room lets its nick in, unused: the
# invitation is a nick's, and whoever takes an unregistered nick later is not the one invited.
MAX_MASKS = 100  # bans, and mutes, a room keeps at most (IRC's MAXLIST; Libera's is 100 too):
# each is matched against every join (bans) or message (mutes) in the room.
_CONNECTION_OPS = "moderation"  # client.data: room key -> when the room it operates was created
_CLAIMS = "moderation.claims"  # client.data: room key -> when it claimed to be its first member
_PASSED = "moderation.passed"  # client.data: (room key, text) of the line just let speak
_ACCOUNT = "moderation.account"  # client.data: the account its rooms last saw it with
_PROVEN = "moderation.proven"  # client.data: a tuple of the accounts the connection proved
SERVER = "*"  # the "room" of server-wide bans (/gline) in the bans table

# A server to the config's operators of its moderation plugin that started last
# ((operators, server_operators)): the instance a reload starts tells rooms whom the new
# config made, or unmade, operators. (Written and read by chatkit_server_start, on the
# thread that starts or reloads the server: reloads take turns, Server._reload_lock.)
_CONFIGURED: weakref.WeakKeyDictionary[Server, tuple[dict[str, set[str]], set[str]]] = (
    weakref.WeakKeyDictionary()
)

FLAG_NAMES = {
    "invite": "invite_only",
    "moderated": "moderated",
    "topic": "topic_ops",
    "lock": "locked",
}
"""A room flag in the table, and its name in a ``modes`` frame."""


def matches(mask: str, client: Session) -> bool:
    """Whether ``client`` matches ``mask`` (``NICK!ACCOUNT@ADDRESS``, wildcards), or the
    ``NICK!NICK@chatkit`` everyone sees of it (the mask an IRC client's ``/ban`` builds).

    Nicks compare by their look (``chatkit.skeleton``), as the chat tells nicks apart:
    a ban of ``bobby`` holds for ``bobby`` written with a Greek omicron too.

    A mask naming an account holds for a connection that proved the account as long as
    it stays connected, identified or not: ``/logout`` (or ``/identify`` as another
    account) does not lift a ban or a mute set on it."""
    nick, address = client.nick or "", client.address[0]
    if matches_who(mask, nick, client.account, address):
        return True
    proven: tuple[str, ...] = client.data.get(_PROVEN, ())
    return any(matches_who(mask, nick, account, address) for account in proven)


def _proven(client: Session) -> None:
    """Remember that ``client`` proved its account (see :func:`matches`)."""
    account = client.account
    proven: tuple[str, ...] = client.data.get(_PROVEN, ())
    if account is not None and account not in proven:
        # (A new tuple, assigned at once: another thread's matches() may be reading it.)
        client.data[_PROVEN] = (*proven, account)


def matches_who(mask: str, nick: str, account: str | None, address: str) -> bool:
    """:func:`matches` for a client about to have ``nick`` and ``account`` (a login).
    ``*`` and ``?`` are the only wildcards (``[`` and ``]`` are a nick's characters,
    as on IRC); an IPv4 client of a listener on ``::`` matches by its IPv4 address."""
    shown_nick, shown_mask = nick, mask.partition("!")[0]
    nick, pattern, account = fold(nick), fold(mask), account or ""
    address = _plain_address(address)
    # (wildcard_match, not a regular expression: a mask of *a*a*a... would backtrack
    # for seconds on every join and message of the room, holding the GIL.)
    if wildcard_match(pattern, f"{nick}!{account}@{address}"):
        return True
    if wildcard_match(pattern, f"{nick}!{nick}@{SHOWN_HOST}"):
        return True
    # Nicks that look alike, as the hub and the accounts take them: a key of one is a
    # key of the other, the skeleton or the look (a capital I read as an l: aIice is
    # alice, which the skeleton, lowercasing first, makes aiice).
    # (A mask with wildcards goes by the skeleton alone: its capital I read as an l,
    # /ban Ia* would be /ban la*, every lambda and Larry.)
    mask_nick, bang, rest = pattern.partition("!")
    exact = not _WILDCARD_CHARS.intersection(shown_mask)
    for looks in {_skeleton(nick), _look(shown_nick)} if exact else {_skeleton(nick)}:
        for like_nick in (
            {_skeleton(mask_nick), _look(shown_mask)} if exact else {_skeleton(mask_nick)}
        ):
            like = like_nick + bang + rest
            if wildcard_match(like, f"{looks}!{account}@{address}") or wildcard_match(
                like, f"{looks}!{looks}@{SHOWN_HOST}"
            ):
                return True
    return False


# Two people with nothing in common: a mask that matches both matches everyone.
_STRANGERS = (("qzxjv", None, "198.51.100.7"), ("wkpyb", "wkpyb", "2001:db8::2a"))


def matches_everyone(mask: str) -> bool:
    """Whether ``mask`` would match anyone at all: ``*!*@*``, or ``*!*@chatkit`` (the
    mask an IRC client's host ban builds, every user being shown at that host)."""
    return all(matches_who(mask, *stranger) for stranger in _STRANGERS)


def _refuse_everyone(mask: str) -> None:
    if matches_everyone(mask):
        raise CommandError(
            f"{mask} matches everyone (each user shows as NICK!NICK@{SHOWN_HOST}): name a "
            "nick (bob), an account (*!bob@*) or an address (*!*@203.0.113.*)",
            "bad_usage",
        )


def _plain_address(address: str) -> str:
    """``address`` as masks name it: an IPv4-mapped IPv6 address as its IPv4 one."""
    if address.startswith("::ffff:") and "." in address:
        return address[7:]
    return address


# Skeletons are dear (three Unicode normalizations): every message in a room with
# mutes matches its sender against each mask.
_skeleton = functools.lru_cache(maxsize=4096)(skeleton)
_WILDCARD_CHARS = frozenset("*?")


@functools.lru_cache(maxsize=4096)
def _look(nick: str) -> str:
    """``nick``'s second look-alike key (the accounts' ``look``): its skeleton once a
    capital ``I`` is an ``l``."""
    return skeleton(shown_skeleton(nick))


def full_mask(mask: str) -> str:
    """``mask`` completed as IRC servers complete it: a bare nick is ``NICK!*@*``,
    ``NICK!USER`` is ``NICK!USER@*``, ``USER@HOST`` is ``*!USER@HOST``."""
    if "!" not in mask and "@" not in mask:
        return f"{mask}!*@*"
    if "@" not in mask:
        return f"{mask}@*"
    if "!" not in mask:
        return f"*!{mask}"
    return mask


class Moderation:
    """The ``moderation`` plugin; one instance per server, registered only when enabled."""

    def __init__(self) -> None:
        self.store: Store | None = None
        self.operators: dict[str, set[str]] = {}
        """Room (folded) to the accounts named in ``operators``."""
        self.server_operators: set[str] = set()
        """Accounts named in ``server_operators``."""
        self.max_masks = MAX_MASKS
        """Bans a room keeps at most, and mutes (``max_masks``)."""
        # Serializes the writers of a connection's operator rooms (_CONNECTION_OPS in
        # client.data, replaced whole): its reader and another's /op or /deop. Held for
        # a dict copy only; readers take no lock (they read one reference).
        self._ops_lock = threading.Lock()
        self.invite_hours = INVITE_HOURS
        """Hours an invitation lets its nick in, unused (``invite_hours``)."""
        self._server: Server | None = None  # set at chatkit_server_start

    @hookimpl
    def chatkit_check_config(self, config: Config) -> None:
        self._read(config)

    @hookimpl(trylast=True)
    def chatkit_configure(self, config: Config) -> None:
        self._read(config)
        self.store = ModerationStore(config.plugin_path("moderation", beside="moderation"))

    def _read(self, config: Config) -> None:
        """Read and check the settings (opens nothing: ``chatkit check`` calls it too)."""
        settings = config.plugin_settings("moderation")
        check_settings("moderation", settings, SETTINGS)
        config.plugin_path("moderation", beside="moderation")  # (a db that is no file name)
        operators = settings.get("operators", {})
        if not isinstance(operators, dict) or not all(
            isinstance(v, list) and all(isinstance(a, str) for a in v) for v in operators.values()
        ):
            raise UsageError("moderation: operators must be a table of room = [accounts]")
        limits = config.limits
        for room in operators:
            # (As default_room and /join take it: "ops" is "#ops".)
            problem = valid_room(room_name(room), limits.max_room)
            if problem:
                raise UsageError(f"moderation: operators names a bad room {room!r}: {problem}")
        self.operators = {fold(room_name(r)): {fold(a) for a in v} for r, v in operators.items()}
        server_ops = settings.get("server_operators", [])
        if not isinstance(server_ops, list) or not all(isinstance(a, str) for a in server_ops):
            raise UsageError("moderation: server_operators must be a list of accounts")
        named = [*server_ops, *(a for v in operators.values() for a in v)]
        for account in named:
            problem = valid_nick(account, limits.max_nick)
            if problem:
                raise UsageError(f"moderation: {account!r} is no account's name: {problem}")
        self.server_operators = {fold(a) for a in server_ops}
        self.max_masks = int(number_setting("moderation", settings, "max_masks", MAX_MASKS, 1))
        self.invite_hours = number_setting(
            "moderation", settings, "invite_hours", INVITE_HOURS, 0.0001
        )

    @hookimpl(tryfirst=True)
    def chatkit_server_stop(self) -> None:
        # (First: in a cluster its listener reads the cluster plugin's Redis client,
        # which that plugin closes as it stops.)
        if self.store is not None:
            self.store.close()

    @property
    def _store(self) -> Store:
        if self.store is None:
            raise RuntimeError("the moderation plugin is not configured")
        return self.store

    # -- who is what ---------------------------------------------------------------

    def is_server_operator(self, client: Session) -> bool:
        """An account named in ``server_operators``, or a connection its face made a
        server operator (``client.operator``: IRC's ``OPER``)."""
        if client.operator:
            return True
        return client.account is not None and client.account in self.server_operators

    def _make_connection_operator(self, client: Session, room: str) -> None:
        """Make ``client`` (not identified) an operator of ``room`` for as long as this
        room lives: the room of that name someone creates after it emptied is not its."""
        created = None if self._server is None else self._server.hub.created(room)
        # The rooms emptied since are forgotten here: a connection that creates rooms
        # and leaves them again and again keeps only those that live. A new dict
        # replaces the old (one reference write): other threads read it (its checks)
        # and never see it change under them.
        with self._ops_lock:  # (two writers, its own join and another's /op: both kept)
            ops: dict[str, float | None] = client.data.get(_CONNECTION_OPS, {})
            kept = {key: at for key, at in list(ops.items()) if self._lives(key, at)}
            kept[fold(room)] = created
            client.data[_CONNECTION_OPS] = kept

    def _lives(self, key: str, created: float | None) -> bool:
        """Whether the room of ``key`` is still the one created at ``created``."""
        return self._server is None or self._server.hub.created(key) == created

    def _connection_rooms(self, client: Session) -> set[str]:
        """The rooms (folded) ``client`` is an operator of as a connection, not an
        account: those it was made one of that still live (not emptied since)."""
        ops: dict[str, float | None] = client.data.get(_CONNECTION_OPS, {})
        return {key for key, created in list(ops.items()) if self._lives(key, created)}

    def is_operator(self, client: Session, room: str) -> bool:
        """Whether ``client`` is an operator of ``room``."""
        key = fold(room)
        if self.is_server_operator(client):
            return True
        ops: dict[str, float | None] = client.data.get(_CONNECTION_OPS, {})
        if key in ops and self._lives(key, ops[key]):
            return True  # for this connection (not identified when it got it)
        account = client.account
        if account is None:
            return False
        return account in self.operators.get(key, set()) or account in self._store.rows("ops", key)

    # -- enforcing -----------------------------------------------------------------

    @hookimpl  # (after the accounts plugin's, which is tryfirst: the account proven)
    def chatkit_allow_login(self, client: Session, nick: str) -> Reject | None:
        # The nick is not the session's yet: match the mask against what it will be.
        if client.account is not None and client.account in self.server_operators:
            return None
        for mask in self._store.rows("bans", SERVER):
            if matches_who(mask, nick, client.account, client.address[0]):
                return Reject("you are banned from this server", "banned")
        return None

    @hookimpl(trylast=True)  # a join's claim to be first only once the others allowed it
    def chatkit_allow_join(self, client: Session, room: str) -> Reject | None:
        key = fold(room)
        firsts: set[str] = client.data.setdefault("moderation_first", set())
        firsts.discard(key)
        refused = self._may_join(client, room, key)
        if refused is not None or self._server is None:
            return refused
        # Whether it joins an empty room, and so is its first member: known now, before
        # its join (chatkit_on_join runs after, when others may have joined already).
        # Two joining an empty room at once both find it empty: a claim (the store's,
        # every node's in a cluster) makes one of them its first member. Claimed
        # first, then looked at: a claim given back after a join finds its member.
        token = self._first_token(client)
        if self._store.claim_first(key, token):
            if self._server.hub.who(room):
                self._store.release_first(key, token, left=True)  # not empty after all
            else:
                firsts.add(key)
                client.data.setdefault(_CLAIMS, {})[key] = time.monotonic()
        return None

    def _may_join(self, client: Session, room: str, key: str) -> Reject | None:
        """Why ``client`` may not join ``room`` (banned, invite-only), if so. An owner
        of the room (one of ``operators``, which nobody can /deop) or a server operator
        is never kept out: a ban it matches (a delegated operator's /ban of the owner)
        would lock out the one who could lift it. An operator made so by /op is banned
        as anyone (a rogue delegate gone offline must stay out)."""
        account = client.account
        if self.is_server_operator(client) or (
            account is not None and account in self.operators.get(key, ())
        ):
            return None
        for mask in self._store.rows("bans", key):
            if matches(mask, client):
                return Reject(f"you are banned from {room}", "banned")
        invited = any(matches(mask, client) for mask in self._invites(key))
        if (
            "invite" in self._store.rows("flags", key)
            and not invited
            and not self.is_operator(client, room)
            and not self._abandoned(room, key)
        ):
            return Reject(f"{room} is invite-only: ask an operator to /invite you", "invite_only")
        return None

    def _invites(self, key: str) -> list[str]:
        """The room's invitations still good: one older than ``invite_hours`` (or of
        before invitations had a time) is dropped as it is found."""
        masks = self._store.rows("invites", key)
        if not masks:
            return masks
        setters = self._store.setters("invites", key)
        oldest = datetime.now(UTC).timestamp() - self.invite_hours * 3600
        good = []
        for mask in masks:
            ts = setters.get(mask, ("", ""))[1]
            try:
                fresh = datetime.fromisoformat(ts).timestamp() >= oldest
            except ValueError:
                fresh = False
            if fresh:
                good.append(mask)
            else:
                self._store.remove("invites", key, mask)
        return good

    def _abandoned(self, room: str, key: str) -> bool:
        """Whether ``room`` is empty and has no lasting operator (an account, or one of
        ``operators``): nobody could /invite anyone in, so its first joiner may enter
        and become its operator (an operator who never identified is one only while
        connected: the room would be locked for good)."""
        if self._store.rows("ops", key) or self.operators.get(key):
            return False
        return self._server is not None and not self._server.hub.who(room)

    @hookimpl
    def chatkit_on_account_deleted(self, account: str) -> None:
        # Operator rights were the deleted account's, not the next registrant's. Those
        # of the config (operators, server_operators) stay the name's: say so.
        named = [r for r, accounts in self.operators.items() if account in accounts]
        if account in self.server_operators or named:
            log.warning(
                "moderation: the deleted account %s is named in the config's operators or "
                "server_operators: whoever registers it next has those rights; remove it",
                account,
            )
        held: set[str] = set()
        for room in self._store.rooms_with("ops", account):
            held.add(room)
            self._store.remove("ops", room, account)
            log.info("moderation: %s no longer an operator of %s (account deleted)", account, room)
        # Its sessions here that were operators as it (no longer identified: /drop sets
        # that first) are announced as no longer ones now, while what they held is
        # known (chatkit_on_account, after the command, would find nothing to say).
        held.update(key for key, accounts in self.operators.items() if account in accounts)
        if self._server is None or not held:
            return
        for session in self._server.hub.sessions():
            if session.data.get(_ACCOUNT) != account or session.account == account:
                continue
            session.data[_ACCOUNT] = session.account
            nick = session.nick or ""
            for room in list(session.rooms.values()):
                if fold(room) in held and not self.is_operator(session, room):
                    self._server.hub.announce(
                        f"{nick} is no longer an operator of {room}", room, mode="-o", arg=nick
                    )

    @hookimpl
    def chatkit_allow_input(self, client: Session, event: Hello | Say | Request) -> Reject | None:
        # Every line the hook sees forgets the last one's pass (below), so a pass is
        # only ever the reader's line just checked.
        client.data[_PASSED] = None
        if not isinstance(event, Say) or not client.logged_in:
            return None
        if event.command and event.text[1:].split(" ", 1)[0].lower() != "me":
            return None  # (/me speaks in the room: held to the same rules)
        room = event.room or client.current_room
        if room is None:
            return None
        refused = self._may_speak(client, room)
        if refused is None:
            # The filter below need not check this line's message again.
            client.data[_PASSED] = (fold(room), event.text)
        return refused

    @hookimpl
    def chatkit_filter_message(self, client: Session, message: Message) -> Drop | None:
        # What reached the room another way than a typed line (a plugin's command
        # calling hub.say): the same rules, as a filter. A typed line's message was
        # checked by chatkit_allow_input a moment ago, on this thread: not twice.
        if message.room is None:
            return None
        passed = client.data.pop(_PASSED, None)
        if passed is not None and passed == (fold(message.room), message.text):
            return None
        refused = self._may_speak(client, message.room)
        return None if refused is None else Drop(refused.reason)

    @hookimpl
    def chatkit_allow_nick(self, client: Session, nick: str) -> Reject | None:
        # A server ban of the nick holds for a rename to it, as for a login.
        if not self.is_server_operator(client):
            for mask in self._store.rows("bans", SERVER):
                if matches_who(mask, nick, client.account, client.address[0]):
                    return Reject(f"{nick} is banned from this server", "banned")
        # A new nick would slip out of a nick's ban or mute: not while one holds (IRC
        # servers refuse it the same way, 435).
        for key, room in list(client.rooms.items()):  # (a kick may change it meanwhile)
            if self.is_operator(client, room):
                continue
            for table, what in (("bans", "banned from"), ("mutes", "muted in")):
                if any(matches(mask, client) for mask in self._store.rows(table, key)):
                    return Reject(
                        f"you cannot change your nick while {what} {room}",
                        "banned" if table == "bans" else "muted",
                        {"target": room},
                    )
        return None

    @hookimpl
    def chatkit_on_login(self, client: Session) -> None:
        _proven(client)
        self._banned_meanwhile(client)

    @hookimpl
    def chatkit_on_nick(self, client: Session, old: str) -> None:
        self._banned_meanwhile(client)

    def _banned_meanwhile(self, client: Session) -> None:
        """Disconnect ``client`` if a server ban matches it now: one set between its
        login's (or rename's) check and the nick taking effect, whose sweep of the
        sessions (``/gline``) did not see it (not a session yet, or under its old nick)."""
        if self.is_server_operator(client):
            return
        for mask in self._store.rows("bans", SERVER):
            if matches(mask, client):
                by = self._store.setters("bans", SERVER).get(mask, ("", ""))[0]
                client.notice("banned from this server" + (f" by {by}" if by else ""))
                client.disconnect(f"banned by {by}" if by else "banned")
                return

    def _may_speak(self, client: Session, room: str) -> Reject | None:
        """Why ``client`` may not speak in ``room`` (muted, moderated, locked), if so."""
        if self.is_operator(client, room):
            return None
        key = fold(room)
        room = client.rooms.get(key, room)  # as the room spells itself, not as typed
        for mask in self._store.rows("mutes", key):
            if matches(mask, client):
                return Reject(f"you are muted in {room}", "muted")
        flags = self._store.rows("flags", key)
        if "moderated" in flags:
            return Reject(f"{room} is moderated: only its operators speak", "moderated")
        for mask in self._store.rows("bans", key):
            if matches(mask, client):  # a ban silences a member too (RFC 2812 3.3.1)
                return Reject(f"you are banned from {room}", "banned")
        if client.account is None and "lock" in flags:
            return Reject(
                f"{room} is locked: only registered users speak (/identify first)", "room_locked"
            )
        return None

    @hookimpl
    def chatkit_allow_topic(self, client: Session, room: str) -> Reject | None:
        if "topic" in self._store.rows("flags", fold(room)) and not self.is_operator(client, room):
            return Reject(
                f"only operators of {room} set its topic", "not_room_operator", {"target": room}
            )
        # Who may not speak in the room (muted, banned, +m, +M) may not write in its
        # topic either: every member sees it, and it is kept.
        return self._may_speak(client, room)

    @hookimpl
    def chatkit_on_topic(self, room: str, topic: dict[str, str]) -> None:
        self._store.keep_topic(fold(room), topic["topic"], topic["nick"], topic["ts"])

    @hookimpl
    def chatkit_handle_request(self, client: Session, request: Request) -> bool | Reject | None:
        if request.type != "modes":
            return None
        room = request.fields.get("room")  # (public, as on IRC: before login too)
        if not isinstance(room, str) or not room.startswith("#"):
            return Reject('a modes request names a room: {"room": "#den"}', "bad_frame")
        key = fold(room)
        flags = self._store.rows("flags", key)
        masks = {table: list(self._store.rows(table, key)) for table in ("bans", "mutes")}
        client.send(
            Frame(
                "modes",
                room=room,
                flags=[name for flag, name in FLAG_NAMES.items() if flag in flags],
                bans=masks["bans"],
                mutes=masks["mutes"],
                # Who set each mask, and when (those kept since: see Store.setters). Read
                # only for a list that has masks: an IRC client's every JOIN asks (for the
                # operators), and most rooms have none.
                set_by={
                    table: {
                        mask: {"nick": nick, "ts": ts}
                        for mask, (nick, ts) in self._store.setters(table, key).items()
                        if mask in listed
                    }
                    for table, listed in masks.items()
                    if listed
                },
                operators=self._operators(room),
            )
        )
        return True

    def _operators(self, room: str) -> list[str]:
        """The members of ``room`` who are its operators."""
        if self._server is None:
            return []
        hub = self._server.hub
        found = (hub.find(nick) for nick in hub.who(room) or [])
        return [s.nick for s in found if s is not None and s.nick and self.is_operator(s, room)]

    def _first_token(self, client: Session) -> str:
        """Who claims to be a room's first member (:meth:`Store.claim_first`)."""
        cluster = self._server.pluginmanager.get_plugin("cluster") if self._server else None
        return f"{getattr(cluster, 'node', '') or ''}:{client.id}"

    @hookimpl
    def chatkit_on_leave(self, client: Session, room: str) -> None:
        # A first member's claim ends when it leaves (in a cluster it outlives the join).
        claims = client.data.get(_CLAIMS)
        claimed = None if not claims else claims.pop(fold(room), None)
        if claimed is not None and time.monotonic() - claimed < FIRST_CLAIM:
            self._store.release_first(fold(room), self._first_token(client), left=True)

    def _operator_as(self, account: str, key: str) -> bool:
        """Whether ``account`` makes its sessions operators of the room of ``key``."""
        return (
            account in self.server_operators
            or account in self.operators.get(key, ())
            or account in self._store.rows("ops", key)
        )

    @hookimpl
    def chatkit_on_account(self, client: Session) -> None:
        account = client.account
        old = client.data.get(_ACCOUNT)
        client.data[_ACCOUNT] = account
        _proven(client)
        if old is not None and old != account and self._server is not None:
            # Rights it had as the account it no longer is (/logout, /drop, another's
            # /passwd, /identify as another): the room is told (IRC: MODE -o), or
            # names lists would go on showing it as an operator.
            nick = client.nick or ""
            for room in list(client.rooms.values()):
                if self._operator_as(old, fold(room)) and not self.is_operator(client, room):
                    self._server.hub.announce(
                        f"{nick} is no longer an operator of {room}", room, mode="-o", arg=nick
                    )
        if account is None:
            return
        # A server ban of an account holds once a client proves it later than its
        # login (/identify), as it does at login.
        if not self.is_server_operator(client):
            for mask in self._store.rows("bans", SERVER):
                if matches(mask, client):
                    client.notice("you are banned from this server")
                    client.disconnect("banned")
                    return
        # Rooms this connection holds as their operator (it was their first member
        # before it identified): the account holds them now, as the first member who
        # was identified would, so they stay its across a reconnection or a restart.
        held = self._connection_rooms(client)
        for key in sorted(held):
            if account not in self._store.rows("ops", key):
                self._store.add("ops", key, account)
                log.info("%s is an operator of %s as account %s", client.nick, key, account)
        # Rooms it is an operator of now by its account, and was not a moment ago: the
        # room is told (IRC: MODE +o), as when an operator joins, so names lists agree.
        if self._server is not None and not client.operator:
            nick = client.nick or ""
            for room in list(client.rooms.values()):
                if fold(room) not in held and self.is_operator(client, room):
                    self._server.hub.announce(
                        f"{nick} is an operator of {room}", room, mode="+o", arg=nick
                    )

    @hookimpl
    def chatkit_on_join(self, client: Session, room: str) -> None:
        key = fold(room)
        client.data[_ACCOUNT] = client.account
        for mask in self._store.rows("invites", key):
            if matches(mask, client):  # an invitation lets its nick in once
                self._store.remove("invites", key, mask)
        if self._server is not None and self._server.hub.topic(room) is None:
            kept = self._store.topic(key)
            if kept is not None:
                self._server.hub.restore_topic(room, kept)
        firsts = client.data.get("moderation_first", set())
        first = key in firsts
        firsts.discard(key)
        if first:
            self._store.release_first(key, self._first_token(client))  # a member now
        has_operators = bool(self._store.rows("ops", key) or self.operators.get(key))
        server = self._server
        if (not first or has_operators) and server is not None and self.is_operator(client, room):
            # An operator joining (back), the first member or not: the room is told, as
            # IRC networks' services give ops back (MODE +o from the server), so that
            # names lists agree (its own, sent with its join, said no @). (This node's
            # members only: another node's would see it before the join, which reaches
            # them through the cluster's log, and their names lists show no other
            # node's operators.)
            nick = client.nick or ""
            server.hub.announce(f"{nick} is an operator of {room}", room, mode="+o", arg=nick)
        if has_operators:
            return  # the room has operators of its own
        if not first:
            return  # the room had members when it joined
        if client.account is not None:
            self._store.add("ops", key, client.account)
        else:
            self._make_connection_operator(client, room)
        # mode, room, arg: the IRC face shows it as MODE #room +o nick (from the server).
        text = f"you are an operator of {room}"
        client.send(Frame("notice", text=text, room=room, mode="+o", arg=client.nick or ""))
        log.info("%s is an operator of %s (first to join)", client.nick, room)

    @hookimpl(tryfirst=True)
    def chatkit_server_start(self, server: Server) -> None:
        # (First: a node seeding the cluster puts its kept topics into the cluster's
        # before the cluster plugin reads them, as it starts, whatever their order.)
        self._server = server
        # In a cluster the settings are the cluster's, in its Redis (moderation/shared.py).
        cluster = server.pluginmanager.get_plugin("cluster")
        client = getattr(cluster, "redis", None)
        if cluster is not None and client is not None and isinstance(self.store, ModerationStore):
            shared = SharedModerationStore(
                client, str(cluster.prefix), str(cluster.node), self.store
            )
            shared.on_action = self._on_action
            self.store = shared
            log.info("moderation in %s", shared.path)
        else:  # (a cluster's accounts are in its Redis, which the accounts plugin opens later)
            self._warn_unregistered(server)
        before = _CONFIGURED.get(server)
        _CONFIGURED[server] = (self.operators, self.server_operators)
        if before is not None:
            self._announce_reconfigured(server, *before)
        default = server.config.default_room
        if not self.operators.get(fold(default)) and not self._store.rows("ops", fold(default)):
            # Everyone lands there: its first member, whoever connects first, would
            # operate it (make it invite-only, ban...), for good once it registers.
            log.warning(
                "moderation: %s, where everyone lands, has no operators: its first member "
                "becomes one; name its operators ([plugins.moderation] operators)",
                default,
            )

    def _announce_reconfigured(
        self, server: Server, operators: dict[str, set[str]], server_operators: set[str]
    ) -> None:
        """Tell each room whom a reload's ``operators`` and ``server_operators`` made,
        or unmade, its operators (against the config before: ``operators`` and
        ``server_operators``), as an /op would (IRC: MODE +o, -o), so names lists agree."""
        for client in server.hub.sessions():
            account = client.account
            if account is None or client.operator:
                continue  # (not identified, or an operator its face made: as before)
            nick = client.nick or ""
            held = self._connection_rooms(client)
            for room in list(client.rooms.values()):
                key = fold(room)
                was = (
                    key in held
                    or account in server_operators
                    or account in operators.get(key, ())
                    or account in self._store.rows("ops", key)
                )
                if was != self.is_operator(client, room):
                    server.hub.announce(
                        f"{nick} is an operator of {room}"
                        if not was
                        else f"{nick} is no longer an operator of {room}",
                        room,
                        mode="-o" if was else "+o",
                        arg=nick,
                    )

    def _warn_unregistered(self, server: Server) -> None:
        """Log the accounts named in the config that nobody registered: whoever registers
        one first gets its rights (a server operator's: /kill, /gline, /reload)."""
        store = getattr(server.pluginmanager.get_plugin("accounts"), "store", None)
        if store is None:
            return
        named = self.server_operators.union(*self.operators.values())
        missing = sorted(name for name in named if store.get(name) is None)
        if missing:
            log.warning(
                "moderation: %s, named in operators or server_operators, %s not registered: "
                "whoever registers %s first has %s rights; register %s now",
                ", ".join(missing),
                *(
                    ("is", "it", "its", "it")
                    if len(missing) == 1
                    else ("are", "one", "its", "them")
                ),
            )

    def _tell(self, action: dict[str, Any], *, required: bool = False) -> None:
        """Tell the cluster's other nodes of ``action`` (nothing without a cluster).
        Raises ``cluster_unavailable`` while Redis is away if the action is ``required``
        (it is for another node's member); else only logs."""
        store = self.store
        if not isinstance(store, SharedModerationStore):
            return
        try:
            others = store.announce(action)
        except CommandError:
            if required:
                raise
            log.warning("moderation: the other nodes were not told of %s", action.get("do"))
            return
        if required and not others:
            # Nobody else listens (a node that just got Redis back subscribes within
            # seconds): the member's node never heard it, so it did not happen.
            raise CommandError(
                "the other servers did not get it (reconnecting to Redis?): try again in a moment",
                "cluster_unavailable",
            )

    def _on_action(self, action: dict[str, Any]) -> None:
        """Do, for this node's sessions, what another node's operator did (the
        listening thread of the shared store)."""
        if self._server is None:
            return
        hub, do = self._server.hub, action.get("do")
        by, reason = str(action.get("by", "")), str(action.get("reason", ""))
        if do == "announce":
            fields = action.get("fields")
            room = action.get("room")
            hub.announce(
                str(action.get("text", "")),
                None if room is None else str(room),
                **(fields if isinstance(fields, dict) else {}),
            )
        elif do == "kick":
            room, nick = str(action.get("room")), str(action.get("nick"))
            hub.announce(str(action.get("text", "")), room, kicked=nick, by=by)
            target = hub.find(nick)
            if target is not None and fold(room) in target.rooms:
                hub.part(target, room, f"kicked by {by}" + (f": {reason}" if reason else ""), by=by)
        elif do == "kill":
            target = hub.find(str(action.get("nick")))
            if target is not None:
                log.info("%s (on another node) killed %s: %s", by, target.nick, reason)
                _kill(target, by, reason)
        elif do == "gline":
            self._disconnect_banned(hub.sessions(), str(action.get("mask")), by, reason)

    def _disconnect_banned(
        self, sessions: list[Session], mask: str, by: str, reason: str
    ) -> list[str]:
        """Disconnect the sessions ``mask`` matches (server operators excepted)."""
        gone = []
        for session in sessions:
            if matches(mask, session) and not self.is_server_operator(session):
                session.notice(f"banned from this server by {by}: {reason}")
                session.disconnect(f"banned by {by}")
                gone.append(session.nick or "")
        return gone

    # -- commands ------------------------------------------------------------------

    @hookimpl
    def chatkit_register_commands(self, register: Register) -> None:
        register("op", self.op, help="make NICK an operator of the room", usage="[#ROOM] NICK")
        register("deop", self.deop, help="NICK is no longer an operator", usage="[#ROOM] NICK")
        register("kick", self.kick, help="remove NICK from the room", usage="[#ROOM] NICK [REASON]")
        register("ban", self.ban, help="keep MASK out of the room", usage="[#ROOM] MASK")
        register("unban", self.unban, help="lift a ban", usage="[#ROOM] MASK")
        register("mute", self.mute, help="MASK may not speak in the room", usage="[#ROOM] MASK")
        register("unmute", self.unmute, help="lift a mute", usage="[#ROOM] MASK")
        register(
            "kill", self.kill, help="disconnect NICK (server operators)", usage="NICK [REASON]"
        )
        register(
            "invite",
            self.invite,
            help="invite NICK (into an invite-only room)",
            usage="NICK [#ROOM]",
        )
        register(
            "inviteonly", self.inviteonly, help="only invited users join", usage="[#ROOM] on|off"
        )
        register("moderated", self.moderated, help="only operators speak", usage="[#ROOM] on|off")
        register(
            "topicops", self.topicops, help="only operators set the topic", usage="[#ROOM] on|off"
        )
        register("lock", self.lock, help="only registered users speak", usage="[#ROOM]")
        register("unlock", self.unlock, help="everyone speaks again", usage="[#ROOM]")
        register(
            "gline",
            self.gline,
            help="ban MASK from the server (alone: list the server's bans)",
            usage="[MASK [REASON]]",
        )
        register("ungline", self.ungline, help="lift a server ban", usage="MASK")
        register("wall", self.wall, help="a notice to everyone (server operators)", usage="TEXT")
        register("reload", self.reload, help="read the config file again (server operators)")

    def _room(self, ctx: CommandContext, words: list[str]) -> str:
        """The room acted on (the first of ``words`` if it names one: it is removed),
        which the client must operate."""
        room = words.pop(0) if words and words[0].startswith("#") else ctx.room
        if room is None:
            raise CommandError("you are in no room; /join one first", "not_in_room")
        if self.is_server_operator(ctx.client):
            return room  # (of every room, in it or not)
        # A room's operators act in it, as on IRC (442): one kicked and banned by
        # another operator does not go on acting from outside.
        # target: the IRC face answers 403, 442 or 482 for the room.
        if fold(room) not in ctx.client.rooms:
            if ctx.hub.who(room) is None:
                raise CommandError(f"no room {room}", "no_such_room", target=room)
            raise CommandError(f"you are not in {room}", "not_in_room", target=room)
        if not self.is_operator(ctx.client, room):
            raise CommandError(
                f"you are not an operator of {room}", "not_room_operator", target=room
            )
        return room

    def _act(
        self, ctx: CommandContext, room: str, text: str, mode: str = "", arg: str = ""
    ) -> None:
        """Log and announce an action; ``mode`` (``+o``...) and ``arg`` (``bob``) are IRC's
        terms for it, which the IRC face shows as ``MODE``."""
        log.info("%s in %s: %s", ctx.client.nick, room, text)
        fields = {}
        if mode:
            fields = {"mode": mode, "by": ctx.client.nick or ""}
            if arg:
                fields["arg"] = arg
        ctx.hub.announce(f"{ctx.client.nick} {text}", room, **fields)
        self._tell(
            {"do": "announce", "text": f"{ctx.client.nick} {text}", "room": room, "fields": fields}
        )

    def op(self, ctx: CommandContext) -> None:
        words = ctx.args.split()
        room = self._room(ctx, words)
        if len(words) != 1:
            raise ctx.usage_error()
        target = ctx.hub.find(words[0])
        if target is None:  # another node's member: by its account
            nick, account = self._identified_elsewhere(words[0])
            self._store.add("ops", fold(room), account)
            self._act(ctx, room, f"made {nick} an operator", "+o", nick)
            return
        if fold(room) not in target.rooms:  # a typo would make someone else one (IRC: 441)
            shown = target.nick or ""
            raise CommandError(f"{shown} is not in {room}", "not_in_room", target=room, nick=shown)
        if self.is_operator(target, room):  # nothing changes: nobody is told again
            ctx.reply(f"{target.nick} is an operator of {room} already", room=room)
            return
        if target.account is not None:
            self._store.add("ops", fold(room), target.account)
        else:
            self._make_connection_operator(target, room)
        self._act(ctx, room, f"made {target.nick} an operator", "+o", target.nick or "")

    def deop(self, ctx: CommandContext) -> None:
        words = ctx.args.split()
        room = self._room(ctx, words)
        if len(words) != 1:
            raise ctx.usage_error()
        target = ctx.hub.find(words[0])
        if target is None:  # another node's member, or someone gone: by its account
            try:
                nick, account = self._identified_elsewhere(words[0])
            except CommandError:
                # An account made an operator of the room, offline now (it would be one
                # again at its next login; a ban alone keeps it out meanwhile).
                nick, account = words[0], fold(words[0])
                if account not in self._store.rows("ops", fold(room)):
                    raise
            self._store.remove("ops", fold(room), account)
            self._act(ctx, room, f"removed {nick} as an operator", "-o", nick)
            return
        # One whose rights come from elsewhere stays an operator whatever is removed here:
        # said so, rather than announcing a -o that changes nothing (IRC clients would
        # show them without @ while they go on acting as one).
        why = ""
        if self.is_server_operator(target):
            why = "a server operator"
        elif target.account is not None and target.account in self.operators.get(fold(room), ()):
            why = f"an operator of {room} in the server's config"
        if why:
            raise CommandError(f"{target.nick} is {why}: /deop cannot change that", "bad_usage")
        if not self.is_operator(target, room):  # nothing changes: nobody is told (as /op)
            ctx.reply(f"{target.nick} is not an operator of {room}", room=room)
            return
        with self._ops_lock:  # (a new dict, as _make_connection_operator makes)
            ops = target.data.get(_CONNECTION_OPS, {})
            if fold(room) in ops:
                target.data[_CONNECTION_OPS] = {k: v for k, v in ops.items() if k != fold(room)}
        if target.account is not None:
            self._store.remove("ops", fold(room), target.account)
        self._act(ctx, room, f"removed {target.nick} as an operator", "-o", target.nick or "")

    def kick(self, ctx: CommandContext) -> None:
        words = ctx.args.split(maxsplit=2)
        room = self._room(ctx, words)
        if not words:
            raise ctx.usage_error()
        # One line, as the leave's reason is (a line break in the notice would print a
        # line of chat that is someone else's on the faces that keep it).
        nick, reason = words[0], " ".join(" ".join(words[1:]).split())
        by = ctx.client.nick or ""
        target = ctx.hub.find(nick)
        shown = target.nick or "" if target is not None else self._elsewhere(ctx, nick)
        if (
            (fold(room) not in target.rooms)
            if target is not None
            else (fold(shown) not in {fold(member) for member in ctx.hub.who(room) or []})
        ):
            raise CommandError(f"{shown} is not in {room}", "not_in_room", target=room, nick=shown)
        # IRC members see the KICK instead (the leave's "by"): the notice says "kicked".
        text = f"{by} kicked {shown}" + (f": {reason}" if reason else "")
        action = {"do": "kick", "room": room, "nick": shown, "by": by, "reason": reason}
        self._tell({**action, "text": text}, required=target is None)
        log.info("%s in %s: %s", by, room, text)
        ctx.hub.announce(text, room, kicked=shown, by=by)
        if target is not None:
            ctx.hub.part(target, room, f"kicked by {by}" + (f": {reason}" if reason else ""), by=by)

    def _identified_elsewhere(self, nick: str) -> tuple[str, str]:
        """The nick and account of another cluster node's member called ``nick``, who
        must be identified (an operator there is one by its account); else
        ``no_such_nick`` or ``not_identified``."""
        relay = None if self._server is None else self._server.hub.relay
        member = None if relay is None else relay.member(nick)
        if member is None:
            raise CommandError(f"no one is called {nick!r}", "no_such_nick", target=nick)
        if member.account is None:
            raise CommandError(
                f"{member.nick} is on another server and not identified: an operator "
                "there must be one by its account (/identify first)",
                "not_identified",
                target=nick,
            )
        return member.nick, member.account

    def _elsewhere(self, ctx: CommandContext, nick: str) -> str:
        """The nick, as shown, of another cluster node's member called ``nick``; else
        ``no_such_nick``."""
        relay = None if self._server is None else self._server.hub.relay
        found = None if relay is None else relay.locate(nick)
        if found is None:
            raise CommandError(f"no one is called {nick!r}", "no_such_nick", target=nick)
        return found

    def _masks(self, ctx: CommandContext, table: str, add: bool, what: str) -> None:
        letter = {"bans": "b", "mutes": "q"}[table]
        mode = ("+" if add else "-") + letter
        words = ctx.args.split()
        room = self._room(ctx, words)
        if len(words) != 1:
            raise ctx.usage_error()
        mask = full_mask(words[0])
        limits = ctx.hub.config.limits
        longest = 2 * limits.max_nick + 47  # NICK!ACCOUNT@ADDRESS, an IPv6 address at most
        if add and len(mask) > longest:
            raise CommandError(f"a mask is at most {longest} characters", "bad_usage")
        if add:
            _refuse_everyone(mask)
        if add and fold(mask) in self._store.rows(table, fold(room)):
            # Nothing changes: nobody is told again (IRC servers stay silent too).
            ctx.reply(f"{fold(mask)} is {what} in {room} already", room=room, mask=fold(mask))
            return
        if add:
            if len(self._store.rows(table, fold(room))) >= self.max_masks:
                raise CommandError(
                    f"{room} has {self.max_masks} {table} already, the most it keeps "
                    f"(max_masks); remove one first",
                    "too_many_masks",
                    target=room,
                )
            self._store.add(table, fold(room), fold(mask), by=ctx.client.nick or "", ts=_now())
            self._act(ctx, room, f"{what} {mask}", mode, mask)
        elif self._store.remove(table, fold(room), fold(mask)):
            self._act(ctx, room, f"{what} {mask}", mode, mask)
        else:
            raise CommandError(f"no such mask in {room}: {mask}", "bad_usage")

    def ban(self, ctx: CommandContext) -> None:
        self._masks(ctx, "bans", True, "banned")

    def unban(self, ctx: CommandContext) -> None:
        self._masks(ctx, "bans", False, "unbanned")

    def mute(self, ctx: CommandContext) -> None:
        self._masks(ctx, "mutes", True, "muted")

    def unmute(self, ctx: CommandContext) -> None:
        self._masks(ctx, "mutes", False, "unmuted")

    def invite(self, ctx: CommandContext) -> None:
        """Any member may invite to an open room (the invitee gets a notice); to an
        invite-only one, only its operators (the invitation lets the invitee in, and
        the room is told)."""
        words = ctx.args.split()
        rooms = [w for w in words if w.startswith("#")]  # IRC sends INVITE nick #room
        nicks = [w for w in words if not w.startswith("#")]
        if len(nicks) != 1 or len(rooms) > 1:
            raise ctx.usage_error()
        room = rooms[0] if rooms else ctx.room
        if room is None:
            raise CommandError("you are in no room; /join one first", "not_in_room")
        if fold(room) not in ctx.client.rooms:
            # target: the IRC face answers 442 for the room.
            raise CommandError(f"you are not in {room}", "not_in_room", target=room)
        room = ctx.client.rooms[fold(room)]
        closed = "invite" in self._store.rows("flags", fold(room))
        if closed and not self.is_operator(ctx.client, room):
            raise CommandError(
                f"you are not an operator of {room}", "not_room_operator", target=room
            )
        text = f"{ctx.client.nick} invites you to {room}: /join {room}"
        target = ctx.hub.find(nicks[0])
        if target is None:
            # Another node's member, in a cluster: the invitation is the cluster's (the
            # store), and it hears of it as a private notice (nothing else reaches it).
            nick = self._elsewhere(ctx, nicks[0])
            if fold(nick) in {fold(member) for member in ctx.hub.who(room) or []}:
                raise CommandError(
                    f"{nick} is already in {room}", "already_in_room", target=room, nick=nick
                )
            if closed:
                self._hold_invitation(ctx, room, nick)
            ctx.hub.private(ctx.client, nick, text, notice=True)
        else:
            nick = target.nick or ""
            if fold(room) in target.rooms:
                # target and nick: the IRC face answers 443.
                raise CommandError(
                    f"{nick} is already in {room}", "already_in_room", target=room, nick=nick
                )
            if closed:
                self._hold_invitation(ctx, room, nick)
            # invite and by: the IRC face shows it as INVITE.
            target.send(Frame("notice", text=text, invite=room, by=ctx.client.nick or ""))
        # The IRC face shows the reply as 341 (RPL_INVITING), before the room's notice.
        ctx.reply(f"invited {nick} to {room}", nick=nick, room=room)
        if closed:
            self._act(ctx, room, f"invited {nick}")

    def _hold_invitation(self, ctx: CommandContext, room: str, nick: str) -> None:
        """Keep ``nick``'s invitation into invite-only ``room``, with who gave it and when
        (it lapses after ``invite_hours``: :meth:`_invites`)."""
        mask = fold(full_mask(nick))
        held = self._invites(fold(room))  # (the lapsed dropped)
        if mask not in held and len(held) >= self.max_masks:
            raise CommandError(
                f"{room} has {self.max_masks} invitations waiting already, the most it keeps "
                f"(max_masks); they lapse after {self.invite_hours:g} hours, or once used",
                "too_many_masks",
                target=room,
            )
        self._store.add("invites", fold(room), mask, by=ctx.client.nick or "", ts=_now())

    def inviteonly(self, ctx: CommandContext) -> None:
        self._switch(ctx, "invite", "made the room invite-only", "opened the room to everyone")

    def moderated(self, ctx: CommandContext) -> None:
        on, off = "moderated the room: only operators speak", "unmoderated the room"
        self._switch(ctx, "moderated", on, off)

    def topicops(self, ctx: CommandContext) -> None:
        on, off = "let only operators set the topic", "let everyone set the topic"
        self._switch(ctx, "topic", on, off)

    def _switch(self, ctx: CommandContext, flag: str, on: str, off: str) -> None:
        """A command ``[#room] on|off`` setting ``flag``, saying ``on`` or ``off``."""
        words = ctx.args.split()
        room = self._room(ctx, words)
        if words not in (["on"], ["off"]):
            raise ctx.usage_error()
        self._flag(ctx, room, flag, words == ["on"], on if words == ["on"] else off)

    def lock(self, ctx: CommandContext) -> None:
        self._flag(ctx, self._room(ctx, ctx.args.split()), "lock", True, "locked the room")

    def unlock(self, ctx: CommandContext) -> None:
        self._flag(ctx, self._room(ctx, ctx.args.split()), "lock", False, "unlocked the room")

    def _flag(self, ctx: CommandContext, room: str, flag: str, on: bool, what: str) -> None:
        """Set or clear a room flag; announced only if it changed (IRC: ``MODE``)."""
        if on == (flag in self._store.rows("flags", fold(room))):
            ctx.reply(f"{room}: {FLAG_NAMES[flag]} is {'on' if on else 'off'} already")
            return
        if on:
            self._store.add("flags", fold(room), flag)
        else:
            self._store.remove("flags", fold(room), flag)
        letter = {"invite": "i", "moderated": "m", "topic": "t", "lock": "M"}[flag]
        self._act(ctx, room, what, ("+" if on else "-") + letter)

    def _server_operator(self, ctx: CommandContext) -> None:
        if not self.is_server_operator(ctx.client):
            raise CommandError("only server operators may do that", "not_server_operator")

    def kill(self, ctx: CommandContext) -> None:
        self._server_operator(ctx)
        nick, _, reason = ctx.args.strip().partition(" ")
        reason = " ".join(reason.split())  # (one line, as a kick's)
        if not nick:
            raise ctx.usage_error()
        target = ctx.hub.find(nick)
        if target is None:  # on another node of the cluster: that node disconnects it
            shown = self._elsewhere(ctx, nick)
            self._tell(
                {"do": "kill", "nick": shown, "by": ctx.client.nick, "reason": reason},
                required=True,
            )
            log.info("%s killed %s (on another node): %s", ctx.client.nick, shown, reason)
            ctx.reply(f"{shown} disconnected")
            return
        log.info("%s killed %s: %s", ctx.client.nick, target.nick, reason)
        _kill(target, str(ctx.client.nick), reason)
        ctx.reply(f"{target.nick} disconnected")

    def gline(self, ctx: CommandContext) -> None:
        self._server_operator(ctx)
        words = ctx.args.split(maxsplit=1)
        if not words:
            self._glines(ctx)
            return
        mask, reason = full_mask(words[0]), " ".join(words[1].split()) if len(words) > 1 else ""
        _refuse_everyone(mask)
        client = ctx.client
        if matches_who(mask, client.nick or "", client.account, client.address[0]):
            # A server operator by OPER logs in before it is one: it could not come back.
            # (As it is now: not an account it proved before, which it logs in as no more.)
            raise CommandError(f"{mask} matches you: you could not log in again", "bad_usage")
        by = ctx.client.nick or ""
        self._store.add("bans", SERVER, fold(mask), by=by, ts=_now())
        log.info("%s banned %s from the server: %s", ctx.client.nick, mask, reason)
        gone = self._disconnect_banned(ctx.hub.sessions(), mask, by, reason)
        self._tell({"do": "gline", "mask": mask, "by": by, "reason": reason})
        where = " here" if isinstance(self.store, SharedModerationStore) else ""
        ctx.reply(
            f"{mask} banned from the server; disconnected{where}: {', '.join(gone) or 'nobody'}"
        )

    def _glines(self, ctx: CommandContext) -> None:
        """``/gline`` alone: the server's bans, each with who set it and when."""
        masks = self._store.rows("bans", SERVER)
        setters = self._store.setters("bans", SERVER) if masks else {}
        bans = [
            {
                "mask": mask,
                **({"nick": setters[mask][0], "ts": setters[mask][1]} if mask in setters else {}),
            }
            for mask in masks
        ]
        lines = [
            ban["mask"] + (f" (by {ban['nick']}, {ban['ts']})" if "nick" in ban else "")
            for ban in bans
        ]
        text = "server bans: " + (", ".join(lines) if lines else "none")
        ctx.reply(text, bans=bans)

    def ungline(self, ctx: CommandContext) -> None:
        self._server_operator(ctx)
        words = ctx.args.split()
        if len(words) != 1:
            raise ctx.usage_error()
        if not self._store.remove("bans", SERVER, fold(full_mask(words[0]))):
            raise CommandError(f"no server ban {full_mask(words[0])}", "bad_usage")
        ctx.reply(f"{full_mask(words[0])} may come back")

    def wall(self, ctx: CommandContext) -> None:
        self._server_operator(ctx)
        if not ctx.args.strip():
            raise ctx.usage_error()
        log.info("%s to everyone: %s", ctx.client.nick, ctx.args.strip())
        text = f"[{ctx.client.nick} to everyone] {ctx.args.strip()}"
        ctx.hub.announce(text)
        self._tell({"do": "announce", "text": text, "room": None, "fields": {}})

    def reload(self, ctx: CommandContext) -> None:
        """``/reload``: what SIGHUP does, on this (the operator's reader) thread."""
        self._server_operator(ctx)
        reloader = self._server.reloader if self._server is not None else None
        if reloader is None:
            raise CommandError(
                "this server has no config file to reload (a program started it)",
                "reload_failed",
            )
        log.info("%s asked for a reload (/reload)", ctx.client.nick)
        try:
            notes = reloader()
        except UsageError as exc:
            log.error("reload failed, the old config stays: %s", exc)
            raise CommandError(
                f"reload failed, the old config stays: {exc}", "reload_failed"
            ) from None
        log.info("reloaded: %s", "; ".join(notes) if notes else "nothing changed")
        ctx.reply("reloaded: " + ("; ".join(notes) if notes else "nothing changed"))


def _kill(target: Session, by: str, reason: str) -> None:
    """Disconnect ``target``, killed by ``by``: it reads why in a notice first, in the
    words its rooms read in its leave (``killed by OP: TEXT``)."""
    why = f"killed by {by}" + (f": {reason}" if reason else "")
    target.notice(why)
    target.disconnect(why)


def _now() -> str:
    """The time, as frames give it (UTC ISO 8601 with milliseconds): when a mask was set."""
    when = datetime.now(UTC).isoformat(timespec="milliseconds")
    return when.replace("+00:00", "Z")
