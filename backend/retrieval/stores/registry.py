"""The vector stores by name, and the one the settings select."""

from __future__ import annotations

from typing import Callable

from backend.retrieval.stores.base import VectorStore

StoreFactory = Callable[..., VectorStore]


def _edge(settings, dim: int, cross_dim: int | None = None) -> VectorStore:
    from backend.retrieval.stores.edge import (
        EdgeStore,  # here: qdrant-edge is loaded only when it is used
    )

    return EdgeStore(settings.embedded_store_dir, dim, min_free_bytes=settings.min_free_disk_bytes, cross_dim=cross_dim)


def _qdrant(settings, dim: int, cross_dim: int | None = None) -> VectorStore:
    from backend.retrieval.stores.qdrant import (
        QdrantServerStore,  # here: qdrant-client is loaded only when it is used
    )

    return QdrantServerStore.from_url(
        settings.qdrant_url,
        collection=settings.qdrant_collection,
        dim=dim,
        api_key=settings.qdrant_api_key,
        timeout_s=settings.qdrant_timeout_s,
        shard_number=settings.qdrant_shard_number,
        replication_factor=settings.qdrant_replication_factor,
        write_consistency_factor=settings.qdrant_write_consistency_factor,
        cross_dim=cross_dim,
    )


STORES: dict[str, StoreFactory] = {"edge": _edge, "qdrant": _qdrant}


def create_store(settings, dim: int, cross_dim: int | None = None) -> VectorStore:
    """The store selected by the settings: Qdrant server when QDRANT_URL is set, else Qdrant Edge.

    `cross_dim`: the cross-language model's dimension (None: no such model). A store made without the
    cross vector keeps working without it: its `cross_dim` is then None (say so in /health)."""
    kind = "qdrant" if settings.qdrant_url else "edge"
    # Passed only when set: a factory without cross-language vectors (a test's stand-in) keeps its signature.
    return STORES[kind](settings, dim, cross_dim=cross_dim) if cross_dim else STORES[kind](settings, dim)
