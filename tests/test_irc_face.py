"""The IRC face through real sockets: registration, commands, numerics, and IRC users
chatting with line-protocol (JSON and nc) users in the same rooms.

Every test runs a real ``chatkit.Server`` with the line face and the IRC face on
port 0. ``IrcClient`` is a raw IRC connection read line by line with deadlines; the
``irc`` library from PyPI drives one test as a scripted client would.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_server import pausing

from chatkit import Config, Reject, Say, Server, Session, hookimpl
from chatkit.config import config_from_dict
from chatkit.faces.irc import IrcFace
from chatkit.faces.irc.face import _HANDLERS, IRC_HELP
from chatkit.faces.irc.message import MAX_LINE_BYTES
from chatkit.faces.line import LineFace
from chatkit.names import wildcard_match
from chatkit.testing import ChatClient, TextClient, make_config, wait_until

SERVER = "irc.test"
TIMEOUT = 5.0  # seconds a test waits for an expected line


class IrcClient:
    """A raw IRC connection for tests: send lines, expect lines, with deadlines."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.pending: list[str] = []
        """Lines received and not yet consumed by :meth:`expect`."""
        self.eof = False
        self._buf = b""

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(f"{line}\r\n" for line in lines).encode())

    def _read(self, deadline: float) -> bool:
        while b"\n" not in self._buf:
            if self.eof or time.monotonic() >= deadline:
                return False
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
            self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            assert line.endswith(b"\r"), line  # the server ends lines with CR-LF
            assert len(line.split(b" :", 1)[0].split(b" ", 1)[-1]) < 8192
            body = line.partition(b" ")[2] if line.startswith(b"@") else line
            assert len(body) + 1 <= MAX_LINE_BYTES, line  # (RFC 1459 2.3: CR-LF included)
            self.pending.append(line[:-1].decode())
        return True

    def expect(self, match: str | Callable[[str], bool], timeout: float = TIMEOUT) -> str:
        """The first line containing ``match`` (or matching the predicate); the lines
        before it are consumed. A numeric is matched as `` NNN ``."""
        return self.until(match, timeout)[-1]

    def until(self, match: str | Callable[[str], bool], timeout: float = TIMEOUT) -> list[str]:
        """The lines up to the first one that matches (see :meth:`expect`), consumed."""

        def ok(line: str) -> bool:
            if callable(match):
                return match(line)
            if re.fullmatch(r"\d{3}", match):
                return f" {match} " in line
            return match in line

        deadline = time.monotonic() + timeout
        while True:
            for i, line in enumerate(self.pending):
                if ok(line):
                    lines = self.pending[: i + 1]
                    del self.pending[: i + 1]
                    return lines
            if not self._read(deadline):
                what = "closed the connection" if self.eof else "sent nothing matching"
                raise AssertionError(f"expected {match!r}; the server {what}: {self.pending}")

    def sync(self) -> list[str]:
        """Every line before the answer to a PING (the server answers in order)."""
        token = f"sync{time.monotonic_ns()}"
        self.send(f"PING {token}")
        return self.until(f"PONG {SERVER} :{token}")[:-1]

    def register(self, nick: str, caps: str = "", password: str | None = None) -> list[str]:
        """Register as ``nick`` (negotiating ``caps``); the lines up to the end of the
        default room's names list."""
        if caps:
            self.send("CAP LS 302", f"CAP REQ :{caps}")
        if password is not None:
            self.send(f"PASS {password}")
        self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick.title()} Example")
        if caps:
            self.expect("CAP * ACK")
            self.send("CAP END")
        return self.until(" 366 ")

    def wait_closed(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not self.eof:
            if not self._read(deadline) and time.monotonic() >= deadline:
                raise AssertionError("the server did not close the connection")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> IrcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def make_server() -> Iterator[Callable[..., Server]]:
    """Servers with the line face and the IRC face, shut down after the test."""
    servers: list[Server] = []

    def make(
        plugins: list[Any] | None = None, config: Config | None = None, **limits: Any
    ) -> Server:
        server = Server(
            plugins=plugins or [],
            config=make_config(config, **limits),
            faces=[LineFace(), IrcFace(port=0, server_name=SERVER, network="TestNet")],
        )
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


@pytest.fixture
def connect(server: Server) -> Iterator[Callable[[], IrcClient]]:
    clients: list[IrcClient] = []

    def connect() -> IrcClient:
        client = IrcClient(server.addresses["irc"])
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


# -- registration ---------------------------------------------------------------------


def test_registration_welcomes_with_isupport_and_joins_the_default_room(
    connect: Callable[[], IrcClient],
) -> None:
    """NICK and USER give 001-005 (ISUPPORT as the chat's rules), the LUSERS numerics
    (counting the client itself), 422, then the JOIN of #general with its names list."""
    alice = connect()
    lines = alice.register("alice")
    codes = [line.split()[1] for line in lines]
    assert codes[:5] == ["001", "002", "003", "004", "005"]  # (then as many 005 as it takes)
    assert lines[0] == f":{SERVER} 001 alice :Welcome to the TestNet IRC network, alice"
    isupport = " ".join(line for line in lines if " 005 " in line)
    for token in ("CASEMAPPING=ascii", "CHANTYPES=#", "NICKLEN=32", "CHANNELLEN=50"):
        assert token in isupport
    assert "NETWORK=TestNet" in isupport
    assert codes[-9:] == ["251", "254", "255", "265", "266", "422", "JOIN", "353", "366"]
    assert f":{SERVER} 255 alice :I have 1 clients and 0 servers" in lines
    assert lines[-3] == ":alice!alice@chatkit JOIN #general"
    assert lines[-2] == f":{SERVER} 353 alice = #general :alice"


def test_user_before_nick_and_ping_and_quit_before_registration(
    connect: Callable[[], IrcClient],
) -> None:
    """Probes work before registration: PING gets PONG, QUIT an ERROR and a close; USER
    may come before NICK."""
    probe = connect()
    probe.send("PING :hello", "WHO #general", "QUIT :probe done")
    probe.expect(f":{SERVER} PONG {SERVER} :hello")
    probe.expect(f":{SERVER} 451 * :You have not registered")
    assert "ERROR :Closing Link: 127.0.0.1 (Quit: probe done)" in probe.expect("ERROR")
    probe.wait_closed()
    bob = connect()
    bob.send("USER bob 0 * :Bob", "NICK bob")
    bob.expect(f":{SERVER} 001 bob ")


def test_taken_and_bad_nicks_then_retry(connect: Callable[[], IrcClient], server: Server) -> None:
    """A nick in use (by any face, any case) gets 433, a bad one 432; the client retries."""
    with ChatClient(server.addresses["line"]) as json_alice:
        json_alice.login("alice")
        irc = connect()
        irc.send("NICK ALICE", "USER x 0 * :x")
        assert irc.expect("433").startswith(f":{SERVER} 433 * ALICE :")
        irc.send("NICK 9lives")
        irc.expect(f":{SERVER} 432 * 9lives :")
        irc.send("NICK alice2")
        irc.expect(f":{SERVER} 001 alice2 ")
        # A bad nick is 432 at once, before USER (as other servers answer it); one
        # that is good once in NFKC (José typed as e and a combining accent) is good.
        early = connect()
        early.send("NICK al!ce")
        early.expect(f":{SERVER} 432 * al!ce :nicks are 1 to ")
        early.send("NICK alice3", "USER x 0 * :x")
        early.expect(f":{SERVER} 001 alice3 ")
        decomposed = connect()
        decomposed.send("NICK Jose\u0301", "USER x 0 * :x")
        decomposed.expect(f":{SERVER} 001 José ")


def test_pass_reaches_the_login_hook(make_server: Callable[..., Server]) -> None:
    """PASS is handed to chatkit_allow_login as fields["password"]; a refusal closes
    the connection with ERROR."""

    class Gate:
        def __init__(self) -> None:
            self.seen: list[dict[str, Any]] = []

        @hookimpl
        def chatkit_allow_login(
            self, client: Session, nick: str, fields: dict[str, Any]
        ) -> Reject | None:
            self.seen.append(fields)
            if fields.get("password") != "sesame":
                return Reject("wrong password", "bad_password")
            return None

    gate = Gate()
    server = make_server(plugins=[gate])
    with IrcClient(server.addresses["irc"]) as good, IrcClient(server.addresses["irc"]) as bad:
        good.register("ali", password="sesame")
        bad.send("PASS nope", "NICK bob", "USER b 0 * :b")
        assert "(wrong password)" in bad.expect("ERROR :Closing Link")
        bad.wait_closed()
    assert {"password": "sesame"} in gate.seen and {"password": "nope"} in gate.seen


def test_motd_plugin_text_is_the_motd(make_server: Callable[..., Server]) -> None:
    """With the motd plugin, registration shows its text as 375/372/376, and MOTD
    repeats it; without it, MOTD answers 422."""
    server = make_server(
        plugins=["motd"], config=Config(plugin_config={"motd": {"text": "Hi {nick}"}})
    )
    with IrcClient(server.addresses["irc"]) as alice:
        lines = alice.register("alice")
        codes = [line.split()[1] for line in lines if " 005 " not in line]
        assert codes[4:12] == ["251", "254", "255", "265", "266", "375", "372", "376"]
        assert f":{SERVER} 372 alice :- Hi alice" in lines
        alice.send("MOTD")
        alice.expect("375")
        alice.expect(":- Hi alice")
        alice.expect("376")


def test_login_timeout_and_idle_ping(make_server: Callable[..., Server]) -> None:
    """A connection that does not register is closed with ERROR; an idle client gets
    PING :server, and a PONG keeps it."""
    server = make_server(login_timeout=1.0, idle_timeout=0.3, first_byte_timeout=5.0)
    with IrcClient(server.addresses["irc"]) as slow, IrcClient(server.addresses["irc"]) as idle:
        idle.register("idle")
        slow.send("NICK slow")
        assert "Closing Link" in slow.expect("ERROR", timeout=5)
        slow.wait_closed()
        idle.expect(f"PING :{SERVER}", timeout=5)
        idle.send(f"PONG :{SERVER}")
        idle.sync()  # still connected, and answered (another PING may come on a slow run)


def test_a_parked_irc_client_wakes_when_it_talks(make_server: Callable[..., Server]) -> None:
    """IRC clients idle past idle_park hold no reader; messages reach them and they talk on."""
    server = make_server(idle_park=0.05)
    address = server.addresses["irc"]
    with IrcClient(address) as alice, IrcClient(address) as bob:
        alice.register("alice")
        bob.register("bob")
        alice.expect(":bob!bob@chatkit JOIN #general")
        wait_until(lambda: server.parked >= 2, what="both parked")
        bob.send("PRIVMSG #general :to a parked alice")
        alice.expect(":bob!bob@chatkit PRIVMSG #general :to a parked alice")
        alice.send("PRIVMSG #general :awake")
        bob.expect(":alice!alice@chatkit PRIVMSG #general :awake")


# -- commands ---------------------------------------------------------------------------


def test_join_part_names_and_join_zero(connect: Callable[[], IrcClient]) -> None:
    """JOIN takes several channels, PART leaves with a reason, NAMES lists, JOIN 0
    leaves everything; errors name the channel."""
    alice, bob = connect(), connect()
    alice.register("alice")
    bob.register("bob")
    alice.expect(":bob!bob@chatkit JOIN #general")
    alice.send("JOIN #a,#b,bad")
    alice.expect(":alice!alice@chatkit JOIN #a")
    alice.expect(f":{SERVER} 366 alice #a ")
    alice.expect(":alice!alice@chatkit JOIN #b")
    alice.expect(f":{SERVER} 403 alice bad :")
    bob.send("JOIN #a")
    alice.expect(":bob!bob@chatkit JOIN #a")
    bob.expect(f":{SERVER} 353 bob = #a :alice bob")
    alice.send("NAMES #A")  # answered with the room's own spelling
    alice.expect(f":{SERVER} 353 alice = #a :alice bob")
    alice.expect(f":{SERVER} 366 alice #a :")
    bob.send("PART #a :see you")
    alice.expect(":bob!bob@chatkit PART #a :see you")
    bob.expect(":bob!bob@chatkit PART #a :see you")
    bob.send("PART #a")
    bob.expect(f":{SERVER} 442 bob #a :")
    bob.send("PART #nosuch")  # no such room: 403 (RFC 2812 3.2.2), not 442
    bob.expect(f":{SERVER} 403 bob #nosuch :")
    bob.send("MODE nobody")  # no such nick: 401 (502 is for another's nick)
    bob.expect(f":{SERVER} 401 bob nobody :")
    alice.send("JOIN 0")
    for room in ("#general", "#a", "#b"):
        alice.expect(f":alice!alice@chatkit PART {room}")
    bob.expect(":alice!alice@chatkit PART #general")


def test_a_room_s_creation_time_is_when_it_was_created(
    connect: Callable[[], IrcClient], server: Server
) -> None:
    """``329`` gives the room's own creation time, not the server's start."""
    alice = connect()
    alice.register("alice")
    before = time.time()
    alice.send("JOIN #fresh")
    alice.expect(f":{SERVER} 366 alice #fresh ")
    created = server.hub.created("#fresh")
    assert created is not None and before <= created <= time.time()
    # A creation time no server start could share, so the 329 cannot be the start's.
    server.hub._rooms["#fresh"].created = 1_000_000.5
    alice.send("MODE #fresh")
    alice.expect(f":{SERVER} 329 alice #fresh 1000000")
    assert server.hub.created("#nosuch") is None


def test_a_part_reason_reads_the_same_on_every_face(
    connect: Callable[[], IrcClient], server: Server
) -> None:
    """``PART #a :text`` is ``/part #a text``: other faces read ``part: text`` (the
    reason /part gives), IRC clients the text alone, whichever face parted."""
    with TextClient(server.addresses["line"]) as text:
        text.send_line("tex")
        text.expect("joined #general")
        alice = connect()
        alice.register("alice")
        text.expect("alice joined")
        alice.send("PART #general :see you")
        text.expect("* alice left #general (part: see you)")
        alice.send("JOIN #general")
        text.expect("alice joined")
        text.send_line("/part #general gotta go")
        alice.expect(":tex!tex@chatkit PART #general :gotta go")


def test_privmsg_and_notice_errors(connect: Callable[[], IrcClient]) -> None:
    """PRIVMSG errors: 411, 412 (no text, or only formatting), 401 for a nick or a
    channel nobody is in (no such channel), 404 for a channel not joined; NOTICE never
    gets an error."""
    alice, bob = connect(), connect()
    alice.register("alice")
    bob.register("bob")
    bob.send("JOIN #den")
    bob.expect(f":{SERVER} 366 bob #den ")
    alice.send("PRIVMSG", "PRIVMSG #general", "PRIVMSG zed :hi", "PRIVMSG #elsewhere :hi")
    alice.expect("411")
    alice.expect("412")
    alice.expect(f":{SERVER} 401 alice zed :")
    alice.expect(f":{SERVER} 401 alice #elsewhere :no room #elsewhere")
    alice.send("PRIVMSG #den :hi")
    alice.expect(f":{SERVER} 404 alice #den :you are not in #den")
    alice.send("PRIVMSG #general :\x02\x02")  # only formatting, stripped: nothing left
    alice.expect(f":{SERVER} 412 alice :No text to send")
    alice.send("NOTICE zed :hi", "NOTICE #elsewhere :hi", "NOTICE", "NOTICE #general :\x02")
    assert alice.sync() == []
    # Targets that are only commas name nobody: 411, and 461 for KICK and INVITE.
    alice.send("PRIVMSG ,, :x", "KICK , ,", "INVITE , ,")
    alice.expect(f":{SERVER} 411 alice :No recipient given (PRIVMSG)")
    alice.expect(f":{SERVER} 461 alice KICK :")
    alice.expect(f":{SERVER} 461 alice INVITE :")


def test_queries(make_server: Callable[..., Server]) -> None:
    """WHO, WHOIS, WHOWAS, TOPIC, LIST, MODE, AWAY, ISON, USERHOST, VERSION, TIME, INFO,
    LUSERS answer with their numerics."""
    server = make_server(config=Config(disable=["flood"]))  # more lines than its burst
    with IrcClient(server.addresses["irc"]) as alice, IrcClient(server.addresses["irc"]) as bob:
        alice.register("alice")
        bob.register("bob")
        alice.send("WHO #general")
        assert (
            alice.expect("352")
            == f":{SERVER} 352 alice #general alice chatkit {SERVER} alice H :0 Alice Example"
        )
        alice.expect(f":{SERVER} 352 alice #general bob ")
        alice.expect(f":{SERVER} 315 alice #general :")
        bob.send("AWAY :lunch")
        bob.expect(f":{SERVER} 306 bob :")
        alice.send("WHOIS bob")
        alice.expect(f":{SERVER} 311 alice bob bob chatkit * :Bob Example")
        alice.expect(f":{SERVER} 319 alice bob :#general")
        alice.expect(f":{SERVER} 312 alice bob {SERVER} ")
        alice.expect(f":{SERVER} 301 alice bob :lunch")
        alice.expect(f":{SERVER} 318 alice bob :")
        # Whoever messages an away user hears so (RFC 2812 AWAY); a NOTICE never does.
        alice.send("PRIVMSG bob :there?", "NOTICE bob :fyi")
        alice.expect(f":{SERVER} 301 alice bob :lunch")
        assert alice.sync() == []
        alice.send("WHOIS nobody")
        alice.expect(f":{SERVER} 401 alice nobody :")
        alice.expect(f":{SERVER} 318 alice nobody :")
        # No nick history: WHOWAS says so for every nick (irssi asks after a WHOIS of nobody).
        alice.send("WHOWAS nobody 1", "WHOWAS bob,carol", "WHOWAS")
        alice.expect(f":{SERVER} 406 alice nobody :There was no such nickname")
        alice.expect(f":{SERVER} 369 alice nobody :End of WHOWAS")
        alice.expect(f":{SERVER} 406 alice bob :")
        alice.expect(f":{SERVER} 369 alice bob :")
        alice.expect(f":{SERVER} 431 alice :No nickname given")
        alice.send("USERHOST bob alice", "ISON bob nobody ALICE", "ISON")
        alice.expect(f":{SERVER} 302 alice :bob=-bob@chatkit alice=+alice@chatkit")
        alice.expect(f":{SERVER} 303 alice :bob alice")
        alice.expect(f":{SERVER} 461 alice ISON :")
        bob.send("AWAY")
        bob.expect(f":{SERVER} 305 bob :")
        alice.send("TOPIC #general", "TOPIC #general :new", "TOPIC #nope")
        alice.expect(f":{SERVER} 331 alice #general :No topic is set")
        alice.expect(":alice!alice@chatkit TOPIC #general :new")
        alice.expect(f":{SERVER} 403 alice #nope :")
        bob.expect(":alice!alice@chatkit TOPIC #general :new")
        alice.send("NAMES")  # the rooms one is in, then 366 *
        alice.expect(f":{SERVER} 353 alice = #general :")
        alice.expect(f":{SERVER} 366 alice * :End of /NAMES list.")
        alice.send("ADMIN")  # RFC 2812 3.4.9: 256 to 259
        alice.expect(f":{SERVER} 256 alice {SERVER} :Administrative info")
        alice.expect(f":{SERVER} 257 alice :TestNet ({SERVER})")
        alice.expect(f":{SERVER} 258 alice :chatkit ")
        alice.expect(f":{SERVER} 259 alice :")
        alice.send("LIST")
        alice.expect("321")
        alice.expect(f":{SERVER} 322 alice #general 2 :new")  # the topic, as IRC lists it
        alice.expect("323")
        alice.send("MODE #general", "MODE #general b", "MODE #general +o bob")
        alice.expect(f":{SERVER} 324 alice #general +n")
        alice.expect(f":{SERVER} 329 alice #general ")
        alice.expect(f":{SERVER} 368 alice #general :")
        alice.expect(f":{SERVER} 482 alice #general :")
        alice.send("MODE alice +i", "MODE alice", "MODE bob")
        alice.expect(":alice!alice@chatkit MODE alice +i")
        alice.expect(f":{SERVER} 221 alice +i")
        alice.expect(f":{SERVER} 502 alice :")
        alice.send("PRIVMSG bob :back?")  # back: no 301
        assert alice.sync() == []
        alice.send("VERSION", "TIME", "INFO", "LUSERS", "MOTD")
        alice.expect(f":{SERVER} 351 alice chatkit-")
        now = int(time.time())
        after = alice.until(f":{SERVER} 391 alice {SERVER} ")
        # VERSION's 351 is followed by what the server supports (the modern docs' VERSION).
        assert any(" 005 alice " in line and " CHANTYPES=# " in line for line in after)
        stamp = int(after[-1].split()[4])
        assert now - 5 <= stamp <= now + 5
        alice.expect(f":{SERVER} 371 alice :chatkit ")
        alice.expect(f":{SERVER} 374 alice :End of /INFO list.")
        alice.expect(f":{SERVER} 251 alice :There are 1 users and 1 invisible")  # alice is +i
        alice.expect(f":{SERVER} 265 alice 2 2 :Current local users 2, max 2")
        alice.expect(f":{SERVER} 266 alice 2 2 :Current global users 2, max 2")
        alice.expect(f":{SERVER} 422 alice :")


def test_unknown_commands_and_chat_commands(connect: Callable[[], IrcClient]) -> None:
    """An unknown command gets 421; one a plugin registered runs as /name args and its
    reply comes as NOTICEs."""
    alice = connect()
    alice.register("alice")
    alice.send("FROBNICATE x", "ROOMS", "HISTORY 1")
    alice.expect(f":{SERVER} 421 alice FROBNICATE :Unknown command")
    alice.expect(f":{SERVER} NOTICE alice :rooms: #general (1)")
    alice.expect(f":{SERVER} NOTICE #general :*** no earlier messages in #general")
    # IRC's own commands for operators, without the moderation plugin: nobody is one.
    alice.send("KICK #general bob", "INVITE bob #general", "INVITE bob")
    alice.expect(f":{SERVER} 482 alice #general :You're not channel operator")
    alice.expect(f":{SERVER} 482 alice #general :You're not channel operator")
    alice.expect(f":{SERVER} 461 alice INVITE :Not enough parameters")  # names no room


def test_nick_change_is_seen_by_every_face(
    connect: Callable[[], IrcClient], server: Server
) -> None:
    """NICK renames everywhere; the others see NICK, nick frames or text lines."""
    with ChatClient(server.addresses["line"]) as json, TextClient(server.addresses["line"]) as text:
        json.login("jay")
        text.send_line("tex")
        text.expect("joined #general")
        alice = connect()
        alice.register("alice")
        alice.send("NICK alicia")
        alice.expect(":alice!alice@chatkit NICK alicia")
        json.expect("nick", old="alice", new="alicia")
        text.expect("* alice is now known as alicia")
        json.say("/nick jason")
        alice.expect(":jay!jay@chatkit NICK jason")
        alice.send("PRIVMSG #general :still me")
        json.expect("message", nick="alicia", text="still me")


# -- cross-face chat ----------------------------------------------------------------------


def test_irc_text_and_json_users_chat_together(
    connect: Callable[[], IrcClient], server: Server
) -> None:
    """An IRC user, an nc user and a JSON client in one room see each other's messages,
    joins, /me actions and private messages, each in their own protocol."""
    alice = connect()
    alice.register("alice")
    with ChatClient(server.addresses["line"]) as json, TextClient(server.addresses["line"]) as text:
        json.login("jay")
        alice.expect(":jay!jay@chatkit JOIN #general")
        text.send_line("tex")
        alice.expect(":tex!tex@chatkit JOIN #general")
        json.expect("join", nick="tex")
        alice.send("PRIVMSG #general :hello all", "PRIVMSG #general :\x01ACTION waves\x01")
        assert json.expect("message", nick="alice")["text"] == "hello all"
        frame = json.expect("message", nick="alice")
        assert (frame["text"], frame.get("action")) == ("waves", True)
        text.expect("[#general] <alice> hello all")
        text.expect("[#general] * alice waves")
        json.say("hi alice")
        alice.expect(":jay!jay@chatkit PRIVMSG #general :hi alice")
        json.say("/me bows")
        alice.expect(":jay!jay@chatkit PRIVMSG #general :\x01ACTION bows\x01")
        text.send_line("hey")
        alice.expect(":tex!tex@chatkit PRIVMSG #general :hey")
        # A target named twice gets the message once; past TARGMAX (4), 407 each.
        alice.send("PRIVMSG #general,#GENERAL :once", "PRIVMSG a,b,c,d,e,f :many")
        assert json.expect("message", nick="alice")["text"] == "once"
        alice.expect(f":{SERVER} 407 alice e :")
        alice.expect(f":{SERVER} 407 alice f :")
        alice.send("PRIVMSG jay :psst", "PRIVMSG tex :\x01ACTION nudges\x01")
        assert json.expect("private")["text"] == "psst"
        assert [f for f in json.received if f.get("text") == "once"][1:] == []
        text.expect("[pm] * alice -> tex nudges")
        json.say("/msg alice back")
        alice.expect(":jay!jay@chatkit PRIVMSG alice :back")
        # The sender's own messages did not come back (no echo-message).
        assert not [line for line in alice.sync() if "alice!alice" in line]
        json.send(type="say", text="two\nlines")
        alice.expect(":jay!jay@chatkit PRIVMSG #general :two")
        alice.expect(":jay!jay@chatkit PRIVMSG #general :lines")
        json.say("/quit")
        alice.expect(":jay!jay@chatkit QUIT :Quit")


def test_a_warning_comes_after_the_echo_of_the_message_before_it(
    connect: Callable[[], IrcClient],
) -> None:
    """Answers come in the order of the lines: the echo of a PRIVMSG, then the WARN
    about the next line's bad UTF-8, in the same segment."""
    alice = connect()
    alice.register("alice", caps="echo-message")
    alice.sock.sendall(b"PRIVMSG #general :first\r\nPRIVMSG #general :bad \xff\r\n")
    lines = [line for line in alice.sync() if "PRIVMSG" in line or "WARN" in line]
    assert [line.split()[1] for line in lines] == ["PRIVMSG", "WARN", "PRIVMSG"], lines


def test_a_burst_answers_each_privmsg_in_order_refusals_included(
    connect: Callable[[], IrcClient],
) -> None:
    """A burst of PRIVMSGs read at once goes through the hub as a run
    (``Hub.say_run``); one to a room the sender is not in is refused in its place."""
    alice, bob = connect(), connect()
    alice.register("alice", caps="echo-message")
    bob.register("bob")
    alice.expect(":bob!bob@chatkit JOIN #general")
    lines = ["#general :one", "#nowhere :lost", "#general :two", "#general :three"]
    alice.sock.sendall(b"".join(b"PRIVMSG %s\r\n" % line.encode() for line in lines))
    answers = [
        line.split(" ", 3)[1:] for line in alice.sync() if " PRIVMSG " in line or " 4" in line
    ]
    assert [answer[0] for answer in answers] == ["PRIVMSG", "401", "PRIVMSG", "PRIVMSG"], answers
    heard = [line.rsplit(":", 1)[1] for line in bob.sync() if " PRIVMSG #general " in line]
    assert heard == ["one", "two", "three"]


def test_ctcp_goes_between_irc_clients(connect: Callable[[], IrcClient], server: Server) -> None:
    """A CTCP query to an IRC user reaches it as it was sent, and its answer (a NOTICE)
    comes back; one to a room, or to a user of another face, goes nowhere (echoed to a
    sender with echo-message all the same)."""
    alice, bob = connect(), connect()
    alice.register("alice", caps="echo-message")
    bob.register("bob")
    with ChatClient(server.addresses["line"]) as json:
        json.login("jay")
        alice.expect(":jay!jay@chatkit JOIN #general")
        alice.send("PRIVMSG BOB,jay,#general :\x01VERSION\x01")
        bob.expect(":alice!alice@chatkit PRIVMSG bob :\x01VERSION\x01")
        alice.expect(":alice!alice@chatkit PRIVMSG bob :\x01VERSION\x01")  # echo-message
        # Dropped, but echoed all the same: the client does not wait for them forever.
        alice.expect(":alice!alice@chatkit PRIVMSG jay :\x01VERSION\x01")
        alice.expect(":alice!alice@chatkit PRIVMSG #general :\x01VERSION\x01")
        bob.send("NOTICE alice :\x01VERSION irssi 1.4\x01", "PRIVMSG alice :\x01PING 123\x01")
        alice.expect(":bob!bob@chatkit NOTICE alice :\x01VERSION irssi 1.4\x01")
        alice.expect(":bob!bob@chatkit PRIVMSG alice :\x01PING 123\x01")
        assert [f for f in json.sync() if f["type"] in ("message", "private", "error")] == []
        assert [line for line in bob.sync() if "PRIVMSG #general" in line] == []
        alice.send("PRIVMSG nobody :\x01VERSION\x01")
        alice.expect(f":{SERVER} 401 alice nobody :")
        # The sender's prefix would make the line longer than IRC's 512 bytes: 417.
        alice.send("PRIVMSG bob :\x01PING " + "x" * 480 + "\x01")
        alice.expect(f":{SERVER} 417 alice :")
        assert [line for line in bob.sync() if "PING" in line] == []


def test_max_line_holds_on_the_irc_face(make_server: Callable[..., Server]) -> None:
    """A server's max_line below IRC's 512 bytes holds for IRC lines too (tags left
    out, as IRC counts them): a longer one is 417 and goes nowhere, one that fits goes
    through, a room message (the fast path) as any other."""
    server = make_server(max_line=100)
    with IrcClient(server.addresses["irc"]) as alice, IrcClient(server.addresses["irc"]) as bob:
        alice.register("alice")
        bob.register("bob")
        for target in ("#general", "bob"):
            alice.send(f"PRIVMSG {target} :" + "x" * 120)
            alice.expect(f":{SERVER} 417 alice :")
        fits = "PRIVMSG #general :" + "y" * (98 - len("PRIVMSG #general :"))  # 100 with CR-LF
        alice.send("@+typing=active " + fits)
        bob.expect(":alice!alice@chatkit PRIVMSG #general :yyy")
        assert not [line for line in bob.sync() if "xxx" in line]


def test_a_ctcp_flood_does_not_spend_the_victims_allowance(
    make_server: Callable[..., Server],
) -> None:
    """Its client answers each CTCP query by itself: the answers (NOTICEs to the nick
    that asked, at most CTCP_OWED owed at once) cost the victim no flood allowance,
    so a query flood leaves it able to talk; a NOTICE nobody asked for still costs."""
    config = config_from_dict({"plugins": {"flood": {"burst": 3, "rate": 0.001}}})
    server = make_server(config=config)
    with IrcClient(server.addresses["irc"]) as mallory, IrcClient(server.addresses["irc"]) as bob:
        mallory.register("mallory")
        bob.register("bob")
        mallory.expect(":bob!bob@chatkit JOIN #general")
        for _ in range(3):  # mallory's burst: three queries (a login's line is given back)
            mallory.send("PRIVMSG bob :\x01VERSION\x01")
            bob.expect(":mallory!mallory@chatkit PRIVMSG bob :\x01VERSION\x01")
            bob.send("NOTICE mallory :\x01VERSION irssi\x01")  # what irssi answers
            mallory.expect(":bob!bob@chatkit NOTICE mallory :\x01VERSION irssi\x01")
        bob.send("PRIVMSG #general :still here")  # bob's burst: three lines
        mallory.expect(":bob!bob@chatkit PRIVMSG #general :still here")
        bob.send("NOTICE mallory :\x01VERSION unasked\x01")  # owes nothing now: a line
        bob.send("PRIVMSG #general :two", "PRIVMSG #general :three")
        mallory.expect(":bob!bob@chatkit PRIVMSG #general :two")
        assert "too many lines" in bob.expect(f":{SERVER} 263 bob ")  # "three"
        assert not [line for line in mallory.sync() if ":three" in line]


def test_an_own_join_is_tagged_as_the_others_see_it(connect: Callable[[], IrcClient]) -> None:
    """With server-time, the joiner's own JOIN carries its time, as the one the others
    get (and its own PART) does."""
    alice, bob = connect(), connect()
    alice.register("alice", caps="server-time")
    bob.register("bob", caps="server-time")
    alice.send("JOIN #tagged")
    own = alice.expect(":alice!alice@chatkit JOIN #tagged")
    bob.send("JOIN #tagged")
    seen = alice.expect(":bob!bob@chatkit JOIN #tagged")
    assert own.startswith("@time=") and seen.startswith("@time=")


def test_echo_message_server_time_and_msgid(
    connect: Callable[[], IrcClient], server: Server
) -> None:
    """With echo-message the sender gets its own PRIVMSG, with the same msgid as the
    JSON client's id; server-time tags carry the message's ts."""
    alice = connect()
    alice.register("alice", caps="echo-message server-time message-tags")
    with ChatClient(server.addresses["line"]) as json:
        json.login("jay")
        alice.send("PRIVMSG #general :mine")
        frame = json.expect("message", nick="alice")
        echo = alice.expect("PRIVMSG #general :mine")
        assert echo.startswith(f"@time={frame['ts']};msgid={frame['id']} :alice!alice@chatkit ")
        alice.send("PRIVMSG jay :direct")
        alice.expect(":alice!alice@chatkit PRIVMSG jay :direct")


def test_a_notice_stays_a_notice(connect: Callable[[], IrcClient], server: Server) -> None:
    """NOTICE to a room or a nick reaches IRC users as NOTICE (bots never answer one),
    JSON clients as a message with notice: true, nc users as -nick-; with echo-message the
    sender gets its NOTICE back; a room's replay keeps it a NOTICE."""
    alice, bob = connect(), connect()
    alice.register("alice", caps="echo-message")
    bob.register("bob")
    with ChatClient(server.addresses["line"]) as json, TextClient(server.addresses["line"]) as text:
        json.login("jay")
        text.send_line("tex")
        text.expect("joined #general")
        alice.send("NOTICE #general :build is green", "NOTICE tex :ping me")
        bob.expect(":alice!alice@chatkit NOTICE #general :build is green")
        alice.expect(":alice!alice@chatkit NOTICE #general :build is green")  # the echo
        frame = json.expect("message", nick="alice")
        assert (frame["text"], frame.get("notice")) == ("build is green", True)
        text.expect("[#general] -alice- build is green")
        text.expect("[pm] -alice -> tex- ping me")
        alice.send("PRIVMSG #general :and a message")
        assert "notice" not in json.expect("message", text="and a message")
        late = connect()
        lines = late.register("late") + late.until("and a message")
        assert ":alice!alice@chatkit NOTICE #general :[" in "\n".join(lines)


def test_profanity_filters_the_same_for_every_face(make_server: Callable[..., Server]) -> None:
    """With the profanity plugin, IRC, JSON and nc users get the same masked text."""
    server = make_server(plugins=["profanity"])
    with (
        IrcClient(server.addresses["irc"]) as alice,
        ChatClient(server.addresses["line"]) as json,
        TextClient(server.addresses["line"]) as text,
    ):
        alice.register("alice", caps="echo-message")
        json.login("jay")
        text.send_line("tex")
        text.expect("joined #general")
        alice.send("PRIVMSG #general :oh shit")
        masked = json.expect("message", nick="alice")["text"]
        assert masked != "oh shit" and masked.startswith("oh ")
        text.expect(f"<alice> {masked}")
        alice.expect(f"PRIVMSG #general :{masked}")
        json.say("shit again")
        alice.expect(f":jay!jay@chatkit PRIVMSG #general :{json.expect('message')['text']}")


def test_long_and_formatted_text(connect: Callable[[], IrcClient], server: Server) -> None:
    """A long chat message reaches IRC as several PRIVMSGs within 512 bytes; mIRC
    colours and bold are stripped from what IRC users say."""
    alice = connect()
    alice.register("alice")
    with ChatClient(server.addresses["line"]) as json:
        json.login("jay")
        long = " ".join(f"word{i}" for i in range(300))
        json.say(long)
        parts: list[str] = []
        while sum(len(p) for p in parts) < len(long):
            line = alice.expect(":jay!jay@chatkit PRIVMSG #general :")
            assert len(line.encode()) + 2 <= 512
            parts.append(line.split(" :", 1)[1])
        assert "".join(parts) == long
        alice.send("PRIVMSG #general :\x02bold\x02 \x0304,01red\x03 plain")
        assert json.expect("message", nick="alice")["text"] == "bold red plain"


def test_history_replay_is_a_chathistory_batch(
    connect: Callable[[], IrcClient], server: Server
) -> None:
    """A client that negotiated batch gets a room's replay in a chathistory batch."""
    with ChatClient(server.addresses["line"]) as json:
        json.login("jay")
        json.say("said before")
        json.expect("message")
        alice = connect()
        lines = alice.register("alice", caps="batch server-time message-tags")
        start = alice.expect("BATCH +")
        ref = start.split()[2][1:]
        assert start.endswith("chathistory #general")
        replayed = alice.expect("said before")
        assert f"batch={ref}" in replayed and "time=" in replayed
        alice.expect(f"BATCH -{ref}")
        assert any(" 366 " in line for line in lines)


def test_the_irc_library_as_a_scripted_client(server: Server) -> None:
    """The `irc` package from PyPI registers, joins, talks to a JSON user and quits."""
    import irc.client  # type: ignore[import-untyped]

    host, port = server.addresses["irc"]
    reactor = irc.client.Reactor()
    got: list[tuple[str, str, str]] = []
    welcomed = threading.Event()
    conn = reactor.server().connect(host, port, "bot")
    conn.add_global_handler("welcome", lambda c, e: welcomed.set())
    conn.add_global_handler(
        "pubmsg", lambda c, e: got.append((e.source.nick, e.target, e.arguments[0]))
    )
    conn.add_global_handler(
        "action", lambda c, e: got.append((e.source.nick, e.target, "*" + e.arguments[0]))
    )
    with ChatClient(server.addresses["line"]) as json:
        json.login("jay")
        deadline = time.monotonic() + TIMEOUT
        while not welcomed.is_set() and time.monotonic() < deadline:
            reactor.process_once(0.05)
        assert welcomed.is_set()
        conn.join("#lab")
        json.say("/join #lab")
        json.expect("join", nick="jay", room="#lab")
        conn.privmsg("#lab", "hello from the bot")
        assert json.expect("message", nick="bot")["text"] == "hello from the bot"
        json.say("hello bot", room="#lab")
        json.say("/me pats the bot", room="#lab")
        while len(got) < 2 and time.monotonic() < deadline:
            reactor.process_once(0.05)
        assert got == [("jay", "#lab", "hello bot"), ("jay", "#lab", "*pats the bot")]
        conn.quit("done")
        json.expect("leave", nick="bot", reason="quit: done")
    conn.close()


def test_serve_opens_the_irc_port(serve: Any) -> None:
    """`chatkit serve --irc-port 0` listens for IRC beside the line face and says where."""
    server = serve("--irc-port", "0")
    line = ""
    while "IRC:" not in line:
        line = server.proc.stdout.readline()
        assert line, "serve printed no IRC address"
    match = re.search(r"irc://([^:]+):(\d+)", line)
    assert match
    with IrcClient((match.group(1), int(match.group(2)))) as alice:
        alice.register("alice")
        alice.send("QUIT")
        alice.wait_closed()


def test_a_clients_messages_keep_their_order(
    connect: Callable[[], IrcClient], server: Server
) -> None:
    """A room message then a private one from an IRC client arrive in that order (the
    room message is stored in a pipeline; it is delivered before the private one)."""
    alice = connect()
    alice.register("alice")
    with ChatClient(server.addresses["line"]) as json:
        json.login("jay")
        for i in range(5):
            alice.send(f"PRIVMSG #general :room {i}", f"PRIVMSG jay :private {i}")
        texts: list[str] = []
        while len(texts) < 10:
            frame = json.expect(lambda f: f["type"] in ("message", "private"))
            texts.append(frame["text"])
        assert texts == [t for i in range(5) for t in (f"room {i}", f"private {i}")]


# -- hostile input ---------------------------------------------------------------------


def test_text_from_irc_commands_is_cleaned_like_messages(
    connect: Callable[[], IrcClient], server: Server
) -> None:
    """What an IRC client makes others read (a chat command's arguments, PART and QUIT
    reasons, AWAY) cannot carry a terminal escape or a carriage return that forges a
    line: control characters become U+FFFD, as in a PRIVMSG."""
    with TextClient(server.addresses["line"]) as text:
        text.send_line("tex")
        text.expect("joined #general")
        alice = connect()
        alice.register("alice")
        text.expect("alice joined")
        alice.send("ME :\x1b[2Jwiped\r[#general] <tex> forged")
        line = text.expect("* alice")
        assert "\x1b" not in line and "\r" not in line and "\ufffd[2Jwiped" in line
        alice.send("MSG tex :\x1b]0;title\x07 hi")
        line = text.expect("hi")
        assert "\x1b" not in line and "\x07" not in line
        alice.send("JOIN #b", "PART #general :\x1b[31mred\rforged")
        line = text.expect("alice left #general")
        assert "\x1b" not in line and "\r" not in line
        alice.send("JOIN #general", "QUIT :\x1b[5mblink")
        line = text.expect("alice left")
        assert "\x1b" not in line and "blink" in line


def test_a_refused_topic_is_an_error_not_a_lost_connection(
    make_server: Callable[..., Server],
) -> None:
    """With ``bidi = "refuse"``, a TOPIC holding a bidi control is refused (the
    connection goes on); so is an AWAY message."""
    server = make_server(config=Config(bidi="refuse"))
    with IrcClient(server.addresses["irc"]) as alice:
        alice.register("alice")
        alice.send("TOPIC #general :hello \u202eevil")
        alice.expect("bidirectional control characters")
        alice.send("AWAY :gone \u202ebye")
        alice.expect("bidirectional control characters")
        alice.send("TOPIC #general :fine")
        alice.expect(":alice!alice@chatkit TOPIC #general :fine")


def test_away_is_one_state_on_every_face(make_server: Callable[..., Server]) -> None:
    """An IRC user's AWAY shows in /who and answers a /msg on the line face; a line
    user's /away shows in WHO, WHOIS and USERHOST and answers a PRIVMSG with 301."""
    server = make_server()
    with IrcClient(server.addresses["irc"]) as alice, ChatClient(server.addresses["line"]) as jay:
        jay.login("jay")
        alice.register("alice")
        alice.send("AWAY :" + "z" * 300)  # cut to AWAYLEN, as servers do
        alice.expect(f":{SERVER} 306 alice :")
        jay.say("/who")
        assert jay.expect("reply", command="who")["data"]["away"] == {"alice": "z" * 200}
        jay.say("/msg alice hi")
        assert jay.expect("reply", command="msg")["text"] == f"alice is away: {'z' * 200}"
        jay.say("/away brb")
        jay.expect("reply", command="away")
        alice.send("PRIVMSG jay :hello", "WHO #general", "USERHOST jay")
        alice.expect(f":{SERVER} 301 alice jay :brb")
        alice.expect(f":{SERVER} 352 alice #general jay chatkit {SERVER} jay G :")  # joined first
        alice.expect(f":{SERVER} 352 alice #general alice chatkit {SERVER} alice G :")
        alice.expect(f":{SERVER} 315 alice #general :")
        alice.expect(f":{SERVER} 302 alice :jay=-jay@chatkit")
        alice.send("AWAY")
        alice.expect(f":{SERVER} 305 alice :")
        jay.say("/who")
        assert jay.expect("reply", command="who")["data"]["away"] == {"jay": "brb"}


def test_away_notify(make_server: Callable[..., Server]) -> None:
    """away-notify (IRCv3): a client that negotiated it gets AWAY when someone it shares
    a room with goes away, changes the message or comes back, whatever their face, and
    after the JOIN of one who is away; a client that did not gets none."""
    server = make_server()
    line = server.addresses["irc"]
    with (
        IrcClient(line) as alice,
        IrcClient(line) as bob,
        ChatClient(server.addresses["line"]) as jay,
    ):
        alice.register("alice", caps="away-notify")
        bob.register("bob")
        jay.login("jay")
        jay.say("/away brb")
        jay.expect("reply", command="away")
        alice.expect(":jay!jay@chatkit AWAY :brb")
        jay.say("/away")
        jay.expect("reply", command="away")
        alice.expect(":jay!jay@chatkit AWAY")
        bob.send("AWAY :gone fishing")
        bob.expect(" 306 ")
        alice.expect(":bob!bob@chatkit AWAY :gone fishing")
        assert jay.expect("away") == {"type": "away", "nick": "bob", "text": "gone fishing"}
        alice.send("JOIN #pond")
        alice.expect(" 366 ")
        bob.send("JOIN #pond")
        assert alice.until(" AWAY ")[-2:] == [
            ":bob!bob@chatkit JOIN #pond",
            ":bob!bob@chatkit AWAY :gone fishing",
        ]
        assert not [line for line in bob.sync() if " AWAY " in line]
        alice.send("AWAY :x")
        alice.expect(" 306 ")
        assert not [line for line in alice.sync() if " AWAY " in line]  # (not one's own)


def test_whox(make_server: Callable[..., Server]) -> None:
    """WHOX (ISUPPORT WHOX): WHO with %FIELDS[,TOKEN] answers 354s with exactly the
    fields asked for, in the spec's order whatever the order asked, the account (0 if
    none) among them; without % it is the plain 352."""
    server = make_server()
    with IrcClient(server.addresses["irc"]) as alice, ChatClient(server.addresses["line"]) as jay:
        assert any("WHOX" in line for line in alice.register("alice"))
        jay.login("jay")
        jay.command("/register sesame-seed")
        jay.say("/away brb")
        jay.expect("reply", command="away")
        alice.send("WHO #general %afnrct,42")
        lines = alice.until(" 315 ")
        assert f":{SERVER} 354 alice 42 #general jay G jay jay" in lines
        assert f":{SERVER} 354 alice 42 #general alice H 0 :Alice Example" in lines
        alice.send("WHO jay %n", "WHO j* %cuihsndl")
        assert alice.expect(" 354 ") == f":{SERVER} 354 alice jay"
        line = alice.expect(" 354 ")
        assert line == f":{SERVER} 354 alice * jay 255.255.255.255 chatkit {SERVER} jay 0 0"
        alice.send("WHO jay", "WHO jay %,1")
        assert alice.expect(" 352 ").startswith(f":{SERVER} 352 alice * jay chatkit ")
        assert alice.expect(" 352 ").startswith(f":{SERVER} 352 alice * jay chatkit ")


def test_a_multiline_batch_keeps_the_line_limit(make_server: Callable[..., Server]) -> None:
    """A carriage return inside a batch's line is not a line break: a batch of one
    line holding 120 CRs is one line (CRs replaced), within max_message_lines."""
    server = make_server()
    with IrcClient(server.addresses["irc"]) as alice, ChatClient(server.addresses["line"]) as jay:
        jay.login("jay")
        alice.register("alice", caps="batch draft/multiline message-tags")
        crs = "\r".join(str(i) for i in range(120))
        alice.send(
            "BATCH +b1 draft/multiline #general",
            f"@batch=b1 PRIVMSG #general :{crs}",
            "BATCH -b1",
        )
        message = jay.expect("message", nick="alice")
        assert "\n" not in message["text"] and message["text"].count("\ufffd") == 119


def test_numbers_that_int_refuses(connect: Callable[[], IrcClient], server: Server) -> None:
    """``²`` is a digit to Python's ``isdigit`` but not to ``int``, and ``int`` refuses
    more than 4,300 digits: a count written so is refused as bad usage, not an internal
    error."""
    with ChatClient(server.addresses["line"]) as jay:
        jay.login("jay")
        jay.say("/history ²")
        jay.expect("error", code="bad_usage")
        jay.say("/history " + "9" * 5000)
        jay.expect("error", code="bad_usage")
    alice = connect()
    alice.register("alice")
    alice.send("HISTORY ²")
    alice.expect("bad_usage")
    alice.send("CHATHISTORY LATEST #general * ²")
    lines = alice.sync()
    assert not any("internal" in line or "invalid literal" in line for line in lines), lines


def test_rooms_per_client_are_limited(make_server: Callable[..., Server]) -> None:
    """A client in max_rooms rooms gets 405 for one more (ISUPPORT CHANLIMIT); WHOIS
    lists its rooms in as many 319 lines as fit in 512 bytes."""
    server = make_server(config=Config(disable=["flood"]), max_rooms=30)  # a room a line
    with IrcClient(server.addresses["irc"]) as alice:
        welcome = alice.register("alice")
        assert any("CHANLIMIT=#:30" in line for line in welcome)
        rooms = [f"#{'r' * 40}{i:02d}" for i in range(40)]
        alice.send(*("JOIN " + ",".join(rooms[i : i + 10]) for i in range(0, 40, 10)))
        refused = alice.expect(" 405 ")
        assert rooms[29] in refused  # #general and 29 of these: the 30th is refused
        alice.sync()
        assert len(server.hub.find("alice").rooms) == 30  # type: ignore[union-attr]
        alice.send("WHOIS alice")
        lines = [line for line in alice.until(" 318 ") if " 319 " in line]
        assert len(lines) > 1 and all(len(line.encode()) + 2 <= 512 for line in lines)
        assert sum(len(line.split(" :", 1)[1].split()) for line in lines) == 30


def test_a_flooding_irc_client_is_held_back_not_refused(
    make_server: Callable[..., Server],
) -> None:
    """IRC clients show a line as sent once they have written it, so a line over the
    flood limit waits its turn (chatkit.Wait: the reader reads nothing more meanwhile,
    as IRC servers do) instead of being refused with 263: every line of a burst
    arrives, in order. Others are not held up meanwhile. (A line that would wait past
    the flood plugin's max_wait is refused, as in the test below: a line a
    thousand seconds.)"""
    flood = {"flood": {"burst": 3, "rate": 4.0, "max_wait": 1.0}}
    server = make_server(config=Config(plugin_config=flood))
    address = server.addresses["irc"]
    watcher = ChatClient(server.address)
    watcher.login("watcher")
    with IrcClient(address) as alice, IrcClient(address) as bob:
        alice.register("alice")
        bob.register("bob")
        alice.send(*(f"PRIVMSG #general :line {i}" for i in range(12)))  # about 2 s of waits
        watcher.expect("message", nick="alice", text="line 4")  # (waiting its turn by now)
        bob.send("PRIVMSG #general :not held up")
        texts = [watcher.expect("message")["text"] for _ in range(8)]
        assert "not held up" in texts[:-1]  # before alice's last line
        assert [t for t in texts if t != "not held up"] == [f"line {i}" for i in range(5, 12)]
        assert not [line for line in alice.sync() if " 263 " in line]
    watcher.close()


def test_a_held_back_irc_client_killed_meanwhile_acts_no_more(
    make_server: Callable[..., Server],
) -> None:
    """A line waiting its turn is dropped when the connection closes meanwhile (a KILL,
    a ban): it was posted after the kill, and a JOIN of many rooms went on joining.
    Lines held back are not refused: with kick_after, a paste longer than the burst and
    kick_after together still arrives whole (it was cut: irssi had shown it all sent)."""
    flood = {"flood": {"burst": 2, "rate": 0.5}}  # two seconds a line past the burst
    server = make_server(config=Config(plugin_config=flood))
    address = server.addresses["irc"]
    watcher = ChatClient(server.address)
    watcher.login("watcher")
    with IrcClient(address) as alice:
        alice.register("alice")
        alice.send(*(f"PRIVMSG #general :line {i}" for i in range(4)))
        watcher.expect("message", nick="alice", text="line 1")  # (line 2 waits now)
        alice.send("JOIN " + ",".join(f"#r{i}" for i in range(40)))
        found = server.hub.find("alice")
        assert found is not None
        found.disconnect("killed")
        watcher.expect("leave", nick="alice")
        alice.wait_closed()
        watcher.sync()
        said = [f["text"] for f in watcher.received if f["type"] == "message"]
        assert said == ["line 0", "line 1"]
    assert server.hub.who("#r0") is None  # none of the JOIN's rooms was joined
    watcher.close()

    kicking = {"flood": {"burst": 2, "rate": 20.0, "kick_after": 3}}
    server = make_server(config=Config(plugin_config=kicking))
    watcher = ChatClient(server.address)
    watcher.login("watcher")
    with IrcClient(server.addresses["irc"]) as bob:
        bob.register("bob")
        bob.send(*(f"PRIVMSG #general :line {i}" for i in range(8)))
        for i in range(8):
            watcher.expect("message", nick="bob", text=f"line {i}")
        assert server.hub.find("bob") is not None
    watcher.close()


def test_every_line_but_ping_counts_against_the_flood_limit(
    make_server: Callable[..., Server],
) -> None:
    """Queries (WHO, NAMES, LUSERS, ...) cost a line of the flood allowance, as /who does
    on the line face, and every four rooms of a JOIN or PART cost one: a line
    naming many rooms, or a client asking for a big room's names over and over, cannot
    make the server do more than its allowance. PING costs nothing. NAMES answers at most
    four rooms (ISUPPORT TARGMAX)."""
    flood = {"flood": {"burst": 3, "rate": 0.001}}  # three lines (the login's is given back)
    server = make_server(config=Config(plugin_config=flood))
    address = server.addresses["irc"]
    with IrcClient(address) as alice, IrcClient(address) as bob, IrcClient(address) as carol:
        welcome = alice.register("alice")
        assert any("NAMES:4" in line for line in welcome if " 005 " in line)
        alice.send("WHO #general", "NAMES #general", "LUSERS", "WHOIS alice", "PING :free")
        alice.expect(f":{SERVER} 315 alice #general :")
        alice.expect(f":{SERVER} 366 alice #general :")
        alice.expect(f":{SERVER} 266 alice ")
        alice.expect(f":{SERVER} 263 alice WHOIS :too many lines")
        alice.expect(f"PONG {SERVER} :free")
        assert not [line for line in alice.sync() if " 311 " in line]

        bob.register("bob")
        # Four rooms a line: twelve rooms cost three, the rest of bob's allowance.
        bob.send("JOIN " + ",".join(f"#r{i}" for i in range(12)))
        bob.expect(":bob!bob@chatkit JOIN #r11")
        bob.send("JOIN #m,#n")
        bob.expect(f":{SERVER} 263 bob JOIN :too many lines")
        bob.expect(f":{SERVER} 263 bob JOIN :too many lines")  # #n: the same refusal
        bob.send("PART #r0,#r1")
        bob.expect(f":{SERVER} 263 bob PART :too many lines")
        bob.sync()
        assert len(server.hub.find("bob").rooms) == 13  # type: ignore[union-attr]

        carol.register("carol")
        carol.send("NAMES #general,#r0,#r1,#r2,#r3,#r4")
        lines = carol.sync()
        assert [line.split()[4] for line in lines if " 353 " in line] == [
            "#general",
            "#r0",
            "#r1",
            "#r2",
        ]
        assert [line.split()[3] for line in lines if " 366 " in line] == ["#general,#r0,#r1,#r2"]


def test_a_join_spelled_as_another_channel_under_ascii_casemapping_is_forwarded(
    connect: Callable[[], IrcClient],
) -> None:
    """#TÉST is #Tést to chatkit (Unicode case folding) but another channel to a client
    comparing as CASEMAPPING=ascii says: its JOIN #TÉST is answered 470 (forwarded to
    #Tést), then the JOIN #Tést, so it waits for no JOIN #TÉST (irssi left a window that
    never joined); a spelling the same under ascii (#tést) needs none."""
    alice, bob = connect(), connect()
    alice.register("alice")
    bob.register("bob")
    alice.send("JOIN #Tést")
    alice.expect(":alice!alice@chatkit JOIN #Tést")
    bob.send("JOIN #TÉST")
    bob.expect(f":{SERVER} 470 bob #TÉST #Tést :Forwarding to #Tést")
    bob.expect(":bob!bob@chatkit JOIN #Tést")
    alice.send("JOIN #TÉST")  # in it already: told all the same, and nothing more
    alice.expect(f":{SERVER} 470 alice #TÉST #Tést :")
    alice.send("JOIN #tést")
    assert not [line for line in alice.sync() if " 470 " in line or " JOIN " in line]


def test_list_takes_masks_and_a_long_one_costs_lines_of_input(
    make_server: Callable[..., Server],
) -> None:
    """LIST #r1* lists the rooms the mask matches; every LIST_PER_LINE rooms past the
    first cost one more line of input (what flood control counts: a LIST of thousands
    of rooms, asked again and again, took a core), as every WHOIS_ROOMS_PER_LINE rooms
    of a WHOIS's user do; NAMES of one room named twice lists it once."""
    seen: list[str] = []

    class Counting:
        @hookimpl
        def chatkit_allow_input(self, client: Session, event: object) -> None:
            if client.nick == "lister" and isinstance(event, Say):
                seen.append(event.text)

    config = Config()
    config.disable = ["flood"]  # (the lines are counted here, where flood control counts)
    server = make_server(plugins=[Counting()], config=config, max_rooms=200)
    with ChatClient(server.address) as maker, IrcClient(server.addresses["irc"]) as lister:
        maker.login("maker")
        for i in range(120):
            maker.say(f"/join #r{i:03}")
        maker.expect("join", room="#r119")
        lister.register("lister")
        lister.sync()
        seen.clear()
        lister.send("LIST")
        listed = [line.split()[3] for line in lister.until(" 323 ") if " 322 " in line]
        assert len(listed) == 121  # and #general
        assert seen == ["/list"] * 3  # 121 rooms: the LIST's own line, and two more
        seen.clear()
        lister.send("LIST #R01*,#r11?")
        listed = [line.split()[3] for line in lister.until(" 323 ") if " 322 " in line]
        assert sorted(listed) == [f"#r{i:03}" for i in [*range(10, 20), *range(110, 120)]]
        assert seen == ["/list"]
        seen.clear()
        lister.send("WHOIS maker")  # in 121 rooms: a line for each 10 past the first 10
        lister.until(" 318 ")
        assert seen == ["/whois"] + ["/whois"] * 12
        lister.send("NAMES #general,#GENERAL")
        lines = lister.until(" 366 ")
        (names,) = [line for line in lines if " 353 " in line]
        assert names.endswith(":maker lister")
        # NAMES alone: the rooms one is in, each four a line (as NAMES of four costs).
        for i in range(0, 12, 4):
            lister.send("JOIN " + ",".join(f"#r{j:03}" for j in range(i, i + 4)))
        lister.expect(" 366 lister #r011 ")
        lister.sync()
        seen.clear()
        lister.send("NAMES")
        lister.until(" 366 lister * ")
        assert seen == ["/names"] * 4  # 13 rooms: the line's own, and three more
        # More than four names to LIST: all of them (LIST's targets are not TARGMAX's).
        lister.send("LIST #r000,#r001,#r002,#r003,#r004,#general")
        listed = [line.split()[3] for line in lister.until(" 323 ") if " 322 " in line]
        assert len(listed) == 6


def test_an_invisible_member_is_listed_only_to_the_room_s_members(
    make_server: Callable[..., Server],
) -> None:
    """NAMES #room and WHO #room from someone not in the room leave out its members with
    mode +i (RFC 2812 3.2.5, the modern docs' NAMES); its members see everyone."""
    server = make_server()
    irc = server.addresses["irc"]
    with IrcClient(irc) as alice, IrcClient(irc) as bob, IrcClient(irc) as carol:
        alice.register("alice")
        bob.register("bob")
        carol.register("carol")
        bob.send("MODE bob +i", "JOIN #hidden")
        bob.expect(f":{SERVER} 366 bob #hidden ")
        carol.send("JOIN #hidden")
        carol.expect(f":{SERVER} 366 carol #hidden ")

        def listed(client: IrcClient) -> tuple[list[str], list[str]]:
            client.send("NAMES #hidden")
            lines = client.until(" 366 ")
            names = [
                nick for line in lines if " 353 " in line for nick in line.split(":")[2].split()
            ]
            client.send("WHO #hidden")
            who = [line.split()[7] for line in client.until(" 315 ") if " 352 " in line]
            return sorted(names), sorted(who)

        assert listed(alice) == (["carol"], ["carol"])  # bob is +i, alice is not in #hidden
        assert listed(carol) == (["bob", "carol"], ["bob", "carol"])
        alice.send("JOIN #hidden")
        alice.expect(f":{SERVER} 366 alice #hidden ")
        assert listed(alice) == (["alice", "bob", "carol"], ["alice", "bob", "carol"])


def test_who_takes_masks(make_server: Callable[..., Server]) -> None:
    """WHO with a mask lists the users whose nick or realname matches (``*``, ``?``;
    ``0``: everyone; ``[`` is a letter), operators only with ``o``, at most max_who of
    them; a user with +i only to those sharing a room with it (and to itself)."""
    server = make_server()
    irc, line = server.addresses["irc"], server.addresses["line"]
    with (
        IrcClient(irc) as alice,
        IrcClient(irc) as bob,
        IrcClient(irc) as brackets,
        ChatClient(line) as jay,
    ):
        alice.register("alice")
        bob.register("bob")
        brackets.register("b[1]")
        jay.login("jay")

        def who(client: IrcClient, *params: str) -> list[str]:
            client.send(" ".join(("WHO", *params)))
            return [line.split()[7] for line in client.until(" 315 ") if " 352 " in line]

        assert who(alice, "a*") == ["alice"]
        assert sorted(who(alice, "0")) == ["alice", "b[1]", "bob", "jay"]
        assert sorted(who(alice, "*")) == ["alice", "b[1]", "bob", "jay"]
        assert sorted(who(alice, "B*")) == ["b[1]", "bob"]
        assert who(alice, "b[1]") == ["b[1]"]  # exact, not a set of letters
        assert who(alice, "b[?]") == ["b[1]"]
        assert sorted(who(alice, "*example")) == ["alice", "b[1]", "bob"]  # realnames
        assert who(alice, "*", "o") == []
        alice.send("WHO a*")
        alice.expect(f":{SERVER} 352 alice * alice chatkit {SERVER} alice H :0 Alice Example")
        alice.expect(f":{SERVER} 315 alice a* :End of /WHO list.")

        bob.send("MODE bob +i", "PART #general")
        bob.expect(":bob!bob@chatkit PART #general")
        assert who(alice, "b*") == ["b[1]"]  # invisible, and no room in common
        assert who(bob, "bob") == ["bob"]  # an exact nick is not a mask
        assert sorted(who(bob, "b*")) == ["b[1]", "bob"]
        bob.send("JOIN #general")
        bob.expect(f":{SERVER} 366 bob #general")
        assert sorted(who(alice, "b*")) == ["b[1]", "bob"]  # they share #general again

    few = Server(
        config=make_config(),
        faces=[LineFace(), IrcFace(port=0, server_name=SERVER, max_who=2)],
    )
    few.start()
    try:
        with ChatClient(few.address) as ben, ChatClient(few.address) as cy:
            ben.login("ben")
            cy.login("cy")
            with IrcClient(few.addresses["irc"]) as ann:
                ann.register("ann")
                ann.send("WHO *", "WHO 0 o")
                assert len([line for line in ann.until(" 315 ") if " 352 " in line]) == 2
                assert [line for line in ann.until(" 315 ") if " 352 " in line] == []
    finally:
        few.shutdown()
    with pytest.raises(ValueError, match="max_who"):
        IrcFace(max_who=0)


@settings(max_examples=1000, deadline=None)
@given(
    mask=st.text(alphabet="ab*?[]\n.", max_size=10),
    text=st.text(alphabet="ab*?[]\n.", max_size=12),
)
def test_wildcard_match_is_a_glob(mask: str, text: str) -> None:
    """wildcard_match agrees with a regular expression of the mask (``*``, ``?``, the
    rest literal), on strings short enough for the regular expression to be quick."""
    pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in mask)
    assert wildcard_match(mask, text) == bool(re.fullmatch(pattern, text, re.DOTALL))


def test_a_mask_that_would_backtrack_is_answered_at_once(
    make_server: Callable[..., Server],
) -> None:
    """WHO *a*a*a...*b against a long realname of a's: a regular expression backtracks
    for minutes (holding the GIL: every client waits); the matcher is linear."""
    server = make_server()
    with IrcClient(server.addresses["irc"]) as alice:
        alice.send("NICK alice", "USER alice 0 * :" + "a" * 400)
        alice.until(" 366 ")
        alice.send("WHO " + "*a" * 40 + "*b", "PING :after")
        alice.expect(f":{SERVER} 315 alice ")
        alice.expect(f"PONG {SERVER} :after")


def test_help_answers_with_704_to_706(make_server: Callable[..., Server]) -> None:
    """HELP lists the IRC commands and then the chat commands IRC does not have (sent as
    IRC commands); HELP command explains one (either kind); an unknown one is 524."""
    server = make_server()
    with IrcClient(server.addresses["irc"]) as alice:
        alice.register("alice")
        alice.send("HELP")
        lines = alice.until(" 706 ")
        assert lines[0].startswith(f":{SERVER} 704 alice * :chatkit ")
        assert all(" 705 alice * :" in line for line in lines[1:-1])
        assert lines[-1] == f":{SERVER} 706 alice * :End of /HELP"
        text = "\n".join(line.split(" :", 1)[1] for line in lines)
        assert "JOIN" in text and "WHOWAS" in text
        assert (
            "\nHISTORY [#ROOM|NICK] [N] [before ID]: " in text
        )  # a chat command (the history plugin)
        assert "\nJOIN " not in text  # the chat command /join is IRC's JOIN: listed once

        alice.send("HELP join")
        alice.expect(f":{SERVER} 704 alice JOIN :JOIN #room")
        alice.expect(f":{SERVER} 706 alice JOIN :End of /HELP")
        alice.send("HELPOP /rooms")
        alice.expect(f":{SERVER} 704 alice ROOMS :ROOMS")
        assert "[rooms]" in alice.expect(f":{SERVER} 705 alice ROOMS :")
        alice.expect(f":{SERVER} 706 alice ROOMS :")
        alice.send("HELP nosuch")
        alice.expect(f":{SERVER} 524 alice NOSUCH :No help available on this topic")


def test_help_knows_every_irc_command() -> None:
    """Each command the face handles has its line in HELP."""
    assert set(_HANDLERS) <= set(IRC_HELP)


def test_replies_naming_what_a_client_sent_stay_well_formed(
    connect: Callable[[], IrcClient],
) -> None:
    """Empty names and a leading ':' in WHOIS, WHOWAS and NAMES are echoed as '*': every
    reply keeps its parameters (no empty middle one, none added)."""
    alice = connect()
    alice.register("alice")
    alice.send("WHOIS ,", "WHOWAS ,", "NAMES ,,,", "WHOIS ::x")
    lines = alice.sync()
    assert lines
    for line in lines:
        head = line.split(" :", 1)[0] if not line.startswith(":") else line[1:].split(" :", 1)[0]
        assert "  " not in head and not head.endswith(" "), line
    assert f":{SERVER} 401 alice * :No such nick/channel" in lines


def test_tagmsg_relays_client_only_tags_to_irc_users_who_take_them(
    connect: Callable[[], IrcClient],
) -> None:
    """A typing notification (``@+typing=active TAGMSG #room``) reaches the room's IRC
    users with message-tags, not those without, nor the sender without echo-message;
    to a nick likewise; to a room one is not in, 404. Never 421."""
    alice, bob, carol = connect(), connect(), connect()
    alice.register("alice", caps="message-tags")
    bob.register("bob", caps="message-tags")
    carol.register("carol")
    alice.send("@+typing=active;server-only=x TAGMSG #general")
    assert bob.expect("TAGMSG") == "@+typing=active :alice!alice@chatkit TAGMSG #general"
    alice.send("@+typing=paused TAGMSG bob")
    assert bob.expect("TAGMSG") == "@+typing=paused :alice!alice@chatkit TAGMSG bob"
    alice.send("@+typing=active TAGMSG #elsewhere")
    alice.expect(" 404 ")
    assert not [line for line in alice.sync() if "TAGMSG" in line or " 421 " in line]
    assert not [line for line in carol.sync() if "TAGMSG" in line]
    # A tag's value is cleaned as text is: no terminal escape, bell or bidi control
    # reaches another's client (escaped on the wire as IRCv3 has it: \s a space).
    alice.send("@+x=" + "\x07" * 1500 + " TAGMSG #general")  # 4 KB cleaned: too long
    alice.expect(f":{SERVER} 417 alice :Input line was too long (tags)")
    alice.send("@+draft/react=\\s\x1b[2J\x07\u202eevil TAGMSG #general")
    line = bob.expect("TAGMSG")
    assert line == "@+draft/react=\\s\ufffd[2J\ufffd\ufffdevil :alice!alice@chatkit TAGMSG #general"


class _PickyStore:
    """Stores every message but those starting with "bad", refused at once."""

    @hookimpl
    def chatkit_store_message(self, client: Session, message: Any) -> Any:
        from chatkit import Drop

        return Drop("no") if message.text.startswith("bad") else None


def test_a_store_refusal_is_answered_before_later_privmsgs_answers(
    make_server: Callable[..., Server],
) -> None:
    """A PRIVMSG a store refuses (404, on its turn in the room's lane), then two the face
    answers itself (412, 411): the answers come in the order of the lines."""
    server = make_server(plugins=[_PickyStore()])
    with IrcClient(server.addresses["irc"]) as alice:
        alice.register("alice")
        alice.send("PRIVMSG #general :bad one", "PRIVMSG #general :\x02\x02", "PRIVMSG")
        codes = [line.split()[1] for line in alice.sync()]
        assert codes == ["404", "412", "411"], codes


def test_lines_with_long_text_are_cut_to_512_bytes(connect: Callable[[], IrcClient]) -> None:
    """A topic, a part or quit reason, a realname or an away text that would make a
    line longer than 512 bytes (with its source and the room's name) is cut, at a
    character: every line read is checked by IrcClient (RFC 1459 2.3)."""
    nick, other, room = "n" * 30, "o" * 30, "#" + "r" * 49
    long = "é" * 195  # 390 characters (TOPICLEN), 780 bytes
    a, b = connect(), connect()
    a.send("NICK " + nick, f"USER {nick} 0 * :{'R' * 200}")
    a.until(" 366 ")
    b.register(other)
    for client in (a, b):
        client.send(f"JOIN {room}")
        client.expect(" 366 ")
    a.send(f"TOPIC {room} :{long}")
    topic = b.expect(f" TOPIC {room} :")
    assert topic.endswith("é") and long.startswith(topic.rpartition(" :")[2])
    a.send(f"AWAY :{long}")
    a.expect(" 306 ")  # away now: b's WHOIS shows it
    b.send(f"WHOIS {nick}", f"WHO {room}", f"TOPIC {room}", f"PRIVMSG {nick} :hi")
    b.expect(" 332 ")
    b.expect(" 301 ")
    part = f"PART {room} :"
    a.send(part + "p" * (510 - len(part)))  # as long as a client's line may be
    b.expect(f" PART {room} :ppp")
    a.send("QUIT :" + "q" * 504)
    b.expect(" QUIT :Quit: qqq")


def test_lists_cut_to_512_bytes_keep_whole_names_and_long_echoes_are_cut(
    connect: Callable[[], IrcClient],
) -> None:
    """ISON's and WHOIS' lists that do not fit lose whole names, never half of one (a
    nick cut short would be another's); 319 counts the asker's nick, not the target's;
    a numeric echoing a long name a client sent is cut too (IrcClient checks every line)."""
    asker, target = "a" * 30, "t"
    online = [f"x{i:02d}" + "y" * 27 for i in range(15)]
    others = [connect() for _ in online]
    for client, nick in zip(others, online, strict=True):
        client.register(nick)
    me, them = connect(), connect()
    me.register(asker)
    them.register(target)
    rooms = [f"#{i:02d}" + "w" * 47 for i in range(12)]
    for room in rooms:
        them.send(f"JOIN {room}")
        them.expect(f" 366 {target} {room} ")
    me.send("ISON " + " ".join(online))  # 471 bytes: the 303 would be longer than 512
    ison = me.expect(f" 303 {asker} :").rpartition(" :")[2].split()
    assert ison and set(ison) <= set(online)
    me.send(f"WHOIS {target}")
    whois = me.until(f" 318 {asker} {target} ")
    listed = [r for line in whois if " 319 " in line for r in line.split(" :", 1)[1].split()]
    assert sorted(listed) == sorted(["#general", *rooms])
    bogus = "z" * 470
    me.send(f"WHOIS {bogus}", f"MODE {bogus}", f"PART #{bogus}", f"FOO{bogus}")
    me.expect(" 401 ")
    me.expect(" 421 ")


def test_a_private_message_to_oneself_arrives(connect: Callable[[], IrcClient]) -> None:
    """PRIVMSG to one's own nick reaches oneself (RFC 2812 3.3.1), once, with or without
    echo-message."""
    plain, echoing = connect(), connect()
    plain.register("abe")
    echoing.register("eve", caps="echo-message")
    plain.send("PRIVMSG abe :note to self")
    plain.expect(":abe!abe@chatkit PRIVMSG abe :note to self")
    echoing.send("PRIVMSG eve :me too")
    echoing.expect(":eve!eve@chatkit PRIVMSG eve :me too")
    assert not [line for line in echoing.sync() if "PRIVMSG eve" in line]


def test_a_flood_past_max_recvq_is_an_excess_flood(make_server: Callable[..., Server]) -> None:
    """A client's lines over flood control's rate wait their turn; one that has sent
    more than max_recvq bytes meanwhile is disconnected (ERROR ... excess flood, as IRC
    servers' receive queue), not left posting what it sent for minutes after it left."""
    server = make_server(max_recvq=8192)  # (flood control is on by default)
    with IrcClient(server.addresses["irc"]) as irc:
        irc.register("ghost")
        irc.send(*["PRIVMSG #general :spam"] * 5000)  # 120 KB
        assert "excess flood" in irc.expect("ERROR :Closing Link")
        irc.wait_closed()
    wait_until(lambda: server.hub.find("ghost") is None, 5, "ghost logged out")


def test_pings_and_bad_lines_past_free_lines_pause_the_client(
    make_server: Callable[..., Server],
) -> None:
    """PING, CAP and lines the face cannot parse are not flood control's: past
    free_lines (and free_line_rate a second) the client is paused, its next lines
    waiting, while the others go on."""
    server = make_server(free_lines=3, free_line_rate=0.1)
    irc = IrcClient(server.addresses["irc"])
    irc.register("pinger")
    session = server.hub.find("pinger")
    assert session is not None
    irc.send(*["PING :x"] * 2, ":bad", "FOOBAR", "JOIN", "CAP LIST")  # 421 and 461 count
    wait_until(pausing, 10, "pinger's reader paused")
    other = ChatClient(server.address)
    other.login("other")
    other.say("the others go on")
    other.expect("message", text="the others go on")
    other.close()
    irc.sock.close()
