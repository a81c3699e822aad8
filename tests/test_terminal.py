"""The interactive `chatkit join`, driven through a real pseudo-terminal (pexpect)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect  # type: ignore[import-untyped]
import pyte
import pytest

from chatkit import Hello, Request, Say, Server, Session, hookimpl
from chatkit.terminal import ChatCompleter, format_frame, nick_style
from chatkit.testing import ChatClient, wait_until

CHATKIT = str(Path(sys.executable).parent / "chatkit")
WELCOME_BOB = r"\* Welcome to chatkit \S+, bob! You are in"
Connect = Callable[..., ChatClient]
Factory = Callable[..., Server]


@pytest.fixture
def terminal() -> Iterator[Callable[..., pexpect.spawn]]:
    """Spawn `chatkit join` in a pseudo-terminal of 100x30; killed after the test."""
    children: list[pexpect.spawn] = []

    def spawn(port: int, *args: str) -> pexpect.spawn:
        env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
        child = pexpect.spawn(
            CHATKIT, ["join", "--port", str(port), "--no-color", *args],
            env=env, dimensions=(30, 100), encoding="utf-8", timeout=10,
        )  # fmt: skip
        children.append(child)
        return child

    yield spawn
    for child in children:
        child.close(force=True)


class Screen:
    """What a terminal of 100x30 shows, fed with everything a child writes (pyte)."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.screen = pyte.Screen(100, 30)
        self.stream = pyte.Stream(self.screen)
        child.logfile_read = self

    def write(self, data: str) -> None:
        self.stream.feed(data)

    def flush(self) -> None:
        pass

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display if line.strip()]


def test_nick_clash_prompts_again(
    chat_server: Server, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """Without --nick it asks; a taken nick gets the server's reason and the prompt again."""
    chat_client("alice")
    child = terminal(chat_server.address[1])
    child.expect("nick:")
    child.send("alice\r")
    child.expect(r"\d\d:\d\d error \[nick_taken\]: nick 'alice' is taken")
    child.expect("nick:")
    child.send("bob\r")
    child.expect(WELCOME_BOB)


def test_the_nick_is_asked_for_before_connecting(
    chat_server_factory: Factory, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """The nick prompt comes before the connection, so a person may take their time
    (a silent connection is greeted as nc's after a second, and closed later); one
    closed by the login timeout while a refused nick's replacement is typed is
    opened again for it."""
    server = chat_server_factory(login_timeout=1.0)
    chat_client(server, "alice")
    before = len(server.connections)
    child = terminal(server.address[1])
    child.expect("nick:")
    assert len(server.connections) == before  # nothing opened yet
    child.send("alice\r")
    child.expect(r"error \[nick_taken\]")
    child.expect("nick:")
    wait_until(lambda: len(server.connections) == before, what="the idle connection closed")
    child.send("bob\r")
    child.expect(WELCOME_BOB)
    shown = (child.before or "") + (child.after or "")
    assert "server_bad_frame" not in shown and "login_timeout" not in shown


def test_typing_survives_incoming_messages(
    chat_server: Server, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """A line half typed when messages arrive is sent whole: the typed text stays intact."""
    alice = chat_client("alice")
    child = terminal(chat_server.address[1], "--nick", "bob")
    child.expect(WELCOME_BOB)
    alice.expect("join", nick="bob")
    child.send("half typed")
    for i in range(5):
        alice.say(f"interruption {i}")
        child.expect(f"interruption {i}")
    child.send(" and finished\r")
    assert alice.expect("message", nick="bob")["text"] == "half typed and finished"


def test_tab_completes_commands_and_nicks(
    chat_server: Server, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """Tab completes /commands from the server's /help and nicks in the room."""
    alice = chat_client("alice")
    child = terminal(chat_server.address[1], "--nick", "bob")
    child.expect("bob joined #general")  # shown once completion knows the commands
    child.send("/wh\t")
    # The completion is drawn before more keys are sent: "/who", or only its "o" after
    # "/wh" and the terminal's escape codes (prompt_toolkit draws what changed).
    child.expect(r"/wh(?:\x1b\[[0-9;?]*[A-Za-z])*o")
    child.send(" #general\r")
    child.expect(r"#general \(2\): alice, bob")
    child.send("hi al\t")
    child.expect("ice")
    child.send("\r")
    assert alice.expect("message", nick="bob")["text"] == "hi alice"


def test_tab_completes_the_nicks_of_a_room_joined_later(
    chat_server: Server, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """A room joined after the login: its members complete too (asked quietly: the own
    join does not list them), and the user's own /who of it still shows."""
    carol = chat_client("carol")
    carol.say("/join #dev")
    carol.expect("join", room="#dev")
    carol.say("/part #general")
    carol.expect("leave", room="#general")
    child = terminal(chat_server.address[1], "--nick", "bob")
    shown = io.StringIO()
    child.logfile_read = shown  # everything printed from here on
    child.expect("bob joined #general")
    child.send("/join #dev\r")
    child.expect("bob joined #dev")
    child.send("/who #dev\r")  # (answered after the quiet one: completion knows carol now)
    child.expect(r"#dev \(2\): bob, carol")
    child.send("hi ca\t")
    child.expect("rol")
    child.send("\r")
    assert carol.expect("message", nick="bob")["text"] == "hi carol"
    assert shown.getvalue().count("#dev (2)") == 1  # the user's; the quiet one is not shown


def test_a_room_left_at_once_leaves_no_quiet_who_behind(
    chat_server: Server, terminal: Callable[..., pexpect.spawn]
) -> None:
    """/join then /part at once: the quiet /who of the room is answered by a reply or,
    the room gone, an error naming it; neither shows, and the user's own /who of the
    room later does (a leftover count swallowed it)."""
    child = terminal(chat_server.address[1], "--nick", "bob")
    shown = io.StringIO()
    child.logfile_read = shown
    child.expect("bob joined #general")
    child.send("/join #zz\r/part #zz\r")
    child.expect("bob left #zz")
    child.send("/join #zz\r")
    child.expect("bob joined #zz")
    child.send("/who #zz\r/who #zz\r")  # (the first may be the quiet one's turn)
    child.expect(r"#zz \(1\): bob")
    assert "no room #zz" not in shown.getvalue()


@pytest.mark.parametrize(("keys", "reason"), [("\x04", "quit"), ("\x03", "quit")])
def test_ctrl_d_and_ctrl_c_leave_cleanly(
    chat_server: Server,
    chat_client: Connect,
    terminal: Callable[..., pexpect.spawn],
    keys: str,
    reason: str,
) -> None:
    """Ctrl+D and Ctrl+C quit: exit status 0, no traceback, the room sees the leave."""
    alice = chat_client("alice")
    child = terminal(chat_server.address[1], "--nick", "bob")
    child.expect(WELCOME_BOB)
    if keys == "\x04":
        press_ctrl_d_until_it_ends(child)  # (one pressed while it prints is the tty's)
    else:
        child.send(keys)  # (a SIGINT in cooked mode: it quits all the same)
        child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in (child.before or "")
    assert alice.expect("leave", nick="bob")["reason"] == reason


def press_ctrl_d_until_it_ends(child: pexpect.spawn) -> None:
    """Ctrl+D on the empty prompt, again if need be, until the client has exited.

    A key pressed while the client prints a line above its prompt reaches a terminal
    in cooked mode (prompt_toolkit's ``run_in_terminal``), where a Ctrl+D on an empty
    line is the tty's end of file and no key at all: a person presses it again."""
    deadline = time.monotonic() + 10
    while True:
        child.sendcontrol("d")
        if child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=1) == 0:
            return
        assert time.monotonic() < deadline, "the client did not end on Ctrl+D"


def free_port() -> int:
    """A port nothing listens on (for a refused connection)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, *args: str) -> tuple[subprocess.Popen[str], int]:
    """`chatkit serve` on ``port`` (0: one the system picks), and the port it took: a
    restart asks for the same one again."""
    proc = subprocess.Popen(
        [CHATKIT, "serve", "--port", str(port), "--no-plugin", "log", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    listening = re.search(r"listening on \S+:(\d+)", line)
    assert listening is not None, line
    return proc, int(listening.group(1))


class CutsTheFirstWho:
    """Cuts the first client to ask /who: the client's own, right after its login."""

    def __init__(self) -> None:
        self.cut = False

    @hookimpl
    def chatkit_allow_input(self, client: Session, event: Hello | Say | Request) -> None:
        if isinstance(event, Say) and event.text.startswith("/who") and not self.cut:
            self.cut = True
            client.disconnect("cut for the test")


def test_a_connection_lost_right_after_the_login_reconnects(
    chat_server_factory: Callable[..., Server], terminal: Callable[..., pexpect.spawn]
) -> None:
    """A connection lost while the client still reads its login's answers (a server
    restarting then) is lost as any other: the client reconnects. It ended with exit
    status 3, "the server closed the connection", when it happened before --room's
    join was confirmed."""
    server = chat_server_factory(plugins=[CutsTheFirstWho()], disable=["flood"])
    child = terminal(server.address[1], "--nick", "bob", "--room", "#ops")
    child.expect(WELCOME_BOB)
    child.expect(r"\d\d:\d\d \* connection lost; reconnecting")
    child.expect(r"\d\d:\d\d \* reconnected", timeout=20)
    wait_until(lambda: (bob := server.hub.find("bob")) is not None and "#ops" in bob.rooms)
    press_ctrl_d_until_it_ends(child)
    child.wait()
    assert child.exitstatus == 0


class DeafProxy:
    """A TCP proxy to a server whose :meth:`drop` ends the client's side of every
    connection so far and leaves the server's open, silent: the server does not see
    that client go (a network that died), and later connections pass as before."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.target = target
        self.clients: list[socket.socket] = []
        # The server's sides, held here: one collected once its pumps end would close
        # (a reset the server sees), and the point is that it sees nothing.
        self.upstreams: list[socket.socket] = []
        self.lock = threading.Lock()  # guards clients (accept thread, test thread)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
                with self.lock:
                    self.clients.append(client)
                    self.upstreams.append(upstream)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)

    def drop(self) -> None:
        with self.lock:
            dropped, self.clients = self.clients, []
        for sock in dropped:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for sock in self.clients + self.upstreams:
                sock.close()


def test_a_reconnect_takes_the_nick_back_from_a_connection_that_died_unseen(
    chat_server_factory: Callable[..., Server], terminal: Callable[..., pexpect.spawn]
) -> None:
    """The client's connection dies where the server cannot see it (it holds the nick
    until its keep-alive gives up): the reconnect's login names the welcome's resume
    secret and is back at once as bob, the old connection renamed and closed."""
    server = chat_server_factory(disable=["flood"])
    proxy = DeafProxy(server.address)
    with ChatClient(server.address) as alice:
        alice.login("alice")
        child = terminal(proxy.port, "--nick", "bob")
        child.expect(WELCOME_BOB)
        alice.expect("join", nick="bob")
        proxy.drop()
        child.expect(r"\d\d:\d\d \* connection lost; reconnecting")
        child.expect(r"\d\d:\d\d \* reconnected to \S+ as bob", timeout=20)
        assert alice.expect("nick", old="bob")["new"].startswith("Gone")
        child.sendline("still me")
        assert alice.expect("message", text="still me")["nick"] == "bob"
        press_ctrl_d_until_it_ends(child)
        child.wait()
    proxy.close()


def test_reconnects_after_the_server_restarts(terminal: Callable[..., pexpect.spawn]) -> None:
    """After a lost connection it retries with backoff, logs in again and rejoins its rooms."""
    server, port = start_server(0)
    try:
        child = terminal(port, "--nick", "bob", "--room", "#ops")
        child.expect(WELCOME_BOB)
        child.expect("bob joined #ops")
        server.terminate()
        server.wait(10)
        child.expect(r"\d\d:\d\d \* connection lost; reconnecting")
        server, _port = start_server(port)
        child.expect(r"\d\d:\d\d \* reconnected", timeout=20)
        child.expect("bob joined #ops")
        with ChatClient(("127.0.0.1", port)) as alice:
            alice.login("alice")
            alice.say("/who #ops")
            assert alice.expect("reply")["data"]["nicks"] == ["bob"]
    finally:
        server.terminate()
        server.wait(10)


def test_a_reconnect_shows_what_was_missed_and_nothing_twice(
    terminal: Callable[..., pexpect.spawn], tmp_path: Path
) -> None:
    """After a restart the client logs in with `since` its last message: the messages
    it already showed are not replayed again, the rest are."""
    db = str(tmp_path / "history.sqlite3")
    server, port = start_server(0, "--db", db)
    try:
        with ChatClient(("127.0.0.1", port)) as alice:
            alice.login("alice")
            alice.say("said before bob came")
            alice.expect("message")
            child = terminal(port, "--nick", "bob")
            child.expect("said before bob came")  # the replay on joining
            alice.say("one")
            child.expect("<alice> one")
        server.terminate()
        server.wait(10)
        child.expect(r"connection lost; reconnecting")
        server, _port = start_server(port, "--db", db)
        with ChatClient(("127.0.0.1", port)) as carol:
            carol.login("carol")
            carol.say("two")  # before or after bob is back: he sees it once either way
            child.expect(r"\* reconnected", timeout=20)
            carol.say("/who")
            carol.expect("reply")
            carol.say("three")
            child.expect("<carol> three")
            shown = (child.before or "") + (child.after or "")
        assert shown.count("<carol> two") == 1
        assert "said before bob came" not in shown and "<alice> one" not in shown
    finally:
        server.terminate()
        server.wait(10)


def test_no_reconnect_exits_with_5(terminal: Callable[..., pexpect.spawn]) -> None:
    """--no-reconnect: a lost connection is told in words and exits with status 5."""
    server, port = start_server(0)
    child = terminal(port, "--nick", "bob", "--no-reconnect")
    child.expect(WELCOME_BOB)
    server.terminate()
    server.wait(10)
    child.expect(r"\d\d:\d\d \* disconnected from the server")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 5


def test_ctrl_d_while_reconnecting_quits_at_once_with_status_0(
    terminal: Callable[..., pexpect.spawn],
) -> None:
    """Quitting while it waits to reconnect is the user's choice, not a failure: no
    "disconnected" error, no "line not sent", exit status 0."""
    server, port = start_server(0)
    child = terminal(port, "--nick", "bob")
    child.expect(WELCOME_BOB)
    server.terminate()
    server.wait(10)
    child.expect(r"\* connection lost; reconnecting in 0.5 s")
    # (No server comes back: the waits grow, 1, 2, 4... s; the quit cuts one short.)
    child.expect(r"\* connection lost; reconnecting in 2 s")
    press_ctrl_d_until_it_ends(child)
    child.close()
    assert child.exitstatus == 0
    out = child.before or ""
    assert "disconnected" not in out and "not sent" not in out


def test_refused_connection_is_told_in_words(terminal: Callable[..., pexpect.spawn]) -> None:
    """No server: a sentence, exit status 3."""
    child = terminal(free_port(), "--nick", "bob")
    child.expect(r"no chatkit server at 127\.0\.0\.1:\d+")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3


def test_formatting_and_completion_units() -> None:
    """Nick colours are stable; frames render with time and markers; completion lists match."""
    assert nick_style("alice") == nick_style("alice")
    replayed = {"type": "message", "room": "#r", "nick": "a", "text": "old", "history": True}
    replayed["ts"] = "2026-11-24T09:45:00.000Z"
    text = "".join(t for _, t in format_frame(replayed))
    assert re.fullmatch(r"2026-11-2[345] \d\d:\d\d \[#r\] <a> old", text)  # any time zone
    end = {"type": "history", "room": "#r", "count": 1, "more": False}
    text = "".join(t for _, t in format_frame(end))
    assert text.endswith("*** 1 earlier message of #r above")
    completer = ChatCompleter()
    completer.commands = ["who", "whois", "join"]
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    found = [c.text for c in completer.get_completions(Document("/wh"), CompleteEvent())]
    assert found == ["/who", "/whois"]


def test_up_arrow_recalls_sent_lines(
    chat_server: Server, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """Up recalls the previous line; Enter sends it again."""
    alice = chat_client("alice")
    child = terminal(chat_server.address[1], "--nick", "bob")
    child.expect(WELCOME_BOB)
    child.send("once more\r")
    assert alice.expect("message", nick="bob")["text"] == "once more"
    child.expect("once more")
    child.send("\x1b[A")
    child.expect("once more")
    child.send("\r")
    assert alice.expect("message", nick="bob")["text"] == "once more"


def test_private_messages_read_as_in_the_docs() -> None:
    """A private message shows "[pm] <a -> b> text"; a private action "[pm] * a -> b text"."""
    pm = {"type": "private", "from": "a", "to": "b", "text": "coffee?"}
    text = "".join(t for _, t in format_frame(pm))
    assert re.fullmatch(r"\d\d:\d\d \[pm\] <a -> b> coffee\?", text)
    text = "".join(t for _, t in format_frame({**pm, "text": "waves", "action": True}))
    assert re.fullmatch(r"\d\d:\d\d \[pm\] \* a -> b waves", text)


def test_completing_a_nick_adds_a_space(
    chat_server: Server, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """A completed nick ends with a space, so the next word stays a word of its own."""
    alice = chat_client("alice")
    child = terminal(chat_server.address[1], "--nick", "bob")
    child.expect("bob joined #general")  # shown once completion knows the nicks
    child.send("/msg al\t")
    child.expect("ice")  # the completion is drawn before more keys are sent
    child.send("secret\r")
    assert alice.expect("private", to="alice")["text"] == "secret"


def test_ctrl_c_clears_a_half_typed_line_first(
    chat_server: Server, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """Ctrl+C on a half-typed line clears it; Up brings it back; Ctrl+C on an empty line quits."""
    alice = chat_client("alice")
    child = terminal(chat_server.address[1], "--nick", "bob")
    child.expect(WELCOME_BOB)
    child.send("half typed")
    child.expect("typed")
    child.send("\x03")
    child.send("whole\r")
    assert alice.expect("message", nick="bob")["text"] == "whole"
    child.send("\x1b[A\x1b[A")  # the cleared line is in the history, before "whole"
    child.send("\r")
    assert alice.expect("message", nick="bob")["text"] == "half typed"
    child.send("\x03")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert alice.expect("leave", nick="bob")["reason"] == "quit"


def test_a_sent_line_shows_once(
    chat_server: Server, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """A sent line shows once, as the server's copy with time and nick; the prompt is empty again."""
    alice = chat_client("alice")
    child = terminal(chat_server.address[1], "--nick", "bob")
    screen = Screen(child)
    child.expect(WELCOME_BOB)
    child.send("hello there\r")
    alice.expect("message", text="hello there")
    child.expect(r"<bob> hello there")
    alice.say("and back")  # drawn after bob's copy: by then the screen is settled
    child.expect("and back")
    shown = [line for line in screen.lines() if "hello there" in line]
    assert len(shown) == 1, screen.lines()
    assert re.fullmatch(r"\d\d:\d\d \[#general\] <bob> hello there", shown[0])


def test_join_of_a_room_it_is_in_switches_the_prompts_room(
    chat_server: Server, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """/join of a room the client is in already (the server's reply, no join frame)
    makes it the room the prompt (and the status bar) names, as lines now go there."""
    alice = chat_client("alice")
    child = terminal(chat_server.address[1], "--nick", "bob")
    screen = Screen(child)
    child.expect(WELCOME_BOB)
    child.send("/join math\r")
    child.expect("bob joined #math")
    child.send("/join general\r")
    child.expect("lines now go there")
    child.send("hi\r")
    assert alice.expect("message", nick="bob")["room"] == "#general"
    child.expect(r"<bob> hi")

    wait_until(lambda: prompt(child, screen) == "#general", what="the prompt names #general")


def prompt(child: pexpect.spawn, screen: Screen) -> str:
    """The prompt's line (the room, then what is typed), once the child's output so far
    is on the screen."""
    with contextlib.suppress(pexpect.TIMEOUT):
        child.read_nonblocking(65536, timeout=0.05)  # (feeds the screen)
    lines = screen.lines()
    return lines[-1] if lines else ""


def test_a_line_over_the_limit_is_not_sent(
    chat_server: Server, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """A line whose frame is over 8192 bytes is refused with the reason, not sent; it can be cleared."""
    alice = chat_client("alice")
    child = terminal(chat_server.address[1], "--nick", "bob")
    child.expect(WELCOME_BOB)
    child.send("\x1b[200~" + "é" * 4100 + "\x1b[201~")  # 8,200 bytes of text, pasted
    child.send("\r")
    child.expect(r"too long to send: \d+ bytes as a frame, the server takes 8192")
    child.send("\x03")
    child.send("short\r")
    assert alice.expect("message", nick="bob")["text"] == "short"


def test_room_option_replaces_the_default_room(
    chat_server: Server, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """--room ops joins #ops instead of #general (which never sees bob), and plain
    lines go there."""
    alice = chat_client("alice")
    child = terminal(chat_server.address[1], "--nick", "bob", "--room", "ops")
    child.expect("bob joined #ops")
    child.send("/rooms\r")
    child.expect(r"rooms: #general \(1\), #ops \(1\)")
    assert [f for f in alice.sync() if f.get("nick") == "bob"] == []


def test_a_refused_room_exits_6(
    chat_server: Server, terminal: Callable[..., pexpect.spawn]
) -> None:
    """--room with a name the server refuses: the server's reason, once (the room is
    not asked for a second time), exit status 6."""
    child = terminal(chat_server.address[1], "--nick", "bob", "--room", "x!")
    child.expect(r"\d\d:\d\d error \[bad_room\]: cannot join #x!: bad room name '#x!'")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 6
    out = child.before or ""
    assert "not_in_room" not in out  # (the client's own /who is not sent)
    assert "bad room name" not in out  # (said once)


class EchoServer:
    """Just enough of a chatkit server to see what the client sends, byte for byte.

    It welcomes any nick, answers pings, records every frame, and sends a ``say``
    back as a ``message`` with the text exactly as received (a real server cleans
    it). For the client's half of features the server may not have yet.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.frames: list[dict[str, object]] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                frame = json.loads(line)
                self.frames.append(frame)
                if frame["type"] == "hello":
                    reply = {"type": "welcome", "nick": frame["nick"], "server": "chatkit"}
                    reply |= {"version": "0", "rooms": ["#general"]}
                elif frame["type"] == "ping":
                    reply = {"type": "pong"}
                elif frame["type"] == "say" and not frame["text"].startswith("/"):
                    reply = {"type": "message", "room": "#general", "nick": "bob"}
                    reply["text"] = frame["text"]
                else:
                    continue
                conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        self.listener.close()


def paste(text: str) -> str:
    """The keys a terminal sends for pasting ``text`` (bracketed paste, CR line ends)."""
    return "\x1b[200~" + text.replace("\n", "\r\n") + "\x1b[201~"


def test_a_multi_line_paste_is_sent_as_one_message(
    terminal: Callable[..., pexpect.spawn],
) -> None:
    """A pasted block shows line under line; Enter sends it as one say; the echo is indented."""
    server = EchoServer()
    try:
        child = terminal(server.port, "--nick", "bob")
        screen = Screen(child)
        child.expect(WELCOME_BOB)
        # The prompt shown: the terminal is in raw mode (before, the tty's own line
        # discipline would turn the paste's CR LF into two line ends).
        wait_until(lambda: prompt(child, screen) == "#general", what="the prompt")
        child.send(paste("first line\n  second line\nthird"))
        child.expect("third")
        child.send("\r")
        child.expect(r"<bob> first line")
        child.expect("third")
        says = [f for f in server.frames if f["type"] == "say" and f["text"] != "/help"]
        assert [f["text"] for f in says if not str(f["text"]).startswith("/who")] == [
            "first line\n  second line\nthird"
        ]
        lines = screen.lines()
        at = next(i for i, line in enumerate(lines) if line.endswith("<bob> first line"))
        column = lines[at].index("first")
        assert lines[at + 1 : at + 3] == [" " * column + "  second line", " " * column + "third"]
    finally:
        server.close()


def test_a_multi_line_paste_reaches_others_as_one_message(
    chat_server: Server, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """A pasted block reaches others as one message of three lines and shows indented here."""
    alice = chat_client("alice")
    child = terminal(chat_server.address[1], "--nick", "bob")
    screen = Screen(child)
    child.expect(WELCOME_BOB)
    child.send(paste("first line\nsecond line\nthird"))
    child.expect("third")
    child.send("\r")
    assert alice.expect("message", nick="bob")["text"] == "first line\nsecond line\nthird"
    alice.say("after")
    child.expect("after")
    lines = screen.lines()
    at = next(i for i, line in enumerate(lines) if line.endswith("<bob> first line"))
    column = lines[at].index("first")
    assert lines[at + 1 : at + 3] == [" " * column + "second line", " " * column + "third"]


def test_a_paste_of_too_many_lines_is_not_sent(
    chat_server: Server, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """A paste of more lines than the server takes (20) is refused with the reason, not sent."""
    alice = chat_client("alice")
    child = terminal(chat_server.address[1], "--nick", "bob")
    child.expect(WELCOME_BOB)
    child.send(paste("\n".join(f"line {i}" for i in range(21))))
    child.send("\r")
    child.expect(r"too many lines to send: 21, the server takes 20")
    child.send("\x03")
    child.send("short\r")
    assert alice.expect("message", nick="bob")["text"] == "short"


def test_multi_line_messages_are_indented_under_their_first_line() -> None:
    """Each line of a multi-line message starts where its first line's text starts."""
    frame: dict[str, Any] = {"type": "message", "room": "#r", "nick": "a", "text": "one\ntwo"}
    text = "".join(t for _, t in format_frame(frame))
    first, second = text.split("\n")
    assert first.endswith("<a> one") and second == " " * first.index("one") + "two"
    frame = {"type": "message", "room": "#r", "nick": "中文", "text": "one\ntwo"}
    second = "".join(t for _, t in format_frame(frame)).split("\n")[1]
    assert second == " " * (len("00:00 [#r] <中文> ") + 2) + "two"  # wide characters: 2 columns
    frame = {"type": "private", "from": "a", "to": "b", "text": "one\ntwo", "action": True}
    first, second = "".join(t for _, t in format_frame(frame)).split("\n")
    assert first.endswith("* a -> b one") and second == " " * first.index("one") + "two"


def test_the_prompt_follows_the_servers_room_and_line_limit(
    chat_server_factory: Factory, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """Leaving a room other than the current one keeps the current one (as the server
    does: lines still go there); a line over the server's max_line (from the welcome,
    not a fixed 8192) is refused in the prompt, not sent and discarded."""
    server = chat_server_factory(max_line=300)
    alice = chat_client(server, "alice")
    child = terminal(server.address[1], "--nick", "bob")
    screen = Screen(child)
    child.expect(WELCOME_BOB)
    for room in ("ra", "rb", "general"):
        child.send(f"/join {room}\r")
        child.expect("lines now go there" if room == "general" else f"bob joined #{room}")
    child.send("/part #ra\r")
    child.expect("bob left #ra")
    wait_until(lambda: prompt(child, screen) == "#general", what="the prompt names #general")
    child.send("where does this go\r")
    assert alice.expect("message", nick="bob")["room"] == "#general"
    child.send("x" * 400 + "\r")
    child.expect(r"too long to send: \d+ bytes as a frame, the server takes 300")


class ScriptedServer:
    """A server that is not quite chatkit's: it welcomes any hello (with ``welcome``'s
    fields), sends ``frames`` (JSON-encoded as they are, or raw lines when bytes), and
    answers pings. For what a client does with a hostile or broken server."""

    def __init__(self, frames: list[Any], welcome: dict[str, Any] | None = None) -> None:
        self.frames = frames
        self.welcome = (
            welcome
            if welcome is not None
            else {"type": "welcome", "nick": "me", "server": "chatkit", "version": "0",
                  "rooms": ["#general"]}
        )  # fmt: skip
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                threading.Thread(target=self.talk, args=(conn,), daemon=True).start()

    def talk(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn, conn.makefile("rb") as lines:
            for line in lines:
                frame = json.loads(line)
                if frame["type"] == "hello":
                    out = [self.welcome, *self.frames]
                elif frame["type"] == "ping":
                    out = [{"type": "pong"}]
                elif frame["type"] == "say" and frame["text"].startswith("/quit"):
                    return
                else:
                    continue
                conn.sendall(
                    b"".join(f if isinstance(f, bytes) else json.dumps(f).encode() + b"\n"
                             for f in out)
                )  # fmt: skip

    def close(self) -> None:
        self.listener.close()


HOSTILE = "\x1b]52;c;cHduZWQ=\x07 \x1b[2J\x9b2J \u202egnp.exe" + "\b" * 5 + "<admin> hi"
"""Escape sequences (an OSC 52 clipboard write, a screen clear, the C1 CSI), a bidi
override and backspaces, as a hostile server might send them."""
ACTED_ON = re.compile("\x1b]52|\x1b\\[2J|[\x07\x08\x9b\u202e]")


def test_what_a_hostile_server_sends_cannot_drive_the_terminal(
    terminal: Callable[..., pexpect.spawn],
) -> None:
    """Control characters, escape sequences and bidi overrides in a server's message,
    nick, topic and room show as U+FFFD: nothing reaches the terminal to act on."""
    server = ScriptedServer(
        [
            {"type": "message", "room": "#general", "nick": "evil\x07", "text": HOSTILE},
            {"type": "topic", "room": "#general", "nick": "evil", "topic": HOSTILE},
            {"type": "notice", "text": "done"},
        ]
    )
    try:
        child = terminal(server.port, "--nick", "me")
        child.expect("done")
        assert not ACTED_ON.search(child.before or ""), repr(child.before)
        assert "\ufffd]52;c;cHduZWQ=\ufffd" in (child.before or "")
        child.sendcontrol("d")
    finally:
        server.close()


def test_a_script_prints_nothing_a_terminal_acts_on(tmp_path: Path) -> None:
    """`chatkit join` in a script: the text shows control characters as U+FFFD, and
    --json escapes them (C1 and bidi controls too) with the data unchanged."""
    frame = {"type": "message", "room": "#general", "nick": "evil", "text": HOSTILE}
    server = ScriptedServer([frame])
    try:
        for flags in ([], ["--json"]):
            result = subprocess.run(
                [CHATKIT, "join", "--port", str(server.port), "--nick", "me", "--wait", "0.5",
                 *flags],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert not ACTED_ON.search(result.stdout), repr(result.stdout)
            if flags:
                frames = [json.loads(line) for line in result.stdout.splitlines()]
                assert frame in frames
            else:
                assert "\ufffd]52;c;cHduZWQ=\ufffd" in result.stdout
    finally:
        server.close()


def test_a_frame_the_client_cannot_read_does_not_stop_it(
    terminal: Callable[..., pexpect.spawn],
) -> None:
    """A join without its nick, a reply whose data is not an object: said, and what
    comes next still shows (the receiving thread died on them)."""
    server = ScriptedServer(
        [
            {"type": "join", "room": "#x"},
            {"type": "reply", "command": "x", "text": "hi", "data": "s"},
            {"type": "message", "room": "#general", "nick": "ann", "text": "still here"},
        ]
    )
    try:
        child = terminal(server.port, "--nick", "me")
        child.expect("a frame the client could not read")
        child.expect("<ann> still here")
        assert "Traceback" not in (child.before or "")
        press_ctrl_d_until_it_ends(child)
    finally:
        server.close()


def test_a_welcome_without_a_nick_and_a_port_of_another_face(
    terminal: Callable[..., pexpect.spawn],
) -> None:
    """A welcome with no nick, or an answer that is no chatkit frame (an IRC port's):
    a sentence, exit status 5 as for a script, no traceback."""
    no_nick = ScriptedServer([], welcome={"type": "welcome", "server": "chatkit"})
    irc = ScriptedServer([], welcome=b":chatkit 451 * :You have not registered\r\n")  # type: ignore[arg-type]
    try:
        for server, said in ((no_nick, "welcome names no nick"), (irc, "another face's port")):
            child = terminal(server.port, "--nick", "me")
            child.expect(said)
            child.expect(pexpect.EOF)
            child.close()
            assert child.exitstatus == 5
            assert "Traceback" not in (child.before or "")
    finally:
        no_nick.close()
        irc.close()


def test_a_registered_nick_asks_for_its_password(
    chat_server: Server, chat_client: Connect, terminal: Callable[..., pexpect.spawn]
) -> None:
    """A registered nick typed at the prompt: the client asks for its password (not
    shown as it is typed) and logs in with it."""
    owner = chat_client("regd")
    owner.command("/register s3cret-pass")
    owner.close()
    wait_until(lambda: chat_server.hub.find("regd") is None, 10, "regd gone")
    child = terminal(chat_server.address[1])
    child.expect("nick:")
    child.send("regd\r")
    child.expect("password for regd")
    child.send("s3cret-pass\r")
    child.expect(r"Welcome to chatkit \S+, regd!")
    assert "s3cret-pass" not in (child.before or "")
    press_ctrl_d_until_it_ends(child)


def test_reconnect_waits_grow_to_30_s_and_stay() -> None:
    """The waits between reconnection attempts double up to 30 s, then stay there (they
    started again at 0.5 s after seven)."""
    from chatkit.terminal import reconnect_waits

    waits = list(itertools.islice(reconnect_waits(), 12))
    assert waits[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0]
    assert waits[7:] == [30.0] * 5
