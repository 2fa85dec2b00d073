"""Server CPU per answered keystroke of two code trees, alternated in one run.

    python -m scripts.server_cpu --index models/aol --pairs data/aol-top1000/dev.pairs.jsonl \\
        --tree old=/tmp/qac-old --tree new=. [--users 100] [--rounds 3] [--workers 1] [--constant]

Each round serves the model from each tree in turn (``qac serve`` run in that tree, which
``python -m`` puts first on the path, and on ``PYTHONPATH``; rate limits lifted), drives it
with ``--users`` human-paced typists (``replay.loadgen``, as ``scripts/typists.py``) and
reads around the run the server processes' user + system CPU time (``/proc/PID/stat``), the
keystrokes the server answered (``qac_completion_seconds_count``: over the same time as the
CPU, the ramp included, which the client's count leaves out) and the ranking CPU time it
counted (``qac_ranking_cpu_seconds_total``, where the tree has it). CPU and ranking CPU per
answer, and their ratio: what the server spends per unit of its own ranking, which moves less
with the machine's load than CPU per answer does. Prints one JSON line per run, then the
spread of each tree. CPU time is steadier than wall-clock latency on a shared machine;
alternating the trees spreads what else runs over both. ``scripts/ranking_gap.py`` tells
what makes a ranking dearer in the server than in process.

``--constant``: the servers answer every keystroke with the same ten suggestions, without
ranking (:data:`CONSTANT_SERVE`, patched into the tree's ``server.completer``): their CPU per
answer is then what the server spends on a keystroke besides ranking it (frames, the event loop,
sessions, submits, connections), without what ranking and the rest do to each other's caches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import urllib.request
from pathlib import Path

from replay.bench import UNLIMITED, RedisProcess, ServerProcess
from replay.capacity import cpu_seconds
from replay.loadgen import chain_pairs, run_load
from replay.scripts import scripts_from_pairs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="model directory")
    ap.add_argument("--pairs", required=True, help="dev pairs (JSON lines)")
    ap.add_argument("--tree", action="append", required=True, metavar="NAME=DIR", help="a code tree; repeatable")
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--limit", type=int, default=2000, help="pairs to draw sessions from")
    ap.add_argument("--redis", action="store_true", help="sessions in a throwaway redis-server even for one worker "
                    "(more than one always has them there)")
    ap.add_argument("--constant", action="store_true", help="answer every keystroke with the same ten suggestions "
                    "(no ranking): the server's cost besides ranking")
    args = ap.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree)
    scripts = chain_pairs(scripts_from_pairs(args.pairs, args.limit))
    index = Path(args.index).resolve()
    runs: dict[str, list[float]] = {name: [] for name in trees}
    launcher = [sys.executable, "-c", CONSTANT_SERVE] if args.constant else [sys.executable, "-m", "qac"]
    shared = RedisProcess() if args.redis or args.workers > 1 else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="server-cpu-") as tmp, shared as redis:
        for _ in range(args.rounds):
            for name, tree in trees.items():
                env = UNLIMITED | {"PYTHONPATH": str(Path(tree).resolve())}
                with ServerProcess(index, Path(tmp) / f"{name}.log", workers=args.workers, env=env,
                                   cwd=Path(tree).resolve(), sessions=redis.url if redis else "memory",
                                   launcher=launcher) as server:
                    assert server.proc is not None
                    before, counted_before = cpu_seconds(server.proc.pid), counted(server.port)
                    report = run_load(server.url, scripts, users=args.users, duration=args.duration)
                    used = cpu_seconds(server.proc.pid) - before
                    counted_after = counted(server.port)
                # The server's own count of answers covers the same time as its CPU; the client's
                # leaves out the ramp's (about 3% more keystrokes answered than counted at 100 typists).
                answers = counted_after[1] - counted_before[1]
                per_answer = used * 1000 / max(1, answers)
                runs[name].append(per_answer)
                ranked = None if counted_before[0] is None or counted_after[0] is None \
                    else counted_after[0] - counted_before[0]
                over_ranking = round(used / ranked, 3) if ranked else None
                print(json.dumps({"tree": name, "cpu_ms_per_answer": round(per_answer, 3), "cpu_s": round(used, 2),
                                  "server_answers": answers,
                                  "ranking_cpu_s": None if ranked is None else round(ranked, 2),
                                  "ranking_ms_per_answer": None if ranked is None else round(ranked * 1000 / max(
                                      1, answers), 3),
                                  "cpu_over_ranking": over_ranking,
                                  **{k: report[k] for k in ("answered", "sent", "p50_ms", "p99_ms", "errors")}}),
                      flush=True)
    print(json.dumps({name: [round(min(v), 3), round(max(v), 3)] for name, v in runs.items()}))
    return 0


# What --constant patches into the tree's server: every keystroke answered with the same ten
# suggestions (a fresh session's and one with queries alike), at once.
CONSTANT_ANSWERS = """
import server.completer as completer
from indexer.model import Completion
from indexer.normalize import normalize_prefix

ITEMS = tuple(Completion(f"constant suggestion number {i}", 10.0 - i, False, False) for i in range(10))
completer.rank_keystroke = lambda model, prefix, *rest: (normalize_prefix(prefix), list(ITEMS), None)
completer.FreshAnswers.get = lambda self, prefix: ITEMS
"""
# ``python -c`` puts the working directory (the tree) first on the path, as ``-m`` does; the
# arguments after the code are qac's.
CONSTANT_SERVE = CONSTANT_ANSWERS + "import sys\nfrom qac.main import main\nsys.exit(main())\n"


def counted(port: int) -> tuple[float | None, int]:
    """What a server on ``port`` counted over its transports: the ranking CPU seconds (None if it
    does not count them) and the keystrokes answered."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        lines = response.read().decode().splitlines()

    def values(name: str) -> list[float]:
        return [float(line.rpartition(" ")[2]) for line in lines if line.startswith(name + "{")]

    ranking = values("qac_ranking_cpu_seconds_total")
    return (sum(ranking) if ranking else None), int(sum(values("qac_completion_seconds_count")))


if __name__ == "__main__":
    raise SystemExit(main())
