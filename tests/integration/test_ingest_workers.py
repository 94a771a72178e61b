"""INGEST_WORKERS: files parsed at once in the parse worker processes, ahead of the embedder, with the same
outcome, in the same order, as one file after another."""

from __future__ import annotations

import threading

import pytest

from backend.runtime import build_runtime
from backend.settings import Settings
from cli.corpus_gen import generate

pytestmark = pytest.mark.integration


class CountingParsing:
    """The runtime's ParsePool, counting how many parses run at once."""

    def __init__(self, inner):
        self.inner = inner
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def run(self, data: bytes, name: str):
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return self.inner.run(data, name)
        finally:
            with self._lock:
                self.running -= 1

    def close(self) -> None:
        self.inner.close()


def _ingest(tmp_path, embedder, model_cache, docs, workers: int):
    settings = Settings(_env_file=None, data_dir=tmp_path / f"data-{workers}", MODEL_CACHE_DIR=model_cache,
                        ingest_workers=workers, cross_language_model="")
    runtime = build_runtime(settings, embedder=embedder)
    counting = CountingParsing(runtime.pipeline.parsing)
    runtime.pipeline.parsing = counting  # type: ignore[assignment]
    try:
        files = sorted(p for p in docs.rglob("doc-*"))
        items = [(p.relative_to(docs).as_posix(), p.read_bytes) for p in files]
        items.insert(3, ("notes/broken.pdf", lambda: b"%PDF-1.5 garbage"))  # a failure keeps its place too
        results = [o.result for o in runtime.pipeline.ingest_many("kb", items)]
        stored = sorted((d.path, d.chunks) for d in runtime.index.list("kb"))
        return results, stored, counting.most
    finally:
        runtime.close()


def test_parallel_prepare_gives_the_sequential_outcome(tmp_path, embedder, model_cache):
    docs = tmp_path / "docs"
    generate(docs, 24, seed=4)
    one, stored_one, most_one = _ingest(tmp_path, embedder, model_cache, docs, workers=1)
    four, stored_four, most_four = _ingest(tmp_path, embedder, model_cache, docs, workers=4)
    assert most_one == 1 and most_four > 1  # the parses overlapped
    # Same files, statuses, chunk counts, in the same order (the order of completion: a failed file at once,
    # the others as their group is committed, groups in the files' order).
    assert [(r.path, r.status, r.chunks) for r in four] == [(r.path, r.status, r.chunks) for r in one]
    statuses = {r.path: r.status for r in one}
    assert list(statuses.values()).count("added") == 24 and statuses["notes/broken.pdf"] == "failed"
    assert stored_four == stored_one and len(stored_one) == 24
