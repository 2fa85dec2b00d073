"""Query normalization, shared by indexing, serving and evaluation."""

from __future__ import annotations

import re
import unicodedata

# The longest query the indexer keeps, and so the server's default --max-prefix: a longer
# query could never be typed or submitted whole.
MAX_QUERY_CHARS = 200

# What normalize() does, recorded in every model's manifest ("normalization"): 2 applies NFKC
# before splitting.
NORMALIZATION = 2

_SPLIT = re.compile(r"[\s.]+")
_NON_WORD = re.compile(r"\W+")
# An ASCII text that normalize() leaves as it is (with one trailing space: normalize_prefix());
# the server's session queries and most typed prefixes already are.
_NORMAL = re.compile(r"[0-9a-z_]+(?: [0-9a-z_]+)*")
_NORMAL_PREFIX = re.compile(r"[0-9a-z_]+(?: [0-9a-z_]+)* ?")


def normalize(query: str) -> str:
    """Normalize a query as the AOL QAC protocol does, after Unicode NFKC.

    NFKC first (full-width ``Ｎｅｗ`` is ``New``, the ligature ``ﬁ`` is ``fi``, ``e`` with a
    combining accent is ``é``), then split on whitespace and ``.``, strip non-word characters
    from each piece, drop empty pieces, join with single spaces, lowercase. ``"St. Louis Cardinals!"`` becomes
    ``"st louis cardinals"``; a query with nothing left becomes ``""``.
    """
    if query.isascii():
        if _NORMAL.fullmatch(query):
            return query
    else:
        query = unicodedata.normalize("NFKC", query)
    pieces = (_NON_WORD.sub("", piece) for piece in _SPLIT.split(query))
    return " ".join(piece for piece in pieces if piece).lower()


def normalize_prefix(prefix: str) -> str:
    """Normalize a prefix as typed, keeping one trailing space if the user typed a separator.

    ``"new y"`` stays ``"new y"`` and ``"new "`` stays ``"new "``: the trailing space says the
    last word is finished, which ranking needs to know.
    """
    if prefix.isascii() and _NORMAL_PREFIX.fullmatch(prefix):
        return prefix
    norm = normalize(prefix)
    if norm and prefix and _SPLIT.fullmatch(prefix[-1]):
        return norm + " "
    return norm
