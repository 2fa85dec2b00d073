"""Each ranking feature's value on a hand-made model: one row per feature (the keystroke, a
candidate, the value worked out by hand from the counts below)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from indexer.candidates import FEATURES, CandidateGenerator
from indexer.personal import PersonalEntry, PersonalHistory
from indexer.wordmodel import WordModel, counted_index

DAY = 86400.0
LABELS = counted_index(Counter({"new york": 6, "new york times": 3, "news": 2, "weather": 4}))
WORDS = WordModel.from_counts(
    Counter({"new": 9, "york": 9, "times": 3, "news": 2, "weather": 4, "yoga": 1}),
    Counter({"new york": 9, "new yoga": 1, "york times": 3}),
    Counter({"weather\tnew york": 2}),
)
# The user asked "new yoga class" three times, a week before the keystroke.
YOGA = PersonalHistory([PersonalEntry("new yoga class", 3, 0.0)], now=7 * DAY)
QUX = PersonalHistory([PersonalEntry("qux pictures", 1, 0.0)], now=1.0)


def _tree(labels, ranked):
    """A label tree that ranks ``ranked`` (label, score) first, whatever is typed."""
    ids = np.array([labels.index(q) for q, _ in ranked])
    scores = np.array([s for _, s in ranked])
    return lambda prefix, prev, label_range: (ids, scores)


NEWS = CandidateGenerator(LABELS, WORDS, _tree(LABELS, [("new york times", 0.5), ("new york", 0.25)]))
ZEBRA_LABELS = counted_index(Counter({"zebra crossing": 5}))
ZEBRA = CandidateGenerator(ZEBRA_LABELS, WORDS, _tree(ZEBRA_LABELS, [("zebra crossing", 0.75)]))

# (feature, generator, prefix, session (oldest first), personal history, candidate, value)
ROWS = [
    ("bias", NEWS, "new yo", [], None, "new yoga", 1.0),
    ("log_count", NEWS, "new yo", [], None, "new york", math.log1p(6)),
    ("log_count", NEWS, "new yo", [], None, "new yoga", 0.0),  # not a label
    ("is_label", NEWS, "new yo", [], None, "new york times", 1.0),
    ("is_label", NEWS, "new yo", [], None, "new yoga", 0.0),
    ("mpc_rr", NEWS, "new yo", [], None, "new york times", 1 / 2),  # second by count under the prefix
    ("tree_score", NEWS, "new yo", [], None, "new york", 0.25),
    ("tree_rr", NEWS, "new yo", [], None, "new york", 1 / 2),
    ("src_prefix", NEWS, "new yo", [], None, "new yo", 1.0),
    ("src_prefix", NEWS, "new yo", [], None, "new york", 0.0),
    ("src_word", NEWS, "new yo", [], None, "new yoga", 1.0),  # "yo" completed to a word
    ("src_cont", NEWS, "new yo", [], None, "new york times", 1.0),  # "york" then its follower "times"
    ("src_cont", NEWS, "new yo", [], None, "new york", 0.0),
    ("src_session", NEWS, "new yo", ["york weather"], None, "new york weather", 1.0),  # the tail of a session query
    ("src_trans", NEWS, "new yo", ["weather"], None, "new york", 1.0),
    ("trans_log", NEWS, "new yo", ["weather"], None, "new york", math.log1p(2)),
    ("trans_log", NEWS, "new yo", ["news"], None, "new york", 0.0),
    ("in_session", NEWS, "new yo", ["new york times", "weather"], None, "new york times", 1.0),
    ("in_session", NEWS, "new yo", ["new york times", "weather"], None, "new york", 0.0),
    ("word_logp", NEWS, "new yo", [], None, "new york", math.log(9 / 10)),  # of the 10 "yo..." words
    ("word_logp", NEWS, "new yo", [], None, "new yo", -20.0),  # not a word: the floor
    ("bigram_logp", NEWS, "new yo", [], None, "new yoga", math.log(1 / 10)),  # of the 10 "new yo..." bigrams
    ("coverage", NEWS, "new yo", [], None, "new york times", 6 / 14),
    ("extra_words", NEWS, "new yo", [], None, "new york times", 1.0),
    ("extra_words", NEWS, "new yo", [], None, "new york", 0.0),
    ("overlap_prev", NEWS, "new yo", ["york weather"], None, "new york weather", 2 / 3),
    ("overlap_prev", NEWS, "new yo", ["york weather"], None, "new york times", 1 / 3),
    ("overlap_session", NEWS, "new yo", ["new york times", "york weather"], None, "new yo", 1 / 2),
    ("changes_partial", NEWS, "new yo", [], None, "new york", 1.0),
    ("changes_partial", NEWS, "new yo", [], None, "new yo", 0.0),
    ("src_personal", NEWS, "new yo", [], YOGA, "new yoga class", 1.0),
    ("own_log_count", NEWS, "new yo", [], YOGA, "new yoga class", math.log1p(3)),
    ("own_recency", NEWS, "new yo", [], YOGA, "new yoga class", 1 / (1 + 7 / 7)),  # a week ago
    ("src_personal_word", NEWS, "new yo", [], YOGA, "new yoga", 1.0),  # the user's word finishes "yo"
    # "yokr" starts no word: corrected to "yor" (a letter dropped), which "york" starts.
    ("edit_dist", NEWS, "new yokr", [], None, "new york", 1.0),
    ("edit_dist", NEWS, "new yokr", [], None, "new yokr", 0.0),
    ("src_fix", NEWS, "new yokr", [], None, "new york times", 1.0),
    ("coverage", NEWS, "new yokr", [], None, "new york", 7 / 8),  # against the corrected "new yor"
    ("prefix_unknown", NEWS, "new yokr", [], None, "new yokr", 1.0),
    ("prefix_unknown", NEWS, "new yokr", [], None, "new york", 0.0),  # "new yor" has no unknown word
    # No word starts with "zeb": the tree offers a label within one edit (a swap) instead.
    ("src_typo_tree", ZEBRA, "zebar", [], None, "zebra crossing", 1.0),
    ("edit_dist", ZEBRA, "zebar", [], None, "zebra crossing", 1.0),
    ("tree_score", ZEBRA, "zebar", [], None, "zebra crossing", 0.75),
    ("prefix_unknown", ZEBRA, "zebar", [], None, "zebra crossing", 1.0),
    # "qux" is in no one's vocabulary but this session's; "zz" in no one's at all.
    ("prefix_own", NEWS, "qux zz", ["qux"], QUX, "qux zz", 1.0),
    ("prefix_unknown", NEWS, "qux zz", ["qux"], QUX, "qux zz", 1.0),
    ("prefix_own", NEWS, "qux zz", [], QUX, "qux zz", 1.0),  # "qux" from their history, no "zz..." word there
    ("prefix_own", NEWS, "qux zz", [], None, "qux zz", 0.0),
    ("prefix_unknown", NEWS, "qux zz", [], None, "qux zz", 2.0),
]


@pytest.mark.parametrize(("feature", "generator", "prefix", "session", "personal", "candidate", "value"), ROWS,
                         ids=[f"{r[0]}-{r[2]}-{r[5]}" for r in ROWS])
def test_a_ranking_feature_has_its_value(feature, generator, prefix, session, personal, candidate, value):
    cands = generator.generate(prefix, session, personal)
    assert candidate in cands.texts, cands.texts
    got = cands.features[cands.texts.index(candidate), FEATURES.index(feature)]
    assert got == pytest.approx(value), (feature, candidate, got)


def test_every_ranking_feature_has_a_row():
    assert {r[0] for r in ROWS} == set(FEATURES)
