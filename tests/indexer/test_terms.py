"""Two tiers of terms: blocked (never shown) and sensitive (shown only when typed whole), both
matched on look-alike skeletons, from every source."""

from __future__ import annotations

import shutil
import string
from pathlib import Path

import pytest

import indexer
from indexer import storage
from indexer.blocklist import Blocklist
from indexer.model import Model
from indexer.normalize import normalize
from indexer.personal import PersonalEntry, PersonalHistory

# The look-alikes of blocked terms, as typed.
LOOK_ALIKES = ["fuсk", "fυck", "fúck", "fu\u3164ck", "fu\u115fck", "f_u_c_k", "f.u.c.k", "f u c k", "ѕhit",
               "fuсk you", "pоrn", "free p_o_r_n", "ρorn videos", "niggеr"]
# ... and of sensitive ones.
SENSITIVE_LOOK_ALIKES = ["аnal", "nakеd news", "n_a_k_e_d", "a.n.a.l fissure", "nákéd", "murdеr"]
LETTERS = string.ascii_lowercase
SHORT = [*LETTERS, *(a + b for a in LETTERS for b in LETTERS)]


@pytest.mark.parametrize("typed", LOOK_ALIKES)
def test_look_alikes_of_blocked_terms_are_blocked(typed: str) -> None:
    default = Blocklist.default()
    assert default.blocks(normalize(typed)), typed
    assert default.blocks_prefix(typed + " ") and default.hider("")(normalize(typed))


def test_look_alike_terms_match_plain_text_too() -> None:
    # A list may be written with accents or look-alikes: its terms are folded the same way.
    bl = Blocklist(["crème brûlée", "ѕpam"], sensitive=["nаïve"])
    assert bl.blocks("creme brulee") and bl.blocks("a crème brûlée") and bl.blocks("spam")
    assert bl.hider("")("naive") and not bl.hider("naive")("naive art")
    assert bl.terms == ("crème brûlée", "ѕpam")  # kept as written (normalized)


def test_everyday_text_is_not_caught() -> None:
    default = Blocklist.default()
    for q in ["burn", "click here", "u s a", "the new york times", "vitamin a and b", "café", "привет мир",
              "analysis", "nakedness", "ford escorts", "essex", "cocktail", "scunthorpe"]:
        assert not default.blocks(normalize(q)), q
    # Sensitive terms are whole words too.
    hidden = default.hider("")
    assert hidden("naked") and hidden("anal")
    assert not any(hidden(q) for q in ["analysis", "analog", "nakedness"])


def test_a_sensitive_term_is_shown_only_when_the_prefix_holds_it_whole() -> None:
    bl = Blocklist(["porn"], sensitive=["anal", "naked", "self harm"])
    for prefix, shown, hidden in [
        ("a", [], ["anal", "anal fissure"]),
        ("an", ["analysis", "annals"], ["anal", "anal fissure", "anal sex toys"]),
        ("ana", ["analysis"], ["anal"]),
        ("anal", ["anal", "anal fissure", "analysis"], ["anal naked", "anal porn"]),
        ("anal f", ["anal fissure"], ["anal fissure naked"]),
        ("anal fissure n", [], ["anal fissure naked"]),
        ("na", ["nature"], ["naked news", "naked"]),
        ("naked n", ["naked news"], []),
        ("nakéd ", ["naked news"], []),  # typed with an accent: typed whole all the same
        ("self", ["self help"], ["self harm"]),
        ("self harm", ["self harm"], []),
        ("cut", [], ["self harm"]),  # not a completion at all (a correction, or personal history)
    ]:
        hide = bl.hider(prefix)
        assert [q for q in shown if hide(q)] == [], prefix
        assert [q for q in hidden if not hide(q)] == [], prefix


def _bad(query: str, default: Blocklist) -> bool:
    """Whether a suggestion holds a default term: judged on plain words, and on the look-alikes
    the test put in, not on skeletons."""
    padded = f" {query} "
    return (default.blocks(query) or any(f" {t} " in padded for t in (*default.terms, *default.sensitive))
            or query in {normalize(q) for q in (*LOOK_ALIKES, *SENSITIVE_LOOK_ALIKES)})


def _own(default: Blocklist) -> PersonalHistory:
    """A personal history of every sensitive term, phrases with each, and every look-alike."""
    own = [*LOOK_ALIKES, *SENSITIVE_LOOK_ALIKES, "anal fissure", "naked news"]
    for term in (*default.sensitive, *default.terms[::7]):
        own += [term, f"free {term}", f"{term} videos"]
    return PersonalHistory([PersonalEntry(q, 3, 0.0) for q in own], now=1.0)


def test_no_one_or_two_letter_prefix_completes_into_a_blocked_or_sensitive_term(small_model: Model) -> None:
    # The small model holds what 25 real users typed (min_users=1), sensitive words and all;
    # the session and the personal history add every default term and every look-alike.
    default = Blocklist.default()
    assert sum(_bad(q, default) for q in small_model.labels.keys) > 20, "the test would prove nothing"
    mine = _own(default)
    session = ["naked news", "anal fissure", "fuсk you", "free porn", "murder victims"]
    for prefix in SHORT:
        for items in (small_model.complete(prefix), small_model.complete(prefix, session, personal=mine)):
            bad = [c.query for c in items if _bad(c.query, default)]
            assert not bad, (prefix, bad)


def test_typed_whole_a_sensitive_term_comes_back_from_every_source(small_model: Model) -> None:
    mine = _own(Blocklist.default())
    got = [c.query for c in small_model.complete("anal f", personal=mine)]
    assert "anal fissure" in got
    assert "anal fissure" in [c.query for c in small_model.complete("anal f", ["anal fissure"])]
    assert "naked news" in [c.query for c in small_model.complete("naked n", ["naked news"])]
    logged = next(q for q in small_model.labels.keys if q.startswith("nudist "))
    assert logged in [c.query for c in small_model.complete("nudist ", k=50)]
    assert logged not in [c.query for c in small_model.complete(logged[:4], k=50)]
    for prefix in ("an", "ana", "anal fissure n"):
        assert "anal fissure" not in [c.query for c in small_model.complete(prefix, personal=mine)]


def test_what_is_shown_is_the_text_not_its_skeleton(small_model: Model) -> None:
    mine = PersonalHistory([PersonalEntry("crème brûlée recipe", 3, 0.0)], now=1.0)
    assert "crème brûlée recipe" in [c.query for c in small_model.complete("crè", personal=mine)]


def test_the_model_keeps_its_sensitive_terms(small_model_dir: Path, tmp_path: Path) -> None:
    model = indexer.load(small_model_dir)
    assert model.blocklist == Blocklist.default()
    assert model.manifest["sensitive"]["sha256"] == Blocklist.default().sensitive_digest()
    # Without it, the model is refused: it would complete into every sensitive term.
    old = tmp_path / "old"
    shutil.copytree(small_model_dir, old)
    (old / "sensitive.txt").unlink()
    storage.write_manifest(old, {k: v for k, v in storage.read_manifest(old).items() if k != "files"})
    with pytest.raises(indexer.ModelError, match="sensitive.txt"):
        indexer.load(old)


def test_the_default_sensitive_list_is_clean() -> None:
    from importlib.resources import files

    text = (files("indexer") / "data" / "sensitive.txt").read_text(encoding="utf-8")
    terms = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert terms == [normalize(t) for t in terms] and len(terms) == len(set(terms))
    default = Blocklist.default()
    assert tuple(sorted(terms)) == default.sensitive and len(terms) >= 100
    # None is blocked already, and none is short enough for a two-letter prefix to hold it.
    assert not [t for t in terms if default.blocks(t) or len(t.replace(" ", "")) < 3]


def _corrected_into(items: list, term: str) -> list[str]:
    return [c.query for c in items if c.corrected and f" {term} " in f" {c.query} "]


def test_a_correction_never_completes_into_a_sensitive_term(small_model: Model) -> None:
    # A typo in the sensitive word ("11 inch pneis"): the corrections source proposes the word,
    # but the prefix does not hold it whole.
    default = Blocklist.default()
    blocked_only = Blocklist(default.terms)
    tried = 0
    for q in small_model.labels.keys:
        for term in (t for t in default.sensitive if len(t) >= 5 and " " not in t and f" {t} " in f" {q} "):
            at = f" {q} ".index(f" {term} ")
            typed = q[:at] + term[0] + term[2] + term[1] + term[3:] + q[at + len(term):][:2]
            if _corrected_into(small_model.complete(typed, blocklist=blocked_only), term):
                tried += 1
                assert not _corrected_into(small_model.complete(typed), term), typed
    assert tried > 10, "the corrections source proposed too few sensitive terms to test"
