"""The privacy oracles of issue 26, tried as an attacker would against the sample model: one
address, no user token, within the limits. Each compares what the attacker sees for strings
that one or two people typed in the build log with look-alikes nobody typed; the rule
(docs/METHOD.md, "Privacy") says no answer may tell them apart.

A look-alike must stand to what K people typed as the rare string does, or the test measures
the probes, not the model: a rare word is often a misspelling one edit from a common word,
which the model corrects from what K people typed, while swapping two of its letters moves it
two edits away. So a rare word's look-alike is a one-edit variant nobody typed that the
model's corrector (built from what K people typed) treats the same way. With plain swaps, on
the 600-user sample, the items shown for "the <word>" told rare from look-alike 70% of the
time, all of it through corrections (305 corrected items against 139)."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import connect

from indexer.blocklist import Blocklist
from indexer.model import Model
from indexer.normalize import normalize
from server.app import create_app
from server.config import ServerConfig
from tests.support import SAMPLE, recv_json, running

pytestmark = pytest.mark.anyio

PROBES = 120  # per group: a few hundred probes in all, as the attacker has


def separability(a: list[float], b: list[float]) -> float:
    """The best accuracy one threshold on a value reaches at telling group ``a`` from ``b``
    (0.5: chance)."""
    best = 0.5
    for t in sorted({*a, *b}):
        right = (sum(x <= t for x in a) + sum(x > t for x in b)) / (len(a) + len(b))
        best = max(best, right, 1 - right)
    return best


def test_separability_sees_a_difference_when_there_is_one() -> None:
    assert separability([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) < 0.7
    assert separability([1.0, 1.1, 1.2], [5.0, 6.0, 7.0]) == 1.0


@pytest.fixture(scope="module")
def typed_by() -> tuple[dict[str, int], dict[str, int]]:
    """Distinct users of each normalized query and word of the sample log."""
    queries: dict[str, set[str]] = defaultdict(set)
    words: dict[str, set[str]] = defaultdict(set)
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        next(f)
        for line in f:
            user, raw = line.split("\t")[:2]
            query = normalize(raw)
            queries[query].add(user)
            for w in query.split():
                words[w].add(user)
    return {q: len(u) for q, u in queries.items() if q}, {w: len(u) for w, u in words.items()}


def swapped(word: str) -> str:
    """``word`` with its two middle letters swapped: a look-alike."""
    i = len(word) // 2
    return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]


def spread(items: list[str], n: int) -> list[str]:
    return items[:: max(1, len(items) // n)][:n]


@pytest.fixture(scope="module")
def rare_queries(typed_by: tuple[dict[str, int], dict[str, int]]) -> list[tuple[str, str]]:
    """(a query one or two people typed, a look-alike nobody typed)."""
    queries = typed_by[0]
    blocked = Blocklist.default().blocks
    rare = sorted(q for q, n in queries.items() if n < 3 and len(q) >= 8 and " " in q and len(q.split()[-1]) >= 3
                  and not blocked(q))
    pairs = [(q, q[: q.rfind(" ") + 1] + swapped(q.split()[-1])) for q in spread(rare, 2 * PROBES)]
    pairs = [(q, other) for q, other in pairs if other != q and other not in queries][:PROBES]
    assert len(pairs) >= PROBES * 0.8
    return pairs


def _variants(word: str) -> list[str]:
    """One-edit variants of ``word`` after its first letter: letters swapped, substituted or dropped."""
    out = [word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(1, len(word) - 1)]
    out += [word[:i] + c + word[i + 1 :] for i in range(1, len(word)) for c in "aeioustrnl" if c != word[i]]
    out += [word[:i] + word[i + 1 :] for i in range(1, len(word))]
    return out


@pytest.fixture(scope="module")
def rare_words(typed_by: tuple[dict[str, int], dict[str, int]], sample_model: Model) -> list[tuple[str, str]]:
    """(a word one or two people typed, a look-alike nobody typed that the model's corrector
    treats as it treats the word: corrected to the same word, or not at all, and as a partial
    word to the same starts)."""
    words = typed_by[1]
    vocabulary = sample_model.words.words
    corrector = sample_model.generator.corrector

    def seen_as(w: str) -> tuple[object, ...]:
        return corrector.correct(w, True), tuple(corrector.partials(w, 3, True)), vocabulary.total(w) > 0

    rare = sorted(w for w, n in words.items() if n < 3 and w.isalpha() and 5 <= len(w) <= 10
                  and not vocabulary.count(w))
    pairs = []
    for w in spread(rare, 2 * PROBES):
        alike = next((v for v in _variants(w) if v not in words and seen_as(v) == seen_as(w)), None)
        if alike is not None:
            pairs.append((w, alike))
    pairs = pairs[:PROBES]
    assert len(pairs) >= PROBES * 0.8
    return pairs


@pytest.fixture(scope="module")
def served(sample_model_dir: Path) -> Iterator[tuple[str, Starlette]]:
    # The limits lifted: the attacker could spread the same probes over time or addresses.
    config = ServerConfig(index=str(sample_model_dir), rate=1000.0, burst=1000, address_rate=1000.0,
                          address_burst=1000, complete_rate=1000.0, complete_burst=1000,
                          address_submit_rate=60_000.0, address_submit_burst=1000,
                          address_cpu_rate=1e6, address_cpu_burst=1e6)
    app = create_app(config)
    with running(app, config) as address:
        yield address, app


async def answers(address: str, probes: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    """Each probe in a new session: its history submitted, then its prefix typed."""
    out = []
    for prefix, history in probes:
        async with connect(f"ws://{address}/ws") as ws:
            assert (await recv_json(ws))["type"] == "hello"
            for q in history:
                await ws.send(json.dumps({"type": "submit", "query": q}))
                assert (await recv_json(ws))["type"] == "ack"
            await ws.send(json.dumps({"type": "query", "id": 1, "prefix": prefix}))
            frame = await recv_json(ws)
            assert frame["type"] == "suggestions"
            out.append(frame)
    return out


def offered(frame: dict[str, Any], query: str) -> bool:
    return query in [item["query"] for item in frame["items"]]


async def test_a_rare_query_is_offered_back_as_often_as_a_never_logged_one(
    served: tuple[str, Starlette], rare_queries: list[tuple[str, str]]
) -> None:
    address, _ = served
    rare = [q for q, _ in rare_queries]
    never = [other for _, other in rare_queries]
    over_ws = [await answers(address, [(q[:-1], [q]) for q in group]) for group in (rare, never)]
    with httpx.Client(base_url=f"http://{address}") as http:
        over_http = [[http.get("/complete", params={"prefix": q[:-1], "prev": q}).json() for q in group]
                     for group in (rare, never)]
    for frames in (over_ws, over_http):
        hits = [[offered(f, q) for f, q in zip(frames[g], group)] for g, group in enumerate((rare, never))]
        rates = [sum(h) / len(h) for h in hits]
        # Before the rule: 0 of 40 rare, 38 of 40 never-logged.
        assert rates[1] > 0.8 and abs(rates[0] - rates[1]) < 0.1, rates


async def test_the_answer_to_the_word_does_not_tell_a_rare_word_from_one_nobody_typed(
    served: tuple[str, Starlette], rare_words: list[tuple[str, str]]
) -> None:
    address, _ = served

    def typed_score(frame: dict[str, Any]) -> float:
        scores = [item["score"] for item in frame["items"] if item["query"] == frame["prefix"]]
        return scores[0] if scores else float("-inf")

    groups = [[w for w, _ in rare_words], [other for _, other in rare_words]]
    frames = [await answers(address, [(f"the {w}", []) for w in group]) for group in groups]
    scores = [[typed_score(f) for f in group] for group in frames]
    shown = [sum(s > float("-inf") for s in group) / len(group) for group in scores]
    assert shown[1] > 0.5 and abs(shown[0] - shown[1]) < 0.1, shown
    # Before the rule the typed text's score alone told them apart 99% of the time.
    assert separability(*scores) < 0.65
    counts = [[len(f["items"]) for f in group] for group in frames]
    assert separability(*counts) < 0.65


async def test_a_prefix_someone_else_typed_is_answered_as_one_nobody_typed(
    served: tuple[str, Starlette], sample_model: Model
) -> None:
    address, app = served
    completer = app.state.qac.completer
    fresh = completer.fresh
    ahead = sample_model.labels.heaviest_prefixes(ServerConfig().fresh_answers + 50)
    table = {p: fresh.get(p) for p in ahead}
    typed = ["zanzibar f", "qzx", "new yor", *ahead[-60:]]  # some ranked ahead, most not
    stranger = await answers(address, [(p, []) for p in typed] + [(p, ["weather"]) for p in typed])
    with httpx.Client(base_url=f"http://{address}") as http:
        stranger += [http.get("/complete", params={"prefix": p}).json() for p in typed]
    # What answers at once is fixed when the model is loaded: the stranger's keystrokes put
    # nothing in it, so a probe cannot find them there.
    assert completer.fresh is fresh and {p: fresh.get(p) for p in ahead} == table
    assert fresh.get("zanzibar f") is None and fresh.get("qzx") is None
    probes = await answers(address, [("zanzibar f", []), ("zanzibar g", [])])
    # and the time the server reports is coarse: a hit and a miss look alike.
    for frame in [*stranger, *probes]:
        assert isinstance(frame["took_ms"], int) and frame["took_ms"] > 0 and frame["took_ms"] % 5 == 0
