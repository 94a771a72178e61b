"""What the two Qdrant adapters share: the payload indexes, and how our types become Qdrant's.

Qdrant Edge (`qdrant_edge`) and qdrant-client (`qdrant_client.models`) spell the same concepts with different
constructors. A `QdrantTypes` names those constructors once per adapter; everything built from them (a `Filter`
as a Qdrant filter, a point's named vectors, the vector a query searches with, the prefetch-and-fuse plan of
a query over several lists, the hits read back) is written here once, so the two engines cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from backend.retrieval.stores.base import (
    CROSS_VECTOR,
    DENSE_VECTOR,
    SPARSE_VECTOR,
    Filter,
    Hit,
    PointRecord,
    SearchQuery,
    SparseVec,
)

# Payload fields that get an index: the space key (every search filters on it, and it is the tenant
# key), plus the ones document bookkeeping filters on.
TENANT_KEY = "space_id"
KEYWORD_INDEXES = (TENANT_KEY, "doc_id", "version", "lang")
INTEGER_INDEXES = ("chunk_index",)
# Points per write request: bounds one request's size whatever the document's.
UPSERT_BATCH = 512


@dataclass(frozen=True)
class QdrantTypes:
    """The constructors of one Qdrant binding, under one set of names."""

    match: Callable[[str, str | int], Any]  # the condition "payload field `key` equals `value`"
    filter: Callable[[list | None, list | None], Any]  # a filter from its must and must_not conditions
    sparse: Callable[[list[int], list[float]], Any]  # a sparse vector from its indices and values

    def filter_of(self, flt: Filter) -> Any:
        """`flt` as this binding's filter (no conditions: None, which both engines read as "everything")."""
        return self.filter(
            [self.match(k, v) for k, v in flt.must.items()] or None,
            [self.match(k, v) for k, v in flt.must_not.items()] or None,
        )

    def sparse_of(self, vec: SparseVec) -> Any:
        return self.sparse(list(vec.indices), list(vec.values))

    def point_vectors(self, point: PointRecord) -> dict:
        """The named vectors of a point to write; an empty sparse vector is left out (the engines refuse it)."""
        vectors: dict = {DENSE_VECTOR: point.vector.astype(np.float32).tolist()}
        if point.sparse is not None and point.sparse.indices:
            vectors[SPARSE_VECTOR] = self.sparse_of(point.sparse)
        if point.cross is not None:
            vectors[CROSS_VECTOR] = point.cross.astype(np.float32).tolist()
        return vectors

    def query_vector(self, query: SearchQuery, name: str) -> Any:
        """The vector `query` searches the named vector `name` with: a sparse vector or a list of floats."""
        # `name` comes from query.lists(), which names only the vectors the query holds.
        if name == SPARSE_VECTOR:
            assert query.sparse is not None, "query.lists() names bm25 only when the query has a sparse vector"
            return self.sparse_of(query.sparse)
        vector = query.dense if name == DENSE_VECTOR else query.cross
        assert vector is not None, f"query.lists() names {name!r} only when the query has that vector"
        return vector.astype(np.float32).tolist()


@dataclass(frozen=True)
class FusionPlan:
    """A query over several lists, fused in the engine: each list prefetches `candidates` points (the filter
    goes on each prefetch, so fusion only sees candidates of this space), then RRF with `rrf_k` and `weights`,
    or DBSF when `rrf_k` is None."""

    lists: list[str]
    candidates: int
    rrf_k: int | None
    weights: list[float]


def fusion_plan(query: SearchQuery, limit: int) -> FusionPlan | None:
    """How the engine should fuse `query`'s lists; None when it searches one list (nothing to fuse)."""
    lists = query.lists()
    if len(lists) == 1:
        return None
    rrf = query.fusion == "rrf"
    return FusionPlan(lists, max(query.candidates, limit), query.rrf_k if rrf else None, query.rrf_weights() if rrf else [])


def payload_indexes(existing: Iterable[str]) -> Iterator[tuple[str, str, bool]]:
    """(field, "keyword" | "integer", is_tenant) for each payload index not in `existing` yet."""
    existing = set(existing)
    for name in KEYWORD_INDEXES:
        if name not in existing:
            yield name, "keyword", name == TENANT_KEY
    for name in INTEGER_INDEXES:
        if name not in existing:
            yield name, "integer", False


def upsert_batches(points: Sequence[PointRecord]) -> Iterator[Sequence[PointRecord]]:
    """`points` in slices of `UPSERT_BATCH`."""
    for start in range(0, len(points), UPSERT_BATCH):
        yield points[start : start + UPSERT_BATCH]


def dense_of(point: Any) -> np.ndarray | None:
    """The dense vector a result came back with, when the query asked for it."""
    vectors = getattr(point, "vector", None)
    if isinstance(vectors, dict) and DENSE_VECTOR in vectors:
        return np.asarray(vectors[DENSE_VECTOR], dtype=np.float32)
    return None


def to_hit(point: Any, score: float | None = None) -> Hit:
    """A scored point or a record of either engine as a `Hit` (`score` given: a record, which has none)."""
    return Hit(str(point.id), float(point.score) if score is None else score, dict(point.payload or {}), dense_of(point))
