"""The page's files (chatkit/faces/web/static.py), without sockets: what each request gets."""

from __future__ import annotations

import pytest

from chatkit.faces.web import static


@pytest.fixture(scope="module")
def files() -> dict[str, static.StaticFile]:
    return static.load()


def test_every_file_of_the_page_is_found(files: dict[str, static.StaticFile]) -> None:
    """The package's static folder is read whole; / is index.html."""
    assert {"/", "/index.html", "/app.js", "/style.css", "/icon.svg"} <= set(files)
    assert files["/"] is files["/index.html"]


def test_the_page_loads_nothing_from_elsewhere(files: dict[str, static.StaticFile]) -> None:
    """No CDN: the page names no other host (it works on a LAN without internet)."""
    for path in ("/index.html", "/app.js", "/style.css"):
        text = files[path].body.decode()
        assert "http://" not in text and "https://" not in text, path


def test_the_page_inserts_no_html(files: dict[str, static.StaticFile]) -> None:
    """The script never parses strings as HTML: text goes in as text."""
    script = files["/app.js"].body.decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


def test_query_strings_are_ignored(files: dict[str, static.StaticFile]) -> None:
    """A query string does not change which file is served."""
    response = static.respond(files, "GET", "/app.js?v=2", None)
    assert response.status_code == 200 and response.body == files["/app.js"].body


def test_etag_match_is_304(files: dict[str, static.StaticFile]) -> None:
    """If-None-Match with the file's ETag (among others) is 304 with no body."""
    etag = files["/style.css"].etag
    response = static.respond(files, "GET", "/style.css", f'"other", {etag}')
    assert response.status_code == 304 and response.body == b""
    assert response.headers["ETag"] == etag


@pytest.mark.parametrize("path", ["/x", "/static/app.js", "/%2e%2e/pyproject.toml", "//app.js"])
def test_unknown_paths_are_404(files: dict[str, static.StaticFile], path: str) -> None:
    """Only the package's own files are served, whatever the path spells."""
    assert static.respond(files, "GET", path, None).status_code == 404


def test_post_is_405(files: dict[str, static.StaticFile]) -> None:
    """Methods other than GET and HEAD get 405 naming the allowed ones."""
    response = static.respond(files, "POST", "/", None)
    assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD"
