"""uvicorn's httptools HTTP protocol, minus the garbage each WebSocket upgrade leaves.

On an upgrade, the protocol hands its transport to the WebSocket protocol and is dropped,
still holding its parser, whose callbacks are the protocol's own methods. That reference
cycle (the protocol, the parser, their flow control, event and buffers) waited for the cyclic
garbage collector, so every WebSocket connection gave it more to do, and more often
(BENCHMARKS.md, "Garbage of each connection"). This protocol lets go of its parser once the
upgrade is done, as uvicorn's does when a plain HTTP connection is lost.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HttpProtocol(HttpToolsProtocol):
    """What ``qac serve`` gives ``uvicorn.Config(http=...)``."""

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        self.parser = None  # type: ignore[assignment]
