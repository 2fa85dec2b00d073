"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import private_state


@pytest.fixture(scope="session", autouse=True)
def _private_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The server's generated secret goes to a temporary directory, never the user's home."""
    with private_state(tmp_path_factory.mktemp("state")) as path:
        yield path
