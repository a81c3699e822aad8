"""TLS through real sockets: certificates made by trustme at test time, never committed."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import CHATKIT, ServeProcess
from test_irc_face import SERVER

from chatkit import Config, Server, UsageError
from chatkit.cli import _faces
from chatkit.client import Client, ClientError, ConnectionLost, LineClient
from chatkit.faces.irc import IrcFace
from chatkit.faces.line import GREETING, LineFace
from chatkit.server import TlsFace
from chatkit.testing import ChatClient, TextClient, make_config, wait_until

TIMEOUT = 5.0  # seconds a test waits for an expected line


class Certs:
    """A CA and a certificate for 127.0.0.1 and localhost, as PEM files."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.ca = trustme.CA()
        issued = self.ca.issue_cert("127.0.0.1", "localhost")
        self.cert = directory / f"{name}-cert.pem"
        self.key = directory / f"{name}-key.pem"
        self.ca_file = directory / f"{name}-ca.pem"
        issued.cert_chain_pems[0].write_to_path(str(self.cert))
        for extra in issued.cert_chain_pems[1:]:
            extra.write_to_path(str(self.cert), append=True)
        issued.private_key_pem.write_to_path(str(self.key))
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def client(self) -> ssl.SSLContext:
        """A client context that trusts this CA alone."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return context


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path)


def tls_config(certs: Certs, **limits: Any) -> Config:
    config = make_config(**limits)
    config.tls_cert, config.tls_key = str(certs.cert), str(certs.key)
    return config


@pytest.fixture
def tls_server(certs: Certs) -> Iterator[Server]:
    """A server with the line face in plain text and over TLS, and IRC over TLS."""
    line = LineFace()
    irc = IrcFace(port=0, server_name=SERVER, network="TestNet")
    server = Server(
        config=tls_config(certs, tls_handshake_timeout=2.0),
        faces=[line, TlsFace(line, port=0), irc, TlsFace(irc, port=0)],
        plugins=[],
    )
    with server:
        yield server


def test_a_tls_client_chats_with_a_plain_one(tls_server: Server, certs: Certs) -> None:
    """A JSON client over TLS and a plain one share a room, both ways."""
    with (
        ChatClient(tls_server.addresses["line-tls"], tls=certs.client()) as secure,
        ChatClient(tls_server.address) as plain,
    ):
        secure.login("ann")
        plain.login("bob")
        secure.say("over tls")
        assert plain.expect("message")["text"] == "over tls"
        plain.say("in the clear")
        assert secure.expect("message", text="in the clear")["nick"] == "bob"


def test_a_tls_client_sends_on_one_thread_while_another_reads(certs: Certs) -> None:
    """Over TLS, a thread blocked reading and another sending take turns on the one
    SSL object (the terminal client does this): every line goes, every echo comes back,
    in order."""
    from chatkit.client import Client

    line = LineFace()
    config = tls_config(certs)
    config.disable = ["flood"]
    with (
        Server(config=config, faces=[line, TlsFace(line, port=0)]) as server,
        Client.connect(*server.addresses["line-tls"], tls=certs.client()) as client,
    ):
        client.login("ann", room="#solo")
        got: list[str] = []

        def read() -> None:
            for frame in client:
                if frame["type"] == "message":
                    got.append(frame["text"])
                    if len(got) == 200:
                        return

        reader = threading.Thread(target=read)
        reader.start()
        for i in range(200):
            client.say(f"line {i}")
        reader.join(30)
        assert got == [f"line {i}" for i in range(200)]


class StallingProxy:
    """A TCP proxy between a client and a server that, once told to stall, passes on
    only the first bytes of the server's next chunk (part of a TLS record) and holds
    the rest until released."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.target = target
        self.stall = threading.Event()
        self.stalled = threading.Event()  # set once the first bytes went on
        self.release = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(self.target)
        threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
        self._pipe(server, client, True)

    def _pipe(self, source: socket.socket, sink: socket.socket, stalls: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if stalls and self.stall.is_set() and not self.release.is_set():
                    sink.sendall(data[:10])
                    self.stalled.set()
                    self.release.wait(30)
                    data = data[10:]
                sink.sendall(data)


def test_a_tls_read_stalled_mid_record_holds_up_no_send(certs: Certs) -> None:
    """A server that stops in the middle of a TLS record: a receive waiting for the
    rest (within its timeout) holds the SSL object only while bytes are there to read,
    so another thread's send goes meanwhile; and the receive gets the frame once the
    rest comes."""
    from chatkit.client import Client

    line = LineFace()
    with Server(config=tls_config(certs), faces=[line, TlsFace(line, port=0)]) as server:
        proxy = StallingProxy(server.addresses["line-tls"])
        with (
            Client.connect(*proxy.address, tls=certs.client()) as bot,
            ChatClient(server.addresses["line"]) as ann,
        ):
            bot.login("bot")
            bot.sync()
            proxy.stall.set()
            ann.login("ann")  # its join: a frame to bot, stalled after 10 bytes
            assert proxy.stalled.wait(10)
            received: list[Any] = []
            reader = threading.Thread(target=lambda: received.append(bot.receive(timeout=30)))
            reader.start()

            def waiting() -> bool:
                # The reader waits: in the SSL read (holding the SSL object, as it did
                # once) or polling for the rest of the record (the bytes there are
                # there from its start: it has tried them).
                frame = sys._current_frames().get(reader.ident or 0)
                return frame is not None and frame.f_code.co_name in ("read", "_readable")

            wait_until(waiting, 10, "the reader waiting for the rest of the record")
            sender = threading.Thread(target=bot.say, args=("meanwhile",))
            sender.start()
            ann.expect("message", text="meanwhile")  # sent while the read waits
            sender.join(10)
            assert reader.is_alive() and not received
            proxy.release.set()
            reader.join(10)
            assert received and received[0]["type"] == "join"


def test_text_mode_over_tls(tls_server: Server, certs: Certs) -> None:
    """A person's text lines work over TLS as over nc (openssl s_client, say)."""
    with TextClient(tls_server.addresses["line-tls"], tls=certs.client()) as client:
        client.send_line("carol")
        client.expect(lambda line: "welcome" in line.lower() or "carol" in line)


def test_a_silent_person_over_tls_is_greeted_as_over_nc(certs: Certs) -> None:
    """Silent for greeting_delay after the handshake (a person at openssl s_client): the
    line face's prompt, in TLS, as the plain port shows it; the nick typed then logs in."""
    line = LineFace()
    config = tls_config(certs, greeting_delay=0.2)
    with Server(config=config, faces=[line, TlsFace(line, port=0)], plugins=[]) as server:
        raw = socket.create_connection(server.addresses["line-tls"], timeout=TIMEOUT)
        with certs.client().wrap_socket(raw, server_hostname="localhost") as sock:
            received = b""
            while GREETING not in received:
                chunk = sock.recv(4096)
                assert chunk, received
                received += chunk
            sock.sendall(b"dora\n")
            while b"Welcome" not in received:
                received += sock.recv(4096)
    # Greeted, then silent until login_timeout: told so in text, as on the plain port.
    config = tls_config(certs, greeting_delay=0.2, login_timeout=1.0)
    with Server(config=config, faces=[line, TlsFace(line, port=0)], plugins=[]) as server:
        raw = socket.create_connection(server.addresses["line-tls"], timeout=TIMEOUT)
        with certs.client().wrap_socket(raw, server_hostname="localhost") as sock:
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
            assert received.startswith(GREETING), received
            assert received[len(GREETING) :].startswith(b"error [login_timeout]: "), received


def test_a_large_burst_arrives_whole_over_tls(certs: Certs) -> None:
    """Many frames at once (more than a socket buffer) arrive complete and in order."""
    line = LineFace()
    config = tls_config(certs)
    config.disable = ["flood"]
    with (
        Server(config=config, faces=[line, TlsFace(line, port=0)]) as server,
        ChatClient(server.addresses["line-tls"], tls=certs.client()) as reader,
        ChatClient(server.address) as writer,
    ):
        reader.login("reader")
        writer.login("writer")
        text = "x" * 4000
        for i in range(300):
            writer.say(f"{i} {text}")
        for i in range(300):
            assert reader.expect("message", timeout=20)["text"] == f"{i} {text}"


def test_a_plain_client_on_the_tls_port_is_closed(tls_server: Server, certs: Certs) -> None:
    """A client speaking plain text to the TLS port is closed, and the server serves on."""
    with socket.create_connection(tls_server.addresses["line-tls"], timeout=TIMEOUT) as sock:
        sock.sendall(b'{"type": "hello", "nick": "plain"}\n')
        assert _read_to_end(sock) == b""  # no plaintext answer, then EOF
    with ChatClient(tls_server.addresses["line-tls"], tls=certs.client()) as secure:
        secure.login("after")
    # chatkit's client, which says what may be wrong (the server closed without a word).
    plain = Client.connect(*tls_server.addresses["line-tls"])
    with pytest.raises(ConnectionLost) as info:
        plain.login("plain", timeout=TIMEOUT)
    plain.close()
    assert "is this its TLS port? then use TLS: --tls" in str(info.value)


def test_a_stalled_handshake_times_out_without_blocking_others(
    tls_server: Server, certs: Certs
) -> None:
    """A client that starts a handshake and stalls is closed after tls_handshake_timeout;
    meanwhile another TLS client logs in."""
    with socket.create_connection(tls_server.addresses["line-tls"], timeout=TIMEOUT) as stalled:
        stalled.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and nothing more
        started = time.monotonic()
        with ChatClient(tls_server.addresses["line-tls"], tls=certs.client()) as other:
            other.login("quick")
        assert _read_to_end(stalled) == b""
        assert time.monotonic() - started < 2.0 + TIMEOUT


def test_past_max_handshakes_the_oldest_handshake_makes_room(certs: Certs) -> None:
    """Handshakes under way hold a reader thread each: past max_handshakes the oldest
    one under way is closed at once to make room for the new one (refusing the new ones
    let a few stalling connections shut the TLS ports), while a logged-in client goes
    on; a real TLS client logs in meanwhile, and the rest time out."""
    line = LineFace()
    config = tls_config(certs, max_handshakes=2, tls_handshake_timeout=1.0)
    server = Server(config=config, faces=[line, TlsFace(line, port=0)], plugins=[])
    with server, ChatClient(server.address) as plain:
        plain.login("plain")
        stalled = []
        for _ in range(2):
            sock = socket.create_connection(server.addresses["line-tls"], timeout=TIMEOUT)
            sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and nothing more
            stalled.append(sock)
        wait_until(lambda: len(server._handshakes) == 2, 5, "two handshakes under way")
        third = socket.create_connection(server.addresses["line-tls"], timeout=TIMEOUT)
        third.sendall(b"\x16\x03\x01")
        started = time.monotonic()
        assert _read_to_end(stalled[0]) == b""  # the oldest, closed at once:
        assert time.monotonic() - started < 0.9  # (not at tls_handshake_timeout)
        third.setblocking(False)
        with pytest.raises(BlockingIOError):  # the new one is still open
            third.recv(1, socket.MSG_PEEK)
        plain.say("still here")
        plain.expect("message", text="still here")
        with ChatClient(server.addresses["line-tls"], tls=certs.client()) as real:
            real.login("real")  # (it made room too: the next oldest closed)
        # A burst: each newcomer closes a live handshake, never one closed already, so
        # no more than max_handshakes are ever held.
        before = server.readers_started
        burst = [socket.create_connection(server.addresses["line-tls"]) for _ in range(10)]
        for sock in burst:
            sock.sendall(b"\x16\x03\x01")
        wait_until(lambda: server.readers_started - before >= 10, 5, "the burst read")
        assert len(server._handshakes) <= 2
        for sock in burst:
            sock.close()
        for sock in (*stalled, third):
            sock.setblocking(True)
            assert _read_to_end(sock) == b""  # each closed, at the latest at the timeout
            sock.close()
        wait_until(lambda: not server._handshakes, 5, "the handshakes ended")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_a_refused_handshake_gets_its_alert(tls_server: Server, certs: Certs) -> None:
    """A client the server will not speak TLS with (TLS 1.1 at most) is told why with
    TLS's alert (protocol_version), not a bare end of stream."""
    context = certs.client()
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    address = tls_server.addresses["line-tls"]
    with (
        socket.create_connection(address, timeout=TIMEOUT) as sock,
        pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"),
    ):
        context.wrap_socket(sock, server_hostname="localhost")


def test_a_last_line_cut_off_without_close_notify_is_not_acted_on(
    tls_server: Server, certs: Certs
) -> None:
    """On TLS, a stream that ends without the client's close_notify may have been cut by
    someone on the way: whole lines were acted on, a last one without its newline is not
    (on a plain port it is: nc -q0)."""
    with ChatClient(tls_server.address) as watcher:
        watcher.login("watcher")
        raw = socket.create_connection(tls_server.addresses["line-tls"], timeout=TIMEOUT)
        sock = certs.client().wrap_socket(raw, server_hostname="localhost")
        sock.sendall(b'{"type":"hello","nick":"payer"}\n{"type":"say","text":"whole"}\n')
        watcher.expect("message", nick="payer", text="whole")
        sock.sendall(b'{"type":"say","text":"transfer $100 to bob"}')  # its newline cut
        sock.shutdown(socket.SHUT_RDWR)  # the TCP stream ends: no close_notify (no unwrap)
        sock.close()
        watcher.expect("leave", nick="payer")
        watcher.sync()
        said = [f["text"] for f in watcher.received if f["type"] == "message"]
        assert said == ["whole"]


def test_tiny_tls_records_count_against_free_lines(certs: Certs) -> None:
    """Each TLS record costs the server a turn, whatever it holds: a client cutting its
    bytes into 1-byte records pays a free line per 64 of them, so it is paused past
    free_lines, while the others go on."""
    from test_server import pausing

    line = LineFace()
    config = tls_config(certs, free_lines=3, free_line_rate=0.1)
    server = Server(config=config, faces=[line, TlsFace(line, port=0)], plugins=[])
    with server, ChatClient(server.address) as plain:
        plain.login("plain")
        raw = socket.create_connection(server.addresses["line-tls"], timeout=TIMEOUT)
        with certs.client().wrap_socket(raw, server_hostname="localhost") as tiny:
            tiny.sendall(b'{"type":"hello","nick":"tiny"}\n')
            wait_until(lambda: server.hub.find("tiny") is not None, 5, "tiny logged in")
            for byte in b"x" * 400:  # one record each
                tiny.send(bytes([byte]))
            wait_until(pausing, 10, "tiny's reader paused")
            plain.say("the others go on")
            plain.expect("message", text="the others go on")


def test_the_server_ends_a_tls_session_with_close_notify(tls_server: Server, certs: Certs) -> None:
    """A connection the server closes (here after /quit) ends with TLS's close_notify: the
    client can tell the end of the stream from a cut (no SSLEOFError when it asks)."""
    raw = socket.create_connection(tls_server.addresses["line-tls"], timeout=TIMEOUT)
    sock = certs.client().wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    with sock:
        sock.sendall(b'{"type":"hello","nick":"leaver"}\n{"type":"say","text":"/quit"}\n')
        received = b""
        while chunk := sock.recv(65536):  # SSLEOFError without close_notify
            received += chunk
        assert b'"welcome"' in received


def test_a_silent_tls_connection_is_closed_without_a_word_or_a_count(certs: Certs) -> None:
    """Nothing sent on the TLS port: closed at first_byte_timeout with nothing sent, and
    no login_timeout error counted (no error frame went out); on the plain port both."""
    line = LineFace()
    config = tls_config(certs, first_byte_timeout=0.3, greeting_delay=5)
    with Server(config=config, faces=[line, TlsFace(line, port=0)], plugins=[]) as server:
        with socket.create_connection(server.addresses["line-tls"], timeout=TIMEOUT) as silent:
            assert _read_to_end(silent) == b""
        assert server.stats()["errors"].get("login_timeout", 0) == 0
        with socket.create_connection(server.addresses["line"], timeout=TIMEOUT) as silent:
            assert b"login_timeout" in _read_to_end(silent)
        assert server.stats()["errors"]["login_timeout"] == 1


def test_an_untrusted_certificate_is_refused_by_the_client(tls_server: Server) -> None:
    """The client checks the certificate: one from an unknown CA fails, --insecure passes."""
    from chatkit.client import tls_client_context

    host, port = tls_server.addresses["line-tls"]
    with pytest.raises(ClientError, match="TLS with"):
        LineClient.connect(host, port, tls=tls_client_context())
    LineClient.connect(host, port, tls=tls_client_context(insecure=True)).close()


def test_reload_uses_the_new_certificate_for_new_clients(
    tls_server: Server, certs: Certs, tmp_path: Path
) -> None:
    """After reload_tls, new handshakes get the new certificate; a client connected
    before keeps chatting."""
    with ChatClient(tls_server.addresses["line-tls"], tls=certs.client()) as old:
        old.login("old")
        fresh = Certs(tmp_path, "fresh")
        os.replace(fresh.cert, certs.cert)
        os.replace(fresh.key, certs.key)
        tls_server.reload_tls()
        with pytest.raises(ssl.SSLError):
            ChatClient(tls_server.addresses["line-tls"], tls=certs.client())
        with ChatClient(tls_server.addresses["line-tls"], tls=fresh.client()) as new:
            new.login("new")
            new.say("hello old")
            assert old.expect("message")["text"] == "hello old"


def test_irc_over_tls(tls_server: Server, certs: Certs) -> None:
    """An IRC client registers on the IRC TLS port."""
    raw = socket.create_connection(tls_server.addresses["irc-tls"], timeout=TIMEOUT)
    with certs.client().wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(b"NICK dave\r\nUSER dave 0 * :Dave\r\n")
        data = b""
        while b" 376 " not in data and b" 422 " not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert b" 001 dave " in data


def test_tls_needs_a_loadable_certificate(tmp_path: Path, certs: Certs) -> None:
    """A missing key, a missing file, or a TLS listener without a certificate is a
    UsageError."""
    line = LineFace()
    config = make_config()
    config.tls_cert = str(certs.cert)
    with pytest.raises(UsageError, match="--tls-key"):
        Server(config=config).start()
    config.tls_key = str(tmp_path / "nosuch.pem")
    with pytest.raises(UsageError, match=r"nosuch\.pem"):
        Server(config=config).start()
    with pytest.raises(UsageError, match="needs a certificate"):
        Server(config=make_config(), faces=[line, TlsFace(line, port=0)]).start()


def test_chatkit_serve_tls_reloads_on_sighup_and_join_speaks_tls(
    tmp_path: Path, certs: Certs, serve: type[ServeProcess]
) -> None:
    """`chatkit serve --tls-cert --tls-key` listens with TLS on --tls-port; SIGHUP
    reloads the files; `chatkit join --tls` (trusting the CA through SSL_CERT_FILE)
    and `--tls --insecure` talk to it."""
    server = serve(
        "--db", ":memory:", "--tls-cert", str(certs.cert), "--tls-key", str(certs.key),
        "--tls-port", "0",
    )  # fmt: skip
    assert server.proc.stdout is not None
    while not (tls_line := server.proc.stdout.readline()).startswith("TLS: "):
        assert tls_line, "no TLS line"  # readline blocks until the server speaks or dies
    host, port = tls_line.split()[1].rsplit(":", 1)
    env = {**os.environ, "SSL_CERT_FILE": str(certs.ca_file)}
    joined = subprocess.run(
        [CHATKIT, "join", "--tls", "--host", host, "--port", port, "--nick", "eve"],
        input="hello over tls\n", capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr
    assert "hello over tls" in joined.stdout
    fresh = Certs(tmp_path, "fresh")
    os.replace(fresh.cert, certs.cert)
    os.replace(fresh.key, certs.key)
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:  # the reload happens on the server's main thread, soon
        try:
            with ChatClient((host, int(port)), tls=fresh.client()) as client:
                client.login("frank")
            break
        except ssl.SSLError:
            assert time.monotonic() < deadline, "the new certificate was never served"
    refused = subprocess.run(
        [CHATKIT, "join", "--tls", "--host", host, "--port", port, "--nick", "gus"],
        input="", capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert refused.returncode == 3 and "TLS with" in refused.stderr
    assert "not one this machine trusts" in refused.stderr and "--insecure" in refused.stderr
    insecure = subprocess.run(
        [CHATKIT, "join", "--tls", "--insecure", "--host", host, "--port", port, "--nick", "hal"],
        input="hi\n", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert insecure.returncode == 0, insecure.stderr
    # A health check speaks TLS too; the plain port is not mistaken for it.
    pinged = subprocess.run(
        [CHATKIT, "ping", "--tls", "--insecure", "--host", host, "--port", port],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert pinged.returncode == 0 and "pong from" in pinged.stdout, pinged.stderr
    plain_port = str(server.address[1])
    wrong = subprocess.run(
        [CHATKIT, "ping", "--tls", "--insecure", "--host", host, "--port", plain_port],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert wrong.returncode == 3 and "is this its TLS port?" in wrong.stderr, wrong.stderr
    code, _out, _err = server.stop()
    assert code == 0


def _read_to_end(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (fails the test after TIMEOUT)."""
    sock.settimeout(TIMEOUT)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_irssi_over_tls_logs_in_with_sasl(certs: Certs, tmp_path: Path) -> None:
    """irssi connects to the IRC TLS port, checking the certificate against the test CA,
    logs in to a registered nick with SASL PLAIN, and chats with a JSON client."""
    from test_irc_clients import Tmux, require

    require("irssi", "tmux")
    irc = IrcFace(port=0)
    line = LineFace()
    config = tls_config(certs)
    with (
        Server(config=config, faces=[line, irc, TlsFace(irc, port=0)]) as server,
        ChatClient(server.address, timeout=10) as jay,
    ):
        with ChatClient(server.address) as owner:
            owner.login("bob")
            owner.command("/register sesame-seed")
            owner.say("/quit")
            owner.wait_closed()  # logged out: bob is free for irssi
        jay.login("jay")
        _host, port = server.addresses["irc-tls"]
        home = tmp_path / "irssi"
        home.mkdir()
        (home / "config").write_text(
            "servers = ( {\n"
            # "localhost": irssi matches a host name, never an IP address, to the certificate.
            f'  address = "localhost"; chatnet = "chatkit"; port = "{port}"; autoconnect = "yes";\n'
            f'  use_tls = "yes"; tls_verify = "yes"; tls_cafile = "{certs.ca_file}";\n'
            "} );\n"
            "chatnets = { chatkit = {\n"
            '  type = "IRC"; sasl_mechanism = "PLAIN"; sasl_username = "bob";'
            ' sasl_password = "sesame-seed";\n'
            "}; };\n"
            "settings = {\n"
            '  core = { real_name = "Bob Example"; user_name = "bob"; nick = "bob";'
            ' settings_autosave = "no"; };\n'
            '  "irc/core" = { cmd_queue_speed = "0msec"; cmds_max_at_once = "100"; usermode = ""; };\n'
            '  "fe-common/core" = { autolog = "no"; };\n'
            "};\n"
        )
        client = Tmux(tmp_path, "irssi")
        try:
            client.start(["irssi", f"--home={home}", "-n", "bob"])
            try:
                jay.expect("join", nick="bob", room="#general")
                bob = server.hub.find("bob")
                assert bob is not None and bob.account == "bob"
                client.type("/window goto #general")
                client.type("hello over tls")
                assert jay.expect("message", nick="bob")["text"] == "hello over tls"
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nirssi's screen:\n{client.screen()}") from None
        finally:
            client.kill()


def test_a_parked_tls_connection_wakes_and_decrypts(certs: Certs) -> None:
    """A TLS client idle past idle_park is parked like a plain one (its SSLObject keeps
    its state, and holds no plaintext then); both ways work after it wakes."""
    line = LineFace()
    server = Server(config=tls_config(certs, idle_park=0.05), faces=[line, TlsFace(line, port=0)])
    with (
        server,
        ChatClient(server.addresses["line-tls"], tls=certs.client()) as secure,
        ChatClient(server.address) as plain,
    ):
        secure.login("ann")
        plain.login("bob")
        wait_until(lambda: server.parked >= 2, what="both parked")
        plain.say("to a parked tls client")
        assert secure.expect("message")["text"] == "to a parked tls client"
        for i in range(3):
            secure.say(f"over tls {i}")
            assert plain.expect("message", nick="ann")["text"] == f"over tls {i}"
    assert server.readers_resumed >= 2


def test_a_close_notify_ends_the_session_as_eof_does(tls_server: Server, certs: Certs) -> None:
    """A client that ends its TLS session (close_notify) and keeps the socket open is
    logged out at once, as if it had closed the connection."""
    with (
        ChatClient(tls_server.addresses["line-tls"], tls=certs.client()) as secure,
        ChatClient(tls_server.address) as plain,
    ):
        secure.login("ann")
        plain.login("bob")
        plain.expect("join", nick="bob")
        assert isinstance(secure.sock, ssl.SSLSocket)
        secure.sock.settimeout(10)
        with contextlib.suppress(OSError):  # the server closes without a close_notify
            secure.sock.unwrap()  # sends close_notify; the TCP connection stays
        assert plain.expect("leave", nick="ann")["reason"] == "connection closed"


def _tls_by_hand(
    address: tuple[str, int], certs: Certs, *, hold_finished: bool = False
) -> tuple[socket.socket, ssl.SSLObject, ssl.MemoryBIO, bytes]:
    """A TLS client over memory buffers, so that a test chooses what goes in one send:
    the socket, the TLS object, its outgoing buffer, and (``hold_finished``) the
    client's last handshake flight, not sent yet."""
    sock = socket.create_connection(address, timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = certs.client().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            if sent := outgoing.read():
                sock.sendall(sent)
            incoming.write(sock.recv(65536))
    finished = outgoing.read()
    if not hold_finished:
        sock.sendall(finished)
        finished = b""
    return sock, tls, outgoing, finished


def _close_notify(tls: ssl.SSLObject) -> None:
    with contextlib.suppress(ssl.SSLWantReadError):  # (the server's answer: not awaited)
        tls.unwrap()


def test_a_last_line_sent_with_the_close_notify_is_acted_on(
    tls_server: Server, certs: Certs
) -> None:
    """A last line without its newline and the close_notify in one packet: the line is
    acted on, as before a plain connection's EOF, then the client is logged out."""
    with ChatClient(tls_server.address) as plain:
        plain.login("bob")
        sock, tls, outgoing, _ = _tls_by_hand(tls_server.addresses["line-tls"], certs)
        with sock:
            tls.write(b'{"type":"hello","nick":"ann"}\n')
            sock.sendall(outgoing.read())
            plain.expect("join", nick="ann")
            tls.write(b'{"type":"say","text":"bye"}')
            _close_notify(tls)
            sock.sendall(outgoing.read())
            assert plain.expect("message", nick="ann")["text"] == "bye"
            plain.expect("leave", nick="ann")


def test_a_close_notify_with_the_handshake_ends_the_session(
    tls_server: Server, certs: Certs
) -> None:
    """The handshake's last flight, a hello and the close_notify in one packet, the
    socket kept open: logged in, then out at once."""
    with ChatClient(tls_server.address) as plain:
        plain.login("bob")
        address = tls_server.addresses["line-tls"]
        sock, tls, outgoing, finished = _tls_by_hand(address, certs, hold_finished=True)
        with sock:
            tls.write(b'{"type":"hello","nick":"ann"}\n')
            _close_notify(tls)
            sock.sendall(finished + outgoing.read())
            plain.expect("join", nick="ann")
            plain.expect("leave", nick="ann")


def test_serve_on_all_interfaces_gives_addresses_to_connect_to_for_every_face(
    certs: Certs, serve: type[ServeProcess]
) -> None:
    """On every interface, the banner gives this machine's addresses for IRC as for nc
    and the web, and for TLS the name the certificate holds (no address matches a
    certificate for irssi): never 0.0.0.0 as a place to connect to."""
    server = serve(
        "--host", "0.0.0.0", "--db", ":memory:", "--irc-port", "0",
        "--tls-cert", str(certs.cert), "--tls-key", str(certs.key),
        "--tls-port", "0", "--irc-tls-port", "0",
    )  # fmt: skip
    assert server.proc.stdout is not None
    while not server.lines[-1].startswith("IRC over TLS:"):
        server.lines.append(server.proc.stdout.readline())
        assert server.lines[-1], "no IRC over TLS line"
    banner = {line.split(":", 1)[0]: line for line in server.lines}
    irc = re.findall(r"irc://([^:\s]+):(\d+)", banner["IRC"])
    assert "127.0.0.1" in [host for host, _port in irc]
    assert "0.0.0.0" not in banner["IRC"]
    for host, port in irc:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
            sock.sendall(b"NICK ann\r\nUSER ann 0 * :Ann\r\nQUIT\r\n")
            assert b" 001 ann " in sock.makefile("rb").read()
    assert "(chatkit join --tls --host NAME --port " in banner["TLS"]
    assert "(irssi: /connect -tls NAME " in banner["IRC over TLS"]
    assert "NAME: the name your certificate holds" in banner["IRC over TLS"]
    code, _out, _err = server.stop()
    assert code == 0


def test_serve_refuses_a_tls_port_flag_nothing_would_listen_on(certs: Certs) -> None:
    """--tls-port, --irc-tls-port or --tls-only without a certificate exits 2 saying
    what it needs: a port asked for is never silently unused."""
    cases = [
        (["--tls-port", "0"], "--tls-port needs a certificate (--tls-cert and --tls-key"),
        (["--irc-port", "0", "--irc-tls-port", "0"], "--irc-tls-port needs a certificate"),
        (["--irc-tls-port", "0"], "--irc-tls-port needs a certificate"),
        (["--tls-only"], "TLS only needs a certificate"),
    ]
    for flags, error in cases:
        result = subprocess.run(
            [CHATKIT, "serve", "--port", "0", "--db", ":memory:", *flags],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 2, (flags, result.stderr)
        assert f"Error: {error}" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_face_with_a_tls_port_alone_listens_on_tls_alone(certs: Certs) -> None:
    """[faces.irc] and [faces.web] with a tls_port and no port: each face listens on its
    TLS port only (no port where passwords would travel in clear; such a config started
    neither face, silently)."""
    config = tls_config(certs)
    config.faces = {"irc": {"tls_port": 0}, "web": {"tls_port": 0}}
    server = Server(config=config, faces=_faces(config, None), plugins=[])
    with server:
        assert set(server.addresses) == {"line", "line-tls", "irc-tls", "web-tls"}
        with (
            socket.create_connection(server.addresses["irc-tls"], timeout=TIMEOUT) as raw,
            certs.client().wrap_socket(raw, server_hostname="localhost") as sock,
        ):
            sock.sendall(b"NICK ann\r\nUSER ann 0 * :Ann\r\nQUIT\r\n")
            assert b" 001 ann " in sock.makefile("rb").read()


def test_tls_only_listens_on_tls_ports_alone(certs: Certs) -> None:
    """[tls] only (--tls-only): every face listens on its TLS port alone, the line
    protocol's plain port included, and the server's address is its TLS port; a webhook
    bot posts over it (its connection is the line protocol's)."""
    config = tls_config(certs)
    config.tls_only = True
    config.faces = {"irc": {"tls_port": 0}, "web": {"tls_port": 0}}
    config.plugin_config["webhooks"] = {"incoming": {"port": 0, "tokens": {"ci": "T0KEN"}}}
    server = Server(config=config, faces=_faces(config, None), plugins=["webhooks"])
    with server:
        assert set(server.addresses) == {"line-tls", "irc-tls", "web-tls"}
        assert server.address == server.addresses["line-tls"]
        with ChatClient(server.address, tls=certs.client()) as alice:
            alice.login("alice")
            plugin = server.pluginmanager.get_plugin("webhooks")
            assert plugin is not None
            url = "http://{}:{}/rooms/general/messages".format(*plugin.incoming)
            request = urllib.request.Request(
                url, b"build passed", {"Authorization": "Bearer T0KEN"}, method="POST"
            )
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                assert response.status == 201
            assert alice.expect("message", nick="ci")["text"] == "build passed"


def test_chatkit_serve_tls_only_says_so_and_offers_no_nc(
    certs: Certs, serve: type[ServeProcess]
) -> None:
    """`chatkit serve --tls-only`: the banner's address is the TLS port, said to be the
    only one, with no `nc` line (nc speaks no TLS); `chatkit ping --tls` answers there."""
    server = serve(
        "--db", ":memory:", "--tls-cert", str(certs.cert), "--tls-key", str(certs.key),
        "--tls-port", "0", "--tls-only",
    )  # fmt: skip
    assert server.lines[0].rstrip().endswith(", TLS only"), server.lines
    host, port = server.address
    pinged = subprocess.run(
        [CHATKIT, "ping", "--tls", "--insecure", "--host", host, "--port", str(port)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert pinged.returncode == 0 and "pong from" in pinged.stdout, pinged.stderr
    code, out, _err = server.stop()
    assert code == 0
    assert "TLS: " in out and "try: nc" not in out


def test_tls_only_refuses_a_plain_port_and_needs_a_certificate(certs: Certs) -> None:
    """With TLS only, a face's plain port asked for (a flag or the file) is an error
    naming the TLS setting to use instead; TLS only without a certificate is one too,
    and a reload cannot turn it on or off."""
    config = tls_config(certs)
    config.tls_only = True
    with pytest.raises(UsageError, match=r"--irc-port would listen in clear.*--irc-tls-port"):
        _faces(config, 6667)
    with pytest.raises(UsageError, match=r"--web-port would listen in clear.*tls_port"):
        _faces(config, None, web_port=8080)
    for face in ("irc", "web"):
        config.faces = {face: {"port": 0}}
        with pytest.raises(UsageError, match=rf"\[faces.{face}\] port would listen in clear"):
            _faces(config, None)
    bare = make_config()
    bare.tls_only = True
    with pytest.raises(UsageError, match="TLS only needs a certificate"):
        bare.check()
    line = LineFace()
    with Server(config=tls_config(certs), faces=[line, TlsFace(line, port=0)], plugins=[]) as srv:
        only = tls_config(certs)
        only.tls_only = True
        assert "tls_only changes at the next restart" in srv.reload(only)
        assert set(srv.addresses) == {"line", "line-tls"}


def test_a_connection_ended_while_shaking_hands_does_not_linger(certs: Certs) -> None:
    """A TLS connection the server ends before its handshake is done, with a frame
    queued for it (the shutdown's notice), is closed at once: nothing can be sent to it
    (no session keys yet), so waiting for its queue to drain (linger) would only spin
    the writer until linger ran out."""
    from chatkit.frames import Frame

    line = LineFace()
    config = tls_config(certs, tls_handshake_timeout=30.0, linger=60.0)
    with (
        Server(config=config, faces=[line, TlsFace(line, port=0)], plugins=[]) as server,
        socket.create_connection(server.addresses["line-tls"], timeout=TIMEOUT) as stalled,
    ):
        stalled.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and nothing more
        wait_until(lambda: len(server._handshakes) == 1, 5, "the handshake under way")
        (conn,) = server.connections
        conn.push(Frame("notice", text="server shutting down"))  # (as the shutdown does)
        conn.finish("test")
        server.writer.wake()
        wait_until(lambda: conn.sock.fileno() == -1, 5, "the close, at once")
        assert server.writer.lingering == 0


def test_tls_turned_on_or_off_by_a_reload_waits_for_a_restart(certs: Certs) -> None:
    """A reload cannot add or remove TLS listeners: it says so, and the running server
    keeps its certificate files (TLS off in the file: renewals were no longer loaded,
    while the TLS port went on with the old certificate), and a changed TLS port is
    said to wait too."""
    line = LineFace()
    with Server(
        config=tls_config(certs), faces=[line, TlsFace(line, port=0)], plugins=[]
    ) as server:
        notes = server.reload(make_config())
        assert "TLS off at the next restart" in notes
        assert (server.config.tls_cert, server.config.tls_key) == (str(certs.cert), str(certs.key))
        server.reload_tls()  # (still reads the files)
        moved = tls_config(certs)
        moved.tls_port = 9999
        assert "tls_port changes at the next restart" in server.reload(moved)
    with Server(config=make_config(), plugins=[]) as plain:
        notes = plain.reload(tls_config(certs))
        assert "TLS on at the next restart" in notes
        assert plain.config.tls_cert is None
