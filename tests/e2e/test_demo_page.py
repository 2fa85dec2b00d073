"""The demo page in a real browser: Debian's headless Chromium, driven by playwright, against a
real server on the small model. Skipped when /usr/bin/chromium or playwright is absent.

Writes ``artifacts/demo.png``: the page with its suggestions open.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from indexer.model import Model
from indexer.normalize import normalize
from tests.e2e.browser import (
    ARTIFACTS,
    Frames,
    Page,
    expect,
    open_demo,
    options_of,
    queries,
    rewrite_frames,
    serving,
    type_into,
    wait_until,
)


def test_typing_shows_the_models_suggestions_with_the_completion_in_bold(
    page: Page, server: str, small_model: Model, frames: Frames
) -> None:
    box = open_demo(page, server)
    expect(box).to_have_attribute("aria-autocomplete", "list")
    expect(box).to_have_attribute("aria-expanded", "false")
    listbox = page.locator(f"#{box.get_attribute('aria-controls')}")
    expect(listbox).to_have_attribute("role", "listbox")

    type_into(page, box, frames, "weat", delay=25)
    want = queries(small_model, "weat")
    options = options_of(page, box)
    expect(options).to_have_text(want)
    expect(box).to_have_attribute("aria-expanded", "true")
    for i, query in enumerate(want):
        assert query.startswith("weat")
        option = options.nth(i)
        assert option.text_content() == query
        bold = option.locator("b")
        if query == "weat":
            expect(bold).to_have_count(0)
        else:
            assert bold.text_content() == query[len("weat"):]
    weights = options.first.evaluate(
        "li => [getComputedStyle(li.querySelector('.text')).fontWeight,"
        " getComputedStyle(li.querySelector('b')).fontWeight]"
    )
    assert int(weights[0]) < 600 <= int(weights[1])

    keystrokes = [f for f in frames.sent if f["type"] == "query"]
    assert [f["prefix"] for f in keystrokes] == ["w", "we", "wea", "weat"]
    ids = [f["id"] for f in keystrokes]
    assert ids == sorted(set(ids))
    expect(page.locator("#timing")).to_have_text(re.compile(r"^server ≤ \d*[05] ms · round trip [\d.]+ ms$"))
    expect(page.locator("#model")).to_contain_text(small_model.version)


def test_a_corrected_suggestion_is_marked_and_announced_as_a_correction(
    page: Page, server: str, small_model: Model, frames: Frames
) -> None:
    meant = next(k for k in small_model.labels.keys if len(k) >= 9 and " " not in k
                 and any(c.corrected for c in small_model.complete(k[:2] + k[3] + k[2] + k[4:])))
    typed = meant[:2] + meant[3] + meant[2] + meant[4:]  # two letters swapped
    want = small_model.complete(typed)
    box = open_demo(page, server)
    type_into(page, box, frames, typed, delay=25)
    options = options_of(page, box)
    expect(options).to_have_text([c.query for c in want])
    for i, c in enumerate(want):
        option = options.nth(i)
        if c.corrected:
            expect(option).to_have_class(re.compile(r"\bcorrected\b"))
            expect(option.locator("b")).to_have_count(0)  # nothing bold: not a completion
            fix = option.locator(".fix")
            expect(fix).to_have_attribute("aria-label", "spelling corrected")
            assert fix.get_attribute("id") in (option.get_attribute("aria-labelledby") or "")
        else:
            expect(option.locator(".fix")).to_have_count(0)


def test_keys_move_the_active_option_wrap_close_clear_and_leave(
    page: Page, server: str, small_model: Model, frames: Frames
) -> None:
    box = open_demo(page, server)
    type_into(page, box, frames, "rec")
    want = queries(small_model, "rec")
    options = options_of(page, box)
    expect(options).to_have_text(want)
    ids = [options.nth(i).get_attribute("id") for i in range(len(want))]
    assert len(set(ids)) == len(want)

    def expect_active(i: int) -> None:
        expect(box).to_have_attribute("aria-activedescendant", ids[i])
        expect(page.locator("[role=option][aria-selected=true]")).to_have_count(1)
        expect(options.nth(i)).to_have_attribute("aria-selected", "true")
        expect(box).to_have_value(want[i])

    box.press("ArrowDown")
    expect_active(0)
    box.press("ArrowDown")
    expect_active(1)
    box.press("ArrowUp")
    box.press("ArrowUp")
    expect_active(len(want) - 1)  # wrapped backwards
    box.press("ArrowDown")
    expect_active(0)  # and forwards

    box.press("Escape")  # closes, back to what was typed
    expect(box).to_have_attribute("aria-expanded", "false")
    expect(box).not_to_have_attribute("aria-activedescendant", re.compile(".*"))
    expect(box).to_have_value("rec")
    box.press("Escape")  # clears
    expect(box).to_have_value("")

    type_into(page, box, frames, "rec")
    expect(options).to_have_text(want)
    box.press("Tab")
    expect(box).not_to_be_focused()
    expect(box).to_have_attribute("aria-expanded", "false")
    expect(box).to_have_value("rec")


def test_enter_submits_and_the_next_suggestions_follow_the_session(
    page: Page, server: str, small_model: Model, history_pair: tuple[str, str], frames: Frames
) -> None:
    prev, prefix = history_pair
    alone, after = queries(small_model, prefix), queries(small_model, prefix, (prev,))
    assert alone != after
    box = open_demo(page, server)
    options = options_of(page, box)
    type_into(page, box, frames, prefix)
    expect(options).to_have_text(alone)
    expect(page.locator("#session-queries li")).to_have_count(0)

    box.fill(prev)
    box.press("Enter")  # no active option: the typed text
    expect(page.locator("#session-queries li")).to_have_text([normalize(prev)])
    expect(box).to_have_value("")
    expect(box).to_have_attribute("aria-expanded", "false")
    assert {"type": "submit", "query": prev} in frames.sent

    type_into(page, box, frames, prefix)
    expect(options).to_have_text(after)
    expect(page.locator("#context")).to_have_text(f"Ranked for this session, after {normalize(prev)}")

    box.press("ArrowDown")
    box.press("ArrowDown")
    box.press("Enter")  # the active option
    expect(page.locator("#session-queries li")).to_have_text([normalize(prev), after[1]])
    assert {"type": "submit", "query": after[1]} in frames.sent


def test_the_mouse_highlights_on_hover_and_submits_on_click(
    page: Page, server: str, small_model: Model, frames: Frames
) -> None:
    box = open_demo(page, server)
    type_into(page, box, frames, "rec")
    want = queries(small_model, "rec")
    options = options_of(page, box)
    expect(options).to_have_text(want)
    background = "li => getComputedStyle(li).backgroundColor"
    plain = options.nth(2).evaluate(background)
    options.nth(2).hover()
    assert options.nth(2).evaluate(background) != plain
    options.nth(2).click()
    expect(page.locator("#session-queries li")).to_have_text([want[2]])
    expect(box).to_have_value("")
    expect(box).to_be_focused()


def test_an_answer_older_than_the_one_shown_is_dropped(page: Page, server: str, small_model: Model) -> None:
    """The answer to "w" is held back until the answer to "we" has been shown."""
    held: list[str] = []
    late: list[int] = []

    def route(ws: Any) -> None:
        upstream = ws.connect_to_server()
        ws.on_message(upstream.send)

        def down(message: str) -> None:
            frame = json.loads(message)
            if frame["type"] == "suggestions" and frame["prefix"] == "w":
                held.append(message)
                return
            ws.send(message)
            if frame["type"] == "suggestions" and held:
                ws.send(held.pop())
                late.append(frame["id"])

        upstream.on_message(down)

    page.route_web_socket(re.compile(r"/ws(\?|$)"), route)
    box = open_demo(page, server)
    box.press_sequentially("w")
    wait_until(page, lambda: bool(held))
    box.press_sequentially("e")
    wait_until(page, lambda: bool(late))
    page.wait_for_timeout(250)  # time to (wrongly) show the late answer
    expect(options_of(page, box)).to_have_text(queries(small_model, "we"))


def test_suggestions_are_inserted_as_text_never_as_html(page: Page, server: str) -> None:
    evil = 'weat <img src=x onerror="window.pwned=1"><b>not bold</b>'

    def rewrite(frame: dict[str, Any]) -> None:
        if frame["type"] == "suggestions" and frame["prefix"] == "weat":
            frame["items"][0]["query"] = evil

    rewrite_frames(page, rewrite)
    box = open_demo(page, server)
    box.press_sequentially("weat")
    first = options_of(page, box).first
    expect(first).to_have_text(evil)
    assert first.text_content() == evil
    assert first.locator("b").all_text_contents() == [evil[len("weat"):]]
    expect(page.locator("img")).to_have_count(0)
    first.click()
    expect(page.locator("#session-queries li")).to_have_text([normalize(evil)])
    assert page.evaluate("window.pwned") is None
    # The client's helpers, as a page-level unit: they agree with the server's normalization.
    for text in ["St. Louis  Cardinals!", "Café  Déjà-vu", "a_b c.d", "new y ", "<img src=x>", "!!",
                 "\uff2e\uff45\uff57 \ufb01sh", "Cafe\u0301"]:  # full-width, a ligature, a combining accent
        assert page.evaluate("t => QacClient.normalize(t)", text) == normalize(text)
    assert page.evaluate("QacClient.split('new york', 'new y')") == ["new y", "ork"]


def test_a_dropped_socket_reconnects_to_the_same_session(
    page: Page, server: str, small_model: Model, history_pair: tuple[str, str]
) -> None:
    prev, prefix = history_pair
    urls: list[str] = []
    sockets: list[Any] = []
    refuse = [False]

    def route(ws: Any) -> None:
        urls.append(ws.url)
        if refuse[0]:
            ws.close(code=1013, reason="try again later")
            return
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket(re.compile(r"/ws(\?|$)"), route)
    box = open_demo(page, server)
    session = page.evaluate("sessionStorage.getItem('qac.session')")
    assert session and "session=" not in urls[0]
    box.fill(prev)
    box.press("Enter")
    expect(page.locator("#session-queries li")).to_have_text([normalize(prev)])

    refuse[0] = True
    sockets[-1].close(code=1012, reason="restarting")
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "offline")
    expect(status).to_contain_text("offline")
    box.press_sequentially(prefix)  # while offline: sent once back
    wait_until(page, lambda: len(urls) >= 2)  # a retry, refused
    refuse[0] = False
    expect(status).to_have_attribute("data-state", "online", timeout=10_000)
    # The session was resumed by a resume frame: the id never appears in a URL (access logs).
    assert not any("session" in url for url in urls)
    expect(options_of(page, box)).to_have_text(queries(small_model, prefix, (prev,)))
    assert page.evaluate("sessionStorage.getItem('qac.session')") == session

    page.reload()
    expect(status).to_have_attribute("data-state", "online")
    assert not any("session" in url for url in urls)
    wait_until(page, lambda: page.evaluate("QacClient && window.sessionStorage.getItem('qac.session')") == session)
    expect(page.locator("#session-queries li")).to_have_text([normalize(prev)])


EMBEDDING_PAGE = """<!doctype html>
<form action="/search"><input id="search" name="q" autocomplete="off"></form>
<ul id="search-suggestions"></ul>
<script src="http://{server}/qac-client.js"></script>
<script>
  const box = document.querySelector("#search");
  const list = document.querySelector("#search-suggestions");
  new QacClient().attach(box, (items) => list.replaceChildren(
    ...items.map((item) => Object.assign(document.createElement("li"), {{textContent: item.query}}))));
  box.form.addEventListener("submit", (event) => event.preventDefault());  // no results page here
</script>
"""


@contextlib.contextmanager
def another_origin() -> Iterator[tuple[str, Callable[[str], None]]]:
    """Serve a page from another origin on loopback (Chromium keeps public pages off private
    addresses); yields its URL and a function that sets its HTML."""
    body = [b""]

    class Site(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body[0])))
            self.end_headers()
            self.wfile.write(body[0])

        def log_message(self, *args: Any) -> None:
            pass

    def serve(html: str) -> None:
        body[0] = html.encode()

    with ThreadingHTTPServer(("127.0.0.1", 0), Site) as site:
        threading.Thread(target=site.serve_forever, daemon=True).start()
        try:
            yield f"http://localhost:{site.server_address[1]}/", serve
        finally:
            site.shutdown()


def test_another_site_embeds_the_client_with_a_few_lines(
    page: Page, small_model_dir: Path, small_model: Model, history_pair: tuple[str, str]
) -> None:
    """The README's snippet on a page of another origin, which the server allows: keystrokes,
    submits, the session."""
    prev, prefix = history_pair
    with another_origin() as (site, serve):
        with serving(small_model_dir, allowed_origins=(site,)) as server:
            serve(EMBEDDING_PAGE.format(server=server))
            page.goto(site)
            box = page.locator("#search")
            suggestions = page.locator("#search-suggestions li")
            box.press_sequentially(prefix)
            expect(suggestions).to_have_text(queries(small_model, prefix))
            box.fill(prev)
            box.press("Enter")  # the form's submit: recorded in the session
            box.fill("")
            expect(suggestions).to_have_count(0)
            box.press_sequentially(prefix)
            expect(suggestions).to_have_text(queries(small_model, prefix, (prev,)))
            assert page.evaluate("sessionStorage.getItem('qac.session')")
            page.goto("about:blank")  # before the server stops, or the client's reconnect logs an error


def test_a_site_the_server_does_not_allow_gets_no_suggestions(browser: Any, server: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        with another_origin() as (site, serve):
            serve(EMBEDDING_PAGE.format(server=server))
            page.goto(site)
            page.locator("#search").press_sequentially("new")
            page.wait_for_timeout(500)
            expect(page.locator("#search-suggestions li")).to_have_count(0)
    finally:
        context.close()
    assert errors and all("Unexpected response code: 403" in e for e in errors)


def test_screenshot_with_the_suggestions_open(page: Page, server: str, frames: Frames) -> None:
    """``artifacts/demo.png``, on harmless queries (the data is real AOL queries)."""
    box = open_demo(page, server)
    for query in ("weather", "garden ponds"):
        box.fill(query)
        box.press("Enter")
    expect(page.locator("#session-queries li")).to_have_count(2)
    type_into(page, box, frames, "how t", delay=40)
    options = page.locator("[role=option]")
    expect(options).to_have_count(10)
    expect(options.first).to_have_text(re.compile("^how t"))
    box.press("ArrowDown")
    box.press("ArrowDown")
    expect(page.locator("#timing")).to_contain_text("round trip")
    page.mouse.move(0, 0)
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / "demo.png"
    page.screenshot(path=str(out))
    assert out.stat().st_size > 10_000


def test_an_idle_connection_closed_by_the_server_comes_back_on_the_next_keystroke(
    page: Page, small_model_dir: Path, small_model: Model
) -> None:
    with serving(small_model_dir, idle_timeout=0.5) as server:
        box = open_demo(page, server)
        expect(page.locator("#status-text")).to_have_text("idle", timeout=5000)
        page.wait_for_timeout(1000)  # no reconnect loop while nobody types
        expect(page.locator("#status-text")).to_have_text("idle")
        box.press_sequentially("ne")
        expect(page.locator("[role=option]")).to_have_text(queries(small_model, "ne"))


def test_suggestions_from_your_history_are_marked_and_can_be_removed_or_forgotten(
    page: Page, server: str, frames: Frames
) -> None:
    urls: list[str] = []
    page.on("websocket", lambda ws: urls.append(ws.url))
    page.on("request", lambda request: urls.append(request.url))
    box = open_demo(page, server)
    mine = ["zqxj plugh", "zqxj quux", "zqxj xyzzy"]  # in no log: only the user's history has them
    for query in mine:
        box.fill(query)
        box.press("Enter")
    expect(page.locator("#session-queries li")).to_have_count(3)
    type_into(page, box, frames, "zqxj")
    options = options_of(page, box)
    marked = page.get_by_role("option", name=re.compile(r"^zqxj \w+ from your history$"))
    expect(marked).to_have_count(3)
    expect(page.get_by_role("img", name="from your history")).to_have_count(3)
    for query in mine:  # the option's text is still the query alone
        expect(options.filter(has_text=query)).to_have_text([query])

    # Remove, with the pointer: gone from the list at once, the caret stays in the box.
    page.get_by_role("button", name="Remove \u201czqxj plugh\u201d from your history").click()
    assert {"type": "remove", "query": "zqxj plugh"} in frames.sent
    expect(marked).to_have_count(2)
    expect(options.filter(has_text="zqxj plugh")).to_have_count(0)
    expect(box).to_be_focused()
    expect(box).to_have_value("zqxj")
    expect(page.locator("#announce")).to_have_text("Removed zqxj plugh from your history")

    # Remove, with the keyboard: Shift+Delete on the active option.
    box.press("ArrowDown")
    active = page.locator("[role=option][aria-selected=true]")
    expect(active).to_have_attribute("aria-labelledby", re.compile("mark"))
    removed = active.text_content()
    box.press("Shift+Delete")
    assert {"type": "remove", "query": removed} in frames.sent
    expect(box).to_have_value("zqxj")
    expect(marked).to_have_count(1)

    # The server agrees: asked again, only the last one is the user's.
    box.fill("")
    type_into(page, box, frames, "zqxj")
    expect(marked).to_have_count(1)

    # Forget everything, then nothing is marked any more, the session's strip is empty, and the
    # anonymous user has a new token (the old one is refused from now on).
    forgotten = page.evaluate("localStorage.getItem('qac.user')")
    session = page.evaluate("sessionStorage.getItem('qac.session')")
    box.press("Escape")
    page.get_by_role("button", name="Forget my history").click()
    page.get_by_role("dialog").get_by_role("button", name="Forget everything").click()
    wait_until(page, lambda: {"type": "forget"} in frames.sent)
    expect(page.locator("#session-queries li")).to_have_count(0)
    wait_until(page, lambda: page.evaluate("localStorage.getItem('qac.user')") != forgotten)
    assert page.evaluate("sessionStorage.getItem('qac.session')") != session
    box.fill("")
    type_into(page, box, frames, "zqxj")
    expect(marked).to_have_count(0)
    assert not any(f.get("personal") for f in frames.received[-1]["items"])
    assert not set(mine) & {item["query"] for item in frames.received[-1]["items"]}

    # The user token: issued once, kept in localStorage, presented in frames only.
    token = page.evaluate("localStorage.getItem('qac.user')")
    assert token and token.startswith("v1.a.")
    assert [f for f in frames.sent if f["type"] == "user"] == [{"type": "user"}]
    page.reload()
    expect(page.locator("#status")).to_have_attribute("data-state", "online")
    wait_until(page, lambda: {"type": "user", "token": token} in frames.sent)
    assert page.evaluate("localStorage.getItem('qac.user')") == token
    assert urls and not any(token in url or token.rpartition(".")[2] in url for url in urls)


def test_a_refused_user_token_is_replaced_by_a_new_anonymous_one(page: Page, server: str, frames: Frames) -> None:
    forged = "v1.a.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.0.forged"
    page.add_init_script(f"localStorage.setItem('qac.user', {json.dumps(forged)})")  # before the page's scripts
    open_demo(page, server)
    wait_until(page, lambda: any(f["type"] == "user" and f.get("token", forged) != forged for f in frames.received))
    assert {"type": "user", "token": forged} in frames.sent and {"type": "user"} in frames.sent
    assert any(f["type"] == "error" and f["code"] == "bad_user" for f in frames.received)
    fresh = page.evaluate("localStorage.getItem('qac.user')")
    assert fresh != forged and fresh.startswith("v1.a.")
