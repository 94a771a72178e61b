"""One contract for every VectorStore: Qdrant Edge on disk, and the Qdrant-server adapter over
qdrant-client's local mode (no Qdrant server binary can run here)."""

from __future__ import annotations

import numpy as np
import pytest

from backend.errors import StoreLocked, StoreUnavailable
from backend.domain import make_point_id
from backend.retrieval.sparse import Bm25Encoder
from backend.retrieval.stores.base import Filter, PointRecord, SearchQuery

DIM = 16


def _edge(tmp_path):
    from backend.retrieval.stores.edge import EdgeStore

    return EdgeStore(tmp_path / "edge", DIM)


def _qdrant_local(tmp_path):
    from qdrant_client import QdrantClient

    from backend.retrieval.stores.qdrant import QdrantServerStore

    return QdrantServerStore(QdrantClient(path=str(tmp_path / "local")), "chunks", DIM, where="local")


@pytest.fixture(params=["edge", "qdrant"])
def store(request, tmp_path):
    s = {"edge": _edge, "qdrant": _qdrant_local}[request.param](tmp_path)
    yield s
    s.close()


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _dense(vector: np.ndarray) -> SearchQuery:
    return SearchQuery("dense", dense=vector)


def _points(space: str, doc: str, n: int, seed: int = 0) -> list[PointRecord]:
    return [
        PointRecord(make_point_id(space, doc, "v1", i), _unit(seed + i), {"space_id": space, "doc_id": doc, "chunk_index": i, "text": f"{doc}-{i}"})
        for i in range(n)
    ]


def test_upsert_count_and_idempotent_ids(store):
    store.upsert(_points("a", "d1", 5))
    store.upsert(_points("a", "d1", 5))  # same ids: overwritten, not duplicated
    assert store.count(Filter(must={"space_id": "a"})) == 5
    assert store.count(Filter(must={"space_id": "b"})) == 0


def test_search_is_filtered_by_space_and_ranked(store):
    store.upsert(_points("a", "d1", 10, seed=0) + _points("b", "d2", 10, seed=100))
    hits = store.search(_dense(_unit(3)), Filter(must={"space_id": "a"}), 4)
    assert len(hits) == 4
    assert hits[0].payload["text"] == "d1-3" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert all(h.payload["space_id"] == "a" for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert store.search(_dense(_unit(3)), Filter(must={"space_id": "none"}), 4) == []


def test_scroll_returns_every_payload_with_field_selection(store):
    store.upsert(_points("a", "d1", 600))
    payloads = list(store.scroll(Filter(must={"space_id": "a"}), fields=["chunk_index"], batch=128))
    assert sorted(p["chunk_index"] for p in payloads) == list(range(600))
    assert all("text" not in p for p in payloads)


def test_delete_and_must_not(store):
    store.upsert(_points("a", "d1", 3) + _points("a", "d2", 4, seed=50))
    store.delete(Filter(must={"space_id": "a"}, must_not={"doc_id": "d2"}))
    assert store.count(Filter(must={"space_id": "a"})) == 4
    assert store.count(Filter(must={"doc_id": "d1"})) == 0


def test_set_payload_by_filter_moves_points_between_spaces(store):
    store.upsert(_points("~staging:a", "d1", 3))
    store.set_payload(Filter(must={"space_id": "~staging:a", "doc_id": "d1"}), {"space_id": "a"})
    assert store.count(Filter(must={"space_id": "a"})) == 3
    hit = store.search(_dense(_unit(1)), Filter(must={"space_id": "a"}), 1)[0]
    assert hit.payload["text"] == "d1-1"  # other payload keys kept


def test_optimize_and_health(store):
    store.upsert(_points("a", "d1", 50))
    store.optimize()
    health = store.health()
    assert health["status"] == "ok" and health["points"] == 50


def test_edge_persists_across_reopen_and_is_single_process(tmp_path):
    from backend.retrieval.stores.edge import EdgeStore

    first = EdgeStore(tmp_path / "edge", DIM)
    first.upsert(_points("a", "d1", 7))
    with pytest.raises(StoreLocked, match="one process"):
        EdgeStore(tmp_path / "edge", DIM)
    first.close()
    reopened = EdgeStore(tmp_path / "edge", DIM)
    assert reopened.count(Filter(must={"space_id": "a"})) == 7
    reopened.close()


def test_edge_refuses_another_dimension(tmp_path):
    from backend.retrieval.stores.edge import EdgeStore

    EdgeStore(tmp_path / "edge", DIM).close()
    with pytest.raises(StoreUnavailable, match="EMBED_MODEL"):
        EdgeStore(tmp_path / "edge", DIM * 2)
    EdgeStore(tmp_path / "edge", DIM).close()  # the failed open released the lock


def test_qdrant_adapter_translates_connection_errors():
    from backend.retrieval.stores.qdrant import QdrantServerStore

    # The message names the component and what went wrong, not its address (tenants see it; the log has the URL).
    with pytest.raises(StoreUnavailable, match="the Qdrant server could not .* could not be reached") as caught:
        QdrantServerStore.from_url("http://127.0.0.1:9", "chunks", DIM, timeout_s=1)
    assert "127.0.0.1" not in caught.value.message


# -- sparse (BM25) and hybrid: the same contract over both engines ------------------------------------------
TEXTS = [
    "Error ERR-4521 means the backup volume is full; free space and rerun the job.",
    "The on-call engineer acknowledges pages within fifteen minutes.",
    "Backups run nightly; a failed backup pages the on-call engineer.",
    "Vacation requests need the manager's approval two weeks ahead.",
]


def _text_points(space: str, bm25: Bm25Encoder) -> list[PointRecord]:
    sparse = bm25.embed_documents(TEXTS)
    return [
        PointRecord(make_point_id(space, f"d{i}", "v1", 0), _unit(i), {"space_id": space, "doc_id": f"d{i}", "text": t}, sparse[i])
        for i, t in enumerate(TEXTS)
    ]


def test_sparse_search_ranks_by_bm25_within_the_space(store):
    bm25 = Bm25Encoder()
    store.upsert(_text_points("a", bm25) + _text_points("b", bm25))
    hits = store.search(SearchQuery("sparse", sparse=bm25.embed_query("what does ERR-4521 mean")), Filter(must={"space_id": "a"}), 3)
    assert hits[0].payload["doc_id"] == "d0" and all(h.payload["space_id"] == "a" for h in hits)
    # Stemming: "backups" and "failed" meet "backup"/"failed" in other inflections.
    hits = store.search(SearchQuery("sparse", sparse=bm25.embed_query("backup failing")), Filter(must={"space_id": "a"}), 2)
    assert hits[0].payload["doc_id"] == "d2"
    nothing = bm25.embed_query("zebra quantum")
    assert store.search(SearchQuery("sparse", sparse=nothing), Filter(must={"space_id": "a"}), 3) == []


@pytest.mark.parametrize("fusion", ["rrf", "dbsf"])
def test_hybrid_fuses_both_lists_in_the_engine(store, fusion):
    bm25 = Bm25Encoder()
    store.upsert(_text_points("a", bm25))
    # The dense vector points at d3, BM25 at d0: both must come back, fused, with the dense vectors attached.
    query = SearchQuery("hybrid", dense=_unit(3), sparse=bm25.embed_query("ERR-4521"), fusion=fusion, with_dense=True)
    hits = store.search(query, Filter(must={"space_id": "a"}), 2)
    assert {h.payload["doc_id"] for h in hits} == {"d0", "d3"}
    assert all(h.dense is not None and h.dense.shape == (DIM,) for h in hits)
    d3 = next(h for h in hits if h.payload["doc_id"] == "d3")
    assert float(np.dot(d3.dense, _unit(3))) == pytest.approx(1.0, abs=1e-4)


def test_rrf_weights_decide_which_list_wins(store):
    bm25 = Bm25Encoder()
    store.upsert(_text_points("a", bm25))
    flt = Filter(must={"space_id": "a"})

    def top(weights):
        # One candidate per list: the top of each list meets the other only through the weights.
        q = SearchQuery("hybrid", dense=_unit(3), sparse=bm25.embed_query("ERR-4521"), weights=weights, candidates=1)
        return store.search(q, flt, 1)[0].payload["doc_id"]

    assert top((1.0, 3.0)) == "d0"
    assert top((3.0, 1.0)) == "d3"


def test_search_query_needs_the_vectors_its_mode_uses():
    with pytest.raises(ValueError, match="dense vector"):
        SearchQuery("hybrid", sparse=Bm25Encoder().embed_query("x"))
    with pytest.raises(ValueError, match="sparse vector"):
        SearchQuery("sparse")
    with pytest.raises(ValueError, match="unknown search mode"):
        SearchQuery("fuzzy", dense=_unit(0))


def test_stores_made_before_hybrid_search_get_a_clear_error(tmp_path):
    import qdrant_edge as qe
    from qdrant_client import QdrantClient, models

    from backend.retrieval.stores.edge import EdgeStore
    from backend.retrieval.stores.qdrant import QdrantServerStore

    config = qe.EdgeConfig(vectors={"dense": qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine)})
    qe.EdgeShard.create(str(tmp_path / "edge" / "shard"), config).close()
    with pytest.raises(StoreUnavailable, match="before hybrid search"):
        EdgeStore(tmp_path / "edge", DIM)
    client = QdrantClient(path=str(tmp_path / "local"))
    client.create_collection("chunks", vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)})
    with pytest.raises(StoreUnavailable, match="before hybrid search"):
        QdrantServerStore(client, "chunks", DIM, where="local")
    client.close()
