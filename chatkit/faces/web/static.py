"""The chat page's files, shipped inside the package and served on plain HTTP GET.

This file knows no socket. :func:`load` reads ``chatkit/faces/web/static/`` once (a
server does it when its web face is made, never at import), and :func:`respond`
turns a request's method, path and ``If-None-Match`` into a
:class:`websockets.http11.Response`: the file with its content type and an ``ETag``,
``304`` when the browser's copy is current, ``404`` for anything else, ``405`` for
methods other than GET and HEAD. No file is ever read from a path the client chose:
the table is built from the package's own listing.
"""

from __future__ import annotations

import email.utils
import hashlib
import importlib.resources
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response

__all__ = ["CONTENT_TYPES", "StaticFile", "error_response", "load", "respond"]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
}
"""Content types by file suffix; a file with another suffix is not served."""

# Every file is revalidated (no-cache) against its ETag: a page served by a chat
# server changes with the server's version, and a 304 costs one round trip. The page
# itself says what it may load (its own origin only: no CDN, no inline script), and
# where it may connect: its own server alone ('self' covers ws: and wss: to the page's
# host and port, CSP Level 3; "ws: wss:" let a page connect to any WebSocket server).
CACHE_CONTROL = "no-cache"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class StaticFile:
    """One file of the page."""

    body: bytes
    """Its bytes."""
    content_type: str
    """Its ``Content-Type``."""
    etag: str
    """Its ``ETag``: a quoted hash of :attr:`body`."""


def load(package: str = "chatkit.faces.web", folder: str = "static") -> dict[str, StaticFile]:
    """The files of ``package``'s ``folder``, by URL path (``/`` is ``index.html``)."""
    files: dict[str, StaticFile] = {}
    root = importlib.resources.files(package) / folder
    for entry in root.iterdir():
        name = entry.name
        suffix = name[name.rfind(".") :] if "." in name else ""
        if not entry.is_file() or suffix not in CONTENT_TYPES or name.startswith("."):
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        files["/" + name] = StaticFile(body, CONTENT_TYPES[suffix], etag)
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


def _headers(content_type: str, length: int) -> Headers:
    return Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Server", "chatkit"),
            ("Connection", "close"),
            ("Content-Type", content_type),
            ("Content-Length", str(length)),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
        ]
    )


def error_response(status: int, reason: str, text: str) -> Response:
    """A plain-text response with ``status`` (404, 405, 503 ...)."""
    body = (text + "\n").encode()
    return Response(status, reason, _headers("text/plain; charset=utf-8", len(body)), body)


def respond(
    files: dict[str, StaticFile], method: str, target: str, if_none_match: str | None
) -> Response:
    """The response to ``method target`` (``target`` as in the request line)."""
    if method not in ("GET", "HEAD"):
        response = error_response(405, "Method Not Allowed", f"{method} is not allowed here")
        response.headers["Allow"] = "GET, HEAD"
        return response
    path = urlsplit(target).path
    found = files.get(path)
    if found is None:
        return error_response(404, "Not Found", f"{path} is not here; the chat is at /")
    if if_none_match is not None and found.etag in (t.strip() for t in if_none_match.split(",")):
        headers = _headers(found.content_type, len(found.body))
        del headers["Content-Length"]
        headers["ETag"] = found.etag
        headers["Cache-Control"] = CACHE_CONTROL
        return Response(304, "Not Modified", headers, b"")
    headers = _headers(found.content_type, len(found.body))
    headers["ETag"] = found.etag
    headers["Cache-Control"] = CACHE_CONTROL
    if found.content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return Response(200, "OK", headers, b"" if method == "HEAD" else found.body)
