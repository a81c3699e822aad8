"""OPER against the config's operators, ERROR on server shutdown, and multi-line chat
messages as consecutive PRIVMSGs: the IRC face through real sockets."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_irc_face import SERVER, IrcClient

from chatkit import Server
from chatkit.faces.irc import IrcFace
from chatkit.faces.irc.face import OPER_DELAY, check_password
from chatkit.faces.line import LineFace
from chatkit.testing import ChatClient, make_config

OPERATORS = {
    "root": "hunter2",
    "ops": "sha256:" + hashlib.sha256(b"s3cret pass").hexdigest(),
}


@pytest.fixture
def make_server() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(
        plugins: tuple[str, ...] = (), oper_delay: float = OPER_DELAY, **kwargs: Any
    ) -> Server:
        face = IrcFace(
            port=0,
            server_name=SERVER,
            network="TestNet",
            operators=OPERATORS,
            oper_delay=oper_delay,
        )
        config = make_config(**kwargs)
        server = Server(plugins=list(plugins), config=config, faces=[LineFace(), face])
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()


def test_check_password_plain_and_sha256() -> None:
    assert check_password("hunter2", "hunter2")
    assert not check_password("hunter", "hunter2")
    assert check_password("s3cret pass", OPERATORS["ops"])
    assert not check_password("sha256:" + OPERATORS["ops"][7:], OPERATORS["ops"])
    # sha256sum's own output, its "  -" after the digest, is taken as it is pasted.
    assert check_password("s3cret pass", OPERATORS["ops"] + "  -")


def test_oper_with_the_configured_names_and_passwords(make_server: Callable[..., Server]) -> None:
    """OPER needs two parameters, a configured name and its password (464 for either
    wrong: the names are not to be listed); then 381, user mode +o, WHOIS 313 and WHO's
    '*'; MODE -o gives it up."""
    server = make_server()
    with IrcClient(server.addresses["irc"]) as alice, IrcClient(server.addresses["irc"]) as bob:
        alice.register("alice")
        bob.register("bob")
        alice.send("OPER root")
        alice.expect(f":{SERVER} 461 alice OPER :Not enough parameters")
        alice.send("OPER nobody hunter2")
        alice.expect(f":{SERVER} 464 alice :Password incorrect")
        alice.send("OPER root wrong")
        alice.expect(f":{SERVER} 464 alice :Password incorrect")
        alice.send("MODE alice")
        alice.expect(f":{SERVER} 221 alice +")
        alice.send("OPER ops :s3cret pass")
        alice.expect(f":{SERVER} 381 alice :You are now an IRC operator")
        alice.expect(":alice!alice@chatkit MODE alice +o")
        alice.send("MODE alice")
        alice.expect(f":{SERVER} 221 alice +o")
        bob.send("WHOIS alice")
        bob.expect(f":{SERVER} 313 bob alice :is an IRC operator")
        bob.send("WHO alice")
        assert " H* " in bob.expect(" 352 ")
        bob.until(" 315 ")
        bob.send("WHO #general o")  # a room's IRC operators only
        listed = [line.split()[7] for line in bob.until(" 315 ") if " 352 " in line]
        assert listed == ["alice"]
        alice.send("MODE alice -o")
        alice.expect(":alice!alice@chatkit MODE alice -o")
        bob.send("WHOIS alice")
        assert not [line for line in bob.until(" 318 ") if " 313 " in line]
        alice.send("MODE alice +o")  # only OPER makes an operator
        alice.send("MODE alice")
        alice.expect(f":{SERVER} 221 alice +")


def test_server_shutdown_is_a_notice_then_error(make_server: Callable[..., Server]) -> None:
    """When the server stops, IRC clients get its notice and ERROR :Closing Link, then EOF."""
    server = make_server()
    with IrcClient(server.addresses["irc"]) as alice:
        alice.register("alice")
        alice.sync()
        server.shutdown()
        alice.expect(f":{SERVER} NOTICE alice :server shutting down")
        alice.expect("ERROR :Closing Link: 127.0.0.1 (Server shutting down)")
        alice.wait_closed()


def test_a_multi_line_message_is_consecutive_privmsgs(make_server: Callable[..., Server]) -> None:
    """A chat message of several lines (from a JSON client) reaches IRC as one PRIVMSG
    per line, in order, empty lines left out; its msgid is on the first."""
    server = make_server()
    with IrcClient(server.addresses["irc"]) as alice, ChatClient(server.addresses["line"]) as jay:
        alice.register("alice", caps="message-tags")
        jay.login("jay")
        alice.sync()
        jay.say("first line\nsecond line\n\nthird line")
        frame = jay.expect("message", nick="jay")
        lines = [alice.expect(" PRIVMSG #general :") for _ in range(3)]
        assert [line.split(" PRIVMSG #general :", 1)[1] for line in lines] == [
            "first line",
            "second line",
            "third line",
        ]
        # One message, one msgid: on its first line only (clients drop a msgid seen twice).
        assert [f"msgid={frame['id']}" in line for line in lines] == [True, False, False]


MULTI = "batch message-tags server-time draft/multiline"


def test_multiline_is_offered_with_the_servers_limits(make_server: Callable[..., Server]) -> None:
    """CAP LS 302 shows draft/multiline's limits (the line and line-count limits of every
    face); a CAP LS without 302 shows names only."""
    server = make_server(max_message_lines=5)
    with IrcClient(server.addresses["irc"]) as probe:
        probe.send("CAP LS 302")
        assert "draft/multiline=max-bytes=8192,max-lines=5" in probe.expect("CAP * LS")
        probe.send("CAP LS")
        line = probe.expect("CAP * LS")
        assert " draft/multiline" in line and "max-lines" not in line


def test_a_multi_line_message_is_one_batch_when_negotiated(
    make_server: Callable[..., Server],
) -> None:
    """With batch and draft/multiline, a chat message of several lines is one
    draft/multiline batch: msgid and time on the BATCH line, a PRIVMSG per line, a line
    too long for one PRIVMSG continued with draft/multiline-concat; so is a message of
    one line too long for one PRIVMSG."""
    server = make_server()
    with IrcClient(server.addresses["irc"]) as alice, ChatClient(server.addresses["line"]) as jay:
        alice.register("alice", caps=MULTI)
        jay.login("jay")
        alice.sync()
        long = " ".join(f"w{i}" for i in range(200))
        jay.say(f"first\n\nthird\n{long}")
        frame = jay.expect("message", nick="jay")
        start = alice.expect(" BATCH +")
        ref = start.split(" BATCH +", 1)[1].split()[0]
        assert start.endswith(f":jay!jay@chatkit BATCH +{ref} draft/multiline #general")
        assert f"msgid={frame['id']}" in start and f"time={frame['ts']}" in start
        lines = alice.until(f"BATCH -{ref}")[:-1]
        assert all(line.startswith(f"@batch={ref}") for line in lines)
        texts = [line.split(" PRIVMSG #general :", 1)[1] for line in lines]
        assert texts[:3] == ["first", " ", "third"]
        assert "draft/multiline-concat" not in lines[3]
        assert all("draft/multiline-concat" in line for line in lines[4:]) and len(lines) > 4
        assert "".join(texts[3:]) == long
        # One line too long for one PRIVMSG: a batch too, its pieces joined by concat
        # (the client makes it one message again; without the cap, PRIVMSGs in a row).
        jay.say(long)
        start = alice.expect(" BATCH +")
        ref = start.split(" BATCH +", 1)[1].split()[0]
        lines = alice.until(f"BATCH -{ref}")[:-1]
        assert len(lines) > 1 and all("draft/multiline-concat" in line for line in lines[1:])
        assert "".join(line.split(" PRIVMSG #general :", 1)[1] for line in lines) == long


def test_a_replayed_multi_line_message_is_a_batch_inside_the_replay(
    make_server: Callable[..., Server],
) -> None:
    """A multi-line message replayed (a join's chathistory batch) comes as it came live:
    a draft/multiline batch, nested in the replay's (its BATCH lines carry the outer
    reference, its lines its own), its empty line kept, the msgid on its BATCH line."""
    server = make_server()
    with ChatClient(server.addresses["line"]) as jay:
        jay.login("jay")
        jay.say("first\n\nthird", room="#general")
        frame = jay.expect("message", nick="jay")
        with IrcClient(server.addresses["irc"]) as late:
            late.register("late", caps=MULTI)
            outer_start = late.expect(" BATCH +h")
            outer = outer_start.split(" BATCH +", 1)[1].split()[0]
            start = late.expect(" BATCH +ml")
            ref = start.split(" BATCH +", 1)[1].split()[0]
            assert start.startswith("@") and f"batch={outer}" in start.split(" ", 1)[0]
            assert f"msgid={frame['id']}" in start
            lines = late.until(f"BATCH -{ref}")
            assert lines[-1].startswith(f"@batch={outer} ")
            texts = [line.split(" PRIVMSG #general :", 1)[1] for line in lines[:-1]]
            assert texts == ["first", " ", "third"]
            assert all(line.startswith(f"@batch={ref}") for line in lines[:-1])
            late.expect(f"BATCH -{outer}")


def test_a_clients_multiline_batch_is_one_chat_message(make_server: Callable[..., Server]) -> None:
    """An IRC client's draft/multiline batch reaches the others as one message of
    several lines; concat lines join the line before; limits and wrong targets FAIL."""
    server = make_server(max_message_lines=3)
    with IrcClient(server.addresses["irc"]) as alice, ChatClient(server.addresses["line"]) as jay:
        alice.register("alice", caps=MULTI)
        jay.login("jay")
        alice.sync()
        alice.send(
            "BATCH +b1 draft/multiline #general",
            "@batch=b1 PRIVMSG #general :hello",
            "@batch=b1 PRIVMSG #general :wor",
            "@batch=b1;draft/multiline-concat PRIVMSG #general :ld",
            "BATCH -b1",
        )
        assert jay.expect("message", nick="alice")["text"] == "hello\nworld"
        # /me over several lines: an ACTION a line, one chat action of several lines.
        alice.send(
            "BATCH +a1 draft/multiline #general",
            "@batch=a1 PRIVMSG #general :\x01ACTION waves\x01",
            "@batch=a1 PRIVMSG #general :\x01ACTION and wa",
            "@batch=a1;draft/multiline-concat PRIVMSG #general :ves again\x01",
            "BATCH -a1",
        )
        frame = jay.expect("message", nick="alice")
        assert (frame["text"], frame.get("action")) == ("waves\nand waves again", True)
        alice.send(
            "BATCH +a2 draft/multiline #general",
            "@batch=a2 PRIVMSG #general :\x01PING 1\x01",
            "@batch=a2 PRIVMSG #general :hi",
            "BATCH -a2",
        )
        alice.expect(f":{SERVER} FAIL BATCH MULTILINE_INVALID :")
        alice.send(
            "BATCH +a5 draft/multiline #general",
            "@batch=a5 PRIVMSG #general :\x01ACTION waves\x01",
            "@batch=a5 PRIVMSG #general :and says hi",
            "BATCH -a5",
        )
        alice.expect(f":{SERVER} FAIL BATCH MULTILINE_INVALID :ACTION and plain lines")
        alice.send(
            "BATCH +a3 draft/multiline #general",
            "@batch=a3 PRIVMSG #general :one",
            "@batch=a3 NOTICE #general :two",
            "BATCH -a3",
            "BATCH +a4 draft/multiline #general",
            "@batch=a4 PRIVMSG #general :",
            "@batch=a4 PRIVMSG #general : ",
            "BATCH -a4",
        )
        alice.expect(f":{SERVER} FAIL BATCH MULTILINE_INVALID :PRIVMSG and NOTICE")
        alice.expect(f":{SERVER} 412 alice :No text to send")
        alice.send(
            "BATCH +b2 draft/multiline #general",
            *[f"@batch=b2 PRIVMSG #general :line {i}" for i in range(6)],
            "BATCH -b2",
        )
        alice.expect(f":{SERVER} FAIL BATCH MULTILINE_MAX_LINES 3 :")
        alice.send(
            "BATCH +b3 draft/multiline #general",
            "@batch=b3 PRIVMSG #elsewhere :nope",
            "BATCH -b3",
        )
        alice.expect(f":{SERVER} FAIL BATCH MULTILINE_INVALID_TARGET #general #elsewhere :")
        alice.send("@batch=zz PRIVMSG #general :after")  # no batch open: a plain message
        assert jay.expect("message", nick="alice")["text"] == "after"  # nothing of b2, b3


def test_a_multiline_batch_of_exactly_max_bytes_is_taken(
    make_server: Callable[..., Server],
) -> None:
    """max-bytes counts the lines and the line feeds between them (none before a concat
    line): a batch of exactly that many is one message; a byte more FAILs."""
    server = make_server(max_line=40)
    with IrcClient(server.addresses["irc"]) as alice, ChatClient(server.addresses["line"]) as jay:
        alice.register("alice", caps=MULTI)
        jay.login("jay")
        alice.sync()
        for extra, concat in (("", False), ("", True), ("!", False)):
            tag = ";draft/multiline-concat" if concat else ""
            alice.send(
                "BATCH +m draft/multiline #general",
                f"@batch=m PRIVMSG #general :{'a' * 12}",  # 12 + 1 + 12 + 1 + 14 = 40
                f"@batch=m PRIVMSG #general :{'b' * 12}",
                f"@batch=m{tag} PRIVMSG #general :{'c' * (15 if concat else 14)}{extra}",
                "BATCH -m",
            )
            if extra:
                alice.expect(f":{SERVER} FAIL BATCH MULTILINE_MAX_BYTES 40 :")
            else:
                text = jay.expect("message", nick="alice")["text"]
                assert len(text.encode()) == 40 and text.count("\n") == (1 if concat else 2)


def test_an_oper_is_a_server_operator_of_the_moderation_plugin(
    make_server: Callable[..., Server],
) -> None:
    """With moderation, OPER makes a server operator for the connection: KILL works
    (the plugin's /kill); after MODE -o it is 481 again, as for anyone else."""
    server = make_server(plugins=("moderation",))
    irc = server.addresses["irc"]
    with IrcClient(irc) as alice, IrcClient(irc) as bob, IrcClient(irc) as carol:
        alice.register("alice")
        bob.register("bob")
        carol.register("carol")
        alice.send("KILL bob :spam")
        alice.expect(f":{SERVER} 481 alice :only server operators may do that")
        alice.send("OPER root hunter2")
        alice.expect(f":{SERVER} 381 alice ")
        carol.send("USERHOST alice")  # an operator is marked with * (RFC 2812 6)
        carol.expect(f":{SERVER} 302 carol :alice*=+alice@chatkit")
        alice.send("KILL bob :spam")
        assert "killed by alice: spam" in bob.expect("ERROR :Closing Link")
        bob.wait_closed()
        alice.send("MODE alice -o", "KILL carol")
        alice.expect(":alice!alice@chatkit MODE alice -o")
        alice.expect(f":{SERVER} 481 alice :only server operators may do that")
        carol.sync()  # answered: still connected (a killed client's sync raises)
        assert not carol.eof


def test_the_rooms_of_an_oper_see_it_become_their_operator(
    make_server: Callable[..., Server],
) -> None:
    """With moderation an OPER is an operator of every room: the rooms it is in, and
    where it was none, see MODE +o from the server (their names lists then agree with
    a later joiner's); MODE nick -o, MODE -o. A room it was an operator of already
    (its first member's) is told nothing."""
    server = make_server(plugins=("moderation",))
    irc = server.addresses["irc"]
    with IrcClient(irc) as alice, IrcClient(irc) as bob:
        alice.register("alice")  # the first in #general: its operator
        alice.until(f":{SERVER} MODE #general +o alice")
        bob.register("bob")
        bob.send("JOIN #own")  # bob's own room: he is its operator already
        bob.expect(":bob!bob@chatkit JOIN #own")
        bob.send("OPER root hunter2")
        bob.expect(f":{SERVER} 381 bob ")
        alice.expect(f":{SERVER} MODE #general +o bob")
        bob.expect(f":{SERVER} MODE #general +o bob")
        bob.send("MODE bob -o")
        alice.expect(f":{SERVER} MODE #general -o bob")
        lines = bob.sync()
        assert not [line for line in lines if "MODE #own" in line]


def test_oper_guessing_waits_longer_and_longer(make_server: Callable[..., Server]) -> None:
    """After two failed OPERs from an address, each failure makes it wait, doubling:
    an OPER meanwhile (the right password too, from a new connection too) is 263."""
    server = make_server(oper_delay=30)  # (meanwhile: however slow the machine is)
    with IrcClient(server.addresses["irc"]) as mallory:
        mallory.register("mallory")
        for guess in ("hunter1", "hunter3", "hunter4"):
            mallory.send(f"OPER root {guess}")
            mallory.expect(f":{SERVER} 464 mallory :Password incorrect")
        mallory.send("OPER root hunter5")
        assert "Too many failed OPERs" in mallory.expect(f":{SERVER} 263 mallory OPER :")
    with IrcClient(server.addresses["irc"]) as again:
        again.register("again")
        again.send("OPER root hunter2")
        again.expect(f":{SERVER} 263 again OPER :")


def test_the_oper_throttle_has_settings() -> None:
    """oper_free_failures, oper_delay and oper_max_delay set the waits: with none
    free, the first failure waits oper_delay; the doubling stops at oper_max_delay."""
    face = IrcFace(port=0, oper_free_failures=0, oper_delay=5, oper_max_delay=7)
    face.oper_failed("192.0.2.1")
    assert 4 < face.oper_wait("192.0.2.1") <= 5
    face.oper_failed("192.0.2.1")
    assert 6 < face.oper_wait("192.0.2.1") <= 7  # 10, at most 7
    assert face.oper_wait("192.0.2.2") == 0
    with pytest.raises(ValueError, match="oper_free_failures must be at least 0"):
        IrcFace(port=0, oper_free_failures=-1)
