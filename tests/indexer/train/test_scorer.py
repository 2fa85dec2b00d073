from indexer.params import BuildParams
from indexer.train.build import reranker_examples, split_for_reranker
from indexer.train.logs import LogRow
from indexer.train.sessions import sessions_of

DAY = 86400.0


def test_reranker_trains_only_on_weeks_after_those_its_features_were_fitted_on():
    rows = [LogRow(f"u{d % 3}", f"query {d}", d * DAY) for d in range(60)]
    early, late = split_for_reranker(rows, BuildParams(rerank_days=14))
    assert early and late
    assert max(r.time for r in early) < min(r.time for r in late)
    assert min(r.time for r in late) >= max(r.time for r in rows) - 14 * DAY
    assert len(early) + len(late) == len(rows)


def test_plain_query_lists_split_at_random_without_overlap():
    rows = [LogRow(None, f"q{i}", None) for i in range(1000)]
    early, late = split_for_reranker(rows, BuildParams(rerank_holdout=0.1))
    assert 50 < len(late) < 150
    assert not {r.query for r in early} & {r.query for r in late}


def test_reranker_examples_come_from_session_pairs():
    rows = [LogRow("u", "a", 0.0), LogRow("u", "bb", 60.0)]
    examples = reranker_examples(sessions_of(rows), BuildParams(rerank_prefixes=3))
    assert len(examples) == 3 and all(e.prev == "a" and e.target == "bb" for e in examples)


def test_reranker_examples_are_capped():
    rows = [LogRow(None, f"query {i}", None) for i in range(500)]
    examples = reranker_examples(sessions_of(rows), BuildParams(rerank_prefixes=2, rerank_max_examples=300))
    assert len(examples) == 300 and len(set(examples)) == 300
