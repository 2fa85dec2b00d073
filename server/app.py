"""The Starlette application: WebSocket ``/ws``, ``/complete``, health, metrics, admin, demo page."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from importlib import resources
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from indexer.model import Model
from indexer.normalize import normalize

from . import protocol
from .blocklists import ServeBlocklist
from .bodies import BodyLimit, complete_body_limit
from .completer import Completer, load_warm, read_announcement
from .config import ConfigError, ServerConfig, normalize_origin
from .connection import Connection, ServerState, expose_abort
from .forking import preloaded
from .forwarded import ForwardedFor
from .history import open_history
from .history_routes import forget_route, personal_of, remove_route
from .http_protocol import STATE_KEY
from .limits import AddressBuckets, AddressLimits, SubmitLimits, client_address
from .metrics import Metrics
from .personal import PersonalHub
from .seed import Seed, seed_store
from .sessions import open_store
from .store_health import StoreHealth
from .users import Signer, default_secret_path, load_secret

log = logging.getLogger("qac.server")

COMPLETE_MAX_WAIT = 1.0  # seconds a /complete request over its address's rate may wait for its turn
# Files of the demo page the static routes serve; nothing else (no package or dot files).
PAGE_SUFFIXES = frozenset({".html", ".css", ".js", ".svg", ".png", ".ico", ".webp", ".woff2"})
# Answers that may carry what a user typed or holds: never cached by a browser or a proxy.
NO_STORE_PATHS = ("/complete", "/history/", "/healthz", "/metrics", "/admin/")

# Package data: found the same way in a checkout, an editable and a plain install.
STATIC_DIR = Path(str(resources.files("static")))


def create_app(config: ServerConfig, *, model: Model | None = None, seed: Seed | None = None) -> Starlette:
    """The server as an ASGI app; the model (unless given), secret, blocklist and stores open
    at startup, and the history store is seeded with ``seed``: the histories of
    ``config.seed_history``, read by the caller (``qac serve``)."""
    if config.seed_history and seed is None:
        raise ConfigError("seed_history: pass the histories read from those logs (qac serve reads them)")
    metrics = Metrics(shared_sessions=config.sessions != "memory")
    static_dir = Path(config.static_dir) if config.static_dir else STATIC_DIR

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        nonlocal model, seed
        loaded, index, announced = await _initial_model(config, model)
        model = None  # from here the completer alone holds it, so that a reload frees it
        signer = Signer(server_secret(config))
        store = open_store(config.sessions, config.session_ttl, config.session_queries, config.max_sessions,
                           config.redis_pool)
        history = open_history(config.sessions, max_entries=config.history_max, ttl=config.history_days * 86400,
                               anonymous_max=config.history_anonymous_max, pool=config.redis_pool)
        try:
            await store.ping()
            if seed is not None:
                await seed_store(history, seed)
                seed = None  # the store has it now
            # The files' terms before the completer, which ranks the fresh answers with them once.
            blocklist = ServeBlocklist(config.blocklist, config.sensitive, metrics)
            completer = Completer(
                loaded, index, threads=config.rank_threads, k=config.k, fresh_size=config.fresh_answers,
                reload_file=config.reload_file, extra=blocklist.current,
                announced=announced, on_swap=lambda m, i: metrics.set_model(m.version),
            )
            blocklist.on_change = completer.set_extra_blocklist
            metrics.set_model(loaded.version)
            log.info("serving model %s from %s, sessions in %s (pid %d)", loaded.version, index, store.kind,
                     os.getpid())
            del loaded
            health = StoreHealth(store, metrics, failures=config.store_failures)
            users = PersonalHub(signer, history, metrics, config.anonymous_days * 86400,
                                copy_on_write=config.rank_threads > 0, sessions=store)
            limits = AddressLimits(config.max_connections_per_address,
                                   AddressBuckets(config.address_rate, config.address_burst),
                                   AddressBuckets(config.complete_rate, config.complete_burst),
                                   SubmitLimits(config.submit_rate, config.submit_burst,
                                                config.address_submit_rate, config.address_submit_burst),
                                   AddressBuckets(config.address_cpu_rate, config.address_cpu_burst))
            app.state.qac = ServerState(config, completer, store, metrics, health, users, limits)
            app.state.blocklist = blocklist
            tasks = [asyncio.create_task(job) for job in (
                completer.follow(), health.watch(), health.count_forever(), users.follow(),
                blocklist.watch(config.blocklist_interval))]
            try:
                yield {STATE_KEY: app.state.qac}  # for the HTTP protocol's deadlines and address count
            finally:
                for task in tasks:
                    task.cancel()
                completer.close()
                metrics.close()
        finally:
            await history.close()
            await store.close()

    static = StaticFiles(directory=static_dir, check_dir=False)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if not page_file(name):
            return _not_found()
        return await static.get_response(name, request.scope)

    async def demo_page(request: Request) -> Response:
        return FileResponse(static_dir / "index.html")

    routes = [
        Route("/", demo_page),
        WebSocketRoute("/ws", websocket_endpoint),
        Route("/complete", complete, methods=["GET", "POST"]),
        Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint),
        Route("/admin/reload", admin_reload, methods=["POST"]),
        Route("/history/forget", forget_route, methods=["POST"]),
        Route("/history/remove", remove_route, methods=["POST"]),
        Route("/static/{name:path}", asset),
        Route("/{name:path}", asset),
    ]
    body_limits = {"/complete": complete_body_limit(config.max_body, config.max_prefix, config.session_queries)}
    middleware = [Middleware(expose_abort), Middleware(SecurityHeaders, headers=security_headers(config)),
                  Middleware(ForwardedFor, trusted=config.forwarded_allow_ips),
                  Middleware(BodyLimit, default=config.max_body, limits=body_limits)]
    if config.allowed_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(config.allowed_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"]))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def security_headers(config: ServerConfig) -> list[tuple[bytes, bytes]]:
    """The headers of every HTTP response: a CSP that lets pages connect to this server (and
    the allowed origins) only and be framed by those alone, no MIME sniffing, no referrer."""
    origins = "".join(f" {origin}" for origin in config.allowed_origins)
    csp = (f"default-src 'self'; connect-src 'self'{origins}; img-src 'self' data:; object-src 'none'; "
           f"base-uri 'none'; form-action 'none'; frame-ancestors 'self'{origins}")
    return [(b"content-security-policy", csp.encode("latin-1")), (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer")]


def page_file(name: str) -> bool:
    """Whether a static route serves ``name``: a file of the page, in no dot or underscore directory."""
    parts = name.split("/")
    return Path(name).suffix.lower() in PAGE_SUFFIXES and not any(p[:1] in (".", "_") for p in parts)


class SecurityHeaders:
    """ASGI middleware: :func:`security_headers` on every HTTP response (replacing any copy), and
    ``Cache-Control: no-store`` on the answers under :data:`NO_STORE_PATHS`."""

    def __init__(self, app: ASGIApp, headers: list[tuple[bytes, bytes]]):
        self.app = app
        self.headers = headers
        self.names = {name for name, _ in headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        no_store = scope["path"].startswith(NO_STORE_PATHS)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self.names
                        and not (no_store and k.lower() == b"cache-control")]
                message = {**message, "headers": kept + self.headers + ([(b"cache-control", b"no-store")]
                                                                         if no_store else [])}
            await send(message)

        await self.app(scope, receive, with_headers)


def secret_source(config: ServerConfig) -> tuple[dict[str, str], Path]:
    """Where the secret comes from: ``QAC_SECRET`` (as an environment), else the secret file."""
    path = Path(config.secret_file).expanduser() if config.secret_file else default_secret_path()
    return ({"QAC_SECRET": config.secret} if config.secret else {}), path


def generated_warning(path: Path) -> str:
    return (f"generated a new secret for user tokens in {path}: every replica must use the same one (copy "
            "that file or set QAC_SECRET), or users are refused on the others and start a new history")


def server_secret(config: ServerConfig) -> bytes:
    """``QAC_SECRET``, else the secret file (generated on first start, with a warning).
    Raises :class:`server.users.SecretError`."""
    environ, path = secret_source(config)
    secret, generated = load_secret(environ, path)
    if generated:
        log.warning("%s", generated_warning(path))
    return secret


def app_from_env() -> Starlette:
    """App factory for worker processes: the configuration comes from ``QAC_*`` variables."""
    config = ServerConfig.from_env(os.environ)
    return create_app(config, model=preloaded(config.index))


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


def _internal(request: Request) -> bool:
    """Whether ``request`` may reach /metrics and /admin/*: on ``--internal-port`` when it is
    set (so a proxy of the public port never exposes them), on any port otherwise."""
    port = _state(request).config.internal_port
    if port is None:
        return True
    server = request.scope.get("server")
    return server is not None and server[1] == port


def _not_found() -> JSONResponse:
    return _error(404, "not_found", "no such route")


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
    address = client_address(websocket)
    if not state.limits.connect(address):
        state.metrics.closed.labels("address").inc()
        await websocket.close(code=1013, reason="too many connections from this address, try again later")
        return
    state.open_connections += 1
    try:
        # A ?session= in the URL is ignored: ids travel in a resume frame, never in a URL.
        await Connection(websocket, state, address).serve()
    finally:
        state.open_connections -= 1
        state.limits.disconnect(address)


async def complete_params(request: Request) -> tuple[str, list[str], bool] | Response:
    """``prefix``, ``prev`` and ``context`` of a ``/complete`` request: a POST's JSON body
    (``{"prefix": "...", "prev": [...], "context": true}``), else a GET's query string (which
    access logs record)."""
    if request.method != "POST":  # GET, and the HEAD Starlette adds
        prefix = request.query_params.get("prefix")
        if prefix is None:
            return _error(400, protocol.BAD_MESSAGE, "missing query parameter 'prefix'")
        return prefix, request.query_params.getlist("prev"), request.query_params.get("context") in ("1", "true")
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        return _error(400, protocol.BAD_JSON, f"not JSON: {exc}")
    if not isinstance(body, dict):
        body = {}
    prefix, prev, want_context = body.get("prefix"), body.get("prev", []), body.get("context", False)
    if (not isinstance(prefix, str) or not isinstance(prev, list) or not all(isinstance(p, str) for p in prev)
            or not isinstance(want_context, bool)):
        return _error(400, protocol.BAD_MESSAGE, 'expected {"prefix": "...", "prev": ["...", ...], "context": '
                      'false}')
    return prefix, prev, want_context


async def complete(request: Request) -> Response:
    """Stateless completion: ``GET ?prefix=...&prev=...`` (``prev`` repeatable, oldest first;
    ``&context=1`` to be told whether ``prev`` changed the list), or the same in a POST's JSON
    body, which keeps them out of URLs and so out of access logs."""
    state = _state(request)
    config = state.config
    params = await complete_params(request)
    if isinstance(params, Response):
        return params
    prefix, prev, want_context = params
    longest = max(len(p) for p in [prefix, *prev])
    if longest > config.max_prefix:
        return _error(400, protocol.TOO_LONG, f"a parameter of {longest} characters; the limit is "
                      f"{config.max_prefix}")
    session = [h for h in map(normalize, prev) if h][-config.session_queries:]
    address = client_address(request)
    if not state.limits.cpu_ready(address):  # it owes ranking CPU time
        state.metrics.errors.labels(protocol.RATE_LIMITED).inc()
        return _error(429, protocol.RATE_LIMITED, f"more than {config.address_cpu_rate:g} ms of ranking CPU time "
                      "per second from this address; slow down",
                      {"Retry-After": str(state.limits.cpu_retry_after(address))})
    # Over the rate, a request waits its turn (as nginx's limit_req without nodelay): a client
    # that sends again as soon as it is answered then sends at the rate, instead of spinning
    # on refusals that cost both sides more than the answers would.
    wait = state.limits.completes[address].reserve(COMPLETE_MAX_WAIT)
    if wait is None:
        state.metrics.errors.labels(protocol.RATE_LIMITED).inc()
        return _error(429, protocol.RATE_LIMITED, f"more than {config.complete_rate:g} requests per second from "
                      "this address; slow down", {"Retry-After": str(state.limits.completes.retry_after(address))})
    if wait:
        await asyncio.sleep(wait)
    if state.complete_pending >= config.complete_queue:
        state.metrics.errors.labels(protocol.OVERLOADED).inc()
        return _error(503, protocol.OVERLOADED, "too many requests waiting to be ranked; try again",
                      {"Retry-After": "1"})
    state.complete_pending += 1
    try:
        personal = await personal_of(request)
        if isinstance(personal, Response):
            return personal
        started = time.perf_counter()
        state.metrics.keystrokes.labels("http").inc()
        ranked = await state.completer.complete(prefix, session, personal, context=want_context)
    finally:
        state.complete_pending -= 1
    state.limits.charge(address, ranked.cpu)
    took = time.perf_counter() - started
    state.metrics.latency.labels("http").observe(took)
    state.metrics.ranking_cpu.labels("http").inc(ranked.cpu)
    body = {"prefix": ranked.prefix, "items": protocol.items(ranked.items), "index": ranked.version,
            "took_ms": protocol.coarse_ms(took * 1000)}
    if ranked.context is not None:
        body["context"] = ranked.context
    return JSONResponse(body)


async def healthz(request: Request) -> Response:
    """200 while the server answers keystrokes; ``status`` is ``degraded`` while the session
    store or the personal history store is down, and ``degraded`` names which. Public, so it
    names no URL, path or error text (the log has them, passwords redacted)."""
    state = _state(request)
    body: dict[str, Any] = {"status": "ok", "index": state.completer.version, "sessions": state.store.kind,
                            "store": "up"}
    degraded = []
    if not await state.health.probe():
        body["store"] = "down"
        degraded.append("sessions")
    if not state.users.available():
        degraded.append("history")
    if degraded:
        body.update(status="degraded", degraded=degraded)
    return JSONResponse(body)


async def metrics_endpoint(request: Request) -> Response:
    if not _internal(request):
        return _not_found()
    state = _state(request)
    await state.health.count_sessions()
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


async def admin_reload(request: Request) -> Response:
    """``POST {"index": DIR}`` with ``Authorization: Bearer $QAC_ADMIN_TOKEN``: swap in a new model
    from a directory under ``--models-root`` (a relative DIR is taken from there). Errors name
    no path, so that they tell nobody which paths exist."""
    if not _internal(request):
        return _not_found()
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
    await request.app.state.blocklist.check(force=True)  # a reload also re-reads the --blocklist and --sensitive files
    asked = body.get("index") if isinstance(body, dict) else None
    if not isinstance(asked, str) or not asked or "\x00" in asked:
        return _error(400, protocol.BAD_MESSAGE, 'expected {"index": "DIR"}')
    root = models_root(state.config)
    index = os.path.realpath(os.path.join(root, asked))  # symbolic links resolved: no way out of the root
    if os.path.commonpath([root, index]) != root:
        state.metrics.reloads.labels("failed").inc()
        log.warning("refused a reload outside the models root %s: %s", root, index)
        return _error(400, "bad_index", f"not a directory under the models root; still serving "
                      f"{state.completer.version}")
    try:
        old, new = await state.completer.reload(index)
    except Exception as exc:  # whatever a damaged directory raises, the old model keeps serving
        state.metrics.reloads.labels("failed").inc()
        log.warning("reload of %s failed: %s", index, exc)
        return _error(400, "bad_index", "the directory did not load (missing, half-written, damaged or of "
                      f"another format); still serving {state.completer.version}")
    state.metrics.reloads.labels("ok").inc()
    return JSONResponse({"index": new, "previous": old})


def models_root(config: ServerConfig) -> str:
    """The directory reloads must stay under: ``--models-root``, else the one holding ``--index``."""
    if config.models_root:
        return os.path.realpath(os.path.expanduser(config.models_root))
    if config.index:
        return os.path.dirname(os.path.realpath(os.path.expanduser(config.index)))
    return os.path.realpath(os.getcwd())
