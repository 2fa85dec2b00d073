"""Server configuration: the one source of truth for every default of ``qac serve``.

Each field can come from an environment variable ``QAC_<NAME>``; fields marked with a
``flag`` are also ``qac serve`` options. Precedence: flag, then environment, then default.
docs/OPERATIONS.md explains each one.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from indexer.errors import QacError
from indexer.normalize import MAX_QUERY_CHARS

from .forwarded import TrustedProxies

ENV_PREFIX = "QAC_"
SESSION_SCHEMES = ("redis", "rediss", "unix")


class ConfigError(QacError, ValueError):
    """A configuration value that is out of range or malformed."""


def _origins(text: str) -> tuple[str, ...]:
    return tuple(part for part in re.split(r"[\s,]+", text) if part)


def _paths(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _opt(
    default: Any, parse: Callable[[str], Any], help: str, flag: str | None = None, env: str | None = None,
    old_env: str | None = None, metavar: str | None = None, nargs: str | None = None, **kw: Any,
) -> Any:
    """A field with how to parse it from text, its help and (for CLI options) its flag name and
    the metavar its --help shows; ``old_env``: the variable's former name, still read when the new
    one is unset. A tuple field's flag is repeatable, each time one value (``nargs``: "+", several)."""
    return field(default=default, metadata={"parse": parse, "help": help, "flag": flag, "env": env,
                                            "old_env": old_env, "metavar": metavar, "nargs": nargs}, **kw)


@dataclass(frozen=True)
class ServerConfig:
    """Everything that decides how the server runs; immutable, validated on construction."""

    index: str | None = _opt(None, str, "model directory (default: a model of the shipped sample log, "
                             "built once into the cache)", flag="--index", metavar="DIR")
    host: str = _opt("127.0.0.1", str, "interface to listen on", flag="--host", metavar="HOST")
    port: int = _opt(8000, int, "TCP port", flag="--port", metavar="PORT")
    workers: int = _opt(1, int, "server processes sharing the port (more than one needs --sessions redis://)",
                        flag="--workers", metavar="N")
    worker_healthcheck: int = _opt(60, int, "seconds a worker may leave the supervisor's health check "
                                   "unanswered before it is killed and replaced; a worker starting on a busy "
                                   "machine imports and loads the model for longer than uvicorn's 5",
                                   flag="--worker-healthcheck", metavar="SECONDS")
    sessions: str = _opt("memory", str, "session store: memory, or redis://HOST:PORT/DB shared by "
                         "every process and replica (a URL with a password: give it in QAC_SESSIONS or "
                         "--sessions-file, which no process list shows)", flag="--sessions", metavar="STORE",
                         repr=False)  # may hold a password
    sessions_file: str | None = _opt(None, str, "file holding the --sessions URL (a Docker or Kubernetes secret, "
                                     "say); read at startup", flag="--sessions-file", metavar="FILE")
    session_ttl: float = _opt(1800.0, float, "seconds a session lives without activity", flag="--session-ttl",
                              metavar="SECONDS")
    allowed_origins: tuple[str, ...] = _opt(
        (), _origins, "browser origins allowed to open the WebSocket besides the page's own "
        "(clients that send no Origin, such as scripts, are always allowed)", flag="--allowed-origin",
        metavar="ORIGIN", nargs="+",
        env="QAC_ALLOWED_ORIGIN")
    max_sessions: int = _opt(100_000, int, "sessions kept by the memory store; least recently used go first")
    session_queries: int = _opt(20, int, "queries kept per session, newest last", old_env="QAC_MAX_HISTORY")
    max_prefix: int = _opt(MAX_QUERY_CHARS, int, "longest prefix or submitted query, in characters (the "
                           "longest query the indexer keeps)")
    max_message: int = _opt(4096, int, "largest client frame, in bytes; a larger one closes the connection "
                            "with code 1009")
    rate: float = _opt(20.0, float, "client messages per second per connection, sustained")
    burst: int = _opt(40, int, "client messages per connection allowed at once above the rate")
    max_connections: int = _opt(10_000, int, "open WebSocket connections per process; more are refused "
                                "(closed with code 1013, try again later)")
    idle_timeout: float = _opt(600.0, float, "seconds without a client message before a connection is closed "
                               "(code 4000; the page reconnects when its user types again)")
    send_timeout: float = _opt(10.0, float, "seconds a send may wait on a client that does not read before "
                               "the connection is dropped")
    max_body: int = _opt(4096, int, "largest request body of POST /history/* and /admin/reload, in bytes (POST "
                         "/complete's allows session_queries+1 queries of max_prefix characters more); a larger one "
                         "is answered 413 before it is read, and its connection closed")
    header_timeout: float = _opt(5.0, float, "seconds an HTTP connection may take to send a request's headers "
                                 "(and body), from its opening or from the first byte of a later request; "
                                 "then it is closed")
    keep_alive_timeout: float = _opt(5.0, float, "seconds an HTTP keep-alive connection may stay idle between "
                                     "requests before it is closed")
    k: int = _opt(10, int, "suggestions per keystroke")
    fresh_answers: int = _opt(1024, int, "most typed prefixes whose answer for a fresh session is ranked when a model "
                              "or blocklist is set, and given at once (never filled by traffic)")
    rank_threads: int = _opt(0, int, "threads per process ranking keystrokes off the event loop; 0: rank on "
                             "the event loop, which is faster (ranking holds the GIL either way)")
    static_dir: str | None = _opt(None, str, "directory of the demo page (default: the repository's static/)")
    admin_token: str | None = _opt(None, str, "bearer token of POST /admin/reload; unset disables it",
                                   repr=False)
    reload_file: str | None = _opt(None, str, "file through which worker processes announce reloads")
    secret: str | None = _opt(None, str, "the secret that signs user tokens (at least 16 characters), shared by "
                              "every replica; unset: read from --secret-file", repr=False)
    secret_file: str | None = _opt(None, str, "file holding the secret when QAC_SECRET is unset; generated "
                                   "on first start (default: $XDG_STATE_HOME/qac/secret)", flag="--secret-file",
                                   metavar="FILE")
    history_max: int = _opt(1000, int, "distinct queries kept in each user's personal history",
                            flag="--history-max", metavar="N")
    history_days: float = _opt(90.0, float, "days a personal history entry lives after its last use",
                               flag="--history-days", metavar="DAYS")
    anonymous_days: float = _opt(30.0, float, "days an anonymous user token lives; every 'user' frame that "
                                 "presents one renews it for as long", flag="--anonymous-days", metavar="DAYS")
    seed_history: tuple[str, ...] = _opt(
        (), _paths, "query log (read as qac build reads it) whose users' queries, with their counts and last "
        "use, become at start the personal histories of the signed-in users of those ids, unless the store has "
        "one for them already (or, in Redis, ever seeded them); the log's times are moved forward so that its "
        "latest row (of all the logs given) is the moment of start, and recency and expiry count from there; "
        "repeatable", flag="--seed-history", metavar="LOG")
    history_anonymous_max: int = _opt(
        500_000, int, "distinct queries kept over all anonymous users' personal histories in the store; beyond "
        "it the least recently active anonymous users' histories go first (signed-in users' never do)",
        flag="--history-anonymous-max", metavar="N")
    submit_rate: float = _opt(6.0, float, "submits per minute per user, sustained (a submit writes history); "
                              "one over it is refused with rate_limited")
    submit_burst: int = _opt(10, int, "submits per user allowed at once above its rate")
    address_submit_rate: float = _opt(30.0, float, "submits per minute per client address over all its "
                                      "WebSocket connections and users, sustained")
    address_submit_burst: int = _opt(30, int, "submits per client address allowed at once above its rate")
    blocklist: tuple[str, ...] = _opt(
        (), _paths, "blocklist file applied at serve time on top of the model's own list (a term or phrase "
        "a line; repeatable; re-read when it changes)", flag="--blocklist", metavar="FILE")
    sensitive: tuple[str, ...] = _opt(
        (), _paths, "sensitive-terms file applied at serve time on top of the model's own: a suggestion holding "
        "one is shown only when the typed prefix holds the whole term (a term or phrase a line; repeatable; "
        "re-read when it changes)", flag="--sensitive", metavar="FILE")
    blocklist_interval: float = _opt(2.0, float, "seconds between checks of the --blocklist and --sensitive "
                                     "files for changes")
    max_connections_per_address: int = _opt(
        20, int, "open connections (WebSocket and HTTP) per client address and process; a WebSocket beyond "
        "it is closed with code 1013, an HTTP connection answered 503 as it opens")
    address_rate: float = _opt(200.0, float, "client messages per second per client address over all its "
                               "WebSocket connections, sustained")
    address_burst: int = _opt(400, int, "client messages per client address allowed at once above its rate")
    complete_rate: float = _opt(20.0, float, "/complete requests per second per client address, sustained "
                                "(deploy/nginx.conf's limit); one over it waits its turn up to 1 s, else is "
                                "answered 429")
    complete_burst: int = _opt(40, int, "/complete requests per client address allowed at once above its rate")
    address_cpu_rate: float = _opt(50.0, float, "CPU milliseconds of ranking per second per client address over "
                                   "all its WebSocket connections and GET /complete requests, sustained; an address "
                                   "that used more is refused with rate_limited until the rate has paid it back")
    address_cpu_burst: float = _opt(500.0, float, "CPU milliseconds of ranking a client address may use at once "
                                    "above its rate")
    rate_limit_close: float = _opt(10.0, float, "seconds a connection may stay over its rate limit (refused at "
                                   "least once a second) before it is closed with code 1008")
    complete_queue: int = _opt(32, int, "/complete requests waiting or being ranked per process; more "
                               "are answered 503 with Retry-After")
    forwarded_allow_ips: str = _opt(
        "127.0.0.1", str, "addresses or networks (a.b.c.d/n) of proxies trusted to set X-Forwarded-For, "
        "comma-separated: when the peer is one of them, the client is the header's rightmost entry that is "
        "not ('*': any peer, and the client is the last entry)", flag="--forwarded-allow-ips", metavar="IPS")
    models_root: str | None = _opt(None, str, "POST /admin/reload loads only directories under this one "
                                   "(default: the directory holding --index)", flag="--models-root", metavar="DIR")
    internal_port: int | None = _opt(None, int, "serve /metrics and /admin/* only on this port (same --host), "
                                     "never on --port", flag="--internal-port", metavar="PORT")
    store_failures: int = _opt(3, int, "consecutive failed session store calls before the store is marked "
                               "down (then probed every second until it answers)")
    redis_pool: int = _opt(64, int, "Redis connections per process and store at most; a call waits up to 2 s "
                           "for a free one")

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        for name in ("workers", "max_sessions", "session_queries", "max_prefix", "max_message", "burst", "k",
                     "max_connections", "history_max", "max_connections_per_address",
                     "address_burst", "complete_burst", "complete_queue", "store_failures", "redis_pool",
                     "history_anonymous_max", "submit_burst", "address_submit_burst", "max_body", "worker_healthcheck"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("rank_threads", "fresh_answers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("session_ttl", "rate", "idle_timeout", "send_timeout", "history_days", "blocklist_interval",
                     "address_rate", "complete_rate", "rate_limit_close", "anonymous_days", "submit_rate",
                     "address_submit_rate", "header_timeout", "keep_alive_timeout"):

            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.internal_port is not None and not 0 <= self.internal_port <= 65535:
            raise ConfigError(f"internal_port must be in 0..65535, got {self.internal_port}")
        if self.max_message < self.max_prefix:
            raise ConfigError(f"max_message ({self.max_message}) must be >= max_prefix ({self.max_prefix})")
        if self.sessions_file is not None:
            object.__setattr__(self, "sessions", self._sessions_from_file(self.sessions_file))
        if self.sessions != "memory" and urlsplit(self.sessions).scheme not in SESSION_SCHEMES:
            raise ConfigError(f"sessions must be 'memory' or a redis:// URL, got {redact_url(self.sessions)!r}")
        try:
            TrustedProxies(self.forwarded_allow_ips)
        except ValueError as exc:
            raise ConfigError(f"forwarded_allow_ips: {exc}") from None
        object.__setattr__(self, "allowed_origins", tuple(normalize_origin(o) for o in self.allowed_origins))

    def _sessions_from_file(self, path: str) -> str:
        """The URL in ``path`` (its first line); the same URL may also be given as ``sessions``
        (as worker processes get both), another may not."""
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as f:
                url = f.readline().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read sessions_file {path}: {exc.strerror}") from None
        if not url:
            raise ConfigError(f"sessions_file {path} is empty")
        if self.sessions not in ("memory", url):
            raise ConfigError("give the sessions URL once: in --sessions (QAC_SESSIONS) or in --sessions-file "
                              "(QAC_SESSIONS_FILE)")
        return url

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> ServerConfig:
        """The configuration from ``overrides`` (``None`` = not given), then ``QAC_*`` variables.

        An empty variable counts as unset.
        """
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            given = overrides.pop(f.name, None)
            names = [env_name(f), *([f.metadata["old_env"]] if f.metadata["old_env"] else [])]
            name = next((n for n in names if environ.get(n, "").strip()), None)
            if given is not None:
                values[f.name] = given
            elif name is not None:
                text = environ[name]
                try:
                    values[f.name] = f.metadata["parse"](text)
                except ValueError as exc:
                    raise ConfigError(f"{name}={text!r}: {exc}") from exc
        if overrides:
            raise TypeError(f"unknown configuration fields {sorted(overrides)}")
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """``QAC_*`` variables from which :meth:`from_env` rebuilds this configuration."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "sessions" and self.sessions_file:
                continue  # read from the file again, never copied into the environment
            if value is not None:
                out[env_name(f)] = ",".join(value) if isinstance(value, tuple) else str(value)
        return out


def env_name(f: dataclasses.Field[Any]) -> str:
    """The environment variable of a configuration field."""
    return f.metadata["env"] or ENV_PREFIX + f.name.upper()


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, without a trailing slash; raises ConfigError."""
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") or parts.query:
        raise ConfigError(f"an origin is scheme://host[:port], got {origin!r}")
    return f"{parts.scheme}://{parts.netloc}"


def redact_url(url: str) -> str:
    """``url`` without its password (``redis://user:***@host:6379/0``), for logs, errors and health."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(a malformed URL)"
    if password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def scrub(text: str, url: str) -> str:
    """``text`` with every copy of ``url``'s password (and of ``url`` itself) redacted."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    text = text.replace(url, redact_url(url))
    if password:
        text = text.replace(password, "***")
    return text
