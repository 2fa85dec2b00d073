from typing import Any
from tests.e2e.browser import open_demo, tab, type_into, watch_frames, expect


def test_shots(browser: Any, server: str) -> None:
    for w, h in ((1280, 800), (375, 667)):
        for scheme in ("light", "dark"):
            with tab(browser, viewport={"width": w, "height": h}, color_scheme=scheme) as page:
                frames = watch_frames(page)
                box = open_demo(page, server)
                page.screenshot(path=f"/tmp/shots/{w}-{scheme}-0.png")
                for q in ("zqxj plugh", "weather", "garden ponds", "zqxj quux"):
                    box.fill(q)
                    box.press("Enter")
                expect(page.locator("#history li")).to_have_count(4)
                type_into(page, box, frames, "zqxj")
                page.screenshot(path=f"/tmp/shots/{w}-{scheme}-1.png")
                box.fill("")
                type_into(page, box, frames, "how t")
                page.screenshot(path=f"/tmp/shots/{w}-{scheme}-2.png")
