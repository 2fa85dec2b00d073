"""``run()``: load the model, bind the port, print the demo URL, serve with uvicorn."""

from __future__ import annotations

import asyncio
import copy
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import uvicorn
from uvicorn.supervisors import Multiprocess

from indexer.errors import QacError

from .app import create_app, generated_warning, secret_source
from .blocklists import read as read_blocklist
from .completer import announce_reload, load_warm, rank_ahead, release_memory
from .config import ServerConfig
from .forking import forking
from .history import HistoryError, open_history
from .http_protocol import HttpProtocol
from .metrics import MULTIPROC_ENV
from .seed import Seed, seed_store
from .sessions import SessionError, open_store
from .users import SecretError, load_secret


class ServeError(QacError):
    """The server cannot start: port taken, session store unreachable or not shared, no model."""


def run(config: ServerConfig, *, say: Callable[[str], None] = print, seed: Seed | None = None) -> None:
    """Serve ``config`` until interrupted, the history store seeded with ``seed`` (the
    histories of ``config.seed_history``, :func:`server.seed.seed_from_rows`).

    Raises :class:`ServeError`, and :class:`indexer.ModelError` for a bad ``--index``.
    """
    if not config.index:
        raise ServeError("no model to serve: give --index DIR")
    index = Path(config.index).expanduser().resolve()
    extra = read_blocklist(config.blocklist, config.sensitive)  # a bad --blocklist or --sensitive file stops here
    model = load_warm(index)
    if config.workers > 1 and config.sessions == "memory":
        # Each worker would keep its own sessions and histories: a forget on one would leave the
        # user's queries on the others.
        raise ServeError(f"--workers {config.workers} needs a store the workers share: give --sessions "
                         "redis://HOST:PORT/DB (with --sessions memory, run one worker)")
    _check_secret(config, say)
    _check_sessions(config)
    if config.seed_history and seed is None:
        raise ServeError("--seed-history: the logs were not read (qac serve reads them)")
    sock = _bind(config.host, config.port)
    sockets = [sock]
    config = replace(config, index=str(index), port=sock.getsockname()[1])
    if config.internal_port is not None:
        internal = _bind(config.host, config.internal_port)
        sockets.append(internal)
        config = replace(config, internal_port=internal.getsockname()[1])
    say(f"qac serve: model {model.version} from {index}")
    say(f"qac serve: demo page at {demo_url(config.host, config.port)}")
    if config.internal_port is not None:
        say(f"qac serve: /metrics and /admin/* on port {config.internal_port} only")
    if config.workers == 1:
        app = create_app(config, model=model, seed=seed)
        del seed  # the app drops it once the store has it
        server = uvicorn.Server(uvicorn_config(config, app))
        server.run(sockets=sockets)
        if not server.started:
            raise ServeError("the server did not start; see the log above")
        return
    if seed is not None:  # once, here: the workers share the store
        _seed_shared(config, seed)
        config = replace(config, seed_history=())
        del seed
        release_memory()  # before the fork, so that no worker inherits the log's garbage
    with tempfile.TemporaryDirectory(prefix="qac-serve-") as tmp:
        reload_file = Path(tmp) / "reload"
        announce_reload(reload_file, config.index or "")
        config = replace(config, reload_file=str(reload_file))
        os.environ.update(config.to_env())
        (Path(tmp) / "metrics").mkdir()
        os.environ[MULTIPROC_ENV] = str(Path(tmp) / "metrics")  # read by prometheus_client in each worker
        # The workers are forked with the model loaded here and its fresh answers ranked: they
        # share their pages (server/forking.py).
        rank_ahead(model, extra, config.k, config.fresh_answers)
        with forking(config.index or "", model):
            Multiprocess(uvicorn_config(config, "server.app:app_from_env"), sockets=sockets).run()


def uvicorn_config(config: ServerConfig, app: Any) -> uvicorn.Config:
    """uvicorn's settings for ``app`` (an ASGI app, or an import string of an app factory)."""
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["qac"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    log_config["filters"] = {"client_noise": {"()": "server.log_filters.ClientNoise"}}
    log_config["loggers"]["uvicorn.error"]["filters"] = ["client_noise"]
    return uvicorn.Config(
        app, host=config.host, port=config.port, workers=config.workers, factory=isinstance(app, str),
        log_config=log_config, http=HttpProtocol,
        # Frames up to this size reach the app, which closes over-limit ones with 1009 and counts
        # them; uvicorn cuts anything larger before buffering it (also 1009).
        ws_max_size=max(1 << 16, 4 * config.max_message),
        # Frames are a few hundred bytes: compressing them costs both sides CPU for nothing.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
        timeout_worker_healthcheck=config.worker_healthcheck,
        # Typed int, used as call_later's delay: a float works. QAC_HEADER_TIMEOUT is HttpProtocol's.
        timeout_keep_alive=config.keep_alive_timeout,  # type: ignore[arg-type]
        # The app reads X-Forwarded-For itself (server/forwarded.py), from the right.
        proxy_headers=False,
    )


def demo_url(host: str, port: int) -> str:
    """The URL to open in a browser for a server listening on ``host``."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def _check_secret(config: ServerConfig, say: Callable[[str], None]) -> None:
    """Read the secret, generating it on first start, so that every worker reads the same file."""
    environ, path = secret_source(config)
    try:
        _, generated = load_secret(environ, path)
    except SecretError as exc:
        raise ServeError(str(exc)) from exc
    if generated:
        say(f"qac serve: warning: {generated_warning(path)}")


def _seed_shared(config: ServerConfig, seed: Seed) -> None:
    """Seed the store the workers share, before they start."""
    _one_shot(lambda: open_history(config.sessions, max_entries=config.history_max,
                                   ttl=config.history_days * 86400, anonymous_max=config.history_anonymous_max,
                                   pool=config.redis_pool),
              lambda history: seed_store(history, seed), HistoryError)


def _check_sessions(config: ServerConfig) -> None:
    """Reach the session store once, so that a wrong --sessions stops the start."""
    _one_shot(lambda: open_store(config.sessions, config.session_ttl, config.session_queries, config.max_sessions, 2),
              lambda store: store.ping(), SessionError)


class _Store(Protocol):
    async def close(self) -> None: ...


S = TypeVar("S", bound=_Store)


def _one_shot(open_: Callable[[], S], use: Callable[[S], Awaitable[object]], errors: type[QacError]) -> None:
    """Open a store in an event loop of its own, ``use`` it once and close it; the store's
    ``errors`` (unreachable, refused) become :class:`ServeError`."""
    async def run() -> None:
        store = open_()
        try:
            await use(store)
        finally:
            await store.close()

    try:
        asyncio.run(run())
    except errors as exc:
        raise ServeError(str(exc)) from exc
