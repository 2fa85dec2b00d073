"""Write indexer/data/confusables.txt, the look-alike table of indexer/skeleton.py, from a
Unicode TR39 ``confusables.txt``.

    python -m scripts.make_confusables CONFUSABLES_TXT > indexer/data/confusables.txt

Kept: each character that can survive :func:`indexer.normalize.normalize` (alphanumeric,
NFKC-stable, lowercase), is not ASCII and does not fold to ASCII by dropping its accents,
and whose TR39 prototype folds to ASCII letters or digits; it maps to that prototype,
lowercased. Text is matched lowercased, so the lowercase form of an uppercase look-alike
(Greek ``Κ`` is ``κ`` once normalized) maps to its uppercase's prototype unless it has
one of its own. indexer/data/CONFUSABLES-SOURCE.md says where the input came from.
"""

from __future__ import annotations

import re
import sys
import unicodedata

_ASCII = re.compile(r"[a-z0-9]+")


def fold(text: str) -> str:
    """NFKD without combining marks: ``é`` is ``e``."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.category(c).startswith("M"))


def survives(c: str) -> bool:
    """Whether ``c`` can be in a normalized text, and is not ASCII once folded."""
    return (c.isalnum() and unicodedata.normalize("NFKC", c) == c and c.lower() == c
            and fold(c) == c and not c.isascii())


def table(lines: list[str]) -> dict[str, str]:
    """Each look-alike character and the ASCII it is matched as."""
    own: dict[str, str] = {}
    lowered: dict[str, str] = {}
    for line in lines:
        fields = [f.strip() for f in line.split("#", 1)[0].split(";")]
        if len(fields) < 2 or " " in fields[0] or not fields[0]:
            continue
        source = chr(int(fields[0], 16))
        target = fold(unicodedata.normalize("NFKC", "".join(chr(int(x, 16)) for x in fields[1].split()))).lower()
        if not _ASCII.fullmatch(target):
            continue
        if survives(source):
            own[source] = target
        elif survives(source.lower()):
            lowered.setdefault(source.lower(), target)
    return {c: own.get(c, lowered.get(c, "")) for c in sorted({*own, *lowered})}


def main() -> int:
    with open(sys.argv[1], encoding="utf-8-sig") as f:
        lines = f.readlines()
    version = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("# Version:")), "?")
    notice = next((ln[2:].strip() for ln in lines if ln.startswith("# ©")), "© Unicode, Inc.")
    rows = table(lines)
    print(f"# Latin look-alikes of Unicode TR39 confusables.txt version {version}, derived by")
    print("# scripts/make_confusables.py: code point ; ASCII it is matched as  # the character, its name.")
    print(f"# {notice} Unicode License (see CONFUSABLES-SOURCE.md beside this file).")
    print(f"# {len(rows)} characters.")
    for c, target in rows.items():
        print(f"{ord(c):04X} ; {target}  # {c} {unicodedata.name(c, '?')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
