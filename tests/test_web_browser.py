"""The chat page in a real browser (Debian's Chromium through Playwright): people on
pages chat with each other and with a TCP client, see history, scroll back, survive a
server restart, and never get HTML from a message.

One browser for the whole session (launching one costs about a second); each test
opens its own contexts (separate localStorage) and pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import chromium_path, launch_args
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright
from webclient import base_url, web_server

from chatkit import Config, Server
from chatkit.faces.line import LineFace
from chatkit.faces.web import WebFace
from chatkit.testing import ChatClient, make_config

TIMEOUT = 10_000  # ms a browser test waits for what it expects


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless, shared by every browser test."""
    path = chromium_path()
    if path is None:
        pytest.fail("no Chromium: install Debian's chromium package (.ci/run does)")
    browser = playwright.chromium.launch(executable_path=path, headless=True, args=launch_args())
    yield browser
    browser.close()


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    made: list[BrowserContext] = []
    yield made
    for context in made:
        context.close()


def open_page(browser: Browser, contexts: list[BrowserContext], url: str) -> Page:
    """A page of its own (own localStorage) at ``url``."""
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    context.set_default_timeout(TIMEOUT)
    contexts.append(context)
    page = context.new_page()
    page.goto(url)
    return page


def log_in(page: Page, nick: str) -> None:
    page.fill("#nick", nick)
    page.press("#nick", "Enter")
    expect(page.locator("#chat-view")).to_be_visible()
    expect(page.locator("#rooms button", has_text="#general")).to_be_visible()


def say(page: Page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def pane(page: Page) -> str:
    return ".pane:not([hidden])"


def test_two_pages_and_a_tcp_client_chat(browser: Browser, contexts: list[BrowserContext]) -> None:
    """Two people on pages and one on a TCP JSON connection see each other's messages."""
    with web_server() as server:
        alice = open_page(browser, contexts, base_url(server))
        bob = open_page(browser, contexts, base_url(server))
        log_in(alice, "alice")
        log_in(bob, "bob")
        carol = ChatClient(server.address)
        carol.login("carol")
        say(alice, "hello from alice")
        expect(bob.locator(pane(bob))).to_contain_text("<alice> hello from alice")
        carol.expect("message", nick="alice", text="hello from alice")
        carol.say("hi pages")
        expect(alice.locator(pane(alice))).to_contain_text("<carol> hi pages")
        expect(bob.locator(pane(bob))).to_contain_text("<carol> hi pages")
        expect(alice.locator(pane(alice))).to_contain_text("carol joined #general")
        say(bob, "/me waves")
        carol.expect("message", nick="bob", text="waves", action=True)
        expect(alice.locator(f"{pane(alice)} .line.action")).to_contain_text("* bob waves")
        say(bob, "/nick robert")
        expect(alice.locator(pane(alice))).to_contain_text("bob is now known as robert")
        carol.close()
        expect(alice.locator(pane(alice))).to_contain_text("carol left #general")
        # The nick is remembered: a new page in the same browser profile offers it.
        again = alice.context.new_page()
        again.goto(base_url(server))
        expect(again.locator("#nick")).to_have_value("alice")


def test_history_shows_on_join(browser: Browser, contexts: list[BrowserContext]) -> None:
    """A page that joins a room shows the messages said there before."""
    with web_server() as server:
        carol = ChatClient(server.address)
        carol.login("carol")
        for i in range(3):
            carol.say(f"earlier {i}")
        carol.sync()
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        lines = page.locator(f"{pane(page)} .line.history")
        expect(lines).to_have_count(3)
        expect(lines.nth(0)).to_contain_text("<carol> earlier 0")
        expect(lines.nth(2)).to_contain_text("<carol> earlier 2")
        carol.close()


def test_scroll_back_loads_older(browser: Browser, contexts: list[BrowserContext]) -> None:
    """Scrolling to the top asks for older messages until the first one shows."""
    with web_server(disable=("flood",)) as server:
        carol = ChatClient(server.address)
        carol.login("carol")
        for i in range(130):
            carol.say(f"old {i}")
        carol.sync()
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        messages = page.locator(f"{pane(page)} .line.message")
        expect(messages).to_have_count(50)  # the replay on join
        expect(messages.first).to_contain_text("old 80")
        for count in (100, 130):
            page.locator(pane(page)).evaluate("pane => { pane.scrollTop = 0; }")
            expect(messages).to_have_count(count)
        expect(messages.first).to_contain_text("<carol> old 0")
        expect(page.locator(f"{pane(page)} .older")).to_contain_text("beginning")
        carol.close()


def test_reconnects_after_a_server_restart(
    browser: Browser, contexts: list[BrowserContext], tmp_path: Path
) -> None:
    """When the server restarts, the page reconnects by itself, resumes, and chats on."""
    config = Config()
    config.plugin_config["history"] = {"db": str(tmp_path / "history.sqlite3")}
    first = Server(config=make_config(config), faces=[LineFace(), WebFace(port=0)])
    first.start()
    port = first.addresses["web"][1]
    try:
        page = open_page(browser, contexts, base_url(first))
        log_in(page, "alice")
        say(page, "before the restart")
        expect(page.locator(pane(page))).to_contain_text("before the restart")
    finally:
        first.shutdown()
    expect(page.locator("#status")).to_contain_text("reconnecting")
    config = Config()
    config.plugin_config["history"] = {"db": str(tmp_path / "history.sqlite3")}
    second = Server(config=make_config(config), faces=[LineFace(), WebFace(port=port)])
    second.start()
    try:
        expect(page.locator("#status")).to_have_text("connected")
        carol = ChatClient(second.address)
        carol.login("carol")
        carol.say("after the restart")
        expect(page.locator(pane(page))).to_contain_text("<carol> after the restart")
        say(page, "still here")
        carol.expect("message", nick="alice", text="still here")
        # Resumed with since: the message before the restart shows once, not twice.
        expect(page.locator(f"{pane(page)} .line", has_text="before the restart")).to_have_count(1)
        carol.close()
    finally:
        second.shutdown()


def test_markup_in_a_message_is_text(browser: Browser, contexts: list[BrowserContext]) -> None:
    """A message holding <script> and other markup shows as text and runs nothing."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        carol = ChatClient(server.address)
        carol.login("carol")
        evil = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"><b>bold</b>'
        carol.say(evil)
        expect(page.locator(pane(page))).to_contain_text(evil)
        assert page.evaluate("window.pwned") is None
        assert page.locator("#log script, #log img, #log b").count() == 0
        carol.close()


def test_commands_private_and_errors(browser: Browser, contexts: list[BrowserContext]) -> None:
    """Tab completes a command, a private message opens a conversation with an unread
    count, and an error shows as a line, all from the keyboard."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        carol = ChatClient(server.address)
        carol.login("carol")
        expect(page.locator(pane(page))).to_contain_text("carol joined")
        page.fill("#input", "/wh")
        expect(page.locator("#suggest")).to_contain_text("/who")
        page.press("#input", "Tab")
        expect(page.locator("#input")).to_have_value("/who ")
        page.press("#input", "Enter")
        expect(page.locator(pane(page))).to_contain_text("carol")
        say(page, "/nosuch")
        expect(page.locator(f"{pane(page)} .line.error")).to_contain_text("Unknown command")
        carol.say("/msg alice psst")
        conversation = page.locator("#privates button", has_text="carol")
        expect(conversation.locator(".unread")).to_have_text("1")
        conversation.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#title")).to_have_text("private: carol")
        page.keyboard.type("hello back")
        page.keyboard.press("Enter")
        reply = carol.expect("private", **{"from": "alice"})
        assert reply["text"] == "hello back"
        carol.close()
