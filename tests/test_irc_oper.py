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
from chatkit.faces.irc.face import check_password
from chatkit.faces.line import LineFace
from chatkit.testing import ChatClient, make_config

OPERATORS = {
    "root": "hunter2",
    "ops": "sha256:" + hashlib.sha256(b"s3cret pass").hexdigest(),
}


@pytest.fixture
def make_server() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(**kwargs: Any) -> Server:
        face = IrcFace(port=0, server_name=SERVER, network="TestNet", operators=OPERATORS)
        server = Server(config=make_config(**kwargs), faces=[LineFace(), face])
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


def test_oper_with_the_configured_names_and_passwords(make_server: Callable[..., Server]) -> None:
    """OPER needs two parameters, a configured name (491) and its password (464); then
    381, user mode +o, WHOIS 313 and WHO's '*'; MODE -o gives it up."""
    server = make_server()
    with IrcClient(server.addresses["irc"]) as alice, IrcClient(server.addresses["irc"]) as bob:
        alice.register("alice")
        bob.register("bob")
        alice.send("OPER root")
        alice.expect(f":{SERVER} 461 alice OPER :Not enough parameters")
        alice.send("OPER nobody hunter2")
        alice.expect(f":{SERVER} 491 alice :No O-lines for your host")
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
    per line, in order, empty lines left out."""
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
        assert all(f"msgid={frame['id']}" in line for line in lines)
