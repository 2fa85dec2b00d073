"""scripts/server_cpu.py reads the server's own counts: answers and ranking CPU over every transport."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import server.completer as completer_module
from indexer.model import Model
from scripts.server_cpu import CONSTANT_ANSWERS, counted

METRICS = """\
# HELP qac_completion_seconds Time from receiving a keystroke to its answer
# TYPE qac_completion_seconds histogram
qac_completion_seconds_bucket{le="0.005",transport="ws"} 90.0
qac_completion_seconds_count{transport="ws"} 100.0
qac_completion_seconds_sum{transport="ws"} 0.25
qac_completion_seconds_count{transport="http"} 7.0
qac_completion_seconds_created{transport="ws"} 1.7e+09
# TYPE qac_ranking_cpu_seconds counter
qac_ranking_cpu_seconds_total{transport="ws"} 0.5
qac_ranking_cpu_seconds_total{transport="http"} 0.25
qac_ranking_cpu_seconds_created{transport="ws"} 1.7e+09
"""


@pytest.fixture
def metrics_port() -> Iterator[list[str]]:
    body = [METRICS]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = body[0].encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    body.append(str(server.server_address[1]))
    try:
        yield body
    finally:
        server.shutdown()
        server.server_close()


def test_counts_the_answers_and_ranking_cpu_of_every_transport(metrics_port: list[str]) -> None:
    assert counted(int(metrics_port[1])) == (0.75, 107)


def test_a_server_without_ranking_cpu_still_gives_its_answers(metrics_port: list[str]) -> None:
    metrics_port[0] = "\n".join(line for line in METRICS.splitlines() if "ranking" not in line) + "\n"
    assert counted(int(metrics_port[1])) == (None, 107)


@pytest.mark.anyio
async def test_constant_answers_replace_every_ranking_of_the_server(monkeypatch: pytest.MonkeyPatch,
                                                                   small_model: Model) -> None:
    # Restored after the test: the patch replaces them in the module.
    monkeypatch.setattr(completer_module, "rank_keystroke", completer_module.rank_keystroke)
    monkeypatch.setattr(completer_module.FreshAnswers, "get", completer_module.FreshAnswers.get)
    completer = completer_module.Completer(small_model, "small", threads=0, k=10, fresh_size=0)
    exec(CONSTANT_ANSWERS, {})
    fresh = await completer.complete("Ne", ())  # a fresh session's keystroke
    after = await completer.complete("new y", ("weather",))  # and one with session queries
    constant = [f"constant suggestion number {i}" for i in range(10)]
    assert [c.query for c in fresh.items] == [c.query for c in after.items] == constant
    assert (fresh.prefix, after.prefix) == ("ne", "new y")
