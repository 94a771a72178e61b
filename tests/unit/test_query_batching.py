"""Concurrent queries share forward passes; each caller gets its own vector or the pass's error."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from backend.retrieval.query_batching import QueryBatcher


class SlowEmbedder:
    """One pass at a time, 20 ms each; the vector encodes the text so mix-ups show."""

    dim = 2

    def __init__(self, fail_on: str | None = None):
        self.lock = threading.Lock()
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    def embed_queries(self, texts):
        with self.lock:
            self.batches.append(list(texts))
            time.sleep(0.02)
            if self.fail_on in texts:
                raise RuntimeError("model crashed")
            return np.array([[len(t), int(t.split("-")[1])] for t in texts], dtype=np.float32)


def test_a_lone_query_is_embedded_at_once():
    embedder = SlowEmbedder()
    batcher = QueryBatcher(embedder)
    assert batcher.embed_query("q-7").tolist() == [3, 7]
    assert embedder.batches == [["q-7"]] and batcher.dim == 2  # other attributes pass through


@pytest.mark.parametrize("max_batch", [256, 8])
def test_concurrent_queries_share_passes_and_get_their_own_vectors(max_batch):
    embedder = SlowEmbedder()
    batcher = QueryBatcher(embedder, max_batch=max_batch)
    texts = [f"q-{i}" for i in range(64)]
    with ThreadPoolExecutor(64) as pool:
        vectors = list(pool.map(batcher.embed_query, texts))
    assert [int(v[1]) for v in vectors] == list(range(64))
    assert sorted(t for batch in embedder.batches for t in batch) == sorted(texts)  # each embedded once
    assert len(embedder.batches) < 64 / 2 and max(map(len, embedder.batches)) <= max_batch


def test_an_embedder_error_reaches_every_query_of_its_pass_and_the_batcher_recovers():
    embedder = SlowEmbedder(fail_on="q-3")
    batcher = QueryBatcher(embedder)
    barrier = threading.Barrier(8)

    def ask(text):
        barrier.wait()
        try:
            return batcher.embed_query(text)
        except RuntimeError as exc:
            return exc

    with ThreadPoolExecutor(8) as pool:
        results = dict(zip(range(8), pool.map(ask, [f"q-{i}" for i in range(8)])))
    failed_batch = next(b for b in embedder.batches if "q-3" in b)
    assert all(isinstance(results[int(t.split("-")[1])], RuntimeError) for t in failed_batch)
    assert batcher.embed_query("q-9").tolist() == [3, 9]


def test_batched_vectors_match_single_ones_with_the_real_model(embedder):
    batcher = QueryBatcher(embedder)
    questions = ["how do I index a folder", "which port does the backend use", "Gdzie są kopie zapasowe?"]
    with ThreadPoolExecutor(3) as pool:
        batched = list(pool.map(batcher.embed_query, questions))
    for question, vector in zip(questions, batched):
        assert float(np.dot(vector, embedder.embed_query(question))) > 0.9999
