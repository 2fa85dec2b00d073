"""The demo page shows what the server holds: the session strip comes from the server's
frames, refusals say why, offline is visible and honest, and the client keeps to the
server's limits. Debian's headless Chromium against a real server on the small model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from indexer.model import Model
from indexer.normalize import normalize
from tests.e2e.browser import (
    Frames,
    Page,
    expect,
    open_demo,
    options_of,
    queries,
    rewrite_frames,
    serving,
    tab,
    type_into,
    wait_until,
    watch_frames,
)
from tests.support import free_port

# What Chromium logs for a socket to a server that is down.
REFUSED = r"WebSocket connection to .* failed"


def strip(page: Page) -> Any:
    return page.locator("#session-queries li")


def widen_max_prefix(page: Page, max_prefix: int) -> None:
    """Make the page believe the server takes longer queries than it does, so that the
    server, not the client, refuses them."""

    def rewrite(frame: dict[str, Any]) -> None:
        if frame["type"] == "hello":
            frame["limits"]["max_prefix"] = max_prefix

    rewrite_frames(page, rewrite)


def test_a_submit_the_server_refuses_says_why_and_adds_nothing_even_after_a_reload(
    page: Page, server: str, frames: Frames
) -> None:
    widen_max_prefix(page, 1000)
    box = open_demo(page, server)
    box.fill("weather")
    box.press("Enter")
    expect(strip(page)).to_have_text(["weather"])

    long = "garden " * 43  # 301 characters: the server's limit is 200
    box.fill(long)
    box.press("Enter")
    notice = page.locator("#notice")
    expect(notice).to_have_text(re.compile(r"too long.*at most 1000 characters|too long", re.S))
    expect(notice).to_contain_text("Not searched")
    assert any(f["type"] == "error" and f.get("for") == "submit" and f["code"] == "too_long" for f in frames.received)
    expect(strip(page)).to_have_text(["weather"])  # nothing added
    expect(page.locator("#context")).to_be_hidden()
    expect(box).to_have_value(long)  # kept, to be shortened

    box.fill("garden ponds")
    box.press("Enter")
    expect(strip(page)).to_have_text(["weather", "garden ponds"])
    expect(notice).to_be_hidden()

    page.reload()
    expect(page.locator("#status")).to_have_attribute("data-state", "online")
    expect(strip(page)).to_have_text(["weather", "garden ponds"])


def test_the_box_holds_no_more_than_the_server_takes_and_a_query_with_no_letter_says_so(
    page: Page, server: str, frames: Frames
) -> None:
    box = open_demo(page, server)
    hello = next(f for f in frames.received if f["type"] == "hello")
    expect(box).to_have_attribute("maxlength", str(hello["limits"]["max_prefix"]))
    box.press_sequentially("x" * 10)
    box.evaluate("(el, n) => { el.value = 'y'.repeat(n); el.dispatchEvent(new Event('input')); }",
                 hello["limits"]["max_prefix"] + 1)  # a script, past maxlength
    expect(page.locator("#notice")).to_contain_text("too long")
    assert not any(f["type"] == "query" and len(f["prefix"]) > hello["limits"]["max_prefix"] for f in frames.sent)

    box.fill("\u2615")
    box.press("Enter")
    expect(page.locator("#notice")).to_have_text("Nothing to search: type a letter or a digit.")
    expect(page.locator("#announce")).to_have_text("Nothing to search: type a letter or a digit.")
    assert not any(f["type"] == "submit" for f in frames.sent)
    expect(strip(page)).to_have_count(0)


def test_typing_fast_stays_under_the_rate_limit_and_ends_on_the_last_prefix(
    page: Page, server: str, small_model: Model, frames: Frames
) -> None:
    box = open_demo(page, server)
    text = ("new york weather " * 9)[:150]
    # 150 keystrokes at once, faster than any keyboard: more than the server's burst.
    box.evaluate("""(el, text) => {
        el.focus();
        for (let i = 1; i <= text.length; i++) {
          el.value = text.slice(0, i);
          el.dispatchEvent(new InputEvent("input", {inputType: "insertText", data: text[i - 1]}));
        }
    }""", text)
    wait_until(page, lambda: any(f["type"] == "suggestions" and f["prefix"] == text for f in frames.received),
               timeout=15)
    errors = [f for f in frames.received if f["type"] == "error"]
    assert errors == []  # no rate_limited: the client paced itself
    sent = [f["prefix"] for f in frames.sent if f["type"] == "query"]
    assert sent[-1] == text and len(sent) < 150  # the newest unsent keystroke went, the others did not
    expect(options_of(page, box)).to_have_text(queries(small_model, text))


def retry_seconds(page: Page) -> int | None:
    text = page.locator("#offline-text").text_content() or ""
    match = re.search(r"retrying in (\d+) s", text)
    return int(match.group(1)) if match else None


def test_the_server_restarts_mid_typing_and_the_page_tells_the_truth(
    browser: Any, small_model_dir: Path, small_model: Model
) -> None:
    port = free_port()
    with tab(browser, allow=REFUSED) as page:
        frames = watch_frames(page)
        page.add_init_script("""
            window.said = [];
            document.addEventListener("DOMContentLoaded", () => {
              const announce = document.getElementById("announce");
              if (announce) new MutationObserver(() => window.said.push(announce.textContent))
                .observe(announce, {subtree: true, childList: true, characterData: true});
            });
        """)
        options = page.locator("[role=option]")
        banner = page.locator("#offline")
        with serving(small_model_dir, port) as address:
            box = open_demo(page, address)
            box.fill("weather")
            box.press("Enter")
            expect(strip(page)).to_have_text(["weather"])
            type_into(page, box, frames, "ga")
            expect(options).not_to_have_count(0)
            expect(banner).to_be_hidden()
        # The server is gone, mid-typing.
        expect(page.locator("#status")).to_have_attribute("data-state", "offline")
        expect(banner).to_be_visible()
        expect(options).to_have_count(0)  # the list closed: nothing stale to pick
        expect(box).to_have_attribute("aria-expanded", "false")
        expect(page.locator("#timing")).to_have_text("")
        box.press_sequentially("r")
        box.press("ArrowDown")
        expect(options).to_have_count(0)
        expect(box).to_have_value("gar")

        box.fill("garden ponds")
        box.press("Enter")  # held until the server is back
        expect(page.locator("#notice")).to_contain_text("offline")
        expect(strip(page)).to_have_text(["weather"])  # not acknowledged: not shown

        # The banner counts down; wait for a long enough back-off, then the server comes back.
        wait_until(page, lambda: (retry_seconds(page) or 0) >= 3, timeout=20)
        first = retry_seconds(page)
        page.wait_for_timeout(1100)
        later = retry_seconds(page)
        assert first is not None and later is not None and later < first
        with serving(small_model_dir, port):
            box.press_sequentially("s")  # typing retries at once, not when the back-off ends
            expect(page.locator("#status")).to_have_attribute("data-state", "online", timeout=1500)
            expect(banner).to_be_hidden()
            # A new server: the session it holds is the submit made offline, and only that; the
            # page says that the earlier queries are gone.
            expect(strip(page)).to_have_text(["garden ponds"])
            expect(page.locator("#notice")).to_have_text(re.compile("restarted and no longer has this session"))
            expect(page.locator("#notice")).to_have_class(re.compile(r"\binfo\b"))
            box.fill("")
            type_into(page, box, frames, "ga")
            answer = frames.answer()
            assert answer and answer["type"] == "suggestions" and answer["prefix"] == "ga"
            expect(options).to_have_text([item["query"] for item in answer["items"]])
            said = page.evaluate("window.said")
            page.goto("about:blank")  # before the server stops
    # One announcement going offline and one coming back, however many attempts between.
    offline = [i for i, s in enumerate(said) if s.startswith("Offline")]
    back = [i for i, s in enumerate(said) if s.startswith("Back online")]
    assert len(offline) == 1 and len(back) == 1 and offline[0] < back[0], said


def test_the_status_corner_is_not_a_live_region(page: Page, server: str) -> None:
    open_demo(page, server)
    live = page.locator("[aria-live], [role=status], [role=alert], [role=log]")
    assert [el.get_attribute("id") for el in live.all()] == ["announce"]
    expect(page.locator("#session-queries")).not_to_have_attribute("aria-live", re.compile(".*"))


def test_a_chip_has_its_whole_query_as_a_title_and_searches_it_again(
    page: Page, server: str, frames: Frames
) -> None:
    box = open_demo(page, server)
    long = "how to grow tomatoes in a small garden without a greenhouse"
    box.fill(long)
    box.press("Enter")
    chip = page.get_by_role("button", name=long)
    expect(chip).to_have_attribute("title", re.compile(re.escape(long)))
    box.fill("weather")
    box.press("Enter")
    expect(strip(page)).to_have_text([long, "weather"])
    chip.click()
    expect(strip(page)).to_have_text([long, "weather", normalize(long)])
    assert [f["query"] for f in frames.sent if f["type"] == "submit"] == [long, "weather", long]


def test_after_remove_and_forget_the_strip_and_the_context_line_say_what_the_server_holds(
    page: Page, server: str, frames: Frames
) -> None:
    box = open_demo(page, server)
    for query in ("zqxj plugh", "weather", "zqxj quux"):
        box.fill(query)
        box.press("Enter")
    expect(strip(page)).to_have_text(["zqxj plugh", "weather", "zqxj quux"])
    type_into(page, box, frames, "zqxj")
    context = page.locator("#context")
    expect(context).to_have_text("Ranked for this session, after zqxj quux")

    # Remove with the pointer: the server's answer carries the session without it.
    page.get_by_role("button", name="Remove \u201czqxj quux\u201d from your history").click()
    wait_until(page, lambda: any(f["type"] == "user" and "removed" in f for f in frames.received))
    expect(strip(page)).to_have_text(["zqxj plugh", "weather"])
    expect(context).not_to_contain_text("zqxj quux")
    expect(context).to_have_text("Ranked for this session, after weather")

    # Remove with the keyboard.
    box.press("ArrowDown")
    expect(page.locator("[role=option][aria-selected=true]")).to_have_text("zqxj plugh")
    box.press("Shift+Delete")
    expect(strip(page)).to_have_text(["weather"])
    answers = [f for f in frames.received if f["type"] == "user" and "removed" in f]
    assert [a["queries"] for a in answers] == [["zqxj plugh", "weather"], ["weather"]]

    # Forget: an empty strip and no context line, as the new session is.
    box.press("Escape")
    box.blur()
    page.get_by_role("button", name="Forget my history").click()
    page.get_by_role("button", name="Forget everything").click()
    expect(strip(page)).to_have_count(0)
    expect(page.locator("#session-queries-empty")).to_be_visible()
    box.fill("")
    type_into(page, box, frames, "zqxj")
    expect(context).to_be_hidden()


def test_forget_shows_only_with_history_asks_once_and_says_what_it_did(
    page: Page, server: str, frames: Frames
) -> None:
    box = open_demo(page, server)
    forget = page.get_by_role("button", name="Forget my history")
    wait_until(page, lambda: any(f["type"] == "user" for f in frames.received))
    expect(forget).to_be_hidden()  # a first visit: nothing to forget
    box.fill("zqxj plugh")
    box.press("Enter")
    expect(forget).to_be_visible()

    dialog = page.get_by_role("dialog", name="Forget your history?")
    forget.click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("cannot be undone")
    dialog.get_by_role("button", name="Keep it").click()  # changed their mind: nothing happens
    expect(dialog).to_be_hidden()
    page.wait_for_timeout(200)
    assert {"type": "forget"} not in frames.sent
    expect(strip(page)).to_have_text(["zqxj plugh"])
    expect(forget).to_be_focused()

    forget.click()
    dialog.get_by_role("button", name="Forget everything").click()
    wait_until(page, lambda: {"type": "forget"} in frames.sent)
    assert [f for f in frames.sent if f["type"] == "forget"] == [{"type": "forget"}]  # asked once, sent once
    done = page.locator("#forgotten")
    expect(done).to_be_visible()
    expect(done).to_have_text(re.compile("deleted.*new session"))
    expect(forget).to_be_hidden()  # nothing left to forget
    expect(strip(page)).to_have_count(0)
    expect(page.locator("#announce")).to_have_text(re.compile("forgotten"))
    box.fill("weather")
    box.press("Enter")  # history again: Forget is back, the news goes
    expect(forget).to_be_visible()
    expect(done).to_be_hidden()
