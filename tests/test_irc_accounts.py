"""IRCv3 account-tag, account-notify and extended-join with the accounts plugin, through
real sockets.

From the specifications (https://ircv3.net/specs/extensions/account-tag,
.../account-notify, .../extended-join): offered only when accounts exist; ``account``
tags a message from an identified user; ``:nick!user@host ACCOUNT name`` (``*`` when
logged out) goes to clients sharing a channel that negotiated account-notify;
extended-join's ``JOIN #chan account :realname`` (``*`` when not identified).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_irc_face import SERVER, IrcClient

from chatkit import Server, Session, hookimpl
from chatkit.faces.irc import IrcFace
from chatkit.faces.line import LineFace
from chatkit.testing import ChatClient, make_config

PASSWORD = "correct-horse"
CAPS = "account-tag account-notify extended-join"


@pytest.fixture
def server() -> Iterator[Server]:
    with Server(
        config=make_config(disable=["flood", "history"]),
        faces=[LineFace(), IrcFace(port=0, server_name=SERVER, network="T")],
    ) as server:
        yield server


def test_offered_only_with_accounts() -> None:
    """CAP LS offers the three with accounts; without them, none of them."""
    with (
        Server(
            config=make_config(disable=["accounts", "history"]),
            faces=[LineFace(), IrcFace(port=0, server_name=SERVER)],
        ) as server,
        IrcClient(server.addresses["irc"]) as alice,
    ):
        alice.send("CAP LS 302")
        offered = alice.expect("CAP * LS")
        assert "account-tag" not in offered and "account-notify" not in offered
        assert "extended-join" not in offered


def test_account_notify_tag_and_extended_join(server: Server) -> None:
    """A JSON user registers: IRC clients with account-notify see ACCOUNT, then its
    messages carry the account tag (only for account-tag clients); logging out is
    ACCOUNT *; a client without the caps sees none of it; extended-join shows the
    account and realname of joiners; WHOIS gives 330."""
    with (
        IrcClient(server.addresses["irc"]) as alice,
        IrcClient(server.addresses["irc"]) as plain,
        ChatClient(server.addresses["line"]) as jay,
    ):
        alice.send("CAP LS 302")
        offered = alice.expect("CAP * LS")
        for cap in CAPS.split():
            assert cap in offered
        lines = alice.register("alice", caps=CAPS)
        own = [line for line in lines if " JOIN " in line]
        assert own == [":alice!alice@chatkit JOIN #general * :Alice Example"]
        plain.register("plain")
        jay.login("jay")
        alice.expect(":jay!jay@chatkit JOIN #general * :jay")
        jay.command(f"/register {PASSWORD}")
        alice.expect(":jay!jay@chatkit ACCOUNT jay")
        frame = jay.expect("account", nick="jay")
        assert frame["account"] == "jay"
        jay.say("identified now")
        assert jay.expect("message", text="identified now")["account"] == "jay"
        alice.expect("@account=jay :jay!jay@chatkit PRIVMSG #general :identified now")
        alice.send("WHOIS jay")
        alice.expect(f":{SERVER} 330 alice jay jay :is logged in as")
        jay.say("/logout")
        alice.expect(":jay!jay@chatkit ACCOUNT *")
        jay.say("plain again")
        alice.expect(":jay!jay@chatkit PRIVMSG #general :plain again")
        for line in plain.until("plain again"):
            assert "ACCOUNT" not in line and "account=" not in line
        jay.say("/join #den")
        jay.expect("join", room="#den")
        alice.send("JOIN #den")
        alice.expect(":alice!alice@chatkit JOIN #den * :Alice Example")


def test_sasl_account_on_the_own_join(server: Server) -> None:
    """A client logged in by SASL sees its account in its own extended JOIN; others
    see it in the fanned-out JOIN."""
    import base64

    with ChatClient(server.addresses["line"]) as jay:
        jay.login("bob")
        jay.command(f"/register {PASSWORD}")
    with (
        IrcClient(server.addresses["irc"]) as alice,
        IrcClient(server.addresses["irc"]) as bob,
    ):
        alice.register("alice", caps=CAPS)
        bob.send("CAP LS 302", f"CAP REQ :sasl {CAPS}")
        bob.expect("CAP * ACK")
        bob.send("AUTHENTICATE PLAIN")
        bob.expect("AUTHENTICATE +")
        token = base64.b64encode(f"\0bob\0{PASSWORD}".encode()).decode()
        bob.send(f"AUTHENTICATE {token}", "NICK bob", "USER bob 0 * :Bob Builder", "CAP END")
        bob.expect(" 903 ")
        bob.expect(":bob!bob@chatkit JOIN #general bob :Bob Builder")
        alice.expect(":bob!bob@chatkit JOIN #general bob :bob")


def test_history_of_a_nick_after_a_rename_is_a_batch_for_that_nick() -> None:
    """/history NICK (HISTORY NICK) after a rename: the account's conversation with NICK,
    between the earlier nick and NICK, comes as a batch whose target is NICK."""
    with (
        Server(
            config=make_config(disable=["flood"]),
            faces=[LineFace(), IrcFace(port=0, server_name=SERVER, network="T")],
        ) as server,
        ChatClient(server.addresses["line"]) as bob,
        IrcClient(server.addresses["irc"]) as alice,
    ):
        bob.login("bob")
        bob.command(f"/register {PASSWORD}")
        alice.register("alice", caps="batch")
        alice.send(f"PRIVMSG NickServ :REGISTER {PASSWORD}")
        alice.expect("NOTICE alice :alice is registered to you")
        alice.send("PRIVMSG bob :before the rename")
        bob.expect("private", text="before the rename")
        alice.send("NICK alice_away", "HISTORY bob")
        start = alice.expect(" BATCH +")
        assert start.endswith(" chathistory bob"), start
        assert alice.expect("PRIVMSG bob :").endswith("] before the rename")


def test_replayed_history_keeps_the_account() -> None:
    """The account of an identified sender is stored with its message: a JSON replay
    has the `account` field, and CHATHISTORY's lines the account tag, as live ones do."""
    with (
        Server(
            config=make_config(disable=["flood"]),
            faces=[LineFace(), IrcFace(port=0, server_name=SERVER, network="T")],
        ) as server,
        ChatClient(server.addresses["line"]) as jay,
    ):
        jay.login("jay")
        jay.command(f"/register {PASSWORD}")
        jay.say("said identified")
        jay.expect("message", text="said identified")
        jay.say("/logout")
        jay.expect("reply", command="logout")
        jay.say("said anonymous")
        jay.expect("message", text="said anonymous")
        with ChatClient(server.addresses["line"]) as kim:
            kim.login("kim")
            replayed = {f["text"]: f for f in kim.sync() if f["type"] == "message"}
            assert replayed["said identified"]["account"] == "jay"
            assert replayed["said identified"]["history"] is True
            assert "account" not in replayed["said anonymous"]
        with IrcClient(server.addresses["irc"]) as alice:
            lines = alice.register("alice", caps="batch draft/chathistory account-tag")
            alice.send("CHATHISTORY LATEST #general * 10")
            lines += alice.until(" BATCH -")  # (no replay on join: it asks, with chathistory)
            lines = lines[max(i for i, line in enumerate(lines) if " BATCH +" in line) :]
            [identified] = [line for line in lines if line.endswith(" said identified")]
            [anonymous] = [line for line in lines if line.endswith(" said anonymous")]
            assert "account=jay" in identified.split(" ", 1)[0]
            assert "account=" not in anonymous


def test_nickserv_is_nobodys_and_answers_identify_and_register(server: Server) -> None:
    """No one may take a service's nick (IRC clients send it passwords): NICK NickServ
    is 432; PRIVMSG NickServ :REGISTER and :IDENTIFY (what clients send on connecting)
    are chatkit's /register and /identify, answered (and refused) by NOTICEs from
    NickServ, where IRC clients show them; anything else gets a NOTICE from it too."""
    with IrcClient(server.addresses["irc"]) as mal, IrcClient(server.addresses["irc"]) as ann:
        mal.register("mal")
        mal.send("NICK NickServ")
        mal.expect(f":{SERVER} 432 mal NickServ :")
        ann.register("ann")
        ann.send("PRIVMSG NickServ :REGISTER anns-password")
        ann.expect(":NickServ!NickServ@services NOTICE ann :ann is registered to you")
        ann.send("QUIT")
    with IrcClient(server.addresses["irc"]) as ann:
        ann.register("guest")
        ann.send("PRIVMSG NickServ :IDENTIFY ann wrong-password")
        ann.expect(":NickServ!NickServ@services NOTICE guest :")
        ann.send("PRIVMSG NickServ :IDENTIFY ann anns-password")
        ann.expect(":guest!guest@chatkit NICK ann")  # identified, and renamed to it
        ann.expect(":NickServ!NickServ@services NOTICE ann :you are identified as ann")
        ann.send("PRIVMSG nickserv :HELP")
        ann.expect(":NickServ!NickServ@services NOTICE ann :There are no services here")


class Wrong:
    """An account plugin that says False to every password."""

    @hookimpl
    def chatkit_authenticate(self, client: Session, account: str, password: str) -> bool:
        return False


def test_an_authenticate_hooks_false_is_a_wrong_password() -> None:
    """SASL with a plugin whose chatkit_authenticate says False: 904, as for a wrong
    password (not "this server keeps no accounts")."""
    import base64

    with (
        Server(
            plugins=[Wrong()],
            config=make_config(disable=["accounts", "history"]),
            faces=[LineFace(), IrcFace(port=0, server_name=SERVER)],
        ) as server,
        IrcClient(server.addresses["irc"]) as bob,
    ):
        bob.send("CAP LS 302", "CAP REQ :sasl")
        bob.expect("CAP * ACK")
        bob.send("AUTHENTICATE PLAIN")
        bob.expect("AUTHENTICATE +")
        bob.send("AUTHENTICATE " + base64.b64encode(b"\0bob\0guess").decode())
        assert "wrong account name or password" in bob.expect(" 904 ")


def test_authenticate_once_registered_is_907(server: Server) -> None:
    """SASL is for registration: AUTHENTICATE afterwards is 907 (IRCv3 SASL), not 421."""
    with IrcClient(server.addresses["irc"]) as alice:
        alice.register("alice")
        alice.send("AUTHENTICATE PLAIN")
        alice.expect(f":{SERVER} 907 alice :")


def test_registration_aborts_an_unfinished_authenticate_with_906(server: Server) -> None:
    """A client that ends CAP with its AUTHENTICATE exchange unfinished is registered
    unidentified, told 906 first (IRCv3 SASL 3.1: the server SHOULD abort it)."""
    with IrcClient(server.addresses["irc"]) as alice:
        alice.send("CAP LS 302", "CAP REQ :sasl")
        alice.expect("ACK :sasl")
        alice.send("AUTHENTICATE PLAIN")
        alice.expect("AUTHENTICATE +")
        alice.send("NICK alice", "USER alice 0 * :Alice", "CAP END")
        lines = alice.until(f":{SERVER} 001 alice :")
        assert any(line.startswith(f":{SERVER} 906 ") for line in lines)
        alice.send("WHOIS alice")
        assert not [line for line in alice.until(" 318 ") if " 330 " in line]  # no account
