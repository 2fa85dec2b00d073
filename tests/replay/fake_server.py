"""A fake completion server for the replay and load tests: speaks the WebSocket protocol with
answers fixed in advance, and misbehaves on request."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

# suggest(prefix, session queries) -> suggestions; ["<error>"] answers an "internal" error instead.
Suggest = Callable[[str, list[str]], list[str]]

VOCAB = [f"new {i}" for i in range(12)] + ["new york times", "new york weather"]


def starts_with(prefix: str, queries: list[str]) -> list[str]:
    """The VOCAB queries starting with ``prefix``, in VOCAB order."""
    return [q for q in VOCAB if q.startswith(prefix)]


@contextlib.asynccontextmanager
async def fake_server(
    suggest: Suggest, *, answers_per_connection: int | None = None, abort: bool = False, refuse_every: int = 0,
    silent: Callable[[str], bool] | None = None, max_connections: int | None = None, refuse_users: int = 0,
) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """Serve on a free port; yields the URL and every message received, in order.

    After ``answers_per_connection`` answers it closes the connection (or aborts the TCP
    connection); with ``refuse_every`` = n, every n-th keystroke is answered ``rate_limited``;
    keystrokes ``silent`` accepts are not answered at all (as if superseded); with
    ``max_connections`` = n, every keystroke of a connection opened while n others were open
    is answered ``overloaded`` (a server past its capacity); the first ``refuse_users`` user
    frames are answered ``rate_limited``, the others taken (any token).
    """
    received: list[dict[str, Any]] = []
    seen = 0
    open_now = 0
    users_refused = 0

    async def handle(ws: ServerConnection) -> None:
        nonlocal open_now
        open_now += 1
        try:
            await serve_one(ws, max_connections is not None and open_now > max_connections)
        finally:
            open_now -= 1

    async def serve_one(ws: ServerConnection, overloaded: bool) -> None:
        nonlocal seen, users_refused
        await ws.send(json.dumps({"type": "hello", "session": "s" * 22, "index": "fake", "queries": []}))
        queries: list[str] = []  # the session queries
        answered = 0
        async for text in ws:
            msg = json.loads(text)
            received.append(msg)
            if msg["type"] == "resume":
                await ws.send(json.dumps({"type": "hello", "session": msg["session"], "index": "fake",
                                          "queries": []}))
                continue
            if msg["type"] == "user":
                if users_refused < refuse_users:
                    users_refused += 1
                    await ws.send(json.dumps({"type": "error", "id": None, "code": "rate_limited", "message": "x"}))
                else:
                    await ws.send(json.dumps({"type": "user", "history": 0}))
                continue
            if msg["type"] == "submit":
                queries.append(msg["query"])
                await ws.send(json.dumps({"type": "ack", "queries": queries[-20:], "added": True}))
                continue
            if answers_per_connection is not None and answered >= answers_per_connection:
                if abort:
                    ws.transport.abort()
                else:
                    await ws.close()
                return
            seen += 1
            if overloaded:
                await ws.send(json.dumps({"type": "error", "id": msg["id"], "code": "overloaded", "message": "x"}))
                continue
            if refuse_every and seen % refuse_every == 0:
                await ws.send(json.dumps({"type": "error", "id": msg["id"], "code": "rate_limited", "message": "x"}))
                continue
            if silent is not None and silent(msg["prefix"]):
                continue
            answered += 1
            items = suggest(msg["prefix"], queries)
            if items == ["<error>"]:
                frame = {"type": "error", "id": msg["id"], "code": "internal", "message": "ranking failed"}
            else:
                frame = {"type": "suggestions", "id": msg["id"], "prefix": msg["prefix"],
                         "items": [{"query": q, "score": 1.0} for q in items], "took_ms": 0.5}
            await ws.send(json.dumps(frame))

    async with serve(handle, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws", received
