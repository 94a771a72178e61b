"""The vector store role: one small interface, two implementations, one registry.

`VectorStore` is deliberately generic (upsert / search / scroll / count / delete / set_payload over
equality filters); the document semantics (ids, versions, staged commits) live in `DocumentIndex`, on
top, so both engines behave the same by construction and one contract test covers them.

Implementations: `EdgeStore` (Qdrant Edge, embedded, on disk under DATA_DIR; the default) and
`QdrantServerStore` (a Qdrant server through qdrant-client, when QDRANT_URL is set).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np

# Payload fields that get an index: the space key (every search filters on it, and it is the tenant
# key), plus the ones document bookkeeping filters on.
KEYWORD_INDEXES = ("space_id", "doc_id", "version")
INTEGER_INDEXES = ("chunk_index",)


@dataclass(frozen=True)
class Filter:
    """Equality conditions: every `must` field equals its value, no `must_not` field equals its value."""

    must: Mapping[str, str | int] = field(default_factory=dict)
    must_not: Mapping[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True)
class PointRecord:
    """A point to write: id (UUID string), dense vector, payload."""

    id: str
    vector: np.ndarray
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    """A search result: point id, similarity score, payload."""

    id: str
    score: float
    payload: dict[str, Any]


class VectorStore(Protocol):
    """A collection of dense vectors with JSON payloads."""

    kind: str

    def upsert(self, points: Sequence[PointRecord]) -> None:
        """Insert or overwrite points by id."""
        ...

    def search(self, vector: np.ndarray, flt: Filter, limit: int) -> list[Hit]:
        """The `limit` nearest points (cosine) that pass `flt`, best first."""
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

    return EdgeStore(settings.embedded_store_dir, dim)


def _qdrant(settings, dim: int) -> VectorStore:
    from backend.retrieval.qdrant_store import QdrantServerStore

    return QdrantServerStore.from_url(
        settings.qdrant_url,
        collection=settings.qdrant_collection,
        dim=dim,
        api_key=settings.qdrant_api_key,
        timeout_s=settings.qdrant_timeout_s,
    )


STORES: dict[str, StoreFactory] = {"edge": _edge, "qdrant": _qdrant}
