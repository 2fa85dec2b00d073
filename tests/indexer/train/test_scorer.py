import numpy as np

from indexer.params import BuildParams
from indexer.personal import replay_histories, user_events
from indexer.train.build import scorer_examples, split_for_scorer, typo_examples
from indexer.train.examples import Example
from indexer.train.executors import LocalExecutor
from indexer.train.logs import LogRow, LogStats, read_logs
from indexer.train.scorer import collect_training_rows
from indexer.train.scorer_tasks import collect_in_tasks, shared_histories
from indexer.train.sessions import sessions_of

DAY = 86400.0


def test_scorer_trains_only_on_weeks_after_those_its_features_were_fitted_on():
    rows = [LogRow(f"u{d % 3}", f"query {d}", d * DAY) for d in range(60)]
    early, late = split_for_scorer(rows, BuildParams(scorer_days=14))
    assert early and late
    assert max(r.time for r in early) < min(r.time for r in late)
    assert min(r.time for r in late) >= max(r.time for r in rows) - 14 * DAY
    assert len(early) + len(late) == len(rows)


def test_plain_query_lists_split_at_random_without_overlap():
    rows = [LogRow(None, f"q{i}", None) for i in range(1000)]
    early, late = split_for_scorer(rows, BuildParams(scorer_holdout=0.1))
    assert 50 < len(late) < 150
    assert not {r.query for r in early} & {r.query for r in late}


def test_scorer_examples_come_from_session_pairs():
    rows = [LogRow("u", "a", 0.0), LogRow("u", "bb", 60.0)]
    examples = scorer_examples(sessions_of(rows), BuildParams(scorer_prefixes=3))
    assert len(examples) == 3 and all(e.prev == "a" and e.target == "bb" for e in examples)


def test_scorer_examples_are_capped():
    rows = [LogRow(None, f"query {i}", None) for i in range(500)]
    examples = scorer_examples(sessions_of(rows), BuildParams(scorer_prefixes=2, scorer_max_examples=300))
    assert len(examples) == 300 and len(set(examples)) == 300


def test_keystrokes_run_as_tasks_give_the_rows_of_one_pass_in_their_order(small_model, small_log):
    rows, _ = read_logs([small_log], LogStats())
    examples = scorer_examples(sessions_of(rows), BuildParams(scorer_prefixes=2))[:600]
    examples += typo_examples(examples, 0.3)
    events = user_events((r.user, r.time, r.query) for r in rows)
    one_pass = collect_training_rows(
        examples, replay_histories(events, [(e.user, e.time) for e in examples]), small_model.candidates
    )
    assert one_pass[1].sum() > 50 and len(set(e.user for e in examples)) > 3
    for executor in (LocalExecutor(1), LocalExecutor(2)):
        tasks = collect_in_tasks(examples, small_model, events, executor, task_keystrokes=70)
        for a, b in zip(one_pass, tasks):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    without = collect_training_rows(examples, [None] * len(examples), small_model.candidates)
    for a, b in zip(without, collect_in_tasks(examples, small_model, None, LocalExecutor(2), task_keystrokes=70)):
        assert np.array_equal(a, b)


def test_one_history_object_serves_every_keystroke_of_a_user_at_one_moment():
    events = {"u": [(0.0, "a"), (10.0, "b")]}
    examples = [Example(("a",), p, "b", "u", 10.0) for p in ("b", "b", "c")] + [Example((), "a", "a", "u", 5.0)]
    histories = shared_histories(events, examples)
    assert histories[0] is histories[1] is histories[2] and histories[3] is not histories[0]
    assert histories[0].keys == ["a"] and histories[3].keys == ["a"]
