"""BM25 sparse vectors, computed with the BM25 encoder that ships inside Qdrant Edge.

The same vectors go to both stores (Edge and a Qdrant server): term weights are BM25's term-frequency
part, and the engine multiplies in IDF at query time (the collection's sparse vector has the IDF
modifier), so the statistics are always those of what is actually stored.

Languages. The engine offers stemmers and stopwords for Russian and English (and ~20 more), none for
Polish. With `BM25_LANGUAGE=auto` each chunk is analysed by the analyzer of its detected language:
  - Cyrillic text -> `russian` (Snowball stemmer + stopwords),
  - Latin text with non-English letters (Polish diacritics, ...) -> `neutral`: no stemming, no stopwords,
    accents folded (so `blad` finds `błąd`, as users type without diacritics),
  - other Latin text -> `english` (Snowball stemmer + stopwords).
A query is analysed by every analyzer and the term sets are united: its terms then meet each document
in the form that document was indexed in, without guessing the query's language (which is unreliable
for a five-word question, and irrelevant to cross-language search). English and Russian stopwords are
dropped by every analyzer and Polish ones (our list; the engine has none) by the neutral one, so a
question's function words rarely match on their own. A fixed language (`english`, `russian`, `german`, ...)
analyses everything one way; `none` uses the neutral analyzer only.

Identifiers. The engine's word tokenizer cuts `ERR-4521`, `v3.14.2` or `max_conn_pool` into pieces
(`err`, `4521`; `v3`, `14`, `2`), each common on its own. Every identifier-like word (digits or `_`
together with letters or separators) is therefore also indexed whole, as one extra term with a BM25
weight of its own: a rare term the IDF makes decisive, which is what exact-term search needs.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

import qdrant_edge as qe

from backend.retrieval.stores.base import SparseVec

# Bump when the analysis changes (documents are then re-indexed: it is part of their version).
ANALYSIS_VERSION = "2"
# Words per chunk, roughly: BM25 normalises term frequency by length relative to this.
WORDS_PER_TOKEN = 0.75
_POLISH_LETTERS = set("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ")
# Polish function words (the engine ships no Polish list), with and without diacritics, since the neutral
# analyzer folds accents.
_POLISH_STOPWORDS = """a aby ale bo by być był była było były będzie będą czy dla do gdy gdzie go i ich ile im
ja jak jaki jaka jakie jako je jego jej jest jeszcze jeśli już ją kiedy kto która które który ktory ktora
ktore lub ma mają mi mnie może można musi na nad nie niż nich nim o od oraz po pod przez przy się sa są
ta tak także tam te tego tej ten też to tu tym u w we więc wiec z za ze że ze żeby zeby co czym jesli juz
moze mozna nizli byc byl byla bylo byly bedzie beda takze tez""".split()
# Identifier-like words: a digit or "_" together with letters or separators (ERR-4521, v3.14.2, E1174,
# max_conn_pool, SRV-R740-0193); plain numbers and plain words are left to the word tokenizer.
_WORD = re.compile(r"\w[\w.\-/]*\w")
_ID_SALT = b"\x00identifier:"


def identifier_terms(text: str) -> list[str]:
    """The identifier-like words of a text, lower-cased, in order (duplicates kept)."""
    terms = []
    for word in _WORD.findall(text):
        has_digit_or_underscore = any(c.isdigit() or c == "_" for c in word)
        mixed = any(c.isalpha() for c in word) or any(c in ".-/_" for c in word)
        if len(word) >= 3 and has_digit_or_underscore and mixed:
            terms.append(word.lower().rstrip(".-/"))
    return terms


def _identifier_index(term: str) -> int:
    # A stable 31-bit id, salted apart from the engine's own term hashes (collisions: ~vocabulary / 2^31).
    return zlib.crc32(_ID_SALT + term.encode("utf-8")) & 0x7FFFFFFF


class SparseEncoder(Protocol):
    """Text -> sparse vector, for documents (term weights) and queries (the terms to match)."""

    def embed_documents(self, texts: Sequence[str]) -> list[SparseVec]:
        ...

    def embed_query(self, text: str) -> SparseVec:
        ...

    def fingerprint(self) -> str:
        """Everything that shapes the vectors: part of every document's version."""
        ...


def detect_script_language(text: str) -> str:
    """'russian', 'polish', 'latin-other' or 'english', from the letters alone (cheap, per chunk).

    Enough to pick an analyzer for the languages the engine can stem; not a general language detector.
    """
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return "english"
    cyrillic = sum("\u0400" <= ch <= "\u04ff" for ch in letters)
    if cyrillic / len(letters) > 0.3:
        return "russian"
    polish = sum(ch in _POLISH_LETTERS for ch in letters)
    if polish / len(letters) > 0.004:  # Polish prose has ~5% of them; an English text quoting one name, ~0
        return "polish"
    if sum(not ch.isascii() for ch in letters) / len(letters) > 0.01:
        return "latin-other"
    return "english"


# Language codes of the detected scripts, as stored with each chunk (`lang`) and listed per space.
LANGUAGE_CODES = {"russian": "ru", "polish": "pl", "english": "en", "latin-other": "latin"}


def chunk_language(text: str) -> str:
    """'ru', 'pl', 'en' or 'latin' (other Latin-script languages): the script-level language of a text."""
    return LANGUAGE_CODES[detect_script_language(text)]


# Analyzer per detected script for `auto`.
AUTO_ANALYZER = {"russian": "russian", "english": "english", "polish": "neutral", "latin-other": "neutral"}


def _analyzer(name: str, k: float, b: float, avg_len: float) -> qe.Bm25:
    # Every analyzer drops English and Russian function words (a query goes through all of them); the
    # neutral one also drops Polish ones.
    stopwords = qe.StopwordsSet(
        languages={qe.Language.English, qe.Language.Russian}, custom=set(_POLISH_STOPWORDS) if name == "neutral" else set()
    )
    if name == "neutral":
        config = qe.Bm25Config(
            k=k, b=b, avg_len=avg_len, ascii_folding=True, stemmer=qe.DisabledStemmer(), stopwords=stopwords
        )
    elif name in ("english", "russian"):
        config = qe.Bm25Config(k=k, b=b, avg_len=avg_len, language=name, stopwords=stopwords)
    else:
        config = qe.Bm25Config(k=k, b=b, avg_len=avg_len, language=name)
    try:
        return qe.Bm25(config)
    except ValueError as exc:  # settings check BM25_LANGUAGE against their list of these (BM25_LANGUAGES)
        raise ValueError(f"BM25_LANGUAGE={name!r}: {exc} (use auto, none or a language the engine stems)") from exc


def _merge(vectors: Iterable[qe.SparseVector], extra: dict[int, float]) -> SparseVec:
    terms: dict[int, float] = dict(extra)
    for v in vectors:
        for i, w in zip(v.indices, v.values):
            terms[i] = max(w, terms.get(i, 0.0))
    ordered = sorted(terms)
    return SparseVec(ordered, [terms[i] for i in ordered])


@dataclass
class Bm25Encoder:
    """BM25 with per-chunk language analysis (`auto`), one fixed language, or none (`none`)."""

    language: str = "auto"
    k: float = 1.2
    b: float = 0.75
    avg_len: float = 150.0

    def __post_init__(self) -> None:
        self.language = self.language.strip().lower()
        names = sorted(set(AUTO_ANALYZER.values())) if self.language == "auto" else [
            "neutral" if self.language == "none" else self.language
        ]
        self._analyzers = {name: _analyzer(name, self.k, self.b, self.avg_len) for name in names}

    def _doc_analyzer(self, text: str) -> qe.Bm25:
        if self.language == "auto":
            return self._analyzers[AUTO_ANALYZER[detect_script_language(text)]]
        return next(iter(self._analyzers.values()))

    def _identifier_weights(self, text: str) -> dict[int, float]:
        """BM25 term-frequency weights of the text's identifiers, as the engine weighs its own terms."""
        counts = Counter(identifier_terms(text))
        if not counts:
            return {}
        norm = self.k * (1 - self.b + self.b * len(_WORD.findall(text)) / self.avg_len)
        return {_identifier_index(t): tf * (self.k + 1) / (tf + norm) for t, tf in counts.items()}

    def embed_documents(self, texts: Sequence[str]) -> list[SparseVec]:
        return [_merge([self._doc_analyzer(t).embed_document(t)], self._identifier_weights(t)) for t in texts]

    def embed_query(self, text: str) -> SparseVec:
        ids = {_identifier_index(t): 1.0 for t in identifier_terms(text)}
        return _merge((a.embed_query(text) for a in self._analyzers.values()), ids)

    def fingerprint(self) -> str:
        return f"bm25:{self.language}:k={self.k}:b={self.b}:avg={self.avg_len}:v{ANALYSIS_VERSION}"


def create_sparse_encoder(settings) -> SparseEncoder:
    """The BM25 encoder configured by BM25_LANGUAGE (its length norm follows CHUNK_TOKENS)."""
    return Bm25Encoder(language=settings.bm25_language, avg_len=round(settings.chunk_tokens * WORDS_PER_TOKEN))
