"""Typo tolerance side by side (issue 13): models and fast-autocomplete on the same pairs.

For each dev pair whose normalized prefix has 5+ characters, the clean prefix and the same
prefix with one synthetic typo (``indexer.evaluate.typo_pairs``, as ``qac eval --typos``),
scored for every model directory given and for fast-autocomplete (a word-graph autocompleter,
``max_cost=2``) over the same k-anonymous label set with the same counts (the first model's).
fast-autocomplete is a measuring aid only, not a dependency of the project:

    pip install 'fast-autocomplete[levenshtein]'
    python -m scripts.typo_bench --pairs data/aol-top1000/dev.pairs.jsonl \\
        --model default=models/aol --model no-tree=models/aol-notree --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import indexer
from indexer.evaluate import LENGTH_BUCKETS, Scores, length_bucket, read_pairs, typo_pairs
from indexer.normalize import normalize_prefix


def fast_autocomplete(model: indexer.Model):  # type: ignore[no-untyped-def]
    from fast_autocomplete import AutoComplete

    labels = model.labels
    words = {k: {"count": int(w)} for k, w in zip(labels.keys, labels.weights.tolist())}
    ac = AutoComplete(words=words)

    def complete(prefix: str) -> list[str]:
        out: list[str] = []
        for r in ac.search(word=normalize_prefix(prefix), max_cost=2, size=10):
            q = " ".join(r)
            if q not in out:
                out.append(q)
        return out[:10]

    return complete


def score(complete, pairs, groups, warmup: int = 200):  # type: ignore[no-untyped-def]
    for p in pairs[:warmup]:
        complete(p)
    total = Scores()
    by_group = {name: Scores() for name, _, _ in LENGTH_BUCKETS}
    for p, g in zip(pairs, groups):
        start = time.perf_counter()
        got = complete(p)
        seconds = time.perf_counter() - start
        total.add(p.next_query, got, seconds)
        by_group[g].add(p.next_query, got)
    return {"all": total.report(), **{f"prefix {g}": s.report() for g, s in by_group.items() if s.n}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, type=Path)
    ap.add_argument("--model", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    pairs = read_pairs(args.pairs, args.limit)
    kept, typo = typo_pairs(pairs, args.seed)
    clean = [pairs[i] for i in kept]
    groups = [length_bucket(normalize_prefix(p.prefix)) for p in clean]
    models = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        models[name] = indexer.load(path)
    systems = {}
    for name, model in models.items():
        systems[name] = (lambda m: lambda p: [c.query for c in m.complete(
            p.prefix, [p.prev_query] if p.prev_query else [])])(model)
    first = next(iter(models.values()))
    systems["most-popular"] = lambda p: [c.query for c in first.most_popular(p.prefix)]
    fac = fast_autocomplete(first)
    systems["fast-autocomplete"] = lambda p: fac(p.prefix)
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for name, fn in systems.items():
        results[name] = {"clean": score(fn, clean, groups), "typo": score(fn, typo, groups)}
        c, t = results[name]["clean"]["all"], results[name]["typo"]["all"]
        print(f"{name:20} n={len(clean)}  clean MRR {c['mrr']:.4f} s@10 {c['success@10']:.4f} "
              f"p50 {c['p50_ms']:.3f} p99 {c['p99_ms']:.3f}  |  typo MRR {t['mrr']:.4f} "
              f"s@10 {t['success@10']:.4f} p50 {t['p50_ms']:.3f} p99 {t['p99_ms']:.3f}", flush=True)
        for g in ("prefix 4-7", "prefix 8+"):
            if g in results[name]["clean"]:
                print(f"{'':20} {g:10} clean {results[name]['clean'][g]['mrr']:.4f}  "
                      f"typo {results[name]['typo'][g]['mrr']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"n": len(clean), "seed": args.seed, **results}, indent=1))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
