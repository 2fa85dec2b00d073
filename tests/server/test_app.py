"""The server's HTTP side end to end (a real uvicorn): the stateless endpoint, origins, health
and metrics, static files and reloads. A WebSocket connection's behaviour: test_connection.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import indexer
from indexer.model import Model
from server.app import create_app
from server.config import ServerConfig
from tests.support import TOKEN, ask, items_of, queries_of, query_frame, recv_json, running, submit_frame

pytestmark = pytest.mark.anyio

async def test_the_stateless_endpoint_matches_the_websocket(
    server: str, small_model: Model, history_pair: tuple[str, str]
) -> None:
    prev, prefix = history_pair
    async with connect(f"ws://{server}/ws") as ws:
        await recv_json(ws)
        await ws.send(submit_frame("weather"))
        await ws.send(submit_frame(prev))
        await recv_json(ws), await recv_json(ws)
        ws_answer = await ask(ws, 1, prefix, context=True)
    async with httpx.AsyncClient(base_url=f"http://{server}") as http:
        response = await http.get("/complete", params={"prefix": prefix, "prev": ["Weather?", prev], "context": "1"})
    assert response.status_code == 200
    body = response.json()
    assert body["items"] == ws_answer["items"] == items_of(small_model, prefix, ["weather", prev])
    assert body["prefix"] == ws_answer["prefix"]
    assert body["index"] == small_model.version
    changed = queries_of(small_model, prefix, ["weather", prev]) != queries_of(small_model, prefix)
    assert body["context"] is ws_answer["context"] is changed

async def test_the_stateless_endpoint_says_whether_prev_changed_the_list(
    server: str, history_pair: tuple[str, str], neutral_pair: tuple[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=f"http://{server}") as http:
        alone = await http.get("/complete", params={"prefix": history_pair[1], "context": "1"})
        changed = await http.get("/complete", params={"prefix": history_pair[1], "prev": history_pair[0],
                                                       "context": "1"})
        same = await http.get("/complete", params={"prefix": neutral_pair[1], "prev": neutral_pair[0],
                                                    "context": "true"})
        unasked = await http.get("/complete", params={"prefix": history_pair[1], "prev": history_pair[0]})
    assert [r.json()["context"] for r in (alone, changed, same)] == [False, True, False]
    assert "context" not in unasked.json()

async def test_the_stateless_endpoint_rejects_missing_and_long_prefixes(server: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{server}") as http:
        missing = await http.get("/complete")
        long = await http.get("/complete", params={"prefix": "x" * 201})
    assert (missing.status_code, missing.json()["code"]) == (400, "bad_message")
    assert (long.status_code, long.json()["code"]) == (400, "too_long")

@pytest.mark.parametrize("allowed", [(), ("https://qac.example/",)])
async def test_browsers_from_other_origins_are_refused(small_model_dir: Path, allowed: tuple[str, ...]) -> None:
    config = ServerConfig(index=str(small_model_dir), allowed_origins=allowed)
    with running(create_app(config), config) as server:
        for origin in ["https://evil.example", "null", f"http://{server}.evil.example"]:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"ws://{server}/ws", origin=origin):  # type: ignore[arg-type]
                    pass
            assert refused.value.response.status_code == 403
        # The page's own origin, the listed ones, and clients that send no Origin (scripts).
        for origin in [f"http://{server}", None, *(["https://qac.example"] if allowed else [])]:
            async with connect(f"ws://{server}/ws", origin=origin) as ws:  # type: ignore[arg-type]
                assert (await recv_json(ws))["type"] == "hello"

async def test_health_and_metrics_describe_the_running_server(server: str, small_model: Model) -> None:
    async with connect(f"ws://{server}/ws") as ws, httpx.AsyncClient(base_url=f"http://{server}") as http:
        await recv_json(ws)
        await ask(ws, 1, "a")
        await ws.send(submit_frame("a"))  # a session enters the store on first use
        await recv_json(ws)
        health = await http.get("/healthz")
        metrics = (await http.get("/metrics")).text
    assert health.json() == {"status": "ok", "index": small_model.version, "sessions": "memory", "store": "up"}
    lines = metrics.splitlines()
    assert 'qac_keystrokes_total{transport="ws"} 1.0' in lines
    assert "qac_open_connections 1.0" in lines
    assert "qac_live_sessions 1.0" in lines
    assert any(line.startswith('qac_completion_seconds_count{transport="ws"} 1.0') for line in lines)
    info = [line for line in lines if line.startswith("qac_model_info")]
    assert len(info) == 1 and f'version="{small_model.version}"' in info[0]


async def test_metrics_count_the_ranking_cpu_of_answered_keystrokes(server: str) -> None:
    """The CPU time of rankings, beside the process's: what the rest of the server costs per unit of ranking."""
    async with connect(f"ws://{server}/ws") as ws, httpx.AsyncClient(base_url=f"http://{server}") as http:
        await recv_json(ws)
        await ws.send(submit_frame("bank of america"))  # session queries: ranked on the spot, not ahead
        await recv_json(ws)
        for i, prefix in enumerate(["b", "ba", "ban"]):
            await ask(ws, i, prefix)
        assert (await http.get("/complete", params={"prefix": "ban", "prev": "bank"})).status_code == 200
        lines = (await http.get("/metrics")).text.splitlines()
    cpu = {line.partition("}")[0]: float(line.rpartition(" ")[2]) for line in lines
           if line.startswith("qac_ranking_cpu_seconds_total{")}
    assert cpu['qac_ranking_cpu_seconds_total{transport="ws"'] > 0
    assert cpu['qac_ranking_cpu_seconds_total{transport="http"'] > 0


async def test_the_demo_page_is_served_at_the_root(server: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{server}") as http:
        page = await http.get("/")
        missing = await http.get("/no-such-file.js")
    assert page.status_code == 200
    assert "<html" in page.text.lower() and "text/html" in page.headers["content-type"]
    assert missing.status_code == 404

async def test_static_files_are_served_from_the_static_directory(
    small_model_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("<html>demo</html>")
    (tmp_path / "app.js").write_text("console.log(1)")
    config = ServerConfig(index=str(small_model_dir), static_dir=str(tmp_path))
    with running(create_app(config), config) as server:
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            assert (await http.get("/")).text == "<html>demo</html>"
            assert (await http.get("/app.js")).text == "console.log(1)"
            assert (await http.get("/static/app.js")).text == "console.log(1)"
            assert (await http.get("/static/../../etc/passwd")).status_code == 404

@pytest.mark.parametrize(
    ("token", "headers", "status"),
    [
        (TOKEN, {}, 401),
        (TOKEN, {"Authorization": "Bearer wrong"}, 401),
        (TOKEN, {"Authorization": f"Basic {TOKEN}"}, 401),
        (None, {"Authorization": f"Bearer {TOKEN}"}, 403),
    ],
)
async def test_reload_needs_the_admin_token(
    small_model_dir: Path, other_model_dir: Path, token: str | None, headers: dict[str, str], status: int
) -> None:
    config = ServerConfig(index=str(small_model_dir), admin_token=token)
    with running(create_app(config), config) as server:
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            response = await http.post("/admin/reload", json={"index": str(other_model_dir)}, headers=headers)
            health = await http.get("/healthz")
    assert response.status_code == status
    assert health.json()["index"] == indexer.load(small_model_dir).version

@pytest.mark.parametrize("body", [{"index": "/no/such/model"}, {"index": "."}, {"dir": "x"}, "not an object"])
async def test_a_bad_reload_is_a_400_and_keeps_the_old_model(
    server: str, small_model: Model, body: Any
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=f"http://{server}") as http:
        response = await http.post("/admin/reload", json=body, headers=auth)
        answer = await http.get("/complete", params={"prefix": "a"})
    assert response.status_code == 400
    assert response.json()["message"]
    assert answer.json()["index"] == small_model.version

@pytest.fixture
def busy_server(small_model_dir: Path) -> Iterator[str]:
    """A server that lets clients type far faster than people do."""
    config = ServerConfig(index=str(small_model_dir), admin_token=TOKEN, rate=10_000, burst=1_000,
                          address_rate=100_000, address_burst=10_000, address_cpu_rate=1e6, address_cpu_burst=1e6,
                          models_root=str(small_model_dir.parent.parent))
    with running(create_app(config), config) as address:
        yield address

async def test_reload_swaps_the_model_under_load_without_errors(
    busy_server: str, small_model: Model, other_model_dir: Path
) -> None:
    server = busy_server
    new_version = indexer.load(other_model_dir).version
    assert new_version != small_model.version
    reloaded = asyncio.Event()

    async def typist(n: int) -> list[dict[str, Any]]:
        answers = []
        async with connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            qid = 0
            while not reloaded.is_set() or qid < 40:
                for _ in range(3):  # a burst: some are superseded, some in flight at the swap
                    qid += 1
                    await ws.send(query_frame(qid, "abcdefghijklmnopqrstuvwxyz"[(qid + n) % 26]))
                while True:
                    answers.append(await recv_json(ws))
                    if answers[-1].get("id") == qid:
                        break
        return answers

    typists = [asyncio.create_task(typist(n)) for n in range(4)]
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(base_url=f"http://{server}") as http:
        response = await http.post("/admin/reload", json={"index": str(other_model_dir)},
                                   headers={"Authorization": f"Bearer {TOKEN}"})
        reloaded.set()
        answers = [a for t in await asyncio.gather(*typists) for a in t]
        metrics = (await http.get("/metrics")).text
    async with connect(f"ws://{server}/ws") as ws:
        hello = await recv_json(ws)
    assert response.status_code == 200, response.text
    assert response.json()["index"] == new_version
    assert response.json()["previous"] == small_model.version
    assert answers and [a for a in answers if a["type"] != "suggestions"] == []
    assert hello["index"] == new_version
    assert f'version="{new_version}"' in metrics
