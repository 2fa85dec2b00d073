"""The form of a text that blocked and sensitive terms are matched on: its look-alike skeleton.

A normalized text (:func:`indexer.normalize.normalize`) is folded so that spellings made to
slip past a list match it: accents are dropped (``fúck``), Latin look-alikes of other
scripts are read as the Latin letters they imitate (Cyrillic ``с`` in ``fuсk``: a subset of
Unicode TR39's confusables, ``indexer/data/confusables.txt``), invisible letters are removed
(the Hangul fillers, U+115F, U+1160, U+3164, U+FFA0, and every other default-ignorable code
point), ``_`` separates words like a space, and single characters spelled apart are joined
(``f u c k`` and ``f_u_c_k`` are ``fuck``; ``f.u.c.k`` normalizes to ``f u c k``). The
skeleton is used for matching only: what is shown is the text itself.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from importlib.resources import files

__all__ = ["skeleton", "skeleton_words"]

# Default_Ignorable_Code_Point of Unicode 15.0's DerivedCoreProperties.txt. normalize()
# already drops the format characters among them (they are not word characters); the Hangul
# fillers are letters (Lo) and survive it.
_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]"
)


def _table() -> dict[int, str]:
    out = {}
    text = (files("indexer") / "data" / "confusables.txt").read_text(encoding="utf-8")
    for line in text.splitlines():
        code, sep, target = line.split("#", 1)[0].partition(";")
        if sep:
            out[int(code, 16)] = target.strip()
    return out


_CONFUSABLES = _table()


def skeleton(text: str) -> str:
    """The look-alike skeleton of a normalized text (see the module's docstring)."""
    return " ".join(skeleton_words(text))


def skeleton_words(text: str) -> list[str] | tuple[str, ...]:
    """The words of :func:`skeleton` (what matching runs on every candidate of every keystroke)."""
    if text.isascii() and "_" not in text:
        words = text.split()
        if not words or min(map(len, words)) > 1:
            return words  # most texts: nothing to fold
        return _joined(words)
    return _folded(text)


@lru_cache(maxsize=65536)
def _folded(text: str) -> tuple[str, ...]:
    """The skeleton words of a text with ``_`` or other than ASCII in it (few texts: cached)."""
    if not text.isascii():
        text = _IGNORABLE.sub("", unicodedata.normalize("NFKD", text))
        text = "".join(c for c in text if not unicodedata.category(c).startswith("M"))
        text = text.translate(_CONFUSABLES).lower()
    return tuple(_joined(text.replace("_", " ").split()))


def _joined(words: list[str]) -> list[str]:
    """Words of one character in a row joined into one word: ``a f u c k`` is ``afuck``."""
    out: list[str] = []
    run = ""
    for word in words:
        if len(word) == 1:
            run += word
            continue
        if run:
            out.append(run)
            run = ""
        out.append(word)
    if run:
        out.append(run)
    return out
