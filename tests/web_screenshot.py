"""Make docs/web.png, the chat page's picture in the README and docs/web.md.

Run it again after changing the page: ``uv run python tests/web_screenshot.py``. It
starts a server, has a few TCP clients talk, logs a page in through Debian's
Chromium (as the browser tests do) and saves what the page shows.
"""

from __future__ import annotations

from pathlib import Path

# Run as a script, its folder (tests/) is on sys.path, as under pytest.
from browser import chromium_path, launch_args
from playwright.sync_api import expect, sync_playwright
from webclient import base_url, web_server

from chatkit.testing import ChatClient

OUT = Path(__file__).parent.parent / "docs" / "web.png"


def main() -> None:
    path = chromium_path()
    if path is None:
        raise SystemExit("no Chromium: apt-get install chromium")
    with web_server(disable=("flood",)) as server, sync_playwright() as p:
        bob, carol = ChatClient(server.address), ChatClient(server.address)
        bob.login("bob")
        carol.login("carol")
        bob.say("morning! the build is green again")
        carol.say("nice. who broke it?")
        bob.say("/me points at the flaky test")
        carol.say("/join #random")
        carol.sync()
        browser = p.chromium.launch(executable_path=path, args=launch_args())
        page = browser.new_page(viewport={"width": 980, "height": 560})
        page.goto(base_url(server))
        page.fill("#nick", "alice")
        page.press("#nick", "Enter")
        expect(page.locator("#rooms button", has_text="#general")).to_be_visible()
        page.fill("#input", "/join #random")
        page.press("#input", "Enter")
        expect(page.locator("#rooms button", has_text="#random")).to_be_visible()
        page.locator("#rooms button", has_text="#general").click()
        bob.say("alice: can you look at the web page on a phone?")
        carol.say("lunch at noon?", "#random")
        carol.say("/msg alice the deploy key is in the usual place")
        bob.sync()
        carol.sync()
        expect(page.locator("#privates button")).to_have_count(1)
        page.fill("#input", "sure, after lunch")
        page.press("#input", "Enter")
        page.fill("#input", "/wh")
        expect(page.locator(".pane:not([hidden])")).to_contain_text("after lunch")
        page.screenshot(path=str(OUT))
        browser.close()
        bob.close()
        carol.close()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
