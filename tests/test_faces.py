"""Faces: several wire protocols into one chat, and a new one needs no change elsewhere.

``ShoutFace`` is a wire protocol that exists only here: a line of text is a nick
(the first) or a message, and the server's frames come back in upper case. It is
built from the face interfaces alone (chatkit.faces), with its own codec, and its
clients chat with the line face's on the same server: proof that adding a wire
protocol touches neither the hub, the server nor the plugins.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from chatkit import CommandError, Frame, Server, UsageError
from chatkit.codecs import Codec, render_text
from chatkit.events import Hello, Say
from chatkit.faces import Face, Link
from chatkit.faces.line import LineFace
from chatkit.hub import Hub
from chatkit.session import Session
from chatkit.testing import ChatClient, TextClient


def _shout(frame: Frame) -> bytes:
    return "".join(f"{line.upper()}\n" for line in render_text(frame).splitlines()).encode()


SHOUT = Codec("shout", _shout)
"""Every frame as the text mode's line(s), in upper case: one encoding per fan-out."""


class ShoutChannel:
    """One shouting connection: split lines, act on the hub, encode in SHOUT."""

    def __init__(self, hub: Hub, session: Session, link: Link) -> None:
        self.hub, self.session, self.link = hub, session, link
        link.codec = SHOUT  # known from the start: fan-outs encode in it
        self.buffer = b""
        self.sent: list[str] = []  # the frame types this connection was sent alone

    def encode(self, frame: Frame) -> bytes:
        self.sent.append(frame.type)
        return SHOUT.encode(frame)

    def receive(self, data: bytes) -> bool:
        if not data:
            return False
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for raw in lines:
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            self.link.pace()
            try:
                if not self.session.logged_in:
                    self.hub.allow_input(self.session, Hello(text))
                    self.hub.login(self.session, text)
                elif text.startswith("/"):
                    self.hub.allow_input(self.session, Say(text, command=True))
                    self.hub.run_command(self.session, text, None)
                else:
                    self.hub.allow_input(self.session, Say(text))
                    self.hub.say(self.session, None, text)
            except CommandError as exc:
                self.session.error(exc.code, exc.text)
            if self.link.finishing:
                return False
        return True


class ShoutFace:
    name = "shout"

    def __init__(self, host: str | None = None, port: int | None = None) -> None:
        self.host, self.port = host, port
        self.channels: list[ShoutChannel] = []

    def early(self, frame: Frame, greeted: bool = False) -> bytes:
        return SHOUT.encode(frame)

    def greeting(self) -> bytes | None:
        return None

    def open(self, hub: Hub, session: Session, link: Link) -> ShoutChannel:
        channel = ShoutChannel(hub, session, link)
        self.channels.append(channel)
        return channel


@pytest.fixture
def two_faces() -> Iterator[tuple[Server, ShoutFace]]:
    shout = ShoutFace(port=0)
    faces: list[Face] = [LineFace(), shout]
    with Server("127.0.0.1", 0, faces=faces) as server:
        yield server, shout


def test_clients_of_two_faces_share_a_room(two_faces: tuple[Server, ShoutFace]) -> None:
    """A JSON client and a client of a test-only wire protocol see each other's messages,
    each in its own encoding, and the face's channel sees what it is sent alone."""
    server, face = two_faces
    assert set(server.addresses) == {"line", "shout"}
    assert server.address == server.addresses["line"] != server.addresses["shout"]
    with (
        ChatClient(server.addresses["line"]) as alice,
        TextClient(server.addresses["shout"]) as bob,
    ):
        alice.login("alice")
        bob.send_line("bob")
        bob.expect("* BOB JOINED #GENERAL")
        alice.expect(lambda f: f["type"] == "join" and f["nick"] == "bob")
        alice.say("hi bob")
        assert alice.expect("message")["text"] == "hi bob"
        bob.expect("[#GENERAL] <ALICE> HI BOB")
        bob.send_line("hello alice")
        assert alice.expect("message")["text"] == "hello alice"
        bob.send_line("/who")
        bob.expect("ALICE, BOB")
        bob.send_line("/nick alice")
        bob.expect("NICK_TAKEN")
    [channel] = face.channels
    # welcome, the /who reply and the error went through the channel; alice's message
    # and bob's own join came by fan-out (SHOUT lists no members with a join), encoded
    # once for every shouting client.
    assert channel.sent == ["welcome", "reply", "error"]


def test_faces_need_distinct_names() -> None:
    with pytest.raises(UsageError, match="distinct names"):
        Server(faces=[LineFace(port=0), LineFace(port=0)])


def test_a_face_whose_port_is_taken_is_named() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = Server("127.0.0.1", 0, faces=[LineFace(), ShoutFace(port=port)])
        with pytest.raises(UsageError, match=rf"cannot listen on 127.0.0.1:{port} \(shout face\)"):
            server.start()


QUIET = Codec("shout-quiet", _shout, echo=False)
"""SHOUT for clients that do not want their own messages back (as IRC without echo-message)."""


class QuietChannel(ShoutChannel):
    def __init__(self, hub: Hub, session: Session, link: Link) -> None:
        super().__init__(hub, session, link)
        link.codec = QUIET


class QuietFace(ShoutFace):
    name = "quiet"

    def open(self, hub: Hub, session: Session, link: Link) -> ShoutChannel:
        return QuietChannel(hub, session, link)


@pytest.mark.parametrize("history", [True, False], ids=["sequenced", "direct"])
def test_a_codec_without_echo_skips_its_clients_own_messages(history: bool) -> None:
    """Fan-out skips, for clients whose codec has echo=False only, the messages they sent
    (room and private); JSON clients still get their own copy, with its id."""
    from chatkit.testing import make_config

    config = make_config(disable=[] if history else ["history"])
    quiet = QuietFace(port=0)
    with (
        Server("127.0.0.1", 0, faces=[LineFace(), quiet], config=config) as server,
        ChatClient(server.addresses["line"]) as alice,
        TextClient(server.addresses["quiet"]) as bob,
    ):
        alice.login("alice")
        bob.send_line("bob")
        bob.expect("* BOB JOINED #GENERAL")
        bob.send_line("one")
        bob.send_line("/msg alice two")
        bob.send_line("/me three")
        alice.expect("message", text="one", nick="bob")
        alice.expect("private", text="two")
        alice.expect("message", text="three", action=True)
        alice.say("four")  # after bob's three: a marker for what bob was sent before
        assert alice.expect("message")["text"] == "four"  # alice's own copy, with its id
        seen: list[str] = []

        def four(line: str) -> bool:
            seen.append(line)
            return "FOUR" in line

        bob.expect(four)
        assert not [line for line in seen if "ONE" in line or "TWO" in line or "THREE" in line]
