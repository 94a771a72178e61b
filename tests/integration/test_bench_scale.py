"""`python -m cli.bench scale` at a tiny size: the report's keys, and its counts against the store it built."""

from __future__ import annotations

import json

import pytest

from backend.retrieval.stores.base import Filter
from backend.retrieval.stores.edge import EdgeStore
from cli import bench
from tests.support.components import MINILM

pytestmark = pytest.mark.integration

KEYS = {"device", "embedder", "embed_engine", "chunks", "files", "ingest_chunks_per_s", "searchable_after_s", "search_p50_ms_c1",
        "search_p99_ms_c1", "search_rps_c32", "search_p99_ms_c32", "peak_rss_mb", "disk_mb"}


def test_scale_benchmark_counts_match_the_store(tmp_path, model_cache, monkeypatch):
    monkeypatch.setenv("MODEL_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("EMBED_MODEL", MINILM)  # the fast model: this checks the command, not the figures
    corpus, store = tmp_path / "corpus", tmp_path / "store"
    out, md = tmp_path / "scale.json", tmp_path / "scale.md"
    args = ["--json", str(out), "scale", "--chunks", "30", "--corpus", str(corpus), "--store", str(store),
            "--queries", "10", "--requests", "24", "--concurrency", "4", "--md", str(md)]
    assert bench.main(args) == 0
    report = json.loads(out.read_text())
    assert KEYS <= set(report) and report["device"] == "cpu2" and report["embedder"] == MINILM
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["expected_chunks"] >= 30 and report["files"] == manifest["docs"] == report["files_written"]
    assert report["rerun_unchanged"] == report["files"]
    assert report["search_errors_c32"] == 0 and report["search_results_mean"] == 5
    assert report["searchable_after_s"] >= report["ingest_s"] > 0 and report["ingest_chunks_per_s"] > 0
    assert all(stage["seconds"] > 0 for stage in report["stages"].values())

    edge = EdgeStore(store / "qdrant-edge", 384)
    try:
        assert edge.count(Filter(must={"space_id": "scale"})) == report["chunks"]
        assert edge.count(Filter(must={"space_id": "scale", "chunk_index": 0})) == report["files"]
        assert edge.count(Filter()) == report["chunks"]  # nothing staged, nothing else
    finally:
        edge.close()
    assert f"# Scale: {report['chunks']:,} chunks on cpu2" in md.read_text()

    # A second run reuses the corpus (its manifest) as it is.
    again = tmp_path / "again.json"
    assert bench.main(["--json", str(again), "scale", "--chunks", "5000", "--corpus", str(corpus), "--queries", "2",
                       "--requests", "4", "--concurrency", "2"]) == 0
    assert json.loads(again.read_text())["files"] == report["files"]
