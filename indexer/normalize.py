"""Query normalization, shared by indexing, serving and evaluation."""

from __future__ import annotations

import re

# The longest query the indexer keeps, and so the server's default --max-prefix: a longer
# query could never be typed or submitted whole.
MAX_QUERY_CHARS = 200

_SPLIT = re.compile(r"[\s.]+")
_NON_WORD = re.compile(r"\W+")


def normalize(query: str) -> str:
    """Normalize a query as the AOL QAC protocol does.

    Split on whitespace and ``.``, strip non-word characters from each piece, drop empty
    pieces, join with single spaces, lowercase. ``"St. Louis Cardinals!"`` becomes
    ``"st louis cardinals"``; a query with nothing left becomes ``""``.
    """
    pieces = (_NON_WORD.sub("", piece) for piece in _SPLIT.split(query))
    return " ".join(piece for piece in pieces if piece).lower()


def normalize_prefix(prefix: str) -> str:
    """Normalize a prefix as typed, keeping one trailing space if the user typed a separator.

    ``"new y"`` stays ``"new y"`` and ``"new "`` stays ``"new "``: the trailing space says the
    last word is finished, which ranking needs to know.
    """
    norm = normalize(prefix)
    if norm and prefix and _SPLIT.fullmatch(prefix[-1]):
        return norm + " "
    return norm
