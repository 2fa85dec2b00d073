"""The soak run, short, against the small model: every kind of abuse is met as it should be."""

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
                     flooders=1, flood_rate=200, garbage_senders=2, garbage_rate=30, storm_rate=10)
    report = run_soak(cfg, say=lambda text: None)
    abusers, typists = report["abuse"]["abusers"], report["abuse"]["typists"]
    assert typists["answered"] > 0 and typists["errors"] == 0 and report["typists"]["errors"] == 0
    # Quiet and abused windows alternate, quiet first and last; each side is pooled.
    windows = report["windows"]
    assert [w["kind"] for w in windows] == ["quiet", "abuse", "quiet", "abuse", "quiet"]
    assert all(w["answered"] > 0 and w["errors"] == 0 for w in windows)
    assert all(a["to_s"] <= b["from_s"] for a, b in zip(windows, windows[1:]))
    assert report["quiet"]["answered"] == sum(w["answered"] for w in windows if w["kind"] == "quiet")
    assert typists["answered"] == sum(w["answered"] for w in windows if w["kind"] == "abuse")
    # A quiet window after abuse starts SETTLE s after the abusers closed everything, which
    # takes them under a second (a flooder just leaves: its close would wait 2 s for its turn).
    assert windows[0]["seconds"] == 2
    assert all(2 - SETTLE - 1.2 < w["seconds"] <= 2 - SETTLE for w in windows[2::2]), windows
    assert abusers["error:rate_limited"] > 0  # the flooder
    assert abusers["error:bad_json"] > 0 and abusers["error:bad_message"] > 0
    assert abusers["closed:1009"] > 0 and abusers["closed:1007"] > 0  # oversized frames, bad UTF-8
    assert abusers["storm_connections"] > 0
    assert abusers["error:binary_frame"] > 0
    # One address, in each abused window: 20 connections held (the default per address), the
    # next refused with 1013.
    assert abusers["hoarder_held"] == 2 * 20 and abusers["hoarder_refused:1013"] == 2
    assert report["closed_by_server"]["address"] >= 1
    complete = {k: v for k, v in abusers.items() if k.startswith("complete:")}
    assert complete["complete:200"] > 0 and set(complete) <= {"complete:200", "complete:429", "complete:503"}
    assert report["closed_by_server"]["frame_too_big"] > 0
    assert report["abuse"]["reload"]["index"]  # the reload half-way went through
    assert report["health_after"]["status"] == "ok"
    table = markdown(report)
    assert "p99 under abuse / quiet" in table and "| quiet, pooled |" in table and "| abuse, 2-5 s |" in table
    assert report["server_p99_ratio"] > 0 and "the server's own p99" in table
    assert report["config"]["abuser_nice"] == 19 and report["config"]["abuser_idle"]  # stand for other machines
