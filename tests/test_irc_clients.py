"""Real IRC clients end to end: irssi and WeeChat, from Debian's packages, against a real
server, each driven under tmux as a person would drive it.

Each test starts a ``chatkit.Server`` with the line face and the IRC face on port 0 (history
on, in memory), has a JSON client say things (or ban someone), then runs the IRC client in a detached tmux
session with its own home directory: it types with ``tmux send-keys`` and reads the screen
with ``tmux capture-pane``. Every wait polls the screen or the JSON client's frames until a
condition holds or a deadline passes.

The clients are not optional: ``.ci/run`` installs irssi, WeeChat and tmux when they are
missing, and these tests fail (they are not skipped) on a machine without them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_irc_face import IrcClient

from chatkit import Server
from chatkit.faces.irc import IrcFace
from chatkit.faces.line import LineFace
from chatkit.testing import ChatClient, make_config, wait_until

TIMEOUT = 10.0  # seconds to wait for a client's screen or a frame
POLL = 0.05  # seconds between two looks at the screen


def require(*programs: str) -> None:
    """Fail (never skip) when a program is missing: CI installs them."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: run .ci/run, which installs irssi, WeeChat "
            "and tmux from Debian's packages (apt-get install irssi weechat-curses tmux)",
            pytrace=False,
        )


class Tmux:
    """One program in a detached tmux session of its own tmux server: type into it, read
    its screen. The server's socket, config and environment are the test's own."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.name = name
        self.socket = tmp_path / f"tmux-{name}.sock"
        self.config = tmp_path / "tmux.conf"
        # remain-on-exit: a client that exits (or crashes) leaves its last screen to read.
        self.config.write_text("set -g remain-on-exit on\nset -g history-limit 2000\n")
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
        env.update(HOME=str(home), LANG="C.UTF-8", LC_ALL="C.UTF-8", TZ="UTC")
        self.env = env
        self.last_screen = ""
        self.pid: int | None = None
        """The client's process (tmux runs the command as the pane's process)."""

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", str(self.config), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=check,
        )

    def start(self, command: list[str]) -> None:
        self.tmux(
            "new-session", "-d", "-s", self.name, "-x", "200", "-y", "50", shlex.join(command)
        )
        pid = self.tmux("display-message", "-p", "-t", self.name, "#{pane_pid}").stdout
        self.pid = int(pid)

    def type(self, text: str) -> None:
        """Type a line and press Enter."""
        self.tmux("send-keys", "-t", self.name, "-l", text)
        self.tmux("send-keys", "-t", self.name, "Enter")

    def screen(self) -> str:
        done = self.tmux("capture-pane", "-p", "-t", self.name, check=False)
        if done.returncode == 0:
            self.last_screen = done.stdout
        return self.last_screen

    def exited(self) -> bool:
        done = self.tmux("display-message", "-p", "-t", self.name, "#{pane_dead}", check=False)
        return done.returncode != 0 or done.stdout.strip() == "1"

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """The first match of the regex ``pattern`` on the screen, once it shows."""
        found: re.Match[str] = wait_until(
            lambda: re.search(pattern, self.screen(), re.MULTILINE),
            timeout,
            f"{self.name}'s screen to show {pattern!r}",
            POLL,
        )
        return found

    def wait_exited(self, timeout: float = TIMEOUT) -> None:
        wait_until(self.exited, timeout, f"{self.name} to exit", POLL)

    def kill(self) -> None:
        """Close the session (the client loses its terminal and exits); a client that
        outlives that for a second is killed."""
        self.tmux("kill-server", check=False)
        if self.pid is None:
            return
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(POLL)
        # It may end between the last look and this kill: that is what was wanted.
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Callable[[str], Tmux]]:
    """``tmux(name)``: a tmux session for one client; its tmux server is killed at the end."""
    sessions: list[Tmux] = []

    def make(name: str) -> Tmux:
        session = Tmux(tmp_path, name)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.kill()


@pytest.fixture
def server() -> Iterator[Server]:
    """A real server with the line and IRC faces on free ports, history in memory."""
    server = Server(config=make_config(), faces=[LineFace(), IrcFace(port=0)])
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


@pytest.fixture
def jay(server: Server) -> Iterator[ChatClient]:
    """A JSON client in #general that already said two things, for the history replay."""
    with ChatClient(server.addresses["line"], timeout=TIMEOUT) as client:
        client.login("jay")
        client.say("first, before anyone on IRC")
        client.say("second, still before")
        client.expect("message", text="second, still before")
        yield client


def chat_end_to_end(
    client: Tmux,
    jay: ChatClient,
    nick: str,
    said: Callable[[str, str], str],
    joined: str,
    *,
    irssi: bool,
    irc: tuple[str, int],
) -> None:
    """What both clients go through once started: the join, the replay, a CTCP VERSION
    from another IRC user (``irc``: the face's address), a message each way, /quit. ``said(nick, text)`` is the regex of a chat line on the client's screen,
    ``joined`` the one of its own join; a failure shows the client's screen."""
    try:
        jay.expect("join", nick=nick, room="#general")
        if irssi:
            # irssi opens the channel's window beside the status window (the status bar
            # shows activity in window 2 once it is there); look at it.
            client.wait_for(r"\[Act: [^\]]*\b2\b")
            client.type("/window goto #general")
        client.wait_for(joined)
        # The replay, in order.
        client.wait_for(
            said("jay", "first, before anyone on IRC")
            + r"(?s:.*)"
            + said("jay", "second, still before")
        )
        client.wait_for(r"\*\*\* 2 earlier messages of #general above")

        # A CTCP query from another IRC user reaches the client, which answers it.
        with IrcClient(irc) as ivy:
            ivy.register("ivy")
            ivy.send(f"PRIVMSG {nick} :\x01VERSION\x01")
            ivy.expect(f":{nick}!{nick}@chatkit NOTICE ivy :\x01VERSION ", timeout=TIMEOUT)

        client.type(f"hello from {nick}")
        frame = jay.expect("message", nick=nick, room="#general")
        assert frame["text"] == f"hello from {nick}"

        jay.say(f"welcome, {nick}")
        client.wait_for(said("jay", f"welcome, {nick}"))
        # The replayed lines stay above the live ones.
        client.wait_for(
            said("jay", "second, still before")
            + r"(?s:.*)"
            + said(nick, f"hello from {nick}")
            + r"(?s:.*)"
            + said("jay", f"welcome, {nick}")
        )

        client.type("/quit see you")
        jay.expect("leave", nick=nick, reason="quit: see you")
        client.wait_exited()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{client.name}'s screen:\n{client.screen()}") from None


def test_irssi(
    server: Server, jay: ChatClient, tmux: Callable[[str], Tmux], tmp_path: Path
) -> None:
    """irssi connects, is in #general, shows the replay, chats both ways and quits."""
    host, port = server.addresses["irc"]
    client = start_irssi(tmux, tmp_path, (host, port))

    def said(nick: str, text: str) -> str:
        return rf"<.?{re.escape(nick)}> {re.escape(text)}"

    joined = r"bob \[bob@chatkit\] has joined #general"
    chat_end_to_end(client, jay, "bob", said, joined, irssi=True, irc=(host, port))


def start_irssi(tmux: Callable[[str], Tmux], tmp_path: Path, irc: tuple[str, int]) -> Tmux:
    """irssi as bob, connecting to ``irc``, in a home of its own."""
    require("irssi", "tmux")
    home = tmp_path / "irssi"
    home.mkdir()
    # irssi's flood control sends one command per 2.2 s after a burst of 5, which would
    # hold a typed message behind the channel sync's queries for 10 s: no delay here. No
    # user mode to set at connect, no autosaved settings, no logs.
    (home / "config").write_text(
        "settings = {\n"
        '  core = { real_name = "Bob Example"; user_name = "bob"; nick = "bob";'
        ' settings_autosave = "no"; };\n'
        '  "irc/core" = { cmd_queue_speed = "0msec"; cmds_max_at_once = "100"; usermode = ""; };\n'
        '  "fe-common/core" = { autolog = "no"; };\n'
        "};\n"
    )
    client = tmux("irssi")
    client.start(["irssi", f"--home={home}", "-n", "bob", "-c", irc[0], "-p", str(irc[1])])
    return client


def test_irssi_shows_who_set_a_ban_and_when(tmux: Callable[[str], Tmux], tmp_path: Path) -> None:
    """With moderation, irssi's ban list (/ban, which asks MODE #room b) names who set
    each ban and how long ago, from the 367 line's who and set-ts."""
    server = Server(
        plugins=["moderation"], config=make_config(), faces=[LineFace(), IrcFace(port=0)]
    )
    server.start()
    try:
        with ChatClient(server.addresses["line"], timeout=TIMEOUT) as jay:
            jay.login("jay")  # the first in #general: its operator
            jay.say("/ban mallory")
            jay.expect("notice", text="jay banned mallory!*@*")
            client = start_irssi(tmux, tmp_path, server.addresses["irc"])
            try:
                jay.expect("join", nick="bob", room="#general")
                client.wait_for(r"\[Act: [^\]]*\b2\b")  # #general's window is there
                client.type("/window goto #general")
                # /ban alone says "not fully synchronized yet" until irssi has its answers
                # to the MODE, WHO and MODE b it sends after the names.
                client.wait_for(r"Join to #general was synced")
                client.type("/ban")
                client.wait_for(
                    r"#general: ban mallory!\*@\* \[by jay!jay@chatkit, \d+ secs? ago\]"
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nirssi's screen:\n{client.screen()}") from None
    finally:
        server.shutdown()


def test_irssi_joins_a_room_spelled_in_another_case_in_one_window(
    tmux: Callable[[str], Tmux], tmp_path: Path
) -> None:
    """/join #TÉST where #Tést is: irssi (CASEMAPPING=ascii) takes them for two channels;
    the server's 470 (forwarded to #Tést) makes it put the JOIN #Tést in the window it
    opened, leaving no window of a channel that never joins."""
    server = Server(config=make_config(), faces=[LineFace(), IrcFace(port=0)])
    server.start()
    try:
        with ChatClient(server.addresses["line"], timeout=TIMEOUT) as jay:
            jay.login("jay")
            jay.say("/join #Tést")
            jay.expect("join", nick="jay", room="#Tést")
            client = start_irssi(tmux, tmp_path, server.addresses["irc"])
            try:
                jay.expect("join", nick="bob", room="#general")
                client.wait_for(r"\[Act: [^\]]*\b2\b")  # #general's window is there
                client.type("/join #TÉST")
                jay.expect("join", nick="bob", room="#Tést")
                client.wait_for(r"Join to #Tést was synced")
                client.type("/window list")
                client.type("/window goto 1")  # (the list is printed there)
                client.wait_for(r"\n\S+ 3\s+#Tést\s")
                assert not re.search(r"\n\S+ \d+\s+#TÉST\s", client.screen())
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nirssi's screen:\n{client.screen()}") from None
    finally:
        server.shutdown()


def test_weechat(
    server: Server, jay: ChatClient, tmux: Callable[[str], Tmux], tmp_path: Path
) -> None:
    """WeeChat connects, is in #general, shows the replay, chats both ways and quits."""
    require("weechat", "tmux")
    home = tmp_path / "weechat"
    host, port = server.addresses["irc"]
    commands = (
        f"/server add chatkit {host}/{port} -notls -nicks=carol -username=carol"
        " -realname=Carol; /connect chatkit"
    )
    client = tmux("weechat")
    # Only the irc plugin (no fifo pipe, no scripts), in a home of its own.
    client.start(["weechat", "--dir", str(home), "-P", "irc", "-s", "-r", commands])

    def said(nick: str, text: str) -> str:
        return rf"{re.escape(nick)} \| {re.escape(text)}"

    # WeeChat negotiates extended-join (offered with accounts): the realname shows.
    joined = r"carol \(Carol\) \(carol@chatkit\) has joined #general"
    chat_end_to_end(client, jay, "carol", said, joined, irssi=False, irc=(host, port))


def test_weechat_logs_in_with_sasl(
    server: Server, tmux: Callable[[str], Tmux], tmp_path: Path
) -> None:
    """WeeChat logs in to a registered nick with SASL PLAIN (its sasl_username and
    sasl_password settings): it holds the nick, is identified to the account, and reads
    that account's private history (`/quote HISTORY jay`, chatkit's /history)."""
    require("weechat", "tmux")
    with (
        ChatClient(server.addresses["line"], timeout=TIMEOUT) as jay,
        ChatClient(server.addresses["line"], timeout=TIMEOUT) as owner,
    ):
        owner.login("dora")
        owner.command("/register sesame-seed")
        jay.login("jay")
        jay.say("/msg dora said before weechat")
        owner.expect("private", text="said before weechat")  # stored for dora's account
        owner.say("/quit")
        owner.wait_closed()  # logged out: dora is free for WeeChat
        home = tmp_path / "weechat"
        host, port = server.addresses["irc"]
        server_name = "irc.server.chatkit"
        commands = (
            f"/server add chatkit {host}/{port} -notls -nicks=dora -username=dora"
            f" -realname=Dora; /set {server_name}.sasl_mechanism plain"
            f"; /set {server_name}.sasl_username dora"
            f"; /set {server_name}.sasl_password sesame-seed; /connect chatkit"
        )
        client = tmux("weechat")
        client.start(["weechat", "--dir", str(home), "-P", "irc", "-s", "-r", commands])
        try:
            jay.expect("join", nick="dora", room="#general")
            dora = server.hub.find("dora")
            assert dora is not None and dora.account == "dora"
            # The server's buffer tells of SASL, then of the private history, which opens a
            # buffer for jay: show that. WeeChat switches to #general when its JOIN arrives,
            # which can be after jay saw the join: wait for that switch, or it undoes ours.
            client.wait_for(r"Channel #general: 2 nicks")
            client.type("/buffer 1")
            client.wait_for(r"SASL authentication successful")
            client.type("/quote HISTORY jay")
            client.wait_for(r"1 earlier message of your conversation with jay above")
            client.type("/buffer irc.chatkit.jay")
            client.wait_for(r"jay \| said before weechat")
            client.type("/quit")
            jay.expect("leave", nick="dora")
            client.wait_exited()
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{client.name}'s screen:\n{client.screen()}") from None
