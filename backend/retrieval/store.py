"""The vector store role: one small interface, two implementations, one registry.

`VectorStore` is deliberately generic (upsert / search / scroll / count / delete / set_payload over
equality filters); the document semantics (ids, versions, staged commits) live in `DocumentIndex`, on
top, so both engines behave the same by construction and one contract test covers them.

Implementations: `EdgeStore` (Qdrant Edge, embedded, on disk under DATA_DIR; the default) and
`QdrantServerStore` (a Qdrant server through qdrant-client, when QDRANT_URL is set).

Every point carries two vectors in the same collection: `dense` (the embedder's, cosine) and `bm25` (a
sparse term-frequency vector; the engine applies IDF itself through the IDF modifier). A `SearchQuery`
says which to use; hybrid queries are fused inside the engine (prefetch both, then RRF or DBSF), so
there is no second index that could drift from the vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Mapping, Protocol, Sequence

import numpy as np

# Payload fields that get an index: the space key (every search filters on it, and it is the tenant
# key), plus the ones document bookkeeping filters on.
KEYWORD_INDEXES = ("space_id", "doc_id", "version")
INTEGER_INDEXES = ("chunk_index",)
DENSE_VECTOR = "dense"
SPARSE_VECTOR = "bm25"

SearchMode = Literal["dense", "sparse", "hybrid"]
SEARCH_MODES: tuple[str, ...] = ("dense", "sparse", "hybrid")
FusionKind = Literal["rrf", "dbsf"]


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
    """A point to write: id (UUID string), dense vector, sparse (BM25) vector, payload."""

    id: str
    vector: np.ndarray
    payload: dict[str, Any]
    sparse: SparseVec | None = None


@dataclass(frozen=True)
class SearchQuery:
    """What to search with. `dense` is needed for dense/hybrid, `sparse` for sparse/hybrid.

    Hybrid: each vector fetches `candidates` points, then the engine fuses the two lists: weighted RRF
    (score = sum of weight / (rrf_k + rank)) or DBSF (scores normalised by their distribution; no weights).
    `with_dense` asks for the dense vectors of the results back (to report a cosine in hybrid mode).
    """

    mode: SearchMode
    dense: np.ndarray | None = None
    sparse: SparseVec | None = None
    fusion: FusionKind = "rrf"
    weights: tuple[float, float] = (1.0, 1.0)  # (dense, sparse), for RRF
    rrf_k: int = 60
    candidates: int = 40
    with_dense: bool = False

    def __post_init__(self) -> None:
        if self.mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {self.mode!r}")
        if self.mode in ("dense", "hybrid") and self.dense is None:
            raise ValueError(f"{self.mode} search needs a dense vector")
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
    """A collection of points (a dense and a sparse vector each) with JSON payloads."""

    kind: str

    def upsert(self, points: Sequence[PointRecord]) -> None:
        """Insert or overwrite points by id."""
        ...

    def search(self, query: SearchQuery, flt: Filter, limit: int) -> list[Hit]:
        """The `limit` best points for `query` (dense, sparse or fused) that pass `flt`, best first."""
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

    def optimize(self) -> None:
        """Build indexes for recently written data, if the engine leaves that to the caller."""
        ...

    def health(self) -> dict:
        """Component status for /health: {"status": "ok"|"error", ...}."""
        ...

    def close(self) -> None:
        """Flush and release the store (files, locks, connections)."""
        ...


StoreFactory = Callable[..., VectorStore]


def create_store(settings, dim: int) -> VectorStore:
    """The store selected by the settings: Qdrant server when QDRANT_URL is set, else Qdrant Edge."""
    kind = "qdrant" if settings.qdrant_url else "edge"
    return STORES[kind](settings, dim)


def _edge(settings, dim: int) -> VectorStore:
    from backend.retrieval.edge_store import EdgeStore

    return EdgeStore(settings.embedded_store_dir, dim, min_free_bytes=settings.min_free_disk_bytes)


def _qdrant(settings, dim: int) -> VectorStore:
    from backend.retrieval.qdrant_store import QdrantServerStore

    return QdrantServerStore.from_url(
        settings.qdrant_url,
        collection=settings.qdrant_collection,
        dim=dim,
        api_key=settings.qdrant_api_key,
        timeout_s=settings.qdrant_timeout_s,
        shard_number=settings.qdrant_shard_number,
        replication_factor=settings.qdrant_replication_factor,
        write_consistency_factor=settings.qdrant_write_consistency_factor,
    )


STORES: dict[str, StoreFactory] = {"edge": _edge, "qdrant": _qdrant}
