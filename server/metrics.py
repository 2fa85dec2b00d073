"""Prometheus metrics of the server.

One process keeps its metrics in a registry of its own. With ``--workers N`` the supervisor
sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start: each writes its values to files
there, and whichever worker answers ``/metrics`` adds up all of them, so a scrape sees the
whole server, not one worker picked by the kernel.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CLOSE_REASONS = ("full", "address", "idle", "slow_client", "frame_too_big", "rate_limited", "origin",
                 "request_deadline")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The counters, gauges and histograms the server updates; :meth:`render` exposes them."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, *, shared_sessions: bool = False) -> None:
        """``shared_sessions``: every worker sees the same sessions (Redis), so the live-session
        gauge is their maximum rather than their sum."""
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        r = self.registry

        def mode(how: str) -> dict[str, Any]:  # how a gauge adds up over workers
            return {"multiprocess_mode": how} if self.multiprocess else {}

        self.keystrokes = Counter("qac_keystrokes", "Completion requests received", ["transport"], registry=r)
        self.superseded = Counter(
            "qac_superseded_keystrokes", "Keystrokes skipped because a newer one arrived first", registry=r
        )
        self.latency = Histogram(
            "qac_completion_seconds", "Time from receiving a keystroke to its answer",
            ["transport"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ranking_cpu = Counter(
            "qac_ranking_cpu_seconds", "CPU time of the rankings of answered keystrokes (the ranking thread's)",
            ["transport"], registry=r,
        )
        # The WebSocket's series, looked up once: labels() takes a lock and a lookup per keystroke.
        self.ws_keystrokes = self.keystrokes.labels("ws")
        self.ws_latency = self.latency.labels("ws")
        self.ws_ranking_cpu = self.ranking_cpu.labels("ws")
        self.errors = Counter("qac_protocol_errors", "Error frames sent, by code", ["code"], registry=r)
        self.connections = Gauge("qac_open_connections", "Open WebSocket connections", registry=r,
                                 **mode("livesum"))
        self.closed = Counter(
            "qac_closed_connections", "Connections the server closed or refused, by reason", ["reason"], registry=r,
        )
        for reason in CLOSE_REASONS:
            self.closed.labels(reason)
        self.store_up = Gauge("qac_session_store_up", "1 while the session store answers, 0 while it is down "
                              "(keystrokes are then ranked with what each connection kept)", registry=r,
                              **mode("livemin"))
        self.store_up.set(1)
        self.sessions = Gauge("qac_live_sessions", "Sessions alive in the session store", registry=r,
                              **mode("livemax" if shared_sessions else "livesum"))
        self.submits = Counter("qac_submits", "Queries appended to a session's queries (submits)", registry=r)
        self.submits_refused = Counter(
            "qac_submits_refused", "Submits over their rate: refused when read (address or user: rate_limited), "
            "or left out of the personal history when recorded (user)", ["at"], registry=r)
        for at in ("read", "history"):
            self.submits_refused.labels(at)
        self.reloads = Counter("qac_model_reloads", "Model reloads, by result", ["result"], registry=r)
        self.user_tokens = Counter(
            "qac_user_tokens", "User tokens: issued (anonymous), verified, refused (forged, expired, malformed)",
            ["result"], registry=r)
        for result in ("issued", "verified", "refused"):
            self.user_tokens.labels(result)
        self.history_deletes = Counter("qac_history_deletes", "Personal history deletions asked for: forget "
                                       "(all) and remove (one query)", ["kind"], registry=r)
        for kind in ("forget", "remove"):
            self.history_deletes.labels(kind)
        self.history_errors = Counter("qac_history_store_errors", "Personal history store calls that failed "
                                      "(suggestions then come without personal history)", registry=r)
        self.blocklist_terms = Gauge("qac_blocklist_terms", "Terms of the --blocklist files applied at serve "
                                     "time (besides the model's own list)", registry=r, **mode("livemax"))
        self.sensitive_terms = Gauge("qac_sensitive_terms", "Terms of the --sensitive files applied at serve "
                                     "time (besides the model's own list)", registry=r, **mode("livemax"))
        self.blocklist_reloads = Counter("qac_blocklist_reloads", "Re-reads of changed --blocklist or --sensitive "
                                         "files, by result", ["result"], registry=r)
        # By version only: the model's directory is the operator's business, not the scraper's.
        self.model = Gauge("qac_model_info", "The model being served (1), by version",
                           ["version"], registry=r, **mode("liveall"))
        self._model_version: str | None = None

    def set_model(self, version: str) -> None:
        """Label ``qac_model_info`` with the model now served."""
        if self._model_version is not None and self._model_version != version:
            if self.multiprocess:  # a file's series cannot be removed; it says 0 instead
                self.model.labels(self._model_version).set(0)
            else:
                self.model.remove(self._model_version)
        self.model.labels(version).set(1)
        self._model_version = version

    def render(self) -> bytes:
        """The text exposition format: this process's metrics, or all workers' added up."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def close(self) -> None:
        """This worker stops: its live gauges leave the sums."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())
