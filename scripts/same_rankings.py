"""Same rankings before and after a speed change: record every answer of a model, compare two records.

    python -m scripts.same_rankings record --index models/final \\
        --pairs data/aol-top1000/dev.pairs.jsonl --log data/aol-top1000/train.tsv.gz \\
        --out before.json
    python -m scripts.same_rankings compare before.json after.json

``record`` ranks keystrokes of the dev pairs with ``Model.complete(prefix, [prev], 10,
personal=..., blocklist=None)``: each pair's prefix, the same prefix with one synthetic typo
(``indexer.evaluate.typo_pairs``, seeded), and every character-by-character prefix of the
next query of the first ``--typed`` pairs. Each keystroke is ranked three times: without a
personal history, with a pooled 1,000-query history (as ``scripts/personal_latency.py``
builds it) and with the user's own history replayed from the log at the pair's time. Every
answer (queries, scores rounded to 9 decimals, personal and corrected flags) goes to a JSON
file. ``compare`` exits with 1 on any difference in queries, order or flags, or a score
that moved by more than ``--tolerance``; 0 when all answers are the same.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import indexer
from indexer.evaluate import read_pairs, typo_pairs
from indexer.normalize import normalize, normalize_prefix
from indexer.personal import pooled_history, replay_histories
from indexer.train.logs import read_logs


def record(args: argparse.Namespace) -> int:
    model = indexer.load(args.index)
    pairs = read_pairs(args.pairs, args.limit)
    rows, _ = read_logs([args.log])
    pooled = pooled_history(((r.user, r.time, r.query) for r in rows), args.entries)
    events: dict[str, list[tuple[float, str]]] = {}
    for r in rows:
        if r.user is not None and r.time is not None:
            query = normalize(r.query)
            if query:
                events.setdefault(str(r.user), []).append((r.time, query))
    # (kind, prefix, prev, pair index)
    keystrokes: list[tuple[str, str, str, int]] = [("pair", p.prefix, p.prev_query, i) for i, p in enumerate(pairs)]
    kept, typo = typo_pairs(pairs, args.seed)
    keystrokes += [("typo", t.prefix, t.prev_query, i) for i, t in zip(kept, typo)]
    for i, p in enumerate(pairs[: args.typed]):
        target = normalize_prefix(p.next_query)
        keystrokes += [("typed", target[:n], p.prev_query, i) for n in range(1, len(target) + 1)]
    own = replay_histories(events, [(pairs[i].user, pairs[i].time) for _, _, _, i in keystrokes])
    answers = []
    start = time.perf_counter()
    for (kind, prefix, prev, i), mine in zip(keystrokes, own):
        history = [prev] if prev else []
        for name, personal in (("none", None), ("pooled", pooled), ("own", mine)):
            if name == "own" and personal is None:
                continue
            got = model.complete(prefix, history, 10, personal=personal, blocklist=None)
            answers.append({"kind": kind, "pair": i, "prefix": prefix, "prev": prev, "history": name,
                            "out": [[c.query, round(c.score, 9), c.personal, c.corrected] for c in got]})
    seconds = time.perf_counter() - start
    meta = {"index": str(args.index), "pairs": len(pairs), "keystrokes": len(keystrokes), "answers": len(answers),
            "pooled_entries": len(pooled), "seed": args.seed, "seconds": round(seconds, 1)}
    Path(args.out).write_text(json.dumps({"meta": meta, "answers": answers}), encoding="utf-8")
    print(json.dumps(meta))
    return 0


def compare(args: argparse.Namespace) -> int:
    a = json.loads(Path(args.before).read_text(encoding="utf-8"))["answers"]
    b = json.loads(Path(args.after).read_text(encoding="utf-8"))["answers"]
    if len(a) != len(b):
        print(f"different numbers of answers: {len(a)} != {len(b)}")
        return 1
    differences = 0
    for x, y in zip(a, b):
        key = (x["kind"], x["pair"], x["prefix"], x["prev"], x["history"])
        if key != (y["kind"], y["pair"], y["prefix"], y["prev"], y["history"]):
            print(f"different keystrokes: {key} vs {(y['kind'], y['pair'], y['prefix'], y['prev'], y['history'])}")
            return 1
        same = len(x["out"]) == len(y["out"]) and all(
            (q, p, c) == (q2, p2, c2) and abs(s - s2) <= args.tolerance
            for (q, s, p, c), (q2, s2, p2, c2) in zip(x["out"], y["out"])
        )
        if not same:
            differences += 1
            if differences <= args.show:
                print(json.dumps({"keystroke": key, "before": x["out"], "after": y["out"]}))
    print(f"{len(a)} answers compared, {differences} differ")
    return 1 if differences else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    rec = sub.add_parser("record", help="rank the keystrokes and write every answer to a JSON file")
    rec.add_argument("--index", required=True, help="model directory")
    rec.add_argument("--pairs", required=True, help="dev pairs (JSON lines)")
    rec.add_argument("--log", required=True, help="training log, for the personal histories")
    rec.add_argument("--out", required=True, help="JSON file to write")
    rec.add_argument("--limit", type=int, default=1500, help="pairs read (default 1500)")
    rec.add_argument("--typed", type=int, default=200,
                     help="pairs whose next query is also typed character by character (default 200)")
    rec.add_argument("--entries", type=int, default=1000, help="queries in the pooled history (default 1000)")
    rec.add_argument("--seed", type=int, default=0, help="seed of the synthetic typos (default 0)")
    cmp = sub.add_parser("compare", help="compare two records; exit 1 on any difference")
    cmp.add_argument("before")
    cmp.add_argument("after")
    cmp.add_argument("--tolerance", type=float, default=1e-6, help="largest score change allowed (default 1e-6)")
    cmp.add_argument("--show", type=int, default=10, help="differences printed, at most (default 10)")
    args = ap.parse_args()
    return record(args) if args.mode == "record" else compare(args)


if __name__ == "__main__":
    raise SystemExit(main())
