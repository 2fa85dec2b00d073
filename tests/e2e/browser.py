"""What the browser tests share: Debian's headless Chromium driven by playwright, a real
server on the small model (:func:`serving`), the demo page open in a tab of its own
(:func:`demo_tab`), and the frames of the page's WebSockets.

The fixtures (browser, page, frames, server) live in conftest.py; importing this module
skips the test module that does when /usr/bin/chromium or playwright is absent.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from indexer.model import Model
from server.app import create_app
from server.config import ServerConfig
from tests.support import running

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

Page = Any  # playwright.sync_api.Page, whose import is optional


@contextlib.contextmanager
def tab(browser: Any, *, allow: str | None = None, **options: Any) -> Iterator[Page]:
    """A fresh tab in a context of its own (own storage) that must raise no script error and
    log no console error but those matching ``allow``; ``options`` go to ``new_context``."""
    context = browser.new_context(**{"viewport": {"width": 1000, "height": 760}, **options})
    context.set_default_timeout(5000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))

    def console(msg: Any) -> None:
        if msg.type == "error" and not (allow and re.search(allow, msg.text)):
            errors.append(f"console: {msg.text}")

    page.on("console", console)
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors


# Every tab of a test module is one address (127.0.0.1) to the server: the per-address CPU budget
# would be spent by a module's typing on a loaded machine, whose rankings take more CPU, and then
# refuse its submits. The budget is tested in tests/server; the message rate limits stay.
UNBUDGETED = {"address_cpu_rate": 1e9, "address_cpu_burst": 1e9}


@contextlib.contextmanager
def serving(model_dir: Path, port: int = 0, **settings: Any) -> Iterator[str]:
    """A real server of the model at ``model_dir`` on ``port`` (0: a free one), with ``settings``
    over ServerConfig's defaults and :data:`UNBUDGETED`; yields ``host:port``."""
    config = ServerConfig(index=str(model_dir), **{**UNBUDGETED, **settings})
    with running(create_app(config), config, port=port) as address:
        yield address


def open_demo(page: Page, server: str) -> Any:
    """Load the page, wait until its socket is live; the search box."""
    page.goto(f"http://{server}/")
    expect(page.locator("#status")).to_have_attribute("data-state", "online")
    return page.get_by_role("combobox")


@contextlib.contextmanager
def demo_tab(browser: Any, server: str, *, allow: str | None = None, **options: Any
             ) -> Iterator[tuple[Page, Frames, Any]]:
    """The demo page of ``server`` open in a fresh :func:`tab` (``allow`` and ``options`` as
    there), its frames watched from the start: (page, frames, search box)."""
    with tab(browser, allow=allow, **options) as page:
        frames = watch_frames(page)
        yield page, frames, open_demo(page, server)


def options_of(page: Page, box: Any) -> Any:
    return page.locator(f"#{box.get_attribute('aria-controls')} [role=option]")


def queries(model: Model, prefix: str, history: tuple[str, ...] = ()) -> list[str]:
    return [c.query for c in model.complete(prefix, history)]


@dataclass
class Frames:
    """The frames of the page's WebSockets, parsed, as they go."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)

    def answered(self, text: str | None = None) -> bool:
        """Whether the last keystroke sent has been answered (and, given ``text``, was that
        text: a keystroke typed may not have reached the socket yet when this is asked)."""
        sent = [f for f in self.sent if f["type"] == "query"]
        return bool(sent) and text in (None, sent[-1]["prefix"]) and self.answer() is not None

    def answer(self) -> dict[str, Any] | None:
        """The answer to the last keystroke sent, if it has come."""
        ids = [f["id"] for f in self.sent if f["type"] == "query"]
        return next((f for f in reversed(self.received) if ids and f.get("id") == ids[-1]), None)


def rewrite_frames(page: Page, rewrite: Callable[[dict[str, Any]], None]) -> None:
    """Pass every frame the server sends the page through ``rewrite``, which edits it in place."""

    def route(ws: Any) -> None:
        upstream = ws.connect_to_server()
        ws.on_message(upstream.send)

        def down(message: str) -> None:
            frame = json.loads(message)
            rewrite(frame)
            ws.send(json.dumps(frame))

        upstream.on_message(down)

    page.route_web_socket(re.compile(r"/ws(\?|$)"), route)


def watch_frames(page: Page) -> Frames:
    """Record the frames of the page's WebSockets from now on."""
    out = Frames()

    def watch(ws: Any) -> None:
        ws.on("framesent", lambda payload: out.sent.append(json.loads(payload)))
        ws.on("framereceived", lambda payload: out.received.append(json.loads(payload)))

    page.on("websocket", watch)
    return out


def type_into(page: Page, box: Any, frames: Frames, text: str, delay: float = 0) -> None:
    """Type ``text`` key by key and wait for the answer to the box's text after the last key."""
    box.press_sequentially(text, delay=delay)
    value = box.input_value()
    wait_until(page, lambda: frames.answered(value))


def wait_until(page: Page, done: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let playwright deliver events until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(20)


@dataclass
class Link:
    """The page's WebSocket, routed through playwright: ``drop()`` closes it and refuses new
    ones (offline) until ``allow()``."""

    sockets: list[Any] = field(default_factory=list)
    refuse: bool = False

    def drop(self) -> None:
        self.refuse = True
        self.sockets[-1].close(code=1012, reason="restarting")

    def allow(self) -> None:
        self.refuse = False


def route_socket(page: Page, rewrite: Callable[[dict[str, Any]], None] | None = None) -> Link:
    """Route the page's WebSockets through a :class:`Link`; ``rewrite`` edits, in place, every
    frame the server sends."""
    link = Link()

    def route(ws: Any) -> None:
        if link.refuse:
            ws.close(code=1013, reason="try again later")
            return
        upstream = ws.connect_to_server()
        link.sockets.append(ws)
        if rewrite is None:
            return

        def down(message: str) -> None:
            frame = json.loads(message)
            rewrite(frame)
            ws.send(json.dumps(frame))

        ws.on_message(upstream.send)
        upstream.on_message(down)

    page.route_web_socket(re.compile(r"/ws(\?|$)"), route)
    return link
