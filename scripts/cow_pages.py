"""Which of the supervisor's pages a forked worker copies, and whose they are (run as root).

    qac build --log indexer/data/sample.tsv.gz --out models/sample    # the shipped sample, once
    python -m scripts.cow_pages --index models/sample \\
        --pairs tests/qac/data/dev-5-users.pairs.jsonl [--limit 300] [--top 25]

Does what ``qac serve --workers N`` does before it forks (imports the server, ``load_warm``,
``rank_ahead``, ``gc.freeze``), then forks a worker that ranks the typists' keystrokes
(``scripts/keystroke_cost.py``'s) through a :class:`server.completer.Completer`, as a worker does,
and waits. A third process, forked then (what it writes it copies for itself), finds the
objects and reads ``/proc/PID/pagemap`` of both: a virtual page present in both whose
physical frame differs was copied on write. It prints one JSON object: copied MB per mapping (``[heap]``, anonymous
memory, each ``.so``, each file) and, for the copied pages of anonymous memory and the heap,
per owner of the objects on them (the object that holds most bytes on a page owns it):

- ``model.<attribute path>``: what the model reaches through that attribute (its strings,
  tuples, dicts, lists and sets; ``(storage)``: the tables of its lists, dicts, sets and arrays);
- ``fresh answers``: what :func:`server.completer.rank_ahead` ranked;
- ``other: <type>``: every other object the collector tracks or reaches (modules, functions,
  code, classes, their dictionaries and constants), by its type;
- ``no object known, <mapping>``: free memory, or the interpreter's own.

``--limit 0`` ranks nothing: the copies the fork itself and the measuring cause (the noise).
Reading another process's physical frames needs root (``CAP_SYS_ADMIN``); without it every
frame reads as 0 and the script stops.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import gc
import json
import os
import signal
import sys
import types
from pathlib import Path

import numpy as np

PAGE = os.sysconf("SC_PAGE_SIZE")
_PRESENT = np.uint64(1 << 63)
_PFN = np.uint64((1 << 55) - 1)
_GC_FLAG = 1 << 14  # Py_TPFLAGS_HAVE_GC: a GC header of 16 bytes precedes the object


def _buffers(obj: object) -> list[tuple[int, int]]:
    """Separately allocated storage of a list, dict, set or array: (address, bytes)."""
    kind = type(obj)
    try:
        if kind is list:
            item = ctypes.c_void_p.from_address(id(obj) + 24).value
            allocated = ctypes.c_ssize_t.from_address(id(obj) + 32).value
            return [(item, allocated * 8)] if item else []
        if kind is dict:  # ma_keys (not the shared empty keys of an empty dict)
            keys = ctypes.c_void_p.from_address(id(obj) + 32).value
            return [(keys, sys.getsizeof(obj) - sys.getsizeof({}))] if keys and obj else []
        if kind in (set, frozenset):
            mask = ctypes.c_ssize_t.from_address(id(obj) + 32).value
            table = ctypes.c_void_p.from_address(id(obj) + 40).value
            return [(table, (mask + 1) * 16)] if mask >= 8 else []  # else the table is inline
        if isinstance(obj, np.ndarray) and obj.base is None:
            return [(obj.ctypes.data, obj.nbytes)]
    except (ValueError, TypeError):
        pass
    return []


def _extent(obj: object) -> tuple[int, int]:
    """The object's own memory: (address, bytes), with its GC header if it has one."""
    size = sys.getsizeof(obj)
    return (id(obj) - 16, size) if type(obj).__flags__ & _GC_FLAG else (id(obj), size)


def _named_children(obj: object) -> list[tuple[str, object]]:
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict) and not isinstance(obj, type):
        return [(f".{k}", v) for k, v in attrs.items()]
    return []


def owners(roots: dict[str, object], depth: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Every object reached from ``roots`` and then from what the collector tracks: their
    extents (starts, sizes) and owner numbers, and the owners' names. An object belongs to the
    first root that reaches it; under a root, to the path of instance attributes (up to
    ``depth`` deep) that reaches it."""
    names: list[str] = []
    index: dict[str, int] = {}
    seen: set[int] = set()
    starts: list[int] = []
    sizes: list[int] = []
    who: list[int] = []
    seen.update(id(x) for x in (names, index, seen, starts, sizes, who))  # the walk's own

    def add(addr: int, size: int, name: str) -> None:
        if name not in index:
            index[name] = len(names)
            names.append(name)
        starts.append(addr)
        sizes.append(size)
        who.append(index[name])

    def walk(root: object, name: str, named: bool) -> None:
        stack = [(root, name, 0)]
        seen.add(id(stack))
        while stack:
            obj, path, level = stack.pop()
            if id(obj) in seen or isinstance(obj, (types.ModuleType, type)) and obj is not root:
                continue
            seen.add(id(obj))
            if not named:  # by the object's own type
                path = f"other: {type(obj).__name__}"
            add(*_extent(obj), path)
            for extent in _buffers(obj):
                add(*extent, f"{path} (storage)")
            children = _named_children(obj) if named and level < depth else []
            if children:
                stack += [(v, path + k, level + 1) for k, v in children]
                stack += [(v, path, level) for v in gc.get_referents(obj) if not isinstance(v, dict)]
            else:
                stack += [(v, path, level) for v in gc.get_referents(obj)]

    for name, root in roots.items():
        walk(root, name, True)
    gc.unfreeze()  # gc.get_objects() leaves the frozen ones out
    tracked = gc.get_objects()
    seen.add(id(tracked))
    for obj in tracked:
        if id(obj) not in seen:
            walk(obj, "", False)
    return np.array(starts, dtype=np.int64), np.array(sizes, dtype=np.int64), np.array(who, dtype=np.int32), names


def page_owners(starts: np.ndarray, sizes: np.ndarray, who: np.ndarray, n_owners: int) -> dict[int, int]:
    """For each page that holds objects, the owner with the most bytes on it."""
    ends = starts + sizes
    first, last = starts // PAGE, (ends - 1) // PAGE
    small = first == last
    pages = [first[small]]
    owner = [who[small]]
    weight = [sizes[small]]
    for s, e, w in zip(starts[~small].tolist(), ends[~small].tolist(), who[~small].tolist()):
        for p in range(s // PAGE, (e - 1) // PAGE + 1):
            pages.append(np.array([p]))
            owner.append(np.array([w]))
            weight.append(np.array([min(e, (p + 1) * PAGE) - max(s, p * PAGE)]))
    page, own, wt = np.concatenate(pages), np.concatenate(owner), np.concatenate(weight)
    key = page * n_owners + own
    keys, summed = np.unique(key, return_inverse=False), None
    summed = np.bincount(np.searchsorted(keys, key), weights=wt)
    kpage, kown = keys // n_owners, keys % n_owners
    order = np.lexsort((-summed, kpage))  # per page, heaviest owner first
    kpage, kown = kpage[order], kown[order]
    firsts = np.concatenate(([True], kpage[1:] != kpage[:-1]))
    return dict(zip(kpage[firsts].tolist(), kown[firsts].tolist()))


def mappings(pid: int) -> list[tuple[int, int, str]]:
    """(start, end, name) of each mapping of ``pid``; anonymous ones named ``[anon]``."""
    out = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        name = fields[5] if len(fields) > 5 else "[anon]"
        if name != "[vsyscall]":
            out.append((lo, hi, name))
    return out


def frames(pid: int, lo: int, hi: int) -> np.ndarray:
    """The physical frame of each page in ``[lo, hi)`` of ``pid``; 0 where none is present."""
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        raw = os.pread(f.fileno(), (hi - lo) // PAGE * 8, lo // PAGE * 8)
    entries = np.frombuffer(raw, dtype=np.uint64)
    return np.where(entries & _PRESENT, entries & _PFN, np.uint64(0))


def copied(parent: int, child: int) -> dict[str, np.ndarray]:
    """The virtual page numbers ``child`` holds a copy of, per mapping name."""
    out: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    for lo, hi, name in mappings(child):
        mine, theirs = frames(child, lo, hi), frames(parent, lo, hi)
        diff = (mine != 0) & (theirs != 0) & (mine != theirs)
        out[name].append(np.flatnonzero(diff) + lo // PAGE)
    return {k: np.concatenate(v) for k, v in out.items()}


def _label(name: str) -> str:
    return name if name.startswith("[") else Path(name).name


def report(parent: int, child: int, page_owner: dict[int, int], names: list[str], top: int) -> dict[str, object]:
    mb = PAGE / 2**20
    by_mapping: collections.Counter[str] = collections.Counter()
    by_owner: collections.Counter[str] = collections.Counter()
    for name, pages in copied(parent, child).items():
        by_mapping[_label(name)] += len(pages)
        if name in ("[heap]", "[anon]"):
            for p in pages.tolist():
                o = page_owner.get(p)
                by_owner[f"no object known, {name}" if o is None else names[o]] += 1
    return {"copied_mb": round(sum(by_mapping.values()) * mb, 2),
            "by_mapping_mb": {k: round(v * mb, 2) for k, v in by_mapping.most_common(top) if v},
            "heap_and_anon_by_owner_mb": {k: round(v * mb, 2) for k, v in by_owner.most_common(top)}}


def _keystrokes(pairs: str, limit: int) -> list[tuple[str, tuple[str, ...]]]:
    from replay.loadgen import chain_pairs
    from replay.scripts import scripts_from_pairs, typed_keystrokes

    return list(typed_keystrokes(chain_pairs(scripts_from_pairs(pairs, limit)))) if limit > 0 else []


def _serve(model: object, index: str, keystrokes: list[tuple[str, tuple[str, ...]]]) -> object:
    """Rank ``keystrokes`` as a worker does; returns the completer (kept, as a worker keeps it)."""
    from server.completer import Completer

    completer = Completer(model, index, threads=0, k=10)  # type: ignore[arg-type]

    async def run() -> None:
        for prefix, session in keystrokes:
            await completer.complete(prefix, session, context=bool(session))

    asyncio.run(run())
    return completer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="model directory")
    ap.add_argument("--pairs", required=True, help="dev pairs (JSON lines), as scripts/typists.py reads them")
    ap.add_argument("--limit", type=int, default=300, help="pairs typed by the worker (0: none)")
    ap.add_argument("--top", type=int, default=25, help="rows per table")
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("run as root: reading other processes' physical frames needs it")
    import server.main  # noqa: F401  (what the supervisor has imported when it forks)
    from indexer.blocklist import Blocklist
    from server import completer

    index = str(Path(args.index).resolve())
    model = completer.load_warm(index)
    completer.rank_ahead(model, Blocklist(), 10, completer.FRESH_ANSWERS)
    gc.freeze()
    ready_r, ready_w = os.pipe()
    worker = os.fork()
    if worker == 0:
        # Read here: a worker's keystrokes come from its connections, not from the supervisor.
        kept = _serve(model, index, _keystrokes(args.pairs, args.limit))  # noqa: F841
        os.write(ready_w, b"1")
        signal.pause()
        os._exit(0)
    os.read(ready_r, 1)
    measurer = os.fork()
    if measurer == 0:
        # Walked here, after the fork: what the walk allocates and frees is in no other process.
        starts, sizes, who, names = owners({"model": model, "fresh answers": completer._ranked_ahead})
        out = report(os.getppid(), worker, page_owners(starts, sizes, who, len(names)), names, args.top)
        if not any(frames(os.getpid(), lo, hi).any() for lo, hi, name in mappings(os.getpid())[:1]):
            print("cow_pages: physical frames read as 0: run as root", file=sys.stderr)
            os._exit(1)
        print(json.dumps({"index": args.index, "pairs": args.limit, **out}, indent=1), flush=True)
        os._exit(0)
    _, status = os.waitpid(measurer, 0)
    os.kill(worker, 9)
    os.waitpid(worker, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
