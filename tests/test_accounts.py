"""The accounts plugin through real servers, real SQLite files and real sockets."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from conftest import ServeProcess
from test_irc_face import SERVER, IrcClient
from webclient import WebClient

from chatkit import Config, Server, Session, UsageError, shown_skeleton, skeleton
from chatkit.builtins.accounts import Accounts, Budget, Throttle
from chatkit.builtins.accounts.store import MIGRATIONS, Account, AccountStore
from chatkit.config import config_from_dict
from chatkit.faces.irc import IrcFace
from chatkit.faces.line import LineFace
from chatkit.faces.web import WebFace
from chatkit.testing import ChatClient, TextClient, make_config

Connect = Callable[..., ChatClient]
Factory = Callable[..., Server]

PASSWORD = "correct-horse"


def accounts_config(history: dict[str, Any] | None = None, **settings: Any) -> Config:
    return config_from_dict({"plugins": {"accounts": settings, "history": history or {}}})


def plugin(server: Server) -> Accounts:
    found = server.pluginmanager.get_plugin("accounts")
    assert isinstance(found, Accounts)
    return found


def refused(client: ChatClient, nick: str, code: str, **hello: Any) -> dict[str, Any]:
    """Send a hello for ``nick`` and return the error frame with ``code``."""
    client.send(type="hello", nick=nick, **hello)
    return client.expect("error", code=code)


def leave(client: ChatClient) -> None:
    """Quit and wait for the server to close the connection: it has logged the client
    out by then, so its nick is free."""
    client.say("/quit")
    client.wait_closed()
    client.close()


def register(client: ChatClient, password: str = PASSWORD) -> None:
    client.command(f"/register {password}")


def test_a_registered_nick_needs_its_password(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """After /register, a login with that nick and no password is refused with
    nick_registered, a wrong one with bad_password; the right one logs in."""
    server = chat_server_factory(disable=["flood"])
    alice = chat_client(server, "alice")
    register(alice)
    leave(alice)
    other = chat_client(server)
    frame = refused(other, "Alice", "nick_registered")
    assert "password" in frame["text"]
    refused(other, "alice", "bad_password", password="wrong password")
    refused(other, "alice", "bad_frame", password=42)
    assert other.login("alice", password=PASSWORD)["nick"] == "alice"


def test_a_person_at_nc_logs_in_to_a_registered_nick_with_nick_space_password(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Text mode has no hello fields: the login line ``NICK PASSWORD`` carries one;
    after a refusal the password may come alone on the next line, which is never taken
    for a nick (everyone would be shown it); /nick ANOTHER takes another nick."""
    server = chat_server_factory(disable=["flood"])
    alice = chat_client(server, "alice")
    register(alice)
    leave(alice)
    with TextClient(server.address) as nc:
        nc.send_line("alice")
        assert "(type its password, or /nick ANOTHER" in nc.expect("nick_registered")
        nc.send_line("alice wrong password")
        nc.expect("bad_password")
        nc.send_line(f"alice {PASSWORD}")
        nc.expect("alice! You are in #general")
    with TextClient(server.address) as nc, chat_client(server, "bob") as bob:
        nc.send_line("alice")
        nc.expect("nick_registered")
        nc.send_line("hunter2")  # a password alone (a wrong one): not a nick
        nc.expect("bad_password")
        nc.send_line(PASSWORD)
        nc.expect("alice! You are in #general")
        assert not [f for f in bob.sync() if "hunter2" in json.dumps(f)]
    with TextClient(server.address) as nc:
        nc.send_line("alice")
        nc.expect("nick_registered")
        nc.send_line("/nick carol")
        nc.expect("carol! You are in #general")


def test_a_password_for_an_unregistered_nick_is_ignored(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A hello with a password for a nick nobody registered logs in as usual."""
    server = chat_server_factory()
    assert chat_client(server).login("bob", password="anything")["nick"] == "bob"


def test_identify_takes_the_nick_and_nick_refuses_it(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """/nick to a registered nick is refused; /identify NICK PASSWORD proves it and
    renames the client to it; /identify PASSWORD identifies the nick one has."""
    server = chat_server_factory(disable=["flood"])
    alice = chat_client(server, "alice")
    register(alice)
    leave(alice)
    guest = chat_client(server, "guest")
    guest.say("/nick alice")
    guest.expect("error", code="nick_registered")
    guest.say("/identify alice wrong-password")
    guest.expect("error", code="bad_password")
    guest.say(f"/identify alice {PASSWORD}")
    guest.expect("nick", old="guest", new="alice")
    reply = guest.expect("reply", command="identify")
    assert reply["data"] == {"account": "alice"}
    guest.say("/logout")
    guest.expect("reply", command="logout")
    guest.say(f"/identify {PASSWORD}")
    guest.expect("reply", command="identify")
    guest.say("/identify nosuch secret-password")
    guest.expect("error", code="no_account")


def test_passwd_logout_and_drop(chat_server_factory: Factory, chat_client: Connect) -> None:
    """/passwd needs the old password; /drop deletes the account, freeing the nick."""
    server = chat_server_factory(disable=["flood"])
    alice = chat_client(server, "alice")
    alice.say("/passwd a b")
    alice.expect("error", code="not_identified")
    register(alice)
    alice.say("/passwd wrong-password new-password")
    alice.expect("error", code="bad_password")
    alice.say(f"/passwd {PASSWORD} short")
    alice.expect("error", code="bad_password", text_contains="at least 8")
    leave(alice)
    second = chat_client(server)
    second.login("alice", password=PASSWORD)
    second.say(f"/passwd {PASSWORD} battery-staple")
    second.expect("reply", command="passwd", text="password changed")
    second.say("/drop wrong-password")
    second.expect("error", code="bad_password")
    second.say("/drop battery-staple")
    second.expect("reply", command="drop")
    second.say("/drop battery-staple")
    second.expect("error", code="not_identified")
    leave(second)
    assert chat_client(server).login("alice")["nick"] == "alice"


def test_whoever_registers_a_dropped_nick_gets_nothing_of_its_earlier_owner(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """After /drop, the next to register the nick sees none of the private messages of
    its earlier owner, and is no operator where it was one; the other party still sees
    the conversation."""
    config = accounts_config()
    config.plugins.append("moderation")
    server = chat_server_factory(config=config, disable=["flood"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    register(alice)
    register(bob, "bobs-password")
    alice.say("/join #owned")
    alice.expect("notice", text="you are an operator of #owned")
    bob.say("/join #owned")
    bob.expect("join", room="#owned", nick="bob")
    alice.say("/msg bob a secret")
    bob.expect("private", text="a secret")
    bob.say("/msg alice a secret reply")
    alice.expect("private", text="a secret reply")
    alice.say(f"/drop {PASSWORD}")
    alice.expect("reply", command="drop")
    leave(alice)
    mallory = chat_client(server, "alice")
    register(mallory, "not-the-same-person")
    mallory.send({"type": "history", "with": "bob"})
    frames = mallory.sync()
    assert [f for f in frames if f["type"] == "private"] == []
    assert [f["count"] for f in frames if f["type"] == "history"] == [0]
    mallory.say("/join #owned")
    mallory.expect("join", room="#owned", nick="alice")
    mallory.say("/kick bob")
    mallory.expect("error", code="not_room_operator")
    bob.sync()  # (his own copy of the reply, and the joins)
    bob.say("/history alice")
    texts = [f["text"] for f in bob.sync() if f["type"] == "private"]
    assert texts == ["a secret", "a secret reply"]


def test_drop_and_passwd_end_the_other_sessions_identification(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A second session identified to an account (a thief's, or a forgotten one) is no
    longer identified once the owner drops the account, so it cannot own whoever
    registers the name next; nor once the owner changes the password. Each is told
    (a notice, an account frame), and the session that acted stays identified."""
    server = chat_server_factory(disable=["flood"])
    ceo = chat_client(server, "ceo")
    register(ceo)
    thief = chat_client(server, "thief")
    thief.say(f"/identify ceo {PASSWORD}")
    thief.expect("account", nick="thief", account="ceo")
    ceo.say(f"/passwd {PASSWORD} a-new-password")
    assert "1 other session" in ceo.expect("reply", command="passwd")["text"]
    thief.expect(
        "notice", text="the account ceo was given a new password: you are no longer identified"
    )
    thief.expect("account", nick="thief", account=None)
    assert server.hub.find("ceo").account == "ceo"  # type: ignore[union-attr]
    thief.say("/identify ceo a-new-password")  # (the thief learnt it again)
    thief.expect("account", nick="thief", account="ceo")
    ceo.say("/drop a-new-password")
    ceo.expect("reply", command="drop")
    thief.expect("notice", text="the account ceo was deleted: you are no longer identified")
    thief.expect("account", nick="thief", account=None)
    assert server.hub.find("thief").account is None  # type: ignore[union-attr]
    thief.say("/nick ceo")
    thief.expect("error", code="nick_taken")  # the real one still has it, unregistered


def test_passwd_takes_the_nick_back_from_a_session_that_held_it_identified(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A thief who logged in as dave with the old password, once the owner changes it
    (from another nick), is no longer identified, and no longer dave: renamed GuestNNN
    (it kept the nick, unidentified, for as long as it stayed, and got dave's
    messages), so the owner's login with the new password is dave again."""
    server = chat_server_factory(disable=["flood"])
    dave = chat_client(server, "dave")
    register(dave)
    leave(dave)
    thief = chat_client(server)
    thief.login("dave", password=PASSWORD)
    owner = chat_client(server, "dave_")
    owner.say(f"/identify dave {PASSWORD}")
    owner.expect("account", nick="dave_", account="dave")
    owner.say(f"/passwd {PASSWORD} a-new-password")
    owner.expect("reply", command="passwd")
    thief.expect("notice", text="dave was given a new password: you are renamed")
    assert thief.expect("nick", old="dave")["new"].startswith("Guest")
    owner.say("/nick dave")
    owner.expect("nick", old="dave_", new="dave")


def test_register_refusals(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A short password, a bad email, and a nick registered twice are refused."""
    server = chat_server_factory(disable=["flood"])
    alice = chat_client(server, "alice")
    alice.say("/register short")
    alice.expect("error", code="bad_password", text_contains="at least 8")
    alice.say(f"/register {PASSWORD} not-an-address")
    alice.expect("error", code="bad_usage")
    alice.say("/register")
    alice.expect("error", code="bad_usage")
    alice.command(f"/register {PASSWORD} alice@example.org")
    alice.say(f"/register {PASSWORD}")
    alice.expect("error", code="nick_registered")


CYRILLIC_ALICE = "\u0430lice"  # Cyrillic a: looks like alice
MIXED_ALICE = "\u0410L\u0406CE"  # Cyrillic A and I among Latin letters: looks like ALICE
CAPITAL_I_ALICE = "aIice"  # a capital I for the l: looks like alice as shown


def test_a_look_alike_of_a_registered_nick_needs_its_password() -> None:
    """A nick that only looks like a registered one (another case, letters of another
    script) needs that account's password on every face: JSON and text lines, IRC, the
    web's WebSocket; /nick to it is refused, and so is registering it."""
    server = Server(
        config=make_config(disable=["flood"]),
        faces=[
            LineFace(),
            IrcFace(port=0, server_name=SERVER, network="TestNet"),
            WebFace(port=0),
        ],
    )
    with server, ChatClient(server.address) as alice:
        alice.login("alice")
        register(alice)
        leave(alice)
        with ChatClient(server.address) as other:
            for nick in (CYRILLIC_ALICE, MIXED_ALICE, CAPITAL_I_ALICE):
                frame = refused(other, nick, "nick_registered")
                assert "looks like alice, which is registered" in frame["text"]
                assert "password" in frame["text"]
            refused(other, MIXED_ALICE, "bad_password", password="wrong password")
            assert other.login(MIXED_ALICE, password=PASSWORD)["nick"] == MIXED_ALICE
            leave(other)
        with ChatClient(server.address) as guest:
            guest.login("guest")
            for nick in (CYRILLIC_ALICE, MIXED_ALICE.lower()):
                guest.say(f"/nick {nick}")
                frame = guest.expect("error", code="nick_registered")
                assert "/identify alice PASSWORD" in frame["text"]
        with TextClient(server.address) as text:
            text.send_line(CYRILLIC_ALICE)
            assert "nick_registered" in text.expect("error")
        with IrcClient(server.addresses["irc"]) as irc:
            irc.send(f"NICK {CYRILLIC_ALICE}", "USER x 0 * :X")
            assert "is registered (see the notice)" in irc.expect(" 433 ")
            # Clients show their own words for 433: a NOTICE says why, where it is read,
            # and how, on IRC.
            assert "(PASS it before NICK, or SASL)" in irc.expect(" NOTICE * :")
        with IrcClient(server.addresses["irc"]) as irc:
            irc.register("ircguest")
            irc.send(f"NICK {MIXED_ALICE}")
            assert "registered" in irc.expect(" 433 ")
            assert "/msg NickServ IDENTIFY alice" in irc.expect(" NOTICE ircguest :")
        with IrcClient(server.addresses["irc"]) as irc:
            irc.register(CYRILLIC_ALICE, password=PASSWORD)
            irc.send("QUIT")
            irc.wait_closed()
        web = WebClient(server)
        try:
            web.send(type="hello", nick=CYRILLIC_ALICE)
            web.expect("error", code="nick_registered")
            assert web.login(CYRILLIC_ALICE, password=PASSWORD)["nick"] == CYRILLIC_ALICE
        finally:
            web.close()


def test_a_look_alike_cannot_register_beside_an_account(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """/register of a nick that looks like a registered one is refused with
    nick_registered, naming the account, whoever holds it (even the owner)."""
    server = chat_server_factory(disable=["flood"])
    alice = chat_client(server, "alice")
    register(alice)
    leave(alice)
    squatter = chat_client(server)
    squatter.login(CYRILLIC_ALICE, password=PASSWORD)  # the owner, under a look-alike
    squatter.say("/logout")
    squatter.expect("reply", command="logout")
    squatter.say(f"/register {PASSWORD}")
    frame = squatter.expect("error", code="nick_registered")
    assert "looks like alice, which is registered" in frame["text"]
    assert plugin(server)._store.find(CYRILLIC_ALICE) == plugin(server)._store.get("alice")


def test_a_login_renames_no_other_account_whose_nick_only_looks_like_it(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Two accounts whose nicks look alike only as shown (alice, and aIice with a capital
    I: registered before either kept the other out): the owner of one logging in with
    its password renames no one identified to the other; the nick is taken meanwhile."""
    server = chat_server_factory(config=accounts_config())
    first = chat_client(server, "aIice")
    register(first)
    first.say("/quit")
    first.wait_closed()
    # A registered aIice keeps out alice, both a login and a registration, and Alice,
    # whose account would be shown as alice too ...
    for spelling in ("alice", "Alice"):
        squatter = ChatClient(server.address)
        squatter.send(type="hello", nick=spelling)
        assert "looks like aIice" in squatter.expect("error", code="nick_registered")["text"]
        squatter.close()
    assert plugin(server)._store.find("ALICE") is not None
    # ... but two such accounts may be there from before (a file of an older chatkit).
    store = plugin(server)._store
    assert isinstance(store, AccountStore)
    with store._lock:
        store._db.execute(
            "INSERT INTO accounts (name, nick, hash, email, created, skeleton, shown)"
            " SELECT 'alice', 'alice', hash, NULL, created + 1, ?, ? FROM accounts",
            (skeleton("alice"), shown_skeleton("alice")),
        )
    capital = chat_client(server)
    capital.login("aIice", password=PASSWORD)
    owner = ChatClient(server.address)
    owner.send(type="hello", nick="alice", password=PASSWORD)
    owner.expect("error", code="nick_taken")
    assert not [f for f in capital.sync() if f["type"] == "nick"]
    owner.close()


def test_grace_renames_a_look_alike_and_identify_reclaims_it(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """With grace, a look-alike of a registered nick is told to identify and renamed
    when the time is up; /identify NICK PASSWORD from elsewhere renames its holder."""
    server = chat_server_factory(config=accounts_config(grace=1), disable=["flood"])
    alice = chat_client(server, "alice")
    register(alice)
    leave(alice)
    squatter = chat_client(server, CYRILLIC_ALICE)
    squatter.expect("notice", text_contains="/identify PASSWORD within 1 s")
    frame = squatter.expect("nick", old=CYRILLIC_ALICE, timeout=5)
    assert frame["new"].startswith("Guest")
    again = chat_client(server, MIXED_ALICE)
    again.expect("notice", text_contains="/identify")
    owner = chat_client(server, "owner")
    owner.say(f"/identify alice {PASSWORD}")
    owner.expect("nick", old="owner", new="alice")
    again.expect("nick", old=MIXED_ALICE)
    # A capital I for the l: the same, told, renamed, and moved off by a password login.
    owner.say("/quit")
    owner.wait_closed()
    capital = chat_client(server, CAPITAL_I_ALICE)
    capital.expect("notice", text_contains="/identify PASSWORD within 1 s")
    assert capital.expect("nick", old=CAPITAL_I_ALICE, timeout=5)["new"].startswith("Guest")
    capital = chat_client(server, CAPITAL_I_ALICE)
    capital.expect("notice", text_contains="/identify")
    back = chat_client(server)
    assert back.login("alice", password=PASSWORD)["nick"] == "alice"
    capital.expect("nick", old=CAPITAL_I_ALICE)


def test_a_muted_squatter_is_still_moved_off_a_registered_nick(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """The renames the accounts plugin forces (the grace's end, /identify NICK) are not
    the holder's to refuse: a squatter muted somewhere (who may not change its nick
    itself) is moved off the registered nick all the same."""
    config = accounts_config(grace=1)
    config.plugins.append("moderation")
    server = chat_server_factory(config=config, disable=["flood"])
    alice = chat_client(server, "alice")
    register(alice)
    leave(alice)
    trapper = chat_client(server, "trapper")
    trapper.say("/join #trap")
    trapper.expect("notice", text="you are an operator of #trap")
    squatter = chat_client(server, "alice")
    squatter.expect("notice", text_contains="/identify")
    squatter.say("/join #trap")
    squatter.expect("join", room="#trap", nick="alice")
    trapper.say("/mute alice")
    trapper.expect("notice", text="trapper muted alice!*@*")
    assert squatter.expect("nick", old="alice", timeout=5)["new"].startswith("Guest")
    owner = chat_client(server, "owner")
    owner.say(f"/identify alice {PASSWORD}")
    owner.expect("nick", old="owner", new="alice")


def test_an_accounts_file_of_version_1_gains_look_alike_keys(tmp_path: Path) -> None:
    """A file made before look-alike keys is migrated at start (both keys): its accounts
    are found by look-alike nicks."""
    path = tmp_path / "accounts.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute(
        "INSERT INTO accounts (name, nick, hash, email, created) VALUES (?, ?, ?, ?, ?)",
        ("alice", "Alice", "hash", None, 0.0),
    )
    conn.execute(  # (its second key as shown, from version 3: a capital I for an l)
        "INSERT INTO accounts (name, nick, hash, email, created) VALUES (?, ?, ?, ?, ?)",
        ("boi", "boI", "hash", None, 1.0),
    )
    conn.execute("PRAGMA user_version=1")
    conn.execute("PRAGMA application_id=1667787617")
    conn.commit()
    conn.close()
    store = AccountStore(path)
    try:
        found = store.find(CYRILLIC_ALICE)
        assert found is not None and found.nick == "Alice"
        assert store.find("bob") is None
        found = store.find("bol")  # boI as shown: found by its second key alone
        assert found is not None and found.nick == "boI"
    finally:
        store.close()


def test_an_accounts_file_of_version_3_gains_the_folded_second_key(tmp_path: Path) -> None:
    """A file whose second look-alike key kept case (version 3) is migrated at start: a
    registered BoI is then found from bol too (its owner may show it as bol)."""
    path = tmp_path / "accounts.sqlite3"
    conn = sqlite3.connect(path)
    conn.create_function("chatkit_skeleton", 1, skeleton)
    for step in MIGRATIONS[:2]:
        conn.executescript(step)
    conn.executescript("ALTER TABLE accounts ADD COLUMN shown TEXT;")
    conn.execute(
        "INSERT INTO accounts (name, nick, hash, email, created, skeleton, shown)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("boi", "BoI", "hash", None, 0.0, skeleton("BoI"), shown_skeleton("BoI")),
    )
    conn.execute("PRAGMA user_version=3")
    conn.execute("PRAGMA application_id=1667787617")
    conn.commit()
    conn.close()
    store = AccountStore(path)
    try:
        found = store.find("bol")  # BoI, a capital I for an l, in any case
        assert found is not None and found.nick == "BoI"
    finally:
        store.close()


def test_registration_closed_and_by_invitation(
    chat_server_factory: Factory, chat_client: Connect, tmp_path: Path
) -> None:
    """registration = closed refuses every /register; invite lets a nick register once
    an identified user vouched for it."""
    closed = chat_server_factory(config=accounts_config(registration="closed"))
    bob = chat_client(closed, "bob")
    bob.say(f"/register {PASSWORD}")
    bob.expect("error", code="registration_closed")

    db = tmp_path / "accounts.sqlite3"
    invite = chat_server_factory(
        config=accounts_config(registration="invite", db=str(db), max_invites=3)
    )
    plugin(invite)._store.invite("alice", "root")  # the first account: by the operator
    alice, bob = chat_client(invite, "alice"), chat_client(invite, "bob")
    bob.say(f"/register {PASSWORD}")
    bob.expect("error", code="not_invited", text_contains="/vouch bob")
    register(alice)
    alice.say("/vouch bob")
    alice.expect("reply", command="vouch")
    register(bob)
    alice.say("/vouch #room")
    alice.expect("error", code="bad_nick")
    for i in range(3):  # (bob's is used up: he registered)
        alice.say(f"/vouch friend{i}")
        alice.expect("reply", command="vouch")
    alice.say("/vouch onemore")
    alice.expect("error", code="too_many_invites")
    bob.say("/vouch carol")  # bob's own invitations: a budget of their own
    bob.expect("reply", command="vouch")
    with_open = chat_server_factory(config=accounts_config())
    dave = chat_client(with_open, "dave")
    register(dave)
    dave.say("/vouch erin")  # nothing to vouch for: anyone may register
    dave.expect("error", code="bad_usage", text_contains="registration is open")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"registration": "maybe"}, "registration must be"),
        ({"grace": -1}, "grace"),
        ({"color": 1}, "color"),
    ],
)
def test_bad_settings_stop_the_start(settings: dict[str, Any], message: str) -> None:
    """A bad [plugins.accounts] setting is a UsageError naming it."""
    with pytest.raises(UsageError, match=message):
        Server(port=0, config=make_config(accounts_config(**settings))).start()


def test_failed_logins_are_throttled_per_account(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Past free_failures, each failure makes the account wait (auth_throttled with
    retry_after), even with the right password, and the wait doubles."""
    # (delay: longer than a few argon2 checks on a busy machine, which the wait includes)
    config = accounts_config(free_failures=1, free_failures_per_address=100, delay=2.0)
    server = chat_server_factory(config=config, disable=["flood"])
    alice = chat_client(server, "alice")
    register(alice)
    leave(alice)
    other = chat_client(server)
    refused(other, "alice", "bad_password", password="wrong-1")
    refused(other, "alice", "bad_password", password="wrong-2")  # the first that costs
    frame = refused(other, "alice", "auth_throttled", password=PASSWORD)
    assert 0 < frame["retry_after"] <= 2.0
    deadline = time.monotonic() + 15
    while True:  # wait for the delay to pass, as a client told retry_after would
        other.send(type="hello", nick="alice", password="wrong-3")
        frame = other.expect("error")
        if frame["code"] == "bad_password":
            break
        assert frame["code"] == "auth_throttled"
        assert time.monotonic() < deadline
    frame = refused(other, "alice", "auth_throttled", password=PASSWORD)
    assert 2.0 < frame["retry_after"] <= 4.0  # doubled


def test_failed_logins_are_throttled_per_address(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Failures against different accounts from one address add up."""
    config = accounts_config(free_failures=100, free_failures_per_address=2, delay=30)
    server = chat_server_factory(config=config, disable=["flood"])
    for nick in ("ann", "bea", "cy"):
        client = chat_client(server, nick)
        register(client)
        leave(client)
    guesser = chat_client(server)
    refused(guesser, "ann", "bad_password", password="guess-one")
    refused(guesser, "bea", "bad_password", password="guess-two")
    refused(guesser, "cy", "bad_password", password="guess-three")
    frame = refused(guesser, "cy", "auth_throttled", password=PASSWORD)
    assert 20 < frame["retry_after"] <= 30  # (each guess's argon2 check took some)


def test_throttle_forgets_after_success_and_bounds_its_delay() -> None:
    """A success clears a key; the delay never passes max_delay."""
    throttle = Throttle(free=0, delay=1.0, max_delay=4.0)
    for _ in range(10):
        throttle.fail("k", 100.0)
    assert throttle.wait("k", 100.0) == 4.0
    throttle.succeed("k")
    assert throttle.wait("k", 100.0) == 0.0


def test_a_check_that_finds_no_hashing_slot_in_time_is_refused(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """With every hashing slot busy for longer than hash_wait, a password check is
    auth_throttled with retry_after instead of queueing; once one frees, it goes on."""
    server = chat_server_factory(config=accounts_config(hash_wait=0.05), disable=["flood"])
    alice = chat_client(server, "alice")
    register(alice)
    accounts = server.pluginmanager.get_plugin("accounts")
    assert accounts is not None
    held = 0
    while accounts._hashing.acquire(blocking=False):  # a crowd of hashes running
        held += 1
    try:
        alice.say(f"/identify alice {PASSWORD}")
        refused = alice.expect("error", code="auth_throttled")
        assert "busy" in refused["text"] and refused["retry_after"] == 1.0
        alice.say("/passwd whatever new-password-1")  # registering or changing one too
        alice.expect("error", code="auth_throttled")
    finally:
        for _ in range(held):
            accounts._hashing.release()
    alice.say(f"/identify alice {PASSWORD}")
    alice.expect("reply", command="identify")


def test_password_checks_per_address_are_budgeted(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """Each password check (an argon2 hash) takes one of the address's
    max_checks_per_minute, right passwords too: one more is auth_throttled, with
    retry_after, unhashed."""
    server = chat_server_factory(config=accounts_config(max_checks_per_minute=2))
    alice = chat_client(server, "alice")
    register(alice)  # one
    alice.say(f"/identify alice {PASSWORD}")  # two
    alice.expect("reply", command="identify")
    alice.say(f"/identify alice {PASSWORD}")
    refused = alice.expect("error", code="auth_throttled")
    assert "password checks" in refused["text"] and 0 < refused["retry_after"] <= 30
    budget = Budget(per_minute=60)
    assert all(budget.take("a", 100.0) == 0 for _ in range(60))
    assert budget.take("a", 100.0) == pytest.approx(1.0)
    assert budget.take("b", 100.0) == 0  # another address: its own budget
    assert budget.take("a", 101.0) == 0  # a second later: one more


def test_registrations_per_address_are_budgeted(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """An address registers max_registrations_per_hour accounts: one more is
    auth_throttled, with retry_after, and nothing is registered."""
    server = chat_server_factory(config=accounts_config(max_registrations_per_hour=2))
    for nick in ("ann", "bob"):
        register(chat_client(server, nick))
    cat = chat_client(server, "cat")
    cat.say(f"/register {PASSWORD}")
    refused = cat.expect("error", code="auth_throttled")
    assert "max_registrations_per_hour" in refused["text"]
    assert 0 < refused["retry_after"] <= 1800
    assert plugin(server)._store.get("cat") is None
    budget = Budget(per_minute=2, period=3600.0)
    assert budget.take("a", 0.0) == budget.take("a", 0.0) == 0
    assert budget.take("a", 0.0) == pytest.approx(1800.0)
    budget.give_back("a")  # (a registration refused after it took one: not counted)
    assert budget.take("a", 0.0) == 0


def test_attempts_at_once_count_before_any_has_failed() -> None:
    """Forty guesses at the same moment (forty connections): an attempt counts as a
    failure from its start, so the free ones and one more pass, the rest wait; a right
    password takes its own attempt back."""
    throttle = Throttle(free=3, delay=1.0, max_delay=4.0)
    assert sum(throttle.attempt("k", 100.0) == 0 for _ in range(40)) == 4
    assert throttle.wait("k", 100.0) == 1.0
    other = Throttle(free=1, delay=1.0, max_delay=4.0)
    for _ in range(5):  # right passwords, one after another: never a wait
        assert other.attempt("a", 100.0) == 0
        other.undo("a")
    assert other.wait("a", 100.0) == 0


def test_an_attempt_taken_back_leaves_the_wait_as_it_was() -> None:
    """An attempt that succeeds, or is refused before any password is checked, is taken
    back whole: the wait it set is undone too. (It stayed: one wrong guess now and then,
    and attempts that cost the guesser no argon2 check, kept the owner waiting.)"""
    throttle = Throttle(free=2, delay=1.0, max_delay=300.0)
    for _ in range(3):
        throttle.fail("bob", 100.0)
    assert throttle.wait("bob", 100.0) == 1.0  # the third failure: 1 s
    assert throttle.attempt("bob", 101.0) == 0  # counted at once, a wait of 2 s set
    assert throttle.wait("bob", 101.0) == 2.0
    throttle.undo("bob")  # the right password (or no check at all)
    assert throttle.wait("bob", 101.0) == 0.0  # as before the attempt: 1 s from 100
    throttle.fail("bob", 101.0)  # the next failure is the fourth, as it would have been
    assert throttle.wait("bob", 101.0) == 2.0


def test_the_owner_s_password_takes_the_nick_from_whoever_holds_it_unidentified(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A login with the account's password is the nick's owner: one holding the nick
    unidentified (a grace period) is renamed to a guest nick, as for an /identify, and
    the owner gets the nick (it was nick_taken: a squatter read the owner's messages
    until the grace ran out, and could come back for more)."""
    server = chat_server_factory(config=accounts_config(grace=30), disable=["flood"])
    carol = chat_client(server, "carol")
    register(carol)
    leave(carol)
    squatter = chat_client(server, "carol")
    squatter.expect("notice", text_contains="/identify PASSWORD")
    owner = chat_client(server)
    assert owner.login("carol", password=PASSWORD)["nick"] == "carol"
    squatter.expect("notice", text="carol logged in with its password: you are renamed")
    renamed = squatter.expect("nick", old="carol")
    assert renamed["new"].startswith("Guest")
    session = server.hub.find("carol")
    assert session is not None and session.account == "carol"


def test_a_password_takes_the_nick_back_from_a_session_of_the_same_account() -> None:
    """A connection of the account's own that still holds the nick (dropped, not timed
    out yet) gives it up to a login with the password, to /regain NICK PASSWORD and to
    IRC's NickServ REGAIN (GHOST, RECOVER), and to an IRC login by SASL: told, renamed
    GuestNNN, as services' REGAIN does; /identify NICK PASSWORD identifies and leaves
    the account's sessions' nicks."""
    server = Server(
        config=make_config(disable=["flood"]),
        faces=[LineFace(), IrcFace(port=0, server_name=SERVER, network="TestNet")],
    )
    with server, ChatClient(server.address) as stale:
        stale.login("nina")
        register(stale)
        with ChatClient(server.address) as again:
            assert again.login("nina", password=PASSWORD)["nick"] == "nina"
            stale.expect("notice", text="nina logged in with its password: you are renamed")
            assert stale.expect("nick", old="nina")["new"].startswith("Guest")
            stale.say(f"/identify nina {PASSWORD}")  # identified, the nick left as it is
            assert "you keep the nick Guest" in stale.expect("reply", command="identify")["text"]
            stale.say(f"/regain nina {PASSWORD}")  # (services' REGAIN)
            stale.expect("nick", new="nina")
            again.expect("notice", text="nina identified: you are renamed")
            assert again.expect("nick", old="nina")["new"].startswith("Guest")
            with IrcClient(server.addresses["irc"]) as irc:
                irc.register("nina_")
                irc.send("PRIVMSG NickServ :REGAIN nina")  # (one word: not a password)
                irc.expect(":NickServ!NickServ@services NOTICE nina_ :Usage: REGAIN NICK PASSWORD")
                irc.send(f"PRIVMSG NickServ :REGAIN nina {PASSWORD}")
                irc.expect(":nina_!nina_@chatkit NICK nina")
                irc.expect(":NickServ!NickServ@services NOTICE nina :you are identified as nina")
                stale.expect("nick", old="nina")
                session = server.hub.find("nina")
                assert session is not None and session.account == "nina"
                with IrcClient(server.addresses["irc"]) as sasl:  # proven before its login
                    sasl.send("CAP LS 302", "CAP REQ :sasl")
                    sasl.expect("CAP * ACK")
                    sasl.send("AUTHENTICATE PLAIN")
                    sasl.expect("AUTHENTICATE +")
                    token = base64.b64encode(f"\0nina\0{PASSWORD}".encode()).decode()
                    sasl.send(f"AUTHENTICATE {token}", "NICK nina", "USER n 0 * :N", "CAP END")
                    sasl.expect(f":{SERVER} 001 nina ")
                    irc.expect(":nina!nina@chatkit NICK Guest")


def test_grace_renames_a_client_that_does_not_identify(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """With grace set, a registered nick may log in without its password, is told
    to identify, and is renamed to a guest nick when the time is up."""
    # Long enough for the late client's /identify (argon2) on a busy machine.
    server = chat_server_factory(config=accounts_config(grace=2), disable=["flood"])
    alice = chat_client(server, "alice")
    register(alice)
    leave(alice)
    squatter = chat_client(server, "alice")
    squatter.expect("notice", text_contains="/identify PASSWORD within 2 s")
    frame = squatter.expect("nick", old="alice", timeout=5)
    assert frame["new"].startswith("Guest")
    late = chat_client(server, "alice")
    late.expect("notice", text_contains="/identify")
    late.say(f"/identify {PASSWORD}")
    late.expect("reply", command="identify")
    deadline = time.monotonic() + 2.5  # past the grace: still alice
    while time.monotonic() < deadline:
        assert [f for f in late.sync() if f["type"] == "nick"] == []
    holder = server.hub.find("alice")
    assert holder is not None and holder.account == "alice"


def test_a_refused_login_leaves_the_next_one_its_grace(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """A login refused after the plugin looked at its nick (taken by someone online)
    does not answer for the client's next attempt: a registered nick then still gets
    the grace notice, and its clock."""
    server = chat_server_factory(config=accounts_config(grace=60), disable=["flood"])
    owner = chat_client(server, "alice")
    register(owner)
    leave(owner)
    chat_client(server, "bob")
    with ChatClient(server.address) as eve:
        refused(eve, "bob", "nick_taken")
        eve.send(type="hello", nick="alice")
        eve.expect("notice", text_contains="/identify PASSWORD within 60 s")


def test_identify_reclaims_a_nick_held_in_grace(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """/identify NICK PASSWORD renames whoever holds NICK without having identified."""
    server = chat_server_factory(config=accounts_config(grace=60), disable=["flood"])
    owner = chat_client(server, "alice")
    register(owner)
    leave(owner)
    squatter = chat_client(server, "alice")
    owner = chat_client(server, "owner")
    owner.say(f"/identify alice {PASSWORD}")
    owner.expect("nick", old="owner", new="alice")
    squatter.expect("nick", old="alice")


def test_accounts_survive_a_restart_in_a_file_beside_history(tmp_path: Path) -> None:
    """The accounts file sits beside the history database and outlives the server."""
    history = tmp_path / "history.sqlite3"
    config = accounts_config(history={"db": str(history)})
    with Server(port=0, config=make_config(config)) as first, ChatClient(first.address) as alice:
        alice.login("alice")
        register(alice)
    assert (tmp_path / "history.accounts.sqlite3").exists()
    with Server(port=0, config=make_config(config)) as second, ChatClient(second.address) as c:
        refused(c, "alice", "nick_registered")
        c.login("alice", password=PASSWORD)


def test_an_old_hash_is_redone_at_login(chat_server_factory: Factory, chat_client: Connect) -> None:
    """A hash made with other argon2 parameters is replaced at the next good login."""
    server = chat_server_factory()
    accounts = plugin(server)
    alice = chat_client(server, "alice")
    register(alice)
    old = PasswordHasher(time_cost=1, memory_cost=1024).hash(PASSWORD)
    accounts._store.set_hash("alice", old)
    leave(alice)
    chat_client(server).login("alice", password=PASSWORD)
    new = accounts._store.get("alice")
    assert new is not None and new.hash != old
    assert not accounts.hasher.check_needs_rehash(new.hash)


def test_passwords_never_reach_the_log(
    chat_server_factory: Factory, chat_client: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """Registering, identifying, failing and changing passwords log no password."""
    caplog.set_level(logging.DEBUG)
    server = chat_server_factory(disable=["flood"])
    alice = chat_client(server, "alice")
    register(alice, "first-secret")
    alice.say("/passwd first-secret second-secret")
    alice.expect("reply", command="passwd")
    leave(alice)
    other = chat_client(server)
    refused(other, "alice", "bad_password", password="third-secret")
    other.login("alice", password="second-secret")
    other.say("/drop second-secret")
    other.expect("reply", command="drop")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "failed login for account alice" in text
    assert "secret" not in text


def test_private_history_is_shown_to_the_accounts_that_took_part(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """With accounts, private messages are stored by default and /history NICK shows
    them only to a client identified to the account that sent or received them: not
    to the next holder of an unregistered nick, nor to anyone unidentified."""
    server = chat_server_factory(disable=["flood"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    register(alice)
    alice.say("/msg bob to unregistered bob")
    bob.expect("private")
    bob.say("/history alice")
    refused = bob.expect("error", code="not_identified")
    assert "with alice" in refused["text"] and "/history #alice" in refused["text"]
    register(bob)
    alice.say("/msg bob to registered bob")
    bob.expect("private", text="to registered bob")
    bob.say("/history alice")
    shown = [f["text"] for f in bob.sync() if f["type"] == "private" and f.get("history")]
    assert shown == ["to registered bob"]
    alice.say("/history bob")
    shown = [f["text"] for f in alice.sync() if f["type"] == "private" and f.get("history")]
    assert shown == ["to unregistered bob", "to registered bob"]


def test_private_history_follows_the_accounts_across_renames(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """An identified client's private history with NICK is its account's: what it said
    and heard under an earlier nick of its own is there after a /nick, and so is what
    was said with NICK's account under another nick of NICK's; history_targets lists
    the conversation once."""
    server = chat_server_factory(disable=["flood"])
    alice, bob = chat_client(server, "alice"), chat_client(server, "bob")
    register(alice)
    register(bob)
    alice.say("/msg bob one")
    bob.expect("private", text="one")
    alice.say("/nick alice2")
    alice.expect("nick")
    alice.say("/msg bob two")
    bob.expect("private", text="two")
    bob.say("/nick bobby")
    bob.expect("nick")
    bob.say("/msg alice2 three")
    alice.expect("private", text="three")
    for client, other in ((alice, "bobby"), (alice, "bob"), (bob, "alice2"), (bob, "alice")):
        client.say(f"/history {other}")
        shown = [f["text"] for f in client.sync() if f["type"] == "private" and f.get("history")]
        assert shown == ["one", "two", "three"], (client.nick, other, shown)
    alice.send(type="history_targets")
    assert [t["target"] for t in alice.expect("history_targets")["targets"]] == ["bobby"]
    bob.say("/quit")  # offline: bobby's account is the one on the other side of "three"
    alice.expect("leave", nick="bobby")
    alice.say("/history bobby")
    shown = [f["text"] for f in alice.sync() if f["type"] == "private" and f.get("history")]
    assert shown == ["one", "two", "three"]
    carol = chat_client(server, "carol")  # no party to it, under any nick
    register(carol)
    carol.say("/history bob")
    assert [f for f in carol.sync() if f["type"] == "private"] == []


def test_history_of_a_nick_once_ones_own_is_not_anothers_conversation(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """/history NICK, where NICK was once this account's own nick (and nobody holds it
    now), is not taken for the conversation with whoever this account talked to then."""
    server = chat_server_factory(disable=["flood"])
    alice, carol = chat_client(server, "alice"), chat_client(server, "carol")
    register(alice)
    register(carol)
    alice.say("/msg carol as alice")
    carol.expect("private", text="as alice")
    alice.say("/nick dave")
    alice.expect("nick")
    alice.say("/msg carol as dave")
    carol.expect("private", text="as dave")
    alice.say("/nick alice")
    alice.expect("nick")
    alice.say("/history dave")
    shown = [f["text"] for f in alice.sync() if f["type"] == "private" and f.get("history")]
    assert "as alice" not in shown, shown


def test_irc_pass_and_sasl_plain(tmp_path: Path) -> None:
    """On IRC a registered nick logs in with PASS or SASL PLAIN (900, 903); a wrong
    SASL password is 904; a registered nick without a password is 433."""
    server = Server(
        config=make_config(),
        faces=[LineFace(), IrcFace(port=0, server_name=SERVER, network="TestNet")],
    )
    with server, ChatClient(server.address) as alice:
        alice.login("alice")
        register(alice)
        leave(alice)
        irc_address = server.addresses["irc"]
        with IrcClient(irc_address) as irc:
            irc.send("CAP LS 302")
            assert " sasl=PLAIN " in irc.expect("CAP * LS")  # its mechanisms (CAP LS 302)
            irc.send("NICK alice", "USER alice 0 * :Alice", "CAP END")
            assert "alice" in irc.expect(" 433 ")
        with IrcClient(irc_address) as irc:
            irc.register("alice", password=PASSWORD)
        with IrcClient(irc_address) as irc:
            irc.send("CAP LS 302", "CAP REQ :sasl", "NICK alice", "USER alice 0 * :Alice")
            irc.expect("CAP * ACK")
            irc.send("AUTHENTICATE SCRAM-SHA-256")
            irc.expect(" 908 ")
            irc.expect(" 904 ")
            irc.send("AUTHENTICATE PLAIN")
            irc.expect("AUTHENTICATE +")
            bad = base64.b64encode(b"\0alice\0wrong-password").decode()
            irc.send(f"AUTHENTICATE {bad}")
            irc.expect(" 904 ")
            irc.send("AUTHENTICATE PLAIN")
            irc.expect("AUTHENTICATE +")
            good = base64.b64encode(f"alice\0alice\0{PASSWORD}".encode()).decode()
            irc.send(f"AUTHENTICATE {good}")
            logged_in = irc.expect(" 900 ")
            assert " 900 alice alice!" in logged_in  # (to the nick given, not *)
            assert "You are now logged in as alice" in logged_in
            assert "@chatkit " in logged_in and "127.0.0.1" not in logged_in  # no real host
            irc.expect(" 903 ")
            irc.send("CAP END")
            irc.expect(" 001 ")


def test_no_sasl_without_accounts() -> None:
    """With the accounts plugin disabled, CAP LS offers no sasl."""
    server = Server(
        config=make_config(disable=["accounts"]),
        faces=[IrcFace(port=0, server_name=SERVER, network="TestNet")],
    )
    with server, IrcClient(server.addresses["irc"]) as irc:
        irc.send("CAP LS 302")
        assert "sasl" not in irc.expect("CAP * LS")


def test_chatkit_serve_keeps_accounts_beside_its_database(
    tmp_path: Path, serve: type[ServeProcess]
) -> None:
    """`chatkit serve --db FILE` keeps accounts in FILE's neighbour, across restarts."""
    db = tmp_path / "chat.sqlite3"
    first = serve("--db", str(db))
    with ChatClient(first.address) as alice:
        alice.login("alice")
        register(alice)
    assert first.stop()[0] == 0
    conn = sqlite3.connect(tmp_path / "chat.accounts.sqlite3")
    assert conn.execute("SELECT nick, email FROM accounts").fetchall() == [("alice", None)]
    conn.close()
    second = serve("--db", str(db))
    with ChatClient(second.address) as again:
        refused(again, "alice", "nick_registered")
    assert second.stop()[0] == 0


def test_a_password_checked_while_it_changes_proves_nothing(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """/identify whose check of the old password is still running when the owner's
    /passwd lets go of every session identified to the account: it is refused (try
    again), not identified with the old password."""
    server = chat_server_factory(disable=["flood"])
    accounts = server.pluginmanager.get_plugin("accounts")
    assert accounts is not None
    bob = chat_client(server, "bob")
    register(bob)
    checked, go_on = threading.Event(), threading.Event()
    check = accounts.check

    def held_check(client: Session, account: Any, password: str) -> Any:
        refused = check(client, account, password)
        if client.nick == "mal":
            checked.set()
            assert go_on.wait(10)  # the owner's /passwd comes now
        return refused

    accounts.check = held_check
    mal = chat_client(server, "mal")
    mal.say(f"/identify bob {PASSWORD}")
    assert checked.wait(10)
    accounts.check = check
    bob.say(f"/passwd {PASSWORD} a-new-password")
    bob.expect("reply", command="passwd")
    go_on.set()
    assert (
        "changed while its password was checked" in mal.expect("error", code="bad_password")["text"]
    )
    assert server.hub.find("mal").account is None  # type: ignore[union-attr]


def test_an_irc_client_proven_by_sasl_then_dropped_logs_in_unidentified() -> None:
    """SASL proves an account before the login; a /drop of it meanwhile (the client has
    no nick yet, so nobody lets go of it) leaves it proving nothing at its login: it
    is welcomed unidentified, and cannot own whoever registers the name next."""
    server = Server(
        config=make_config(disable=["flood"]),
        faces=[LineFace(), IrcFace(port=0, server_name=SERVER, network="TestNet")],
    )
    with server, ChatClient(server.address) as alice:
        alice.login("alice")
        register(alice)
        with IrcClient(server.addresses["irc"]) as irc:
            irc.send("CAP LS 302", "CAP REQ :sasl", "NICK mal", "USER mal 0 * :M")
            irc.expect("CAP * ACK")
            irc.send("AUTHENTICATE PLAIN")
            irc.expect("AUTHENTICATE +")
            proof = base64.b64encode(f"alice\0alice\0{PASSWORD}".encode()).decode()
            irc.send(f"AUTHENTICATE {proof}")
            irc.expect(" 903 ")
            alice.say(f"/drop {PASSWORD}")
            alice.expect("reply", command="drop")
            irc.send("CAP END")
            irc.expect(" 001 mal ")
            irc.send("WHOIS mal")
            assert not [line for line in irc.until(" 318 ") if " 330 " in line]  # no account
            assert server.hub.find("mal").account is None  # type: ignore[union-attr]


def test_a_rehash_does_not_undo_a_password_change() -> None:
    """A login rehashes an old-style hash only over the hash it checked: a /passwd that
    came meanwhile stays (set_hash(..., old=...))."""
    store = AccountStore(":memory:")
    try:
        store.create(Account("alice", "alice", "checked-hash", None))
        store.set_hash("alice", "changed-by-passwd")
        store.set_hash("alice", "rehashed", old="checked-hash")  # too late: not written
        found = store.get("alice")
        assert found is not None and found.hash == "changed-by-passwd"
        store.set_hash("alice", "rehashed", old="changed-by-passwd")
        found = store.get("alice")
        assert found is not None and found.hash == "rehashed"
    finally:
        store.close()


def test_a_failed_transaction_is_rolled_back_and_the_store_goes_on(tmp_path: Path) -> None:
    """A statement failing inside a transaction (here a trigger's abort, as a full disk
    would) leaves none open: the next create and delete work (before, every later BEGIN
    failed, 'cannot start a transaction within a transaction')."""
    store = AccountStore(tmp_path / "accounts.sqlite3")
    try:
        assert store.create(Account("alice", "alice", "h1", None))
        store._db.execute(
            "CREATE TEMP TRIGGER refuse BEFORE DELETE ON accounts"
            " BEGIN SELECT RAISE(ABORT, 'disk full, say'); END"
        )
        with pytest.raises(sqlite3.Error, match="disk full, say"):
            store.delete("alice")
        assert not store._db.in_transaction
        store._db.execute("DROP TRIGGER refuse")
        assert store.create(Account("bob", "bob", "h2", None))
        store.delete("alice")
        assert store.get("alice") is None and store.get("bob") is not None
    finally:
        store.close()


def test_a_server_operator_resets_a_forgotten_password(
    chat_server_factory: Factory, chat_client: Connect
) -> None:
    """/resetpass NICK: a server operator gives an account a new password, made up and
    shown to the operator alone; the old one no longer logs in, the account's sessions
    are no longer identified (one holding the nick is renamed); others get
    not_server_operator, an unknown nick no_account."""
    config = config_from_dict(
        {
            "server": {"plugins": ["moderation"]},
            "plugins": {"moderation": {"server_operators": ["root"]}},
        }
    )
    server = chat_server_factory(config=config, disable=["flood"])
    root = chat_client(server, "root")
    root.command("/register sesame-seed")
    alice = chat_client(server, "alice")
    alice.command(f"/register {PASSWORD}")
    bob = chat_client(server, "bob")
    bob.say("/resetpass alice")
    bob.expect("error", code="not_server_operator")
    root.say("/resetpass nobody")
    root.expect("error", code="no_account")
    root.say("/resetpass ALICE")
    reply = root.expect("reply", command="resetpass")
    password = reply["data"]["password"]
    assert reply["data"]["nick"] == "alice" and len(password) >= 16
    assert password in reply["text"] and "1 session(s) no longer identified" in reply["text"]
    text = (
        "the account alice was given a new password by a server operator (ask them for it): "
        "you are no longer identified"
    )
    alice.expect("notice", text=text)
    alice.expect("nick", old="alice")  # (holding the nick unidentified: renamed)
    assert password not in str(bob.sync()) + str(alice.sync())
    again = chat_client(server)
    again.send(type="hello", nick="alice", password=PASSWORD)
    again.expect("error", code="bad_password")
    chat_client(server).login("alice", password=password)
