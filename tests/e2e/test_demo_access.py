"""The demo page's combobox against the WAI-ARIA 1.2 pattern, axe-core in both colour
schemes, the phone layout, and the context line. Debian's headless Chromium against a real
server on the small model.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from indexer.model import Model
from tests.e2e.browser import (
    Frames,
    Page,
    demo_tab,
    expect,
    open_demo,
    options_of,
    queries,
    rewrite_frames,
    route_socket,
    tab,
    type_into,
    wait_until,
    watch_frames,
)

axe_api = pytest.importorskip("axe_playwright_python.sync_playwright", reason="axe-playwright-python is not installed")


def expect_no_active(page: Page, box: Any) -> None:
    expect(box).not_to_have_attribute("aria-activedescendant", re.compile(".*"))
    expect(page.locator("[role=option][aria-selected=true]")).to_have_count(0)


def test_home_end_and_the_arrows_sideways_return_to_the_text(
    page: Page, server: str, small_model: Model, frames: Frames
) -> None:
    box = open_demo(page, server)
    type_into(page, box, frames, "rec")
    want = queries(small_model, "rec")
    for key in ("Home", "End", "ArrowLeft", "ArrowRight"):
        box.press("ArrowDown")
        expect(box).to_have_attribute("aria-activedescendant", "suggestion-0")
        box.press(key)
        expect_no_active(page, box)
        expect(box).to_have_value(want[0])  # the option chosen stays in the box, as the text
        expect(box).to_have_attribute("aria-expanded", "true")
        box.fill("")
        type_into(page, box, frames, "rec")
    caret = box.evaluate("el => { el.focus(); return el.selectionStart; }")
    box.press("Home")
    assert box.evaluate("el => el.selectionStart") == 0 != caret


def test_alt_down_opens_and_alt_up_closes(page: Page, server: str, small_model: Model, frames: Frames) -> None:
    box = open_demo(page, server)
    type_into(page, box, frames, "rec")
    want = queries(small_model, "rec")
    box.press("ArrowDown")
    box.press("ArrowDown")
    box.press("Alt+ArrowUp")
    expect(box).to_have_attribute("aria-expanded", "false")
    expect(box).to_have_value(want[1])  # APG: the option's text is kept
    expect_no_active(page, box)
    box.press("Escape")  # closed: clears
    type_into(page, box, frames, "rec")
    box.press("Escape")
    expect(box).to_have_attribute("aria-expanded", "false")
    box.press("Alt+ArrowDown")
    expect(box).to_have_attribute("aria-expanded", "true")
    expect_no_active(page, box)  # Alt+Down opens without choosing


def test_shift_tab_back_never_reopens_a_list_for_another_text(
    page: Page, server: str, small_model: Model, frames: Frames
) -> None:
    box = open_demo(page, server)
    type_into(page, box, frames, "rec")
    want = queries(small_model, "rec")
    pick = next(i for i, query in enumerate(want) if queries(small_model, query) != want)
    for _ in range(pick + 1):
        box.press("ArrowDown")
    box.press("Tab")
    expect(box).not_to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(box).to_be_focused()
    expect(box).to_have_value(want[pick])
    # The list of what the box holds now, asked for again; never the list of "rec".
    wait_until(page, lambda: frames.answered(want[pick]))
    expect(options_of(page, box)).to_have_text(queries(small_model, want[pick]))


def delay_answers(page: Page, seconds: float) -> None:
    """Hand every suggestions frame to the page ``seconds`` after it arrived."""
    page.add_init_script("""{
        const Native = window.WebSocket;
        window.WebSocket = class extends Native {
          set onmessage(fn) {
            super.onmessage = (event) => {
              const late = JSON.parse(event.data).type === "suggestions";
              if (late) setTimeout(() => fn(event), DELAY_MS); else fn(event);
            };
          }
        };
    }""".replace("DELAY_MS", str(round(seconds * 1000))))


def test_down_before_the_answer_arrives_waits_for_it(
    page: Page, server: str, small_model: Model, frames: Frames
) -> None:
    delay_answers(page, 0.4)
    box = open_demo(page, server)
    type_into(page, box, frames, "re")
    old = queries(small_model, "re")
    new = queries(small_model, "rec")
    assert old[0] != new[0]
    box.press_sequentially("c")
    box.press("ArrowDown")
    page.wait_for_timeout(150)
    expect(box).to_have_value("rec")  # not an option of the list for "re"
    expect(options_of(page, box)).to_have_text(new)
    expect(box).to_have_attribute("aria-activedescendant", "suggestion-0")
    expect(box).to_have_value(new[0])


def test_the_list_is_described_counted_and_announced_in_words(page: Page, server: str, frames: Frames) -> None:
    def rewrite(frame: dict[str, Any]) -> None:  # one suggestion for "rec", none for "recx"
        if frame["type"] == "suggestions":
            frame["items"] = frame["items"][:1] if frame["prefix"] == "rec" else []

    rewrite_frames(page, rewrite)
    box = open_demo(page, server)
    expect(box).to_have_attribute("aria-describedby", "hint")
    type_into(page, box, frames, "rec")
    expect(options_of(page, box)).to_have_count(1)
    expect(page.locator("#announce")).to_have_text("1 suggestion")
    type_into(page, box, frames, "x")
    expect(options_of(page, box)).to_have_count(0)
    expect(page.locator("#announce")).to_have_text("No suggestions")


def test_the_context_line_shows_only_when_the_session_changed_the_ranking(
    page: Page, server: str, small_model: Model, history_pair: tuple[str, str], neutral_pair: tuple[str, str],
    frames: Frames,
) -> None:
    box = open_demo(page, server)
    context = page.locator("#context")
    for (prev, prefix), changed in ((neutral_pair, False), (history_pair, True)):
        if changed:
            box.press("Escape")  # the list lies over the session strip
            page.get_by_role("button", name="Start a new session").click()
        box.fill(prev)
        box.press("Enter")
        expect(page.locator("#session-queries li")).to_have_text([prev])
        type_into(page, box, frames, prefix)
        answer = frames.answer()
        assert answer and answer["type"] == "suggestions" and answer["context"] is changed
        expect(options_of(page, box)).to_have_text([item["query"] for item in answer["items"]])
        if changed:
            expect(context).to_have_text(f"Ranked for this session, after {prev}")
            expect(box).to_have_attribute("aria-describedby", "context hint")
        else:
            expect(context).to_be_hidden()
            expect(box).to_have_attribute("aria-describedby", "hint")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_nothing_with_the_list_open(browser: Any, server: str, scheme: str) -> None:
    with demo_tab(browser, server, color_scheme=scheme) as (page, frames, box):
        for query in ("weather", "garden ponds"):
            box.fill(query)
            box.press("Enter")
        type_into(page, box, frames, "rec")
        box.press("ArrowDown")
        expect(box).to_have_attribute("aria-expanded", "true")
        page.locator("#notice").evaluate("el => { el.hidden = false; el.textContent = 'Not searched: a notice'; }")
        results = axe_api.Axe().run(page)
        assert results.violations_count == 0, results.generate_report()


MINE = ("zqxj plugh", "weather", "zqxj quux")  # the zqxj ones are in no log: only the user's history has them
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 375, "height": 667}}


def with_a_correction(frame: dict[str, Any]) -> None:
    """Every list for "zqxj" also gets a corrected spelling, so one list holds both marks."""
    if frame["type"] == "suggestions" and frame["prefix"] == "zqxj":
        frame["items"].append({"query": "squeak", "score": 0.001, "corrected": True})


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_axe_finds_nothing_in_any_state(browser: Any, server: str, scheme: str, size: str) -> None:
    """Empty, typing, a list with the user's own and corrected items, Forget's question,
    offline, and after forget: 0 violations in each."""
    found: dict[str, list[str]] = {}
    with tab(browser, color_scheme=scheme, viewport=VIEWPORTS[size], allow=r"WebSocket connection to") as page:
        frames = watch_frames(page)
        link = route_socket(page, with_a_correction)

        def check(state: str) -> None:
            results = axe_api.Axe().run(page)
            found[state] = [f"{v['id']}: {[n['target'] for n in v['nodes']]}"
                            for v in results.response["violations"]]

        box = open_demo(page, server)
        check("empty")
        type_into(page, box, frames, "rec")
        box.press("ArrowDown")
        expect(box).to_have_attribute("aria-expanded", "true")
        check("typing")
        for query in MINE:
            box.fill(query)
            box.press("Enter")
        expect(page.locator("#session-queries li")).to_have_count(3)
        type_into(page, box, frames, "zqxj")
        expect(page.locator("[role=option].mine")).to_have_count(2)
        expect(page.locator("[role=option].corrected")).to_have_count(1)
        box.press("ArrowDown")
        check("personal and corrected")
        box.press("Escape")
        box.blur()  # on a phone, the header (and Forget) come back once the box is left
        page.get_by_role("button", name="Forget my history").click()
        expect(page.get_by_role("dialog")).to_be_visible()
        check("asked to forget")
        page.get_by_role("button", name="Forget everything").click()
        expect(page.locator("#forgotten")).to_be_visible()
        check("after forget")
        link.drop()
        expect(page.locator("#offline")).to_be_visible()
        check("offline")
        link.allow()
        page.goto("about:blank")
    print(f"axe, {scheme}, {size}:", {state: len(v) for state, v in found.items()})
    assert not any(found.values()), found


def test_remove_is_a_button_beside_its_option_never_inside_one(page: Page, server: str, frames: Frames) -> None:
    box = open_demo(page, server)
    for query in MINE:
        box.fill(query)
        box.press("Enter")
    expect(page.locator("#session-queries li")).to_have_count(3)
    type_into(page, box, frames, "zqxj")
    options = options_of(page, box)
    expect(options.locator(".mark")).to_have_count(2)
    # No control inside an option (axe's nested-interactive): nothing focusable at all.
    expect(options.locator("button, a, input, [tabindex]")).to_have_count(0)
    removes = page.get_by_role("button", name=re.compile("^Remove \u201czqxj \\w+\u201d from your history$"))
    expect(removes).to_have_count(2)
    for i in range(2):
        remove = removes.nth(i)
        target = page.locator(f"#{remove.get_attribute('aria-controls')}")
        expect(target).to_have_attribute("role", "option")  # tied to its option
        query = remove.get_attribute("aria-label").split("\u201c")[1].split("\u201d")[0]
        expect(target).to_have_text(query)
        expect(remove).to_have_attribute("aria-keyshortcuts", "Shift+Delete")
        expect(target).to_have_attribute("aria-describedby", "remove-hint")
        # Beside it: on the same row, and in view.
        row, button = target.bounding_box(), remove.bounding_box()
        assert row and button and row["y"] <= button["y"] + button["height"] / 2 <= row["y"] + row["height"]
    expect(page.locator("#remove-hint")).to_have_text(re.compile("Shift\\+Delete"))


def test_on_a_phone_the_box_and_every_option_stay_above_the_keyboard(
    browser: Any, server: str, small_model: Model
) -> None:
    # 390x844 with the on-screen keyboard up leaves about 390x420 of page.
    with demo_tab(browser, server, viewport={"width": 390, "height": 420}, is_mobile=True, has_touch=True
                  ) as (page, frames, box):
        expect(box).to_have_attribute("enterkeyhint", "search")
        for query in ("weather", "garden ponds", "recipes for dinner"):
            box.fill(query)
            box.press("Enter")
        type_into(page, box, frames, "rec")
        want = queries(small_model, "rec")
        assert len(want) == 10
        options = options_of(page, box)
        expect(options).to_have_count(10)

        def in_view(locator: Any) -> bool:
            rect = locator.bounding_box()
            return rect is not None and rect["y"] >= 0 and rect["y"] + rect["height"] <= 420 + 0.5

        assert in_view(box)
        for i in range(10):
            box.press("ArrowDown")
            expect(options.nth(i)).to_have_attribute("aria-selected", "true")
            assert in_view(options.nth(i)), i
            assert in_view(box)


def test_the_clear_button_empties_the_box_and_keeps_the_focus(
    page: Page, server: str, frames: Frames
) -> None:
    box = open_demo(page, server)
    clear = page.get_by_role("button", name="Clear the search box")
    expect(clear).to_be_hidden()
    type_into(page, box, frames, "rec")
    expect(clear).to_be_visible()
    clear.click()
    expect(box).to_have_value("")
    expect(box).to_be_focused()
    expect(box).to_have_attribute("aria-expanded", "false")
    expect(clear).to_be_hidden()


def test_the_search_box_is_the_first_tab_stop(page: Page, server: str) -> None:
    box = open_demo(page, server)
    box.fill("weather")
    box.press("Enter")  # a chip, "Start a new session" and "Forget my history" now show
    expect(page.get_by_role("button", name="Forget my history")).to_be_visible()
    page.mouse.click(2, 2)  # the top of the page: Tab goes on from there
    page.keyboard.press("Tab")
    expect(box).to_be_focused()


def test_keyboard_focus_is_a_ring_unlike_hover(page: Page, server: str) -> None:
    box = open_demo(page, server)
    outline = "el => getComputedStyle(el.closest('.box')).outlineStyle"
    page.locator("h1").click()
    assert box.evaluate(outline) == "none"
    box.hover()
    assert box.evaluate(outline) == "none"
    page.keyboard.press("Tab")
    while not box.evaluate("el => el === document.activeElement"):
        page.keyboard.press("Tab")
    assert box.evaluate(outline) == "solid"
