"""What the in-process tests build the backend from, beyond the fixtures: the small embedding model's name and
the Qdrant-server store adapter without a server."""

from __future__ import annotations

from pathlib import Path

# The in-process tests run on the small English model (fast to load and embed); the default multilingual
# model has its own tests and is what every process the tests start (backend, CLI, bench) loads.
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def server_store_or_none(kind: str, tmp_path: Path, dim: int):
    """For `kind` "qdrant": the Qdrant-server adapter over qdrant-client's local mode (no server binary runs
    here); for "edge": None, so build_runtime opens the embedded Qdrant Edge store of the settings."""
    if kind != "qdrant":
        return None
    from qdrant_client import QdrantClient

    from backend.retrieval.stores.qdrant import QdrantServerStore

    return QdrantServerStore(QdrantClient(path=str(tmp_path / "local")), "chunks", dim, where="local")
