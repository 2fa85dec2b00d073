"""End to end through ``qac``: build, eval, complete, and how bad input fails."""

import json
import os
import sys
from datetime import datetime

import pytest

from indexer.train.build import build
from indexer.train.examples import protocol_pairs
from indexer.train.logs import read_logs
from indexer.train.sessions import sessions_of
from qac.main import main
from tests.support import SAMPLE, SMALL_PARAMS, slice_log


def test_build_eval_beats_most_popular_on_held_out_users(tmp_path, capsys):
    lines = slice_log(SAMPLE, 60)
    users = []
    for line in lines[1:]:
        user = line.split("\t", 1)[0]
        if not users or users[-1] != user:
            users.append(user)
    test_users = set(users[-10:])
    train = tmp_path / "train.tsv"
    train.write_text("".join(lines[:1] + [x for x in lines[1:] if x.split("\t", 1)[0] not in test_users]))
    test = tmp_path / "test.tsv"
    test.write_text("".join(lines[:1] + [x for x in lines[1:] if x.split("\t", 1)[0] in test_users]))
    rows, _ = read_logs([test])
    pairs = tmp_path / "pairs.jsonl"
    with pairs.open("w") as f:
        for ex in protocol_pairs(sessions_of(rows)):
            when = datetime.fromtimestamp(ex.time).strftime("%Y-%m-%d %H:%M:%S")
            f.write(json.dumps({"prev_query": ex.prev, "prefix": ex.prefix, "next_query": ex.target,
                                "user": ex.user, "time": when}) + "\n")

    out = tmp_path / "model"
    assert main(["build", "--log", str(train), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    assert "labels" in capsys.readouterr().out
    assert main(["eval", "--index", str(out), "--pairs", str(pairs), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] > 200
    assert set(result["model"]) >= {"mrr", "success@1", "success@10", "bleu", "p50_ms", "p99_ms"}
    assert result["model"]["mrr"] > result["mpc"]["mrr"] + 0.05
    assert result["model"]["bleu"] > result["mpc"]["bleu"]

    # Each user's own earlier queries (here those of their earlier pairs) rank higher. A shown
    # query fewer than 3 people of the training log typed is a string made of what 3 typed
    # that happens to equal one: counted, and rare.
    dump = tmp_path / "shown.jsonl"
    assert main(["eval", "--index", str(out), "--pairs", str(pairs), "--personal-log", str(train),
                 "--dump", str(dump), "--json", "--quiet"]) == 0
    personal = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert personal["model"]["mrr"] > personal["model_no_history"]["mrr"]
    assert personal["model_no_history"]["mrr"] == result["model"]["mrr"]
    assert 0.0 <= personal["model"]["leak_rate"] < 0.05 and personal["model"]["shown"] > 0
    records = [json.loads(line) for line in dump.read_text().splitlines()]
    assert len(records) == result["n"] and set(records[0]) >= {"prefix", "next_query", "user", "shown"}
    assert any(item["personal"] for r in records for item in r["shown"]["model"])
    assert main(["eval", "--index", str(out), "--pairs", str(pairs), "--dump", str(tmp_path / "no" / "x")]) == 2
    assert "cannot write --dump" in capsys.readouterr().err


def test_complete_prints_suggestions(small_model_dir, capsys):
    assert main(["complete", "--index", str(small_model_dir), "a"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert 0 < len(lines) <= 10 and all(line.split(None, 1)[1].startswith("a") for line in lines)


def test_plain_query_list_builds(tmp_path):
    log = tmp_path / "queries.txt"
    log.write_text("Query\n" + "".join(f"query number {i % 37}\nother {i % 11}\n" for i in range(400)))
    out = tmp_path / "model"
    summary = build([log], out, SMALL_PARAMS, quiet=True)
    assert summary.labels == 48 and summary.rows_read == 800
    assert main(["complete", "--index", str(out), "query n"]) == 0


def test_malformed_rows_are_counted_and_skipped(tmp_path):
    log = tmp_path / "log.tsv"
    good = "".join(f"u{i % 5}\tquery {i % 23}\t2006-03-0{1 + i % 9} 10:00:00\n" for i in range(300))
    bad = "u1\tonly two\nu1\t!!!\t2006-03-01 10:00:00\nu2\tq\tyesterday\n"
    log.write_text("AnonID\tQuery\tQueryTime\n" + good + bad)
    summary = build([log], tmp_path / "model", SMALL_PARAMS, quiet=True)
    assert summary.rows_read == 300
    assert summary.skipped == {"too few columns": 1, "empty after normalization": 1, "bad time": 1}


@pytest.mark.parametrize("content", [None, "", "AnonID\tQuery\tQueryTime\n\tbad\n"])
def test_unusable_log_exits_2_and_leaves_the_old_model(tmp_path, small_model_dir, capsys, content):
    log = tmp_path / "log.tsv"
    if content is not None:
        log.write_text(content)
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep").write_text("old")
    assert main(["build", "--log", str(log), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err
    assert os.listdir(out) == ["keep"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model")] == []


def test_unwritable_out_exits_2(tmp_path, small_log, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["build", "--log", str(small_log), "--out", str(blocker / "model"), "--quiet"]) == 2
    assert "error" in capsys.readouterr().err


def test_bad_model_directory_exits_2(tmp_path, capsys):
    assert main(["complete", "--index", str(tmp_path), "a"]) == 2
    assert "manifest" in capsys.readouterr().err


def test_bad_pairs_exit_2(small_model_dir, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("not json\n")
    assert main(["eval", "--index", str(small_model_dir), "--pairs", str(pairs)]) == 2
    assert "no usable pair" in capsys.readouterr().err


def test_eval_typos_scores_clean_and_typo_prefixes_of_the_same_pairs(small_model_dir, small_model, tmp_path, capsys):
    keys = [k for k in small_model.labels.keys if len(k) >= 8][::25]
    pairs = tmp_path / "pairs.jsonl"
    lines = [{"prev_query": "", "prefix": k[: len(k) - 1], "next_query": k} for k in keys]
    lines.append({"prev_query": "", "prefix": "ab", "next_query": "abc"})  # too short for a typo
    pairs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    runs = []
    for _ in range(2):
        assert main(["eval", "--index", str(small_model_dir), "--pairs", str(pairs), "--typos", "--seed", "3",
                     "--json", "--quiet"]) == 0
        out = capsys.readouterr().out
        assert "clean prefix vs one typo" in out
        result = json.loads(out.strip().splitlines()[-1])
        runs.append({name: {k: v for k, v in result[name]["model"].items() if not k.endswith("_ms")}
                     for name in ("clean", "typo")})
        assert result["seed"] == 3 and result["clean"]["n"] == result["typo"]["n"] == len(keys)
        assert set(result["typo"]["groups"]) >= {"prefix 8+"}
    assert runs[0] == runs[1]
    assert runs[0]["clean"]["mrr"] > runs[0]["typo"]["mrr"] > 0


def test_complete_marks_corrected_suggestions(small_model_dir, small_model, capsys):
    meant = next(k for k in small_model.labels.keys if len(k) >= 9 and " " not in k)
    typed = meant[:2] + meant[3] + meant[2] + meant[4:]  # two letters swapped
    assert main(["complete", "--index", str(small_model_dir), typed]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.endswith("(corrected)") for line in lines), lines
    assert all(line.endswith("(corrected)") != line.split(None, 1)[1].startswith(typed) for line in lines)


def test_the_old_name_of_default_scorer_still_works() -> None:
    from qac.main import make_parser

    parser = make_parser()
    for flag in ("--default-scorer", "--no-reranker"):
        assert parser.parse_args(["build", "--log", "x", "--out", "y", flag]).default_scorer
    assert not parser.parse_args(["build", "--log", "x", "--out", "y"]).default_scorer


def test_a_reader_that_goes_away_ends_the_command_quietly(small_model_dir, monkeypatch, capsys):
    """``qac complete ... | head -0``: exit 141 as a Unix tool killed by SIGPIPE, no traceback."""
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        assert main(["complete", "--index", str(small_model_dir), "ny"]) == 141
    assert capsys.readouterr().err == ""
