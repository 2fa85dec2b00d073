"""The serve-time lists: ``--blocklist`` and ``--sensitive`` files on top of the model's own
lists, hot-reloaded.

The files are read at start (a bad one stops the server) and again whenever one of them
changes (its mtime, size or inode), checked every ``blocklist_interval`` seconds and on
``POST /admin/reload``, so a term can disappear before the next build. A file that cannot be
read at a re-read is logged and the previous lists keep applying. The completer applies the
union of these lists and the model's to every source, the user's own history included.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence

from indexer.blocklist import Blocklist, BlocklistError

from .metrics import Metrics

log = logging.getLogger("qac.server")

Signature = tuple[tuple[int, int, int] | None, ...]


def _signature(paths: Sequence[str]) -> Signature:
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def read(paths: Sequence[str], sensitive: Sequence[str] = ()) -> Blocklist:
    """The blocked terms of ``paths`` and the sensitive terms of ``sensitive`` (no default lists:
    the model carries its own); raises BlocklistError."""
    return Blocklist.from_files(list(paths), default=False, sensitive=list(sensitive))


class ServeBlocklist:
    """The ``--blocklist`` and ``--sensitive`` files as one list: :attr:`current`, read at start
    (for the caller to apply), then ``on_change`` gets each new list."""

    def __init__(self, paths: Sequence[str], sensitive: Sequence[str], metrics: Metrics,
                 on_change: Callable[[Blocklist], None] | None = None):
        self.paths = tuple(paths)
        self.sensitive = tuple(sensitive)
        self.metrics = metrics
        self.on_change = on_change
        self._seen = _signature(self.paths + self.sensitive)
        self.current = read(self.paths, self.sensitive)  # raises at start: a bad file is a configuration error
        self._count(self.current)

    def _count(self, terms: Blocklist) -> None:
        self.metrics.blocklist_terms.set(len(terms))
        self.metrics.sensitive_terms.set(len(terms.sensitive))

    async def check(self, force: bool = False) -> bool:
        """Re-read the files if one changed (or ``force``); whether a new list now applies."""
        if not self.paths and not self.sensitive:
            return False
        seen = _signature(self.paths + self.sensitive)
        if seen == self._seen and not force:
            return False
        self._seen = seen
        try:
            new = await asyncio.to_thread(read, self.paths, self.sensitive)
        except BlocklistError as exc:
            self.metrics.blocklist_reloads.labels("failed").inc()
            log.error("blocklist not reloaded, the previous one (%d terms, %d sensitive) still applies: %s",
                      len(self.current), len(self.current.sensitive), exc)
            return False
        self.metrics.blocklist_reloads.labels("ok").inc()
        if new == self.current:
            return False
        log.info("blocklist reloaded: %d terms, %d sensitive (was %d, %d)", len(new), len(new.sensitive),
                 len(self.current), len(self.current.sensitive))
        self.current = new
        self._count(new)
        if self.on_change is not None:
            self.on_change(new)
        return True

    async def watch(self, interval: float) -> None:
        """Forever: check the files every ``interval`` seconds (a stat each; reads only on change)."""
        if not self.paths and not self.sensitive:
            return
        while True:
            await asyncio.sleep(interval)
            await self.check()
