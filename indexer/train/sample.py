"""The model ``qac serve`` falls back to: built once from the shipped sample log, then reused."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path

from ..errors import QacError
from ..model import load
from ..params import FORMAT_VERSION, BuildParams
from ..storage import ModelError

# Shipped as package data, so it is there after a plain ``pip install``.
SAMPLE_LOG = Path(str(resources.files("indexer") / "data" / "sample.tsv.gz"))


def first_users(lines: Iterable[str], users: int) -> Iterator[str]:
    """The first of ``lines`` (a header), then every line of the first ``users`` users (what
    comes before a line's first tab), in the order they first appear: how the shipped sample
    was cut from the train log (``python -m scripts.cut_sample``)."""
    rows = iter(lines)
    yield from itertools.islice(rows, 1)
    seen: set[str] = set()
    for line in rows:
        user = line.split("\t", 1)[0]
        if user not in seen:
            if len(seen) == users:
                return
            seen.add(user)
        yield line


class SampleMissing(QacError, FileNotFoundError):
    """The shipped sample log is not where the package put it."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/qac``, by default ``~/.cache/qac``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qac"


def sample_model_dir(log: Path, params: BuildParams, cache: Path) -> Path:
    """Where the model of ``log`` built with ``params`` lives: ``<cache>/sample-<checksum>``."""
    digest = hashlib.sha256()
    with open(log, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest.update(json.dumps([FORMAT_VERSION, params.to_json()], sort_keys=True).encode())
    return cache / f"sample-{digest.hexdigest()[:12]}"


def ensure_sample_model(
    log: Path, params: BuildParams | None = None, cache: Path | None = None,
    say: Callable[[str], None] = print, quiet: bool = False,
) -> Path:
    """The sample model's directory, built first if it is missing or does not load.

    Raises :class:`SampleMissing` if ``log`` is missing, and what building raises.
    """
    from .build import build  # here: serving the sample needs no trainer once it is built

    params = params or BuildParams()
    if not Path(log).is_file():
        raise SampleMissing(f"the sample log {log} is missing; give --index DIR")
    target = sample_model_dir(Path(log), params, cache or cache_dir())
    try:
        load(target)
        return target
    except ModelError:
        pass
    say(f"building a model of the sample log {log} into {target} (once)")
    build([log], target, params, quiet=quiet)
    return target
