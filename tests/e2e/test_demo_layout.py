"""The demo page's layout: the box never moves (layout shifts measured with a
PerformanceObserver of ``layout-shift``), the list never covers the footer nor leaves a seam
at the box, and a first visit explains itself. Debian's headless Chromium against a real
server on the small model.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from indexer.model import Model
from tests.e2e.browser import (
    Page,
    demo_tab,
    expect,
    open_demo,
    options_of,
    route_socket,
    tab,
    type_into,
    wait_until,
    watch_frames,
)

VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 375, "height": 667}}

# Every layout shift, as the browser reports it: its score, whether it came within 500 ms of
# an input (CLS leaves those out) and what moved.
WATCH_SHIFTS = """
window.shifts = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    window.shifts.push({value: e.value, recent: e.hadRecentInput, sources: e.sources.map((s) => {
      const node = s.node && s.node.nodeType === 3 ? s.node.parentNode : s.node;
      return node ? `${node.nodeName}#${node.id || ""}.${node.className || ""}` : "?";
    })});
  }
}).observe({type: "layout-shift", buffered: true});
"""


def rect(locator: Any) -> dict[str, float]:
    """Where ``locator`` is on the page (not in the window, which a test's click may scroll)."""
    found: dict[str, float] = locator.evaluate(
        "el => { const r = el.getBoundingClientRect();"
        " return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}; }")
    return found


def shifts(page: Page) -> list[dict[str, Any]]:
    page.wait_for_timeout(100)  # the last frames are drawn and reported
    found: list[dict[str, Any]] = page.evaluate("window.shifts")
    return found


def with_context(frame: dict[str, Any]) -> None:
    """The ten suggestions for "how t" with the context line under them."""
    if frame["type"] == "suggestions" and frame["prefix"] == "how t":
        frame["context"] = True


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_a_scripted_session_shifts_nothing(browser: Any, server: str, size: str) -> None:
    """Type, pick, submit three times, a ten-item list, offline, back, remove, forget: the box
    stays put and the page's layout shifts add up to 0 (on a phone, once the header stepped
    aside for typing, which is the one move that the user's first keystroke makes)."""
    viewport = VIEWPORTS[size]
    with tab(browser, viewport=viewport, allow=r"WebSocket connection to") as page:
        page.add_init_script(WATCH_SHIFTS)
        frames = watch_frames(page)
        link = route_socket(page, with_context)
        box = open_demo(page, server)
        field = page.locator("#box")
        wait_until(page, lambda: any(f["type"] == "user" for f in frames.received))
        at_load = rect(field)

        type_into(page, box, frames, "weat", delay=30)
        where = rect(field)
        before = len(shifts(page))  # on a phone, the header stepped aside: the user's doing
        if size == "desktop":
            assert where == at_load and before == 0
        box.press("ArrowDown")
        box.press("Enter")  # pick
        expect(page.locator("#session-queries li")).to_have_count(1)
        for query in ("tv", "mp3", "zqxj plugh"):  # short chips, that used to wrap
            box.fill(query)
            box.press("Enter")
        expect(page.locator("#session-queries li")).to_have_count(4)
        assert rect(field) == where

        type_into(page, box, frames, "how t")  # ten items and the context line
        popup, footer = page.locator("#popup"), page.locator("#stats")
        expect(options_of(page, box)).to_have_count(10)
        expect(page.locator("#context")).to_be_visible()
        if footer.is_visible():
            assert rect(popup)["y"] + rect(popup)["height"] <= rect(footer)["y"]  # the footer is never covered
        assert rect(field) == where

        link.drop()
        expect(page.locator("#offline")).to_be_visible()
        assert rect(field) == where
        link.allow()  # and the page reconnects by itself
        expect(page.locator("#status")).to_have_attribute("data-state", "online", timeout=15_000)
        expect(page.locator("#offline")).to_be_hidden()
        assert rect(field) == where

        box.fill("")
        type_into(page, box, frames, "zqxj")
        page.get_by_role("button", name="Remove \u201czqxj plugh\u201d from your history").click()
        expect(page.locator("#session-queries li")).to_have_count(3)
        assert rect(field) == where

        box.press("Escape")
        assert shifts(page)[before:] == []  # nothing moved since the first keystroke
        box.blur()  # leaving the box: on a phone the header comes back, the user's doing too
        before = len(shifts(page))
        at_rest = rect(field)
        page.get_by_role("button", name="Forget my history").click()
        page.get_by_role("button", name="Forget everything").click()
        expect(page.locator("#forgotten")).to_be_visible()
        expect(page.locator("#session-queries li")).to_have_count(0)
        assert rect(field) == at_rest == at_load

        found = shifts(page)
        cls = sum(s["value"] for s in found if not s["recent"])
        print(f"layout shifts, {size}: {len(found)} entries, CLS {cls}, all {sum(s['value'] for s in found)}")
        assert found[before:] == [] and cls == 0, found
        if size == "desktop":
            assert found == []
        page.goto("about:blank")


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_the_list_meets_the_box_without_a_seam(browser: Any, server: str, size: str) -> None:
    with demo_tab(browser, server, viewport=VIEWPORTS[size]) as (page, frames, box):
        type_into(page, box, frames, "rec")
        field, popup = rect(page.locator("#box")), rect(page.locator("#popup"))
        assert (popup["x"], popup["width"]) == (field["x"], field["width"])  # flush on both sides
        assert popup["y"] == field["y"] + field["height"]


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_a_first_visit_explains_itself_in_the_first_screenful(
    browser: Any, server: str, small_model: Model, size: str
) -> None:
    viewport = VIEWPORTS[size]
    with demo_tab(browser, server, viewport=viewport) as (page, frames, box):
        expect(box).to_be_focused()  # ready to type, and yet:
        title = page.get_by_role("heading", level=1)
        about = page.locator("#about")
        keys = page.locator("#hint")
        expect(about).to_contain_text("2006 AOL search log, released for research")
        expect(about).to_contain_text("Type a query")
        expect(keys).to_contain_text("Enter adds the query to this session (a demo has no results page)")
        for shown in (title, about, keys, page.locator("#box")):
            expect(shown).to_be_visible()
            where = rect(shown)
            assert 0 <= where["y"] and where["y"] + where["height"] <= viewport["height"], shown

        type_into(page, box, frames, "w")
        if size == "phone":  # the header steps aside once the user types, not before
            expect(about).to_be_hidden()
            assert rect(page.locator("#box"))["y"] < 40
        else:
            expect(about).to_be_visible()


def test_the_footer_speaks_to_visitors_and_keeps_the_internals_for_developers(
    page: Page, server: str, small_model: Model
) -> None:
    open_demo(page, server)
    footer = page.locator("#stats")
    expect(footer).to_contain_text("AOL in 2006")
    expect(page.locator("#model")).to_contain_text(small_model.version)
    shown = footer.inner_text()
    assert small_model.version not in shown and "WebSocket" not in shown and "model" not in shown
    page.get_by_text("For developers").click()
    expect(page.locator("#model")).to_be_visible()
    assert re.search(rf"model {small_model.version}.*WebSocket", footer.inner_text(), re.S)
