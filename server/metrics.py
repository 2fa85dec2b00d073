"""Prometheus metrics of one server process, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CLOSE_REASONS = ("full", "idle", "slow_client", "frame_too_big", "origin")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The counters, gauges and histograms the server updates; :meth:`render` exposes them."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.keystrokes = Counter("qac_keystrokes", "Completion requests received", ["transport"], registry=r)
        self.superseded = Counter(
            "qac_superseded_keystrokes", "Keystrokes skipped because a newer one arrived first", registry=r
        )
        self.latency = Histogram(
            "qac_completion_seconds", "Time from receiving a keystroke to its answer",
            ["transport"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.errors = Counter("qac_protocol_errors", "Error frames sent, by code", ["code"], registry=r)
        self.connections = Gauge("qac_open_connections", "Open WebSocket connections", registry=r)
        self.closed = Counter(
            "qac_closed_connections", "Connections the server closed or refused, by reason", ["reason"], registry=r,
        )
        for reason in CLOSE_REASONS:
            self.closed.labels(reason)
        self.store_up = Gauge("qac_session_store_up", "1 while the session store answers, 0 while it is down "
                              "(keystrokes are then ranked with what each connection kept)", registry=r)
        self.store_up.set(1)
        self.sessions = Gauge("qac_live_sessions", "Sessions alive in the session store", registry=r)
        self.submits = Counter("qac_submits", "Queries appended to a session history", registry=r)
        self.reloads = Counter("qac_model_reloads", "Model reloads, by result", ["result"], registry=r)
        self.model = Info("qac_model", "The model being served", registry=r)

    def set_model(self, version: str, index: str) -> None:
        """Label ``qac_model_info`` with the model now served."""
        self.model.info({"version": version, "index": index})

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
