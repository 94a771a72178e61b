"""Languages per space, and when a query is worth the cross-language vector.

Every chunk is stored with the language its BM25 analysis detected (`lang`: ru, pl, en, latin; sparse.py),
so a space's language mix is one facet count in the store, in both stores. `GET /spaces` lists it, and
the retriever asks it whether a question needs the cross-language list (CROSS_LANGUAGE=auto): in a
space that holds one language, a question in that same language gains nothing from it (the e5 + BM25
lists already are the same-language search the defaults were tuned for) and skips its ~2-5 ms.

The mix is cached per space for a short while: it changes only when documents are added or removed, and
counting it on every query would cost a facet scan per question. The cache is a hint, not state: a stale
mix only means one more or one fewer list for a few seconds, and every replica builds its own.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from backend.retrieval.sparse import chunk_language

# How long a space's language mix is reused before it is counted again.
MIX_TTL_S = 30.0
# Spaces whose mix is kept (the least recently counted is dropped first).
MIX_CACHE_SPACES = 1024
UNKNOWN = "unknown"
# A language counts for the space (its own list in cross-language queries; "one language" for auto) from
# this share of the space's chunks: a few quoted words of another language must not get a list of their
# own, whose best chunk DBSF would then lift to the top of every answer.
MIN_LANGUAGE_SHARE = 0.05
CROSS_POLICIES = ("auto", "always", "never")


class LanguageMixCache:
    """`get(space)`: chunks per language of a space, counted by `count(space)` at most every `ttl_s`."""

    def __init__(self, count: Callable[[str], dict[str, int]], ttl_s: float = MIX_TTL_S, clock=time.monotonic):
        self._count = count
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, tuple[float, dict[str, int]]] = {}
        self._lock = threading.Lock()

    def get(self, space_id: str) -> dict[str, int]:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(space_id)
        if entry is not None and now - entry[0] < self.ttl_s:
            return entry[1]
        mix = self._count(space_id)
        with self._lock:
            self._entries.pop(space_id, None)
            self._entries[space_id] = (now, mix)
            while len(self._entries) > MIX_CACHE_SPACES:
                self._entries.pop(next(iter(self._entries)))
        return mix

    def forget(self, space_id: str | None = None) -> None:
        """Drop the cached mix of a space (all spaces: None), e.g. after its documents changed."""
        with self._lock:
            if space_id is None:
                self._entries.clear()
            else:
                self._entries.pop(space_id, None)


def split_languages(mix: dict[str, int]) -> tuple[list[str], bool]:
    """(the space's languages holding at least MIN_LANGUAGE_SHARE of its chunks, whether any chunk is in none)."""
    total = sum(mix.values())
    major = [lang for lang, n in mix.items() if lang != UNKNOWN and total and n / total >= MIN_LANGUAGE_SHARE]
    return major, sum(mix[lang] for lang in major) < total


def question_language(q: str) -> str:
    """The question's script-level language (ru, pl, en, latin), as chunks are labelled.

    A Polish question typed without diacritics reads as 'en': in a Polish-only space that makes the
    retriever use the cross-language list anyway (a few ms more, never a worse ranking)."""
    return chunk_language(q)


def single_language(mix: dict[str, int] | None) -> str | None:
    """The space's one language, when it holds one (above MIN_LANGUAGE_SHARE, few unlabelled chunks); else None."""
    if not mix:
        return None
    languages, _ = split_languages(mix)
    if len(languages) != 1 or mix.get(UNKNOWN, 0) / max(sum(mix.values()), 1) >= MIN_LANGUAGE_SHARE:
        return None
    return languages[0]


def wants_cross(policy: str, mix: dict[str, int] | None, q: str) -> bool:
    """Whether a question should also be searched with the cross-language vector.

    `always` / `never` decide alone. `auto` skips it only when the space holds one language (above
    MIN_LANGUAGE_SHARE) and the question is in it; an empty, mixed or largely unlabelled space, or a
    question in another language, gets it."""
    if policy != "auto":
        return policy == "always"
    only = single_language(mix)
    return only is None or question_language(q) != only


def cross_use(policy: str, mix: dict[str, int] | None) -> str:
    """In words, which questions of a space get cross-language search (GET /spaces)."""
    if policy == "never":
        return "off"
    only = single_language(mix) if policy == "auto" else None
    return f"questions not in {only}" if only else "every question"
