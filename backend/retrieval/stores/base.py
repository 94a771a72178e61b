"""The vector store role: the interface and the types it speaks in (no implementation is imported here).

`VectorStore` is deliberately generic (upsert / search / scroll / count / delete / set_payload over
equality filters); the document semantics (ids, versions, staged commits) live in `DocumentIndex`, on
top, so both engines behave the same by construction and one contract test covers them.

Implementations: `EdgeStore` (`stores.edge`: Qdrant Edge, embedded, on disk under DATA_DIR; the default) and
`QdrantServerStore` (`stores.qdrant`: a Qdrant server through qdrant-client, when QDRANT_URL is set); what the
two share of Qdrant's layout is in `stores.qdrant_layout`, and `stores.registry` picks one.

Every point carries two vectors in the same collection: `dense` (the embedder's, cosine) and `bm25` (a
sparse term-frequency vector; the engine applies IDF itself through the IDF modifier), and a third one,
`cross`, when a cross-language embedder is configured (CROSS_LANGUAGE_MODEL: a second dense vector from a
model that is strong across languages, docs/retrieval.md). A `SearchQuery` says which to use; several
lists are fused inside the engine (prefetch each, then RRF or DBSF), so there is no second index that
could drift from the vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Mapping, Protocol, Sequence, TypeGuard

import numpy as np

# The named vectors of every point.
DENSE_VECTOR = "dense"
SPARSE_VECTOR = "bm25"
CROSS_VECTOR = "cross"

SearchMode = Literal["dense", "sparse", "hybrid"]
SEARCH_MODES: tuple[str, ...] = ("dense", "sparse", "hybrid")
FusionKind = Literal["rrf", "dbsf"]


def is_search_mode(value: str) -> TypeGuard[SearchMode]:
    """Whether `value` is one of SEARCH_MODES (and so a `SearchMode` to the type checker)."""
    return value in SEARCH_MODES


@dataclass(frozen=True)
class Filter:
    """Equality conditions: every `must` field equals its value, no `must_not` field equals its value."""

    must: Mapping[str, str | int] = field(default_factory=dict)
    must_not: Mapping[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True)
class SparseVec:
    """A sparse vector: term ids (hashes) and their weights, same length."""

    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class PointRecord:
    """A point to write: id (UUID string), dense vector, sparse (BM25) vector, cross-language vector, payload."""

    id: str
    vector: np.ndarray
    payload: dict[str, Any]
    sparse: SparseVec | None = None
    cross: np.ndarray | None = None


@dataclass(frozen=True)
class SearchQuery:
    """What to search with. `dense` is needed for dense/hybrid, `sparse` for sparse/hybrid.

    Hybrid: each vector fetches `candidates` points, then the engine fuses the lists: weighted RRF
    (score = sum of weight / (rrf_k + rank)) or DBSF (scores normalised by their distribution; no weights).
    `cross` (the cross-language model's query vector) adds its own list to dense and hybrid queries, so a
    dense query with it is fused too. `with_dense` asks for the dense vectors of the results back (to
    report a cosine whenever the score is a fused one).
    """

    mode: SearchMode
    dense: np.ndarray | None = None
    sparse: SparseVec | None = None
    fusion: FusionKind = "rrf"
    weights: tuple[float, float] = (1.0, 1.0)  # (dense, sparse), for RRF
    rrf_k: int = 60
    candidates: int = 40
    with_dense: bool = False
    cross: np.ndarray | None = None
    cross_weight: float = 1.0  # RRF weight of the cross-language list (when fused in the engine)
    with_payload: bool = True  # False: ids and scores only (lists fused by the caller, who fetches the winners)

    def lists(self) -> list[str]:
        """The vectors this query searches (one list each), in fusion order."""
        names = [DENSE_VECTOR] if self.mode in ("dense", "hybrid") and self.dense is not None else []
        if self.cross is not None and self.mode in ("dense", "hybrid"):
            names.append(CROSS_VECTOR)
        if self.mode in ("sparse", "hybrid"):
            names.append(SPARSE_VECTOR)
        return names

    def rrf_weights(self) -> list[float]:
        """The RRF weight of each list, in `lists()` order."""
        weight = {DENSE_VECTOR: self.weights[0], SPARSE_VECTOR: self.weights[1], CROSS_VECTOR: self.cross_weight}
        return [weight[name] for name in self.lists()]

    def __post_init__(self) -> None:
        if self.mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {self.mode!r}")
        if self.mode in ("dense", "hybrid") and self.dense is None and self.cross is None:
            raise ValueError(f"{self.mode} search needs a dense vector (or a cross-language one)")
        if self.mode in ("sparse", "hybrid") and self.sparse is None:
            raise ValueError(f"{self.mode} search needs a sparse vector")


@dataclass(frozen=True)
class Hit:
    """A search result: point id, score (cosine, BM25 or fused, per the query's mode), payload, and the
    dense vector when the query asked for it."""

    id: str
    score: float
    payload: dict[str, Any]
    dense: np.ndarray | None = None


class VectorStore(Protocol):
    """A collection of points (a dense and a sparse vector each, maybe a cross-language one) with JSON payloads."""

    kind: str
    cross_dim: int | None  # dimension of the `cross` vector, None when the store has none

    def upsert(self, points: Sequence[PointRecord]) -> None:
        """Insert or overwrite points by id."""
        ...

    def search(self, query: SearchQuery, flt: Filter, limit: int) -> list[Hit]:
        """The `limit` best points for `query` (dense, sparse or fused) that pass `flt`, best first."""
        ...

    def search_batch(self, requests: Sequence[tuple[SearchQuery, Filter]], limit: int) -> list[list[Hit]]:
        """Several searches in one call to the engine (one planned pass, one round trip): a list per request."""
        ...

    def retrieve(self, ids: Sequence[str], with_dense: bool = False) -> dict[str, Hit]:
        """The points with these ids (payload, and dense vector if asked), by id; score 0."""
        ...

    def scroll(self, flt: Filter, fields: Sequence[str] | None = None, batch: int = 256) -> Iterator[dict]:
        """Every payload passing `flt` (only `fields` when given), in id order."""
        ...

    def count(self, flt: Filter) -> int:
        """Exact number of points passing `flt`."""
        ...

    def delete(self, flt: Filter) -> None:
        """Delete every point passing `flt`."""
        ...

    def set_payload(self, flt: Filter, payload: Mapping[str, Any]) -> None:
        """Set `payload` keys on every point passing `flt` (other keys kept)."""
        ...

    def facet(self, key: str, flt: Filter, limit: int = 32) -> dict[str, int]:
        """Number of points per value of the keyword payload `key` among those passing `flt`."""
        ...

    def optimize(self) -> None:
        """Build indexes for recently written data, if the engine leaves that to the caller."""
        ...

    def health(self) -> dict:
        """Component status for /health: {"status": "ok"|"error", ...}."""
        ...

    def close(self) -> None:
        """Flush and release the store (files, locks, connections)."""
        ...
