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

__all__ = ["skeleton"]

# Default_Ignorable_Code_Point of Unicode 15.0's DerivedCoreProperties.txt. normalize()
# already drops the format characters among them (they are not word characters); the Hangul
# fillers are letters (Lo) and survive it.
_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]"
)
# Two single characters in a row, each between separators: "f u", "f_u".
_SINGLES = re.compile(r"(?:^|[ _])[^ _][ _][^ _](?:[ _]|$)")


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
    if text.isascii():
        if "_" not in text and not _SINGLES.search(text):
            return text  # most texts: nothing to fold
        return _joined(text.replace("_", " "))
    return _folded(text)


@lru_cache(maxsize=65536)
def _folded(text: str) -> str:
    """The skeleton of a text with other than ASCII in it (few texts: cached)."""
    text = _IGNORABLE.sub("", unicodedata.normalize("NFKD", text))
    text = "".join(c for c in text if not unicodedata.category(c).startswith("M"))
    return _joined(text.translate(_CONFUSABLES).lower().replace("_", " "))


def _joined(text: str) -> str:
    """Words of one character in a row joined into one word: ``"a f u c k"`` is ``"afuck"``."""
    out: list[str] = []
    run = ""
    for word in text.split():
        if len(word) == 1:
            run += word
            continue
        if run:
            out.append(run)
            run = ""
        out.append(word)
    if run:
        out.append(run)
    return " ".join(out)
