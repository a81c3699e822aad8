"""The interactive ``chatkit join``: incoming lines print above an input line that keeps
what you are typing (prompt_toolkit), with history, completion and colours.

Two threads: the main thread runs the prompt and sends what you type; a receiver
thread reads frames and prints them above the prompt (prompt_toolkit's
``patch_stdout`` makes that safe) and, after a lost connection, reconnects.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import ssl
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.application import Application, get_app_session, run_in_terminal
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.renderer import print_formatted_text as render_fragments
from prompt_toolkit.styles import DummyStyle, Style
from prompt_toolkit.utils import get_cwidth
from prompt_toolkit.validation import ValidationError, Validator

from chatkit.client import (
    Client,
    ClientError,
    ConnectionLost,
    LoginRefused,
    encode_frame,
    printable,
    room_name,
    say_frame,
)
from chatkit.codecs import render_parts
from chatkit.names import fold
from chatkit.protocol import MAX_LINE_BYTES

__all__ = ["Terminal"]

NICK_COLOURS = ("ansicyan", "ansigreen", "ansiyellow", "ansiblue", "ansimagenta", "ansibrightred")
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # seconds between reconnection attempts
MAX_MESSAGE_LINES = 20  # lines in one message (a paste); the server's default max_message_lines

STYLE = Style.from_dict(
    {
        "time": "#888888",
        "dim": "#888888",
        "error": "ansired bold",
        "pm": "ansimagenta bold",
        "action": "italic",
        "notice": "ansiyellow",
        "toolbar": "reverse",
    }
)


def nick_style(nick: str) -> str:
    """A stable colour per nick."""
    return NICK_COLOURS[zlib.crc32(nick.encode()) % len(NICK_COLOURS)]


def _clock(frame: dict[str, Any]) -> str:
    # A replayed message may be days old: it shows its date too.
    shape = "%Y-%m-%d %H:%M" if frame.get("history") else "%H:%M"
    ts = frame.get("ts")
    if isinstance(ts, str):
        try:
            return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone().strftime(shape)
        except ValueError:
            pass
    return time.strftime(shape)


def _text(out: list[tuple[str, str]], style: str, text: str) -> None:
    """Append ``text``; the lines after its first (a pasted message) start below it."""
    indent = "\n" + " " * sum(get_cwidth(part) for _, part in out)  # columns, not characters
    out.append((style, text.replace("\n", indent)))


# The style of a whole line, by frame type (the others are dimmed), and of the parts
# of a message (chatkit.codecs.render_parts) that have one of their own.
_LINE_STYLES = {
    "message": "",
    "private": "",
    "reply": "",
    "error": "class:error",
    "notice": "class:notice",
}
_PART_STYLES = {"room": "class:dim", "pm": "class:pm", "action": "class:action"}


def format_frame(frame: dict[str, Any]) -> list[tuple[str, str]]:
    """A frame as styled text fragments (without the final newline): the time, then the
    words text mode and ``chatkit join`` show (:func:`chatkit.codecs.render_parts`).

    Two decorations of the terminal's own: a replayed message's date and time lead the
    line, in local time, instead of following its room in UTC; and a message of several
    lines shows each line below the first, indented to it (text mode repeats the prefix).
    """
    frame = printable(frame)  # (a hostile server's escape sequences, backspaces, bells)
    out: list[tuple[str, str]] = [("class:time", _clock(frame) + " ")]
    line_style = _LINE_STYLES.get(str(frame.get("type")), "class:dim")
    for role, text in render_parts(frame):
        if role == "when":
            continue  # the clock shows it
        if role == "text":
            _text(out, "class:action" if frame.get("action") else line_style, text)
        elif role in ("nick", "from", "to"):
            out.append((nick_style(str(frame[role])), text))
        else:
            out.append((_PART_STYLES.get(role, line_style), text))
    return out


class ChatCompleter(Completer):
    """Completes /commands (from the server's /help) and nicks in the room."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.nicks: set[str] = set()

    def get_completions(self, document: Document, event: CompleteEvent) -> Iterable[Completion]:
        word = document.get_word_before_cursor(WORD=True)
        if document.text_before_cursor == word and word.startswith("/"):
            for name in self.commands:
                if f"/{name}".startswith(word.lower()):
                    yield Completion(f"/{name}", start_position=-len(word))
            return
        for nick in sorted(self.nicks):
            if word and nick.lower().startswith(word.lower()):
                # The space ends the word: "/msg b<Tab>secret" must not become "bobsecret".
                yield Completion(f"{nick} ", start_position=-len(word), display=nick)


QUIET_WHO_ROOMS = 8  # rooms asked /who for completion after a reconnect, the current one besides
_QUIET = frozenset(("help", "who"))  # the commands whose replies completion may take

LOGIN_WAIT = 30.0  # seconds a reconnect's login may take before it is tried again


def _secret(welcome: dict[str, Any]) -> str | None:
    """The ``resume`` secret of a ``welcome`` (a server without one: ``None``)."""
    resume = welcome.get("resume")
    return resume if isinstance(resume, str) else None


def reconnect_waits() -> Iterator[float]:
    """Seconds between reconnection attempts: :data:`BACKOFF`, then its last for good."""
    return itertools.chain(BACKOFF, itertools.repeat(BACKOFF[-1]))


_NAMES = {"join": ("nick", "room"), "leave": ("nick", "room"), "nick": ("old", "new")}
"""The names a frame of each type must have, as strings, to be followed."""
_FOR_NOW = frozenset(("nick_taken", "server_full", "too_many_connections", "server_busy"))
"""Refusals of a reconnect's login that may not last: try again after a wait."""


class LineLimit(Validator):
    """Refuses, on Enter, a line whose ``say`` frame is over the server's line limit.

    The line stays in the input with the reason below it, to be shortened, instead
    of being sent and discarded by the server (``line_too_long``).
    """

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_bytes = max_bytes
        """The server's limit, in bytes of a line without its newline."""

    def validate(self, document: Document) -> None:
        text = document.text.rstrip()
        lines = text.count("\n") + 1
        if lines > MAX_MESSAGE_LINES:
            raise ValidationError(
                cursor_position=len(document.text),
                message=f"too many lines to send: {lines}, the server takes "
                f"{MAX_MESSAGE_LINES}; shorten it (Ctrl+C clears it)",
            )
        size = len(encode_frame(say_frame(text)))
        if size > self.max_bytes:
            raise ValidationError(
                cursor_position=len(document.text),
                message=f"too long to send: {size} bytes as a frame, the server takes "
                f"{self.max_bytes}; shorten it (Ctrl+C clears it)",
            )


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        """Ctrl+C clears a half-typed line (Up brings it back); on an empty line, quits."""
        buffer = event.current_buffer
        if buffer.text:
            buffer.append_to_history()
            buffer.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt())

    return bindings


class Terminal:
    """One interactive session: the prompt, the receiver thread, reconnection."""

    def __init__(
        self,
        host: str,
        port: int,
        color: bool = True,
        reconnect: bool = True,
        replay: int | None = None,
        tls: ssl.SSLContext | None = None,
        password: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.tls = tls  # speak TLS with this context
        self.password = password  # the registered nick's
        self.replay = replay  # the login's choice of replay (None: the server's)
        self.color = color
        self.reconnect = reconnect
        self.nick = ""
        self.room = ""
        self.rooms: list[str] = []
        self.limit = LineLimit()
        """The prompt's check of a line's size, at the server's ``max_line`` (welcome)."""
        self.last_id: int | None = None  # the newest message shown: a reconnect resumes there
        # The welcome's resume secret: a reconnect takes the nick back with it from the
        # old connection, which the server may not know is dead yet.
        self.resume: str | None = None
        self.client: Client | None = None
        self.completer = ChatCompleter()
        self._quit = threading.Event()  # set once: the user quit, or the end came
        self.exit_code = 0
        self.session: PromptSession[str] | None = None
        # Replies we asked for ourselves (for completion), not shown: /help's, and /who's
        # by room. Each is taken by the thread that reads the connection.
        self._quiet_help = 0
        self._quiet_who: dict[str, int] = {}
        # Lines are shown from two threads (the receiver's frames, the main thread's own
        # notes) around a prompt that comes and goes. The lock makes "is a prompt up?"
        # and printing one step, so a line never lands on a prompt being drawn: while
        # none is up, a line is printed at once; while one is, it waits in _pending
        # for the prompt's loop to print it above the prompt (run_in_terminal). The
        # main thread takes the lock as a prompt starts (pre_run, before it is drawn)
        # and once it has ended, and prints what is pending then: nothing is lost.
        self._output_lock = threading.Lock()
        self._pending: list[list[tuple[str, str]]] = []  # lines not printed yet
        self._prompt_app: Application[str] | None = None  # the prompt that is up, if any

    @property
    def quitting(self) -> bool:
        """Whether the client is ending (``/quit``, Ctrl+D, a lost connection given up)."""
        return self._quit.is_set()

    @quitting.setter
    def quitting(self, value: bool) -> None:
        assert value, "quitting is never undone"
        self._quit.set()  # (wakes a reconnect's wait: a quit meanwhile ends it at once)

    # -- output ----------------------------------------------------------------

    def show(self, fragments: list[tuple[str, str]]) -> None:
        """Show a line: now, or above the prompt if one is up (any thread)."""
        with self._output_lock:
            self._pending.append(fragments)
            app = self._prompt_app
            if app is None or app.loop is None:
                self._print_pending()
                return
            loop = app.loop
        loop.call_soon_threadsafe(lambda: run_in_terminal(self._print_pending_locked))

    def _print_pending_locked(self) -> None:
        with self._output_lock:
            self._print_pending()

    def _print_pending(self) -> None:
        """Print the pending lines (with the output lock held)."""
        lines, self._pending = self._pending, []
        if not lines:
            return
        output = get_app_session().output
        for fragments in lines:
            if not self.color:
                fragments = [("", "".join(text for _, text in fragments))]
            style = STYLE if self.color else DummyStyle()
            render_fragments(output, FormattedText([*fragments, ("", "\n")]), style)
        output.flush()

    def _prompt_started(self) -> None:
        """The prompt's pre_run, on its loop before it is drawn: lines wait from now on."""
        with self._output_lock:
            self._print_pending()
            self._prompt_app = self.session.app if self.session is not None else None
        self._exit_if_quitting()

    def _prompt_ended(self) -> None:
        """The prompt is gone (erased): lines are printed at once again, the waiting first."""
        with self._output_lock:
            self._prompt_app = None
            self._print_pending()

    def say(self, text: str, style: str = "class:dim") -> None:
        """Show a line of the client's own (a connection notice, an error), with the time."""
        self.show([("class:time", time.strftime("%H:%M") + " "), (style, text)])

    # -- connecting --------------------------------------------------------------

    def login(self, nick: str | None, room: str | None = None) -> bool:
        """Ask for a nick (unless given), connect and log in, asking again until one is
        accepted; False to give up.

        The nick is asked for before connecting: a connection that says nothing is
        greeted as a person's ``nc`` would be, then closed (``first_byte_timeout``,
        ``login_timeout``), and a person may take their time. One closed while a
        refused nick's replacement was typed is opened again."""
        session: PromptSession[str] = PromptSession()
        while True:
            if not nick:
                try:
                    nick = session.prompt("nick: ").strip()
                except (EOFError, KeyboardInterrupt):
                    if self.client is not None:
                        self.client.close()
                    return False
                if not nick:
                    continue
            client = self.client
            if client is None or client.closed:
                client = self.client = Client.connect(self.host, self.port, tls=self.tls)
                fresh = True
            else:
                fresh = False
            try:
                welcome = client.login(
                    nick,
                    replay=self.replay,
                    password=self.password,
                    room=room,
                    timeout=LOGIN_WAIT,
                )
            except TimeoutError:
                client.close()
                raise ConnectionLost(
                    f"the server did not answer the login in {LOGIN_WAIT:g} s"
                ) from None
            except LoginRefused as exc:  # shown as the server's error frame is
                if exc.code == "login_timeout" and not fresh:
                    client.close()  # it waited at the prompt too long: connect again
                    continue
                self.show(format_frame({"type": "error", "code": exc.code, "text": str(exc)}))
                if exc.code in ("nick_registered", "bad_password"):
                    # A registered nick: its password, asked for as a password is.
                    try:
                        password = session.prompt(
                            f"password for {nick} (empty: another nick): ", is_password=True
                        )
                    except (EOFError, KeyboardInterrupt):
                        password = ""
                    if password:
                        self.password = password
                        continue
                nick = None
                continue
            except ConnectionLost:
                client.close()
                if fresh:
                    raise  # not the wait at the prompt: the server closed a new connection
                continue  # closed while the nick was being typed: connect again
            self.resume = _secret(welcome)
            welcome = printable(welcome)
            self.nick = welcome["nick"]
            self.rooms = [r for r in welcome.get("rooms", []) if isinstance(r, str)]
            self.room = self.rooms[-1] if self.rooms else ""
            self._take_limit(welcome)
            self.show(format_frame(welcome))
            self._after_login()
            return True

    def _after_login(self) -> None:
        """Learn the commands and nicks for completion, before anything else is read.

        Runs on the thread that reads the connection (main at first, the receiver
        after a reconnect), so no other thread sees these replies.
        """
        client = self.client
        assert client is not None
        # (/who only in a room: in none, its not_in_room would show as an error of the
        # user's, after the refusal of the room that was asked for.)
        self._quiet_help, self._quiet_who = 1, {}
        try:
            client.say("/help")
            if self.rooms:
                self._ask_who(client, self.room)
            frames = client.sync(timeout=10)
            # Completion first: once anything of the login shows, Tab works.
            mine = [f for f in frames if f["type"] == "reply" and f.get("command") in _QUIET]
            for frame in [*mine, *(f for f in frames if f not in mine)]:
                self.handle(frame)
        except (ConnectionLost, TimeoutError):
            pass  # the receiver finds the connection closed and reconnects or ends

    def _ask_who(self, client: Client, room: str) -> None:
        """Ask for ``room``'s members, for nick completion; the reply is not shown."""
        self._quiet_who[room] = self._quiet_who.get(room, 0) + 1
        client.say(f"/who {room}")

    def _quiet(self, frame: dict[str, Any]) -> bool:
        """Whether ``frame`` is a reply we asked for ourselves (taken for completion),
        or the error that answered one (the room gone meanwhile: a quick /part)."""
        if frame.get("type") == "error" and frame.get("code") == "no_such_room":
            room = frame.get("room")
            if isinstance(room, str) and self._quiet_who.get(room, 0):
                self._quiet_who[room] -= 1
                return True
        if frame.get("type") != "reply":
            return False
        data = frame.get("data", {})
        if frame.get("command") == "help" and self._quiet_help:
            self._quiet_help -= 1
            self.completer.commands = [c["name"] for c in data.get("commands", [])]
            return True
        room = data.get("room")
        if frame.get("command") == "who" and self._quiet_who.get(room, 0):
            self._quiet_who[room] -= 1
            self.completer.nicks |= set(data.get("nicks", []))
            return True
        return False

    def _take_limit(self, welcome: dict[str, Any]) -> None:
        """The server's line limit (the welcome's ``max_line``), for the prompt's check."""
        limit = welcome.get("max_line")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            self.limit.max_bytes = limit

    def _hello(self, rooms: list[str]) -> bytes:
        """The line of a reconnect's hello with ``rooms`` (its size, against the limit)."""
        hello = {"type": "hello", "nick": self.nick, "since": self.last_id, "rooms": rooms}
        if self.password is not None:
            hello["password"] = self.password
        return encode_frame(hello)

    def _reconnect(self) -> bool:
        rooms, current = list(self.rooms), self.room
        for delay in reconnect_waits():
            if self.quitting:
                return False
            self.say(f"* connection lost; reconnecting in {delay:g} s")
            if self._quit.wait(delay):
                return False
            client: Client | None = None
            try:
                client = Client.connect(self.host, self.port, tls=self.tls)
                # Straight into the rooms it was in (no join and leave of the default),
                # the current one last (lines go where they went before), each with
                # only what was said since the last message shown: nothing twice.
                again = [r for r in rooms if r != current] + ([current] if current in rooms else [])
                # As many as fit in a line the server takes (long names, many rooms): the
                # rest are joined after, as any join (they replay their last page).
                later: list[str] = []
                while len(again) > 1 and len(self._hello(again)) > self.limit.max_bytes:
                    later.append(again.pop(0))
                welcome = client.login(
                    self.nick,
                    replay=None if self.last_id is not None else self.replay,
                    since=self.last_id,
                    password=self.password,
                    rooms=again or None,
                    resume=self.resume,
                    timeout=LOGIN_WAIT,
                )
            except LoginRefused as exc:
                assert client is not None
                client.close()
                if exc.code in _FOR_NOW:
                    # The old session may hold the nick until the server sees it is gone
                    # (a network drop: up to its ping timeout); a full server may not
                    # stay full. Try again after the next wait.
                    self.say(f"cannot log in again yet: {printable(str(exc))}", "class:error")
                    continue
                why = printable(str(exc))
                self.say(f"cannot log in again as {self.nick}: {why}", "class:error")
                return False
            except (ClientError, TimeoutError, OSError):
                if client is not None:
                    client.close()  # (a login that timed out: not left to the collector)
                continue
            if self.quitting:  # the user quit while it logged in again
                with contextlib.suppress(ClientError, OSError):
                    client.say("/quit")
                client.close()
                return False
            self.client = client
            self.resume = _secret(welcome)
            self.rooms = list(welcome.get("rooms", []))
            self._take_limit(welcome)
            self.room = self.rooms[-1] if self.rooms else ""
            self.say(f"* reconnected to {self.host}:{self.port} as {self.nick}")
            try:
                for room in later:
                    client.say(f"/join {room}")
                if later and self.room:
                    client.say(f"/join {self.room}")  # (still the current one)
            except ClientError:
                pass  # lost again at once: the receiver finds it closed, and reconnects
            self._after_login()
            try:
                # (The current one's: _after_login asked. A few, under flood control: the
                # others' nicks come as their members speak or join.)
                for room in [r for r in self.rooms if r != self.room][-QUIET_WHO_ROOMS:]:
                    self._ask_who(client, room)
            except ClientError:
                pass  # lost again at once: the receiver finds it closed, and reconnects
            return True
        return False

    # -- the receiver thread -------------------------------------------------------

    def receive(self) -> None:
        """Thread entry point: prints frames; on a lost connection, reconnects or ends."""
        while True:
            client = self.client
            assert client is not None
            try:
                for frame in client:
                    self.handle(frame)
            except (ConnectionLost, OSError):
                pass
            if self.quitting:
                return
            if not self.reconnect or not self._reconnect():
                if self.quitting:
                    return  # the user quit while it reconnected: no failure of theirs
                self.say("* disconnected from the server", "class:error")
                self.exit_code = 5
                self.quitting = True
                self._stop_prompt()
                return

    def _exit_if_quitting(self) -> None:
        if self.quitting and self.session is not None:
            self.session.app.exit(exception=EOFError())

    def _stop_prompt(self) -> None:
        # The prompt runs in the main thread's event loop: ask that loop to end it.
        app = self.session.app if self.session is not None else None
        if app is not None and app.is_running and app.loop is not None:
            app.loop.call_soon_threadsafe(lambda: app.exit(exception=EOFError()))

    def handle(self, frame: dict[str, Any]) -> None:
        """Show a frame from the server, keeping the rooms, nick and completions up to
        date. A frame without the fields its type has (a server not quite chatkit's)
        is shown as it came, and the rest go on."""
        frame = printable(frame)
        try:
            shown = self._follow(frame)
        except (KeyError, TypeError, AttributeError, ValueError):
            text = json.dumps(frame, ensure_ascii=False)[:200]
            self.say(f"* a frame the client could not read: {text}", "class:error")
            return
        if shown:
            self.show(format_frame(frame))

    def _follow(self, frame: dict[str, Any]) -> bool:
        """Take what ``frame`` says of the session; False if it is not to be shown (a
        reply to the client's own question)."""
        kind = frame.get("type")
        for field in _NAMES.get(str(kind), ()):
            if not isinstance(frame[field], str):
                raise TypeError(f"{kind}'s {field} is not a string")
        if self._quiet(frame):
            return False
        if kind in ("message", "private") and isinstance(frame.get("id"), int):
            self.last_id = max(self.last_id or 0, frame["id"])
        if kind == "reply" and frame.get("command") == "join":
            # /join of a room it is in already: lines go there now.
            room = frame.get("data", {}).get("room")
            if isinstance(room, str) and room:
                self.room = room
        if kind == "join":
            self.completer.nicks.add(frame["nick"])
            if frame["nick"] == self.nick:
                self.room = frame["room"]
                if frame["room"] not in self.rooms:
                    self.rooms.append(frame["room"])
                    # A room joined since the login (/join, a reconnect's rejoin): its
                    # members for completion (the own join does not list them).
                    client = self.client
                    if client is not None and not client.closed:
                        with contextlib.suppress(ClientError):
                            self._ask_who(client, frame["room"])
        elif kind == "leave" and frame["nick"] == self.nick and frame["room"] in self.rooms:
            self.rooms.remove(frame["room"])
            if self.room == frame["room"]:  # (as the server moves it: the last one joined)
                self.room = self.rooms[-1] if self.rooms else ""
        elif kind == "nick":
            self.completer.nicks.discard(frame["old"])
            self.completer.nicks.add(frame["new"])
            if frame["old"] == self.nick:
                self.nick = frame["new"]
        return True

    # -- the main loop -------------------------------------------------------------

    def toolbar(self) -> str:
        return f" {self.nick} @ {self.host}:{self.port}  {self.room or '(no room)'} "

    def run(self, nick: str | None, room: str | None = None) -> int:
        """Run until /quit, Ctrl+D or Ctrl+C on an empty line (or a lost connection
        without reconnect)."""
        try:
            return self._run(nick, room)
        except KeyboardInterrupt:
            # Ctrl+C before the prompt is up (during login, or just after it) quits
            # as it does at the prompt: the room sees "quit", the exit status is 0.
            self.quitting = True
            client = self.client
            if client is not None and not client.closed:
                with contextlib.suppress(ConnectionLost, OSError):
                    client.say("/quit")
                client.close()
            return self.exit_code

    def _run(self, nick: str | None, room: str | None) -> int:
        if not self.login(nick, room):
            return 0
        refused = room and fold(room_name(room)) not in [fold(r) for r in self.rooms]
        if refused and self.client is not None:
            # The login's hello asked for it, and the welcome leaves it out: the server
            # refused it, and its error is shown (it is not asked for again).
            self.client.close()
            return 6  # chatkit join's exit status for a refused room
        session: PromptSession[str] = PromptSession(
            completer=self.completer,
            complete_while_typing=False,
            bottom_toolbar=self.toolbar,
            key_bindings=_key_bindings(),
            validator=self.limit,
            validate_while_typing=False,
            # A multi-line paste shows as it is, each line under the first; Enter
            # sends it all as one message.
            prompt_continuation=lambda width, line, soft_wrap: " " * width,
            # A sent line is shown once: the server's copy (with its id, in the
            # order the server gave it), not also the prompt line it was typed on.
            erase_when_done=True,
            style=STYLE if self.color else None,
        )
        self.session = session
        with patch_stdout(raw=True):
            receiver = threading.Thread(target=self.receive, name="chatkit-receiver", daemon=True)
            receiver.start()
            while not self.quitting:
                try:
                    # pre_run: if the receiver gave up just before this prompt
                    # started, _stop_prompt() found no running app to stop.
                    line = session.prompt(
                        lambda: f"{self.room or '>'} ", pre_run=self._prompt_started
                    )
                except (EOFError, KeyboardInterrupt):
                    line = "/quit"
                finally:
                    self._prompt_ended()
                line = line.rstrip()  # e.g. the space a completed nick ends with
                if not line or self.quitting:
                    continue
                if line.split(" ", 1)[0].lower() == "/quit":
                    self.quitting = True
                client = self.client
                try:
                    if client is None or client.closed:
                        raise ConnectionLost("not connected")
                    client.say(line)
                except ConnectionLost:
                    if not self.quitting:  # (a /quit needs no connection to end)
                        self.say("not connected: the line was not sent", "class:error")
            receiver.join(5)
        if self.client is not None:
            self.client.close()
        return self.exit_code
