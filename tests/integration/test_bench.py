"""The benchmark command runs end to end on tiny sizes and writes a consistent report (figures not asserted)."""

from __future__ import annotations

import json

import pytest

from cli import bench
from tests.support.components import MINILM


@pytest.fixture(autouse=True)
def _env(tmp_path, model_cache, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("EMBED_MODEL", MINILM)  # the fast model: these tests check the commands, not the figures


def test_ingest_benchmark_reports_both_throughputs(tmp_path):
    out = tmp_path / "ingest.json"
    assert bench.main(["--json", str(out), "--work-dir", str(tmp_path), "ingest", "--files", "4", "--rounds", "1"]) == 0
    report = json.loads(out.read_text())
    assert report["chunks"] > 4 and report["raw_embedder_chunks_per_s"] > 0 and report["ingest_chunks_per_s"] > 0
    # The rates are rounded to 0.1 chunk/s in the report; the ratio is computed before rounding.
    assert report["ratio"] == pytest.approx(report["ingest_chunks_per_s"] / report["raw_embedder_chunks_per_s"], rel=0.05)


def test_retrieval_benchmark_measures_a_real_backend(tmp_path):
    out = tmp_path / "retrieval.json"
    args = ["--json", str(out), "--work-dir", str(tmp_path), "retrieval", "--sizes", "3000", "--queries", "20"]
    assert bench.main(args) == 0
    rows = json.loads(out.read_text())["sizes"]
    assert [(r["chunks"], r["mode"]) for r in rows] == [(3000, "dense"), (3000, "hybrid")]
    for row in rows:
        assert 0 < row["embed_p50_ms"] <= row["search_http_p50_ms"]
        assert 0 < row["store_p50_ms"] <= row["search_http_p99_ms"]
