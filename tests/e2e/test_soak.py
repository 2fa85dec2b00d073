"""The soak run, short, against the small model: every kind of abuse is met as it should be.

It asserts what the server did (its counters, the frames it sent), never how fast: it must hold
on a loaded 2-core machine. The abusers run at normal priority here (the soak's default,
SCHED_IDLE, stands for abusers on other machines and would let a busy machine starve them of
any abuse at all); how the typists fare under abuse is the benchmark's, scripts/soak.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from indexer.train.examples import protocol_pairs
from indexer.train.logs import read_logs
from indexer.train.sessions import sessions_of
from replay.soak import SETTLE, SoakConfig, markdown, run_soak


def test_a_short_soak_meets_each_abuse_and_keeps_the_typists_served(
    small_model_dir: Path, small_log: Path, tmp_path: Path
) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(
        json.dumps({"prev_query": e.prev, "prefix": e.prefix, "next_query": e.target}) + "\n"
        for e in protocol_pairs(sessions_of(read_logs([small_log])[0]))[:100]))
    cfg = SoakConfig(small_model_dir, pairs, workers=1, users=4, quiet_seconds=6, abuse_seconds=6, rounds=2,
                     flooders=1, flood_rate=200, garbage_senders=2, garbage_rate=30, storm_rate=10,
                     abuser_nice=0, abuser_idle=False)
    report = run_soak(cfg, say=lambda text: None)
    abusers, typists = report["abuse"]["abusers"], report["abuse"]["typists"]
    assert typists["answered"] > 0 and typists["errors"] == 0 and report["typists"]["errors"] == 0
    # Quiet and abused windows alternate, quiet first and last; each side is pooled.
    windows = report["windows"]
    assert [w["kind"] for w in windows] == ["quiet", "abuse", "quiet", "abuse", "quiet"]
    assert all(w["errors"] == 0 for w in windows)
    assert all(a["to_s"] <= b["from_s"] for a, b in zip(windows, windows[1:]))
    assert report["quiet"]["answered"] > 0
    assert report["quiet"]["answered"] == sum(w["answered"] for w in windows if w["kind"] == "quiet")
    assert typists["answered"] == sum(w["answered"] for w in windows if w["kind"] == "abuse")
    # A quiet window after abuse starts SETTLE s after the abusers closed everything (however
    # long that took them), and ends on schedule.
    assert windows[0]["seconds"] == 2
    assert all(0 <= w["seconds"] <= 2 - SETTLE for w in windows[2::2]), windows
    errors, closed = report["errors_by_server"], report["closed_by_server"]
    assert errors["rate_limited"] > 0  # the flooder
    assert errors["bad_json"] > 0 and errors["bad_message"] > 0 and errors["binary_frame"] > 0
    assert closed["frame_too_big"] > 0 and abusers["closed:1009"] > 0
    assert abusers["closed:1007"] > 0  # bad UTF-8: uvicorn closes, the app never sees the frame
    assert abusers["storm_connections"] > 0
    # One address, in each abused window: 20 connections held (the default per address), the
    # next refused with 1013.
    assert abusers["hoarder_held"] == 2 * 20 and abusers["hoarder_refused:1013"] == 2
    assert closed["address"] == 2
    complete = {k: v for k, v in abusers.items() if k.startswith("complete:")}
    assert complete["complete:200"] > 0 and set(complete) <= {"complete:200", "complete:429", "complete:503"}
    assert report["abuse"]["reload"]["index"]  # the reload half-way went through
    assert report["health_after"]["status"] == "ok"
    table = markdown(report)
    assert "p99 under abuse / quiet" in table and "| quiet, pooled |" in table and "| abuse, 2-5 s |" in table
    assert report["server_p99_ratio"] > 0 and "the server's own p99" in table
