"""``qac bench`` end to end on tiny inputs: builds, ``qac serve`` subprocesses, load, charts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.train.examples import protocol_pairs
from indexer.train.logs import read_logs
from indexer.train.sessions import sessions_of
from qac.main import main
from replay.bench import BenchConfig, BenchError, run_bench
from tests.support import SAMPLE, slice_log

TINY_BUILD = ("--workers", "1", "--max-leaf", "50")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A log of 8 users, 20 protocol pairs from it, and a plain query list of 400 lines."""
    root = tmp_path_factory.mktemp("tiny")
    log = root / "log.tsv"
    log.write_text("".join(slice_log(SAMPLE, 8)), encoding="utf-8")
    rows = read_logs([log])[0]
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(
        json.dumps({"prev_query": e.prev, "prefix": e.prefix, "next_query": e.target}) + "\n"
        for e in protocol_pairs(sessions_of(rows))[:20]))
    queries = root / "queries.txt"
    queries.write_text("Query\n" + "".join(f"{r.query}\n" for r in rows[:400]), encoding="utf-8")
    return {"log": log, "pairs": pairs, "queries": queries}


@pytest.fixture(scope="module")
def bench(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench")
    config = BenchConfig(
        logs=(tiny["log"],), pairs=tiny["pairs"], out=out, concurrency_levels=(1, 3), duration=0.5,
        saturation_users=2, scale_log=tiny["queries"], scale_fractions=(0.5, 1.0), scale_pairs_limit=5,
        build_args=TINY_BUILD, capacity_workers=(1,), capacity_start=1, capacity_limit=2, capacity_duration=0.5,
        quiet=True,
    )
    return out, run_bench(config)


def test_bench_writes_json_charts_and_a_markdown_summary(bench: tuple[Path, str]) -> None:
    out, summary = bench
    result = json.loads((out / "bench.json").read_text())
    assert set(result["systems"]) == {"model", "mpc"}
    assert sorted(result["charts"]) == ["latency_vs_concurrency.png", "scaling.png"]
    for chart in result["charts"]:
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "bench.md").read_text().strip() == summary
    assert summary.count("\n|---") == 5  # capacity, build, load, saturation and scaling tables
    assert summary.index("typists served") < summary.index("| system | build s")  # the headline comes first


def test_each_system_is_built_served_and_loaded(bench: tuple[Path, str]) -> None:
    result = json.loads((bench[0] / "bench.json").read_text())
    for name, system in result["systems"].items():
        build = system["build"]
        assert build["seconds"] > 0 and build["peak_mb"] > 0 and build["size_mb"] > 0 and build["labels"] > 0
        assert system["single"]["keystrokes"] > 0 and system["single"]["errors"] == 0
        assert system["replay_agrees_with_eval"], name
        assert [r["users"] for r in system["load"]] == [1, 3]
        assert all(r["answered"] > 0 and r["errors"] == 0 and r["p99_ms"] is not None for r in system["load"])
        saturation = system["saturation"]
        assert saturation["mode"] == "saturation" and saturation["answered_per_s"] > 0
        assert system["memory"]["rss_mb"] > 0


def test_the_capacity_search_runs_against_the_served_model(bench: tuple[Path, str]) -> None:
    capacity = json.loads((bench[0] / "bench.json").read_text())["capacity"]
    assert capacity["ranking"]["keystrokes"] > 0 and capacity["ranking"]["cpu_ms_per_keystroke"] > 0
    found = capacity["workers"]["1"]
    assert [s["users"] for s in found["steps"]][:1] == [1] and found["typists"] in (0, 1, 2)
    assert all(s["server_cpu_s"] >= 0 for s in found["steps"])


def test_the_scaling_table_grows_with_the_data(bench: tuple[Path, str]) -> None:
    rows = json.loads((bench[0] / "bench.json").read_text())["scale"]
    assert [r["fraction"] for r in rows] == [0.5, 1.0]
    assert rows[0]["queries"] == 200 and rows[1]["queries"] == 400
    assert rows[0]["labels"] < rows[1]["labels"]
    assert all(r["p50_ms"] is not None and r["build_s"] > 0 for r in rows)


def test_bench_refuses_a_missing_scale_log_before_building(tiny: dict[str, Path], tmp_path: Path) -> None:
    config = BenchConfig(logs=(tiny["log"],), pairs=tiny["pairs"], out=tmp_path, scale_log=tmp_path / "none.gz")
    with pytest.raises(BenchError, match="file not found: .*none.gz"):
        run_bench(config)
    assert not (tmp_path / "models").exists()


def test_bench_asks_for_a_scale_log_rather_than_guessing_a_path(tiny: dict[str, Path], tmp_path: Path) -> None:
    config = BenchConfig(logs=(tiny["log"],), pairs=tiny["pairs"], out=tmp_path)
    with pytest.raises(BenchError, match="--scale-log PATH or --skip-scale"):
        run_bench(config)
    assert not (tmp_path / "models").exists()


def test_bench_cli_exits_2_on_bad_input(tiny: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--log", str(tmp_path / "missing.tsv"), "--pairs", str(tiny["pairs"]),
                 "--out", str(tmp_path), "--skip-scale"])
    assert code == 2
    assert "qac bench: error: file not found" in capsys.readouterr().err
