"""The served model: ranking on the loop or off it, atomic swaps, reloads followed across workers."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

import indexer
import server.completer as completer_module
from indexer.blocklist import Blocklist
from indexer.model import Completion, Model
from indexer.personal import PersonalEntry, PersonalHistory
from server.app import create_app
from server.completer import (
    FULL_COLLECTION_AFTER,
    Completer,
    FreshAnswers,
    announce_reload,
    load_warm,
    read_announcement,
)
from server.config import ServerConfig
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
    completer = Completer(slow, "slow", threads=2, k=10, fresh_size=0)  # type: ignore[arg-type]
    try:
        in_flight = asyncio.create_task(completer.complete("a", []))
        await asyncio.to_thread(slow.started.wait, 5)
        old, new = await completer.reload(str(other_model_dir))
        after = await completer.complete("a", [])
        slow.release.set()
        before = await in_flight
    finally:
        slow.release.set()
        completer.close()
    assert old == "slow" and new == after.version != "slow"
    assert before.version == "slow"


async def test_a_failed_reload_keeps_the_model(small_model: Model) -> None:
    completer = Completer(small_model, "small", threads=0, k=10)
    try:
        with pytest.raises(indexer.ModelError):
            await completer.reload("/no/such/model")
        assert completer.version == small_model.version and completer.index == "small"
    finally:
        completer.close()


async def test_workers_follow_a_reload_announced_by_another(
    small_model: Model, other_model_dir: Path, tmp_path: Path
) -> None:
    announcements = tmp_path / "reload"
    start = announce_reload(announcements, "small")
    one = Completer(small_model, "small", threads=0, k=10, reload_file=str(announcements), announced=start)
    two = Completer(small_model, "small", threads=0, k=10, reload_file=str(announcements), announced=start)
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


def queries(completions: Sequence[Completion]) -> list[str]:
    return [c.query for c in completions]


async def test_context_says_whether_the_history_changed_what_a_fresh_session_gets(
    small_model: Model, history_pair: tuple[str, str], neutral_pair: tuple[str, str]
) -> None:
    completer = Completer(small_model, "small", threads=0, k=10)
    try:
        unasked = await completer.complete(history_pair[1], [history_pair[0]])
        alone = await completer.complete(history_pair[1], [], PersonalHistory([], 0.0), context=True)
        changed = await completer.complete(history_pair[1], [history_pair[0]], context=True)
        same = await completer.complete(neutral_pair[1], [neutral_pair[0]], context=True)
    finally:
        completer.close()
    assert unasked.context is None and queries(unasked.items) == queries(changed.items)
    assert alone.context is False
    assert changed.context is True
    assert queries(changed.items) != queries(small_model.complete(history_pair[1]))
    assert same.context is False
    assert queries(same.items) == queries(small_model.complete(neutral_pair[1]))


async def test_context_counts_the_users_personal_history(small_model: Model) -> None:
    fresh = queries(small_model.complete("b"))
    mine = next(q for q in small_model.labels.keys if q.startswith("b") and q not in fresh)
    personal = PersonalHistory([PersonalEntry(mine, 5, 1000.0)], 1000.0)
    completer = Completer(small_model, "small", threads=0, k=10)
    try:
        ranked = await completer.complete("B", [], personal, context=True)
    finally:
        completer.close()
    assert mine in queries(ranked.items)
    assert ranked.context is True


async def test_the_fresh_answer_comes_from_the_table_by_normalized_prefix(
    small_model: Model, neutral_pair: tuple[str, str]
) -> None:
    prev, prefix = neutral_pair
    completer = Completer(small_model, "small", threads=0, k=10)
    try:
        first = await completer.complete(prefix.upper() + "!", [prev], context=True)
        ranked_ahead = completer.fresh.get(prefix)
        completer._fresh = FreshAnswers({prefix: (Completion("not what the model says", 1.0),)})
        second = await completer.complete(prefix, [prev], context=True)
    finally:
        completer.close()
    assert first.context is False and ranked_ahead is not None and queries(ranked_ahead) == queries(first.items)
    assert second.context is True  # compared with the table's answer, not ranked again


async def test_an_answer_ranked_ahead_is_given_without_a_ranking_thread(small_model: Model) -> None:
    class NoThreads(Executor):
        def submit(self, *args: Any, **kwargs: Any) -> Future[Any]:
            raise AssertionError("sent to a ranking thread")

    completer = Completer(small_model, "small", threads=1, k=10)
    assert completer.fresh.get("we") is not None and completer.fresh.get("wezq") is None
    try:
        first = await completer.complete("we", [])
        completer._pool, pool = NoThreads(), completer._pool
        again = await completer.complete("We", [], context=True)
        with pytest.raises(AssertionError, match="ranking thread"):
            await completer.complete("we", ["weather"])  # a history is ranked
        with pytest.raises(AssertionError, match="ranking thread"):
            await completer.complete("wezq", [])  # not ranked ahead
    finally:
        completer._pool = pool
        completer.close()
    assert again.items == first.items == small_model.complete("we") and again.context is False


async def test_by_default_keystrokes_are_ranked_on_the_event_loops_thread(
    small_model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranked_on: list[int] = []
    for name in ("rank_keystroke", "_fresh"):
        real = getattr(completer_module, name)

        def spy(*args: Any, real: Any = real) -> Any:
            ranked_on.append(threading.get_ident())
            return real(*args)

        monkeypatch.setattr(completer_module, name, spy)
    completer = Completer(small_model, "small", threads=ServerConfig().rank_threads, k=10)
    try:
        answers = [await completer.complete("wezq", []), await completer.complete("we", ["weather"])]
    finally:
        completer.close()
    assert ranked_on == [threading.get_ident()] * 2
    assert [a.items for a in answers] == [small_model.complete("wezq"), small_model.complete("we", ["weather"])]


async def test_a_keystroke_without_history_is_answered_from_the_table(small_model: Model) -> None:
    completer = Completer(small_model, "small", threads=0, k=10)
    try:
        first = await completer.complete("We", [], context=True)
        assert first.items == small_model.complete("we") and completer.fresh.get("we") == tuple(first.items)
        completer._fresh = FreshAnswers({"we": (Completion("what the table holds", 1.0),)})
        again = await completer.complete("we", [], PersonalHistory([], 0.0))
        with_history = await completer.complete("we", ["weather"])
    finally:
        completer.close()
    assert queries(again.items) == ["what the table holds"] and again.context is None
    assert "what the table holds" not in queries(with_history.items)  # a history is ranked


def test_fresh_answers_are_those_of_the_most_typed_prefixes(small_model: Model) -> None:
    fresh = FreshAnswers.ranked(small_model, None, 10, 50)
    prefixes = small_model.labels.heaviest_prefixes(50)
    assert len(fresh) == 50 and len(prefixes) == 50 and {"a", "w"} <= set(prefixes)
    assert all(fresh.get(p) == tuple(small_model.complete(p)) for p in prefixes)
    assert fresh.get(small_model.labels.heaviest_prefixes(51)[-1]) is None


async def test_no_traffic_changes_which_answers_are_ranked_ahead(small_model: Model) -> None:
    # Were a stranger's keystrokes to fill the table, how fast a probe is answered would tell
    # what others typed (docs/METHOD.md, "Privacy").
    completer = Completer(small_model, "small", threads=0, k=10, fresh_size=20)
    fresh = completer.fresh
    ahead = {p: fresh.get(p) for p in small_model.labels.heaviest_prefixes(40)}
    try:
        for prefix in [*ahead, "wezq", "zanzibar f", "new yo"]:
            for history in ([], ["weather"]):
                await completer.complete(prefix, history, context=True)
    finally:
        completer.close()
    assert completer.fresh is fresh and len(fresh) == 20
    assert {p: fresh.get(p) for p in ahead} == ahead and fresh.get("wezq") is None


async def test_fresh_answers_are_ranked_again_for_a_new_model_or_blocklist(
    small_model: Model, other_model_dir: Path
) -> None:
    completer = Completer(small_model, "small", threads=0, k=10, fresh_size=30)
    try:
        kept = completer.fresh
        await completer.reload(str(other_model_dir))
        reloaded = completer.fresh
        assert reloaded is not kept and len(reloaded) == 30
        assert reloaded.get("a") == tuple(completer.model.complete("a"))
        completer.set_extra_blocklist(Blocklist(["weather"]))
        assert len(completer.fresh) == 0  # ranked in a thread meanwhile; every keystroke is ranked
        assert not any("weather" in c.query for c in (await completer.complete("w", [])).items)
        assert completer._filling is not None
        await completer._filling
        assert len(completer.fresh) == 30 and completer.fresh.get("w") == tuple(
            completer.model.complete("w", blocklist=completer.blocklist))
        assert not any("weather" in c.query for c in completer.fresh.get("w") or ())
    finally:
        completer.close()


def test_a_loaded_model_is_frozen_out_of_the_cyclic_collector(small_model_dir: Path) -> None:
    gc.unfreeze()
    threshold = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's default (another test's server may have changed it)
    try:
        model = load_warm(small_model_dir)
        keys = model.labels.keys
        assert gc.get_freeze_count() > 0 and gc.is_tracked(keys)
        assert not any(obj is keys for obj in gc.get_objects())  # the collector no longer walks it
        assert gc.get_threshold() == (700, 10, FULL_COLLECTION_AFTER)  # and full collections rarer
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_the_files_given_at_start_rank_the_fresh_answers_once(small_model: Model) -> None:
    files = Blocklist(["weather"])
    completer = Completer(small_model, "small", threads=0, k=10, fresh_size=30, extra=files)
    try:
        fresh = completer.fresh
        assert len(fresh) == 30 and fresh.get("w") == tuple(small_model.complete("w", blocklist=completer.blocklist))
        assert not any("weather" in c.query for c in fresh.get("w") or ())
        completer.set_extra_blocklist(Blocklist(["weather"]))  # the same files: nothing to rank again
        assert completer.fresh is fresh and completer._filling is None
    finally:
        completer.close()


def test_fresh_answers_ranked_ahead_are_taken_once_by_a_ranker_of_the_same_model(small_model: Model) -> None:
    """What the supervisor ranks before forking is what the worker's completer serves (shared
    pages), only for the same model, lists, k and size, and only once (a reload ranks anew)."""
    completer_module.rank_ahead(small_model, Blocklist(), 10, 64)
    ahead = completer_module._ranked_ahead
    assert ahead is not None
    completer = Completer(small_model, "small", threads=0, k=10, fresh_size=64)
    assert completer.fresh is ahead[4] and completer_module._ranked_ahead is None
    again = Completer(small_model, "small", threads=0, k=10, fresh_size=64)
    assert again.fresh is not ahead[4] and len(again.fresh) == len(ahead[4])
    for k, size, extra in ((5, 64, Blocklist()), (10, 32, Blocklist()), (10, 64, Blocklist(["zzz"]))):
        completer_module.rank_ahead(small_model, Blocklist(), 10, 64)
        ahead = completer_module._ranked_ahead
        assert ahead is not None
        assert Completer(small_model, "small", threads=0, k=k, fresh_size=size, extra=extra).fresh is not ahead[4]


def _reachable(root: object) -> list[object]:
    """Every object ``root`` holds, directly or not (strings, arrays and all)."""
    seen, stack, found = {id(root)}, [root], []
    while stack:
        obj = stack.pop()
        found.append(obj)
        for child in gc.get_referents(obj):
            if id(child) not in seen and not isinstance(child, type):
                seen.add(id(child))
                stack.append(child)
    return found


def test_fresh_answers_hold_no_completion_a_reader_would_write_to(small_model: Model) -> None:
    """A forked worker that read shared Completions would write their reference counts, and so
    copy their pages: the answers are kept packed, and each read makes its own."""
    fresh = FreshAnswers.ranked(small_model, None, 10, 50)
    assert len(fresh) == 50
    assert not any(isinstance(obj, Completion) for obj in _reachable(fresh))
    prefix = small_model.labels.heaviest_prefixes(1)[0]
    first, again = fresh.get(prefix), fresh.get(prefix)
    assert first == again == tuple(small_model.complete(prefix)) and first is not None and again is not None
    assert all(a is not b for a, b in zip(first, again))
    assert fresh.queries(prefix) == [c.query for c in first] and fresh.queries("qzx") is None
    flags = FreshAnswers({"x": (Completion("x y", 2.5, True, False), Completion("xz", -1.0, False, True))})
    assert flags.get("x") == (Completion("x y", 2.5, True, False), Completion("xz", -1.0, False, True))
    assert FreshAnswers().get("x") is None and len(FreshAnswers()) == 0


def _memories(model: Model) -> dict[str, int]:
    """How many answers each of the model's memories holds."""
    indexes = {"labels": model.labels, "words": model.words.words, "bigrams": model.words.bigrams,
               "transitions": model.words.transitions}
    sizes = {f"{name}.{memo}": len(getattr(index, memo)) for name, index in indexes.items()
             for memo in ("_memo", "_count_memo", "_children", "_tops", "_ranges")}
    sizes |= {"completions": len(model.words._completions), "followers": len(model.words._followers)}
    return sizes


def test_ranking_ahead_leaves_the_supervisors_model_as_it_was(small_model_dir: Path) -> None:
    """Ranked in a child process: the memories ranking fills are not left in the supervisor,
    whose pages every worker would copy when it reads or grows them."""
    model = indexer.load(small_model_dir)
    model.complete("a", ("a",))
    before = _memories(model)
    completer_module.rank_ahead(model, Blocklist(), 10, 64)
    try:
        assert _memories(model) == before
        ahead = completer_module._ranked_ahead
        assert ahead is not None and len(ahead[4]) == 64
        for prefix in model.labels.heaviest_prefixes(64):
            assert ahead[4].get(prefix) == tuple(model.complete(prefix))
    finally:
        completer_module._ranked_ahead = None
