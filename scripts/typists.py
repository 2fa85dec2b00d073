"""Human-paced typists against a running server, for one load figure (e.g. Redis vs memory).

    python -m scripts.typists --url ws://127.0.0.1:8000/ws --pairs dev.pairs.jsonl --users 100

Each typist replays dev sessions keystroke by keystroke, one every 150-250 ms (or with no
pause: ``--no-pause``), through the load generator `qac bench` uses; prints the report as JSON.
"""

from __future__ import annotations

import argparse
import json

from replay.loadgen import chain_pairs, run_load
from replay.scripts import scripts_from_pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--limit", type=int, default=2000, help="pairs to draw sessions from")
    ap.add_argument("--no-pause", action="store_true", help="saturation: type without pauses, as qac bench does")
    args = ap.parse_args()
    scripts = chain_pairs(scripts_from_pairs(args.pairs, args.limit))
    pause = {"pause": None} if args.no_pause else {}
    report = run_load(args.url, scripts, users=args.users, duration=args.duration, **pause)
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, (list, dict))}))


if __name__ == "__main__":
    main()
