"""Hybrid retrieval end to end with the real embedder, the real BM25 encoder and both stores.

The corpus is a runbook of error codes whose descriptions all read alike: a small dense model sees one
topic ("an error in a service") and cannot tell ERR-4521 from ERR-7310, while BM25 matches the code
itself. Hybrid must find what dense misses, and keep what dense finds.
"""

from __future__ import annotations

import pytest

from backend.errors import InvalidRequest
from backend.runtime import build_runtime
from tests.support.components import server_store_or_none

SERVICES = ["billing", "search", "auth", "export", "import", "mailer", "scheduler", "reports", "gateway", "storage"]
CODES = [f"ERR-{4000 + 317 * i}" for i in range(len(SERVICES))]
VERSIONS = [f"v3.{i}.{(7 * i) % 10}" for i in range(len(SERVICES))]
CONFIG_KEYS = [f"pool_{1000 + 37 * i}.max_conn" for i in range(len(SERVICES))]


def _runbook(i: int) -> bytes:
    svc = SERVICES[i]
    return (
        f"# {svc.title()} service errors\n\n"
        f"When the {svc} service fails it reports error {CODES[i]} in its log. The on-call engineer restarts the "
        f"worker, checks the queue depth and escalates to the team if the error repeats within an hour. "
        f"The fix shipped in release {VERSIONS[i]}; the pool size is set by {CONFIG_KEYS[i]}.\n"
    ).encode()


@pytest.fixture(params=["edge", "qdrant"])
def svc(request, settings, embedder, tmp_path):
    store = server_store_or_none(request.param, tmp_path, embedder.dim)
    services = build_runtime(settings, embedder=embedder, store=store)
    files = [(f"runbooks/{s}.md", (lambda i=i: _runbook(i))) for i, s in enumerate(SERVICES)]
    assert all(o.status == "added" for o in services.pipeline.ingest_many("ops", files))
    services.store.optimize()
    yield services
    services.close()


def _top_path(svc, q: str, mode: str) -> str:
    return svc.retriever.search(q, "ops", 1, mode).results[0]["path"]


@pytest.mark.parametrize("kind", ["code", "version", "config key"])
def test_hybrid_finds_exact_identifiers_that_dense_misses(svc, kind):
    terms = {"code": CODES, "version": VERSIONS, "config key": CONFIG_KEYS}[kind]
    questions = [f"what do I do about {t}?" for t in terms]
    expected = [f"runbooks/{s}.md" for s in SERVICES]
    dense = sum(_top_path(svc, q, "dense") == e for q, e in zip(questions, expected))
    hybrid = sum(_top_path(svc, q, "hybrid") == e for q, e in zip(questions, expected))
    sparse = sum(_top_path(svc, q, "sparse") == e for q, e in zip(questions, expected))
    # Dense alone confuses the near-identical runbooks; the exact term decides in BM25 and in the fusion.
    assert dense <= len(SERVICES) // 2, f"dense found {dense}/{len(SERVICES)}: the corpus no longer tests anything"
    assert sparse == len(SERVICES)
    assert hybrid == len(SERVICES), f"hybrid found {hybrid}/{len(SERVICES)} (dense {dense})"


def test_hybrid_keeps_what_dense_finds_when_no_term_is_shared(svc):
    # No word of this question occurs in the runbooks except stopwords: BM25 has nothing, dense decides.
    q = "who gets paged when a billing worker dies"
    assert _top_path(svc, q, "dense") == "runbooks/billing.md"
    assert _top_path(svc, q, "hybrid") == "runbooks/billing.md"


def test_results_carry_the_dense_cosine_in_every_mode_that_has_one(svc):
    hybrid = svc.retriever.search(f"error {CODES[3]}", "ops", 3, "hybrid")
    assert hybrid.mode == "hybrid"
    assert all(0 < r["dense_score"] <= 1 for r in hybrid.results)
    assert all(r["score"] != r["dense_score"] for r in hybrid.results)  # a fused score, not the cosine
    dense = svc.retriever.search(f"error {CODES[3]}", "ops", 3, "dense")
    assert [r["dense_score"] for r in dense.results] == [r["score"] for r in dense.results]
    sparse = svc.retriever.search(f"error {CODES[3]}", "ops", 3, "sparse")
    assert all(r["dense_score"] is None for r in sparse.results)


def test_a_question_of_stopwords_falls_back_to_dense_in_hybrid_and_finds_nothing_in_sparse(svc):
    assert svc.retriever.search("what is it", "ops", 3, "hybrid").mode == "dense"
    assert svc.retriever.search("what is it", "ops", 3, "sparse").results == []


def test_bad_mode_and_missing_reranker_are_invalid_requests(svc):
    with pytest.raises(InvalidRequest, match="mode must be one of"):
        svc.retriever.search("x", "ops", 3, "fuzzy")
    with pytest.raises(InvalidRequest, match="RERANK_MODEL"):
        svc.retriever.search("x", "ops", 3, "hybrid", rerank=True)
