"""Offline evaluation on (previous query, prefix, next query) pairs: accuracy and latency."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import QacError
from .model import Completion, Model
from .normalize import normalize, normalize_prefix
from .personal import PersonalHistory, replay_histories, user_events
from .times import parse_time
from .typos import SYNTHETIC_TYPO_MIN_CHARS, add_typo

# A shown suggestion that is a logged query fewer people typed, not the user's own (their
# history or this session) and not what they typed, is counted as a leak. No source consults
# those queries, so each is a coincidence: a string made of what at least K people typed that
# would be shown whatever anyone typed (docs/METHOD.md, "Privacy").
LEAK_USERS = 3


class PairsError(QacError):
    """A pairs file that is missing or has no usable line."""


@dataclass(frozen=True)
class Pair:
    prev_query: str
    prefix: str
    next_query: str
    user: str | None = None
    time: float | None = None  # of the next query, in seconds like the log's


def read_pairs(path: str | Path, limit: int | None = None) -> list[Pair]:
    """Read a JSON-lines pairs file; malformed lines are skipped. ``user`` and ``time`` are
    optional; ``time`` is read as a log's time is (:func:`indexer.times.parse_time`)."""
    path = Path(path)
    if path.is_dir():
        raise PairsError(f"{path} is a directory, not a pairs file")
    if not path.is_file():
        raise PairsError(f"pairs file not found: {path}")
    pairs = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                d = json.loads(line)
                user = d.get("user")
                pair = Pair(str(d.get("prev_query") or ""), str(d["prefix"]), str(d["next_query"]),
                            None if user is None else str(user), parse_time(d.get("time")))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            pairs.append(pair)
            if limit is not None and len(pairs) >= limit:
                break
    if not pairs:
        raise PairsError(f"no usable pair in {path}")
    return pairs


def sentence_bleu(reference: Sequence[str], hypothesis: Sequence[str], max_n: int = 4) -> float:
    """Sentence BLEU with uniform weights up to ``max_n``-grams and smoothing "method 1"
    (a zero n-gram match count becomes 0.1), as NLTK computes it."""
    if not hypothesis:
        return 0.0
    log_sum = 0.0
    for n in range(1, max_n + 1):
        hyp = Counter(tuple(hypothesis[i : i + n]) for i in range(len(hypothesis) - n + 1))
        ref = Counter(tuple(reference[i : i + n]) for i in range(len(reference) - n + 1))
        matches = sum(min(c, ref[g]) for g, c in hyp.items())
        total = max(1, sum(hyp.values()))
        if n == 1 and matches == 0:
            return 0.0
        log_sum += math.log((matches if matches else 0.1) / total) / max_n
    brevity = 1.0 if len(hypothesis) > len(reference) else math.exp(1 - len(reference) / len(hypothesis))
    return brevity * math.exp(log_sum)


def rank_weighted_bleu(target: str, suggestions: Sequence[str]) -> float:
    """BLEU of each suggestion against the target, averaged with weights 1/rank."""
    if not suggestions:
        return 0.0
    ref = target.split()
    weights = [1.0 / r for r in range(1, len(suggestions) + 1)]
    scores = [sentence_bleu(ref, s.split()) for s in suggestions]
    return sum(w * s for w, s in zip(weights, scores)) / sum(weights)


@dataclass
class Scores:
    """Running accuracy and latency totals for one system."""

    n: int = 0
    rr: float = 0.0
    hits1: int = 0
    hits10: int = 0
    bleu: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def add(self, target: str, suggestions: Sequence[str], seconds: float | None = None) -> None:
        self.n += 1
        if target in suggestions[:10]:
            rank = suggestions.index(target) + 1
            self.rr += 1.0 / rank
            self.hits1 += rank == 1
            self.hits10 += 1
        self.bleu += rank_weighted_bleu(target, suggestions[:10])
        if seconds is not None:
            self.latencies.append(seconds)

    def report(self) -> dict[str, float]:
        n = max(1, self.n)
        out = {
            "mrr": round(self.rr / n, 4),
            "success@1": round(self.hits1 / n, 4),
            "success@10": round(self.hits10 / n, 4),
            "bleu": round(self.bleu / n, 4),
        }
        if self.latencies:
            ms = np.array(self.latencies) * 1000
            out["p50_ms"] = round(float(np.percentile(ms, 50)), 3)
            out["p99_ms"] = round(float(np.percentile(ms, 99)), 3)
        return out


LENGTH_BUCKETS = (("1-3", 1, 3), ("4-7", 4, 7), ("8+", 8, 10**9))


def length_bucket(prefix: str) -> str:
    """The name of the prefix-length group a prefix falls in."""
    for name, lo, hi in LENGTH_BUCKETS:
        if lo <= len(prefix) <= hi:
            return name
    return "0"


def _timed(fn: Callable[[], list[Completion]]) -> tuple[list[Completion], float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def pair_histories(
    pairs: Sequence[Pair], log: Iterable[tuple[str | None, float | None, str]]
) -> list[PersonalHistory | None]:
    """Each pair's user's own queries before the pair: theirs in ``log`` (user, time, query)
    and those of their earlier pairs (the previous query just before its pair, unless it is
    the next query of the pair before). None for a pair without user or time."""
    events = user_events(log)
    last: dict[str, str] = {}
    for pair in pairs:
        if pair.user is None or pair.time is None:
            continue
        mine = events.setdefault(pair.user, [])
        prev = normalize(pair.prev_query)
        if prev and last.get(pair.user) != prev:
            mine.append((pair.time - 1.0, prev))
        nxt = normalize(pair.next_query)
        mine.append((pair.time, nxt))
        last[pair.user] = nxt
    return replay_histories(events, [(p.user, p.time) for p in pairs])


@dataclass
class Leaks:
    """Shown suggestions that equal another person's rare query (see :data:`LEAK_USERS`)."""

    users: Mapping[str, int]  # distinct users per logged query
    shown: int = 0
    leaked: int = 0

    def add(self, prefix: str, suggestions: Sequence[str], personal: PersonalHistory | None,
            session: Sequence[str] = ()) -> None:
        typed = normalize(prefix)
        for s in suggestions:
            self.shown += 1
            self.leaked += (0 < self.users.get(s, 0) < LEAK_USERS and s != typed and s not in session
                            and (personal is None or s not in personal))

    def report(self) -> dict[str, float]:
        return {"leak_rate": round(self.leaked / max(1, self.shown), 4), "shown": self.shown, "leaked": self.leaked}


def evaluate(
    model: Model,
    pairs: Sequence[Pair],
    warmup: int = 200,
    progress: Callable[[int], None] | None = None,
    personal: Sequence[PersonalHistory | None] | None = None,
    leak_users: Mapping[str, int] | None = None,
    dump: IO[str] | None = None,
    group_prefixes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score the model and most-popular completion on the same pairs, overall and by group.

    ``personal``: each pair's personal history (see :func:`pair_histories`); the model is then
    also scored without it ("model_no_history"). ``leak_users``: distinct users per logged
    query, to count leaks. ``dump``: one JSON line per pair, its fields and what each system showed.
    ``group_prefixes``: the prefix whose length groups each pair (default: its own; the clean
    prefix of a typo pair, so that clean and typo groups hold the same pairs).
    """
    for pair in pairs[:warmup]:
        model.complete(pair.prefix, [pair.prev_query] if pair.prev_query else [])
    groups: dict[str, dict[str, Scores]] = {}
    systems = ("model", "mpc") if personal is None else ("model", "model_no_history", "mpc")
    total = {s: Scores() for s in systems}
    leaks = {s: Leaks(leak_users) for s in systems} if leak_users is not None else None
    for j, pair in enumerate(pairs):
        history = [pair.prev_query] if pair.prev_query else []
        mine = personal[j] if personal is not None else None
        shown: dict[str, tuple[list[Completion], float]] = {
            "model": _timed(partial(model.complete, pair.prefix, history, personal=mine)),
            "mpc": _timed(partial(model.most_popular, pair.prefix)),
        }
        if personal is not None:
            shown["model_no_history"] = _timed(partial(model.complete, pair.prefix, history))
        got = {s: [c.query for c in items] for s, (items, _) in shown.items()}
        seen = "seen" if model.labels.index(pair.next_query) >= 0 else "unseen"
        grouped = pair.prefix if group_prefixes is None else group_prefixes[j]
        for group in ("prefix " + length_bucket(grouped), seen):
            scores = groups.setdefault(group, {s: Scores() for s in systems})
            for s in systems:
                scores[s].add(pair.next_query, got[s])
        for s in systems:
            total[s].add(pair.next_query, got[s], shown[s][1])
            if leaks is not None:
                leaks[s].add(pair.prefix, got[s], mine if s == "model" else None, [normalize(h) for h in history])
        if dump is not None:
            record = {k: v for k, v in asdict(pair).items() if k != "time"}
            dump.write(json.dumps({**record, "shown": {s: [asdict(c) for c in items]
                                                       for s, (items, _) in shown.items()}}) + "\n")
        if progress is not None:
            progress(1)
    result: dict[str, Any] = {"n": len(pairs)}
    result.update({s: total[s].report() for s in systems})
    if leaks is not None:
        for s in systems:
            result[s].update(leaks[s].report())
    result["groups"] = {
        g: {"n": sc["model"].n, **{s: sc[s].report() for s in systems}}
        for g, sc in sorted(groups.items())
    }
    return result


def typo_pairs(pairs: Sequence[Pair], seed: int = 0) -> tuple[list[int], list[Pair]]:
    """The pairs whose normalized prefix has :data:`~indexer.typos.SYNTHETIC_TYPO_MIN_CHARS`+ characters (their
    indices) and each with one synthetic typo in that prefix (:func:`~indexer.typos.add_typo`,
    drawn from ``numpy.random.default_rng(seed)`` in pair order): the same seed, the same typos."""
    rng = np.random.default_rng(seed)
    kept, typo = [], []
    for i, pair in enumerate(pairs):
        norm = normalize_prefix(pair.prefix)
        if len(norm) >= SYNTHETIC_TYPO_MIN_CHARS:
            kept.append(i)
            typo.append(replace(pair, prefix=add_typo(norm, rng)))
    return kept, typo


def format_typo_report(clean: dict[str, Any], typo: dict[str, Any]) -> str:
    """Clean and typo figures of the same pairs side by side, overall and by prefix length."""
    systems = [s for s in ("model", "model_no_history", "mpc") if s in clean]
    head = f"{'':22}{'n':>6}" + "".join(f"  {s + ' clean':>22}  {s + ' typo':>22}" for s in systems)
    lines = ["MRR@10 (success@10), clean prefix vs one typo", head]

    def row(name: str, n: int, c: dict[str, Any], t: dict[str, Any]) -> str:
        cells = "".join(f"  {c[s]['mrr']:>13.4f} ({c[s]['success@10']:.3f})  {t[s]['mrr']:>13.4f} "
                        f"({t[s]['success@10']:.3f})" for s in systems)
        return f"{name:22}{n:>6}" + cells

    lines.append(row("all", clean["n"], clean, typo))
    for g in clean["groups"]:
        if g.startswith("prefix") and g in typo["groups"]:
            lines.append(row(g, clean["groups"][g]["n"], clean["groups"][g], typo["groups"][g]))
    lat = "  ".join(f"{name} p50 {r['model']['p50_ms']:.3f} ms, p99 {r['model']['p99_ms']:.3f} ms"
                    for name, r in (("clean", clean), ("typo", typo)) if "p50_ms" in r["model"])
    if lat:
        lines.append("model latency: " + lat)
    return "\n".join(lines)


def format_report(result: dict[str, Any]) -> str:
    """A human-readable table of an :func:`evaluate` result."""
    keys = ("mrr", "success@1", "success@10", "bleu")
    systems = [s for s in ("model", "model_no_history", "mpc") if s in result]
    leaks = "leak_rate" in result["model"]
    lines = [f"{'':30}{'n':>7}  " + "  ".join(f"{k:>10}" for k in keys) + f"  {'p50_ms':>8}  {'p99_ms':>8}"
             + (f"  {'leaks':>7}" if leaks else "")]

    def row(name: str, n: int, r: dict[str, float]) -> str:
        lat = f"  {r['p50_ms']:>8.3f}  {r['p99_ms']:>8.3f}" if "p50_ms" in r else ""
        leak = f"  {r['leak_rate']:>7.2%}" if "leak_rate" in r else ""
        return f"{name:30}{n:>7}  " + "  ".join(f"{r[k]:>10.4f}" for k in keys) + lat + leak

    for s in systems:
        lines.append(row(s, result["n"], result[s]))
    for g, r in result["groups"].items():
        for s in systems:
            lines.append(row(f"{g} {s}", r["n"], r[s]))
    return "\n".join(lines)


