"""The chat page in a real browser (Debian's Chromium through Playwright): people on
pages chat with each other and with a TCP client, see history, scroll back, survive a
server restart, and never get HTML from a message. (A message line's text holds a colon
after its nick, "<carol>: hi", for screen readers alone: unseen.)

One browser for the whole session (launching one costs about a second); each test
opens its own contexts (separate localStorage) and pages.
"""

from __future__ import annotations

import colorsys
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from browser import chromium_path, launch_args
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    WebSocketRoute,
    expect,
    sync_playwright,
)
from test_tls import Certs, tls_config
from webclient import base_url, web_server

from chatkit import Config, Reject, Server, hookimpl
from chatkit.faces.line import LineFace
from chatkit.faces.web import WebFace
from chatkit.names import fold
from chatkit.server import TlsFace
from chatkit.testing import ChatClient, make_config, wait_until

TIMEOUT = 10_000  # ms a browser test waits for what it expects


def _from(nick: str) -> Callable[[dict[str, Any]], bool]:
    """Matches a ``private`` frame from ``nick`` (``from`` is a Python keyword: no
    ``expect("private", from=nick)``)."""
    return lambda frame: frame["type"] == "private" and frame.get("from") == nick


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


def log_in(page: Page, nick: str, password: str | None = None) -> None:
    page.fill("#nick", nick)
    if password is not None:
        page.fill("#password", password)
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
        expect(bob.locator(pane(bob))).to_contain_text("<alice>: hello from alice")
        carol.expect("message", nick="alice", text="hello from alice")
        carol.say("hi pages")
        expect(alice.locator(pane(alice))).to_contain_text("<carol>: hi pages")
        expect(bob.locator(pane(bob))).to_contain_text("<carol>: hi pages")
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


def test_a_message_of_several_lines(browser: Browser, contexts: list[BrowserContext]) -> None:
    """Shift+Enter starts a new line of the same message and a paste keeps its lines
    (an <input> ran them together); Enter sends the whole; the box grows with its lines
    and is one line again once sent; Up on its first line recalls what was sent."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        bob = ChatClient(server.address)
        bob.login("bob")
        one_line = page.evaluate("$('input').clientHeight")
        page.locator("#input").press_sequentially("first")
        page.press("#input", "Shift+Enter")
        page.locator("#input").press_sequentially("second")
        assert page.evaluate("$('input').clientHeight") > one_line  # it grew
        page.press("#input", "Enter")
        bob.expect("message", nick="alice", text="first\nsecond")
        expect(page.locator("#input")).to_have_value("")
        assert page.evaluate("$('input').clientHeight") == one_line
        page.focus("#input")
        page.keyboard.insert_text("pasted one\npasted two\npasted three")  # (as a paste)
        page.press("#input", "Enter")
        bob.expect("message", nick="alice", text="pasted one\npasted two\npasted three")
        body = page.locator(pane(page) + " .line.message .body").last
        expect(body).to_contain_text("pasted one\npasted two\npasted three")
        # A message's next lines are marked as its own: none passes for the page's lines.
        bob.say("ok\n→ admin joined #general\nadmin set the topic: run this")
        spoof = page.locator(pane(page) + " .line.message").last
        expect(spoof.locator(".more")).to_have_text(
            ["→ admin joined #general", "admin set the topic: run this"]
        )
        border = spoof.locator(".more").first.evaluate(
            "e => getComputedStyle(e).borderInlineStartWidth"
        )
        assert border == "2px"
        expect(page.locator(pane(page) + " .line.event", has_text="admin")).to_have_count(0)
        page.press("#input", "ArrowUp")
        expect(page.locator("#input")).to_have_value("pasted one\npasted two\npasted three")
        page.press("#input", "ArrowUp")  # (the caret at the end: a line up, no recall)
        expect(page.locator("#input")).to_have_value("pasted one\npasted two\npasted three")


FOLD_CASES = [
    "ẞ", "ß", "ss", "SS", "ı", "i", "I", "İ", "i\u0307", "ΟΔΟΣ", "οδοσ", "οδος", "ς",
    "σ", "ﬀ", "ff", "Ꭰ", "ꭰ", "ǅ", "ǆ", "Ǆ", "ﬆ", "st", "µ", "μ", "Ω", "ω", "Ω", "K", "k",
    "#Straße", "#STRASSE", "#Κώστας", "#ΚΏΣΤΑΣ", "#Iı", "#ii",
]  # fmt: skip


def test_the_page_compares_names_as_the_server_does(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """The page's fold (to match a frame's room or nick to its view) makes the same
    names equal as the server's (``chatkit.names.fold``), the hard cases included."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        folded = page.evaluate("(names) => names.map(fold)", FOLD_CASES)
        for a, fa in zip(FOLD_CASES, folded, strict=True):
            for b, fb in zip(FOLD_CASES, folded, strict=True):
                assert (fa == fb) == (fold(a) == fold(b)), (a, b)


def test_the_page_over_https_chats_over_wss(
    browser: Browser, contexts: list[BrowserContext], tmp_path: Path
) -> None:
    """Served over TLS, the page opens its WebSocket over wss to its own server, which its
    Content-Security-Policy allows ('self'), and chats."""
    certs = Certs(tmp_path)
    web = WebFace(port=0)
    with Server(config=tls_config(certs), faces=[LineFace(), web, TlsFace(web, port=0)]) as server:
        host, port = server.addresses["web-tls"]
        context = browser.new_context(ignore_https_errors=True)  # (trustme's own CA)
        context.set_default_timeout(TIMEOUT)
        contexts.append(context)
        page = context.new_page()
        page.goto(f"https://{host}:{port}/")
        log_in(page, "alice")
        bob = ChatClient(server.address)
        bob.login("bob")
        bob.say("hi over wss")
        expect(page.locator(pane(page))).to_contain_text("<bob>: hi over wss")


def test_keyboard_screen_readers_and_a_phone(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """No keyboard trap in the message box (Tab moves on when there is nothing to
    complete, Shift+Tab moves back); a live message is announced alone, the panes are
    not live (a replay would be read out whole); a message's text has its own direction,
    whatever the nick's; on a phone's width a long room name, or an unread badge out of
    the room bar's view, does not push the page sideways."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        page.fill("#input", "hello there ")
        page.press("#input", "Tab")
        expect(page.locator("#compose button")).to_be_focused()
        page.keyboard.press("Shift+Tab")
        expect(page.locator("#input")).to_be_focused()
        expect(page.locator("#input")).to_have_value("hello there ")
        assert page.locator("[aria-live]").evaluate_all("els => els.map(e => e.id)") == [
            "status",
            "announce",
        ]
        bob = ChatClient(server.address)
        bob.login("bob")
        bob.say("مرحبا?")
        expect(page.locator("#announce p").last).to_have_text("bob: مرحبا?")
        text = page.locator(pane(page) + " .line .text").last
        assert text.evaluate("e => e.matches(':dir(rtl)')")
        david = ChatClient(server.address)
        david.login("דוד")
        david.say("hello world, how are you?")
        expect(page.locator("#announce p").last).to_have_text("דוד: hello world, how are you?")
        # Lines that come together are each read (one node each), an action as shown.
        david.say("one")
        david.say("/me waves")
        expect(page.locator("#announce p")).to_contain_text(
            ["דוד: one", "* דוד waves"]
        )  # (the last ones, in order)
        text = page.locator(pane(page) + " .line .text").last
        assert text.evaluate("e => e.matches(':dir(ltr)')")
        expect(page.get_by_role("main")).to_be_visible()
        page.set_viewport_size({"width": 360, "height": 640})
        say(page, "/join #" + "a" * 40)
        expect(page.locator("#title")).to_have_text("#" + "a" * 40)
        say(page, "/join #dev")
        expect(page.locator("#title")).to_have_text("#dev")
        # A sidebar button keeps the keyboard's focus while the sidebar is redrawn
        # (an unread message), and a private message elsewhere is read out, named.
        page.locator("#rooms button", has_text="#general").focus()
        bob.say("/msg alice psst")
        expect(page.locator("#privates .unread")).to_have_text("unread: 1")
        expect(page.locator("#rooms button", has_text="#general")).to_be_focused()
        expect(page.locator("#announce p").last).to_have_text("(private, bob) bob: psst")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        # On a phone's width the sidebar's headings are hidden from sight only.
        assert page.get_by_role("heading", name="Private").count() == 1
        assert page.evaluate("document.documentElement.scrollHeight") <= 640


def test_the_topic_shows_in_the_top_bar(browser: Browser, contexts: list[BrowserContext]) -> None:
    """A room's topic shows beside its name: the one it had when the page joined, then
    each change, with a line in the room for each; switching rooms switches the topic."""
    with web_server() as server:
        carol = ChatClient(server.address)
        carol.login("carol")
        carol.say("/topic Release on Friday")
        carol.expect("topic")
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        expect(page.locator("#topic")).to_have_text("Release on Friday")
        expect(page.locator(pane(page))).to_contain_text("topic: Release on Friday (set by carol)")
        carol.say("/topic Release on Monday")
        expect(page.locator("#topic")).to_have_text("Release on Monday")
        expect(page.locator(pane(page))).to_contain_text("carol set the topic: Release on Monday")
        say(page, "/join #quiet")
        expect(page.locator("#title")).to_have_text("#quiet")
        expect(page.locator("#topic")).to_have_text("")
        page.locator("#rooms button", has_text="#general").click()
        expect(page.locator("#topic")).to_have_text("Release on Monday")
        drop_and_resume(page)  # the rejoin's topic is the one shown: no line again
        carol.say("after the rejoin")  # (comes after the rejoin's topic frame)
        expect(page.locator(pane(page))).to_contain_text("after the rejoin")
        expect(page.locator(f"{pane(page)} .line", has_text="Release on Monday")).to_have_count(1)
        carol.say("/topic -")
        expect(page.locator(pane(page))).to_contain_text("carol cleared the topic")
        expect(page.locator("#topic")).to_have_text("")
        carol.close()


def test_a_long_topic_shows_whole_when_focused(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """A topic too long for the top bar is cut short there; focused (Tab reaches it, as
    a click does) it shows whole, for sighted keyboard users too (its title was the
    only way to read it: a mouse's)."""
    with web_server() as server:
        carol = ChatClient(server.address)
        carol.login("carol")
        long = "Release notes: " + " ".join(f"item{i}" for i in range(40))
        carol.say(f"/topic {long}")
        carol.expect("topic")
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        topic = page.locator("#topic")
        expect(topic).to_have_text(long)
        cut = topic.evaluate("t => t.scrollWidth > t.clientWidth")
        assert cut
        topic.focus()
        expect(topic).to_be_focused()
        assert topic.evaluate("t => t.scrollWidth <= t.clientWidth")
        carol.close()


def test_members_away_are_marked(browser: Browser, contexts: list[BrowserContext]) -> None:
    """The members list marks those away: known from /who when the page joins, then as
    they go away, come back, join while away or rename; the page's own /away too."""
    with web_server() as server:
        carol = ChatClient(server.address)
        carol.login("carol")
        carol.say("/away lunch")
        carol.expect("reply", command="away")
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        members = page.locator("#members")
        expect(members).to_have_text("alice, carol (away)")
        carol.say("/away")
        expect(members).to_have_text("alice, carol")
        carol.say("/nick carl")
        carol.say("/away brb")
        expect(members).to_have_text("alice, carl (away)")
        dave = ChatClient(server.address)
        dave.login("dave", room="#side")
        dave.say("/away gone")
        dave.expect("reply", command="away")
        dave.say("/join #general")
        expect(members).to_have_text("alice, carl (away), dave (away)")
        say(page, "/away reading")
        expect(members).to_have_text("alice (away), carl (away), dave (away)")
        dave.close()
        expect(members).to_have_text("alice (away), carl (away)")
        carol.close()


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
        expect(lines.nth(0)).to_contain_text("<carol>: earlier 0")
        expect(lines.nth(2)).to_contain_text("<carol>: earlier 2")
        carol.close()


def said_before(server: Server, count: int) -> ChatClient:
    """carol, having said ``old 0`` to ``old COUNT-1`` in #general (stored by now)."""
    carol = ChatClient(server.address)
    carol.login("carol")
    for i in range(count):
        carol.say(f"old {i}")
    carol.sync()
    return carol


def test_scroll_back_loads_older(browser: Browser, contexts: list[BrowserContext]) -> None:
    """Scrolling to the top asks for older messages until the first one shows."""
    with web_server(disable=("flood",)) as server:
        carol = said_before(server, 130)
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        messages = page.locator(f"{pane(page)} .line.message")
        expect(messages).to_have_count(50)  # the replay on join
        expect(messages.first).to_contain_text("old 80")
        for count in (100, 130):
            page.locator(pane(page)).evaluate("pane => { pane.scrollTop = 0; }")
            expect(messages).to_have_count(count)
        expect(messages.first).to_contain_text("<carol>: old 0")
        expect(page.locator(f"{pane(page)} .older")).to_contain_text("beginning")
        carol.close()


def test_a_scroll_to_the_top_while_a_page_loads_asks_for_the_next_once_it_ends(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """Scrolled to the top while a page of older messages is still arriving (a scroll
    then asks for nothing): the page's end asks for the next one at once, rather than
    leaving the reader at the top until they scroll again."""
    with web_server(disable=("flood",)) as server:
        carol = said_before(server, 130)
        page = open_page(browser, contexts, base_url(server))
        holding, held = [False], []  # the ends of pages (history frames) held back

        def route(ws: WebSocketRoute) -> None:
            to_server = ws.connect_to_server()

            def to_page(message: str | bytes) -> None:
                if holding[0] and json.loads(message).get("type") == "history":
                    held.append(message)
                else:
                    ws.send(message)

            to_server.on_message(to_page)
            routes.append(ws)

        routes: list[WebSocketRoute] = []
        page.route_web_socket(re.compile(r"/ws$"), route)
        log_in(page, "alice")
        messages = page.locator(f"{pane(page)} .line.message")
        expect(messages).to_have_count(50)  # the replay on join
        expect(page.locator(f"{pane(page)} .older")).to_contain_text("Scroll up")
        holding[0] = True
        page.locator(pane(page)).evaluate("pane => { pane.scrollTop = 0; }")
        expect(messages).to_have_count(100)  # the page's messages, not yet its end
        wait_until(lambda: held, 10, "the page's end")
        # Too soon: the scroll (its event handled, the page's own listener first)
        # comes while the page is still loading.
        page.locator(pane(page)).evaluate(
            """pane => new Promise(done => {
                pane.addEventListener("scroll", () => done(), { once: true });
                pane.scrollTop = 0;
            })"""
        )
        holding[0] = False
        routes[0].send(held.pop())
        expect(messages).to_have_count(130)
        expect(messages.first).to_contain_text("<carol>: old 0")
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
        expect(page.locator(pane(page))).to_contain_text("<carol>: after the restart")
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
    """Tab completes a command (and says so to a screen reader, with how many fit), a
    private message opens a conversation with an unread count, and an error shows as a
    line, all from the keyboard."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        carol = ChatClient(server.address)
        carol.login("carol")
        expect(page.locator(pane(page))).to_contain_text("carol joined")
        page.fill("#input", "/wh")
        # The list a screen reader knows as the box's: the first option, the one Tab
        # takes, its choice.
        options = page.get_by_role("listbox", name="Commands that fit").get_by_role("option")
        expect(options.first).to_contain_text("/who")
        expect(options.first).to_have_attribute("aria-selected", "true")
        first = options.first.get_attribute("id")
        expect(page.locator("#input")).to_have_attribute("aria-activedescendant", first or "-")
        page.press("#input", "Escape")
        expect(page.locator("#suggest")).to_be_hidden()
        expect(page.locator("#input")).not_to_have_attribute(
            "aria-activedescendant", re.compile(".")
        )
        page.fill("#input", "/wh")
        expect(page.locator("#suggest")).to_contain_text("/who")
        page.press("#input", "Tab")
        expect(page.locator("#input")).to_have_value("/who ")
        expect(page.locator("#announce p").last).to_have_text("Completed: /who")
        page.fill("#input", "/m")  # /me, /msg: the first, then the next
        page.press("#input", "Tab")
        expect(page.locator("#announce p").last).to_have_text(
            re.compile(r"^Completed: /m\w+ \(\d+ commands fit: Tab again for the next\)$")
        )
        page.fill("#input", "/who")
        page.press("#input", "Enter")
        expect(page.locator(pane(page))).to_contain_text("carol")
        say(page, "/nosuch")
        expect(page.locator(f"{pane(page)} .line.error")).to_contain_text("Unknown command")
        carol.say("/msg alice psst")
        conversation = page.locator("#privates button", has_text="carol")
        expect(conversation.locator(".unread")).to_have_text("unread: 1")  # (the words: hidden)
        conversation.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#title")).to_have_text("private: carol")
        page.keyboard.type("hello back")
        page.keyboard.press("Enter")
        reply = carol.expect(_from("alice"))
        assert reply["text"] == "hello back"
        carol.close()


def test_private_scroll_back_and_actions(browser: Browser, contexts: list[BrowserContext]) -> None:
    """A registered nick logs in with its password; a private conversation opened with
    /query shows its last page and loads older ones on scrolling up (accounts: the
    account's own history); /me there is an action to that person, on both pages."""
    with web_server(disable=("flood",)) as server:
        alice, carol = ChatClient(server.address), ChatClient(server.address)
        alice.login("alice")
        alice.command("/register alice-password")
        carol.login("carol")
        for i in range(70):
            sender, other = (alice, "carol") if i % 2 else (carol, "alice")
            sender.say(f"/msg {other} <b>p {i}</b>")
            sender.expect("private", text=f"<b>p {i}</b>")  # in this order: one sender at a time
        alice.say("/quit")
        alice.wait_closed()
        alice.close()
        page = open_page(browser, contexts, base_url(server))
        page.fill("#nick", "   ")  # (passes `required`: said, not silently ignored)
        page.press("#nick", "Enter")
        expect(page.locator("#login-error")).to_have_text("Type a nick: spaces alone are none.")
        page.fill("#nick", "alice")
        page.fill("#password", "wrong-password")
        page.press("#nick", "Enter")
        expect(page.locator("#login-error")).to_contain_text("Wrong password")
        # The error is the field's, for screen readers: invalid, and described by it (a
        # wrong password's is the password field's, focused).
        expect(page.locator("#password")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#password")).to_be_focused()
        expect(page.locator("#nick")).not_to_have_attribute("aria-invalid", "true")
        expect(page.get_by_label("Password")).to_have_accessible_description(
            re.compile("Wrong password")
        )
        page.fill("#password", "alice-password")
        page.press("#password", "Enter")
        expect(page.locator("#chat-view")).to_be_visible()
        say(page, "/query carol")
        expect(page.locator("#title")).to_have_text("private: carol")
        messages = page.locator(f"{pane(page)} .line.message")
        expect(messages).to_have_count(50)
        expect(messages.first).to_contain_text("<carol>: <b>p 20</b>")
        page.locator(pane(page)).evaluate("pane => { pane.scrollTop = 0; }")
        expect(messages).to_have_count(70)
        expect(messages.first).to_contain_text("<carol>: <b>p 0</b>")
        expect(messages.nth(1)).to_contain_text("<alice>: <b>p 1</b>")
        expect(page.locator(f"{pane(page)} .older")).to_contain_text("beginning")
        assert page.locator("#log b").count() == 0
        # /me in private: an action to carol (a TCP client), and one from her.
        say(page, "/me waves")
        action = carol.expect("private", text="waves")
        assert (action["from"], action["to"], action["action"]) == ("alice", "carol", True)
        carol.say("/describe alice bows")
        actions = page.locator(f"{pane(page)} .line.action")
        expect(actions).to_have_count(2)
        expect(actions.nth(0)).to_contain_text("* alice waves")
        expect(actions.nth(1)).to_contain_text("* carol bows")
        # And between two pages: both show the action as one.
        bob = open_page(browser, contexts, base_url(server))
        log_in(bob, "bob")
        say(page, "/query bob")
        expect(page.locator("#title")).to_have_text("private: bob")
        say(page, "/me nods")
        expect(page.locator(f"{pane(page)} .line.action")).to_contain_text("* alice nods")
        bob.locator("#privates button", has_text="alice").click()
        expect(bob.locator("#title")).to_have_text("private: alice")
        expect(bob.locator(f"{pane(bob)} .line.action")).to_contain_text("* alice nods")
        carol.close()


def test_own_earlier_private_messages_stay_in_their_conversation(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """Logged in as another spelling of its nick (ALICE for alice), the page files the
    conversation's history, its own earlier lines included, under the other party, not
    under a conversation with itself."""
    with web_server(disable=("flood",)) as server:
        alice, bob = ChatClient(server.address), ChatClient(server.address)
        alice.login("alice")
        alice.command("/register alice-password")
        bob.login("bob")
        alice.say("/msg bob from alice")
        bob.expect("private", text="from alice")
        bob.say("/msg alice from bob")
        alice.expect("private", text="from bob")
        alice.say("/quit")
        alice.wait_closed()
        alice.close()
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "ALICE", password="alice-password")
        say(page, "/query bob")
        lines = page.locator(f"{pane(page)} .line.message")
        expect(lines).to_have_count(2)
        expect(lines.nth(0)).to_contain_text("<alice>: from alice")
        expect(page.locator("#privates button")).to_have_count(1)  # bob's alone
        bob.close()


def test_a_conversation_across_a_rename_is_one_view(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """With accounts a private conversation follows its accounts across renames: its
    page (bob's lines from before he was bobby among them) fills the one view asked
    for, named by the page's frames (with), not a view per earlier nick."""
    with web_server(disable=("flood",)) as server:
        alice, bob = ChatClient(server.address), ChatClient(server.address)
        alice.login("alice")
        alice.command("/register alice-password")
        bob.login("bob")
        bob.command("/register bobs-password")
        bob.say("/msg alice one")
        alice.expect("private", text="one")
        bob.say("/nick bobby")
        bob.expect("nick")
        bob.say("/msg alice three")
        alice.expect("private", text="three")
        alice.say("/quit")
        alice.wait_closed()
        bob.close()
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice", password="alice-password")
        say(page, "/query bobby")
        lines = page.locator(f"{pane(page)} .line.message")
        expect(lines).to_have_count(2)
        expect(lines.nth(0)).to_contain_text("<bob>: one")
        expect(page.locator("#privates button")).to_have_count(1)  # bobby's alone
        alice.close()


def test_private_history_needs_identifying(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """With accounts, a conversation of a nick that has not identified says how to see
    its history; after /register the page asks again, and shows what the account got."""
    with web_server(disable=("flood",)) as server:
        carol = ChatClient(server.address)
        carol.login("carol")
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "dave")
        carol.say("/msg dave before")
        page.locator("#privates button", has_text="carol").click()
        older = page.locator(f"{pane(page)} .older")
        expect(older).to_contain_text("/identify PASSWORD")
        expect(page.locator(f"{pane(page)} .line.message")).to_have_count(1)  # live, shown
        expect(page.locator(f"{pane(page)} .line.error")).to_have_count(0)
        say(page, "/register dave-password")
        expect(older).to_contain_text("beginning")
        carol.say("/msg dave after")
        expect(page.locator(f"{pane(page)} .line.message")).to_have_count(2)
        carol.close()


@pytest.mark.parametrize(
    ("disable", "says"),
    [(("accounts",), "does not keep private messages"), (("history",), "keeps no history")],
    ids=["private-off", "no-history"],
)
def test_private_history_not_kept(
    browser: Browser, contexts: list[BrowserContext], disable: tuple[str, ...], says: str
) -> None:
    """Without accounts private messages are not stored (by default), and without the
    history plugin nothing is: a conversation says so at its top, not as an error."""
    with web_server(disable=disable) as server:
        carol = ChatClient(server.address)
        carol.login("carol")
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        say(page, "/query carol")
        expect(page.locator(f"{pane(page)} .older")).to_contain_text(says)
        say(page, "hi carol")
        assert carol.expect(_from("alice"))["text"] == "hi carol"
        expect(page.locator(f"{pane(page)} .line.message")).to_have_count(1)
        expect(page.locator(f"{pane(page)} .line.error")).to_have_count(0)
        carol.close()


def test_what_people_meet_in_a_day(browser: Browser, contexts: list[BrowserContext]) -> None:
    """A message over the server's limit is not sent and stays in the box (the server
    would close the connection); ``/join dev`` switches to #dev; a topic set after one
    joined reads as set then; a room's notice shows in that room, and an operator's
    joining again is one line; a private
    conversation follows the other's nick; after a reconnect, a room joined for the
    first time shows its history."""
    with web_server(config=Config(plugins=["moderation"])) as server:
        carol = ChatClient(server.address)
        carol.login("carol")
        for room in ("#fresh", "#mod", "#dev"):
            carol.say(f"/join {room}")
            carol.expect("join", room=room, nick="carol")
        carol.say("early 0", room="#fresh")
        carol.say("early 1", room="#fresh")
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        # 3,000 characters, 9,000 bytes in UTF-8: more than the 8,192 a line may have.
        page.fill("#input", "中" * 3000)
        page.press("#input", "Enter")
        expect(page.locator(f"{pane(page)} .line.error")).to_contain_text("Too long")
        expect(page.locator("#input")).to_have_value("中" * 3000)
        say(page, "still here")
        carol.expect("message", nick="alice", text="still here")
        # /join without its '#': the page goes there, and so do the next lines.
        say(page, "/join dev")
        expect(page.locator("#title")).to_have_text("#dev")
        say(page, "where does this go?")
        assert carol.expect("message", nick="alice", text="where does this go?")["room"] == "#dev"
        carol.say("/topic #dev dev talk")
        expect(page.locator(pane(page))).to_contain_text("carol set the topic: dev talk")
        # A notice about #mod (an operator's action) shows in #mod, not where one looks.
        say(page, "/join mod")
        expect(page.locator("#title")).to_have_text("#mod")
        page.locator("#rooms button", has_text="#general").click()
        carol.say("/topicops on", room="#mod")
        notice = "carol let only operators set the topic"
        expect(page.locator('.pane[data-view="#mod"]')).to_contain_text(notice)
        expect(page.locator(pane(page))).not_to_contain_text(notice)
        # An operator joining again is one line, not a join and then the server's notice.
        carol.say("/part #mod")
        mod = page.locator('.pane[data-view="#mod"]')
        expect(mod).to_contain_text("carol left #mod")
        carol.say("/join #mod")
        carol.expect("notice", text="carol is an operator of #mod")
        expect(mod.locator(".line").last).to_have_text(
            re.compile("→ carol joined #mod \\(operator\\)$")
        )
        expect(mod).not_to_contain_text("carol is an operator of #mod")
        # A private conversation goes on under the other's new nick.
        carol.say("/msg alice psst")
        expect(page.locator("#privates button", has_text="carol")).to_be_visible()
        carol.say("/nick carla")
        page.locator("#privates button", has_text="carla").click()
        expect(page.locator(pane(page))).to_contain_text("carol is now known as carla")
        say(page, "hello carla")
        assert carol.expect(_from("alice"))["to"] == "carla"
        # The connection drops and the page resumes (hello with since); a room it had
        # never joined still shows its history.
        page.evaluate("state.ws.close()")
        wait_until(lambda: page.evaluate("state.resumed && state.loggedIn"), 10, "a resume")
        say(page, "/join fresh")
        expect(page.locator("#title")).to_have_text("#fresh")
        expect(page.locator(pane(page))).to_contain_text("<carol>: early 0")
        expect(page.locator(pane(page))).to_contain_text("<carol>: early 1")
        carol.close()


def drop_and_resume(page: Page, meanwhile: Callable[[], object] | None = None) -> None:
    """Drop the page's connection, run ``meanwhile`` while it is down, and wait until
    it has logged in again (its reconnect's first wait is about half a second)."""
    page.evaluate("state.ws.close()")
    wait_until(lambda: not page.evaluate("state.loggedIn"), 10, "the page's disconnect")
    if meanwhile is not None:
        meanwhile()
    wait_until(lambda: page.evaluate("state.loggedIn"), 10, "the page's resume")


class ClosesRoomC:
    """Refuses #c once ``closed`` is set (a ban meanwhile, say)."""

    closed = False

    @hookimpl
    def chatkit_allow_join(self, client: Any, room: str) -> Reject | None:
        return Reject("#c is closed", "banned") if ClosesRoomC.closed and room == "#c" else None


def test_a_room_refused_at_the_reconnect_is_left_and_said_once(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """A room the reconnect's hello names and the server now refuses: its view says why,
    once, and is left (not joined again, which said it twice); the others are back."""
    ClosesRoomC.closed = False
    config = Config(plugins=["test_web_browser:ClosesRoomC"])
    with web_server(config=config, disable=("flood",)) as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        say(page, "/join #c")
        expect(page.locator("#rooms button", has_text="#c")).to_be_visible()

        def close() -> None:
            ClosesRoomC.closed = True

        drop_and_resume(page, close)
        expect(page.locator(pane(page))).to_contain_text("#c is closed")
        expect(page.locator(".line.error", has_text="#c is closed")).to_have_count(1)
        # The refusal is sent before the login joins the rooms it allows: wait for those.
        wait_until(lambda: page.evaluate("state.joined") == ["#general"], 10, "#general only")
        wait_until(
            lambda: (
                (alice := server.hub.find("alice")) is not None
                and list(alice.rooms.values()) == ["#general"]
            ),
            10,
            "alice back in #general only",
        )
    ClosesRoomC.closed = False


def test_a_reconnect_keeps_what_the_page_had(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """After a dropped connection the page resumes as it was: scroll-back still reaches
    the first message, more missed messages than a replay page are all fetched, a
    password set with /register logs it in again, and the default room it had left
    stays left."""
    config = Config()
    config.plugin_config["history"] = {"max_page": 60}
    with web_server(config=config, disable=("flood",)) as server:
        carol = ChatClient(server.address)
        carol.login("carol")
        carol.say("/join #side")
        for i in range(120):
            carol.say(f"old {i}", room="#general")
        carol.sync()
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        messages = page.locator('.pane[data-view="#general"] .line.message')
        expect(messages).to_have_count(50)
        say(page, "/register alices-password")
        expect(page.locator(pane(page))).to_contain_text("registered")
        page.press("#input", "ArrowUp")  # a command with a password is not recalled
        expect(page.locator("#input")).to_have_value("")

        drop_and_resume(page)
        drop_and_resume(page)  # (twice: the password is kept)
        expect(page.locator(f"{pane(page)} .older")).to_contain_text("Scroll up")
        for count in (100, 120):
            page.locator(pane(page)).evaluate("pane => { pane.scrollTop = 0; }")
            expect(messages).to_have_count(count)
        expect(messages.first).to_contain_text("<carol>: old 0")

        # More missed than a replay page (60): the gap is fetched too.
        say(page, "/join side")
        expect(page.locator("#title")).to_have_text("#side")
        say(page, "/part #general")
        expect(page.locator("#rooms button", has_text="#general")).to_have_count(0)

        def missed() -> None:
            for i in range(90):
                carol.say(f"missed {i}", room="#side")

        drop_and_resume(page, meanwhile=missed)
        side = page.locator('.pane[data-view="#side"] .line.message')
        expect(side).to_have_count(90)
        expect(side.first).to_contain_text("missed 0")
        expect(page.locator("#rooms button", has_text="#general")).to_have_count(0)
        carol.close()


def root_and_vic_in_ops(
    browser: Browser, contexts: list[BrowserContext], server: Server
) -> tuple[ChatClient, Page]:
    """root, a TCP client, and vic, a page, both in #ops (root first: its operator)."""
    root = ChatClient(server.address)
    root.login("root", room="#ops")
    page = open_page(browser, contexts, base_url(server))
    log_in(page, "vic")
    say(page, "/join ops")
    expect(page.locator("#title")).to_have_text("#ops")
    root.expect("join", nick="vic")
    return root, page


def test_operators_decisions_hold_on_the_page(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """A kick leaves the room's view open with why (what is typed there stays in the
    box); a server operator's /kill is not undone by a reconnect; a message typed while
    disconnected stays in the box."""
    settings = Config(plugins=["moderation"])
    settings.plugin_config["moderation"] = {"server_operators": ["root"]}
    with web_server(config=settings) as server:
        root, page = root_and_vic_in_ops(browser, contexts, server)
        root.command("/register roots-password")
        root.say("hello vic", room="#ops")  # (a message seen: the reconnect resumes)
        expect(page.locator(pane(page))).to_contain_text("hello vic")
        root.say("/kick vic go away", room="#ops")
        expect(page.locator(pane(page))).to_contain_text("removed from #ops by root")
        say(page, "still here?")
        expect(page.locator(f"{pane(page)} .line.error")).to_contain_text("not in #ops")
        expect(page.locator("#input")).to_have_value("still here?")

        def typed_while_down() -> None:
            page.fill("#input", "typed while down")
            page.press("#input", "Enter")
            expect(page.locator("#input")).to_have_value("typed while down")

        drop_and_resume(page, meanwhile=typed_while_down)
        # The room it was removed from is not rejoined, so not waited for as rejoining.
        ops = "[...state.views.values()].find((v) => v.name === '#ops')"
        assert page.evaluate(f"[{ops}.left, {ops}.rejoining]") == [True, False]

        root.say("/kill vic enough")
        expect(page.locator("#status")).to_contain_text("killed by root")
        # Set with the close, in place of "reconnecting in N s": no reconnect is planned.
        expect(page.locator("#status")).not_to_contain_text("reconnecting")
        expect(page.locator(pane(page))).to_contain_text("Reload to join again")
        root.close()


def test_rejoins_after_a_reconnect_keep_under_flood_control(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """With flood control on, a page in 30 rooms that reconnects is back in all of them
    (its rejoins and their /who are paced); one that had parted every room (the default
    one included) is in none."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        rooms = [f"#r{i}" for i in range(30)]
        page.evaluate(f"state.joined = {rooms!r}")  # (typed, 30 /joins would be refused)
        drop_and_resume(page)

        def rooms_of_alice() -> list[str]:
            alice = server.hub.find("alice")
            return sorted(alice.rooms.values()) if alice is not None else []

        wait_until(
            lambda: rooms_of_alice() == sorted(rooms), 60, "every room again"
        )  # (about 13 s)
        expect(page.locator(".line.error")).to_have_count(0)
        bob = open_page(browser, contexts, base_url(server))
        log_in(bob, "bob")
        say(bob, "/part #general")
        expect(bob.locator("#rooms button")).to_have_count(0)
        drop_and_resume(bob)
        found = server.hub.find("bob")
        assert found is not None
        wait_until(lambda: found.rooms == {}, 10, "bob in no room")
        expect(bob.locator("#rooms button")).to_have_count(0)


def test_a_kicked_view_that_joins_again_shows_what_it_missed(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """Kicked, then back with /join: what was said while out (more than a replay page)
    shows, below what was there; /close closes the view of a room one was removed from."""
    settings = Config(plugins=["moderation"])
    settings.plugin_config["history"] = {"max_page": 60}
    with web_server(config=settings, disable=("flood",)) as server:
        root, page = root_and_vic_in_ops(browser, contexts, server)
        root.say("before", room="#ops")
        root.say("/kick vic out", room="#ops")
        expect(page.locator(pane(page))).to_contain_text("removed from #ops by root")
        for i in range(80):
            root.say(f"while out {i}", room="#ops")
        root.sync()
        say(page, "/join ops")
        ops = page.locator('.pane[data-view="#ops"] .line.message')
        expect(ops).to_have_count(81)
        expect(ops.first).to_contain_text("before")
        root.say("/kick vic again", room="#ops")
        expect(page.locator(pane(page))).to_contain_text("removed from #ops by root (again)")
        say(page, "/close")
        expect(page.locator("#rooms button", has_text="#ops")).to_have_count(0)
        root.close()


def test_tab_cycles_through_the_commands_of_what_was_typed(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """Tab on a command's first letters completes their common part, then each Tab gives
    the next command that fits what was typed, round and round; Send leaves the caret in
    the box; an error's text that starts with its heading does not get it twice."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        wait_until(lambda: page.evaluate("state.commands.length") > 0, 10, "the commands")
        names: list[str] = page.evaluate("allCommands().map((c) => c.name)")
        fits = [n for n in names if n.startswith("p")]
        assert len(fits) >= 2, names
        page.fill("#input", "/p")
        seen = []
        for _ in range(len(fits) + 1):
            page.press("#input", "Tab")
            seen.append(page.input_value("#input"))
        assert set(seen) >= {f"/{n}" for n in fits}, seen
        page.fill("#input", "/join")
        page.click("#compose button")
        expect(page.locator("#input")).to_be_focused()
        error = page.locator(pane(page) + " .line.error .body").last
        expect(error).to_have_text("Usage: /join #ROOM")


def test_a_nick_taken_while_away_brings_back_the_login_form(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """A reconnect whose nick someone else took meanwhile is tried a few times (the old
    connection may linger), then the login form says why; a new nick from it resumes
    the same views."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "leo")
        say(page, "/join #den")
        expect(page.locator("#title")).to_have_text("#den")
        taker = ChatClient(server.address)
        page.evaluate("state.ws.close()")
        wait_until(lambda: not page.evaluate("state.loggedIn"), 10, "the page's disconnect")
        taker.login("leo")
        expect(page.locator("#login-view")).to_be_visible(timeout=30_000)
        expect(page.locator("#login-error")).to_contain_text("Nick taken")
        expect(page.locator("#nick")).to_have_value("leo")
        page.fill("#nick", "leo2")
        page.press("#nick", "Enter")
        expect(page.locator("#chat-view")).to_be_visible()
        expect(page.locator("#rooms button", has_text="#den")).to_be_visible()
        wait_until(lambda: server.hub.find("leo2") is not None, 10, "leo2 logged in")
        taker.close()


def test_many_conversations_at_once_keep_under_flood_control(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """Twenty-five people writing to the page at once open twenty-five conversations,
    each asking for its history: the page paces its requests, so none is refused by
    flood control and none stays loading; the same after a reconnect."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "quinn")
        writers = []
        for i in range(25):
            writer = ChatClient(server.address)
            writer.login(f"w{i}")
            writer.say(f"/msg quinn hello from w{i}")
            writers.append(writer)
        expect(page.locator("#privates button")).to_have_count(25)

        def settled() -> bool:
            loading: int = page.evaluate(
                "[...state.views.values()].filter((v) => v.loading).length"
            )
            return loading == 0

        wait_until(settled, 30, "every conversation's history answered")
        expect(page.locator(".line.error")).to_have_count(0)
        drop_and_resume(page)
        wait_until(settled, 30, "every conversation's history answered again")
        expect(page.locator(".line.error")).to_have_count(0)
        for writer in writers:
            writer.close()


def test_a_view_keeps_its_last_lines(browser: Browser, contexts: list[BrowserContext]) -> None:
    """A view keeps its last state.maxLines lines while the reader is at the bottom;
    scrolling back fetches the older ones again from the history."""
    with web_server(disable=("flood",)) as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        page.evaluate("state.maxLines = 40")
        bob = ChatClient(server.address)
        bob.login("bob")
        for i in range(100):
            bob.say(f"line {i}")
        expect(page.locator(pane(page) + " .line", has_text="line 99")).to_have_count(1)
        assert page.locator(pane(page) + " .line").count() <= 40
        expect(page.locator(pane(page) + " .older")).to_contain_text("Scroll up")
        page.evaluate("state.current.pane.scrollTop = 0")
        expect(page.locator(pane(page) + " .line", has_text="line 50")).to_have_count(1)
        bob.close()


def test_a_double_click_on_join_opens_one_connection(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """A second submit of the login form while the first login is under way (a double
    click, Enter twice) is ignored: one WebSocket, no "Nick taken"; and a connect() that
    finds an earlier socket closes it, so none stays logged in unseen, holding the nick."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        opened: list[Any] = []
        page.on("websocket", lambda ws: opened.append(ws))
        page.fill("#nick", "alice")
        page.dblclick("#login button")
        expect(page.locator("#chat-view")).to_be_visible()
        expect(page.locator("#rooms button", has_text="#general")).to_be_visible()
        assert len(opened) == 1
        # Straight to connect(), twice: the first socket is closed, the second logs in.
        bob = open_page(browser, contexts, base_url(server))
        sockets: list[Any] = []
        bob.on("websocket", lambda ws: sockets.append(ws))
        bob.evaluate("connect('bob'); connect('bob')")
        expect(bob.locator("#chat-view")).to_be_visible()
        expect(bob.locator("#rooms button", has_text="#general")).to_be_visible()
        assert len(sockets) == 2
        wait_until(lambda: sockets[0].is_closed(), 10, "the first socket closed")
        # Nobody else holds the nick: a reconnect gets it back at once.
        drop_and_resume(bob)
        drop_and_resume(page)
        expect(page.locator(".line.error")).to_have_count(0)
        expect(bob.locator(".line.error")).to_have_count(0)
        assert {s.nick for s in server.hub.sessions()} == {"alice", "bob"}


def test_join_of_a_room_already_joined_goes_there(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """/join of a room the page is in already, while viewing another: the server's reply
    names the room lines now go to, and the page shows it, and sends there."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        carol = ChatClient(server.address)
        carol.login("carol", room="#dev")
        say(page, "/join #dev")
        expect(page.locator("#title")).to_have_text("#dev")
        page.click("#rooms button >> text=#general")
        expect(page.locator("#title")).to_have_text("#general")
        say(page, "/join dev")
        expect(page.locator("#title")).to_have_text("#dev")
        expect(page.locator(pane(page))).to_contain_text("lines now go there")
        assert page.evaluate("state.switchTo") is None
        say(page, "in dev")
        carol.expect("message", room="#dev", nick="alice", text="in dev")
        carol.close()


class Network:
    """The page's WebSocket connections, through Playwright's routes: :meth:`silence`
    makes one pass nothing on from the server (with ``both``, nothing to it either;
    with ``hide_close`` too, the page's close never reaches the server, which holds
    the connection open: a network that died unseen)."""

    def __init__(self, page: Page, *, both: bool = True, hide_close: bool = False) -> None:
        self.routes: list[WebSocketRoute] = []
        self._deaf: set[int] = set()  # the routes (by id) silenced
        self._both, self._hide_close = both, hide_close
        page.route_web_socket(re.compile(r"/ws$"), self._route)

    def _route(self, ws: WebSocketRoute) -> None:
        to_server = ws.connect_to_server()
        deaf, both = self._deaf, self._both
        ws.on_message(lambda m: None if both and id(ws) in deaf else to_server.send(m))
        to_server.on_message(lambda m: None if id(ws) in deaf else ws.send(m))
        if self._hide_close:
            ws.on_close(lambda code, reason: None if id(ws) in deaf else to_server.close())
        self.routes.append(ws)

    def silence(self, index: int = 0) -> None:
        self._deaf.add(id(self.routes[index]))

    def wait_for(self, page: Page, count: int) -> None:
        """Wait (10 s at most) until the page has opened ``count`` connections, through
        Playwright (which passes the routes' traffic on meanwhile): a "reconnecting"
        status can come and go between two looks at it."""
        deadline = time.monotonic() + 10
        while len(self.routes) < count:
            assert time.monotonic() < deadline, f"{len(self.routes)} connections, not {count}"
            page.wait_for_timeout(50)


def test_a_dead_connection_is_found_and_what_it_lost_is_not_sent(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """A connection that goes silent (the network drops everything, no close) is found by
    the page's heartbeat (a ping, no pong in time) and replaced; a message typed into it
    shows "sending…", then "not sent", its text back in the box; sent again, it arrives.
    The browser going offline drops the connection at once; back online, it reconnects."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        network = Network(page)
        # (The page's own timings, shortened as tests do: state.heartbeat, state.pongWait.)
        page.evaluate("state.heartbeat = 300; state.pongWait = 700")
        log_in(page, "alice")
        bob = ChatClient(server.address)
        bob.login("bob")
        say(page, "first")
        bob.expect("message", nick="alice", text="first")
        mine = page.locator(f"{pane(page)} .line.message", has_text="first")
        expect(mine).to_have_count(1)
        expect(mine).not_to_have_class(re.compile("pending"))
        expect(page.locator("#status")).to_have_text("connected")
        network.silence()  # the network goes silent
        say(page, "into the void")
        lost = page.locator(f"{pane(page)} .line.pending", has_text="into the void")
        expect(lost).to_contain_text("sending…")
        expect(lost).to_contain_text("not sent (connection lost)")
        expect(page.locator("#input")).to_have_value("into the void")
        expect(page.locator("#announce")).to_contain_text("Connection lost: a message not sent")
        expect(page.locator("#status")).to_have_text("connected")  # on a new connection
        assert len(network.routes) >= 2
        page.press("#input", "Enter")
        bob.expect("message", nick="alice", text="into the void")
        arrived = page.locator(
            f"{pane(page)} .line.message:not(.pending)", has_text="into the void"
        )
        expect(arrived).to_have_count(1)
        expect(page.locator(f"{pane(page)} .line.pending:not(.unsent)")).to_have_count(0)
        # Offline: the connection goes at once; online again: back at once.
        page.context.set_offline(True)
        expect(page.locator("#status")).to_contain_text("offline")
        page.context.set_offline(False)
        expect(page.locator("#status")).to_have_text("connected")
        say(page, "back online")
        bob.expect("message", nick="alice", text="back online")
        bob.close()


def test_a_reconnect_takes_the_nick_back_from_a_connection_that_died_unseen(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """The network goes silent and the server never sees the old connection close (it
    holds the nick until its keep-alive gives up): the page's reconnect names the
    welcome's resume secret and is back at once under its nick, the old connection
    renamed and closed; it was nick_taken until the server's idle timeout."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        network = Network(page, hide_close=True)
        page.evaluate("state.heartbeat = 300; state.pongWait = 700")
        log_in(page, "alice")
        bob = ChatClient(server.address)
        bob.login("bob")
        network.silence()  # the network goes silent; the server sees nothing
        # (Playwright's waits, which forward the routes' traffic, before bob's.)
        network.wait_for(page, 2)
        expect(page.locator("#status")).to_have_text("connected")
        say(page, "still me")
        gone = bob.expect("nick", old="alice")["new"]
        assert gone.startswith("Gone")
        assert bob.expect("message", text="still me")["nick"] == "alice"
        assert len(network.routes) == 2  # back at the first try: not nick_taken
        bob.close()


def test_new_messages_below_the_view_are_shown_and_own_ones_scroll_down(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """Scrolled up a little, a message arriving below shows a "New messages ↓" control,
    which jumps to the bottom; one's own message always scrolls to the bottom; a reader
    at the bottom stays there when the window (or the message box) changes size."""
    with web_server(disable=("flood",)) as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        bob = ChatClient(server.address)
        bob.login("bob")
        for i in range(60):
            bob.say(f"filler {i}")
        expect(page.locator(pane(page) + " .line", has_text="filler 59")).to_have_count(1)

        def at_bottom() -> bool:
            return bool(page.evaluate("nearBottom(state.current.pane)"))

        wait_until(at_bottom, 10, "the log at the bottom")
        jump = page.locator("#jump")
        expect(jump).to_be_hidden()
        page.evaluate("state.current.pane.scrollTop -= 100")
        bob.say("below the view")
        expect(page.locator(pane(page) + " .line", has_text="below the view")).to_have_count(1)
        expect(jump).to_be_visible()
        assert not at_bottom()
        jump.click()
        wait_until(at_bottom, 10, "the jump to the bottom")
        expect(jump).to_be_hidden()
        expect(page.locator("#input")).to_be_focused()
        page.evaluate("state.current.pane.scrollTop -= 100")
        say(page, "my own")
        bob.expect("message", nick="alice", text="my own")
        expect(page.locator(pane(page) + " .line.message", has_text="my own")).to_have_count(1)
        wait_until(at_bottom, 10, "the own message at the bottom")
        expect(jump).to_be_hidden()
        # At the bottom, a smaller window and a taller message box keep it there.
        page.set_viewport_size({"width": 1000, "height": 400})
        wait_until(at_bottom, 10, "still at the bottom after a resize")
        page.focus("#input")
        for word in ("one", "two", "three", "four", "five"):  # (each key: the box measured)
            page.keyboard.type(word)
            page.keyboard.press("Shift+Enter")
        wait_until(at_bottom, 10, "still at the bottom with a taller box")
        assert page.evaluate("state.current.pane.scrollTop") > 0
        bob.close()


def test_a_reload_goes_back_to_the_rooms_and_conversations(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """The rooms the page is in and its private conversations are remembered beside the
    nick: after a reload, logging in as that nick goes back to them (a room parted stays
    parted); another nick starts afresh."""
    with web_server() as server:
        bob = ChatClient(server.address)
        bob.login("bob")
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        say(page, "/join #dev")
        expect(page.locator("#title")).to_have_text("#dev")
        say(page, "/join #ops")
        expect(page.locator("#title")).to_have_text("#ops")
        say(page, "/part #general")
        expect(page.locator("#rooms button", has_text="#general")).to_have_count(0)
        say(page, "/query bob")
        say(page, "hi bob")
        bob.expect("private", text="hi bob")
        page.reload()
        expect(page.locator("#nick")).to_have_value("alice")
        page.press("#nick", "Enter")
        expect(page.locator("#chat-view")).to_be_visible()
        expect(page.locator("#rooms button")).to_have_text(["#dev", "#ops"])
        expect(page.locator("#privates button")).to_have_text(["@bob"])  # (marked private)
        wait_until(
            lambda: (
                (alice := server.hub.find("alice")) is not None
                and sorted(alice.rooms.values()) == ["#dev", "#ops"]
            ),
            10,
            "alice back in #dev and #ops only",
        )
        bob.say("/msg alice welcome back")
        page.click("#privates button")
        expect(page.locator(pane(page))).to_contain_text("<bob>: welcome back")
        # Another nick in the same browser: its own places, the default room.
        other = page.context.new_page()
        other.goto(base_url(server))
        log_in(other, "carol")
        expect(other.locator("#rooms button")).to_have_text(["#general"])
        expect(other.locator("#privates button")).to_have_count(0)
        bob.close()


def test_a_rename_not_asked_for_is_not_the_nick_remembered(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """Renamed by the server (another tab logged in to the account, and this one became
    GuestNN), the page still offers the nick chosen at the next visit, and keeps its
    rooms under it; a /nick typed is remembered."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        say(page, "/register alices-password")
        expect(page.locator(pane(page))).to_contain_text("registered")
        say(page, "/join #dev")
        expect(page.locator("#title")).to_have_text("#dev")
        other = ChatClient(server.address)  # the other tab
        other.login("alice", password="alices-password")
        expect(page.locator("#me")).to_contain_text("You are Guest")
        assert page.evaluate("localStorage.getItem('chatkit.nick')") == "alice"
        say(page, "/join #ops")
        expect(page.locator("#title")).to_have_text("#ops")
        saved = json.loads(page.evaluate("localStorage.getItem('chatkit.views')"))
        assert saved["nick"] == "alice" and "#ops" in saved["rooms"]
        page.reload()
        expect(page.locator("#nick")).to_have_value("alice")
        other.close()
        # Asked for: remembered.
        bob = open_page(browser, contexts, base_url(server))
        log_in(bob, "bob")
        say(bob, "/nick robert")
        expect(bob.locator("#me")).to_have_text("You are robert")
        bob.reload()
        expect(bob.locator("#nick")).to_have_value("robert")


def test_web_addresses_in_messages_and_topics_are_links(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """http, https and www. addresses in a message or a topic are links (opened in a new
    tab, no referrer, nofollow), made as nodes: punctuation after one is not part of it,
    unless it closes a bracket it opened; anything else stays text."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        bob = ChatClient(server.address)
        bob.login("bob")
        bob.say(
            "see https://en.wikipedia.org/wiki/A_(b). and www.example.com/x, "
            '(http://example.net/y) javascript:alert(1) "https://q.example/?a=1&b=<i>2</i>"'
        )
        links = page.locator(pane(page) + " .line.message a")
        expect(links).to_have_count(4)
        expect(links).to_have_text(
            [
                "https://en.wikipedia.org/wiki/A_(b)",
                "www.example.com/x",
                "http://example.net/y",
                "https://q.example/?a=1&b=",
            ]
        )
        hrefs = links.evaluate_all("as => as.map((a) => a.getAttribute('href'))")
        assert hrefs == [
            "https://en.wikipedia.org/wiki/A_(b)",
            "https://www.example.com/x",
            "http://example.net/y",
            "https://q.example/?a=1&b=",
        ]
        for i in range(4):
            expect(links.nth(i)).to_have_attribute("rel", "noopener noreferrer nofollow")
            expect(links.nth(i)).to_have_attribute("target", "_blank")
        body = page.locator(pane(page) + " .line.message .body").last
        expect(body).to_contain_text("javascript:alert(1)")
        assert page.locator("#log i").count() == 0
        bob.say("/topic docs at https://docs.example.org/start.")
        topic = page.locator("#topic a")
        expect(topic).to_have_attribute("href", "https://docs.example.org/start")
        event = page.locator(pane(page) + " .line.event a")
        expect(event).to_have_attribute("href", "https://docs.example.org/start")
        bob.close()


HOUR_ONLY = re.compile(r"^\d\d:\d\d(\s?[AP]M)?$")  # a time of today, as the page shows it


def test_lines_not_from_today_show_their_date(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """A line from another day (a replay, a page left open overnight) shows its date
    beside the time, the full date and time in its title and its datetime; today's
    show the time alone."""
    with web_server() as server:
        carol = ChatClient(server.address)
        carol.login("carol")
        carol.say("said today")
        carol.sync()
        today = open_page(browser, contexts, base_url(server))
        log_in(today, "alice")
        line = today.locator(pane(today) + " .line.message", has_text="said today")
        expect(line.locator("time")).to_have_text(HOUR_ONLY)
        # The page's clock three days on: what the server says now is from another day.
        later = open_page(browser, contexts, base_url(server))
        later.clock.set_system_time(datetime.now(UTC) + timedelta(days=3))
        log_in(later, "bob")
        replayed = later.locator(pane(later) + " .line.message", has_text="said today")
        time = replayed.locator("time")
        expect(time).not_to_have_text(HOUR_ONLY)
        day = datetime.fromisoformat(time.get_attribute("datetime") or "").astimezone()
        expect(time).to_contain_text(str(day.day))
        expect(time).to_have_attribute("title", re.compile(str(day.year)))
        # Left open past midnight: today's lines get their date.
        today.clock.set_system_time(datetime.now(UTC) + timedelta(days=1))
        today.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        expect(line.locator("time")).not_to_have_text(HOUR_ONLY)
        carol.close()


def test_a_right_to_left_nick_does_not_turn_event_lines_around(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """Nicks and room names in the page's own lines are isolated (bdi): a Hebrew nick's
    join, rename and leave read left to right, as the page wrote them."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        david = ChatClient(server.address)
        david.login("דוד")
        david.say("/nick דודי")
        david.close()
        for said in ("joined #general", "is now known as", "left #general"):
            body = page.locator(pane(page) + " .line.event .body", has_text=said)
            expect(body).to_have_count(1)
            expect(body.locator("bdi").first).to_have_text(re.compile("^דוד"))
            assert body.evaluate("b => b.matches(':dir(ltr)')"), said
        expect(page.locator("#announce")).to_contain_text("← דודי left #general")


def test_a_kick_from_a_room_not_viewed_is_noticed_and_said_once(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """Kicked from a room while viewing another: its sidebar button says so and a screen
    reader is told; the room's line names the kicker once, with the reason."""
    settings = Config(plugins=["moderation"])
    with web_server(config=settings) as server:
        root, page = root_and_vic_in_ops(browser, contexts, server)
        page.click("#rooms button >> text=#general")
        expect(page.locator("#title")).to_have_text("#general")
        root.say("/kick vic go away", room="#ops")
        ops = page.locator("#rooms button", has_text="#ops")
        expect(ops).to_contain_text("removed")
        expect(page.locator("#announce")).to_contain_text("you were removed from #ops by root")
        ops.click()
        line = page.locator(pane(page) + " .line.notice", has_text="you were removed")
        expect(line).to_contain_text(
            "← you were removed from #ops by root (go away); /join #ops to go back"
        )
        expect(line).not_to_contain_text("kicked by")
        say(page, "/join #ops")
        expect(ops).not_to_contain_text("removed")
        root.close()


def test_away_stays_set_across_a_reconnect(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """Marked away, the page sets it again after a reconnect (away is the connection's
    on the server), and says so; back, it stays back."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        say(page, "/away lunch")
        expect(page.locator(pane(page))).to_contain_text("you are marked away: lunch")
        drop_and_resume(page)
        wait_until(lambda: server.hub.away("alice") == "lunch", 10, "alice away again")
        expect(page.locator(pane(page) + " .line", has_text="marked away: lunch")).to_have_count(2)
        say(page, "/away")
        expect(page.locator(pane(page) + " .line.notice", has_text="you are back")).to_have_count(1)
        assert server.hub.away("alice") is None
        drop_and_resume(page)
        say(page, "/ping")  # (answered after anything the page sent at its welcome)
        expect(page.locator(pane(page) + " .line.notice", has_text="pong")).to_have_count(1)
        expect(page.locator(pane(page) + " .line", has_text="marked away")).to_have_count(2)
        assert server.hub.away("alice") is None
        # Back with the connection dropped before its reply came: back all the same.
        say(page, "/away tea")
        wait_until(lambda: server.hub.away("alice") == "tea", 10, "alice away for tea")
        expect(page.locator(pane(page) + " .line", has_text="marked away: tea")).to_have_count(1)
        page.evaluate("submit('/away'); state.ws.close()")
        wait_until(lambda: not page.evaluate("state.loggedIn"), 10, "the page's disconnect")
        wait_until(lambda: page.evaluate("state.loggedIn"), 10, "the page's resume")
        say(page, "/ping")
        expect(page.locator(pane(page) + " .line.notice", has_text="pong")).to_have_count(2)
        assert server.hub.away("alice") is None


def test_a_refused_message_goes_back_into_the_box(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """A message the server refuses (too many lines, muted) is marked not sent and its
    text put back into the box (it was empty), which the error line says."""
    settings = Config(plugins=["moderation"])
    with web_server(config=settings) as server:
        root, page = root_and_vic_in_ops(browser, contexts, server)
        page.focus("#input")
        many = "\n".join(f"line {i}" for i in range(25))
        page.keyboard.insert_text(many)
        page.press("#input", "Enter")
        expect(page.locator(pane(page) + " .line.error")).to_contain_text(
            "your message is back in the box"
        )
        expect(page.locator("#input")).to_have_value(many)
        expect(page.locator(pane(page) + " .line.unsent")).to_contain_text(
            "not sent (too many lines)"
        )
        root.say("/mute vic", room="#ops")
        expect(page.locator(pane(page))).to_contain_text("mute")
        say(page, "can you hear me")
        expect(page.locator("#input")).to_have_value("can you hear me")
        unsent = page.locator(pane(page) + " .line.unsent", has_text="can you hear me")
        expect(unsent).to_contain_text("not sent (muted)")
        root.close()


def test_a_registered_nick_asks_for_its_password_in_the_pages_words(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """Logging in as a registered nick without its password: the login form says so in
    the page's words (not the protocol's "the hello's password") and puts the caret in
    the password field; with the password, the login goes on."""
    with web_server() as server:
        owner = ChatClient(server.address)
        owner.login("alice")
        owner.command("/register alices-password")
        owner.close()
        wait_until(lambda: server.hub.find("alice") is None, 10, "alice gone")
        page = open_page(browser, contexts, base_url(server))
        page.fill("#nick", "alice")
        page.press("#nick", "Enter")
        error = page.locator("#login-error")
        expect(error).to_contain_text("alice is registered")
        expect(error).to_contain_text("type its password in the Password field")
        expect(error).not_to_contain_text("hello")
        expect(page.locator("#password")).to_be_focused()
        expect(page.locator("#password")).to_have_attribute("aria-invalid", "true")
        page.keyboard.type("alices-password")
        page.keyboard.press("Enter")
        expect(page.locator("#chat-view")).to_be_visible()
        expect(page.locator("#me")).to_have_text("You are alice")


def test_a_message_that_arrived_after_all_loses_its_not_sent_mark(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """A message that reached the server while its copy was lost with the connection is
    marked not sent, then the resume's replay brings it: the mark goes, and its text
    leaves the box (sending it again would say it twice)."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        network = Network(page, both=False)  # what the page sends still arrives
        page.evaluate("state.heartbeat = 300; state.pongWait = 700")
        log_in(page, "alice")
        bob = ChatClient(server.address)
        bob.login("bob")
        bob.say("hello alice")
        expect(page.locator(pane(page))).to_contain_text("<bob>: hello alice")
        network.silence()  # what the server sends is lost on the way
        say(page, "half way")
        bob.expect("message", nick="alice", text="half way")  # (it did arrive)
        network.wait_for(page, 2)
        expect(page.locator("#status")).to_have_text("connected")
        mine = page.locator(pane(page) + " .line.message", has_text="half way")
        expect(mine).to_have_count(1)
        expect(mine).not_to_have_class(re.compile("pending"))
        expect(page.locator("#input")).to_have_value("")
        bob.close()


def test_screen_readers_hear_the_topic_members_and_nicks_named(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """The top bar's topic and members, which Tab reaches, say what they are (a bare nick
    or topic was read with no context): a note named Topic, a list named Members with an
    item per member; a message reads "carol: hi" (its nick's brackets are not spoken)
    while "<carol> hi" is what is seen."""
    with web_server() as server:
        carol = ChatClient(server.address)
        carol.login("carol")
        carol.say("/topic Release on Friday")
        carol.expect("topic")
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        topic = page.locator("#topic")
        expect(topic).to_have_role("note")
        expect(topic).to_have_accessible_name("Topic")
        expect(topic).to_have_text("Release on Friday")
        members = page.locator("#members")
        expect(members).to_have_role("list")
        expect(members).to_have_accessible_name("Members")
        expect(members.get_by_role("listitem")).to_have_text(["alice", "carol"])
        expect(members).to_have_text("alice, carol")  # (as seen: the commas too)
        carol.say("hi there")
        line = page.locator(pane(page) + " .line.message").last
        expect(line).to_contain_text("hi there")
        # What a screen reader gets (Playwright puts a space before the hidden colon's box).
        heard = line.aria_snapshot()
        assert re.search(r'- text: "carol ?: hi there"', heard), heard
        assert "<" not in heard and ">" not in heard, heard
        # What is seen: the brackets, no colon (the colon's box is clipped to nothing).
        seen = line.locator(".nick").evaluate(
            """n => [...n.childNodes].filter(c => !(c.classList
                 && c.classList.contains('visually-hidden'))).map(c => c.textContent).join('')"""
        )
        assert seen == "<carol>"
        colon = line.locator(".nick .visually-hidden")
        expect(colon).to_have_text(":")
        assert colon.evaluate("c => getComputedStyle(c).clipPath") == "inset(50%)"
        carol.close()


def test_help_lists_the_commands_in_a_table(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """/help's answer is a table built from its data, a command and what it does on each
    row, the descriptions in one column (its text, padded with spaces for a monospace
    font, zig-zagged in the page's); the page's own /query and /close are listed too."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        say(page, "/help")
        table = page.locator(pane(page) + " .line.help table")
        expect(table).to_be_visible()
        rows = table.locator("tbody tr")
        expect(rows).to_have_count(len(server.hub.commands.all()) + 2)
        query = rows.filter(has=page.get_by_role("rowheader", name="/query NICK", exact=True))
        expect(query.locator("td")).to_have_text("open a private conversation with NICK")
        expect(table.get_by_role("rowheader", name="/help [COMMAND]", exact=True)).to_be_visible()
        lefts = table.locator("tbody td").evaluate_all(
            "tds => tds.map(td => td.getBoundingClientRect().left)"
        )
        assert len(lefts) == len(server.hub.commands.all()) + 2
        assert len(set(lefts)) == 1  # one column
        expect(page.locator(pane(page) + " .line", has_text="Commands:")).to_have_count(0)
        expect(page.locator("#announce p").last).to_contain_text("Commands:")
        # /help NAME is a line of its own, as the server says it.
        say(page, "/help who")
        expect(page.locator(pane(page) + " .line.notice").last).to_contain_text("/who")


def _rgb(css: str) -> tuple[float, float, float]:
    """A computed ``rgb(R, G, B)`` colour's channels, 0 to 1."""
    r, g, b = (int(v) for v in re.findall(r"\d+", css)[:3])
    return r / 255, g / 255, b / 255


def _contrast(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """WCAG's contrast ratio of two colours."""

    def luminance(rgb: tuple[float, float, float]) -> float:
        r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_similar_nicks_get_colours_far_apart(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """Nicks a character apart (filler0 ... filler9) get hues far apart (a hash modulo
    360 gave them neighbouring hues: one colour), each readable on the page's background
    in the light theme and the dark one (4.5:1)."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        nicks = [f"filler{i}" for i in range(10)]
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            background = _rgb(page.evaluate("getComputedStyle(document.body).backgroundColor"))
            colours = page.evaluate(
                """nicks => nicks.map(n => {
                     const node = nickEl(n, true);
                     document.body.append(node);
                     const colour = getComputedStyle(node).color;
                     node.remove();
                     return colour;
                   })""",
                nicks,
            )
            hues = [colorsys.rgb_to_hls(*_rgb(c))[0] * 360 for c in colours]
            for a, b in itertools.pairwise(hues):
                apart = abs(a - b) % 360
                assert min(apart, 360 - apart) >= 60, (scheme, colours)
            assert len(set(colours)) >= 8, colours
            for colour in colours:
                assert _contrast(_rgb(colour), background) >= 4.5, (scheme, colour)


def test_a_phone_shows_unread_messages_scrolled_out_and_marks_private_ones(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """On a phone's width (375 px) the rooms are a strip that scrolls sideways: unread
    badges scrolled out of it are counted at its edge (a button that goes to the first of
    them), and a private conversation is marked "@" where the "Private" heading is hidden."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        page.set_viewport_size({"width": 375, "height": 700})
        log_in(page, "alice")
        rooms = [f"#project-{i}" for i in range(1, 7)]
        for room in rooms:
            say(page, f"/join {room}")
            expect(page.locator("#title")).to_have_text(room)
        page.locator("#rooms button", has_text="#general").click()
        expect(page.locator("#title")).to_have_text("#general")
        page.evaluate("$('sidebar').scrollLeft = 0")
        total = page.locator("#unread-total")
        expect(total).to_be_hidden()
        bob = ChatClient(server.address)
        bob.login("bob", room=rooms[-1])
        bob.say("over here")
        badge = page.locator("#rooms button", has_text=rooms[-1]).locator(".unread")
        expect(badge).to_have_text("unread: 1")
        expect(badge).not_to_be_in_viewport()
        expect(total).to_have_text("1 unread")
        expect(total).to_be_in_viewport(ratio=1)
        bob.say("/msg alice psst")
        expect(total).to_have_text("2 unread")
        at = page.locator("#privates button", has_text="bob").locator(".at")
        expect(at).to_have_text("@")
        expect(at).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        total.click()
        expect(page.locator("#title")).to_have_text(rooms[-1])
        expect(total).to_have_text("1 unread")
        expect(page.locator("#input")).to_be_focused()
        # Wide enough for the sidebar, the badges show where they are: no total.
        page.set_viewport_size({"width": 1000, "height": 700})
        expect(total).to_be_hidden()
        expect(page.locator("#privates .unread")).to_be_visible()
        bob.close()


def test_the_members_list_stays_sorted(browser: Browser, contexts: list[BrowserContext]) -> None:
    """The members list is sorted ignoring case, as /who's is, after joins and renames
    too (they went at its end)."""
    with web_server() as server:
        page = open_page(browser, contexts, base_url(server))
        log_in(page, "alice")
        members = page.locator("#members")
        expect(members).to_have_text("alice")
        clients = []
        for nick in ("carol", "Bob", "zed"):
            client = ChatClient(server.address)
            client.login(nick)
            clients.append(client)
        expect(members).to_have_text("alice, Bob, carol, zed")
        clients[2].say("/nick Aaron")
        expect(members).to_have_text("Aaron, alice, Bob, carol")
        for client in clients:
            client.close()


def test_a_reconnect_counts_down_and_can_be_tried_now(
    browser: Browser, contexts: list[BrowserContext]
) -> None:
    """Disconnected, the page counts the seconds to its next try down (it said "in 2 s"
    for as long as it waited), and "Retry now" reconnects at once."""
    first = Server(config=make_config(), faces=[LineFace(), WebFace(port=0)])
    first.start()
    port = first.addresses["web"][1]
    try:
        page = open_page(browser, contexts, base_url(first))
        log_in(page, "alice")
        page.evaluate("state.backoff = 30000")  # (the next wait: 22 to 38 s)
    finally:
        first.shutdown()
    expect(page.locator("#status")).to_contain_text("reconnecting")
    countdown = page.locator("#countdown")
    expect(countdown).to_have_text(re.compile(r"^in \d+ s$"))
    before = int(countdown.inner_text().split()[1])
    assert before >= 20
    expect(countdown).not_to_have_text(f"in {before} s")  # a second later
    after = int(countdown.inner_text().split()[1])
    assert after < before
    second = Server(config=make_config(), faces=[LineFace(), WebFace(port=port)])
    second.start()
    try:
        page.get_by_role("button", name="Retry now").click()
        # (Well before the wait, still more than 10 s, is over.)
        expect(page.locator("#status")).to_have_text("connected")
        expect(countdown).to_have_text("")
        expect(page.locator("#retry")).to_be_hidden()
        expect(page.locator("#input")).to_be_focused()
        carol = ChatClient(second.address)
        carol.login("carol")
        carol.say("back so soon")
        expect(page.locator(pane(page))).to_contain_text("<carol>: back so soon")
        carol.close()
    finally:
        second.shutdown()
