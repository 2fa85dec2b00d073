"""Shared fixtures: a small real log slice and a model built from it once per test run."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from indexer.build import build
from indexer.params import BuildParams

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample.tsv.gz"


def slice_log(path: Path, users: int) -> list[str]:
    """The header and the rows of the first ``users`` users of a gzipped AOL log."""
    out: list[str] = []
    seen: set[str] = set()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        out.append(next(f))
        for line in f:
            user = line.split("\t", 1)[0]
            if user not in seen:
                if len(seen) == users:
                    break
                seen.add(user)
            out.append(line)
    return out


@pytest.fixture(scope="session")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About a tenth of the shipped sample: 25 users, a few thousand rows."""
    path = tmp_path_factory.mktemp("logs") / "small.tsv"
    path.write_text("".join(slice_log(SAMPLE, 25)), encoding="utf-8")
    return path


SMALL_PARAMS = BuildParams(workers=1, max_leaf=50)


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory, small_log: Path) -> Path:
    out = tmp_path_factory.mktemp("models") / "small"
    build([small_log], out, SMALL_PARAMS, quiet=True)
    return out
