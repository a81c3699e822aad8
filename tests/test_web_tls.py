"""The web face over TLS: the page over https and its WebSocket over wss, through a
TlsFace around the WebFace, with certificates made by trustme (tests/test_tls.py)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from test_tls import Certs, tls_config
from websockets.sync.client import connect
from websockets.typing import Origin

from chatkit import Server
from chatkit.faces.line import LineFace
from chatkit.faces.web import WebFace
from chatkit.server import TlsFace
from chatkit.testing import ChatClient


def test_the_page_and_its_websocket_over_tls(tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    web = WebFace(port=0)
    server = Server(
        config=tls_config(certs), faces=[LineFace(), web, TlsFace(web, port=0)], plugins=[]
    )
    with server:
        host, port = server.addresses["web-tls"]
        base = f"https://{host}:{port}"
        with urllib.request.urlopen(base + "/", context=certs.client(), timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        with (
            connect(
                f"wss://{host}:{port}/ws", origin=Origin(base), ssl=certs.client(), open_timeout=10
            ) as ws,
            ChatClient(server.address) as plain,
        ):
            ws.send(json.dumps({"type": "hello", "nick": "alice"}))
            assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
            plain.login("bob")
            plain.say("hi over tls")
            frames = [json.loads(ws.recv(timeout=10)) for _ in range(3)]
            assert {"type": "message", "nick": "bob", "text": "hi over tls"}.items() <= next(
                f for f in frames if f["type"] == "message"
            ).items()
