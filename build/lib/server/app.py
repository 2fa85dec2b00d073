"""The Starlette application: WebSocket ``/ws``, ``/complete``, health, metrics, admin, demo page."""

from __future__ import annotations

import asyncio
import contextlib
from importlib import resources
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from indexer.model import Model
from indexer.normalize import normalize

from . import protocol
from .config import ConfigError, ServerConfig, normalize_origin
from .connection import Connection, ServerState, expose_abort
from .metrics import Metrics
from .ranker import Ranker, load_warm, read_announcement
from .sessions import open_store
from .store_health import StoreHealth

log = logging.getLogger("qac.server")

# Package data: found the same way in a checkout, an editable and a plain install.
STATIC_DIR = Path(str(resources.files("static")))


def create_app(config: ServerConfig, *, model: Model | None = None) -> Starlette:
    """The server as an ASGI app; the model (unless given) and sessions open at startup."""
    metrics = Metrics(shared_sessions=config.sessions != "memory")
    static_dir = Path(config.static_dir) if config.static_dir else STATIC_DIR

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal model
        loaded, index, announced = await _initial_model(config, model)
        model = None  # from here the ranker alone holds it, so that a reload frees it
        store = open_store(config.sessions, config.session_ttl, config.max_history, config.max_sessions)
        try:
            await store.ping()
            ranker = Ranker(
                loaded, index, threads=config.rank_threads, k=config.k, reload_file=config.reload_file,
                announced=announced, on_swap=lambda m, i: metrics.set_model(m.version, i),
            )
            metrics.set_model(loaded.version, index)
            log.info("serving model %s from %s, sessions in %s (pid %d)", loaded.version, index, store.kind,
                     os.getpid())
            del loaded
            health = StoreHealth(store, metrics)
            app.state.qac = ServerState(config, ranker, store, metrics, health)
            follower = asyncio.create_task(ranker.follow())
            watcher = asyncio.create_task(health.watch())
            counter = asyncio.create_task(health.count_forever())
            try:
                yield
            finally:
                follower.cancel()
                watcher.cancel()
                counter.cancel()
                ranker.close()
                metrics.close()
        finally:
            await store.close()

    static = StaticFiles(directory=static_dir, check_dir=False)

    async def asset(request: Request) -> Response:
        return await static.get_response(request.path_params["name"], request.scope)

    async def demo_page(request: Request) -> Response:
        return FileResponse(static_dir / "index.html")

    routes = [
        Route("/", demo_page),
        WebSocketRoute("/ws", websocket_endpoint),
        Route("/complete", complete),
        Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint),
        Route("/admin/reload", admin_reload, methods=["POST"]),
        Route("/static/{name:path}", asset),
        Route("/{name:path}", asset),
    ]
    middleware = [Middleware(expose_abort)]
    if config.allowed_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(config.allowed_origins),
                                     allow_methods=["GET"]))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def app_from_env() -> Starlette:
    """App factory for worker processes: the configuration comes from ``QAC_*`` variables."""
    return create_app(ServerConfig.from_env(os.environ))


async def _initial_model(
    config: ServerConfig, model: Model | None
) -> tuple[Model, str, tuple[str, str] | None]:
    """The model to start with (the latest announced reload, else the given one, else ``--index``),
    its directory and the announcement it follows."""
    announced = read_announcement(Path(config.reload_file)) if config.reload_file else None
    index = announced[1] if announced else config.index
    if model is not None and index == config.index:
        return model, config.index or "(in memory)", announced
    if index is None:
        raise ConfigError("no model: give an index directory or a loaded model")
    return await asyncio.to_thread(load_warm, index), index, announced


def _state(conn: HTTPConnection) -> ServerState:
    state: ServerState = conn.app.state.qac
    return state


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"type": "error", "code": code, "message": message}, status, headers=headers)


def origin_allowed(headers: Headers, allowed: tuple[str, ...]) -> bool:
    """Whether this client may open a WebSocket: a browser (which always sends an Origin) only
    from the server's own origin or a listed one, so another site cannot drive a user's
    session; a client without an Origin (a script, ``qac replay``) always."""
    given = headers.get("origin")
    if given is None:
        return True
    try:
        origin = normalize_origin(given)
    except ConfigError:  # "null" (sandboxed frames, files) or garbage
        return False
    return origin in allowed or urlsplit(origin).netloc == headers.get("host", "").lower()


async def websocket_endpoint(websocket: WebSocket) -> None:
    state = _state(websocket)
    if not origin_allowed(websocket.headers, state.config.allowed_origins):
        log.warning("refused a WebSocket from origin %r", websocket.headers.get("origin"))
        state.metrics.closed.labels("origin").inc()
        await websocket.close(code=1008)
        return
    await websocket.accept()
    if state.open_connections >= state.config.max_connections:
        state.metrics.closed.labels("full").inc()
        await websocket.close(code=1013, reason="server full, try again later")
        return
    state.open_connections += 1
    try:
        await Connection(websocket, state).serve(websocket.query_params.get("session"))
    finally:
        state.open_connections -= 1


async def complete(request: Request) -> Response:
    """Stateless completion: ``?prefix=...&prev=...`` (``prev`` repeatable, oldest first)."""
    state = _state(request)
    config = state.config
    prefix = request.query_params.get("prefix")
    if prefix is None:
        return _error(400, protocol.BAD_MESSAGE, "missing query parameter 'prefix'")
    prev = request.query_params.getlist("prev")
    longest = max(len(p) for p in [prefix, *prev])
    if longest > config.max_prefix:
        return _error(400, protocol.TOO_LONG, f"a parameter of {longest} characters; the limit is "
                      f"{config.max_prefix}")
    history = [h for h in map(normalize, prev) if h][-config.max_history:]
    started = time.perf_counter()
    state.metrics.keystrokes.labels("http").inc()
    ranked = await state.ranker.complete(prefix, history)
    took = time.perf_counter() - started
    state.metrics.latency.labels("http").observe(took)
    return JSONResponse({"prefix": ranked.prefix, "items": protocol.items(ranked.items),
                         "index": ranked.version, "took_ms": round(took * 1000, 3)})


async def healthz(request: Request) -> Response:
    """200 while the server answers keystrokes; ``status`` is ``degraded`` while the session
    store is down (suggestions then come without the history the store holds)."""
    state = _state(request)
    body: dict[str, Any] = {"status": "ok", "index": state.ranker.version, "sessions": state.store.kind,
                            "store": "up"}
    if not await state.health.probe():
        body.update(status="degraded", store="down", error=state.health.error)
    return JSONResponse(body)


async def metrics_endpoint(request: Request) -> Response:
    state = _state(request)
    await state.health.count_sessions()
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


async def admin_reload(request: Request) -> Response:
    """``POST {"index": DIR}`` with ``Authorization: Bearer $QAC_ADMIN_TOKEN``: swap in a new model."""
    state = _state(request)
    token = state.config.admin_token
    if not token:
        return _error(403, "forbidden", "admin endpoints are disabled: set QAC_ADMIN_TOKEN")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _error(401, "unauthorized", "expected Authorization: Bearer <QAC_ADMIN_TOKEN>",
                      {"WWW-Authenticate": "Bearer"})
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        return _error(400, protocol.BAD_JSON, f"not JSON: {exc}")
    index = body.get("index") if isinstance(body, dict) else None
    if not isinstance(index, str) or not index:
        return _error(400, protocol.BAD_MESSAGE, f'expected {{"index": "DIR"}}, got {body!r}'[:300])
    index = str(Path(index).expanduser().resolve())
    try:
        old, new = await state.ranker.reload(index)
    except Exception as exc:  # whatever a damaged directory raises, the old model keeps serving
        state.metrics.reloads.labels("failed").inc()
        log.warning("reload of %s failed: %s", index, exc)
        return _error(400, "bad_index", f"{exc}; still serving {state.ranker.version}")
    state.metrics.reloads.labels("ok").inc()
    return JSONResponse({"index": new, "previous": old, "directory": index})
