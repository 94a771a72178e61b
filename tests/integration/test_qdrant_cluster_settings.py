"""The collection layout settings for a Qdrant cluster (QDRANT_SHARD_NUMBER, QDRANT_REPLICATION_FACTOR,
QDRANT_WRITE_CONSISTENCY_FACTOR) reach `create_collection`.

qdrant-client's local mode accepts those arguments and ignores them (it has no shards), so the store runs over a
thin spy subclass of the real client that records what `create_collection` was called with and then lets the
local mode do the work: the calls are the real ones, only observed.
"""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import QdrantClient

from backend.retrieval.stores import qdrant as qdrant_store
from backend.retrieval.stores.base import Filter, PointRecord, SearchQuery
from backend.retrieval.stores.qdrant import QdrantServerStore
from backend.retrieval.stores.registry import create_store
from backend.settings import Settings

DIM = 8
LAYOUT = ("shard_number", "replication_factor", "write_consistency_factor")


class SpyClient(QdrantClient):
    """The real client in local (in-memory) mode, recording every create_collection call."""

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: int | None = None, **_):
        super().__init__(location=":memory:")
        self.opened_with = {"url": url, "api_key": api_key, "timeout": timeout}
        self.created: list[dict] = []

    def create_collection(self, collection_name, *args, **kwargs):
        self.created.append({"collection_name": collection_name, **kwargs})
        return super().create_collection(collection_name, *args, **kwargs)


def _layout(call: dict) -> dict:
    return {k: call.get(k) for k in LAYOUT}


def test_the_constructor_passes_the_cluster_layout_to_create_collection():
    client = SpyClient()
    store = QdrantServerStore(client, "chunks", DIM, shard_number=6, replication_factor=2, write_consistency_factor=2)
    try:
        assert len(client.created) == 1
        assert _layout(client.created[0]) == {"shard_number": 6, "replication_factor": 2, "write_consistency_factor": 2}
        # ... and the collection is a working one (local mode ignored the layout, nothing else).
        vector = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
        store.upsert([PointRecord("00000000-0000-0000-0000-000000000001", vector, {"space_id": "a", "text": "x"})])
        assert store.count(Filter(must={"space_id": "a"})) == 1
        assert store.search(SearchQuery("dense", dense=vector), Filter(must={"space_id": "a"}), 1)[0].payload["text"] == "x"
    finally:
        store.close()


def test_unset_layout_leaves_the_servers_defaults():
    client = SpyClient()
    QdrantServerStore(client, "chunks", DIM).close()
    assert _layout(client.created[0]) == {k: None for k in LAYOUT}


def test_an_existing_collection_is_not_recreated():
    client = SpyClient()
    QdrantServerStore(client, "chunks", DIM, replication_factor=2)
    QdrantServerStore(client, "chunks", DIM, replication_factor=3)  # a second replica starting: nothing to create
    assert len(client.created) == 1 and client.created[0]["replication_factor"] == 2


def test_settings_reach_create_collection_through_the_store_factory(monkeypatch):
    """Env names as the k8s ConfigMap and compose set them -> Settings -> stores/registry.py `_qdrant` -> from_url."""
    clients: list[SpyClient] = []

    def make_client(**kwargs):
        clients.append(SpyClient(**kwargs))
        return clients[-1]

    monkeypatch.setattr(qdrant_store, "QdrantClient", make_client)
    for name, value in {
        "QDRANT_URL": "http://qdrant.rag.svc.cluster.local:6333",
        "QDRANT_SHARD_NUMBER": "3",
        "QDRANT_REPLICATION_FACTOR": "2",
        "QDRANT_WRITE_CONSISTENCY_FACTOR": "1",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    store = create_store(settings, DIM)
    try:
        assert isinstance(store, QdrantServerStore)
        assert clients[0].opened_with["url"] == "http://qdrant.rag.svc.cluster.local:6333"
        assert _layout(clients[0].created[0]) == {"shard_number": 3, "replication_factor": 2, "write_consistency_factor": 1}
    finally:
        store.close()


@pytest.mark.parametrize("name", ["QDRANT_SHARD_NUMBER", "QDRANT_REPLICATION_FACTOR", "QDRANT_WRITE_CONSISTENCY_FACTOR"])
def test_layout_settings_default_to_unset_and_reject_zero(monkeypatch, name):
    monkeypatch.setenv(name, "")  # empty = unset, as the compose stacks forward an absent knob
    assert getattr(Settings(_env_file=None), name.lower()) is None
    monkeypatch.setenv(name, "0")
    with pytest.raises(ValueError):
        Settings(_env_file=None)
