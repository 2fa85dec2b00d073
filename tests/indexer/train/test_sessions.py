from indexer.train.examples import protocol_pairs, training_examples
from indexer.train.logs import LogRow
from indexer.train.sessions import sessions_of

MIN = 60.0


def rows(*items):
    return [LogRow(user, query, t * MIN) for user, query, t in items]


def queries(sessions):
    return [[r.query for r in s] for s in sessions]


def test_gap_of_more_than_30_minutes_starts_a_session():
    got = sessions_of(rows(("u", "a", 0), ("u", "b", 30), ("u", "c", 61)))
    assert queries(got) == [["a", "b"], ["c"]]


def test_users_never_share_a_session_and_keep_file_order():
    got = sessions_of(rows(("u2", "x", 5), ("u1", "a", 0), ("u2", "y", 6), ("u1", "b", 1)))
    assert queries(got) == [["x", "y"], ["a", "b"]]


def test_consecutive_duplicates_collapse():
    got = sessions_of(rows(("u", "a", 0), ("u", "a", 1), ("u", "b", 2), ("u", "a", 3)))
    assert queries(got) == [["a", "b", "a"]]


def test_gap_is_measured_between_raw_rows():
    # "a" repeated every 20 minutes keeps the session alive even though it collapses.
    got = sessions_of(rows(("u", "a", 0), ("u", "a", 20), ("u", "a", 40), ("u", "b", 55)))
    assert queries(got) == [["a", "b"]]


def test_rows_out_of_time_order_are_sorted():
    got = sessions_of(rows(("u", "b", 10), ("u", "a", 0)))
    assert queries(got) == [["a", "b"]]


def test_plain_queries_are_sessions_of_one():
    got = sessions_of([LogRow(None, "a", None), LogRow(None, "b", None)])
    assert queries(got) == [["a"], ["b"]]


def test_protocol_pairs_follow_the_published_sampling():
    sessions = sessions_of(rows(("u", "ab", 0), ("u", "cde", 1), ("u", "fg", 2)))
    pairs = protocol_pairs(sessions, seed=0)
    assert [(p.prev, p.target) for p in pairs] == [("ab", "cde"), ("cde", "fg")]
    for p in pairs:
        assert 1 <= len(p.prefix) <= len(p.target) and p.target.startswith(p.prefix)
    assert pairs[1].session == ("ab", "cde")


def test_training_examples_include_first_queries_without_context():
    sessions = sessions_of(rows(("u", "abc", 0), ("u", "def", 1)))
    examples = training_examples(sessions, prefixes_per_query=2)
    assert len(examples) == 4
    assert {e.prev for e in examples if e.target == "abc"} == {""}
    assert {e.prev for e in examples if e.target == "def"} == {"abc"}
    assert len({e.prefix for e in examples if e.target == "abc"}) == 2
