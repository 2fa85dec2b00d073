"""Fixtures of the server tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.app import create_app
from server.config import ServerConfig
from tests.support import TOKEN, private_state, running


@pytest.fixture(scope="session", autouse=True)
def _private_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The server's generated secret goes to a temporary directory, never the user's home."""
    with private_state(tmp_path_factory.mktemp("state")) as path:
        yield path


@pytest.fixture
def config(small_model_dir: Path) -> ServerConfig:
    """A server's configuration for the tests that need nothing special (a module may override it)."""
    return ServerConfig(index=str(small_model_dir), admin_token=TOKEN)


@pytest.fixture
def server(config: ServerConfig) -> Iterator[str]:
    """A running server of ``config``, its address (a module may override it)."""
    with running(create_app(config), config) as address:
        yield address
