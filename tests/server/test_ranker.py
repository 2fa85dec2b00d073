"""The served model: ranking off the loop, atomic swaps, reloads followed across workers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

import indexer
from indexer.model import Completion, Model
from server.app import create_app
from server.config import ServerConfig
from server.ranker import Ranker, announce_reload, read_announcement
from tests.support import recv_json, running

pytestmark = pytest.mark.anyio


class SlowModel:
    """Stands in for a model whose ranking takes until ``release`` is set."""

    version = "slow"

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def complete(self, prefix: str, history: Sequence[str] = (), k: int = 10, **kw: object) -> list[Completion]:
        self.started.set()
        self.release.wait(10)
        return [Completion(prefix, 1.0)]


async def test_a_request_in_flight_finishes_on_its_model_while_the_next_gets_the_new_one(
    other_model_dir: Path,
) -> None:
    slow = SlowModel()
    ranker = Ranker(slow, "slow", threads=2, k=10)  # type: ignore[arg-type]
    try:
        in_flight = asyncio.create_task(ranker.complete("a", []))
        await asyncio.to_thread(slow.started.wait, 5)
        old, new = await ranker.reload(str(other_model_dir))
        after = await ranker.complete("a", [])
        slow.release.set()
        before = await in_flight
    finally:
        slow.release.set()
        ranker.close()
    assert old == "slow" and new == after.version != "slow"
    assert before.version == "slow"


async def test_a_failed_reload_keeps_the_model(small_model: Model) -> None:
    ranker = Ranker(small_model, "small", threads=1, k=10)
    try:
        with pytest.raises(indexer.ModelError):
            await ranker.reload("/no/such/model")
        assert ranker.version == small_model.version and ranker.index == "small"
    finally:
        ranker.close()


async def test_workers_follow_a_reload_announced_by_another(
    small_model: Model, other_model_dir: Path, tmp_path: Path
) -> None:
    announcements = tmp_path / "reload"
    start = announce_reload(announcements, "small")
    one = Ranker(small_model, "small", threads=1, k=10, reload_file=str(announcements), announced=start)
    two = Ranker(small_model, "small", threads=1, k=10, reload_file=str(announcements), announced=start)
    following = asyncio.create_task(two.follow(interval=0.02))
    try:
        await one.reload(str(other_model_dir))
        assert read_announcement(announcements)[1] == str(other_model_dir)  # type: ignore[index]
        for _ in range(250):
            if two.version == one.version:
                break
            await asyncio.sleep(0.02)
    finally:
        following.cancel()
        one.close()
        two.close()
    assert two.version == one.version != small_model.version
    assert two.index == str(other_model_dir)


async def test_a_worker_started_after_a_reload_serves_the_announced_model(
    small_model_dir: Path, other_model_dir: Path, tmp_path: Path
) -> None:
    announcements = tmp_path / "reload"
    announce_reload(announcements, str(other_model_dir))
    config = ServerConfig(index=str(small_model_dir), reload_file=str(announcements))
    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as ws:
            hello = await recv_json(ws)
    assert hello["index"] == indexer.load(other_model_dir).version
