"""Soak run: normal typists while a flooder, garbage senders, a reconnect storm, a connection
hoarder and a GET /complete flooder abuse the server in windows between quiet ones, with a
model reload half-way (see replay/soak.py).

    python -m scripts.soak --index models/aol --pairs data/aol-top1000/dev.pairs.jsonl

Prints the figures BENCHMARKS.md#soak records; exits 1 if the typists' p99 in the abused windows is
over twice the one in the quiet windows (each side pooled), or a typist saw an error, or the
reload failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from replay.soak import SoakConfig, markdown, run_soak


def main() -> int:
    d = SoakConfig(Path("."), Path("."))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True, help="model directory to serve")
    ap.add_argument("--pairs", type=Path, required=True, help="evaluation pairs the typists type")
    ap.add_argument("--reload-index", type=Path, help="model to reload half-way (default: --index again)")
    ap.add_argument("--no-reload", dest="reload", action="store_false", help="no reload half-way")
    ap.add_argument("--workers", type=int, default=d.workers)
    ap.add_argument("--sessions", default=d.sessions,
                    help="the server's session store; more than one worker needs redis://HOST:PORT/DB")
    ap.add_argument("--users", type=int, default=d.users, help="normal typists")
    ap.add_argument("--quiet-seconds", type=float, default=d.quiet_seconds,
                    help="quiet time in all, over ROUNDS + 1 windows (default %(default)g)")
    ap.add_argument("--abuse-seconds", type=float, default=d.abuse_seconds,
                    help="abused time in all, over ROUNDS windows (default %(default)g)")
    ap.add_argument("--rounds", type=int, default=d.rounds,
                    help="abused windows, each between two quiet ones (default %(default)d)")
    ap.add_argument("--flooders", type=int, default=d.flooders)
    ap.add_argument("--flood-rate", type=float, default=d.flood_rate, help="messages/s per flooder")
    ap.add_argument("--garbage-senders", type=int, default=d.garbage_senders)
    ap.add_argument("--garbage-rate", type=float, default=d.garbage_rate, help="frames/s per garbage sender")
    ap.add_argument("--storm-rate", type=float, default=d.storm_rate, help="connections opened and dropped per s")
    ap.add_argument("--no-hoarder", dest="hoarder", action="store_false",
                    help="no client opening connections from one address until refused")
    ap.add_argument("--complete-flooders", type=int, default=d.complete_flooders,
                    help="concurrent GET /complete loops from one address")
    ap.add_argument("--abuser-nice", type=int, default=d.abuser_nice,
                    help="run the abusers' processes at this niceness: they then take the cores only when the "
                         "server and the typists leave them, as abusers on other machines would (default 19; "
                         "0 makes them compete with the server for this machine's cores)")
    ap.add_argument("--no-abuser-idle", dest="abuser_idle", action="store_false",
                    help="do not run the abusers' processes under SCHED_IDLE (by default they take a core only "
                         "when nothing else wants it)")
    ap.add_argument("--json", type=Path, help="also write the whole report here")
    args = vars(ap.parse_args())
    out = args.pop("json")
    try:
        report = run_soak(SoakConfig(**args), say=lambda text: print(text, file=sys.stderr))
    except ValueError as exc:
        ap.error(str(exc))
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
