"""``qac replay``: against the real server on a small model, and against hand-written fake servers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from indexer.evaluate import evaluate, read_pairs
from indexer.model import Model
from indexer.train.examples import protocol_pairs
from indexer.train.logs import read_logs
from indexer.train.sessions import sessions_of
from qac.main import main
from replay.replay import (
    REQUIRED_KEYS,
    ReplayError,
    ReplayOptions,
    keystrokes_saved,
    replay,
    run_replay,
)
from replay.scripts import Typed, keystrokes_of, scripts_from_log, scripts_from_pairs, typed_keystrokes
from server.app import create_app
from server.config import ServerConfig
from tests.replay.fake_server import fake_server, starts_with
from tests.support import running


@pytest.fixture(scope="module")
def server_url(small_model_dir: Path) -> Iterator[str]:
    config = ServerConfig(index=str(small_model_dir))
    with running(create_app(config), config) as address:
        yield f"ws://{address}/ws"


def write_pairs(path: Path, pairs: Sequence[tuple[str, str, str]]) -> Path:
    path.write_text("".join(json.dumps({"prev_query": p, "prefix": x, "next_query": n}) + "\n" for p, x, n in pairs))
    return path


@pytest.fixture(scope="module")
def protocol(small_log: Path, history_pair: tuple[str, str], small_model: Model) -> list[tuple[str, str, str]]:
    """Pairs drawn as the published protocol draws them, a pair whose ranking depends on the
    previous query, and first queries of sessions (no previous query)."""
    sessions = sessions_of(read_logs([small_log])[0])
    pairs = [(e.prev, e.prefix, e.target) for e in protocol_pairs(sessions)[:60]]
    prev, prefix = history_pair
    pairs.append((prev, prefix, small_model.complete(prefix, [prev])[0].query))
    firsts = [s[0].query for s in sessions[:25]]
    pairs += [("", q[: 1 + i % len(q)], q) for i, q in enumerate(firsts)]
    return pairs


@pytest.mark.parametrize("with_prev", [True, False], ids=["after a previous query", "without one"])
def test_replaying_pairs_reproduces_the_mrr_of_qac_eval(
    server_url: str, small_model: Model, protocol: list[tuple[str, str, str]], tmp_path: Path, with_prev: bool
) -> None:
    path = write_pairs(tmp_path / "pairs.jsonl", [p for p in protocol if bool(p[0]) == with_prev])
    report = run_replay(server_url, scripts_from_pairs(path), ReplayOptions(concurrency=4))
    offline = evaluate(small_model, read_pairs(path))["model"]
    assert report["errors"] == 0
    assert report["sampled"]["n"] == len(read_pairs(path))
    assert report["sampled_mrr"] == offline["mrr"] > 0
    assert {k: report["sampled"][k] for k in ("success@1", "success@10", "bleu")} == {
        k: offline[k] for k in ("success@1", "success@10", "bleu")}


def test_the_previous_query_is_submitted_before_typing(
    server_url: str, small_model: Model, history_pair: tuple[str, str], tmp_path: Path
) -> None:
    prev, prefix = history_pair
    target = small_model.complete(prefix, [prev])[0].query
    assert small_model.complete(prefix)[0].query != target
    path = write_pairs(tmp_path / "pairs.jsonl", [(prev, prefix, target)])
    report = run_replay(server_url, scripts_from_pairs(path))
    assert report["sampled_mrr"] == 1.0


def test_a_logged_session_saves_the_keystrokes_the_model_says_it_should(
    server_url: str, small_model: Model, tmp_path: Path
) -> None:
    queries = [c.query for c in small_model.most_popular("m", 3)]
    log = tmp_path / "log.tsv"
    log.write_text("AnonID\tQuery\tQueryTime\n" + "".join(
        f"7\t{q}\t2006-03-01 10:0{i}:00\n" for i, q in enumerate(queries)))
    expected_saved = 0
    for i, target in enumerate(queries[1:], 1):
        shown = [(p, [c.query for c in small_model.complete(p, queries[:i])]) for p in keystrokes_of(target)]
        expected_saved += keystrokes_saved(target, shown)
    report = run_replay(server_url, scripts_from_log([log]))
    typed = sum(map(len, queries[1:]))
    assert report["sessions_completed"] == 1 and report["keystrokes"] == typed
    assert report["chars_saved"] == expected_saved > 0
    assert report["keystrokes_saved"] == round(expected_saved / typed, 4)


def test_replay_cli_ends_with_one_json_report(
    server_url: str, protocol: list[tuple[str, str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_pairs(tmp_path / "pairs.jsonl", protocol[:10])
    code = main(["replay", "--url", server_url, "--pairs", str(path), "--sessions", "5", "--concurrency", "2",
                 "--rate", "500", "--json", "--quiet"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert set(REQUIRED_KEYS) <= set(report)
    assert report["sessions"] == 5 and report["errors"] == 0


DEV_LOG = Path(__file__).parents[1] / "qac" / "data" / "dev-5-users.tsv"  # AnonID, Query, QueryTime, ClickURLs


def _epoch(local: str) -> str:
    return str(int(datetime.fromisoformat(local).timestamp()))


# The same rows of DEV_LOG in other layouts, and the flags that say where their fields are.
LAYOUTS: dict[str, tuple[str, Callable[[list[list[str]]], str], list[str]]] = {
    "reordered header": ("log.tsv", lambda rows: "QueryTime\tq\tClickURL\tuser_id\n" + "".join(
        f"{t}\t{q}\t{c}\t{u}\n" for u, q, t, c in rows), []),
    "csv by --columns, epoch times": ("log.csv", lambda rows: "".join(
        f"{_epoch(t)},{u},\"{q}\"\n" for u, q, t, _ in rows), ["--columns", "time=1,user=2,query=3"]),
    "json lines by --columns names, iso times": ("log.jsonl", lambda rows: "".join(json.dumps(
        {"who": u, "text": q, "when": datetime.fromisoformat(t).astimezone(UTC).isoformat()}) + "\n"
        for u, q, t, _ in rows), ["--columns", "user=who,query=text,time=when"]),
}


@pytest.fixture(scope="module")
def unlimited_url(small_model_dir: Path) -> Iterator[str]:
    """A server whose rate limits a full-speed replay from one address never reaches."""
    many = 10**9
    config = ServerConfig(index=str(small_model_dir), rate=many, burst=many, address_rate=many, address_burst=many,
                          submit_rate=many, submit_burst=many, address_submit_rate=many, address_submit_burst=many,
                          address_cpu_rate=many, address_cpu_burst=many)
    with running(create_app(config), config) as address:
        yield f"ws://{address}/ws"


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_replay_cli_reads_a_log_as_qac_build_does(
    unlimited_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str
) -> None:
    def replayed(log: Path, flags: list[str]) -> dict[str, object]:
        assert main(["replay", "--url", unlimited_url, "--log", str(log), *flags, "--json", "--quiet"]) == 0
        report: dict[str, object] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        return {k: report[k] for k in ("sessions", "keystrokes", "chars_saved", "mrr", "sampled", "errors")}

    name, write, flags = LAYOUTS[layout]
    log = tmp_path / name
    log.write_text(write([line.split("\t") for line in DEV_LOG.read_text().splitlines()[1:]]))
    expected = replayed(DEV_LOG, [])
    assert (expected["sessions"], expected["errors"]) == (25, 0)
    assert replayed(log, flags) == expected


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/ws", "ws://127.0.0.1:1/ws"], ids=["not ws", "nobody there"])
def test_replay_cli_reports_an_unusable_url_and_exits_2(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_pairs(tmp_path / "pairs.jsonl", [("", "a", "ab")])
    assert main(["replay", "--url", url, "--pairs", str(path), "--quiet"]) == 2
    assert "qac replay: error:" in capsys.readouterr().err


def test_each_keystroke_comes_with_what_its_session_submitted_before() -> None:
    first = (Typed("ab", keystrokes_of("ab")), Typed("seen"), Typed("c", ("c",)))
    second = (Typed("d", ("d",)),)
    assert list(typed_keystrokes([first, second])) == [
        ("a", ()), ("ab", ()), ("c", ("ab", "seen")), ("d", ())]


def test_keystrokes_saved_counts_from_the_first_prefix_showing_the_target_in_the_top_ten() -> None:
    ten_others = [f"new {i}" for i in range(10)]
    shown = [("n", ["nba"]), ("ne", [*ten_others, "new york"]), ("new", ["news", "new york"]), ("new ", ["new york"])]
    assert keystrokes_saved("new york", shown) == len("new york") - len("new")
    assert keystrokes_saved("new york", shown[:2]) == 0
    assert keystrokes_saved("new york", [("new york", ["new york"])]) == 0


def test_a_log_becomes_sessions_of_two_or_more_queries_whose_first_is_only_submitted(tmp_path: Path) -> None:
    log = tmp_path / "log.tsv"
    log.write_text("AnonID\tQuery\tQueryTime\n"
                   "1\tWeather\t2006-03-01 10:00:00\n1\tnew york\t2006-03-01 10:05:00\n"
                   "1\tnew york\t2006-03-01 10:06:00\n1\tny times\t2006-03-01 10:07:00\n"
                   "1\tlater alone\t2006-03-01 14:00:00\n2\tsolo\t2006-03-01 10:00:00\n")
    [script] = scripts_from_log([log])
    assert [s.target for s in script] == ["weather", "new york", "ny times"]
    assert script[0].keystrokes == ()
    assert script[1].keystrokes == keystrokes_of("new york") and script[2].keystrokes[-1] == "ny times"
    assert all(s.sampled is not None and 0 <= s.sampled < len(s.keystrokes) for s in script[1:])


@pytest.mark.anyio
async def test_keystrokes_saved_of_a_hand_made_session() -> None:
    # "new york times": 12 other completions hide it until "new y" (5 of 14 typed, 9 saved);
    # "new york weather": second from "new y" on (11 of 16 saved).
    script = (Typed("weather"), Typed("new york times", keystrokes_of("new york times")),
              Typed("new york weather", keystrokes_of("new york weather")))
    async with fake_server(starts_with) as (url, received):
        report = await replay(url, [script])
    assert report["chars_typed"] == 30 and report["chars_saved"] == 9 + 11
    assert report["keystrokes_saved"] == round(20 / 30, 4)
    assert received[0] == {"type": "submit", "query": "weather"}
    assert [m["query"] for m in received if m["type"] == "submit"] == ["weather", "new york times", "new york weather"]
    ids = [m["id"] for m in received if m["type"] == "query"]
    assert ids == sorted(set(ids)) and len(ids) == 30


@pytest.mark.anyio
@pytest.mark.parametrize("abort", [False, True], ids=["closed", "aborted"])
async def test_connections_closed_mid_session_are_counted_not_raised(abort: bool) -> None:
    scripts = [(Typed("new york times", keystrokes_of("new york times")),)] * 4
    async with fake_server(starts_with, answers_per_connection=3, abort=abort) as (url, received):
        report = await replay(url, scripts, ReplayOptions(concurrency=2, timeout=5))
    assert report["sessions"] == 4 and report["sessions_completed"] == 0
    # Each connection drops after 3 answers; it is opened again once, the session resumed with
    # a resume frame (never in the URL), and the second drop counts.
    assert report["reconnects"] == 4
    assert [m for m in received if m["type"] == "resume"] == [{"type": "resume", "session": "s" * 22}] * 4
    assert report["dropped"] == 4 and report["errors"] == 4
    assert report["keystrokes"] == 4 * 6
    assert report["p50_ms"] is not None


@pytest.mark.anyio
async def test_error_frames_are_counted_by_code_and_rate_limits_retried() -> None:
    def failing(prefix: str, history: list[str]) -> list[str]:
        return ["<error>"] if prefix == "new y" else starts_with(prefix, history)

    script = (Typed("new york times", keystrokes_of("new york times")),)
    async with fake_server(failing, refuse_every=3) as (url, _):
        report = await replay(url, [script, script])
    assert report["errors_by_kind"] == {"internal": 2} and report["errors"] == 2
    assert report["rate_limited_retries"] > 0
    assert report["keystrokes"] == 2 * (14 - 1) and report["sessions_completed"] == 2


@pytest.mark.anyio
async def test_a_rate_limited_user_frame_is_retried_not_counted_as_an_error() -> None:
    script = (Typed("weather"), Typed("new york times", keystrokes_of("new york times")))
    async with fake_server(starts_with, refuse_users=2) as (url, received):
        report = await replay(url, [script], users=["u1"], sign=lambda user: f"token of {user}")
    assert (report["errors"], report["rate_limited_retries"], report["sessions_completed"]) == (0, 2, 1)
    assert [m["type"] for m in received][:4] == ["user", "user", "user", "submit"]


@pytest.mark.anyio
async def test_replay_stops_at_the_duration_limit() -> None:
    scripts = [(Typed("new york times", keystrokes_of("new york times")),)] * 50
    async with fake_server(starts_with) as (url, _):
        report = await replay(url, scripts, ReplayOptions(concurrency=1, rate=100, duration=0.3))
    assert report["stopped_early"]
    assert 10 <= report["keystrokes"] <= 40


def test_options_out_of_range_are_refused() -> None:
    with pytest.raises(ReplayError, match="concurrency"):
        ReplayOptions(concurrency=0)
    with pytest.raises(ReplayError, match="rate"):
        ReplayOptions(rate=0)
