"""The model being served: ranking keystrokes, and atomic swaps to a new model.

Keystrokes are ranked on the event loop by default. Ranking is Python code that holds the GIL,
so a thread would not run beside the loop anyway: it would only add two thread switches per
keystroke and make the loop wait for the GIL, up to the switch interval (5 ms) at a time. In
alternated soaks, the typists' p99 under abuse was 25-116 ms with threads and 15-49 ms without
(BENCHMARKS.md#event-loop). A pool of ranking threads remains an option.

A request takes a reference to the current model when it starts and finishes on it; a
reload loads the new directory in a thread and then replaces the reference in one
assignment, so in-flight requests never see a half-loaded model.

What a fresh session (no session queries, no user) gets is ranked ahead, per model and blocklist, for the
most typed prefixes (those whose logged queries most people typed, :data:`FRESH_ANSWERS` of
them): a keystroke without either on one of them is answered from it at once, without
ranking (the first keystrokes of new sessions, ``GET /complete``). The set is fixed when the
model or the blocklist is set, never filled by traffic, so how fast a prefix is answered tells
nothing about what anyone else typed (docs/METHOD.md, "Privacy"). A keystroke with session queries
or a personal history, when asked, is compared with the fresh answer to tell whether they changed the list.

With several worker processes, the one that receives a reload announces it in a small file
(``reload_file``: a nonce and the directory); the others poll it and follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import pickle
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

import indexer
from indexer.blocklist import Blocklist
from indexer.model import Completion, Model
from indexer.normalize import normalize_prefix
from indexer.personal import PersonalHistory

log = logging.getLogger("qac.server")

LOADING_SWITCH_INTERVAL = 0.0002  # seconds; sys.getswitchinterval() while a reload loads
FRESH_ANSWERS = 1024  # the most typed prefixes, whose fresh-session answer is ranked ahead
FULL_COLLECTION_AFTER = 100  # generation-1 collections between full ones (CPython's default: 10)

_T = TypeVar("_T")
# The CPU time of the thread that ranks (the event loop's or a ranking thread's): what a ranking is charged.
CPU_CLOCK: Callable[[], float] = time.thread_time


@dataclass(frozen=True)
class Ranked:
    """The answer to one keystroke: normalized prefix, suggestions, the model that ranked them,
    and whether the session queries or the personal history changed the list a fresh session gets."""

    prefix: str
    items: list[Completion]
    version: str
    seconds: float
    context: bool | None  # None: not asked
    cpu: float = 0.0  # CPU seconds the ranking took (0: answered from the fresh answers), charged to the address


class FreshAnswers:
    """The suggestions a fresh session (no session queries, no user) gets, by normalized prefix; read-only.

    Kept packed, not as ~10,000 :class:`Completion` objects: the queries in one string, scores and
    flags in arrays; each :meth:`get` makes its own. A worker forked after they were ranked
    (:func:`rank_ahead`) then writes to none of the supervisor's: reading a shared Python object
    writes its reference count, which copies its page into the worker (BENCHMARKS.md, "Memory per worker")."""

    def __init__(self, answers: dict[str, tuple[Completion, ...]] | None = None):
        answers = answers or {}
        items = [c for ranked in answers.values() for c in ranked]
        self._rows = {prefix: row for row, prefix in enumerate(answers)}  # prefix -> row
        self._first = np.cumsum([0, *(len(ranked) for ranked in answers.values())], dtype=np.int64)  # row -> item
        self._text = "".join(c.query for c in items)
        self._cuts = np.cumsum([0, *(len(c.query) for c in items)], dtype=np.int64)  # item -> query in _text
        self._scores = np.array([c.score for c in items], dtype=np.float64)
        self._flags = np.array([c.personal | c.corrected << 1 for c in items], dtype=np.uint8)

    @classmethod
    def ranked(cls, model: Model, blocklist: Blocklist | None, k: int, size: int = FRESH_ANSWERS) -> FreshAnswers:
        """The answers for the ``size`` most typed prefixes of ``model``, with ``blocklist``
        (those :func:`rank_ahead` ranked, the first time they are asked for)."""
        global _ranked_ahead
        ahead, _ranked_ahead = _ranked_ahead, None
        if ahead is not None and ahead[0] is model and ahead[1] == blocklist and ahead[2:4] == (k, size):
            return ahead[4]
        if size <= 0:
            return cls()
        return cls({p: tuple(model.complete(p, (), k, blocklist=blocklist))
                    for p in model.labels.heaviest_prefixes(size)})

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, prefix: str) -> tuple[Completion, ...] | None:
        """The answer for a normalized prefix, if ranked ahead (new objects at each call)."""
        span = self._span(prefix)
        if span is None:
            return None
        lo, hi = span
        return tuple(Completion(query, score, bool(flags & 1), bool(flags & 2)) for query, score, flags
                     in zip(self._queries(lo, hi), self._scores[lo:hi].tolist(), self._flags[lo:hi].tolist()))

    def queries(self, prefix: str) -> list[str] | None:
        """The queries of :meth:`get`'s answer alone: what tells whether a context changed it."""
        span = self._span(prefix)
        return None if span is None else self._queries(*span)

    def _span(self, prefix: str) -> tuple[int, int] | None:  # the answer's items, [lo, hi)
        row = self._rows.get(prefix)
        if row is None:
            return None
        lo, hi = self._first[row : row + 2].tolist()
        return lo, hi

    def _queries(self, lo: int, hi: int) -> list[str]:
        cuts = self._cuts[lo : hi + 1].tolist()
        text = self._text
        return [text[a:b] for a, b in zip(cuts, cuts[1:])]


_ranked_ahead: tuple[Model, Blocklist | None, int, int, FreshAnswers] | None = None


def rank_ahead(model: Model, extra: Blocklist, k: int, size: int) -> None:
    """Rank the fresh answers of ``model`` with ``extra`` (the ``--blocklist`` and ``--sensitive``
    files) now, in the supervisor before it forks the workers: the first :class:`Completer` of the
    same model, lists, ``k`` and ``size`` takes them instead of ranking its own, and the workers
    share their pages (ranking them in each worker made ~13 MB of it private).

    They are ranked in a child process (where fork is available) and only their packed arrays come
    back: ranking fills the model's memories, and what it leaves in the supervisor's heap, or frees
    there, would be copied by every worker that uses or reuses it (scripts/cow_pages.py)."""
    global _ranked_ahead
    blocklist = _union(model, extra)
    fresh = _in_child(functools.partial(FreshAnswers.ranked, model, blocklist, k, size))
    _ranked_ahead = (model, blocklist, k, size, fresh)


def _in_child(call: Callable[[], _T]) -> _T:
    """``call()`` run in a forked child, its result pickled back; in this process where fork is not
    available, or where the child failed (then its error is raised here)."""
    if not hasattr(os, "fork"):
        return call()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing of the parent's may run here (no exit handlers, no buffers flushed)
        code = 1
        try:
            os.close(read)
            with os.fdopen(write, "wb") as out:
                pickle.dump(call(), out, protocol=pickle.HIGHEST_PROTOCOL)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as data:
        raw = data.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not raw:
        log.warning("ranking ahead in a child process failed: ranking here")
        return call()
    result: _T = pickle.loads(raw)
    return result


class Completer:
    """Holds the current model; ranks on the event loop or a small thread pool; swaps models on reload."""

    def __init__(self, model: Model, index: str, *, threads: int, k: int,
                 on_swap: Callable[[Model, str], None] | None = None, reload_file: str | None = None,
                 announced: tuple[str, str] | None = None, fresh_size: int = FRESH_ANSWERS,
                 extra: Blocklist | None = None):
        """``threads``: ranking threads, 0 to rank on the event loop; ``announced``: the
        announcement ``model`` was loaded after, if any; ``fresh_size``: for how many of the most
        typed prefixes the fresh-session answer is ranked ahead (here, before it returns);
        ``extra``: the ``--blocklist`` and ``--sensitive`` files' terms at start."""
        self._model = model
        self._index = index
        self._extra = extra or Blocklist()  # the --blocklist and --sensitive files
        # The model's list and the files', None: the model's alone.
        self._blocklist: Blocklist | None = _union(model, self._extra)
        self.k = k
        self._fresh_size = fresh_size
        # Replaced with the model or the blocklist.
        self._fresh = FreshAnswers.ranked(model, self._blocklist, k, fresh_size)
        self._filling: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="qac-rank") if threads else None
        self._lock = asyncio.Lock()
        self._on_swap = on_swap
        self._reload_file = Path(reload_file) if reload_file else None
        self._token = announced

    @property
    def model(self) -> Model:
        return self._model

    @property
    def version(self) -> str:
        return self._model.version

    @property
    def index(self) -> str:
        return self._index

    @property
    def fresh(self) -> FreshAnswers:
        """The fresh-session answers of the current model and blocklist."""
        return self._fresh

    @property
    def blocklist(self) -> Blocklist:
        """What is never suggested: the model's own lists and the ``--blocklist`` and ``--sensitive`` files."""
        return self._blocklist if self._blocklist is not None else self._model.blocklist

    def set_extra_blocklist(self, extra: Blocklist) -> None:
        """Apply ``extra`` (the ``--blocklist`` and ``--sensitive`` files) on top of every model's own
        lists from now on.

        The fresh answers are ranked again in a thread (at once without an event loop); until
        they are, every fresh keystroke is ranked."""
        self._extra = extra
        blocklist = _union(self._model, extra)
        if blocklist == self._blocklist:
            return
        self._blocklist, self._fresh = blocklist, FreshAnswers()
        model = self._model
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._fresh = FreshAnswers.ranked(model, blocklist, self.k, self._fresh_size)
            return

        async def fill() -> None:
            fresh = await asyncio.to_thread(FreshAnswers.ranked, model, blocklist, self.k, self._fresh_size)
            if self._model is model and self._blocklist is blocklist:
                self._fresh = fresh

        self._filling = loop.create_task(fill())

    async def complete(self, prefix: str, session: Sequence[str], personal: PersonalHistory | None = None,
                       *, context: bool = False) -> Ranked:
        """Rank ``prefix`` after the ``session`` queries (and the user's ``personal`` history) with the
        model current at the call and every blocklist. With ``context``, tell whether the
        session or personal history changed what a fresh session gets; without, ``Ranked.context`` is None."""
        model, blocklist, fresh = self._model, self._blocklist, self._fresh
        started = time.perf_counter()
        if not session and not personal:
            # A cached answer is a dictionary lookup, given at once (and, with ranking threads,
            # without the trip to one and back).
            normalized = normalize_prefix(prefix)
            alone = fresh.get(normalized)
            cpu = 0.0
            if alone is None:
                now, cpu = await self._run(functools.partial(_fresh, model, normalized, self.k, blocklist, fresh))
                alone = now
            return Ranked(normalized, list(alone), model.version, time.perf_counter() - started,
                          False if context else None, cpu)
        call = functools.partial(rank_keystroke, model, prefix, tuple(session), personal, self.k, blocklist, fresh,
                                 context)
        (normalized, items, changed), cpu = await self._run(call)
        return Ranked(normalized, items, model.version, time.perf_counter() - started, changed, cpu)

    async def _run(self, call: Callable[[], _T]) -> tuple[_T, float]:
        """``call()`` on the event loop, after one turn of it, or on a ranking thread; with the
        CPU seconds it took."""
        if self._pool is None:
            # One turn first: the frames and requests already received are read, and wait
            # their turn here too, so that GET /complete's bounded queue (complete_pending)
            # counts them. Without it, each would be ranked as soon as read, and the backlog
            # would wait unseen in the loop.
            await asyncio.sleep(0)
            return _timed(call)
        return await asyncio.get_running_loop().run_in_executor(self._pool, _timed, call)

    async def reload(self, index: str, *, announce: bool = True) -> tuple[str, str]:
        """Load ``index`` and swap it in: (old version, new version).

        Raises :class:`indexer.ModelError` (or what loading raised) and keeps the old model.
        """
        async with self._lock:
            # Loading holds the GIL for long stretches; with the default 5 ms switch interval
            # the event loop and ranking threads would wait up to that at every step.
            switch = sys.getswitchinterval()
            sys.setswitchinterval(LOADING_SWITCH_INTERVAL)
            try:
                model = await asyncio.to_thread(load_warm, index)
            finally:
                sys.setswitchinterval(switch)
            extra = self._extra
            union = await asyncio.to_thread(_union, model, extra)
            fresh = await asyncio.to_thread(FreshAnswers.ranked, model, union, self.k, self._fresh_size)
            if self._extra is not extra:  # the files changed meanwhile
                union = _union(model, self._extra)
                fresh = FreshAnswers.ranked(model, union, self.k, self._fresh_size)
            old, self._model, self._index = self._model, model, index
            self._blocklist, self._fresh = union, fresh
            if announce and self._reload_file is not None:
                self._token = announce_reload(self._reload_file, index)
        if self._on_swap is not None:
            self._on_swap(model, index)
        old_version = old.version
        del old  # in-flight requests may hold it a little longer
        await asyncio.to_thread(release_memory)
        log.info("model %s from %s replaces %s (pid %d)", model.version, index, old_version, os.getpid())
        return old_version, model.version

    async def follow(self, interval: float = 0.5) -> None:
        """Forever: apply the reloads other worker processes announce in the reload file."""
        if self._reload_file is None:
            return
        while True:
            await asyncio.sleep(interval)
            token = read_announcement(self._reload_file)
            if token is None or token == self._token:
                continue
            self._token = token
            try:
                await self.reload(token[1], announce=False)
            except Exception:  # keep serving the old model; the announcing worker reported it
                log.exception("could not follow the reload to %s", token[1])

    def close(self) -> None:
        if self._filling is not None:
            self._filling.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _timed(call: Callable[[], _T]) -> tuple[_T, float]:
    """``call()`` and the CPU seconds its thread spent on it."""
    start = CPU_CLOCK()
    out = call()
    return out, CPU_CLOCK() - start


def rank_keystroke(model: Model, prefix: str, session: tuple[str, ...], personal: PersonalHistory | None, k: int,
          blocklist: Blocklist | None, fresh: FreshAnswers, context: bool) -> tuple[str, list[Completion], bool | None]:
    """The ranking of a keystroke with session queries or a personal history:
    (normalized prefix, suggestions, whether they changed them: None unless
    ``context``). ``fresh``: what a fresh session gets, ranked ahead."""
    normalized = normalize_prefix(prefix)
    items = model.complete(normalized, session, k, personal=personal, blocklist=blocklist)
    if not context:
        return normalized, items, None
    alone = fresh.queries(normalized)
    if alone is None:
        alone = [c.query for c in model.complete(normalized, (), k, blocklist=blocklist)]
    return normalized, items, alone != [c.query for c in items]


def _fresh(model: Model, normalized: str, k: int, blocklist: Blocklist | None,
           fresh: FreshAnswers) -> tuple[Completion, ...]:
    """What a fresh session gets for a normalized prefix: ranked ahead, or ranked now."""
    alone = fresh.get(normalized)
    return tuple(model.complete(normalized, (), k, blocklist=blocklist)) if alone is None else alone


def _union(model: Model, extra: Blocklist) -> Blocklist | None:
    """The model's list and ``extra``; None when ``extra`` is empty (the model applies its own)."""
    return model.blocklist.union(extra) if extra.terms or extra.sensitive else None


def release_memory() -> None:
    """Hand the heap a replaced model freed back to the system (glibc keeps it otherwise:
    each reload grew a worker by ~100 MB). A ctypes call runs without the GIL; a gc.collect()
    here would hold it for a full collection, and the model has no cycles to collect."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def load_warm(index: str | Path) -> Model:
    """Load a model directory and rank once, so the first real keystroke pays no page faults.

    The model's objects are then frozen out of the cyclic garbage collector: it has no cycles
    (reference counting frees a replaced model), and a full collection walking its ~360,000
    objects stalled a keystroke by ~55 ms (BENCHMARKS.md#gc). Full collections of what came
    after (sessions, caches, connections) still took 11-30 ms, 2-4 per worker in a soak's
    two minutes of abuse. What the server drops has no cycles either
    (tests/server/test_hardening.py), so they are made rarer: one every
    :data:`FULL_COLLECTION_AFTER` generation-1 collections, not 10."""
    model = indexer.load(index)
    model.complete("a", ("a",))
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)
    return model


def announce_reload(path: Path, index: str) -> tuple[str, str]:
    """Write a new announcement atomically; returns it as read back by :func:`read_announcement`."""
    token = (secrets.token_hex(8), index)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text("\n".join(token), encoding="utf-8")
    os.replace(tmp, path)
    return token


def read_announcement(path: Path) -> tuple[str, str] | None:
    """The (nonce, directory) last announced, or ``None`` if there is none."""
    try:
        nonce, _, index = path.read_text(encoding="utf-8").partition("\n")
    except OSError:
        return None
    return (nonce, index) if nonce and index else None
