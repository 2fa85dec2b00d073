"""``qac serve``: parse flags into a :class:`ServerConfig` and call :func:`server.main.run`.

Without ``--index`` it serves a model of the shipped sample log, built once into the cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from server.config import ServerConfig, env_name

from .args import CommandError, add_columns_flag

if TYPE_CHECKING:
    from server.seed import Seed

_DEFAULTS = ServerConfig()
# Tuple fields: a repeatable flag (server/config.py's _opt).
_REPEATABLE = tuple(f.name for f in dataclasses.fields(ServerConfig) if isinstance(getattr(_DEFAULTS, f.name), tuple))


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
        metavar, nargs = f.metadata["metavar"], f.metadata["nargs"]
        if f.name in _REPEATABLE:
            p.add_argument(flag, dest=f.name, action="append" if nargs is None else "extend", nargs=nargs,
                           metavar=metavar, help=help)
        else:
            p.add_argument(flag, dest=f.name, type=f.metadata["parse"], metavar=metavar, help=help)
    add_columns_flag(p, "a --seed-history log")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> ServerConfig:
    """The configuration: flags given, then ``QAC_*`` variables, then defaults."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServerConfig) if hasattr(args, f.name)}
    for name in _REPEATABLE:
        if given.get(name) is not None:
            given[name] = tuple(given[name])
    return ServerConfig.from_env(environ, **given)


def read_seed(paths: Sequence[str | Path], now: float, max_entries: int, ttl: float,
              columns: dict[str, int | str] | None = None) -> Seed:
    """The histories ``--seed-history`` gives: the logs at ``paths``, read as ``qac build``
    reads them (``columns``: as ``--columns`` says), their times shifted so that the latest row
    of all is at ``now`` (:func:`server.seed.seed_from_rows`). Raises :class:`CommandError`."""
    from indexer.errors import QacError
    from indexer.train.logs import read_logs
    from server.seed import seed_from_rows

    try:
        rows, _ = read_logs([Path(p) for p in paths], columns=columns)
        return seed_from_rows(((r.user, r.time, r.query) for r in rows), now, max_entries, ttl)
    except QacError as exc:
        raise CommandError(f"--seed-history: {exc} ({', '.join(map(str, paths))})") from exc


def run(args: argparse.Namespace) -> int:
    """``qac serve``: serve until interrupted."""
    from server.main import run as serve

    config = config_from_args(args, os.environ)
    if not config.index:
        from indexer.train.sample import SAMPLE_LOG, ensure_sample_model

        config = dataclasses.replace(config, index=str(ensure_sample_model(SAMPLE_LOG)))
    seed = None
    if config.seed_history:
        seed = read_seed(config.seed_history, time.time(), config.history_max, config.history_days * 86400,
                         args.columns)
    elif args.columns is not None:
        raise CommandError("--columns says where the fields of a --seed-history log are; no log was given")
        print(f"qac serve: {len(seed.histories):,} users' histories read from {seed.rows:,} rows of "
              f"{', '.join(config.seed_history)}, their times moved {seed.shift / 86400:,.1f} days forward")
    serve(config, seed=seed)
    return 0
