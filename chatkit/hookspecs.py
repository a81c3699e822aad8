"""The plugin contract: every hook chatkit calls, in one file.

Lifecycle
---------

The order in which the server calls the hooks, written once here and nowhere else
(tests/test_lifecycle.py runs a real server and checks its calls against these lines).
Each line is one thing that happens; words in parentheses are what the server does
between two hooks, with no hook of its own::

    check:    chatkit_check_config (``chatkit check``: no server is started)
    startup:  (bind and listen) → chatkit_configure → chatkit_register_commands
              → chatkit_server_start → (clients are accepted)
    connect:  (a connection is accepted by a face's listener; on the line face its
              first line chooses JSON or text)
    hello:    chatkit_allow_input → (nick syntax) → chatkit_allow_login (the hello's fields)
              → (nick free?) → chatkit_allow_join (the default room) → (welcome)
              → chatkit_on_login → (the room's earlier messages delivered)
              → chatkit_room_replay → (join to every member, then the replay)
              → chatkit_on_join
    say:      chatkit_allow_input → chatkit_filter_message → (id and ts)
              → chatkit_store_messages → chatkit_store_message
              → (delivered to every recipient) → chatkit_on_message
    /msg:     chatkit_allow_input → chatkit_filter_message → (id and ts)
              → chatkit_store_messages → chatkit_store_message
              → (delivered to both) → chatkit_on_message
    /join:    chatkit_allow_input → (room syntax) → chatkit_allow_join
              → (the room's earlier messages delivered) → chatkit_room_replay
              → (join to every member, then the replay) → chatkit_on_join
    /nick:    chatkit_allow_input → (nick syntax) → chatkit_allow_nick
              → (nick free?) → (nick to everyone who shares a room) → chatkit_on_nick
    /part:    chatkit_allow_input → (leave to the room's members) → chatkit_on_leave
    /topic:   chatkit_allow_input → chatkit_allow_topic → (topic to the room's members)
              → chatkit_on_topic
    /register: chatkit_allow_input → (the command: it, or /identify, /logout,
              changed the account) → (account to the client and everyone who
              shares a room) → chatkit_on_account
    /drop:    chatkit_allow_input → (the account deleted) → chatkit_on_account_deleted
              → (account to the client and everyone who shares a room)
              → chatkit_on_account
    /away:    chatkit_allow_input → (if it changed:) chatkit_filter_message (each
              room, an empty message: may it speak there?) → (away to everyone who
              shares such a room) → chatkit_on_away
    request:  chatkit_allow_input → chatkit_handle_request (before login too)
    ready:    (a JSON ping asking ``{"ready": true}``, before login too) → chatkit_check_ready
    authenticate: chatkit_authenticate (IRC SASL, before login)
    logout:   (leave to the members of its rooms) → chatkit_on_leave (each room)
              → chatkit_on_logout
    shutdown: (stop accepting; a notice to each client; connections closed, each
              a logout as above; threads joined) → chatkit_server_stop

* A client's lines are ``hello``, ``say`` (a message, or a command if it starts
  with ``/``: its handler runs instead of the message hooks; ``/me`` goes on as a
  ``say``, and ``/msg``, ``/join``, ``/nick``, ``/part`` as shown), a JSON frame of
  a type the core does not know (a ``request``), and ``ping``/``pong``, which no
  hook sees but ``chatkit_check_ready``, for a ping that asks whether the server is
  ready (``chatkit ping --ready``). ``say`` needs a logged-in client; a request reaches the plugins
  before login too (a registration may come first).
* A refusal ends the line where it happens (the client gets an ``error`` frame and
  may try again); only a refused default room lets the login go on, without the
  room (no replay, no ``chatkit_on_join``). A client leaves (``logout``) when its
  connection closes, on ``/quit``, when it is cut off, and at shutdown.
* A message waits for ``chatkit_store_messages`` and ``chatkit_store_message``, and a
  join for ``chatkit_room_replay``, only when some plugin implements one of them (deliveries
  then keep their order through the room's lane: see ``chatkit_store_message``);
  otherwise a message is delivered as soon as it has its id, and a joiner gets no
  replay.
* Startup and shutdown run on the thread that calls ``Server.start()`` and
  ``Server.shutdown()``; everything else on the reader thread of the client whose
  line it is, one line after the other, so one client's hooks run in this order.

Rules
-----

Rules that hold for every hook unless its docstring says otherwise:

* Hooks are called plugin by plugin: plugins named with ``--plugin`` first, in the
  order given, then the builtins; ``tryfirst``/``trylast`` override that.
* Connection and message hooks run on the **reader thread of the client that caused
  the event**, so many run at once: a kick runs the kicked client's
  ``chatkit_on_leave`` on the kicker's thread, a plugin's timer its hooks on the
  timer's. A plugin that keeps state guards it with its own lock. No chatkit lock is
  held while a connection or message hook runs, so a hook may call back into the
  server (send, join, rename...); the exceptions are said where they hold
  (``chatkit_check_ready``, a reload's ``chatkit_configure``). A client's reader
  ends while it is idle and another starts when it talks again (``idle_park``): keep
  per-client state on the client, not in thread-locals.
* A hook must not block for long: the client whose thread it runs on waits.
* No hook is ever called once per recipient of a message.
* If a notify hook (``chatkit_on_*``, ``chatkit_server_*``) raises, the error is
  logged with the plugin's name and the remaining plugins still run. Veto and filter
  hooks fail closed: an exception counts as a refusal. Startup hooks
  (``chatkit_configure``, ``chatkit_register_commands``) stop the server from
  starting.
* Hook wrappers are not supported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from collections.abc import Sequence
    from concurrent.futures import Future

    from chatkit.commands import Register
    from chatkit.config import Config
    from chatkit.events import Hello, Message, Request, Say
    from chatkit.frames import Frame
    from chatkit.hub import Hub
    from chatkit.results import Drop, Reject, Wait
    from chatkit.session import Session

__all__ = ["ChatServer", "hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("chatkit")
hookimpl = pluggy.HookimplMarker("chatkit")


class ChatServer(Protocol):
    """What the server hooks receive as ``server``: :class:`chatkit.Server` is one.

    An interface here, not the class, so that the contract imports nothing above
    the hub (the server loads the plugins, which load this file).
    """

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server listens on."""
        ...

    @property
    def config(self) -> Config:
        """The server's configuration."""
        ...

    @property
    def hub(self) -> Hub:
        """The chat."""
        ...

    def fail(self, reason: str) -> None:
        """Stop the server because a plugin cannot go on; ``reason`` is logged."""
        ...

    def stats(self) -> dict[str, Any]:
        """The server's counters (what ``/stats`` shows)."""
        ...


# ---------------------------------------------------------------------------
# Startup
# ---------------------------------------------------------------------------


@hookspec
def chatkit_check_config(config: Config, pluginmanager: pluggy.PluginManager) -> None:
    """Check settings without acting on them: ``chatkit check FILE`` calls it, so that
    a deploy can test a config before it restarts the server.

    Called on the CLI's main thread, on a plugin instance that is never configured or
    started, with the same arguments ``chatkit_configure`` would get; often beside a
    running server that uses the same file. So open nothing: no database, port,
    connection or thread (reading settings and checking their values is the point).

    Return value is ignored. Raise :class:`~chatkit.UsageError` for a bad setting:
    ``chatkit check`` prints it and exits with status 2; any other exception is
    reported with the plugin's name, the same way. The server does not call this
    hook: ``chatkit_configure`` checks its settings too (the builtins call one
    function from both). A plugin without it has its settings checked only when the
    server starts, and ``chatkit check`` says so.
    """


@hookspec
def chatkit_configure(config: Config, pluginmanager: pluggy.PluginManager) -> None:
    """Read settings and prepare, once, before the server accepts clients.

    The first hook of the lifecycle's ``startup`` line, on the thread that starts
    the server.

    :param config: The server's :class:`~chatkit.Config`. A plugin's own settings
        are ``config.plugin_settings("NAME")`` (the ``[plugins.NAME]`` table).
    :param pluginmanager: The server's pluggy ``PluginManager``.

    Return value is ignored. A plugin may not change ``config``. Raise
    :class:`~chatkit.UsageError` for a bad setting: the server does not start and
    the CLI prints the message; any other exception also stops the start, reported
    with the plugin's name.

    **Reload** (``Server.reload``, SIGHUP): a plugin whose settings or source file
    changed, or that a reload enables, is a new instance (a class is instantiated
    again; a module is re-imported if its file changed) configured here with the new
    config, on the reloading thread (the CLI's main thread for SIGHUP, the operator's
    reader thread for ``/reload``), while clients are served, under the server's
    reload lock (reloads take turns: do not start another from here); then it gets
    ``chatkit_register_commands`` and ``chatkit_server_start``.
    Raising :class:`~chatkit.UsageError` then refuses the reload: the server goes on
    with the old config, and the plugins the reload stopped are started again as new
    instances configured as before (what they held in memory is gone). A plugin with
    ``chatkit_check_config`` has its new settings checked by it before anything stops:
    refused there, the reload leaves every plugin untouched. A plugin whose settings
    did not change is not called.
    """


@hookspec
def chatkit_register_commands(register: Register) -> None:
    """Register chat commands: at startup, after ``chatkit_configure``, and again at
    each reload (``/reload``, SIGHUP), which collects every plugin's commands afresh:
    register the same ones each time.

    :param register: Call ``register(name, handler, help="...", usage="...")`` once
        per command. ``handler(ctx)`` receives a :class:`~chatkit.CommandContext`
        and runs on the reader thread of the client who typed the command. It
        may raise :class:`~chatkit.CommandError` to send the user an error; any
        other exception gives the user ``internal error in /NAME`` and the log a
        traceback.

    Return value is ignored. Registering a name that another plugin already
    registered stops the server from starting with an error naming both plugins.
    An exception stops the start too.

    ``chatkit plugins``, which lists every plugin's commands, calls it too, on an
    instance it made for that and never configured: register the same names whatever
    the settings (a plugin whose command names came from its settings would list its
    defaults there).
    """


@hookspec
def chatkit_server_start(server: ChatServer) -> None:
    """Called once the server listens, before the first client is accepted
    (connections wait in the listen backlog until every plugin's returns: do not wait
    here for a client of this server, a bot's login, say; start a thread for it).

    :param server: The :class:`~chatkit.Server`; ``server.address`` is bound, and
        ``server.hub`` is the chat a plugin keeps, to act on later from its own threads
        (``hub.announce`` a timer's notice; the calls of docs/plugins.md, section 11).

    Return value is ignored. Runs on the thread that called ``Server.start()``
    (or ``Server.reload()``, for a plugin a reload started: clients are connected
    then). If it raises, the error is logged and the other plugins still run.
    """


# ---------------------------------------------------------------------------
# Connection
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def chatkit_allow_input(client: Session, event: Hello | Say | Request) -> Reject | Wait | None:
    """Decide whether the server handles a ``hello``, ``say`` or plugin request at all.

    Runs first for every such event, logged in or not, before any other hook;
    ``ping`` and ``pong`` never pass through it. Rate limits live here (the builtin
    ``flood`` plugin).

    :param client: The session that sent it.
    :param event: What the client asked, whatever its wire protocol (face):
        :class:`chatkit.Hello` (``event.nick``, ``event.fields``),
        :class:`chatkit.Say` (``event.text``, ``event.room``,
        ``event.command``) or :class:`chatkit.Request` (``event.type``,
        ``event.fields``: a frame for ``chatkit_handle_request``).

    Return ``None`` to go on, or a :class:`~chatkit.Reject` to drop the event: the
    client receives an ``error`` frame with the reject's code, reason and
    ``details`` (e.g. ``retry_after``), and nothing else happens. First
    rejection wins. Or a :class:`~chatkit.Wait` to hold it back: the client's reader
    thread (it runs there, with no lock held) delivers the client's earlier messages,
    sleeps that long reading nothing more from the client, then calls the hook again
    (the ``flood`` plugin does so for a :attr:`~chatkit.Session.paced` session). If it
    raises, the event is refused (fail closed) and logged.
    """


@hookspec(firstresult=True)
def chatkit_allow_login(client: Session, nick: str, fields: dict[str, Any]) -> Reject | None:
    """Decide whether a client may log in as ``nick``: the place for passwords and tokens.

    Where it runs: the ``hello`` line of the lifecycle, after the nick's syntax is
    checked and before the nick is checked to be free.

    :param client: The session asking; ``client.nick`` is still ``None``.
    :param nick: The nick asked for.
    :param fields: The ``hello`` frame's other fields, as the client sent them
        (``{"type": "hello", "nick": "ann", "password": "..."}`` gives
        ``{"password": "..."}``): check their types. In text mode, ``{"password":
        ...}`` when the nick line had more after a space (``ann sesame``), or when the
        line after a refusal coded ``nick_registered`` or ``bad_password`` is taken
        for the password alone; else empty. Plugins that take no ``fields`` parameter
        are called as before.

    Return ``None`` to allow, or a :class:`~chatkit.Reject` to refuse: the first
    plugin to reject wins, there is no "force allow", and the client may try
    another nick. Must not change its arguments, but for one thing: a plugin the
    login proves an account to (a password) sets ``client.account``, so that the
    hooks after it (a ban's, here and in ``chatkit_allow_join`` for the login's
    room) see it; if the login is refused after all, the hub puts back the
    account the session had. If it raises, the login is refused (fail closed)
    and the error logged.
    """


@hookspec(firstresult=True)
def chatkit_authenticate(client: Session, account: str, password: str) -> bool | Reject | None:
    """Check an account's password before login: IRC's SASL ``PLAIN``.

    Runs on the client's reader thread when its face asks for a login by account
    and password apart from the nick (the IRC face, for ``AUTHENTICATE``), before
    ``chatkit_allow_login``; other faces send the password with the login itself
    (``hello``'s ``password``), which ``chatkit_allow_login`` checks.

    :param client: The session asking; ``client.nick`` is ``None``.
    :param account: The account named (for the builtin ``accounts``, a registered
        nick, any case).
    :param password: The password, as sent. Never log it.

    Return ``True`` if the password is right: the plugin then sets
    ``client.account``, which later hooks (``chatkit_allow_login`` for a
    registered nick) trust; ``False`` if it is wrong (the client gets
    ``bad_password``), or a :class:`~chatkit.Reject` to say so in words of your own
    or make the client wait (``auth_throttled`` with ``retry_after``);
    ``None`` if the plugin keeps no accounts. Stops at the first non-``None``
    result; with none, the face answers that it cannot authenticate. May set
    ``client.account``, nothing else of its arguments. If it raises, the
    authentication fails (fail closed) and the error is logged.
    """


@hookspec(firstresult=True)
def chatkit_allow_nick(client: Session, nick: str) -> Reject | None:
    """Decide whether a logged-in client may change its nick to ``nick`` (``/nick``).

    Where it runs: the ``/nick`` line of the lifecycle, after the nick's syntax is
    checked and before it is checked to be free. A rename a plugin forces
    (``hub.rename(..., forced=True)``: a guest moved off a registered nick) does not
    ask.

    :param client: The session; ``client.nick`` is the current nick.
    :param nick: The nick asked for.

    Return ``None`` to allow or a :class:`~chatkit.Reject` to refuse (first wins).
    If it raises, the change is refused (fail closed) and the error logged.
    """


@hookspec
def chatkit_on_login(client: Session) -> None:
    """Called after a client logged in and received its ``welcome``.

    Runs on the client's reader thread, before the client joins the default room
    (so what it sends comes before that room's ``join`` and replay) and before
    ``chatkit_on_join``. :param client: the session, ``client.nick`` set. A good
    place to send a greeting with ``client.notice(...)``.

    Return value is ignored. If it raises, the error is logged and the other
    plugins still run.
    """


@hookspec(firstresult=True)
def chatkit_allow_join(client: Session, room: str) -> Reject | None:
    """Decide whether a client may join ``room`` (at login for the default room, and ``/join``).

    Where it runs: the ``hello`` line (for the default room) and the ``/join``
    line of the lifecycle, after the room name's syntax is checked.

    :param client: The session. At login, ``client.nick`` is the nick it logs in
        with, and ``client.account`` an account the login proved, already; it is
        not welcomed yet, and nothing should be sent to it.
    :param room: The room's name as the client typed it (``#`` included).

    Return ``None`` to allow or a :class:`~chatkit.Reject` to refuse (first wins).
    A refused default room does not refuse the login: the client is logged in
    with no room. If it raises, the join is refused (fail closed) and logged.
    """


@hookspec(firstresult=True)
def chatkit_room_replay(client: Session, room: str, last_id: int) -> list[Frame] | None:
    """Give a client joining ``room`` the frames it sees first: the room's history.

    Called for every join (the default room at login, and ``/join``) after
    ``chatkit_allow_join``, on the joiner's reader thread, with no lock held, at
    a moment chosen so that nothing is lost or doubled: every message of the room
    with an id up to ``last_id`` has been stored (the store hooks) and
    delivered, and every later one reaches the joiner live, after this hook
    returns. So return the room's stored messages with ids up to ``last_id``
    (later ones may be stored already: leave them out); the joiner receives its
    ``join`` frame, then these frames, then live traffic. The room's other
    messages wait while it runs: keep it to one quick read.

    :param client: The joining session.
    :param room: The room's display name.
    :param last_id: The last message id given out (in any room) when the join
        took its place in the room's delivery order; 0 if none yet.

    Return a list of :class:`~chatkit.Frame` (``message`` frames with
    ``history=True``, typically, and a closing ``history`` frame) or ``None``
    to leave it to the next plugin. The first list wins. If it raises, or the list
    holds anything but frames, the error is logged and the client joins without a
    replay. It must not say into ``room`` or join anyone to it (the hub raises
    ``RuntimeError``): the join being replayed holds the room until the hook
    returns; greet from ``chatkit_on_join``. Implementing this hook makes joins wait
    in their room's lane for it (see ``chatkit_store_message``).
    """


@hookspec
def chatkit_on_join(client: Session, room: str) -> None:
    """Called after ``client`` joined ``room`` and every member was sent the ``join``.

    Return value is ignored. If it raises, the error is logged and the other
    plugins still run.
    """


@hookspec
def chatkit_on_nick(client: Session, old: str) -> None:
    """Called after ``client`` changed its nick from ``old`` to ``client.nick``.

    Return value is ignored. If it raises, the error is logged and the other
    plugins still run.
    """


@hookspec
def chatkit_on_leave(client: Session, room: str, reason: str, by: str | None) -> None:
    """Called after ``client`` left ``room`` and the remaining members were told.

    :param reason: ``part``, ``part: <text>`` for ``/part``, or the reason of the
        logout (``quit: <text>``, ``connection closed``, ``send queue exceeded``,
        ``ping timeout``, ``server shutdown``) when the client leaves every room
        because it disconnects.
    :param by: The nick of the operator who removed it (a kick: ``hub.part(...,
        by=...)``, which the ``leave`` frame carries too), else ``None``. (An
        implementation may leave out the arguments it does not use.)

    Return value is ignored. If it raises, the error is logged and the other
    plugins still run.
    """


@hookspec(firstresult=True)
def chatkit_allow_topic(client: Session, room: str, topic: str) -> Reject | None:
    """Decide whether a client may set the topic of ``room`` (``/topic TEXT``, IRC ``TOPIC``).

    Where it runs: the ``/topic`` line of the lifecycle, after the topic's length is
    checked and the client is known to be a member of ``room``.

    :param client: The session; a member of ``room``.
    :param room: The room's name as the client typed it.
    :param topic: The new topic; ``""`` clears it.

    Return ``None`` to allow or a :class:`~chatkit.Reject` to refuse (first wins; the
    builtin ``moderation`` refuses ``not_room_operator`` in a room set ``topic_ops``).
    If it raises, the change is refused (fail closed) and the error logged.
    """


@hookspec
def chatkit_on_topic(client: Session, room: str, topic: dict[str, str]) -> None:
    """Called after ``client`` set the topic of ``room`` and every member was told.

    :param room: The room's display name.
    :param topic: The ``topic`` frame's fields: ``room``, ``topic`` (``""`` if
        cleared), ``nick`` (who set it), ``ts``. A plugin that keeps topics across
        restarts stores it here and gives it back with ``hub.restore_topic``.

    Return value is ignored. If it raises, the error is logged and the other
    plugins still run.
    """


@hookspec
def chatkit_on_account(client: Session) -> None:
    """Called after a logged-in client's account changed: ``client.account`` is the
    new one, or ``None`` (``/identify``, ``/register``, ``/logout``, ``/drop``: a
    command that changed it).

    Runs on the client's reader thread, after the ``account`` frame went to it and to
    everyone sharing a room with it; for a client whose account someone else deleted
    or gave a new password (``hub.forget_account``), on that one's thread. An
    account proven at login (a ``hello`` with a password, IRC SASL) is not a change:
    ``chatkit_on_login`` sees it. The ``cluster`` plugin tells the other nodes here.

    Return value is ignored. If it raises, the error is logged and the other
    plugins still run.
    """


@hookspec
def chatkit_on_away(client: Session) -> None:
    """Called after a logged-in client went away, changed its away message or came
    back (``/away``, IRC's ``AWAY``): ``client.away`` is the message now, or ``None``.
    Not called when it did not change (``/away`` while here).

    Runs on the client's reader thread, after the ``away`` frame went to everyone
    sharing a room with it. The ``cluster`` plugin tells the other nodes here.

    Return value is ignored. If it raises, the error is logged and the other
    plugins still run.
    """


@hookspec
def chatkit_on_account_deleted(account: str) -> None:
    """Called once an account was deleted (``/drop``): ``account`` is its name (the
    registered nick, case-folded). Whatever a plugin keeps for the account must not
    pass to whoever registers the name next: the builtin ``history`` detaches its
    private messages from it (they stay their other party's), ``moderation`` takes
    back its operator rights.

    Runs on the reader thread of the client that deleted it, while its command runs
    (before ``chatkit_on_account``), through ``hub.account_deleted``, which a plugin
    that keeps accounts calls. In a cluster, the ``cluster`` plugin tells the other
    nodes, whose ``history`` stores detach it too.

    Return value is ignored. If it raises, the error is logged and the other
    plugins still run.
    """


@hookspec
def chatkit_on_logout(client: Session, reason: str) -> None:
    """Called once when a logged-in client is gone, however it went.

    Runs after ``chatkit_on_leave`` for each of its rooms, also for abrupt
    disconnects, on the client's reader thread. ``client.nick`` is its last nick
    and it can no longer be sent anything.

    :param reason: As for ``chatkit_on_leave``.

    Return value is ignored. If it raises, the error is logged and the other
    plugins still run.
    """


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def chatkit_filter_message(client: Session, message: Message) -> Drop | None:
    """Inspect, change or stop a room or private message before anyone receives it.

    Where it runs: the ``say`` and ``/msg`` lines of the lifecycle (and for
    ``/me``), before the message has an id. Also for the client's own words in a
    leave's reason (``/part #room WORDS``, ``/quit WORDS``, IRC's ``PART`` and
    ``QUIT``), once per room it leaves, as a message to that room that is never
    stored or delivered (``message.leave`` says ``part`` or ``quit``): a drop leaves
    the room's ``leave`` without them, a change is what the room sees. And, as an
    empty message to each room concerned, for what reaches a room other than as a
    message: an IRC ``TAGMSG`` (a drop: ``404``) and an away change (``/away``, IRC's
    ``AWAY``; a drop: that room's members are not told, a mute holds there too).

    :param client: The sender's session.
    :param message: The :class:`~chatkit.Message`; ``message.id`` is still ``None``.

    May change ``message.text`` in place (later filters see the change). Return
    ``None`` to let the message go on, or a :class:`~chatkit.Drop` to stop it: the
    sender is told the drop's reason and later filters do not run. If a filter
    raises, the message is not delivered and the sender is told (fail closed).
    """


@hookspec
def chatkit_store_messages(
    client: Session, messages: Sequence[Message]
) -> Future[None] | Drop | Sequence[Future[None] | Drop | None] | None:
    """Store messages before anyone receives them: a reader's run at once.

    What :func:`chatkit_store_message` does, for several messages in one call:
    implement this one if storing a batch costs less than its messages one by
    one (the builtin ``history`` does: its rows queue under one lock). A plugin
    implements one of the two; each is called where the other is.

    Where it runs: as ``chatkit_store_message``. The two hooks are called as one,
    plugin by plugin in the plugins' order (a plugin named with ``--plugin``
    first), each plugin with the messages no plugin before it refused.
    ``messages`` are the messages a client sent in one read of its connection
    (``Hub.say_run``: a burst of chat lines) that are not refused yet, or a
    single message (a ``say`` on its own, a ``/msg``); all from ``client``, in
    id order.

    :param client: The sender's session.
    :param messages: The :class:`~chatkit.Message` objects, ``id`` and ``ts``
        set, text final. Do not change them, nor keep the sequence.

    Return what ``chatkit_store_message`` returns (``None``, a
    :class:`concurrent.futures.Future`, or a :class:`~chatkit.Drop`) for all of
    them at once, or a sequence of those, one per message, in order. A
    :class:`~chatkit.Drop` refuses its messages (all of them, or that one) and
    later plugins are not called for them; a failed future refuses its
    messages too. Each refused message is reported to the sender on its turn
    (an ``error`` frame, code ``not_stored``, naming the room). If it raises (the
    error is logged), or returns anything else (a sequence of another length),
    every message of the call is refused; an answer of another type for one
    message refuses that one. It must not send messages or join rooms
    (``Hub.say``, ``Hub.private``, ``Hub.join``): one sent to a room of the run
    would wait behind the messages being stored, which wait for the hook, so the
    hub refuses them with a :class:`RuntimeError` (the hook raising it refuses
    the call's messages, as above). Not called while a relay sequences messages.
    """


@hookspec
def chatkit_store_message(client: Session, message: Message) -> Future[None] | Drop | None:
    """Store a message before anyone receives it.

    Where it runs: the ``say`` and ``/msg`` lines of the lifecycle, after the
    message has its id. Called once per message, plugin by plugin, on the
    sender's reader thread with no lock held. Messages of one room (and private
    messages) are still delivered in id order: one that is stored early waits
    for earlier ids.

    :param client: The sender's session.
    :param message: The :class:`~chatkit.Message`, ``id`` and ``ts`` set, text
        final. Do not change it.

    Return ``None`` once the message is stored as durably as the plugin
    promises; or a :class:`concurrent.futures.Future` that completes when it
    is (so the client's next lines are read meanwhile: its consecutive messages
    are stored in a pipeline, and delivered, with ``chatkit_on_message``, before
    the reader waits for more input or handles anything but a message); or a
    :class:`~chatkit.Drop` if it cannot be stored, which stops later plugins
    (of both store hooks: they are called as one, in the plugins' order). If it
    raises (the error is logged), or the future fails, it is as for a Drop:
    nobody receives the message and the sender gets an ``error`` frame with code
    ``not_stored`` and the reason. An accepted message is never delivered
    unstored; one plugin may have stored a message another refused. It must not
    send messages or join rooms (as for ``chatkit_store_messages``: a
    :class:`RuntimeError`).

    Not called while a relay sequences messages across servers (``Hub.relay``: the
    builtin ``cluster``, docs/cluster.md), which feeds the ``history`` store itself.
    """


@hookspec
def chatkit_on_message(client: Session, message: Message) -> None:
    """Called once after a message was queued to every recipient.

    :param client: The sender's session.
    :param message: The delivered message, ``id`` and ``ts`` set. Do not change it.

    Called once per message, never per recipient. Return value is ignored. If it
    raises, the error is logged and the other plugins still run.
    """


@hookspec(firstresult=True)
def chatkit_handle_request(client: Session, request: Request) -> bool | Reject | None:
    """Answer a JSON frame of a type the core does not know (``{"type": "history", ...}``).

    Lets a plugin extend the protocol with frames of its own. Runs on the
    sender's reader thread after ``chatkit_allow_input``, **before login too**
    (``client.logged_in`` is then False: a ``register`` request may come first; a
    request that needs a nick must refuse with code ``not_logged_in``). If no plugin
    answers a client that is not logged in, it gets ``not_logged_in``.

    :param client: The session that sent it.
    :param request: :class:`chatkit.Request`: ``request.type`` and
        ``request.fields`` (the frame's other members, as sent: check them).

    Return ``True`` once handled (send replies with ``client.send(...)``), a
    :class:`~chatkit.Reject` to answer with an ``error`` frame (e.g. code
    ``bad_frame`` for a bad field), or ``None`` (or ``False``) if the type is not
    yours. If no
    plugin handles it, the client gets ``bad_frame`` (unknown frame type). If it
    raises, the client gets ``internal_error`` and the error is logged.
    """


@hookspec
def chatkit_check_ready() -> str | None:
    """Say why this server should take no new clients now, if it should not.

    Called for a JSON ``ping`` that asks ``{"ready": true}`` (``chatkit ping --ready``,
    a load balancer's readiness check), on the asking client's reader thread, before
    login too. The server is ready when no plugin names a problem; the ``pong`` then
    says ``"ready": true``, else ``false`` with the ``problems``. A plain ``ping`` (a
    liveness check) calls no hook.

    Return ``None`` if all is well, or a short sentence for people (the ``cluster``
    plugin's: ``cluster: no connection to Redis for 12 s: ...``). Answer from what the
    plugin knows already: do no I/O, and wait for nothing. Anyone who can connect may
    ask, so name no secret (a password, a URL with one). If it raises, the error is
    logged and the server counts as not ready, with that plugin named.

    Asked once a second at most: pings within the second get the last answer. The
    hub's readiness lock is held meanwhile (one asker at a time): do not call
    ``hub.readiness()`` from here.
    """


# ---------------------------------------------------------------------------
# Shutdown
# ---------------------------------------------------------------------------


@hookspec
def chatkit_server_stop(server: ChatServer) -> None:
    """Called once when the server has stopped: clients are gone, threads joined.

    Runs on the thread that called ``Server.shutdown()``; release resources here.
    Return value is ignored. If it raises, the error is logged and the other
    plugins still run.

    A reload that disables or restarts a plugin calls it too, while the server
    runs, on the reloading thread; other hooks of the plugin may still be called
    for a moment afterwards (until the new plugins are in place), so a stopped
    plugin must not fail in them (do nothing, or what it did before). What those
    calls bring (a message, a join) reaches the stopped instance only, not its
    successor: a plugin that counts or stores must count it there, or lose it.

    A start that fails (a later plugin's ``chatkit_configure`` raising, a port in use)
    calls it for every plugin configured by then, the one that raised included,
    without ``chatkit_server_start`` before it: release only what ``chatkit_configure``
    made, and what exists (a thread ``chatkit_server_start`` would have started may not).
    """
