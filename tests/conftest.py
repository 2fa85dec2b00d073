"""Fixtures shared by every test directory: a small real log slice, models built from it
once per run, a real redis-server. Helpers that are not fixtures are in ``tests/support.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import indexer
from indexer.model import Model
from indexer.params import BuildParams
from indexer.train.build import build

from .support import SAMPLE, SMALL_PARAMS, free_port, slice_log, start_redis


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in item.path.as_posix():
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About a tenth of the shipped sample: 25 users, a few thousand rows."""
    path = tmp_path_factory.mktemp("logs") / "small.tsv"
    path.write_text("".join(slice_log(SAMPLE, 25)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory, small_log: Path) -> Path:
    out = tmp_path_factory.mktemp("models") / "small"
    build([small_log], out, SMALL_PARAMS, quiet=True)
    return out


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def small_model(small_model_dir: Path) -> Model:
    return indexer.load(small_model_dir)


@pytest.fixture(scope="session")
def sample_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model ``qac serve`` builds by default: the shipped sample (600 users) with the
    default build parameters (at least 3 people per suggestion), about a minute of CPU."""
    out = tmp_path_factory.mktemp("models") / "sample"
    build([SAMPLE], out, BuildParams(), quiet=True)
    return out


@pytest.fixture(scope="session")
def sample_model(sample_model_dir: Path) -> Model:
    return indexer.load(sample_model_dir)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory, small_log: Path) -> Path:
    """A second model of the same log, with another version, to reload to."""
    out = tmp_path_factory.mktemp("models") / "other"
    build([small_log], out, BuildParams(workers=1, max_leaf=50, beam=5, min_users=1), quiet=True)
    return out


@pytest.fixture(scope="session")
def history_pair(small_model: Model) -> tuple[str, str]:
    """(previous query, prefix) whose top suggestions change with that previous query."""
    keys = small_model.labels.keys
    prefixes = ["a", "b", "c", "m", "s", "w", "ne", "th"]
    for prev in (keys[i] for i in range(0, len(keys), max(1, len(keys) // 300))):
        for prefix in prefixes:
            with_prev = small_model.complete(prefix, [prev])
            alone = small_model.complete(prefix)
            if with_prev and alone and with_prev[0].query != alone[0].query:
                return prev, prefix
    raise AssertionError("no (previous query, prefix) pair in the model where history matters")


@pytest.fixture(scope="session")
def neutral_pair(small_model: Model) -> tuple[str, str]:
    """(previous query, prefix) whose suggestions, the same queries in the same order, do not
    change with that previous query."""
    keys = small_model.labels.keys
    prefixes = ["a", "b", "c", "m", "s", "w", "ne", "th"]
    for prev in (keys[i] for i in range(0, len(keys), max(1, len(keys) // 300))):
        for prefix in prefixes:
            alone = [c.query for c in small_model.complete(prefix)]
            if alone and [c.query for c in small_model.complete(prefix, [prev])] == alone:
                return prev, prefix
    raise AssertionError("no (previous query, prefix) pair in the model where history does not matter")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A throwaway ``redis-server`` on a free port; its URL. Skips if there is no binary."""
    port = free_port()
    proc = start_redis(port, "--appendonly", "no")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The test Redis, emptied."""
    import redis

    with redis.Redis.from_url(redis_server) as client:
        client.flushall()
    return redis_server
