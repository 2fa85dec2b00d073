import dataclasses

import numpy as np

from indexer.candidates import CandidateConfig, CandidateGenerator
from indexer.train.counts import count_people
from indexer.train.logs import LogRow
from indexer.train.sessions import sessions_of
from indexer.wordmodel import counted_index

LOG = [
    ("u1", "oregon running calendar", 0), ("u1", "salem running calendar", 60),
    ("u2", "ny times", 0), ("u2", "new york times", 60), ("u3", "ny times", 0),
    ("u3", "new york pizza", 60), ("u4", "newport beach", 0),
]


def generator(sources=None):
    rows = [LogRow(u, q, float(t)) for u, q, t in LOG]
    config = CandidateConfig() if sources is None else CandidateConfig(sources=sources)
    counts = count_people(rows, sessions_of(rows))  # one user per query: nothing filtered
    return CandidateGenerator(counted_index(counts.queries), counts.word_model(), None, config)


def test_every_candidate_starts_with_the_prefix():
    gen = generator()
    for prefix in ["n", "ne", "new y", "new ", "x", "", "salem r"]:
        cands = gen.generate(prefix, ["oregon running calendar"])
        assert all(t.startswith(prefix) for t in cands.texts), prefix
        assert cands.features.shape[0] == len(cands.texts)
        assert cands.bucket == (0 if len(prefix) < 3 else 1 if len(prefix) < 6 else 2)


def test_the_typed_prefix_is_a_candidate_of_its_own():
    assert "zzz top" in generator().generate("zzz top", []).texts


def test_word_model_completes_the_partial_last_word():
    texts = generator(("word",)).generate("brooklyn ti", []).texts
    assert "brooklyn times" in texts


def test_session_words_finish_a_reformulation():
    texts = generator(("session",)).generate("portland r", ["oregon running calendar"]).texts
    assert "portland running calendar" in texts


def test_transitions_propose_what_followed_the_previous_query():
    texts = generator(("transitions",)).generate("", ["ny times"]).texts
    assert set(texts) == {"new york times", "new york pizza"}


def test_candidates_without_history_have_no_session_or_personal_features():
    from indexer.candidates import FEATURES

    cands = generator().generate("new", [])
    assert len(cands.texts) and np.isfinite(cands.features).all()
    for name in ("src_session", "src_trans", "in_session", "trans_log", "overlap_prev", "overlap_session",
                 "src_personal", "own_log_count", "own_recency", "src_personal_word", "prefix_own"):
        assert not cands.features[:, FEATURES.index(name)].any(), name


def test_the_users_words_offer_a_bounded_number_of_candidates_newest_queries_first():
    from indexer.personal import PersonalEntry, PersonalHistory

    # After a space every word of every recent query finishes the prefix.
    queries = [f"w{i}a w{i}b w{i}c" for i in range(20)]
    personal = PersonalHistory([PersonalEntry(q, 1, float(i)) for i, q in enumerate(queries)], now=100.0)
    gen = generator(("personal",))
    texts = gen.generate("zz ", [], personal).texts
    assert len(texts) == gen.config.personal_word_k == 20
    newest = [t for t in texts if t.startswith("zz w19")]
    assert newest == ["zz w19a", "zz w19a w19b w19c", "zz w19b", "zz w19b w19c", "zz w19c"]
    assert not any(t.startswith("zz w0") for t in texts)


def test_unknown_prefix_words_count_apart_when_the_user_typed_them_before():
    from indexer.candidates import FEATURES
    from indexer.personal import PersonalEntry, PersonalHistory

    unknown, own = FEATURES.index("prefix_unknown"), FEATURES.index("prefix_own")

    def columns(prefix, history=(), personal=None):
        cols = generator().generate(prefix, list(history), personal).features[:, [unknown, own]]
        assert (cols == cols[0]).all()  # a property of the prefix: the same on every row
        return cols[0].tolist()

    # "zanzib" and "qux": no word of the log; "new" and "y" (partial of "york"): known.
    assert columns("new y") == [0, 0]
    assert columns("zanzib qux new y") == [2, 0]
    assert columns("zanzib qux new y", ["zanzib beach"]) == [1, 1]
    mine = PersonalHistory([PersonalEntry("qux pictures", 1, 0.0)], now=1.0)
    assert columns("zanzib qux new y", ["zanzib beach"], mine) == [0, 2]
    # A partial word no word of the log starts with, but one of the user's does.
    assert columns("new pictu") == [1, 0]
    assert columns("new pictu", [], mine) == [0, 1]


def _count_calls(monkeypatch, calls: dict[str, int], owner, *names: str) -> dict[str, int]:
    """Count in ``calls["n"]`` the calls to the functions ``names`` of ``owner`` (a module, or
    a class: its methods)."""
    for name in names:
        original = getattr(owner, name)

        def counted(*args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
    return calls


def _count_look_ups(monkeypatch) -> dict[str, int]:
    """Count the calls to the sorted indices' look-ups and to the typo distance."""
    import indexer.typos as typos
    from indexer.topk import PrefixTopK

    calls = _count_calls(monkeypatch, {"n": 0}, PrefixTopK, "index", "range", "children", "total")
    return _count_calls(monkeypatch, calls, typos, "prefix_distance")


def _typo_words(model, n, seed):
    from indexer.typos import add_typo

    rng = np.random.default_rng(seed)
    words = [w for w in model.words.words.keys if len(w) >= 5 and w.isalpha()]
    return [add_typo(words[int(rng.integers(len(words)))], rng) for _ in range(n)]


def _count_one_edit_look_ups(monkeypatch) -> dict[str, int]:
    """Count the one-edit look-ups of the corrections (``typos.one_edit_variants``)."""
    import indexer.typos as typos

    return _count_calls(monkeypatch, {"n": 0}, typos, "one_edit_variants")


def test_a_crafted_prefix_cannot_multiply_the_look_ups_of_its_corrections(small_model, monkeypatch):
    """Issue 27: misspelled words, however many, cost the corrections of a few (the last ones):
    a 40-word prefix of typos makes at most twice the look-ups of a 4-word one."""
    calls = _count_look_ups(monkeypatch)
    costs = []
    for n, seed in ((4, 1), (40, 2)):
        calls["n"] = 0
        small_model.complete(" ".join(_typo_words(small_model, n, seed)) + " ", [], 10)
        costs.append(calls["n"])
    assert costs[1] <= 2 * costs[0], costs


def test_a_crafted_session_offers_a_bounded_number_of_candidates(small_model, monkeypatch):
    """Issue 27: five 200-character queries of misspelled words in the session (a client writes
    its own history) give at most session_k session candidates, and the session's words that may
    correct a typed one are its newest session_words."""
    history = [" ".join(_typo_words(small_model, 40, seed))[:200] for seed in range(5)]
    cands = small_model.generator.generate("new ", history)
    from indexer.candidates import FEATURES

    session = cands.features[:, FEATURES.index("src_session")] > 0
    assert 0 < int(session.sum()) <= 40  # the default session_k
    calls = _count_look_ups(monkeypatch)
    small_model.complete(" ".join(_typo_words(small_model, 4, 7)), history, 10)
    assert calls["n"] <= 4 * 20 + 600, calls  # 20: the default session_words


def test_a_keystroke_reads_only_the_newest_session_queries_that_fit_the_budget(small_model):
    """Issue 27: ranking reads the session's newest queries up to session_chars characters (the
    newest always), so five crafted 200-character queries cost what one does; a short session
    is read whole."""
    from indexer.candidates import FEATURES

    def from_session(history):
        cands = small_model.generator.generate("zebr", history)
        col = cands.features[:, FEATURES.index("src_session")]
        return {t for t, v in zip(cands.texts, col) if v > 0}

    long = " ".join(_typo_words(small_model, 40, 3))[:200]
    assert "zebra crossing" in from_session(["zebra crossing", "weather"])
    assert "zebra crossing" not in from_session(["zebra crossing", long, long])
    assert "zebra crossing" in from_session([long, "zebra crossing"])


def test_no_candidate_is_longer_than_a_query_can_be(small_model):
    """Issue 27: a long crafted prefix after a session of long queries offers no candidate over
    MAX_QUERY_CHARS (nobody could submit it), so featurizing one stays bounded; a short prefix
    after the same session still finishes with the session's words."""
    from indexer.candidates import FEATURES
    from indexer.normalize import MAX_QUERY_CHARS

    history = [" ".join(_typo_words(small_model, 40, 5))[:200]]
    for length in (120, 180, MAX_QUERY_CHARS):
        prefix = " ".join(_typo_words(small_model, 40, length))[: length - 1].rstrip() + " "
        cands = small_model.generator.generate(prefix, history)
        assert max(map(len, cands.texts), default=0) <= MAX_QUERY_CHARS, length
    cands = small_model.generator.generate("new ", history)
    assert (cands.features[:, FEATURES.index("src_session")] > 0).any()


def test_corrections_make_a_bounded_number_of_look_ups_and_candidates(small_model, monkeypatch):
    """Issue 27: however a prefix is crafted (an unknown word between two known ones and an
    unknown partial word, each a look-up of its own kind), its corrections make at most
    typo_lookups one-edit look-ups and offer at most typo_rows candidates."""
    cfg = small_model.generator.config
    calls = _count_one_edit_look_ups(monkeypatch)
    for seed in range(5):
        junk = _typo_words(small_model, 2, seed)
        prefix = f"new {junk[0]}qz york {junk[1]}xq"
        calls["n"] = 0
        cands = small_model.generator.generate(prefix, [])
        assert 0 < calls["n"] <= cfg.typo_lookups == 4, (prefix, calls)
        assert cands.corrected is None or int(cands.corrected.sum()) <= cfg.typo_rows
    assert cfg.typo_rows == 40
    free = small_model.generator.generate("nwe yo")
    assert free.corrected is not None and int(free.corrected.sum()) > 5
    bounded = CandidateGenerator(small_model.labels, small_model.words, small_model.generator.tree,
                                 dataclasses.replace(cfg, typo_rows=5))
    capped = bounded.generate("nwe yo")
    assert capped.corrected is not None and int(capped.corrected.sum()) == 5
    first = [t for t, c in zip(free.texts, free.corrected) if c][:5]
    assert [t for t, c in zip(capped.texts, capped.corrected) if c] == first  # the sources' first


def test_a_keystroke_featurizes_at_most_max_rows_candidates(small_model, monkeypatch):
    """Issue 27: the corrections get what the exact candidates left of max_rows (their sources'
    first), and no look-up at all when the exact ones took every row."""
    cfg = small_model.generator.config
    free = small_model.generator.generate("nwe yo")
    assert free.corrected is not None
    n_exact, n_fixed = int((~free.corrected).sum()), int(free.corrected.sum())
    assert n_fixed > 3

    def generator(max_rows: int) -> CandidateGenerator:
        return CandidateGenerator(small_model.labels, small_model.words, small_model.generator.tree,
                                  dataclasses.replace(cfg, max_rows=max_rows))

    capped = generator(n_exact + 3).generate("nwe yo")
    assert capped.corrected is not None and len(capped.texts) == n_exact + 3
    assert [t for t, c in zip(capped.texts, capped.corrected) if c] == \
        [t for t, c in zip(free.texts, free.corrected) if c][:3]
    calls = _count_one_edit_look_ups(monkeypatch)
    none = generator(n_exact).generate("nwe yo")  # a new generator remembers no correction
    assert none.corrected is None and none.texts == free.texts[:n_exact] and calls["n"] == 0
    generator(n_exact + 3).generate("nwe yo")
    assert calls["n"] > 0


def test_the_session_is_normalized_only_as_far_as_ranking_reads_it(small_model, monkeypatch):
    """Issue 27: the session's queries are normalized newest first, and only those that fit the
    session_chars budget: five crafted 200-character queries cost one normalization, not five."""
    import indexer.candidates as candidates
    from indexer.normalize import normalize

    raw = small_model.generator.generate("new ", ["Weather!", "New   York."])
    normal = small_model.generator.generate("new ", ["weather", "new york"])
    assert raw.texts == normal.texts and np.array_equal(raw.features, normal.features)
    seen = []

    def counted(query):
        seen.append(query)
        return normalize(query)

    monkeypatch.setattr(candidates, "normalize", counted)
    long = [" ".join(_typo_words(small_model, 40, seed))[:200].upper() for seed in range(5)]
    small_model.complete("new ", long, 10)
    assert seen == [long[-1], long[-2]]  # the newest, and the one that did not fit


def test_no_prefix_over_typo_max_prefix_is_corrected(small_model, monkeypatch):
    """Issue 27: the same misspelled last word is corrected in a prefix of typo_max_prefix
    characters and not in a longer one (no look-up either): a long crafted prefix costs no
    corrections, whose candidates are the costliest to featurize."""
    cfg = small_model.generator.config
    assert cfg.typo_max_prefix == 64
    calls = _count_one_edit_look_ups(monkeypatch)
    tail = " nwe yo"
    for length, corrected in ((cfg.typo_max_prefix, True), (cfg.typo_max_prefix + 1, False)):
        head = ("new " * 30)[: length - len(tail)]
        prefix = (head[:-1] + "s" if head.endswith(" ") else head) + tail
        assert len(prefix) == length
        calls["n"] = 0  # a new generator remembers no correction
        generator = CandidateGenerator(small_model.labels, small_model.words, small_model.generator.tree, cfg)
        cands = generator.generate(prefix)
        assert (cands.corrected is not None) == corrected and (calls["n"] > 0) == corrected, (length, prefix)
