"""``qac serve``: parse flags into a :class:`ServerConfig` and call :func:`server.main.run`.

Without ``--index`` it serves a model of the shipped sample log, built once into the cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping

from server.config import ServerConfig, env_name

_DEFAULTS = ServerConfig()
_FLAG_TYPES = {"port": int, "workers": int, "session_ttl": float, "history_max": int, "history_days": float,
               "internal_port": int, "anonymous_days": float, "history_anonymous_max": int}
_METAVARS = {"index": "DIR", "host": "HOST", "port": "PORT", "workers": "N", "sessions": "STORE",
             "session_ttl": "SECONDS", "allowed_origins": "ORIGIN", "secret_file": "FILE", "sessions_file": "FILE",
             "history_max": "N", "history_days": "DAYS", "blocklist": "FILE", "sensitive": "FILE",
             "forwarded_allow_ips": "IPS",
             "models_root": "DIR", "internal_port": "PORT", "anonymous_days": "DAYS", "history_anonymous_max": "N",
             "seed_history": "LOG"}
# tuple fields: nargs (None: one per flag)
_REPEATABLE = {"allowed_origins": "+", "blocklist": None, "sensitive": None, "seed_history": None}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``qac`` subcommands."""
    p = sub.add_parser(
        "serve",
        help="serve completions over WebSocket and HTTP, with a demo page",
        description="Load a model and serve it: WebSocket /ws, GET /complete, /healthz, /metrics, "
        "POST /admin/reload (bearer token from QAC_ADMIN_TOKEN) and a demo page at /. Every option "
        "can also be set by the environment variable named after it.",
    )
    for f in dataclasses.fields(ServerConfig):
        flag = f.metadata["flag"]
        if flag is None:
            continue
        default = getattr(_DEFAULTS, f.name)
        shown = "" if default in (None, ()) else f" (default: {default})"
        help = f"{f.metadata['help']}{shown}; env {env_name(f)}".replace("%", "%%")
        if f.name in _REPEATABLE:
            p.add_argument(flag, dest=f.name, action="append" if _REPEATABLE[f.name] is None else "extend",
                           nargs=_REPEATABLE[f.name], metavar=_METAVARS[f.name], help=help)
        else:
            p.add_argument(flag, dest=f.name, type=_FLAG_TYPES.get(f.name, str), metavar=_METAVARS[f.name],
                           help=help)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> ServerConfig:
    """The configuration: flags given, then ``QAC_*`` variables, then defaults."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServerConfig) if hasattr(args, f.name)}
    for name in _REPEATABLE:
        if given.get(name) is not None:
            given[name] = tuple(given[name])
    return ServerConfig.from_env(environ, **given)


def run(args: argparse.Namespace) -> int:
    """``qac serve``: serve until interrupted."""
    from server.main import run as serve

    config = config_from_args(args, os.environ)
    if not config.index:
        from indexer.train.sample import SAMPLE_LOG, ensure_sample_model

        config = dataclasses.replace(config, index=str(ensure_sample_model(SAMPLE_LOG)))
    serve(config)
    return 0
