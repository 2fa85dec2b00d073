"""What one person typed reaches no one else; blocked terms come out of no source."""

from __future__ import annotations

from pathlib import Path

import pytest

import indexer
from indexer.blocklist import Blocklist
from indexer.params import BuildParams
from indexer.personal import PersonalEntry, PersonalHistory
from indexer.train.build import build

# 12 people share a vocabulary; "zanzibar ferry" and "quokka pictures" are typed by one person
# only, many times; "free porn videos" by many.
SHARED = ["weather report", "weather radar", "zanzibar beaches", "quokka facts", "free games online",
          "free porn videos", "free movies", "news today", "new york times", "new york weather"]


def write_log(path: Path) -> Path:
    lines = ["AnonID\tQuery\tQueryTime\tItemRank\tClickURL\n"]
    for u in range(12):
        for i, q in enumerate(SHARED):
            lines.append(f"{100 + u}\t{q}\t2006-03-{1 + i:02d} 10:{u:02d}:00\t\t\n")
    for day in range(1, 28):
        lines.append(f"100\tzanzibar ferry\t2006-04-{day:02d} 09:00:00\t\t\n")
        lines.append(f"101\tquokka pictures\t2006-04-{day:02d} 09:00:00\t\t\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> indexer.Model:
    tmp = tmp_path_factory.mktemp("privacy")
    log = write_log(tmp / "log.tsv")
    build([log], tmp / "model", BuildParams(workers=1, max_leaf=8, min_users=3), quiet=True)
    return indexer.load(tmp / "model")


def shown(model: indexer.Model, prefix: str, personal: PersonalHistory | None = None) -> list[str]:
    return [c.query for c in model.complete(prefix, personal=personal)]


@pytest.mark.parametrize("prefix", ["z", "za", "zanzibar", "zanzibar f", "q", "quokka", "quokka p"])
def test_a_query_one_person_typed_is_never_shown_to_anyone_else(model: indexer.Model, prefix: str) -> None:
    everyone = shown(model, prefix)
    assert "zanzibar ferry" not in everyone and "quokka pictures" not in everyone
    stranger = PersonalHistory([PersonalEntry("weather radar", 2, 0.0)], now=1.0)
    assert "zanzibar ferry" not in shown(model, prefix, stranger)
    assert model.labels.index("zanzibar ferry") < 0, "a rare query must not even be in the model"


def test_the_person_who_typed_it_sees_it_marked_as_theirs(model: indexer.Model) -> None:
    mine = PersonalHistory([PersonalEntry("zanzibar ferry", 27, 0.0)], now=3600.0)
    got = {c.query: c.personal for c in model.complete("zanzibar", personal=mine)}
    assert got.pop("zanzibar ferry") is True
    assert got and not any(got.values())


@pytest.mark.parametrize("prefix", ["f", "free", "free p", "free porn", "free porn ", "p"])
def test_a_blocked_term_comes_out_of_no_source(model: indexer.Model, prefix: str) -> None:
    mine = PersonalHistory([PersonalEntry("free porn videos", 5, 0.0), PersonalEntry("porn", 1, 0.0)], now=1.0)
    for items in (model.complete(prefix), model.complete(prefix, ["free porn videos"], personal=mine)):
        assert not any("porn" in c.query.split() for c in items), items
    assert model.labels.index("free porn videos") < 0
    assert model.words.words.index("porn") < 0 and model.words.bigrams.index("free porn") < 0


def test_the_blocklist_travels_with_the_model_and_a_served_one_replaces_it(model: indexer.Model) -> None:
    assert model.blocklist.blocks("porn") and model.blocklist == Blocklist.default()
    extra = model.blocklist.union(Blocklist(["weather"]))
    assert any("weather" in q for q in shown(model, "w"))
    assert not any("weather" in c.query for c in model.complete("w", blocklist=extra))


def test_a_plain_query_list_is_refused_unless_min_users_is_1(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("Query\n" + "weather\n" * 5, encoding="utf-8")
    with pytest.raises(indexer.errors.QacError, match="--min-users 1"):
        build([plain], tmp_path / "m", BuildParams(workers=1), quiet=True)
    assert not (tmp_path / "m").exists()
    build([plain], tmp_path / "m", BuildParams(workers=1, min_users=1), quiet=True)
    assert shown(indexer.load(tmp_path / "m"), "wea")[0] == "weather"


def swap(items: list[indexer.model.Completion], a: str, b: str) -> list[tuple[str, float, bool, bool]]:
    return [(b if c.query == a else c.query, c.score, c.personal, c.corrected) for c in items]


@pytest.mark.parametrize("rare, never", [("zanzibar ferry", "zanzibar ferrx"), ("quokka pictures", "quokka picturez")])
def test_session_text_comes_back_the_same_whether_or_not_someone_typed_it(
    model: indexer.Model, rare: str, never: str
) -> None:
    # One person typed each rare query 27 times; nobody typed the look-alike. Were the rare one
    # held back or scored apart, a session could test what someone searched for.
    for cut in (1, 3, len(rare) - len(rare.split()[0])):
        prefix = rare[:-cut]
        assert never.startswith(prefix)
        with_rare = model.complete(prefix, [rare])
        assert rare in [c.query for c in with_rare]
        assert swap(with_rare, rare, never) == swap(model.complete(prefix, [never]), never, never)


def test_a_word_one_person_typed_counts_as_unknown(model: indexer.Model) -> None:
    assert model.words.words.count("ferry") == 0  # "zanzibar ferry": one person
    typed = [c for c in model.complete("zanzibar ferry") if c.query == "zanzibar ferry"]
    look_alike = [c for c in model.complete("zanzibar ferrx") if c.query == "zanzibar ferrx"]
    assert [c.score for c in typed] == [c.score for c in look_alike]


def test_no_suggestion_for_any_one_or_two_letter_prefix_holds_a_default_list_term(small_model_dir: Path) -> None:
    # The small model is built from real log rows with min_users=1: whatever is in the log can
    # come out of some source, except what the default list blocks.
    model = indexer.load(small_model_dir)
    default = Blocklist.default()
    letters = "abcdefghijklmnopqrstuvwxyz"
    prefixes = [*letters, *(a + b for a in letters for b in letters)]
    own = [*model.labels.keys[:: max(1, len(model.labels) // 300)],
           *(t for term in default.terms[::5] for t in (term, f"free {term}", f"{term} videos"))]
    mine = PersonalHistory([PersonalEntry(q, 3, 0.0) for q in own], now=1.0)
    for prefix in prefixes:
        for items in (model.complete(prefix), model.complete(prefix, ["free sex videos"], personal=mine)):
            bad = [c.query for c in items if default.blocks(c.query)]
            assert not bad, (prefix, bad)


def test_the_log_behind_the_small_model_does_hold_blocked_queries(small_log: Path) -> None:
    # Otherwise the test above could not fail.
    from indexer.train.logs import read_logs

    rows, _ = read_logs([small_log])
    assert any(Blocklist.default().blocks(r.query) for r in rows)
