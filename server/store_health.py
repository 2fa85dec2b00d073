"""Whether the session store answers: the server keeps serving while it is down.

Every store call reports its outcome here. After ``failures`` consecutive failed calls (one
slow or refused call is not an outage) the store is marked down: connections skip it
(ranking with the history they kept, holding new submits back) and a probe pings it every
second until it answers again; then connections write back what they held. A call that
fails while the store is still marked up fails alone: its connection holds what it wrote.
"""

from __future__ import annotations

import asyncio
import logging

from .metrics import Metrics
from .sessions import SessionError, SessionStore

log = logging.getLogger("qac.server")


class StoreHealth:
    """The session store's state as last seen: up, or down with the error."""

    def __init__(self, store: SessionStore, metrics: Metrics, probe_interval: float = 1.0, failures: int = 3):
        self.store = store
        self.metrics = metrics
        self.probe_interval = probe_interval
        self.failures = failures
        self.up = True
        self.error = ""  # the last error, for the log (store errors never hold the URL's password)
        self._failed = 0  # consecutive failed calls

    def failed(self, exc: SessionError) -> None:
        """A store call failed: after ``failures`` in a row, the store is down until a probe
        reaches it."""
        self._failed += 1
        self.error = str(exc)
        if self.up and self._failed >= self.failures:
            log.error("session store down after %d failed calls, serving without it: %s", self._failed, exc)
            self.up = False
            self.metrics.store_up.set(0)

    def answered(self) -> None:
        if not self.up:
            log.warning("session store is back")
        self.up = True
        self._failed = 0
        self.error = ""
        self.metrics.store_up.set(1)

    async def probe(self) -> bool:
        """Ping the store now: whether it answered (a failure counts towards marking it down)."""
        try:
            await self.store.ping()
        except SessionError as exc:
            self.failed(exc)
            return False
        self.answered()
        return True

    async def count_sessions(self) -> None:
        """Set the live-session gauge from the store, unless it is down."""
        if self.up:
            try:
                self.metrics.sessions.set(await self.store.count())
            except SessionError as exc:
                self.failed(exc)

    async def count_forever(self, interval: float = 5.0) -> None:
        """Forever: refresh the live-session gauge (every worker's, for the multi-worker sums)."""
        while True:
            await self.count_sessions()
            await asyncio.sleep(interval)

    async def watch(self) -> None:
        """Forever: while the store is down, ping it every ``probe_interval`` seconds."""
        while True:
            await asyncio.sleep(self.probe_interval)
            if not self.up:
                await self.probe()
