"""Idempotent, crash-safe indexing with the real model, over both stores."""

from __future__ import annotations

import pytest

from backend.errors import DocumentNotFound, StoreUnavailable
from backend.domain import STAGING_PREFIX
from backend.retrieval.stores.base import Filter
from backend.runtime import build_runtime
from tests.support.components import server_store_or_none
from tests.support.docs_factory import make_pdf

LONG = " ".join(f"Paragraph {i}: the appliance stores chunk {i} of the handbook with its page number." for i in range(80))


@pytest.fixture(params=["edge", "qdrant"])
def svc(request, settings, embedder, tmp_path):
    store = server_store_or_none(request.param, tmp_path, embedder.dim)
    services = build_runtime(settings, embedder=embedder, store=store)
    yield services
    services.close()


def ingest(svc, files: dict[str, bytes], space="kb"):
    return {o.result.path: o.result for o in svc.pipeline.ingest_many(space, [(p, (lambda d=d: d)) for p, d in files.items()])}


def all_points(svc, space="kb"):
    return list(svc.store.scroll(Filter(must={"space_id": space})))


def test_reindexing_an_unchanged_folder_adds_nothing(svc):
    files = {"a.txt": LONG.encode(), "b.md": b"# Title\n\nQdrant Edge is embedded.", "c.pdf": make_pdf(["page one", "page two"])}
    first = ingest(svc, files)
    assert {r.status for r in first.values()} == {"added"}
    before = sorted((p["doc_id"], p["chunk_index"], p["version"]) for p in all_points(svc))
    second = ingest(svc, files)
    assert {r.status for r in second.values()} == {"unchanged"}
    assert all(r.chunks == 0 for r in second.values())
    assert sorted((p["doc_id"], p["chunk_index"], p["version"]) for p in all_points(svc)) == before


def test_a_modified_file_replaces_all_its_old_chunks(svc):
    ingest(svc, {"a.txt": LONG.encode(), "keep.txt": b"unrelated document about Ollama"})
    old_count = len([p for p in all_points(svc) if p["path"] == "a.txt"])
    assert old_count > 3
    result = ingest(svc, {"a.txt": b"A much shorter replacement about tensor parallelism."})["a.txt"]
    assert result.status == "replaced" and result.chunks == 1
    points = [p for p in all_points(svc) if p["path"] == "a.txt"]
    assert len(points) == 1 and "tensor parallelism" in points[0]["text"]
    assert [p["path"] for p in all_points(svc)].count("keep.txt") == 1
    assert svc.store.count(Filter(must={"space_id": STAGING_PREFIX + "kb"})) == 0


def test_deleting_a_document_leaves_no_points(svc):
    result = ingest(svc, {"a.txt": LONG.encode(), "b.txt": b"second doc"})["a.txt"]
    deleted = svc.index.delete(result.doc_id)
    assert deleted == result.chunks
    assert svc.store.count(Filter(must={"doc_id": result.doc_id})) == 0
    assert [d.path for d in svc.index.list("kb")] == ["b.txt"]
    with pytest.raises(DocumentNotFound):
        svc.index.delete(result.doc_id)


def test_same_path_in_two_spaces_are_two_documents(svc):
    a = ingest(svc, {"a.txt": b"alpha"}, space="one")["a.txt"]
    b = ingest(svc, {"a.txt": b"alpha"}, space="two")["a.txt"]
    assert a.doc_id != b.doc_id and b.status == "added"
    svc.index.delete(a.doc_id)
    assert [d.path for d in svc.index.list("two")] == ["a.txt"]


def test_listing_and_search_return_the_contract_fields(svc):
    ingest(svc, {"guide/setup.pdf": make_pdf(["Install the appliance.", "Kubernetes manifests live in k8s/."])})
    (doc,) = svc.index.list("kb")
    assert doc.path == "guide/setup.pdf" and doc.chunks == 2 and len(doc.hash) == 64
    found = svc.retriever.search("where are the Kubernetes manifests?", "kb", 1).results[0]
    assert found["path"] == "guide/setup.pdf" and found["page"] == 2 and found["doc_id"] == doc.doc_id
    assert "Kubernetes" in found["text"] and 0 < found["dense_score"] <= 1 and found["score"] > 0


class CrashingStore:
    """Wraps a store and fails the n-th call of one method: a process dying mid-commit."""

    def __init__(self, inner, method: str):
        self.inner, self.method = inner, method

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def crash(*args, **kwargs):
            raise StoreUnavailable(f"simulated crash in {name}")

        return crash


@pytest.mark.parametrize("step", ["upsert", "set_payload"])
def test_a_crash_mid_commit_never_shows_a_mix_and_the_next_run_repairs_it(svc, step):
    old = " ".join(f"Old sentence {i} about the legacy deployment." for i in range(60))
    new = " ".join(f"New sentence {i} about the compose stacks." for i in range(40))
    ingest(svc, {"a.txt": old.encode()})
    real_store = svc.index.store
    svc.index.store = CrashingStore(real_store, step)
    result = ingest(svc, {"a.txt": new.encode()})["a.txt"]
    assert result.status == "failed" and "simulated crash" in result.message
    svc.index.store = real_store

    live = [p["text"] for p in all_points(svc)]
    versions = {p["version"] for p in all_points(svc)}
    assert len(versions) <= 1, "live points must never mix two versions"
    if step == "upsert":  # crashed before anything went live: the old version is intact
        assert live and all("Old sentence" in t for t in live)
    else:  # crashed between deleting the old and promoting the new: absent until repaired
        assert live == []

    repaired = ingest(svc, {"a.txt": new.encode()})["a.txt"]
    assert repaired.status in ("added", "replaced")
    texts = [p["text"] for p in all_points(svc)]
    assert texts and all("New sentence" in t for t in texts)
    assert len(texts) == repaired.chunks
    assert svc.store.count(Filter(must={"space_id": STAGING_PREFIX + "kb"})) == 0
    assert ingest(svc, {"a.txt": new.encode()})["a.txt"].status == "unchanged"


def test_changing_chunk_settings_reindexes(settings, embedder, tmp_path):
    svc = build_runtime(settings, embedder=embedder)
    try:
        assert ingest(svc, {"a.txt": LONG.encode()})["a.txt"].status == "added"
    finally:
        svc.close()
    resized = settings.model_copy(update={"chunk_tokens": 64, "chunk_overlap": 8})
    svc = build_runtime(resized, embedder=embedder)
    try:
        result = ingest(svc, {"a.txt": LONG.encode()})["a.txt"]
        assert result.status == "replaced"
        assert len(all_points(svc)) == result.chunks
    finally:
        svc.close()


class RenamedEmbedder:
    """The same vectors under another model name: what two models of one dimension look like to the store."""

    def __init__(self, inner, name):
        self._inner, self.name = inner, name

    def __getattr__(self, attr):
        return getattr(self._inner, attr)


def test_a_store_written_by_another_model_of_the_same_dimension_is_refused(settings, embedder):
    first = build_runtime(settings, embedder=embedder)
    ingest(first, {"a.md": b"# A\n\nBackups run nightly."})
    first.close()
    with pytest.raises(StoreUnavailable, match="holds vectors of EMBED_MODEL='sentence-transformers/all-MiniLM-L6-v2'"):
        build_runtime(settings, embedder=RenamedEmbedder(embedder, "intfloat/multilingual-e5-small"))
    again = build_runtime(settings, embedder=embedder)  # the refusal released the store
    assert again.index.count("kb") == 1
    again.close()
