"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import private_state


@pytest.fixture(scope="session", autouse=True)
def _private_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The server's generated secret goes to a temporary directory, never the user's home."""
    with private_state(tmp_path_factory.mktemp("state")) as path:
        yield path


@pytest.fixture(scope="module")
def server(small_model_dir: Path) -> Iterator[str]:
    """A server on the small model, for the browser tests of one module: ``host:port``."""
    from tests.e2e.browser import serving

    with serving(small_model_dir) as address:
        yield address


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium (skips when absent)."""
    from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, sync_api

    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab (own storage) that must raise no script errors."""
    from tests.e2e.browser import tab

    with tab(browser) as fresh:
        yield fresh


@pytest.fixture
def frames(page: Any) -> Any:
    """The frames of ``page``'s WebSockets, parsed, as they go."""
    from tests.e2e.browser import watch_frames

    return watch_frames(page)
