"""The cluster plugin (docs/cluster.md): `chatkit serve --redis` processes on loopback
sharing a real redis-server (one per test session, on a free port, in a temporary
directory; the Redis-failure test starts one of its own)."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from argon2 import PasswordHasher
from prometheus_client.parser import text_string_to_metric_families

from chatkit import Config, Server, UsageError, skeleton
from chatkit.builtins.accounts.store import Account, AccountStore
from chatkit.builtins.cluster import _TAKE_OVER as TAKE_OVER_KEY
from chatkit.builtins.cluster import redact
from chatkit.builtins.moderation import ModerationStore, shared
from chatkit.builtins.moderation.shared import SharedModerationStore
from chatkit.builtins.moderation.store import FIRST_CLAIM
from chatkit.testing import ChatClient, run_server, wait_until

CHATKIT = str(Path(sys.executable).parent / "chatkit")
LEASE = 2.0  # seconds: short, so a lost node is noticed quickly
WAIT = 10.0  # seconds a test waits for a condition across nodes
POLL = 0.1  # seconds between two looks (each may be a /who)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server on a free port, keeping nothing on disk."""

    def __init__(
        self, directory: Path, port: int | None = None, password: str | None = None
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail(
                "needs redis-server on the PATH (apt-get install redis-server; .ci/run does)"
            )
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
            except OSError:
                return False

        wait_until(answers, WAIT, "redis-server to answer", POLL)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


class Node:
    """A `chatkit serve --redis URL` process with a short lease."""

    def __init__(
        self, url: str, directory: Path, *args: str, config_text: str = "", flag: bool = True
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "chatkit.toml"
        # (flag=False: the config's [server] plugins enable cluster, with the url here.)
        where = "" if flag else f'url = "{url}"\n'
        config.write_text(f"[plugins.cluster]\nlease = {LEASE}\n{where}{config_text}")
        self.log = directory / "stderr.log"
        command = [CHATKIT, "serve", "--port", "0", "--config", str(config)]
        command += ["--redis", url] if flag else []
        # Flood's limit would refuse the tests' polling of /who.
        command += ["--db", ":memory:", "--plugin", "stats", "--no-plugin", "flood", *args]
        with self.log.open("a") as err:
            self.proc = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            match = re.search(r"listening on (\S+):(\d+)", line)
            if match:
                self.address = (match.group(1), int(match.group(2)))
                break
        else:
            raise AssertionError(f"node did not start: {self.log.read_text()}")
        self.metrics: str | None = None
        """``/metrics``'s URL, with ``--metrics-port`` (the banner says it after the rest)."""
        if "--metrics-port" in args:
            for line in self.proc.stdout:
                match = re.search(r"metrics: (\S+)", line)
                if match:
                    self.metrics = match.group(1)
                    break

    def client(self, nick: str) -> ChatClient:
        client = ChatClient(self.address, timeout=10)
        client.login(nick)
        return client

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            self.proc.wait(timeout=15)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def ready(node: Node) -> tuple[int, str]:
    """`chatkit ping --ready` against ``node``: its exit status and what it said on
    standard error."""
    result = subprocess.run(
        [CHATKIT, "ping", "--ready", "--port", str(node.address[1])],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return result.returncode, result.stderr


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    started: list[Node] = []

    def start(url: str, *args: str, config_text: str = "", flag: bool = True) -> Node:
        node = Node(
            url, tmp_path / f"node{len(started)}", *args, config_text=config_text, flag=flag
        )
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop(signal.SIGKILL)


def metrics(url: str) -> dict[str, float]:
    """The ``chatkit_cluster_*`` samples of a node's ``/metrics``."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("chatkit_cluster_")
    }


def who(client: ChatClient, room: str = "#general") -> list[str]:
    client.send({"type": "say", "text": f"/who {room}"})
    nicks: list[str] = client.expect("reply", command="who")["data"]["nicks"]
    return nicks


def gone_room(client: ChatClient, room: str) -> bool:
    """Whether ``room`` has no members (``/who`` of it is ``no_such_room``)."""
    client.send({"type": "say", "text": f"/who {room}"})
    got = client.expect(lambda f: f.get("type") == "error" or f.get("command") == "who")
    return got.get("code") == "no_such_room"


def who_is(client: ChatClient, nicks: list[str]) -> Callable[[], bool]:
    """Whether ``client``'s ``/who`` lists exactly ``nicks`` (sorted)."""
    return lambda: sorted(who(client)) == nicks


def messages(client: ChatClient, count: int, **fields: Any) -> list[tuple[int, str]]:
    got = []
    for _ in range(count):
        frame = client.expect("message", **fields)
        got.append((frame["id"], frame["text"]))
    return got


def test_three_nodes_chat_as_one(redis_server: RedisServer, nodes: Callable[..., Node]) -> None:
    url = redis_server.url(1)
    a, b, c = nodes(url), nodes(url), nodes(url)
    alice, bob, carol = a.client("alice"), b.client("bob"), c.client("carol")
    for client in (alice, bob, carol):
        wait_until(
            who_is(client, ["alice", "bob", "carol"]),
            WAIT,
            "everyone in /who",
            POLL,
        )

    # Nicks are unique across the cluster, compared as locally (case, look-alike letters).
    late = ChatClient(b.address, timeout=10)
    late.send({"type": "hello", "nick": "ALICE"})
    late.expect("error", code="nick_taken")
    late.send({"type": "hello", "nick": "\u0430lice"})  # a Cyrillic a
    late.expect("error", code="nick_taken")
    bob.send({"type": "say", "text": "/nick Carol"})
    bob.expect("error", code="nick_taken")

    # Messages sent at once from three nodes arrive in one order everywhere.
    for i in range(10):
        alice.say(f"a{i}")
        bob.say(f"b{i}")
        carol.say(f"c{i}")
    seen = [messages(client, 30) for client in (alice, bob, carol)]
    assert seen[0] == seen[1] == seen[2]
    ids = [ident for ident, _ in seen[0]]
    assert ids == sorted(ids) and len(set(ids)) == 30
    assert [t for _, t in seen[0] if t.startswith("a")] == [f"a{i}" for i in range(10)]

    # Private messages reach a nick on another node, and come back to the sender.
    alice.send({"type": "say", "text": "/msg carol psst"})
    got = carol.expect("private", text="psst")
    assert got["from"] == "alice"
    assert alice.expect("private", text="psst")["id"] == got["id"]
    carol.send({"type": "say", "text": "/msg nobody hi"})
    carol.expect("error", code="no_such_nick")

    # Joins, leaves and nick changes cross nodes too.
    bob.send({"type": "say", "text": "/join #side"})
    bob.expect("join", room="#side", nick="bob")
    carol.send({"type": "say", "text": "/join #side"})
    bob.expect("join", room="#side", nick="carol")
    bob.send({"type": "say", "text": "/nick bobby"})
    carol.expect("nick", old="bob", new="bobby")
    alice.expect("nick", old="bob", new="bobby")
    wait_until(
        lambda: sorted(who(alice)) == ["alice", "bobby", "carol"], WAIT, "bobby in /who", POLL
    )
    alice.send({"type": "say", "text": "/rooms"})
    assert alice.expect("reply", command="rooms")["data"]["rooms"] == {"#general": 3, "#side": 2}
    carol.send({"type": "say", "text": "/part #side"})
    bob.expect("leave", room="#side", nick="carol")

    # History: a newcomer on any node is replayed the same messages, with the same ids.
    replays = []
    for node, nick in ((a, "dan"), (b, "erin"), (c, "fay")):
        client = node.client(nick)
        frames = client.sync()
        replays.append([(f["id"], f["text"]) for f in frames if f["type"] == "message"])
        client.send({"type": "say", "text": "/history"})
        pages = client.sync()
        replays.append([(f["id"], f["text"]) for f in pages if f["type"] == "message"])
    assert replays[0][-30:] == seen[0]
    assert all(replay == replays[0] for replay in replays)
    # A node that starts later catches up from the log: the same replay.
    d = nodes(url)
    client = d.client("gus")
    late_replay = [(f["id"], f["text"]) for f in client.sync() if f["type"] == "message"]
    assert late_replay == replays[0]


def test_a_join_during_traffic_from_another_node_misses_nothing(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """The join-replay guarantee across nodes: replay, then live, nothing lost or doubled."""
    url = redis_server.url(3)
    a, b = nodes(url), nodes(url)
    alice = a.client("alice")
    texts = [f"m{i}" for i in range(150)]
    sent: list[str] = []

    def talk() -> None:
        for text in texts:
            alice.say(text)
            sent.append(text)
            time.sleep(0.002)

    talker = threading.Thread(target=talk)
    talker.start()
    try:
        wait_until(lambda: len(sent) >= 20, WAIT, "traffic", POLL)
        dan = ChatClient(b.address, timeout=10)
        dan.login("dan", replay=500)
        got = [dan.expect("message")["text"]]
        while got[-1] != texts[-1]:
            got.append(dan.expect("message")["text"])
    finally:
        talker.join()
    assert got == texts


def test_topics_are_the_clusters(redis_server: RedisServer, nodes: Callable[..., Node]) -> None:
    """A topic set on one node reaches the room's members on every node, a room that is
    new on a node gets it, and so does a node that starts later; clearing it too. (And
    messages carry their sender's account to the other nodes.)"""
    url = redis_server.url(7)
    a, b = nodes(url), nodes(url)
    alice, bob = a.client("alice"), b.client("bob")
    wait_until(lambda: sorted(who(alice)) == ["alice", "bob"], WAIT, "both in /who", POLL)
    # An identified sender's account travels with its messages, as on one server.
    alice.send({"type": "say", "text": "/register correct-horse"})
    alice.expect("reply", command="register")
    alice.say("with my account")
    assert bob.expect("message", text="with my account")["account"] == "alice"

    alice.send({"type": "say", "text": "/topic plans for friday"})
    got = bob.expect("topic", room="#general")
    assert (got["topic"], got["nick"]) == ("plans for friday", "alice")
    bob.send({"type": "say", "text": "/topic"})
    assert bob.expect("reply", command="topic")["text"].startswith(
        "topic of #general: plans for friday (set by alice"
    )

    # A room with no member on b yet: its topic comes with the first one there.
    alice.send({"type": "say", "text": "/join #den"})
    alice.expect("join", room="#den", nick="alice")
    alice.send({"type": "say", "text": "/topic #den quiet please"})
    alice.expect("topic", room="#den")
    bob.send({"type": "say", "text": "/join #den"})
    bob.expect("join", room="#den", nick="bob")
    assert bob.expect("topic", room="#den")["topic"] == "quiet please"

    # A node started now knows them (from Redis), and clearing one reaches everyone.
    c = nodes(url)
    carol = c.client("carol")
    assert carol.expect("topic", room="#general")["topic"] == "plans for friday"
    bob.send({"type": "say", "text": "/topic #general -"})
    assert alice.expect("topic", room="#general")["topic"] == ""
    assert carol.expect("topic", room="#general")["topic"] == ""
    dan = c.client("dan")
    dan.send({"type": "say", "text": "/topic"})
    assert dan.expect("reply", command="topic")["text"] == "#general has no topic"


def login(node: Node, nick: str, password: str | None = None) -> ChatClient:
    """A client of ``node`` that sent its hello (with ``password``); read its answer."""
    client = ChatClient(node.address, timeout=10)
    hello: dict[str, Any] = {"type": "hello", "nick": nick}
    if password is not None:
        hello["password"] = password
    client.send(hello)
    return client


def test_accounts_are_the_clusters(
    redis_server: RedisServer, nodes: Callable[..., Node], tmp_path: Path
) -> None:
    """An account registered on one node is one on every node: its owner identifies on
    another, nobody takes the nick (or a look-alike) there without its password, a
    password changed on one node is the one everywhere, and an account dropped on one is
    gone everywhere (a session identified to it on another node is no longer identified,
    after either). A node's own accounts from before it joined are copied to Redis."""
    url = redis_server.url(8)
    redis.Redis.from_url(url).flushdb()
    own = tmp_path / "own.accounts.sqlite3"
    store = AccountStore(own)
    # argon2's hash of "old-password" (the plugin checks it with argon2-cffi).
    old_hash = PasswordHasher().hash("old-password")
    store.create(Account("oldtimer", "oldtimer", old_hash, None))
    store.close()
    b = nodes(url, config_text=f'[plugins.accounts]\ndb = "{own}"\n')  # the first: it seeds
    a = nodes(url)
    watch = b.client("watch")  # its /who lists every node's members

    def gone(nick: str) -> None:
        """Wait until ``nick``'s logout reached the other node (its nick is free)."""
        wait_until(lambda: nick not in who(watch), WAIT, f"{nick} gone", POLL)

    alice = a.client("alice")
    alice.command("/register correct-horse")
    alice.close()
    gone("alice")
    login(b, "alice").expect("error", code="nick_registered")
    login(b, "ALICE").expect("error", code="nick_registered")
    login(b, "alice", "wrong-horse").expect("error", code="bad_password")
    alice = login(b, "alice", "correct-horse")
    alice.expect("welcome")
    thief = a.client("thief")  # identified to alice's account on the other node
    thief.say("/identify alice correct-horse")
    thief.expect("account", nick="thief", account="alice")
    alice.say("/passwd correct-horse battery-staple")
    alice.expect("reply", command="passwd")
    text = "the account alice was given a new password: you are no longer identified"
    thief.expect("notice", text=text)
    thief.expect("account", nick="thief", account=None)
    bob = b.client("bob")
    bob.command("/register bobs-password")
    alice.close()
    gone("alice")

    login(a, "alice", "correct-horse").expect("error", code="bad_password")
    alice = login(a, "alice", "battery-staple")
    alice.expect("welcome")
    login(a, "bob").expect("error", code="nick_registered")
    carol = a.client("carol")
    carol.say("/nick b\u043eb")  # bob with a Cyrillic o: bob's too
    carol.expect("error", code="nick_registered")
    spy = b.client("spy")  # identified to alice's account on the other node
    spy.say("/identify alice battery-staple")
    spy.expect("account", nick="spy", account="alice")
    alice.say("/drop battery-staple")
    alice.expect("reply", command="drop")
    spy.expect("notice", text="the account alice was deleted: you are no longer identified")
    spy.expect("account", nick="spy", account=None)
    alice.close()
    gone("alice")
    login(b, "alice").expect("welcome")

    # The account b had on its own, before the cluster, is everyone's now: b was the
    # first to start. A node starting later does not bring its own.
    login(a, "oldtimer").expect("error", code="nick_registered")
    login(a, "oldtimer", "old-password").expect("welcome")
    late = tmp_path / "late.accounts.sqlite3"
    store = AccountStore(late)
    store.create(Account("latecomer", "latecomer", old_hash, None))
    store.close()
    c = nodes(url, config_text=f'[plugins.accounts]\ndb = "{late}"\n')
    login(c, "latecomer").expect("welcome")
    assert "not copied to the cluster" in c.log.read_text()


def test_identities_and_private_history_cross_nodes(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """A member's account is known on every node (joins carry it, /identify and /logout
    reach those who share a room), and private messages are in every node's history, by
    the accounts of both sides: a client sees its conversation from any node."""
    url = redis_server.url(10)
    redis.Redis.from_url(url).flushdb()
    a, b = nodes(url), nodes(url)
    alice, bob = a.client("alice"), b.client("bob")
    wait_until(lambda: sorted(who(alice)) == ["alice", "bob"], WAIT, "both in /who", POLL)
    alice.say("/register correct-horse")
    assert bob.expect("account", nick="alice")["account"] == "alice"
    bob.say("/register battery-staple")
    assert alice.expect("account", nick="bob")["account"] == "bob"
    alice.say("/join #den")
    alice.expect("join", room="#den", nick="alice")
    bob.say("/join #den")
    assert alice.expect("join", room="#den", nick="bob")["account"] == "bob"

    alice.say("/msg bob hello from a")
    bob.expect("private", text="hello from a")
    bob.say("/msg alice hello from b")
    alice.expect("private", text="hello from b")
    alice.say("/logout")
    assert bob.expect("account", nick="alice")["account"] is None
    alice.close()
    wait_until(lambda: "alice" not in who(bob), WAIT, "alice gone", POLL)
    # alice, back through the other node: the conversation is there (b applied the
    # log in order: both messages before the logout bob saw).
    again = ChatClient(b.address, timeout=10)
    again.login("alice", password="correct-horse")
    again.say("/history bob")
    texts = [f["text"] for f in again.sync() if f["type"] == "private"]
    assert texts == ["hello from a", "hello from b"]
    bob.send({"type": "history", "with": "alice"})
    assert [f["text"] for f in bob.sync() if f["type"] == "private"] == texts
    # alice deletes her account on b; who registers "alice" next, on a, sees none of it.
    again.say("/drop correct-horse")
    again.expect("reply", command="drop")
    again.close()
    # Gone from a, where the nick is taken next: bob, on b with her, sees it first.
    carol = a.client("carol")
    wait_until(lambda: "alice" not in who(carol), WAIT, "alice gone again, on a", POLL)
    mallory = a.client("alice")
    mallory.command("/register not-the-same-person")

    def seen() -> list[str]:
        mallory.send({"type": "history", "with": "bob"})
        return [f["text"] for f in mallory.sync() if f["type"] == "private"]

    wait_until(lambda: seen() == [], WAIT, "a's history forgot the deleted account", POLL)
    bob.send({"type": "history", "with": "alice"})
    assert [f["text"] for f in bob.sync() if f["type"] == "private"] == texts


def test_a_private_message_racing_its_recipients_rename_is_delivered_or_refused(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """ben renames back and forth on b while ann, on a, writes to "ben": each message is
    either delivered to him (under whichever nick he has) and echoed to ann, or refused
    to ann (no_such_nick), as on one server; never echoed and lost."""
    url = redis_server.url(15)
    redis.Redis.from_url(url).flushdb()
    a, b = nodes(url, "--no-plugin", "flood"), nodes(url, "--no-plugin", "flood")
    ann, ben = a.client("ann"), b.client("ben")
    wait_until(lambda: sorted(who(ann)) == ["ann", "ben"], WAIT, "both in /who", POLL)
    done = threading.Event()

    def rename() -> None:
        nick = "ben"
        while not done.is_set():
            nick = "rob" if nick == "ben" else "ben"
            ben.say(f"/nick {nick}")
            ben.expect("nick", new=nick)

    renamer = threading.Thread(target=rename)
    renamer.start()
    echoed: list[str] = []
    refused: list[str] = []
    try:
        for i in range(120):
            ann.say(f"/msg ben pm{i}")
            got = ann.expect(lambda f: f.get("type") in ("private", "error"))
            (echoed if got["type"] == "private" else refused).append(f"pm{i}")
            if got["type"] == "error":
                assert got["code"] == "no_such_nick", got
    finally:
        done.set()
        renamer.join(WAIT)
    assert echoed, "no message reached ben"

    def delivered() -> set[str]:
        ben.sync()
        return {f["text"] for f in ben.received if f["type"] == "private"}

    wait_until(lambda: set(echoed) <= delivered(), WAIT, "every echoed message delivered", POLL)
    assert not delivered() & set(refused)


def test_a_redis_that_lost_its_accounts_gets_them_back_from_the_nodes(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """Redis restarted without its data (here: emptied): each node, at its first look-up,
    copies back the accounts it knows, so nobody takes a registered nick; then
    registering goes on."""
    url = redis_server.url(11)
    redis.Redis.from_url(url).flushdb()
    a, b = nodes(url), nodes(url)
    alice, bob = a.client("alice"), b.client("bob")
    alice.command("/register correct-horse")
    bob.command("/register battery-staple")  # registered on b: a never looked it up
    redis.Redis.from_url(url).flushdb()
    mallory = a.client("mallory")  # a's look-up finds Redis empty: a copies alice back
    assert "had lost its accounts" in a.log.read_text()
    b.client("carol")  # and b copies bob back
    for node, nick in ((b, "alice"), (a, "bob")):  # each account is back, on every node
        refused = ChatClient(node.address, timeout=10)
        refused.send({"type": "hello", "nick": nick})
        refused.expect("error", code="nick_registered")
        refused.send({"type": "hello", "nick": nick, "password": "not-the-password"})
        refused.expect("error", code="bad_password")
    mallory.command("/register stolen-horse")


def test_a_node_no_one_logs_in_to_copies_its_accounts_back(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """Redis emptied, then a node started anew (it seeds Redis with its own, empty,
    accounts): a node that knew the accounts copies them back within about a second
    though nobody logs in to it, so nobody registers them on the new node."""
    url = redis_server.url(12)
    r = redis.Redis.from_url(url)
    r.flushdb()
    a = nodes(url)
    alice = a.client("alice")
    alice.command("/register correct-horse")
    alice.close()
    r.flushdb()
    b = nodes(url)  # the first node to start after the loss: it seeds Redis
    wait_until(lambda: r.hexists("chatkit:accounts", "alice"), WAIT, "alice copied back", POLL)
    thief = ChatClient(b.address, timeout=10)
    thief.send({"type": "hello", "nick": "alice"})
    thief.expect("error", code="nick_registered")
    assert "1 of the 1 this node knew copied back" in a.log.read_text()
    # (The tests' Redis keeps nothing on disk: each node said so as it started.)
    assert "keeps nothing on disk (appendonly no" in a.log.read_text()


def test_a_take_over_ticket_serves_its_own_claim_only(redis_server: RedisServer) -> None:
    """A claim that finds the nick another node's asks that node to give way (an evict
    entry) only with a ticket of its own: for that nick, made a moment ago, as the
    account the session proves now; a ticket left by a refused claim, or by an account
    since logged out of, asks nothing."""
    url = redis_server.url(13)
    r = redis.Redis.from_url(url, decode_responses=True)
    r.flushdb()
    config = Config(plugins=["cluster"])
    config.plugin_config["cluster"] = {"url": url, "node": "here"}
    with run_server(config=config) as server:
        plugin: Any = server.pluginmanager.get_plugin("cluster")
        bob = ChatClient(server.address)
        bob.login("bob")
        session = server.hub.find("bob")
        assert session is not None
        r.set(f"chatkit:nick:{skeleton('alice')}", "there:1", px=60_000)  # another node's
        entry = {"nick": "alice", "account": "alice", "how": "test", "regain": True}

        def evicts() -> int:
            entries: Any = r.xrange("chatkit:log")
            return len([f for _, f in entries if f.get("t") == "evict"])

        session.account = "alice"
        for ticket in (
            (skeleton("alice"), entry, time.monotonic() - 60),  # a refused claim's, old
            (skeleton("alice"), {**entry, "account": "carol"}, time.monotonic()),  # not it
        ):
            session.data[TAKE_OVER_KEY] = ticket
            assert plugin._take(session, "alice").code == "nick_taken"
        session.data[TAKE_OVER_KEY] = (skeleton("alice"), entry, time.monotonic())
        assert plugin._take(session, "alice").code == "nick_taken"  # (no node gave way)
        wait_until(lambda: evicts() == 1, WAIT, "the one evict entry", POLL)
        session.account = None


def test_an_evict_entry_read_long_after_it_was_written_is_ignored(
    redis_server: RedisServer,
) -> None:
    """An evict entry is acted on as it is read (the holder here is renamed), unless it
    was written long before (a node catching up after an outage): the login that asked
    is over, and the session holding the nick now may have every right to it."""
    url = redis_server.url(13)
    redis.Redis.from_url(url).flushdb()
    config = Config(plugins=["cluster"])
    config.plugin_config["cluster"] = {"url": url, "node": "here"}
    with run_server(config=config) as server:
        plugin: Any = server.pluginmanager.get_plugin("cluster")
        holder = ChatClient(server.address)
        holder.login("alice")  # unidentified: an evict would rename it
        data = {"nick": "alice", "account": "alice", "how": "logged in", "regain": True}
        old = f"{int(time.time() * 1000) - 60_000}-0"
        plugin._apply_one(old, "there", "evict", data)
        holder.sync()
        assert server.hub.find("alice") is not None  # a minute late: ignored
        now = f"{int(time.time() * 1000)}-0"
        plugin._apply_one(now, "there", "evict", data)
        holder.expect("nick", old="alice")


def test_accounts_two_nodes_know_are_all_copied_back(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """Two nodes know one account, one of them another too: after Redis lost them, the
    node copying back second finds the first one's copy there and goes on to the rest
    (it stopped at the first, and the other account was anyone's)."""
    url = redis_server.url(12)
    r = redis.Redis.from_url(url)
    r.flushdb()
    a, b = nodes(url), nodes(url)
    a.client("alice").command("/register correct-horse")
    login(b, "alice").expect("error", code="nick_registered")  # b knows alice now
    b.client("bob").command("/register battery-staple")
    r.flushdb()
    a.client("probe")  # a's look-up copies alice back first; b's look comes after
    wait_until(
        lambda: r.hexists("chatkit:accounts", "alice") and r.hexists("chatkit:accounts", "bob"),
        WAIT,
        "alice and bob copied back",
        POLL,
    )


def test_moderation_is_the_clusters(
    redis_server: RedisServer, nodes: Callable[..., Node], tmp_path: Path
) -> None:
    """Bans, mutes and flags set on one node hold on every node; announcements reach
    every node's members; /kick, /kill and /gline reach members of other nodes; /wall
    reaches everyone. A node's own bans from before it joined are the cluster's."""
    url = redis_server.url(9)
    redis.Redis.from_url(url).flushdb()
    own = tmp_path / "own.moderation.sqlite3"
    store = ModerationStore(own)
    store.add("bans", "#den", "troll!*@*")
    store.close()
    settings = '[plugins.moderation]\nserver_operators = ["root"]\n'
    a = nodes(url, "--plugin", "moderation", config_text=settings)
    early = a.client("early")
    early.say("/join #den")  # a reads (and caches) #den's bans: none yet
    early.expect("join", room="#den", nick="early")
    early.close()
    # b brings its file's bans to the cluster, and every node's cache starts afresh.
    b = nodes(url, "--plugin", "moderation", config_text=f'{settings}db = "{own}"\n')
    troll = a.client("troll")
    troll.say("/join #den")
    troll.expect("error", code="banned")
    troll.close()
    # troll's leave is a's to process: alice is the first in #general only after it.
    empty = ChatClient(a.address, timeout=10)
    empty.login("empty", room="#probe")
    wait_until(lambda: gone_room(empty, "#general"), WAIT, "troll gone", POLL)
    empty.close()
    alice = a.client("alice")  # the first in #general: its operator
    alice.expect("notice", text_contains="you are an operator of #general")
    # b must know of alice before its clients join #general, or the first of them is
    # its first member there too (and an operator): one looks from another room.
    probe = ChatClient(b.address, timeout=10)
    probe.login("probe", room="#probe")
    wait_until(lambda: who(probe) == ["alice"], WAIT, "b knows alice", POLL)
    probe.close()
    bob, mallory = b.client("bob"), b.client("mallory")
    wait_until(lambda: sorted(who(alice)) == ["alice", "bob", "mallory"], WAIT, "all in", POLL)
    bob.say("before the mute")  # b reads (and caches) #general's mutes and flags
    alice.expect("message", text="before the mute")

    alice.say("/ban mallory")
    assert bob.expect("notice", mode="+b")["text"] == "alice banned mallory!*@*"
    mallory.say("/part #general")
    mallory.expect("leave", nick="mallory")
    mallory.say("/join #general")
    mallory.expect("error", code="banned")
    bob.send(type="modes", room="#general")  # who set it: the cluster's, on every node
    assert bob.expect("modes")["set_by"]["bans"]["mallory!*@*"]["nick"] == "alice"

    alice.say("/mute bob")
    bob.expect("notice", mode="+q")
    bob.say("muted now")
    bob.expect("error", code="muted")
    # Muted, its away message is not told in #general, on any node.
    bob.say("/away BUY CHEAP STUFF")
    bob.expect("reply", command="away")
    alice.say("/unmute bob")
    bob.expect("notice", mode="-q")
    bob.say("/away back soon")
    bob.expect("reply", command="away")
    assert alice.expect("away", nick="bob")["text"] == "back soon"  # the first told
    alice.say("/mute bob")
    bob.expect("notice", mode="+q")
    alice.say("/moderated on")
    bob.expect("notice", text_contains="moderated")
    alice.say("/unmute bob")
    bob.expect("notice", mode="-q")
    bob.say("moderated still")
    bob.expect("error", code="moderated")
    # An operator of another node's member: by its account, so it must be identified.
    alice.say("/op mallory")
    alice.expect("error", code="not_identified")
    bob.say("/register bobs-password")
    alice.expect("account", nick="bob")
    alice.say("/op bob")
    bob.expect("notice", mode="+o")
    bob.say("an operator speaks")  # in a moderated room, operators may
    alice.expect("message", text="an operator speaks")
    alice.say("/deop bob")
    bob.expect("notice", mode="-o")
    bob.say("not any more")
    bob.expect("error", code="moderated")
    # Operator rights go with a deleted account, in the cluster's sets.
    alice.say("/op bob")
    bob.expect("notice", mode="+o")
    ops = redis.Redis.from_url(url, decode_responses=True)
    assert "bob" in ops.smembers("chatkit:moderation:ops:#general")
    bob.say("/drop bobs-password")
    bob.expect("reply", command="drop")
    assert "bob" not in ops.smembers("chatkit:moderation:ops:#general")

    alice.say("/kick bob enough")
    got = bob.expect("leave", nick="bob")
    assert got["by"] == "alice" and got["reason"] == "kicked by alice: enough"
    assert alice.expect("leave", nick="bob")["by"] == "alice"  # on the other node too
    alice.say("/kick nobody")
    alice.expect("error", code="no_such_nick")
    # An invitation to another node's member: it hears of it, and it lets it in once.
    alice.say("/join #vip")
    alice.expect("notice", text="you are an operator of #vip")
    alice.say("/inviteonly on", room="#vip")
    alice.expect("notice", text_contains="invite-only")
    alice.say("/invite mallory #vip")
    mallory.expect("private", text="alice invites you to #vip: /join #vip")
    mallory.say("/join #vip")
    mallory.expect("join", room="#vip", nick="mallory")
    mallory.say("/part #vip")
    mallory.expect("leave", room="#vip", nick="mallory")
    mallory.say("/join #vip")
    mallory.expect("error", code="invite_only")

    root = a.client("root")
    root.command("/register root-password")
    root.say("/wall maintenance at noon")
    bob.expect("notice", text="[root to everyone] maintenance at noon")
    root.say("/kill mallory bye")
    mallory.expect("notice", text="killed by root: bye")
    mallory.wait_closed()
    root.say("/gline bob")
    assert "disconnected here: nobody" in root.expect("reply", command="gline")["text"]
    bob.expect("notice", text_contains="banned from this server by root")
    bob.wait_closed()
    login(b, "bob").expect("error", code="banned")


def test_ids_stay_unique_past_a_thousand_entries_in_one_millisecond(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """A message id is MS * 1000 + SEQ of its log entry: the log never gives a SEQ of 1000
    or more (XADD's own counter would), it moves on to the next millisecond."""
    url = redis_server.url(6)
    # The log's last entry: the 999th of a millisecond a minute ahead (a clock gone back,
    # or a burst), so the next entries land in that millisecond and beyond.
    future = (time.time_ns() // 1_000_000 + 60_000) * 1000 + 997
    r = redis.Redis.from_url(url, decode_responses=True)
    r.flushdb()
    r.xadd("chatkit:log", {"n": "seed", "t": "noop", "d": "{}"}, id=f"{future // 1000}-997")
    a = nodes(url)
    alice = a.client("alice")
    for i in range(4):
        alice.say(f"m{i}")
    got = messages(alice, 4)
    assert [text for _, text in got] == ["m0", "m1", "m2", "m3"]
    ids = [ident for ident, _ in got]
    assert ids == sorted(ids) and len(set(ids)) == 4 and ids[0] > future
    assert all(ident % 1000 <= 999 for ident in ids)
    assert ids[-1] // 1000 == future // 1000 + 1  # 999 was the last of its millisecond
    entries: list[tuple[str, dict[str, str]]] = r.xrange("chatkit:log")  # type: ignore[assignment]
    assert all(int(entry_id.split("-")[1]) <= 999 for entry_id, _ in entries)
    r.close()


def test_a_lost_node_leaves_and_comes_back(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    url = redis_server.url(2)
    a, b, c = nodes(url), nodes(url), nodes(url)
    xavier, yara, zed = a.client("xavier"), b.client("yara"), c.client("zed")
    for client in (xavier, yara, zed):
        wait_until(
            who_is(client, ["xavier", "yara", "zed"]),
            WAIT,
            "everyone in /who",
            POLL,
        )

    c.stop(signal.SIGKILL)
    xavier.expect("leave", nick="zed", reason="node lost", timeout=LEASE * 3)
    yara.expect("leave", nick="zed", reason="node lost", timeout=LEASE * 3)
    assert sorted(who(yara)) == ["xavier", "yara"]
    xavier.say("still here")
    yara.expect("message", text="still here")

    # A node started again: its client takes its nick back once the lease let it go.
    c2 = nodes(url)

    def relogin() -> ChatClient | None:
        client = ChatClient(c2.address, timeout=10)
        client.send({"type": "hello", "nick": "zed"})
        frame = client.expect(lambda f: f["type"] in ("welcome", "error"))
        if frame["type"] == "error":
            assert frame["code"] == "nick_taken"
            client.close()
            return None
        client.expect("join", nick="zed")
        return client

    zed = wait_until(relogin, LEASE * 3, "zed's nick to be free", POLL)
    xavier.expect("join", nick="zed")
    zed.say("back")
    xavier.expect("message", text="back")
    yara.expect("message", text="back")
    wait_until(
        lambda: sorted(who(zed)) == ["xavier", "yara", "zed"], WAIT, "everyone in /who", POLL
    )

    # A node stopped cleanly: its members leave at once, as from one server.
    b.stop()
    xavier.expect("leave", nick="yara", reason="server shutdown", timeout=WAIT)
    # (c2 applies the cluster's log on its own thread: maybe a moment after a's.)
    wait_until(who_is(zed, ["xavier", "zed"]), WAIT, "yara gone from c2's /who", POLL)


def test_a_message_redis_did_not_answer_for_is_told_local_before_its_echo(
    tmp_path: Path, nodes: Callable[..., Node]
) -> None:
    """Redis stops answering (SIGSTOP) with a message in flight: after `timeout` it is
    delivered on its own node only, and its sender is told so before the echo, not
    left to guess from a later "lost the connection"."""
    (tmp_path / "own-redis").mkdir()
    stalled = RedisServer(tmp_path / "own-redis")
    try:
        a = nodes(stalled.url(), config_text="timeout = 0.5\n")
        ann = a.client("ann")
        assert stalled.proc is not None
        stalled.proc.send_signal(signal.SIGSTOP)
        try:
            ann.say("in flight")
            echo = ann.expect("message", text="in flight")
            before = ann.received[: ann.received.index(echo)]
            told = "this server's members get it, the others may not"
            assert any(told in f.get("text", "") for f in before if f["type"] == "notice")
        finally:
            stalled.proc.send_signal(signal.SIGCONT)
    finally:
        stalled.kill()


def test_redis_lost_and_back(tmp_path: Path, nodes: Callable[..., Node]) -> None:
    (tmp_path / "own-redis").mkdir()
    redis = RedisServer(tmp_path / "own-redis")
    try:
        a = nodes(redis.url(), "--metrics-port", "0", "--plugin", "moderation")
        b = nodes(redis.url())
        ann, ben = a.client("ann"), b.client("ben")  # ann, first in #general, its operator
        wait_until(lambda: sorted(who(ann)) == ["ann", "ben"], WAIT, "both in /who", POLL)
        assert a.metrics is not None
        cluster = metrics(a.metrics)
        assert cluster["chatkit_cluster_redis_up"] == 1 and cluster["chatkit_cluster_nodes"] == 2
        assert cluster["chatkit_cluster_remote_members"] == 1
        assert ready(a) == (0, "")  # connected: ready for new clients
        ann.say("before")
        ben.expect("message", text="before")
        ann.command("/register correct-horse")
        ben.say("/join #den")
        # ben in first: two nodes' joins meet in the log in either order, and a member
        # who comes later learns of those before it from the member list, not a join.
        ben.expect("join", room="#den", nick="ben")
        ann.say("/join #den")
        ben.expect("join", room="#den", nick="ann")
        ben.say("/topic #den kept across")
        assert ann.expect("topic", room="#den")["topic"] == "kept across"
        for client in (ann, ben):  # back to #general, the room the rest is about
            client.say("/join #general")
            client.expect("reply", command="join")

        redis.kill()
        ann.expect("notice", text_contains="lost the connection", timeout=LEASE * 3)
        ben.expect("notice", text_contains="lost the connection", timeout=LEASE * 3)
        # The node keeps serving its own members.
        ann.say("alone")
        ann.expect("message", text="alone")
        ann.send({"type": "say", "text": "/stats"})
        stats = ann.expect("reply", command="stats")["data"]["cluster"]
        assert stats["redis"] == "down" and stats["outages"] == 1
        assert stats["local_only_messages"] == 1
        cluster = metrics(a.metrics)  # /metrics reads the same counters
        assert cluster["chatkit_cluster_redis_up"] == 0
        assert cluster["chatkit_cluster_outages_total"] == 1
        assert cluster["chatkit_cluster_local_only_messages_total"] == 1
        # Alive (a plain ping), but not ready: a load balancer sends new clients elsewhere.
        # (Once the answer of the ping --ready above, kept up to READY_EVERY, is stale.)
        _code, said = wait_until(lambda: (r := ready(a))[0] == 7 and r, WAIT, "not ready", POLL)
        assert "cluster: no connection to Redis for" in said, said
        seconds = re.compile(r"\d+ s")  # (a second may pass between the two)
        assert [seconds.sub("N s", p) for p in ann.ready()] == [
            seconds.sub("N s", said.splitlines()[1].strip())
        ]
        assert (
            subprocess.run(
                [CHATKIT, "ping", "--port", str(a.address[1])], capture_output=True, timeout=30
            ).returncode
            == 0
        )
        # Accounts answer from what the node read (ann's is known here); changes wait.
        dan = a.client("dan")
        dan.say("/register dans-password")
        dan.expect("error", code="cluster_unavailable")
        dan.say("/identify ann wrong-horse")
        dan.expect("error", code="bad_password")
        dan.close()
        ann.say("/ban mallory")  # moderation: the same
        ann.expect("error", code="cluster_unavailable")
        # A topic set meanwhile reaches the other node once Redis is back.
        ann.send({"type": "say", "text": "/topic #general set while apart"})
        ann.expect("topic", topic="set while apart")

        redis.start()
        ann.expect("notice", text_contains="again", timeout=10)
        ben.expect("notice", text_contains="again", timeout=10)
        wait_until(lambda: ready(a) == (0, ""), WAIT, "a ready again", POLL)
        wait_until(lambda: sorted(who(ben)) == ["ann", "ben"], WAIT, "both in /who again", POLL)
        ann.say("after")
        ben.expect("message", text="after")
        ann.expect("message", text="after")
        # Nothing came twice, and ben never saw what ann's node said alone.
        texts = [f.get("text") for f in ben.received if f["type"] == "message"]
        assert texts == ["before", "after"]
        texts = [f.get("text") for f in ann.received if f["type"] == "message"]
        assert texts == ["before", "alone", "after"]
        # The topic was logged when ann's node came back, before "after"; ann saw it once.
        for client in (ben, ann):
            topics = [
                f["topic"]
                for f in client.received
                if f["type"] == "topic" and f["room"] == "#general"
            ]
            assert topics == ["set while apart"]
        # The nick is still ann's across the cluster: taken (a's claim), or registered
        # (once a copied ann's account back, within MARK_EVERY of Redis answering).
        late = ChatClient(b.address, timeout=10)
        late.send({"type": "hello", "nick": "ann"})
        assert late.expect("error")["code"] in ("nick_taken", "nick_registered")
        # This Redis restarted empty: the running nodes put back the topics and accounts
        # they knew, so a node that starts now has them too.
        assert "topics put back" in a.log.read_text()
        probes = iter(range(1000))

        def ann_copied_back() -> bool:
            # a's look at the marker (MARK_EVERY), or its first look-up since Redis
            # answers again (after RETRY_EVERY), copies back the accounts it knows: ann's.
            a.client(f"eve{next(probes)}").close()
            return "1 of the 1 this node knew copied back" in a.log.read_text()

        wait_until(ann_copied_back, WAIT, "a to copy ann's account back", POLL)
        c = nodes(redis.url())
        carl = c.client("carl")
        carl.say("/join #den")
        assert carl.expect("topic", room="#den")["topic"] == "kept across"
        carl.say("/identify ann wrong-horse")
        carl.expect("error", code="bad_password")
    finally:
        redis.kill()


def test_away_crosses_nodes(redis_server: RedisServer, nodes: Callable[..., Node]) -> None:
    """Going away and coming back on one node is an away frame on the others, /who and
    /msg there show it, and a join while away says so, as on one node."""
    url = redis_server.url(6)
    redis.Redis.from_url(url).flushdb()
    a, b = nodes(url), nodes(url)
    ann, bob = a.client("ann"), b.client("bob")
    wait_until(lambda: sorted(who(bob)) == ["ann", "bob"], WAIT, "ann on node b", POLL)
    ann.say("/away lunch")
    assert bob.expect("away") == {"type": "away", "nick": "ann", "text": "lunch"}
    bob.say("/who")
    assert bob.expect("reply", command="who")["data"]["away"] == {"ann": "lunch"}
    bob.say("/msg ann are you there?")
    assert bob.expect("reply", command="msg")["data"] == {"nick": "ann", "away": "lunch"}
    bob.say("/join #side")
    bob.expect("join", nick="bob", room="#side")
    ann.say("/join #side")
    assert bob.expect("join", nick="ann", room="#side")["away"] == "lunch"
    ann.say("/away")
    assert bob.expect("away") == {"type": "away", "nick": "ann", "text": None}
    assert not [f for f in bob.sync() if f["type"] == "away"]  # once, not once a room
    ann.say("/away gone")
    bob.expect("away", text="gone")
    c = nodes(url)  # a node started now reads it from the members' hash
    carol = c.client("carol")
    wait_until(lambda: "ann" in who(carol), WAIT, "ann on node c", POLL)
    carol.say("/who")
    assert carol.expect("reply", command="who")["data"]["away"] == {"ann": "gone"}


def test_a_quit_on_another_node_is_one_leave_naming_every_room(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """A member of two rooms quitting on another node is one leave naming both (an IRC
    client's QUIT), as on its own node, not a leave per room (IRC clients saw PARTs)."""
    url = redis_server.url(9)
    redis.Redis.from_url(url).flushdb()
    a, b = nodes(url), nodes(url)
    ann, bob = a.client("ann"), b.client("bob")
    for client in (ann, bob):
        client.say("/join #ra")
        client.expect("join", room="#ra", nick=client.nick)
        client.say("/join #rb")
        client.expect("join", room="#rb", nick=client.nick)
    wait_until(lambda: sorted(who(ann, "#rb")) == ["ann", "bob"], WAIT, "bob in #rb", POLL)
    bob.say("/quit bye")
    leave = ann.expect("leave", nick="bob")
    assert sorted(leave["rooms"]) == ["#general", "#ra", "#rb"]
    assert leave["reason"] == "quit: bye"
    assert not [f for f in ann.sync() if f["type"] == "leave"]


def test_a_message_confirmed_late_is_in_every_nodes_history_under_one_id(
    tmp_path: Path, nodes: Callable[..., Node]
) -> None:
    """A message whose sender's node stopped waiting for Redis (``timeout``) is delivered
    there at once; when Redis logs it after all, every node's history holds it under
    the log's id, its sender's node's too (it was left out there)."""
    (tmp_path / "own-redis").mkdir()
    server = RedisServer(tmp_path / "own-redis")
    try:
        a = nodes(server.url(), config_text="timeout = 0.3\n")
        b = nodes(server.url())
        ann, ben = a.client("ann"), b.client("ben")
        wait_until(lambda: sorted(who(ann)) == ["ann", "ben"], WAIT, "both in /who", POLL)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        try:
            ann.say("said while Redis stalled")
            ann.expect("notice", text_contains="did not confirm")
            ann.expect("message", text="said while Redis stalled")
        finally:
            server.proc.send_signal(signal.SIGCONT)
        logged = ben.expect("message", text="said while Redis stalled")

        looks = itertools.count()

        def replayed() -> list[tuple[int, str]]:
            late = a.client(f"late{next(looks)}")
            late.say("/history 5")
            frames = late.sync()
            late.close()
            return [(f["id"], f["text"]) for f in frames if f["type"] == "message"]

        wait_until(
            lambda: (logged["id"], "said while Redis stalled") in replayed(),
            WAIT,
            "the message in a's history under the log's id",
            POLL,
        )
    finally:
        server.kill()


class Proxy:
    """A TCP proxy to a port, for one node's way to Redis: :meth:`cut` closes every
    connection and refuses new ones (a partition of that node alone); :meth:`mend`
    takes them again."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.open = True
        self.socks: list[socket.socket] = []
        self.lock = threading.Lock()  # guards socks and open (accept and pump threads)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                with self.lock:
                    if not self.open:
                        client.close()
                        continue
                    upstream = socket.create_connection(("127.0.0.1", self.target))
                    self.socks += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            self.open = False
            for sock in self.socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self.socks = []

    def mend(self) -> None:
        with self.lock:
            self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_a_node_back_from_a_partition_announces_each_member_once(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """A node cut off from Redis while another's member joined a room and renamed:
    back, its members see that member join once, under its nick now; the log's join
    and rename from before, which the members it read already hold, are not applied
    again (they saw it join twice, once under the old nick, then the rename)."""
    url = redis_server.url(8)
    redis.Redis.from_url(url).flushdb()
    proxy = Proxy(redis_server.port)
    try:
        a = nodes(f"redis://127.0.0.1:{proxy.port}/8")
        b = nodes(url)
        watcher = a.client("watcher")
        watcher.say("/join #x")
        watcher.expect("join", nick="watcher", room="#x")
        proxy.cut()
        watcher.expect("notice", text_contains="lost the connection", timeout=LEASE * 3)
        mover = b.client("prp")
        mover.say("/join #x")
        mover.expect("join", nick="prp", room="#x")
        mover.say("/nick prq")
        mover.expect("nick", new="prq")
        mover.say("said while a was away")
        mover.expect("message", text="said while a was away")
        proxy.mend()
        frames: list[dict[str, Any]] = []

        def caught_up() -> bool:
            frames.extend(watcher.sync())
            return any(f.get("text") == "said while a was away" for f in frames)

        wait_until(caught_up, WAIT, "a back, with what was said meanwhile", POLL)
        joins = [f["nick"] for f in frames if f["type"] == "join" and f.get("room") == "#x"]
        assert joins == ["prq"], frames
        assert not [f for f in frames if f["type"] == "nick"], frames
        assert sorted(who(watcher, "#x")) == ["prq", "watcher"]
    finally:
        proxy.close()


def test_a_node_with_moderation_stops_without_a_traceback(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """SIGTERM: moderation stops listening to the cluster's Redis before the cluster
    plugin closes its client (the listener's thread died on the closed connection)."""
    url = redis_server.url(10)
    redis.Redis.from_url(url).flushdb()
    node = nodes(url, "--plugin", "moderation")
    clients = [node.client(nick) for nick in ("ann", "bob", "cat")]
    clients[0].say("/ban mallory")
    clients[0].expect("notice", mode="+b")
    node.stop()
    assert node.proc.returncode == 0
    assert "Traceback" not in node.log.read_text()


def test_a_nick_taken_again_at_once_on_its_node_keeps_its_key(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """A nick that quits and logs in again at once on the same node keeps its key: the
    quit's give-back, run after the new login's claim, freed the key, and another node
    then gave the nick to someone else (5 rounds in 20)."""
    url = redis_server.url(11)
    redis.Redis.from_url(url).flushdb()
    a, b = nodes(url), nodes(url)
    watcher = b.client("watcher")
    for _ in range(8):
        first = a.client("xq")
        watcher.expect("join", nick="xq")
        first.say("/quit")
        first.wait_closed()
        again = a.client("xq")
        watcher.expect("leave", nick="xq")  # (the quit's entry, and its give-back, went)
        watcher.expect("join", nick="xq")
        other = ChatClient(b.address, timeout=10)
        other.send(type="hello", nick="xq")
        other.expect("error", code="nick_taken")
        other.close()
        again.close()
        watcher.expect("leave", nick="xq")


def test_an_identify_that_takes_a_nick_back_keeps_its_key(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """/identify NICK PASSWORD taking the nick from an unidentified holder on its node
    (grace) leaves the nick's key claimed: another node refuses the nick, password or
    not (it was welcomed there too, for a heartbeat)."""
    url = redis_server.url(7)
    redis.Redis.from_url(url).flushdb()
    grace = "\n[plugins.accounts]\ngrace = 30\n"
    a, b = nodes(url, config_text=grace), nodes(url, config_text=grace)
    owner = a.client("alice")
    owner.command("/register sesame-seed")
    owner.say("/quit")
    owner.wait_closed()
    squatter = a.client("alice")  # (unidentified: grace)
    guest = a.client("guest")
    guest.say("/identify alice sesame-seed")
    guest.expect("nick", old="guest", new="alice")
    squatter.expect("nick", old="alice")
    other = ChatClient(b.address, timeout=10)
    other.send(type="hello", nick="alice")  # (with the password it takes the nick over)
    other.expect("error", code="nick_taken")
    other.close()


def test_a_password_takes_a_nick_over_from_another_node(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """A login with the account's password (and /regain) takes the nick from a session
    on another node as on its own: an unidentified holder (grace), or a session of the
    account's own (a connection that dropped); /identify leaves the account's own
    session its nick; a new password renames an unidentified holder everywhere."""
    url = redis_server.url(6)
    redis.Redis.from_url(url).flushdb()
    grace = "\n[plugins.accounts]\ngrace = 30\n"
    a, b = nodes(url, config_text=grace), nodes(url, config_text=grace)
    watch = b.client("watch")

    def on_a(nick: str) -> None:
        wait_until(lambda: nick in who(watch), WAIT, f"{nick} on a", POLL)

    owner = a.client("alice")
    owner.command("/register sesame-seed")
    # Its connection dropped (it reads nothing more): its login on b takes the nick.
    again = login(b, "alice", "sesame-seed")
    assert again.expect("welcome")["nick"] == "alice"
    owner.expect("notice", text="alice logged in with its password: you are renamed")
    owner.expect("nick", old="alice")
    again.close()
    # Gone as node a sees it: a learns of b's leave through the log after b itself,
    # and a login on a in between met nick_taken (a flaky failure in clean-clone runs).
    wait_until(lambda: "alice" not in who(owner), WAIT, "alice gone from a", POLL)
    squatter = a.client("alice")  # unidentified: grace
    on_a("alice")
    guest = b.client("guest")
    guest.say("/regain alice sesame-seed")
    guest.expect("nick", old="guest", new="alice")
    squatter.expect("nick", old="alice")
    mine = a.client("other")
    mine.say("/identify alice sesame-seed")  # the account's own session keeps it
    reply = mine.expect("reply", command="identify")
    assert "you keep the nick other" in reply["text"]
    guest.say("/quit")
    guest.wait_closed()
    wait_until(lambda: "alice" not in who(watch), WAIT, "alice gone", POLL)
    holder = b.client("alice")  # unidentified again (grace), on the other node
    mine.say("/passwd sesame-seed new-sesame")
    mine.expect("reply", command="passwd")
    holder.expect("nick", old="alice")
    third = login(b, "alice", "new-sesame")
    assert third.expect("welcome")["nick"] == "alice"


def test_a_nick_taken_on_two_nodes_while_redis_was_away_is_one_conflict(
    tmp_path: Path, nodes: Callable[..., Node]
) -> None:
    """Two nodes each let a ``cat`` log in while Redis is away (nicks are unique per
    node then); once it is back, the conflict is counted and logged once, and the
    ``cat`` whose node did not get the nick's key is renamed a guest, told why: a
    private message to ``cat`` reaches one of them (it reached both)."""
    (tmp_path / "own-redis").mkdir()
    redis_server = RedisServer(tmp_path / "own-redis")
    try:
        a, b = nodes(redis_server.url()), nodes(redis_server.url())
        watch_a, watch_b, cat_b = a.client("watcher"), b.client("watcher_b"), b.client("cat")
        redis_server.kill()
        for client in (watch_a, watch_b):
            client.expect("notice", text_contains="lost the connection", timeout=LEASE * 3)
        cat_a = a.client("cat")
        redis_server.start()
        for client in (watch_a, watch_b):
            client.expect("notice", text_contains="again", timeout=10)

        def conflicts() -> int:
            total = 0
            for client in (watch_a, watch_b):
                client.send({"type": "say", "text": "/stats"})
                total += client.expect("reply", command="stats")["data"]["cluster"][
                    "nick_conflicts"
                ]
            return total

        wait_until(lambda: conflicts() == 1, WAIT, "the conflict counted", POLL)

        def cats() -> list[str]:
            return sorted(n for n in who(watch_a) if n == "cat" or n.startswith("Guest"))

        wait_until(
            lambda: len(found := cats()) == 2 and found[0].startswith("Guest"),
            WAIT,
            "one cat renamed",
            POLL,
        )
        told = [
            c
            for c in (cat_a, cat_b)
            if any("you are renamed" in str(f.get("text")) for f in c.sync())
        ]
        assert len(told) == 1
        (kept,) = [c for c in (cat_a, cat_b) if c not in told]
        watch_a.say("/msg cat psst")
        assert kept.expect("private", text="psst")["to"] == "cat"
        assert not [f for f in told[0].sync() if f["type"] == "private"]
        # Three heartbeats of both nodes later (lease / 4 apart), still one.
        r = redis.Redis(port=redis_server.port, decode_responses=True)
        seen: dict[str, list[float]] = {}

        def beaten_thrice() -> bool:
            beats = cast(list[tuple[str, float]], r.zrange("chatkit:nodes", 0, -1, withscores=True))
            for node, score in beats:
                if score not in seen.setdefault(node, []):
                    seen[node].append(score)
            return len(seen) == 2 and all(len(scores) > 3 for scores in seen.values())

        wait_until(beaten_thrice, WAIT, "three heartbeats", POLL)
        assert conflicts() == 1
        logs = a.log.read_text() + b.log.read_text()
        said = logs.count("taken on another node") + logs.count("held by another node")
        assert said == 1, logs
        r.close()
        for client in (watch_a, watch_b, cat_a, cat_b):
            client.close()
    finally:
        redis_server.kill()


def test_redis_killed_and_restarted_during_traffic(
    tmp_path: Path, nodes: Callable[..., Node]
) -> None:
    """Messages sent while Redis dies and comes back: each reaches its sender's node once,
    in order; the other node gets those that went through Redis, once each, in order."""
    (tmp_path / "own-redis").mkdir()
    redis = RedisServer(tmp_path / "own-redis")
    try:
        a, b = nodes(redis.url()), nodes(redis.url())
        ann, ben = a.client("ann"), b.client("ben")
        wait_until(lambda: sorted(who(ann)) == ["ann", "ben"], WAIT, "both in /who", POLL)
        sent: list[str] = []
        stop = threading.Event()

        def talk() -> None:
            while not stop.is_set():
                text = f"t{len(sent)}"
                ann.say(text)
                sent.append(text)
                time.sleep(0.01)

        talker = threading.Thread(target=talk)
        talker.start()
        try:
            ben.expect("message", text="t19")
            redis.kill()
            wait_until(lambda: len(sent) >= 60, WAIT, "traffic while Redis is down", POLL)
            redis.start()
            ben.expect("notice", text_contains="again", timeout=10)
            ann.expect("notice", text_contains="again", timeout=10)
            mark = len(sent)  # from here on, every message goes through Redis
            wait_until(lambda: len(sent) >= mark + 20, WAIT, "traffic after", POLL)
        finally:
            stop.set()
            talker.join()
        ann.say("end")
        ben.expect("message", text="end")
        ann.expect("message", text="end")
        mine = [f["text"] for f in ann.received if f["type"] == "message"]
        assert mine == [*sent, "end"]
        theirs = [f["text"] for f in ben.received if f["type"] == "message"]
        assert len(set(theirs)) == len(theirs)
        order = {text: i for i, text in enumerate([*sent, "end"])}
        assert [order[t] for t in theirs] == sorted(order[t] for t in theirs)
        assert theirs[:20] == sent[:20]  # before Redis died, everything
        after = [*sent[mark:], "end"]
        assert theirs[-len(after) :] == after  # after it came back, everything
    finally:
        redis.kill()


def test_irc_clients_see_every_node(redis_server: RedisServer, nodes: Callable[..., Node]) -> None:
    """On the IRC face: the names list of one's own JOIN, WHO, and PRIVMSG across nodes."""
    url = redis_server.url(5)
    a, b = nodes(url), nodes(url, "--irc-port", "0")
    assert b.proc.stdout is not None
    irc_address = None
    for line in b.proc.stdout:
        match = re.search(r"IRC: irc://(\S+):(\d+)", line)
        if match:
            irc_address = (match.group(1), int(match.group(2)))
            break
    assert irc_address is not None
    alice = a.client("alice")
    probe = b.client("probe")
    wait_until(lambda: "alice" in who(probe), WAIT, "alice on node b", POLL)
    with socket.create_connection(irc_address, timeout=10) as irc:
        irc.sendall(b"NICK bob\r\nUSER bob 0 * :bob\r\nJOIN #general\r\n")
        seen = b""

        def irc_saw(text: bytes) -> bool:
            nonlocal seen
            while text not in seen:
                chunk = irc.recv(65536)
                if not chunk:
                    return False
                seen += chunk
            return True

        assert irc_saw(b"366 bob #general")
        names = next(line for line in seen.split(b"\r\n") if b" 353 bob " in line)
        assert b"alice" in names.split(b":")[-1].split()
        alice.expect("join", nick="bob")
        alice.say("hello irc")
        assert irc_saw(b"PRIVMSG #general :hello irc")
        irc.sendall(b"PRIVMSG alice :psst\r\n")
        assert alice.expect("private", text="psst")["from"] == "bob"
        # What kind of message it is crosses nodes too: an action, a notice.
        irc.sendall(b"PRIVMSG #general :\x01ACTION waves\x01\r\nNOTICE #general :fyi\r\n")
        assert alice.expect("message", text="waves").get("action") is True
        assert alice.expect("message", text="fyi").get("notice") is True
        alice.say("/me bows")
        assert irc_saw(b"PRIVMSG #general :\x01ACTION bows\x01")
        # WHOIS, ISON, USERHOST and WHO know the other node's members too.
        alice.say("/register correct-horse")
        probe.expect("account", nick="alice")  # node b knows alice's account now
        irc.sendall(
            b"WHOIS alice\r\nISON alice nobody\r\nUSERHOST alice\r\nMODE alice\r\nWHO alice\r\n"
        )
        assert irc_saw(b"315 bob alice")
        irc.sendall(b"WHO al*\r\n")  # a mask: alice shares #general with bob
        assert irc_saw(b"315 bob al*")
        lines = seen.split(b"\r\n")
        assert any(b" 319 bob alice :#general" in line for line in lines)
        assert any(b" 330 bob alice alice :is logged in as" in line for line in lines)
        assert any(line.endswith(b" 303 bob :alice") for line in lines)
        assert any(line.endswith(b" 302 bob :alice=+alice@chatkit") for line in lines)
        assert any(b" 352 bob * alice chatkit " in line for line in lines)
        assert any(b" 502 bob :Cant change mode for other users" in line for line in lines)
        masked = seen.split(b" 315 bob alice ")[-1].split(b"\r\n")
        assert any(b" 352 bob * alice chatkit " in line for line in masked)
        # Away on node a: WHOIS, USERHOST and WHO on node b say so.
        alice.say("/away lunch")
        probe.expect("away", nick="alice")
        seen = b""
        irc.sendall(b"WHOIS alice\r\nUSERHOST alice\r\nWHO alice\r\n")
        assert irc_saw(b"315 bob alice")
        lines = seen.split(b"\r\n")
        assert any(line.endswith(b" 301 bob alice :lunch") for line in lines)
        assert any(line.endswith(b" 302 bob :alice=-alice@chatkit") for line in lines)
        assert any(b" 352 bob * alice chatkit " in line and b" G :" in line for line in lines)


def test_the_banner_names_the_node_without_the_password(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    node = nodes(redis_server.url(4).replace("redis://", "redis://:hunter2@"))
    banner = node.proc.stdout.readline() if node.proc.stdout else ""
    while banner and not banner.startswith("cluster:"):
        banner = node.proc.stdout.readline() if node.proc.stdout else ""
    assert re.match(r"cluster: node \S+ on redis://:\*\*\*@127\.0\.0\.1:\d+/4 \(lease 2s\)", banner)
    node.stop()
    assert "hunter2" not in node.log.read_text()


def test_redis_unreachable_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [CHATKIT, "serve", "--port", "0", "--redis", f"redis://127.0.0.1:{free_port()}/0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "cannot reach Redis at redis://127.0.0.1:" in result.stderr
    # Enabled without a URL ([plugins.cluster] url is required).
    result = subprocess.run(
        [CHATKIT, "serve", "--port", "0", "--plugin", "cluster"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "cluster: url must be a Redis URL" in result.stderr


def test_redis_refusing_at_start_says_why_and_shows_no_password(tmp_path: Path) -> None:
    """A Redis that wants a password and gets none, or a wrong one, is told apart from
    one that cannot be reached; a URL that is not Redis's says so; a password in the
    URL's query (redis-py takes it there too) is never shown."""
    locked = RedisServer(tmp_path, password="right-one")
    try:
        base = f"redis://127.0.0.1:{locked.port}/0"
        for url, said in (
            (base, "no password, and it wants one"),
            (base + "?password=wrong-one", "a wrong password"),
            (f"redis://:wrong-one@127.0.0.1:{locked.port}/0", "a wrong password"),
            (f"http://127.0.0.1:{locked.port}/0", "is not a Redis URL"),
        ):
            result = subprocess.run(
                [CHATKIT, "serve", "--port", "0", "--redis", url],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 2, url
            assert said in result.stderr and "wrong-one" not in result.stderr, result.stderr
    finally:
        locked.kill()


def test_a_redis_url_is_shown_without_its_password() -> None:
    for url, shown in (
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://h/0?password=pw", "redis://h/0?password=***"),
        ("redis://u:pw@h/1?db=1&password=pw&socket_timeout=5",
         "redis://u:***@h/1?db=1&password=***&socket_timeout=5"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ):  # fmt: skip
        assert redact(url) == shown
    # Other words make a secret too where asked (chatkit check's: a token).
    assert redact("redis://h/0?token=t&db=1", ("password", "token")) == "redis://h/0?token=***&db=1"


def test_one_node_at_a_time_claims_an_empty_rooms_first_member(redis_server: RedisServer) -> None:
    """Two nodes whose joiners both find a room empty (neither has heard of the other's
    join yet) ask Redis: one claim wins, for FIRST_CLAIM seconds (it outlives the join,
    which reaches the other node a moment later) or until its joiner leaves the room,
    so one joiner is its operator."""
    url = redis_server.url(10)
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    stores = [
        SharedModerationStore(client, "chatkit", node, ModerationStore(":memory:"))
        for node in ("a", "b")
    ]
    try:
        assert stores[0].claim_first("#new", "a:1")
        assert not stores[1].claim_first("#new", "b:7")
        stores[0].release_first("#new", "a:1")  # joined: the claim still holds for b
        assert not stores[1].claim_first("#new", "b:7")
        ttl = client.pttl("chatkit:moderation:first:#new")
        assert 0 < ttl <= FIRST_CLAIM * 1000
        stores[1].release_first("#new", "b:7", left=True)  # not b's claim: nothing
        assert not stores[1].claim_first("#new", "b:7")
        stores[0].release_first("#new", "a:1", left=True)  # a's joiner left: it ends
        assert stores[1].claim_first("#new", "b:7")
    finally:
        for store in stores:
            store.close()


def test_a_node_forgets_its_cached_moderation_when_redis_loses_it(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush (or a restart without persistence) announces nothing on the channel: a
    node that cached a ban sees the data's mark gone at its next ping and drops its
    copies, so all nodes agree again (no ban), and the loss is logged."""
    monkeypatch.setattr(shared, "PING_EVERY", 0.1)
    url = redis_server.url(12)
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    store = SharedModerationStore(client, "chatkit", "a", ModerationStore(":memory:"))
    try:
        store.add("bans", "#f", "evil!*@*")
        assert store.rows("bans", "#f") == ["evil!*@*"]  # read, and cached
        client.flushdb()
        wait_until(lambda: store.rows("bans", "#f") == [], WAIT, "the cache dropped", POLL)
    finally:
        store.close()


def test_an_announcement_counts_the_other_nodes_that_heard_it(
    redis_server: RedisServer,
) -> None:
    """A kick of another node's member must reach that node: the count of the others
    listening lets the kicker refuse it (cluster_unavailable) when none is, as right
    after Redis came back, before they subscribed again."""
    url = redis_server.url(13)
    client = redis.Redis.from_url(url, decode_responses=True)
    a = SharedModerationStore(client, "announce", "a", ModerationStore(":memory:"))
    try:
        wait_until(lambda: a._listening, WAIT, "a subscribed", POLL)
        assert a.announce({"do": "announce", "text": "anyone?"}) == 0
        b = SharedModerationStore(client, "announce", "b", ModerationStore(":memory:"))
        try:
            wait_until(lambda: b._listening, WAIT, "b subscribed", POLL)
            assert a.announce({"do": "announce", "text": "anyone?"}) == 1
        finally:
            b.close()
    finally:
        a.close()


def test_moderation_keeps_no_second_copy_of_the_clusters_topics(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """With moderation on, a room's topic after it emptied comes back from the cluster's
    topics alone (moderation's own copy, written outside the log's order, could disagree
    and won on the join)."""
    url = redis_server.url(14)
    data = redis.Redis.from_url(url, decode_responses=True)
    data.flushdb()
    a, b = nodes(url, "--plugin", "moderation"), nodes(url, "--plugin", "moderation")
    alice, bob = a.client("alice"), b.client("bob")
    for client, nick in ((alice, "alice"), (bob, "bob")):
        client.say("/join #t")
        client.expect("join", room="#t", nick=nick)
    wait_until(lambda: sorted(who(alice, "#t")) == ["alice", "bob"], WAIT, "both in #t", POLL)
    alice.say("/topic #t from a")
    bob.expect("topic", room="#t", topic="from a")
    bob.say("/topic #t from b")
    alice.expect("topic", room="#t", topic="from b")
    for client in (alice, bob):
        client.say("/part #t")
    wait_until(lambda: gone_room(alice, "#t"), WAIT, "#t empty", POLL)
    alice.say("/join #t")
    assert alice.expect("topic", room="#t")["topic"] == "from b"
    assert not data.exists("chatkit:moderation:topics")


def test_a_seeding_nodes_kept_topics_come_back_whatever_the_plugins_order(
    redis_server: RedisServer, nodes: Callable[..., Node], tmp_path: Path
) -> None:
    """A node whose own moderation file kept a topic seeds an empty cluster with it, and
    its own members get it, with cluster listed before moderation too; its bans go with
    who set them."""
    url = redis_server.url(14)
    redis.Redis.from_url(url).flushdb()
    own = tmp_path / "own.moderation.sqlite3"
    store = ModerationStore(own)
    store.keep_topic("#general", "kept from before", "alice", "2026-12-01T00:00:00.000Z")
    store.add("bans", "#general", "evil!*@*", by="alice", ts="2026-12-01T00:00:01.000Z")
    store.close()
    settings = (
        f'[server]\nplugins = ["cluster", "moderation"]\n[plugins.moderation]\ndb = "{own}"\n'
    )
    a = nodes(url, config_text=settings, flag=False)
    bob = a.client("bob")
    assert bob.expect("topic", room="#general")["topic"] == "kept from before"
    bob.send(type="modes", room="#general")
    setter = {"nick": "alice", "ts": "2026-12-01T00:00:01.000Z"}
    assert bob.expect("modes")["set_by"] == {"bans": {"evil!*@*": setter}}


def test_a_node_started_after_redis_lost_its_data_sees_everyone(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """A flush while the nodes stay connected: each sees the data's mark change at its
    next beat and puts back its members and topics, so a node started afterwards knows
    who is where and the rooms' topics."""
    url = redis_server.url(14)
    redis.Redis.from_url(url).flushdb()
    a, b = nodes(url), nodes(url)
    alice, bob = a.client("alice"), b.client("bob")
    wait_until(lambda: sorted(who(alice)) == ["alice", "bob"], WAIT, "both in /who", POLL)
    alice.send({"type": "say", "text": "/topic before the flush"})
    bob.expect("topic", room="#general")
    flushed = redis.Redis.from_url(url, decode_responses=True)
    mark = flushed.get("chatkit:epoch")
    flushed.flushdb()
    # Both nodes put their members back (a new mark, then each one's hash).
    wait_until(
        lambda: (
            flushed.get("chatkit:epoch") not in (None, mark)
            and len(flushed.keys("chatkit:members:*")) == 2
        ),
        WAIT,
        "the members put back",
        POLL,
    )
    c = nodes(url)
    carol = c.client("carol")
    assert carol.expect("topic", room="#general")["topic"] == "before the flush"
    wait_until(lambda: sorted(who(carol)) == ["alice", "bob", "carol"], WAIT, "all in /who", POLL)


def test_bad_entries_in_the_log_are_skipped_and_the_cluster_goes_on(
    redis_server: RedisServer, nodes: Callable[..., Node]
) -> None:
    """Entries another program wrote into the stream (not JSON, JSON of the wrong shape,
    an unhashable message key) are skipped and logged: messages still cross. One with
    an id from the future, after which nothing can be appended, is reported and not
    read past: once removed, the cluster goes on."""
    url = redis_server.url(11)
    r = redis.Redis.from_url(url, decode_responses=True)
    r.flushdb()
    a, b = nodes(url), nodes(url)
    alice, bob = a.client("alice"), b.client("bob")
    wait_until(who_is(bob, ["alice", "bob"]), WAIT, "both in /who", POLL)
    log_key = "chatkit:log"
    r.xadd(log_key, {"n": "rogue", "t": "msg", "d": "5"})
    r.xadd(log_key, {"n": "rogue", "t": "msg", "d": "not json"})
    r.xadd(log_key, {"n": "rogue", "t": "msg", "d": '{"room": "#general", "k": [1]}'})
    r.xadd(log_key, {"n": "rogue"})
    alice.say("after the junk")
    bob.expect("message", text="after the junk")
    future = r.xadd(log_key, {"n": "rogue", "t": "msg", "d": "{}"}, id="18446744073709551614-0")
    wait_until(lambda: "from the future" in a.log.read_text(), WAIT, "the report", POLL)
    # Removed as the log says: its id stays the stream's last (XADD refuses below it),
    # so the stream goes with it, or gets XSETID to the last good entry.
    newest: Any = r.xrevrange(log_key, count=2)
    r.xdel(log_key, future)
    r.execute_command("XSETID", log_key, newest[1][0])  # type: ignore[no-untyped-call]
    alice.say("after the removal")
    bob.expect("message", text="after the removal")
    for node in (a, b):
        assert "Traceback" not in node.log.read_text()


def test_a_rehash_in_the_cluster_does_not_undo_a_password_change(
    redis_server: RedisServer,
) -> None:
    """The cluster's accounts replace a hash with old= only if it is still that one."""
    from chatkit.builtins.accounts.shared import SharedAccountStore

    url = redis_server.url(13)
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    local = AccountStore(":memory:")
    store = SharedAccountStore(client, "chatkit", local)
    try:
        store.create(Account("alice", "alice", "checked-hash", None))
        store.set_hash("alice", "changed-by-passwd")
        store.set_hash("alice", "rehashed", old="checked-hash")
        found = store.get("alice")
        assert found is not None and found.hash == "changed-by-passwd"
    finally:
        local.close()


def test_a_copy_back_cut_by_a_redis_error_is_done_again(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis error in the middle of copying accounts back leaves the node's marker
    the old one, so its next look copies again: no account is left out for good."""
    from chatkit.builtins.accounts import shared as shared_accounts

    monkeypatch.setattr(shared_accounts, "MARK_EVERY", 3600.0)  # (this test's looks only)
    url = redis_server.url(13)
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    store = shared_accounts.SharedAccountStore(client, "chatkit", AccountStore(":memory:"))
    try:
        for nick in ("alice", "bob", "carol"):
            assert store.create(Account(nick, nick, f"{nick}-hash", None))
        client.flushdb()
        create, calls = store._create, itertools.count()

        def flaky(**kwargs: Any) -> Any:
            if next(calls) == 1:
                raise redis.ConnectionError("cut")
            return create(**kwargs)

        monkeypatch.setattr(store, "_create", flaky)
        with pytest.raises(redis.ConnectionError):
            store._restore()
        store._restore()  # (the watcher's, or a look-up's, next try)
        assert sorted(client.hkeys("chatkit:accounts")) == ["alice", "bob", "carol"]
    finally:
        store.close()


def test_an_account_changed_elsewhere_is_read_again(redis_server: RedisServer) -> None:
    """refresh() reads an account again (another node gave it a new password): the node
    would copy back what it knows; if Redis cannot say, it forgets the old copy."""
    from chatkit.builtins.accounts.shared import SharedAccountStore

    url = redis_server.url(13)
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    store = SharedAccountStore(client, "chatkit", AccountStore(":memory:"))
    try:
        store.create(Account("alice", "alice", "leaked-hash", None))
        row = json.loads(client.hget("chatkit:accounts", "alice") or "{}")
        client.hset("chatkit:accounts", "alice", json.dumps({**row, "hash": "new-hash"}))
        store.refresh("alice")
        assert store._known["alice"].hash == "new-hash"
        client.set("chatkit:accounts_seeded", "another-marker")  # Redis cannot say: lost
        store.refresh("alice")
        assert "alice" not in store._known
    finally:
        store.close()


def test_a_clusters_accounts_lacking_look_alike_keys_get_them(
    redis_server: RedisServer,
) -> None:
    """Accounts whose look-alike key Redis lacks (lost, or an older chatkit's keys) get
    it as a node starts: a Cyrillic ``аlice`` is ``alice``'s, and cannot be registered
    beside it."""
    from chatkit.builtins.accounts.shared import SharedAccountStore

    url = redis_server.url(12)
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    row = json.dumps({"nick": "alice", "hash": "h", "email": None, "created": 0.0})
    client.hset("chatkit:accounts", mapping={"alice": row, "bob": row.replace("alice", "bob")})
    client.hset("chatkit:account_skeletons", mapping={"bob": "bob"})
    client.set("chatkit:accounts_seeded", "marker")
    local = AccountStore(":memory:")
    store = SharedAccountStore(client, "chatkit", local)
    try:
        found = store.find("\u0430lice")
        assert found is not None and found.name == "alice"
        assert not store.create(Account("\u0430lice", "\u0430lice", "other", None))
        assert client.hget("chatkit:account_skeletons", "alice") == "alice"
    finally:
        local.close()


def test_a_ban_list_is_answered_while_redis_does_not_answer(
    tmp_path: Path, nodes: Callable[..., Node]
) -> None:
    """Who set each ban is read from the cluster's Redis once, then from the node's copy:
    with Redis stopped (it takes connections and answers nothing), a modes request is
    answered at once, as the ban list itself is, not after a socket timeout per list."""
    (tmp_path / "own-redis").mkdir()
    redis = RedisServer(tmp_path / "own-redis")
    try:
        a = nodes(redis.url(), "--plugin", "moderation")
        ann = a.client("ann")  # the first in #general: its operator
        ann.say("/ban mallory")
        ann.expect("notice", mode="+b")
        ann.send(type="modes", room="#general")
        before = ann.expect("modes")
        assert before["set_by"]["bans"]["mallory!*@*"]["nick"] == "ann"
        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            for _ in range(3):
                ann.send(type="modes", room="#general")
                assert ann.expect("modes", timeout=3) == before
        finally:
            redis.proc.send_signal(signal.SIGCONT)
    finally:
        redis.kill()


def test_junk_in_the_clusters_setters_is_left_out(redis_server: RedisServer) -> None:
    """Bans and who set them, as the cluster's Redis keeps them: what is not a pair of
    texts (not UTF-8, not JSON, JSON too deep to read, another shape) is left out, the
    rest read."""
    client = redis.Redis.from_url(redis_server.url(15), decode_responses=True)
    raw = redis.Redis.from_url(redis_server.url(15))
    for key in raw.scan_iter("junk:*"):
        raw.delete(key)
    store = SharedModerationStore(client, "junk", "a", ModerationStore(":memory:"))
    try:
        store.add("bans", "#j", "good!*@*", by="ann", ts="2026-12-03T05:00:00.000Z")
        key = "junk:moderation:setters:bans:#j"
        raw.hset(key, mapping={
            "deep!*@*": "[" * 100_000, "shape!*@*": '{"nick": "x"}', "text!*@*": "not json",
            "trio!*@*": '["a", "b", "c"]', "number!*@*": "[1, 2]",
        })  # fmt: skip
        assert store.setters("bans", "#j") == {"good!*@*": ("ann", "2026-12-03T05:00:00.000Z")}
    finally:
        store.close()
    # Not UTF-8: that one is left out (and logged once), not the rest, in a set too, where
    # a ban left out with the others would no longer hold.
    raw.hset(key, mapping={"bytes!*@*": b"\xff\xfe", b"\xff!*@*": "[]"})
    raw.sadd("junk:moderation:bans:#j", b"\xff\xfe")
    other = SharedModerationStore(client, "junk", "b", ModerationStore(":memory:"))
    try:
        assert other.setters("bans", "#j") == {"good!*@*": ("ann", "2026-12-03T05:00:00.000Z")}
        assert other.rows("bans", "#j") == ["good!*@*"]
    finally:
        other.close()


def test_a_node_s_own_change_announced_back_keeps_the_copy_read_since(
    redis_server: RedisServer,
) -> None:
    """A node drops its copies of a room's list as it changes it; its own note of the
    change, heard on the channel a moment later, must not drop the fresh copy read
    meanwhile (the next reader waited on Redis for it: for a socket timeout, with Redis
    stalled; test_a_ban_list_is_answered_while_redis_does_not_answer failed so)."""
    client = redis.Redis.from_url(redis_server.url(14), decode_responses=True)
    store = SharedModerationStore(client, "own", "a", ModerationStore(":memory:"))
    try:
        assert store._subscribed.wait(5)
        store.add("bans", "#o", "x!*@*", by="ann", ts="2026-12-03T05:00:00.000Z")
        assert store.rows("bans", "#o") == ["x!*@*"]  # read, and kept
        assert store.rows("mutes", "#o") == []
        # The notes as the listening thread applies them, this node's own heard late
        # (after the read above), then another node's.
        store._apply(json.dumps({"node": "a", "table": "bans", "room": "#o"}))
        store._apply(json.dumps({"node": "b", "table": "mutes", "room": "#o"}))
        assert ("bans", "#o") in store._cache  # this node's copy, read after its change
        assert ("mutes", "#o") not in store._cache  # another node changed it: read again
    finally:
        store.close()


def test_readers_do_not_all_wait_for_a_redis_that_does_not_answer(tmp_path: Path) -> None:
    """Redis stopped (it takes connections and answers nothing): once a read of the
    moderation settings has been under way for SLOW_READ, the other readers take the
    last copy (here: none) at once instead of each waiting for the socket's timeout."""
    (tmp_path / "own-redis").mkdir()
    server = RedisServer(tmp_path / "own-redis")
    client = redis.Redis.from_url(server.url(), decode_responses=True, socket_timeout=5)
    store = SharedModerationStore(client, "stall", "a", ModerationStore(":memory:"))
    assert server.proc is not None
    try:
        server.proc.send_signal(signal.SIGSTOP)
        first = threading.Thread(target=store.rows, args=("bans", "#first"), daemon=True)
        first.start()  # waits for Redis, up to socket_timeout
        wait_until(lambda: bool(store._reading), WAIT, "the first read under way", POLL)
        wait_until(
            lambda: time.monotonic() - min(store._reading.values()) > shared.SLOW_READ,
            WAIT, "the first read slow", POLL,
        )  # fmt: skip
        answers: list[list[str]] = []
        others = [
            threading.Thread(target=lambda r=room: answers.append(store.rows("bans", r)))
            for room in ("#a", "#b", "#c", "#d")
        ]
        for thread in others:
            thread.start()
        for thread in others:
            thread.join(timeout=2)  # well within the first read's 5 s
        assert answers == [[], [], [], []] and first.is_alive()
    finally:
        server.proc.send_signal(signal.SIGCONT)
        store.close()
        server.kill()


def test_a_renames_read_back_ends_only_its_own_wait(
    redis_server: RedisServer, chat_server_factory: Callable[..., Server]
) -> None:
    """A node's ``nick`` entry read back ends the wait of the rename it logged, and no
    other: one from a batch Redis refused (its wait given up, yet logged after all, a
    pipeline not being a transaction) leaves the session's newer rename waiting for its
    own entry (it ended that one's wait, and its private messages went by the newer
    nick too early). Played on one node, its entries written by hand."""
    config = Config()
    config.plugin_config["cluster"] = {
        "url": redis_server.url(5),
        "prefix": "readback",
        "lease": LEASE,
    }
    server = chat_server_factory(["cluster"], config=config, disable=["flood"])
    cluster = server.pluginmanager.get_plugin("cluster")
    assert cluster is not None
    with ChatClient(server.address) as bob:
        bob.login("bob")
        session = server.hub.find("bob")
        assert session is not None
        cluster.renamed(session, "bobby")  # a rename from bobby, its entry still to come
        data = {"old": "robert", "new": "bobby", "sid": session.id}  # the refused one's
        cluster._send("nick", data)
        reader = redis.Redis.from_url(redis_server.url(5), decode_responses=True)
        log = cast(list[tuple[str, dict[str, str]]], reader.xrevrange("readback:log", count=1))
        last = log[0][0]
        reader.close()
        wait_until(lambda: _stream_id(cluster._last) >= _stream_id(last), 10, "the read-back")
        assert cluster._renames[session.id][1] == ["bobby"]  # still waiting for its own
        cluster._send("nick", {**data, "old": "bobby", "new": "bob"})
        wait_until(lambda: session.id not in cluster._renames, 10, "its own read-back")


def _stream_id(text: str) -> tuple[int, int]:
    """A Redis stream id (``"ms-seq"``) as a pair that orders as Redis does."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def test_a_reload_never_restarts_the_cluster(redis_server: RedisServer) -> None:
    """The cluster plugin is this node: a reload that changes its settings leaves it
    running as it is until the next restart (a new instance was a new node: its members
    left the old one, were renamed, and messages in between were lost), and one that
    would disable it is refused."""
    url = redis_server.url(12)
    redis.Redis.from_url(url).flushdb()

    def config(lease: float) -> Config:
        return Config(
            port=0, plugins=["cluster"], plugin_config={"cluster": {"url": url, "lease": lease}}
        )

    server = Server(config=config(10))
    server.start()
    try:
        running = server.pluginmanager.get_plugin("cluster")
        with ChatClient(server.address) as alice:
            alice.login("alice")
            notes = server.reload(config(12))
            assert notes == [
                "plugin 'cluster' changes at the next restart (it is this node in the cluster)"
            ]
            assert server.pluginmanager.get_plugin("cluster") is running
            assert server.hub.relay is running
            with pytest.raises(UsageError, match="'cluster': it is this node in the cluster"):
                server.reload(Config(port=0))
            alice.say("still here")
            alice.expect("message", text="still here")
            assert not [f for f in alice.sync() if f["type"] in ("nick", "leave")]
    finally:
        server.shutdown()
