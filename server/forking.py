"""Worker processes forked from the supervisor after it loaded the model, so that they share
its pages (copy-on-write) instead of each loading its own.

uvicorn starts workers with ``multiprocessing``'s spawn: a fresh interpreter that imports
everything and loads the model again, private memory each. Forked, a worker starts with the
supervisor's modules and model; the model's objects are frozen out of the garbage collector
(:func:`server.completer.load_warm`), so no collection writes to their pages. A worker that
reloads a model loads its own copy (as before).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import socket
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess

import prometheus_client.values
import uvicorn
from uvicorn import _subprocess
from uvicorn.supervisors import multiprocess

from indexer.model import Model

_fork = multiprocessing.get_context("fork")
_preloaded: tuple[str, Model] | None = None


def preloaded(index: str | None) -> Model | None:
    """The model the supervisor loaded from ``index`` before forking this worker, if any; the
    first call only (a reload then frees what replaced it)."""
    global _preloaded
    found, _preloaded = _preloaded, None
    return found[1] if found is not None and found[0] == index else None


def _forked(config: uvicorn.Config, target: Callable[..., None], sockets: list[socket.socket]) -> BaseProcess:
    return _fork.Process(target=_subprocess.subprocess_started,
                         kwargs={"config": config, "target": target, "sockets": sockets, "stdin_fileno": None})


@contextlib.contextmanager
def forking(index: str, model: Model) -> Iterator[None]:
    """While in the block, uvicorn's supervisor forks its workers, which find ``model``
    (loaded from ``index``) with :func:`preloaded`. Call after setting
    ``PROMETHEUS_MULTIPROC_DIR``: the workers' metrics write to its files."""
    global _preloaded
    # What the supervisor holds now is kept out of every collection, in the workers too: a full
    # collection writes to each object it walks, and each page it writes is copied.
    gc.freeze()
    # prometheus_client picks how values are kept when it is imported, before the variable was set.
    values = prometheus_client.values.ValueClass
    prometheus_client.values.ValueClass = prometheus_client.values.get_value_class()
    spawning = multiprocess.get_subprocess
    _preloaded, multiprocess.get_subprocess = (index, model), _forked  # type: ignore[assignment]
    try:
        yield
    finally:  # the process as it was (it matters to a caller that goes on: a test)
        _preloaded, multiprocess.get_subprocess = None, spawning
        prometheus_client.values.ValueClass = values
        gc.unfreeze()
