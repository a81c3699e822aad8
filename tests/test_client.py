"""chatkit.client and `chatkit join` in scripts, against real servers."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatkit import Server
from chatkit.client import (
    LOCAL_ERRORS,
    Client,
    ClientError,
    ConnectionLost,
    LoginRefused,
    encode_frame,
    say_frame,
)
from chatkit.protocol import MAX_LINE_BYTES
from chatkit.testing import ChatClient, wait_until

CHATKIT = str(Path(sys.executable).parent / "chatkit")
Connect = Callable[..., ChatClient]
Factory = Callable[..., Server]


def join(server: Server, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    host, port = server.address
    return subprocess.run(
        [CHATKIT, "join", "--host", host, "--port", str(port), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_library_connect_login_say_and_read(chat_server: Server, chat_client: Connect) -> None:
    """A program logs in, sends, and reads frames as dicts."""
    watcher = chat_client("watcher")
    with Client.connect(*chat_server.address) as bot:
        assert bot.login("bot")["nick"] == "bot"
        bot.say("beep")
        assert watcher.expect("message")["text"] == "beep"
        watcher.say("hi bot")
        watcher.expect("message", text="hi bot")  # the hub has handled it
        frames = bot.sync()
        assert [f["text"] for f in frames if f["type"] == "message"] == ["beep", "hi bot"]
    watcher.expect("leave", nick="bot")


def test_a_reconnect_with_its_resume_secret_takes_the_nick_from_a_dead_connection(
    chat_server: Server, chat_client: Connect
) -> None:
    """A connection that died unseen (it neither reads nor closes: a phone that lost its
    network) holds its nick until the server's idle timeout; a login naming the resume
    secret its welcome gave takes the nick at once: the dead one is renamed and closed.
    A wrong secret changes nothing."""
    watcher = chat_client("watcher")
    dead = socket.create_connection(chat_server.address)
    dead.sendall(b'{"type":"hello","nick":"bob"}\n')
    lines = dead.makefile("rb")
    welcome = next(f for f in map(json.loads, lines) if f["type"] == "welcome")
    secret = welcome["resume"]
    assert isinstance(secret, str) and len(secret) >= 24
    watcher.expect("join", nick="bob")
    with Client.connect(*chat_server.address) as other, pytest.raises(LoginRefused):
        other.login("bob", resume=secret[::-1])
    with Client.connect(*chat_server.address) as again:
        fresh = again.login("bob", resume=secret)
        assert fresh["nick"] == "bob" and fresh["resume"] != secret
        renamed = watcher.expect("nick", old="bob")["new"]
        assert renamed.startswith("Gone")
        seen: list[dict[str, Any]] = []

        def joined_and_left() -> bool:  # (in either order: two connections' readers)
            seen.extend(watcher.sync())
            kinds = {(f["type"], f.get("nick"), f.get("reason")) for f in seen}
            left = ("leave", renamed, "replaced by a new connection")
            return ("join", "bob", None) in kinds and left in kinds

        wait_until(joined_and_left, 10, "bob's join, and the dead connection's leave")
        with Client.connect(*chat_server.address) as third, pytest.raises(LoginRefused):
            third.login("bob", resume=secret)  # used once: the nick is taken now
    dead.close()


def test_a_login_after_the_greeting_is_a_login(chat_server_factory: Factory) -> None:
    """A program that logs in after the text greeting came (a slow link, a connection
    made early) logs in: the greeting is no sign of another face's port."""
    server = chat_server_factory(greeting_delay=0.05)
    with Client.connect(*server.address) as bot:
        wait_until(lambda: bool(select.select([bot.sock], [], [], 0)[0]), 10, "the greeting")
        assert bot.login("bot")["nick"] == "bot"
        assert not [f for f in bot.sync() if f["type"] == "error"]  # (the greeting: dropped)


def test_library_answers_the_servers_pings(chat_server_factory: Factory) -> None:
    """A program that only waits (a bot between messages) stays connected: the library
    answers the server's pings, and returns none of them."""
    server = chat_server_factory(idle_timeout=0.2, ping_timeout=1.0)
    with Client.connect(*server.address) as bot:
        bot.login("bot")
        frames = []
        # The server pings after 0.2 s of silence, and would cut a bot silent for 1 s
        # more (a margin a busy machine cannot take from an answering one).
        deadline = time.monotonic() + 2.5
        with pytest.raises(TimeoutError):
            while True:
                frames.append(bot.receive(timeout=deadline - time.monotonic()))
        assert [f for f in frames if f is None or f["type"] in ("ping", "notice")] == []
        bot.sync(timeout=5)  # still connected, and logged in:
        assert server.hub.find("bot") is not None


def test_the_librarys_nick_follows_renames(chat_server: Server) -> None:
    """client.nick is the nick now: a /nick (or a plugin's rename) read changes it, so a
    bot that skips its own lines by it does not answer itself after a rename."""
    with Client.connect(*chat_server.address) as bot:
        bot.login("bot")
        bot.say("/nick robot")
        frames = bot.sync(timeout=5)
        assert any(f["type"] == "nick" and f["new"] == "robot" for f in frames)
        assert bot.nick == "robot" and bot.nicks == {"bot", "robot"}  # (lines in flight)
        with ChatClient(chat_server.address) as other:
            other.login("bot")  # someone else has the old nick now
            bot.sync(timeout=5)
        assert bot.nicks == {"robot"}


def test_a_library_that_could_not_answer_a_ping_reads_the_end(
    chat_server_factory: Factory,
) -> None:
    """A program that stopped reading past the ping timeout: reading on returns the end
    of the connection (None), not a ConnectionLost from the pong it could not send."""
    server = chat_server_factory(idle_timeout=0.2, ping_timeout=0.3)
    with Client.connect(*server.address) as bot:
        bot.login("bot")
        wait_until(lambda: server.hub.find("bot") is None, 10, "the server dropping bot")
        while (frame := bot.receive(timeout=5)) is not None:
            assert frame["type"] != "pong"
        assert bot.receive(timeout=1) is None


def test_library_errors_are_words(chat_server: Server, chat_client: Connect) -> None:
    """Refused connections and nicks raise errors that say what happened."""
    with pytest.raises(ClientError, match=r"no chatkit server at 127\.0\.0\.1:\d+"):
        Client.connect("127.0.0.1", free_port())
    chat_client("taken")
    with Client.connect(*chat_server.address) as client, pytest.raises(LoginRefused) as info:
        client.login("taken")
    assert info.value.code == "nick_taken"


def test_library_iterates_until_the_server_closes(chat_server_factory: Factory) -> None:
    """Iterating a client ends when the server closes the connection."""
    server = chat_server_factory()
    client = Client.connect(*server.address)
    client.login("iter")
    server.shutdown()
    types = [f["type"] for f in client]
    assert types[-1] == "notice" and client.closed


def test_a_line_over_the_client_limit_is_reported_and_reading_goes_on(
    chat_server: Server,
) -> None:
    """A line from the server over the client's max_line is dropped as it arrives and reads
    as an error frame of the client's own; the frames after it read as usual."""
    with Client.connect(*chat_server.address, max_line=300) as client:
        assert client.max_line == 300
        client.login("bot")
        client.sync()
        client.say("/help")  # the reply lists every command: far over 300 bytes
        client.say("short")
        too_long, message = client.sync()
        assert too_long == {
            "type": "error",
            "code": "server_line_too_long",
            "text": "a line from the server was longer than 300 bytes; it was skipped",
        }
        assert message["text"] == "short"
        assert "server_line_too_long" in LOCAL_ERRORS


def test_a_line_that_is_not_a_frame_is_reported_and_login_goes_on(
    chat_server_factory: Factory,
) -> None:
    """A client slow to say hello gets the server's prompt for people, which is not JSON:
    it reads as an error frame of the client's own, and logging in works after it."""
    server = chat_server_factory(greeting_delay=0.2)
    with Client.connect(*server.address) as client:
        frame = client.receive(timeout=10)
        assert frame is not None and frame["code"] == "server_bad_frame"
        assert "is not a chatkit frame" in frame["text"] and "type a nick" in frame["text"]
        assert client.login("late")["nick"] == "late"


def test_a_lost_connection_is_a_connection_error(chat_server_factory: Factory) -> None:
    """Sending on a connection the server closed raises ConnectionLost, which is also a
    ConnectionError; receiving returns None."""
    server = chat_server_factory()
    client = Client.connect(*server.address)
    client.login("gone")
    server.shutdown()
    assert [f["type"] for f in client][-1] == "notice"
    with pytest.raises(ConnectionError):
        for _ in range(100):  # the first sends may still reach the kernel's buffer
            client.say("anyone?")
    assert isinstance(ConnectionLost("x"), ClientError)
    assert client.receive(timeout=1) is None


def test_a_send_after_the_end_says_whose_end_it_was(chat_server: Server) -> None:
    """Once a read found the server's end, or after close(), a send raises at once
    (it would be lost, or fail as a bad descriptor), saying which end it was."""
    client = Client.connect(*chat_server.address)
    client.login("leaver")
    client.say("/quit")
    while client.receive(timeout=10) is not None:
        pass
    with pytest.raises(ConnectionLost, match="the server closed the connection"):
        client.say("more")
    closed = Client.connect(*chat_server.address)
    closed.close()
    with pytest.raises(ConnectionLost, match=r"this client was closed \(close\(\)\)"):
        closed.say("more")


def test_literal_text_is_a_message_never_a_command(
    chat_server: Server, chat_client: Connect
) -> None:
    """say(..., literal=True), for text that came from someone else (an echo bot's),
    sends it as a message even if it starts with "/": nobody can make the bot quit,
    register or rename itself."""
    watcher = chat_client("watcher")
    with Client.connect(*chat_server.address) as bot:
        bot.login("bot")
        for text in ("/quit owned", "/nick pwned", "//x"):
            bot.say(text, literal=True)
            assert watcher.expect("message", nick="bot")["text"] == text
        for text in ("\n/nick pwned", "\r\n\n/quit owned\n"):  # (line breaks at the ends go)
            bot.say(text, literal=True)
            assert watcher.expect("message", nick="bot")["text"] == text.strip()
        assert [f for f in bot.sync() if f["type"] in ("error", "nick")] == []


def test_a_sync_that_timed_out_leaves_no_pong_for_the_next(chat_server: Server) -> None:
    """The pong of a sync() that gave up is not taken by the next sync() or ready(),
    nor returned by receive(): each answers for its own ping."""
    with Client.connect(*chat_server.address) as bot:
        bot.login("bot")
        with pytest.raises(TimeoutError):
            bot.sync(timeout=0)
        bot.say("/who")
        frames = bot.sync(timeout=10)
        assert [f["command"] for f in frames if f["type"] == "reply"] == ["who"]
        assert bot.ready(timeout=10) == []  # its own pong, which says ready
        with pytest.raises(TimeoutError):
            bot.ready(timeout=0)
        bot.say("hi")
        assert [f["type"] for f in bot.sync(timeout=10)] == ["message"]
        bot.say("/quit")
        assert "pong" not in [f["type"] for f in bot]


def test_enter_is_not_blamed_for_earlier_errors_and_leaves_despite_flood_control(
    chat_server_factory: Factory,
) -> None:
    """An error answering a line sent before enter() is not the join's: it returns (the
    error among its frames); a /part that flood control refuses is sent again once it
    may go, so the client ends up in the one room."""
    from chatkit.config import config_from_dict

    server = chat_server_factory(
        config=config_from_dict({"plugins": {"flood": {"burst": 2, "rate": 5}}})
    )
    with Client.connect(*server.address) as bot:
        bot.login("bot")
        bot.say("hi", room="#nowhere")  # not_in_room; the 1st line of the burst of 2
        frames = bot.enter("#ok")  # /join: the 2nd; /part #general: refused, then again
        codes = [f.get("code") for f in frames if f["type"] == "error"]
        assert codes == ["not_in_room", "rate_limited"]  # the part's, then sent again
        left = [f["room"] for f in frames if f["type"] == "leave" and f["nick"] == "bot"]
        assert left == ["#general"]


def test_join_sends_lines_and_prints_what_comes_back(
    chat_server: Server, chat_client: Connect
) -> None:
    """echo "hello" | chatkit join --nick bot: the room gets it; the output is readable."""
    alice = chat_client("alice")
    result = join(chat_server, "--nick", "bot", stdin="hello\n/who\n\n/msg alice psst\n")
    assert result.returncode == 0, result.stderr
    assert alice.expect("message")["text"] == "hello"
    assert alice.expect("private")["text"] == "psst"
    lines = result.stdout.splitlines()
    assert lines[0].startswith("* Welcome to chatkit")
    assert "[#general] <bot> hello" in lines
    assert "#general (2): alice, bot" in lines
    assert "[pm] <bot -> alice> psst" in lines


def test_join_json_output_and_room(chat_server: Server, chat_client: Connect) -> None:
    """--json prints one frame per line; --room (with or without '#') replaces #general,
    where nobody sees the bot come and go."""
    watcher = chat_client("watcher")
    result = join(
        chat_server, "--nick", "bot", "--room", "ops", "--json", stdin="deploying\n/rooms\n"
    )
    assert result.returncode == 0, result.stderr
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert frames[0]["type"] == "welcome"
    messages = [f for f in frames if f["type"] == "message"]
    assert [(m["room"], m["text"]) for m in messages] == [("#ops", "deploying")]
    assert [f for f in frames if f["type"] == "leave"] == []
    assert frames[-1]["data"]["rooms"] == {"#ops": 1, "#general": 1}
    assert [f for f in watcher.sync() if f.get("nick") == "bot"] == []


def test_join_a_refused_room_exits_6(chat_server: Server) -> None:
    """A --room the server refuses is told in words, with exit status 6, and nothing is sent."""
    result = join(chat_server, "--nick", "bot", "--room", "x!", stdin="never sent\n")
    assert result.returncode == 6
    assert "cannot join #x!: bad room name" in result.stderr
    assert "never sent" not in result.stdout
    spaced = join(chat_server, "--nick", "bot2", "--room", "bad room", stdin="never sent\n")
    assert spaced.returncode == 6
    assert "cannot join #bad room: bad room name '#bad room': a room name is one word" in (
        spaced.stderr
    )


def test_join_exit_codes(chat_server: Server, chat_client: Connect) -> None:
    """Exit codes: 3 no server, 4 nick refused, 2 no nick given, 0 after /quit."""
    nobody = subprocess.run(
        [CHATKIT, "join", "--port", str(free_port()), "--nick", "x"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert nobody.returncode == 3 and "no chatkit server at" in nobody.stderr
    chat_client("alice")
    taken = join(chat_server, "--nick", "alice")
    assert taken.returncode == 4 and "is taken" in taken.stderr
    bad = join(chat_server, "--nick", "no spaces")
    assert bad.returncode == 4
    assert join(chat_server).returncode == 2
    quitting = join(chat_server, "--nick", "q", stdin="/quit bye now\nnever sent\n")
    assert quitting.returncode == 0 and "bye" in quitting.stdout


def test_join_stay_prints_until_the_server_closes(chat_server_factory: Factory) -> None:
    """--stay keeps printing after input ends, and exits 0 when the server shuts down."""
    server = chat_server_factory()
    host, port = server.address
    proc = subprocess.Popen(
        [
            CHATKIT,
            "join",
            "--host",
            host,
            "--port",
            str(port),
            "--nick",
            "watcher",
            "--json",
            "--stay",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["type"] == "welcome"
    with ChatClient(server.address) as alice:
        alice.login("alice")
        alice.say("for the watcher")
        while True:
            frame = json.loads(proc.stdout.readline())
            if frame["type"] == "message":
                assert frame["text"] == "for the watcher"
                break
    server.shutdown()
    assert proc.wait(timeout=10) == 0


def test_join_reports_a_lost_connection(chat_server_factory: Factory) -> None:
    """A server that goes away while input is still open gives exit code 5 and a message."""
    server = chat_server_factory()
    host, port = server.address
    proc = subprocess.Popen(
        [CHATKIT, "join", "--host", host, "--port", str(port), "--nick", "w"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert "Welcome" in proc.stdout.readline()
    server.shutdown()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 5
    assert "closed by the server" in err


def test_join_sends_what_is_typed_after_a_quiet_spell(chat_server_factory: Factory) -> None:
    """A script that pauses past the server's ping still has its next line sent: the
    ping is answered, and input is not held waiting for another frame."""
    server = chat_server_factory(idle_timeout=0.2, ping_timeout=5)
    with ChatClient(server.address) as alice:
        alice.answers_pings = True
        alice.login("alice")
        host, port = server.address
        proc = subprocess.Popen(
            [CHATKIT, "join", "--host", host, "--port", str(port), "--nick", "bot"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None
        try:
            proc.stdin.write("first\n")
            proc.stdin.flush()
            alice.expect("message", nick="bot", text="first")
            # Quiet for longer than idle_timeout: the server pings the bot meanwhile.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    alice.receive(timeout=0.05)
            proc.stdin.write("second\n")
            proc.stdin.flush()
            alice.expect("message", nick="bot", text="second")
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def test_a_send_while_another_thread_waits_has_no_deadline(chat_server: Server) -> None:
    """receive(timeout) waits without setting a timeout on the socket, which a send on
    another thread shares (a long send would fail midway as timed out)."""
    with Client.connect(*chat_server.address) as client:
        client.login("bot")
        client.sync()
        frames: list[dict[str, Any]] = []
        waiting = threading.Thread(target=_read_until_quiet, args=(client, frames, 1.0))
        waiting.start()
        try:
            wait_until(lambda: waiting.is_alive(), 5, "the reader")
            for _ in range(20):  # the reader waits in receive(timeout) meanwhile
                assert client.sock.gettimeout() is None
                time.sleep(0.01)
            client.say("x" * 4000)
        finally:
            waiting.join()
        assert [f["text"] for f in frames if f["type"] == "message"] == ["x" * 4000]


def _read_until_quiet(client: Client, frames: list[dict[str, Any]], quiet: float) -> None:
    """Read frames into ``frames`` until none comes for ``quiet`` seconds."""
    with contextlib.suppress(TimeoutError):
        while (frame := client.receive(timeout=quiet)) is not None:
            frames.append(frame)


def test_encode_frame_measures_what_the_server_limits(chat_server: Server) -> None:
    """A say frame of exactly MAX_LINE_BYTES (by encode_frame) is accepted; one byte more is not."""
    framing = len(encode_frame(say_frame("")))
    with Client.connect(*chat_server.address) as client:
        client.login("bot")
        client.sync()
        client.say("x" * (MAX_LINE_BYTES - framing))
        assert [f["type"] for f in client.sync()] == ["message"]
        client.say("x" * (MAX_LINE_BYTES - framing + 1))
        assert [f.get("code") for f in client.sync()] == ["line_too_long"]


def test_join_wait_shows_replies_to_the_last_line(
    chat_server: Server, chat_client: Connect
) -> None:
    """--wait SECONDS stays that long after the last line sent, so replies to it are printed."""
    alice = chat_client("alice")
    host, port = chat_server.address
    started = time.monotonic()
    proc = subprocess.Popen(
        [CHATKIT, "join", "--host", host, "--port", str(port), "--nick", "bot", "--wait", "3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write("!weather\n")
    proc.stdin.close()
    alice.expect("message", text="!weather")
    alice.say("sunny")
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()  # until it exits
    assert proc.wait(timeout=10) == 0, proc.stderr.read()
    assert "[#general] <alice> sunny" in out.splitlines()
    assert time.monotonic() - started >= 3


def test_join_stay_and_wait_are_exclusive(chat_server: Server) -> None:
    """--stay and --wait together are a usage error (exit 2)."""
    result = join(chat_server, "--nick", "bot", "--stay", "--wait", "1")
    assert result.returncode == 2 and "--stay and --wait" in result.stderr


def test_a_script_of_more_lines_than_flood_control_allows_at_once(
    chat_server: Server, chat_client: Connect
) -> None:
    """`seq 1 26 | chatkit join`: every line is delivered (they go out paced under the
    server's flood control, 20 at once by default), and it exits 0."""
    watcher = chat_client("watcher")
    result = join(chat_server, "--nick", "counter", stdin="".join(f"{i}\n" for i in range(26)))
    assert result.returncode == 0, result.stderr
    assert "rate_limited" not in result.stdout
    got = [watcher.expect("message", nick="counter")["text"] for _ in range(26)]
    assert got == [str(i) for i in range(26)]
