"""The costliest keystrokes a search finds, against the median clean keystroke, in CPU time in process.

    python -m scripts.adversarial_keystrokes --index /tmp/aol \\
        --pairs data/aol-top1000/dev.pairs.jsonl [--rounds 40] [--final 200] [--seed 0]

Clean keystrokes are those ``scripts/keystroke_cost.py`` ranks (the dev pairs chained into
sessions, typed character by character); their median is taken on a second pass, with the
model's memories as a running server has them. Crafted keystrokes follow a recipe: a prefix
length, the kinds of words it cycles through (random letters, typos of frequent words, frequent
words, glued words, long runs, digits), whether it ends inside a word, and the session queries
sent before it (none, or five long queries of crafted words, or of near misses of the prefix's
words). Each instance draws fresh words, so the model's memories do not help the attacker.

The search scores every one-kind recipe, then mutates the best recipes for ``--rounds``
rounds, each recipe scored by the median CPU time of ``--tries`` fresh instances. The best
recipe is then measured on ``--final`` fresh instances. Prints one JSON line: the clean
median, the worst recipe's median, p90 and max, their ratios to the clean median, and the
costliest single keystroke seen. CPU time is ``time.thread_time`` around ``Model.complete``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time

import numpy as np

import indexer
from indexer.typos import add_typo
from replay.loadgen import chain_pairs
from replay.scripts import scripts_from_pairs, typed_keystrokes

KINDS = ("random5", "random", "typo", "word", "glued", "long", "digits", "typo_long")
HISTORIES = ("none", "crafted", "near")
LENGTHS = (20, 32, 50, 64, 100, 150, 200)  # 64: the longest prefix corrected (CandidateConfig.typo_max_prefix)
LETTERS = "abcdefghijklmnopqrstuvwxyz"


class Crafter:
    """Draws the words and prefixes of recipes from the model's vocabulary."""

    def __init__(self, model: indexer.Model, seed: int):
        words = model.words.words
        order = np.argsort(-words.weights, kind="stable")
        self.frequent = [words.keys[i] for i in order[:3000].tolist() if len(words.keys[i]) >= 4]
        self.longest = sorted(words.keys, key=len)[-300:]
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)

    def word(self, kind: str) -> str:
        rng = self.rng
        if kind == "random5":
            return "".join(rng.choice(LETTERS) for _ in range(5))
        if kind == "random":
            return "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 12)))
        if kind == "typo":
            return add_typo(rng.choice(self.frequent), self.np_rng)
        if kind == "word":
            return rng.choice(self.frequent)
        if kind == "glued":
            return rng.choice(self.frequent) + rng.choice(self.frequent)
        if kind == "long":
            return "".join(rng.choice(LETTERS) for _ in range(32))
        if kind == "digits":
            return "".join(rng.choice("0123456789") for _ in range(rng.randint(3, 8)))
        return add_typo(rng.choice(self.longest), self.np_rng)

    def keystroke(self, recipe: tuple) -> tuple[str, tuple[str, ...]]:
        """One fresh (prefix, history) of ``recipe`` = (length, kinds, partial, history kind)."""
        length, kinds, partial, history_kind = recipe
        words: list[str] = []
        while len(" ".join(words)) < length:
            words.append(self.word(kinds[len(words) % len(kinds)]))
        prefix = " ".join(words)[:length]
        if not partial:
            prefix = prefix[: length - 1].rstrip(" ") + " "
        history: tuple[str, ...] = ()
        if history_kind == "crafted":
            history = tuple(" ".join(self.word(kinds[j % len(kinds)]) for j in range(30))[:200] for _ in range(5))
        elif history_kind == "near":
            near = [add_typo(w, self.np_rng) for w in words]
            history = tuple(" ".join(near[i::5])[:200] for i in range(5))
        return prefix, history


def cpu_of(model: indexer.Model, prefix: str, history: tuple[str, ...]) -> float:
    """CPU seconds of one ranking."""
    start = time.thread_time()
    model.complete(prefix, history, 10)
    return time.thread_time() - start


def mutate(recipe: tuple, rng: random.Random) -> tuple:
    length, kinds, partial, history = recipe
    what = rng.randrange(5)
    if what == 0:
        length = rng.choice(LENGTHS)
    elif what == 1 and len(kinds) < 4:
        kinds = (*kinds, rng.choice(KINDS))
    elif what == 2:
        kinds = tuple(rng.choice(KINDS) if rng.random() < 0.5 else k for k in kinds)
    elif what == 3:
        partial = not partial
    else:
        history = rng.choice(HISTORIES)
    return length, kinds, partial, history


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="model directory")
    ap.add_argument("--pairs", required=True, help="dev pairs (JSON lines), for the clean keystrokes")
    ap.add_argument("--limit", type=int, default=1000, help="pairs read (default 1000)")
    ap.add_argument("--rounds", type=int, default=40, help="rounds of mutation (default 40)")
    ap.add_argument("--tries", type=int, default=15, help="fresh instances scoring a recipe (default 15)")
    ap.add_argument("--final", type=int, default=200, help="fresh instances of the worst recipe (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = indexer.load(args.index)
    clean = list(typed_keystrokes(chain_pairs(scripts_from_pairs(args.pairs, args.limit))))
    gc.freeze()
    for prefix, history in clean:  # the memories a running server has
        model.complete(prefix, history, 10)
    clean_median = statistics.median(cpu_of(model, p, h) for p, h in clean)
    crafter = Crafter(model, args.seed)
    rng = random.Random(args.seed)
    worst_single: tuple[float, str, tuple[str, ...]] = (0.0, "", ())

    def score(recipe: tuple, n: int) -> list[float]:
        nonlocal worst_single
        costs = []
        for _ in range(n):
            prefix, history = crafter.keystroke(recipe)
            cost = cpu_of(model, prefix, history)
            if cost > worst_single[0]:
                worst_single = (cost, prefix, history)
            costs.append(cost)
        return costs

    scored = {}
    for kind in KINDS:
        for length in (50, 200):
            for partial in (True, False):
                recipe = (length, (kind,), partial, "none")
                scored[recipe] = statistics.median(score(recipe, args.tries))
    for _ in range(args.rounds):
        best = sorted(scored, key=scored.__getitem__, reverse=True)[:5]
        for parent in best:
            child = mutate(parent, rng)
            if child not in scored:
                scored[child] = statistics.median(score(child, args.tries))
    worst = max(scored, key=scored.__getitem__)
    final = sorted(score(worst, args.final))
    median = statistics.median(final)
    p90 = final[int(0.9 * (len(final) - 1))]
    print(json.dumps({
        "index": args.index, "clean_keystrokes": len(clean), "clean_median_us": round(clean_median * 1e6),
        "recipes_scored": len(scored),
        "worst_recipe": {"length": worst[0], "kinds": worst[1], "partial": worst[2], "history": worst[3]},
        "worst_median_us": round(median * 1e6), "worst_p90_us": round(p90 * 1e6),
        "worst_max_us": round(final[-1] * 1e6),
        "ratio_median": round(median / clean_median, 2), "ratio_p90": round(p90 / clean_median, 2),
        "costliest_single_us": round(worst_single[0] * 1e6), "costliest_single_prefix": worst_single[1][:80],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
