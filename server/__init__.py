"""Online side: serve a completion model over WebSocket and HTTP (``qac serve``).

Names are imported on first use, so ``import server.cli`` stays cheap for ``qac``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .config import ConfigError, ServerConfig
    from .main import ServeError, run

__all__ = ["ConfigError", "ServeError", "ServerConfig", "create_app", "run"]

_HOMES = {
    "create_app": "app", "ConfigError": "config", "ServerConfig": "config",
    "ServeError": "main", "run": "main",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
