"""Sessions in a real redis-server: they outlive a server and are shared between replicas."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from indexer.model import Model
from server.app import create_app
from server.config import ServerConfig
from tests.support import items_of, recv_json, resume, running

pytestmark = pytest.mark.anyio


def redis_config(model_dir: Path, url: str) -> ServerConfig:
    return ServerConfig(index=str(model_dir), sessions=url)


async def test_a_redis_session_survives_a_server_restart(
    small_model_dir: Path, small_model: Model, redis_url: str, history_pair: tuple[str, str]
) -> None:
    prev, prefix = history_pair
    config = redis_config(small_model_dir, redis_url)
    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as ws:
            session = (await recv_json(ws))["session"]
            await ws.send(json.dumps({"type": "submit", "query": prev}))
            assert (await recv_json(ws))["queries"] == [prev]
    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as ws:
            hello = await resume(ws, session)
            await ws.send(json.dumps({"type": "query", "id": 1, "prefix": prefix}))
            answer = await recv_json(ws)
    assert (hello["session"], hello["queries"]) == (session, [prev])
    assert answer["items"] == items_of(small_model, prefix, [prev])


async def test_a_client_keeps_its_history_on_another_replica(small_model_dir: Path, redis_url: str) -> None:
    config = redis_config(small_model_dir, redis_url)
    with running(create_app(config), config) as one, running(create_app(config), config) as two:
        async with connect(f"ws://{one}/ws") as ws:
            session = (await recv_json(ws))["session"]
            await ws.send(json.dumps({"type": "submit", "query": "weather"}))
            await recv_json(ws)
        async with connect(f"ws://{two}/ws") as ws:
            hello = await resume(ws, session)
            await ws.send(json.dumps({"type": "submit", "query": "news"}))
            ack = await recv_json(ws)
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://{two}/healthz")).json()
            metrics = (await http.get(f"http://{one}/metrics")).text
    assert (hello["session"], hello["queries"], ack["queries"]) == (session, ["weather"], ["weather", "news"])
    assert health["sessions"] == "redis"
    assert "qac_live_sessions 1.0" in metrics.splitlines()
