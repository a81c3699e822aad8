"""Message history: every room and private message stored in SQLite before delivery.

On by default (``--no-plugin history`` turns it off). A client joining a room first
receives the room's last messages, marked ``"history": true``; ``/history`` and the
JSON ``history`` frame fetch earlier pages. Storage is in :mod:`chatkit.builtins.history.store`.

Settings (``[plugins.history]``; ``chatkit serve --db PATH`` sets ``db``):

* ``db``: the database file; ``":memory:"`` (the default) keeps nothing across
  restarts, so a server embedded in a program never shares or replays anyone's
  chat. ``chatkit serve`` sets it to one file per server (:func:`serve_db`). A
  relative path in a config file is relative to that file. One file serves one
  server at a time (see :mod:`chatkit.builtins.history.store`).
* ``replay`` (50): messages replayed on joining a room; 0 for none.
* ``page`` (50): messages ``/history`` and a ``history`` frame return by default.
* ``max_page`` (500): the most they may ask for.
* ``keep`` (10000): messages kept per room or private conversation; 0 for all.
* ``keep_days`` (0): days a message is kept; 0 forever.
* ``private``: store private messages too. On by default when accounts exist (a
  plugin implements ``chatkit_authenticate``, as the builtin ``accounts`` does):
  each private message is stored with the accounts of its sender and recipient,
  and shown only to a client identified to one of them (under any of its nicks:
  a conversation is its two accounts'). Off by default
  otherwise: without accounts private history is shown to whoever holds a nick,
  who may not be who wrote it.
* ``synchronous`` ("normal"): "normal" survives the server being killed; "full" also
  a power cut, at the price of an fsync per group commit.
* ``max_batch`` (1000): messages committed in one transaction at most.
* ``prune_interval`` (60): seconds between retention passes.
* ``busy_timeout`` (5): seconds to wait for another program's lock at start.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import pluggy

from chatkit import (
    MAX_ID,
    CommandContext,
    CommandError,
    Config,
    Drop,
    Frame,
    Limits,
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
    message_frame,
    number_setting,
    room_name,
    valid_nick,
)
from chatkit.builtins.history.store import BUSY_TIMEOUT, MAX_BATCH, MessageStore, StoreError

log = logging.getLogger(__name__)

MESSAGES_PER_LINE = 50
"""Messages of a page a line of the reader's input pays for (see History._charge)."""

REPLAY = 50  # messages replayed on join: a screenful or two of context
PAGE = 50  # messages per /history page by default
MAX_PAGE = 500  # the most one request may ask for: bounds one read and one burst of output
KEEP = 10_000  # messages kept per room or conversation: weeks of a busy team room
KEEP_DAYS = 0  # days kept; 0 keeps messages until `keep` pushes them out
PRUNE_INTERVAL = 60.0  # seconds between retention passes

SETTINGS = (
    "db",
    "replay",
    "page",
    "max_page",
    "keep",
    "keep_days",
    "private",
    "synchronous",
    "max_batch",
    "prune_interval",
    "busy_timeout",
)


def data_dir() -> Path:
    """The user's data directory, where ``chatkit serve`` keeps its history files."""
    return platformdirs.user_data_path("chatkit")


def serve_db(config: Config) -> str:
    """The database ``chatkit serve`` uses when neither ``--db`` nor the config names one:
    one file per server identity, in :func:`data_dir`, so two servers never share one.

    * With a config file, the file is the server's identity:
      ``history-STEM-HASH.sqlite3``, ``STEM`` its name without ``.toml`` and ``HASH``
      8 hex digits of its absolute path (two ``chatkit.toml`` in two directories are
      two servers).
    * Otherwise its address is: ``history-HOST-PORT.sqlite3`` (e.g.
      ``history-127.0.0.1-9090.sqlite3``; characters other than letters, digits,
      ``.`` and ``-`` in the host become ``_``).
    * Port 0 without a config file (a port picked at start, so no identity to come
      back to): ``":memory:"``.
    """
    if config.source is not None:
        path = str(config.source.resolve())
        digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        name = f"history-{_safe(config.source.stem)}-{digest}.sqlite3"
    elif config.port == 0:
        return ":memory:"
    else:
        name = f"history-{_safe(config.host)}-{config.port}.sqlite3"
    return str(data_dir() / name)


def _safe(text: str) -> str:
    """``text`` made fit for a file name on every system."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", text) or "_"


class History:
    """The ``history`` plugin; one instance per server, registered only when enabled."""

    def __init__(self) -> None:
        self.store: MessageStore | None = None
        """The open store (after ``chatkit_configure``)."""
        self.replay = REPLAY
        self.page = PAGE
        self.max_page = MAX_PAGE
        self.private = False
        """Whether private messages are stored (the ``private`` setting)."""
        self.accounts = False
        """Whether accounts exist: private history is then shown by account."""
        self._limits = Limits()  # the running server's, read live (a reload changes them)
        self._server: Server | None = None  # set at chatkit_server_start
        self._options: dict[str, Any] = {}  # MessageStore's, read by _read

    @property
    def page_bytes(self) -> int:
        """Most bytes of frames in one page: a quarter of ``max_sendq``, as it is now. A
        page must fit well within the client's send queue, or sending it would cut the
        client off as a slow consumer: long messages make shorter pages."""
        return self._limits.max_sendq // 4

    @property
    def max_nick(self) -> int:
        """The server's nick limit, as it is now: ``/history NICK`` checks names by it."""
        return self._limits.max_nick

    # -- startup and shutdown ------------------------------------------------------

    @hookimpl
    def chatkit_check_config(self, config: Config, pluginmanager: pluggy.PluginManager) -> None:
        self._read(config, pluginmanager)

    @hookimpl
    def chatkit_configure(self, config: Config, pluginmanager: pluggy.PluginManager) -> None:
        self._read(config, pluginmanager)
        path = config.plugin_path("history")
        self.store = MessageStore(
            path,
            **self._options,
            # Only chatkit's own directory is created; a missing one elsewhere is a typo.
            create_parent=path != ":memory:" and Path(path).parent == data_dir(),
            on_fatal=self._fatal,
        )
        log.info("history in %s", self.store.path)

    def _read(self, config: Config, pluginmanager: pluggy.PluginManager) -> None:
        """Read and check the settings (opens nothing: ``chatkit check`` calls it too)."""
        settings = config.plugin_settings("history")
        check_settings("history", settings, SETTINGS)
        config.plugin_path("history")  # (a db that is no file name: UsageError)

        def count(key: str, default: int, minimum: int = 0) -> int:
            value = number_setting("history", settings, key, default, minimum)
            if value != int(value):
                raise UsageError(f"history: {key} must be a whole number, not {value!r}")
            return int(value)

        self.replay = count("replay", REPLAY)
        self.max_page = count("max_page", MAX_PAGE, 1)
        self.page = count("page", min(PAGE, self.max_page), 1)
        if self.page > self.max_page:
            raise UsageError(f"history: page ({self.page}) is more than max_page")
        if self.replay > self.max_page:
            raise UsageError(f"history: replay ({self.replay}) is more than max_page")
        self.accounts = bool(pluginmanager.hook.chatkit_authenticate.get_hookimpls())
        private = settings.get("private", self.accounts)
        if not isinstance(private, bool):
            raise UsageError(f"history: private must be true or false, not {private!r}")
        self.private = private
        self._limits = config.limits
        synchronous = settings.get("synchronous", "normal")
        if synchronous not in ("normal", "full"):
            raise UsageError(
                f"history: synchronous must be 'normal' or 'full', not {synchronous!r}"
            )
        self._options = {
            "synchronous": synchronous,
            "keep": count("keep", KEEP),
            "keep_days": number_setting("history", settings, "keep_days", KEEP_DAYS, 0),
            "max_batch": count("max_batch", MAX_BATCH, 1),
            "prune_interval": number_setting(
                "history", settings, "prune_interval", PRUNE_INTERVAL, 0
            ),
            "busy_timeout": number_setting("history", settings, "busy_timeout", BUSY_TIMEOUT, 0),
        }

    @hookimpl
    def chatkit_server_start(self, server: Server) -> None:
        self._server = server
        self._limits = server.config.limits  # (what a reload changes in place)
        # Ids must stay above the stored ones even if the clock went back since.
        server.hub.ensure_ids_after(self._store.last_id())

    def _fatal(self, reason: str) -> None:
        """The store gave up (its writer keeps failing): without it every message
        would be refused, so the server stops, loudly (writer thread)."""
        if self._server is not None:
            self._server.fail(f"history: {reason}")

    @hookimpl
    def chatkit_server_stop(self, server: Server) -> None:
        if self.store is not None:
            self.store.close()

    @property
    def _store(self) -> MessageStore:
        if self.store is None:
            raise RuntimeError("the history plugin is not configured")
        return self.store

    # -- storing and replaying -------------------------------------------------------

    @hookimpl
    def chatkit_store_messages(
        self, client: Session, messages: Sequence[Message]
    ) -> Future[None] | list[Future[None] | Drop | None] | Drop:
        """Queue the messages for the store's writer thread, which commits them with
        whatever else arrives meanwhile: a future for each (shared by the messages
        committed together)."""
        sender = client.account
        queued: list[tuple[Message, tuple[str | None, str | None]]] = []
        kept_out: list[int] = []  # private messages, when they are not kept
        for index, message in enumerate(messages):
            if not message.private:
                queued.append((message, (sender, None)))
            elif not self.private:
                kept_out.append(index)
            else:
                found = None if self._server is None else self._server.hub.find(message.to or "")
                queued.append((message, (sender, None if found is None else found.account)))
        try:
            results = self._store.submit_run(queued) if queued else []
        except StoreError as exc:
            return Drop(str(exc))
        if not kept_out and results:
            first = results[0]
            if isinstance(first, Future) and results.count(first) == len(results):
                return first  # all committed together: one future for all (the common case)
        answers: list[Future[None] | Drop | None] = [
            Drop(str(result)) if isinstance(result, StoreError) else result for result in results
        ]
        for index in kept_out:  # (ascending: each lands where it was)
            answers.insert(index, None)
        return answers

    @hookimpl
    def chatkit_on_account_deleted(self, account: str) -> None:
        changed = self._store.detach_account(account)
        log.info("history: %d message(s) no longer tied to deleted account %s", changed, account)

    @hookimpl
    def chatkit_room_replay(self, client: Session, room: str, last_id: int) -> list[Frame] | None:
        # The client's choice (hello's replay and since) wins over the setting; one
        # that has every message up to `since` may be replayed a page of the rest.
        count = self.replay if client.replay_since is None else self.max_page
        if client.replay is not None:
            count = min(client.replay, self.max_page)
        if not count:
            return None
        try:
            messages, more = self._store.room_page(
                room, upto=last_id, after=client.replay_since, limit=count
            )
        except StoreError as exc:
            return [Frame("notice", text=f"no history for {room}: {exc}")]
        if not messages:
            return []
        return self._frames(client, messages, more, room=room)

    # -- asking for more ---------------------------------------------------------------

    @hookimpl
    def chatkit_register_commands(self, register: Register) -> None:
        register(
            "history",
            self.history_command,
            help="show earlier messages of a room, or of your conversation with NICK",
            usage="[#ROOM|NICK] [N] [before ID]",
        )

    def history_command(self, ctx: CommandContext) -> None:
        words = ctx.args.split()
        limit, before = self.page, None
        usage = CommandError(
            f"usage: /history [#ROOM|NICK] [N] [before ID], N from 1 to {self.max_page}",
            "bad_usage",
        )
        if (
            len(words) >= 2
            and words[-2].lower() == "before"
            and not (
                len(words) == 2
                and words[-1].isdecimal()
                and len(words[-1]) <= 9
                and int(words[-1]) <= self.max_page
            )
        ):
            # The page before it (a page's closing line names the id to go on from).
            # (Not `/history before 20`: a conversation with a nick called before, 20
            # of it; an id is never that small.)
            if not words[-1].isdecimal() or len(words[-1]) > 19 or int(words[-1]) > MAX_ID:
                raise usage
            before = int(words.pop())
            words.pop()
        if words and words[-1].isdecimal():
            digits = words.pop()  # (isdecimal, not isdigit: "²" is a digit int() refuses)
            limit = int(digits) if len(digits) <= 9 else self.max_page + 1
        if len(words) > 1 or not 1 <= limit <= self.max_page:
            raise usage
        target = words[0] if words else ctx.room
        if target is None:
            raise CommandError("you are in no room; /history #room or /history NICK", "not_in_room")
        self._send_page(ctx.client, target, Page(limit, before=before))

    @hookimpl
    def chatkit_handle_request(self, client: Session, request: Request) -> bool | Reject | None:
        if request.type == "history_targets":
            return self._targets(client, request.fields)
        if request.type != "history":
            return None
        if not client.logged_in:
            return Reject("log in first: send a hello frame", "not_logged_in")
        fields = request.fields
        room, other = fields.get("room"), fields.get("with")
        limit = fields.get("limit", self.page)
        if room is not None and other is not None:
            return Reject("history: give 'room' or 'with', not both", "bad_frame")
        if isinstance(room, str) and room:
            room = room_name(room)  # (its "#" may be left out, as a hello's and a say's)
        target = room if room is not None else other if other is not None else client.current_room
        if not isinstance(target, str):
            return Reject("history: 'room' and 'with' are strings", "bad_frame")
        page = Page(limit=0)
        for key in ("before", "after", "around"):
            value = fields.get(key)
            # (0 too: after 0 is from the first message, before 0 none; a client
            # turning the epoch into an id gets that, not an error.)
            if value is not None and (not _is_int(value) or not 0 <= value <= MAX_ID):
                return Reject(f"history: '{key}' must be a message id", "bad_frame")
            setattr(page, key, value)
        oldest = fields.get("oldest", False)
        if not isinstance(oldest, bool):
            return Reject("history: 'oldest' must be true or false", "bad_frame")
        if page.around is not None and (page.before, page.after, oldest) != (None, None, False):
            return Reject("history: 'around' goes alone", "bad_frame")
        page.oldest = oldest
        if not _is_int(limit) or not 1 <= limit <= self.max_page:
            return Reject(f"history: 'limit' must be 1 to {self.max_page}", "bad_frame")
        page.limit = limit
        if room == "":
            return Reject("history: 'room' is a room name", "bad_frame")
        try:
            self._send_page(client, target, page)
        except CommandError as exc:
            return Reject(exc.text, exc.code, dict(exc.details))
        return True

    def _targets(self, client: Session, fields: dict[str, Any]) -> bool | Reject:
        """A ``history_targets`` request: the rooms the client is in and its private
        conversations with messages between ``after`` and ``before`` (ids, excluded),
        each with its latest message's ``id`` and ``ts`` (IRC's ``CHATHISTORY TARGETS``)."""
        if not client.logged_in:
            return Reject("log in first: send a hello frame", "not_logged_in")
        after, before = fields.get("after", 0), fields.get("before", MAX_ID)
        limit, oldest = fields.get("limit", self.page), fields.get("oldest", False)
        if not all(_is_int(v) and 0 <= v <= MAX_ID for v in (after, before)):
            return Reject("history_targets: 'after' and 'before' are message ids", "bad_frame")
        if not _is_int(limit) or not 1 <= limit <= self.max_page:
            return Reject(f"history_targets: 'limit' must be 1 to {self.max_page}", "bad_frame")
        if not isinstance(oldest, bool):
            return Reject("history_targets: 'oldest' must be true or false", "bad_frame")
        # Private conversations: only when stored, and by account when accounts exist.
        private = self.private and not (self.accounts and client.account is None)
        try:
            found = self._store.targets(
                list(client.rooms.values()),
                client.nick if private else None,
                after=after,
                before=before,
                limit=limit,
                oldest=oldest,
                account=client.account if self.accounts else None,
            )
        except StoreError as exc:
            return Reject(str(exc), "internal_error")
        targets = [{"target": target, "id": id_, "ts": ts} for target, id_, ts in found]
        client.send(Frame("history_targets", targets=targets))
        return True

    def _frames(
        self,
        client: Session,
        messages: list[Message],
        more: bool,
        oldest: bool = False,
        **where: Any,
    ) -> list[Frame]:
        """History frames for the newest (``oldest``: the oldest) of ``messages`` that
        fit in ``page_bytes``, oldest first, and the closing ``history`` frame."""
        frames: list[Frame] = []
        size = 0
        room = where.get("room")
        for message in messages if oldest else reversed(messages):
            frame = message_frame(message, history=True)
            if room is not None:
                # As the room is spelled now: one emptied and made again in another case
                # (#CaseRoom, now #caseroom) is the same room, and its joiners' frames
                # name it so.
                frame.fields["room"] = room
            elif "with" in where:
                # The conversation asked for: with accounts its messages may be between
                # earlier nicks of either side, so a client cannot tell it from theirs.
                frame.fields["with"] = where["with"]
            size += len(frame.encode(client.codec))
            if size > self.page_bytes and frames:
                more = True  # the rest is for the next page
                break
            frames.append(frame)
        if not oldest:
            frames.reverse()
        # first: the oldest message's id, from which the page before goes on.
        first = {"first": frames[0].fields["id"]} if frames else {}
        frames.append(Frame("history", **where, count=len(frames), more=more, **first))
        return frames

    def _charge(self, client: Session, messages: int) -> None:
        """A page of ``messages`` is as much work as they are: past the request's own
        line, a line of input more for each :data:`MESSAGES_PER_LINE` (flood control
        counts them; a 500-message page asked for again and again took a core). Raises
        :class:`CommandError` if refused."""
        if self._server is None:
            return
        for _ in range(1, -(-messages // MESSAGES_PER_LINE)):
            self._server.hub.allow_input(client, Say("/history", command=True))

    def _send_page(self, client: Session, target: str, page: Page) -> None:
        """Send a page of a room's (``#name``) or a private conversation's history."""
        where: dict[str, Any] = {}
        try:
            if target.startswith("#"):
                room = client.rooms.get(fold(target))
                if room is None:
                    raise CommandError(f"you are not in {target}; /join it first", "not_in_room")
                where = {"room": room}

                def read(**bounds: Any) -> tuple[list[Message], bool]:
                    return self._store.room_page(room, **bounds)

            else:
                if valid_nick(target, self.max_nick):
                    raise CommandError(f"no such room or nick: {target!r}", "bad_usage")
                me = client.nick or ""
                where = {"with": target}
                if not self.private:
                    where["stored"] = False  # an empty page, and why

                    def read(**bounds: Any) -> tuple[list[Message], bool]:
                        # Not what an earlier run with private = true stored either:
                        # it would go to whoever holds the nick now.
                        return [], False

                elif self.accounts and client.account is None:
                    raise CommandError(
                        f"your private history with {target} is shown to registered nicks: "
                        f"/identify first, or /register (a room's history: /history #{target})",
                        "not_identified",
                    )

                else:
                    # Its account's conversation with target's: target's holder now, if
                    # identified, else the account last on the other side of their
                    # messages, else the account of that name, if any (both follow their
                    # accounts across renames: private_page).
                    found = None if self._server is None else self._server.hub.find(target)
                    other = found.account if found is not None else None
                    if other is None and client.account is not None:
                        other = self._store.party_account(client.account, target)
                    other = other or fold(target)

                    def read(**bounds: Any) -> tuple[list[Message], bool]:
                        return self._store.private_page(
                            me, target, account=client.account, other=other, **bounds
                        )

            self._charge(client, page.limit * (2 if page.around is not None else 1))
            if page.around is not None:
                # The message (or the time) in the middle: as many before it as after,
                # and when one side runs short, the other fills the page.
                older, more = read(upto=page.around, limit=page.limit)
                newer, _ = read(after=page.around, limit=page.limit, oldest=True)
                take_new = min(len(newer), page.limit // 2)
                take_old = min(len(older), page.limit - take_new)
                take_new = min(len(newer), page.limit - take_old)
                more = more or take_old < len(older)
                messages, oldest = older[len(older) - take_old :] + newer[:take_new], False
            else:
                messages, more = read(
                    before=page.before, after=page.after, limit=page.limit, oldest=page.oldest
                )
                oldest = page.oldest
            frames = self._frames(client, messages, more, oldest, **where)
        except StoreError as exc:
            # Which page failed (room or with), for a client with several asked for.
            asked = {key: value for key, value in where.items() if key in ("room", "with")}
            raise CommandError(str(exc), "internal_error", request="history", **asked) from None
        for frame in frames:
            client.send(frame)


@dataclass
class Page:
    """Which messages a history request asks for (ids are exclusive bounds)."""

    limit: int
    before: int | None = None
    after: int | None = None
    around: int | None = None
    """The middle of the page: up to half the page up to it (itself included), the
    rest after it; when one side has fewer, the other fills the page."""
    oldest: bool = False
    """Take the first ``limit`` messages of the range, not the last."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
