"""The event loop the clients run in: uvloop's where it is installed (as uvicorn's "auto" picks
for the server), else asyncio's.

The load generator shares the machine's cores with the server it measures: what it spends per
keystroke is taken from the server's capacity. With uvloop it spent about 15% less CPU per
answered keystroke than with asyncio's loop (BENCHMARKS.md#load-generator)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """``main`` to completion in a fresh event loop, as :func:`asyncio.run`."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency wherever it builds
        return asyncio.run(main)
    return uvloop.run(main)
