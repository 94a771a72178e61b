"""Query-time retrieval: encode the question, search one space (dense, BM25 or hybrid), optionally rerank.

Scores. `score` is what the ranking used: cosine (dense), BM25 (sparse), the fused score (hybrid: RRF
or DBSF, not comparable to a cosine) or the cross-encoder's score (rerank). `dense_score` is the cosine
between question and chunk whenever the dense vector took part (dense, hybrid), so a relevance threshold
means the same thing in both modes. `cross_score` is the cross-language model's cosine between question and
chunk, for questions that got cross-language search (else None): an answer in another language than the
question can have a low `dense_score` and a clear `cross_score`, and /ask's gate looks at both.

Cross-language. With a cross-language embedder (CROSS_LANGUAGE_MODEL) and a store that holds its vector,
dense and hybrid queries add a third list, that model's nearest chunks, to the fusion; CROSS_LANGUAGE
decides per query (auto: unless the space holds one language and the question is in it; languages.py).
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from backend.errors import InvalidRequest, SpaceNotFound
from backend.domain import validate_space
from backend.retrieval.index import DocumentIndex
from backend.retrieval.embedders.base import Embedder
from backend.retrieval.fusion import weighted_dbsf
from backend.retrieval.languages import LanguageMixCache, split_languages, wants_cross
from backend.retrieval.rerank import Reranker
from backend.retrieval.sparse import SparseEncoder
from backend.retrieval.stores.base import (
    SEARCH_MODES,
    Filter,
    FusionKind,
    Hit,
    SearchMode,
    SearchQuery,
    SparseVec,
    VectorStore,
    is_search_mode,
)

if TYPE_CHECKING:
    from backend.settings import Settings

MAX_QUERY_CHARS = 2000
# Payload keys returned with every result (the embedded text itself is "text").
RESULT_FIELDS = ("text", "doc_id", "path", "chunk_index", "page", "heading", "content_hash")


@dataclass(frozen=True)
class RetrievalConfig:
    """Query-time knobs (from the settings; the mode can be overridden per request)."""

    mode: SearchMode = "hybrid"
    fusion: FusionKind = "rrf"
    dense_weight: float = 1.0
    sparse_weight: float = 1.0
    rrf_k: int = 60
    candidates: int = 40
    rerank_candidates: int = 20
    max_top_k: int = 50
    cross_language: Literal["auto", "always", "never"] = "auto"  # only with a cross-language embedder
    cross_weight: float = 0.75  # DBSF weights of a cross-language query's lists (a dense list per language: 1)
    cross_sparse_weight: float = 0.2

    @classmethod
    def from_settings(cls, s: Settings) -> "RetrievalConfig":
        return cls(s.search_mode, s.fusion, s.hybrid_dense_weight, s.hybrid_sparse_weight, s.rrf_k,
                   s.hybrid_candidates, s.rerank_candidates, s.search_max_top_k, s.cross_language, s.cross_weight,
                   s.cross_sparse_weight)


@dataclass
class Retrieved:
    """Search results plus where the time went."""

    results: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    mode: SearchMode = "hybrid"
    reranked: bool = False
    cross_language: bool = False  # the cross-language list took part


class Retriever:
    """Encodes a query and searches one space."""

    def __init__(
        self,
        embedder: Embedder,
        sparse: SparseEncoder,
        index: DocumentIndex,
        config: RetrievalConfig = RetrievalConfig(),
        reranker: Reranker | None = None,
        cross: Embedder | None = None,
    ):
        """`cross`: the cross-language embedder; used only when the index stores its vector."""
        self.embedder = embedder
        self.sparse = sparse
        self.index = index
        self.config = config
        self.reranker = reranker
        self.cross = cross if cross is not None and getattr(index, "cross", None) is not None else None
        self.languages = LanguageMixCache(index.language_mix)

    def _check(
        self, q: str, space_id: str, top_k: int, mode: str | None, rerank: bool | None
    ) -> tuple[str, SearchMode, bool]:
        validate_space(space_id)
        q = (q or "").strip()
        if not q or all(unicodedata.category(ch).startswith("C") for ch in q):
            raise InvalidRequest("q must not be empty (or only control characters)")
        if any("\ud800" <= ch <= "\udfff" for ch in q):  # JSON can carry a lone surrogate; no tokenizer takes one
            raise InvalidRequest("q is not valid Unicode text (it holds a lone surrogate)")
        if len(q) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"q is too long ({len(q)} characters, at most {MAX_QUERY_CHARS})")
        if not 1 <= top_k <= self.config.max_top_k:
            raise InvalidRequest(f"top_k must be between 1 and {self.config.max_top_k}")
        mode = mode or self.config.mode
        if not is_search_mode(mode):
            raise InvalidRequest(f"mode must be one of {', '.join(SEARCH_MODES)}")
        if rerank and self.reranker is None:
            raise InvalidRequest("rerank was requested but no reranking model is configured (RERANK_MODEL)")
        return q, mode, self.reranker is not None if rerank is None else rerank

    def _wants_cross(self, q: str, space_id: str) -> bool:
        if self.cross is None or self.config.cross_language == "never":
            return False
        mix = self.languages.get(space_id) if self.config.cross_language == "auto" else None
        return wants_cross(self.config.cross_language, mix, q)

    def _cross_language_hits(
        self, space_id: str, mode: SearchMode, dense: np.ndarray | None, sparse: SparseVec | None, cross: np.ndarray,
        limit: int,
    ) -> tuple[list[Hit], dict[str, float]]:
        languages, rest = split_languages(self.languages.get(space_id))
        return cross_language_search(self.index.store, space_id, languages, rest, mode, dense, sparse, cross, self.config, limit)

    def search(self, q: str, space_id: str, top_k: int = 5, mode: str | None = None, rerank: bool | None = None) -> Retrieved:
        q, search_mode, rerank = self._check(q, space_id, top_k, mode, rerank)
        t0 = time.perf_counter()
        cross_scores: dict[str, float] = {}
        dense = self.embedder.embed_query(q) if search_mode != "sparse" else None
        sparse = self.sparse.embed_query(q) if search_mode != "dense" else None
        cross_embedder = self.cross
        cross = (
            cross_embedder.embed_query(q)
            if cross_embedder is not None and search_mode != "sparse" and self._wants_cross(q, space_id)
            else None
        )
        t1 = time.perf_counter()
        no_terms = sparse is not None and not sparse.indices  # a question of stopwords only
        if search_mode == "hybrid" and no_terms:
            search_mode, sparse = "dense", None  # BM25 has nothing to add
        hits: list[Hit]
        if search_mode == "sparse" and no_terms:
            hits = []
        else:
            c = self.config
            limit = max(top_k, c.rerank_candidates) if rerank else top_k
            if cross is not None:
                hits, cross_scores = self._cross_language_hits(space_id, search_mode, dense, sparse, cross, limit)
            else:
                query = SearchQuery(
                    mode=search_mode, dense=dense, sparse=sparse, fusion=c.fusion, weights=(c.dense_weight, c.sparse_weight),
                    rrf_k=c.rrf_k, candidates=c.candidates, with_dense=(search_mode == "hybrid"),
                )
                hits = self.index.search(space_id, query, limit)
        t2 = time.perf_counter()
        if not hits and self.index.count(space_id) == 0:
            raise SpaceNotFound(f"space {space_id!r} has no documents; index some with cli.index_cli or POST /documents")
        results: list[dict[str, Any]] = []
        for h in hits:
            dense_score: float | None
            if search_mode == "dense" and cross is None:
                dense_score = h.score
            elif h.dense is not None and dense is not None:
                dense_score = float(np.dot(h.dense, dense) / max(np.linalg.norm(h.dense), 1e-12))
            else:
                dense_score = None
            results.append({
                "score": round(h.score, 6),
                "dense_score": None if dense_score is None else round(dense_score, 6),
                "cross_score": round(cross_scores[h.id], 6) if h.id in cross_scores else None,
                **{k: h.payload.get(k) for k in RESULT_FIELDS},
            })
        timings = {"embed_ms": round((t1 - t0) * 1000, 3), "search_ms": round((t2 - t1) * 1000, 3)}
        if rerank and results:
            assert self.reranker is not None, "_check refuses rerank without a reranker"
            scores = self.reranker.rerank(q, [r["text"] or "" for r in results])
            for r, s in zip(results, scores):
                r["score"] = round(s, 6)
            results.sort(key=lambda r: -r["score"])
            timings["rerank_ms"] = round((time.perf_counter() - t2) * 1000, 3)
        return Retrieved(results=results[:top_k], timings=timings, mode=search_mode, reranked=bool(rerank and results),
                         cross_language=cross is not None)


def cross_language_search(
    store: VectorStore, space_id: str, languages: list[str], rest: bool, mode: SearchMode, dense: np.ndarray | None,
    sparse: SparseVec | None, cross: np.ndarray, c: RetrievalConfig, limit: int,
) -> tuple[list[Hit], dict[str, float]]:
    """Dense (or hybrid) search for a question that may be in another language than its answer.

    Lists, fetched in one batch and fused by weighted DBSF (fusion.py): the embedder's nearest chunks
    once per language of the space (each language's scores normalised on their own: a multilingual
    embedder ranks a same-language distractor above an answer in another language, and this takes
    that bias out), the cross-language model's nearest chunks in the whole space, and in hybrid mode
    BM25 at a low weight. Weights and the split were chosen on the golden set (docs/retrieval.md).
    `rest`: some chunks are in none of `languages` (minor or unrecorded ones); one more embedder list
    over the whole space reaches them.

    Returns the hits and the cross-language model's cosine of each, by id (cross_cosines)."""
    space: dict[str, str | int] = {"space_id": space_id}
    # The lists carry ids and scores only (with_payload=False); payloads and vectors are fetched for the winners
    # alone (five lists of 40 payloads each cost more than all the searches: measured, eval/cross_cost.py).
    requests = [
        (SearchQuery("dense", dense=dense, with_payload=False), Filter(must={**space, "lang": lang})) for lang in languages
    ]
    if rest:
        requests.append((SearchQuery("dense", dense=dense, with_payload=False), Filter(must=space)))
    weights = [1.0] * len(requests)
    requests.append((SearchQuery("dense", cross=cross, with_payload=False), Filter(must=space)))
    weights.append(c.cross_weight)
    if mode == "hybrid":
        requests.append((SearchQuery("sparse", sparse=sparse, with_payload=False), Filter(must=space)))
        weights.append(c.cross_sparse_weight)
    lists = store.search_batch(requests, max(c.candidates, limit))
    fused = weighted_dbsf(lists, weights)[:limit]
    points = store.retrieve([h.id for h in fused], with_dense=True) if fused else {}
    hits = [replace(points[h.id], score=h.score) for h in fused if h.id in points]
    return hits, cross_cosines(store, space_id, cross, hits, lists[len(languages) + int(rest)])


def point_filter(space_id: str, payload: dict[str, Any]) -> Filter:
    """The filter that leaves one point of the space: a point's id derives from (space, path, version,
    chunk_index), and doc_id from the path (documents.py)."""
    return Filter(must={"space_id": space_id, **{k: payload[k] for k in ("doc_id", "version", "chunk_index") if k in payload}})


def cross_cosines(
    store: VectorStore, space_id: str, cross: np.ndarray, hits: list[Hit], cross_list: list[Hit]
) -> dict[str, float]:
    """The cross-language model's cosine between the question and each hit, by id.

    The cross-language list already holds it for the hits it ranked (its scores are cosines). A hit that
    only the e5 or BM25 lists brought in gets one search of that vector filtered down to its own point, all
    in one batch: the store returns the e5 vector with a point but not this one (no second interface to keep
    in step in both stores), and the exact cosine is what /ask's relevance gate compares."""
    known = {h.id: h.score for h in cross_list}
    missing = [h for h in hits if h.id not in known]
    if missing:
        requests = [(SearchQuery("dense", cross=cross, with_payload=False), point_filter(space_id, h.payload))
                    for h in missing]
        for hit, found in zip(missing, store.search_batch(requests, 2)):
            known.update((f.id, f.score) for f in found if f.id == hit.id)
    return {h.id: known[h.id] for h in hits if h.id in known}
