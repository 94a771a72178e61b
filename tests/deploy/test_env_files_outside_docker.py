"""The stacks' env files also run the backend outside Docker: `python -m backend --env-file .env.ollama`.

A real backend process reads the committed env file (engine, model, chunking, ...); only what differs
outside the stack is overridden from the environment, which wins over the env file as in compose: the
data folder, and the engine's address (the Ollama test server; an unreachable vLLM).
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from cli.local_backend import ROOT, free_port, start_backend, stop_backend
from tests.support.compose import read_env_file
from tests.support.ollama_server import FakeOllama

pytestmark = pytest.mark.integration


@pytest.fixture
def base_env(tmp_path, model_cache, monkeypatch):
    # A clean slate: no knob of the developer's shell may stand in for the env file's.
    names = {*read_env_file(ROOT / ".env.ollama"), *read_env_file(ROOT / ".env.vllm"), "ENV_FILE", "QDRANT_URL"}
    for name in names:
        monkeypatch.delenv(name, raising=False)
    return {"DATA_DIR": str(tmp_path / "data"), "MODEL_CACHE_DIR": str(model_cache)}


def test_backend_answers_with_the_ollama_env_file(base_env):
    model = read_env_file(ROOT / ".env.ollama")["OLLAMA_MODEL"]
    with FakeOllama({model: 131072}) as ollama:
        proc, url = start_backend({**base_env, "OLLAMA_BASE_URL": ollama.url}, args=["--env-file", ".env.ollama"])
        try:
            llm = httpx.get(f"{url}/health", timeout=30).json()["components"]["llm"]
            assert (llm["engine"], llm["model"], llm["status"]) == ("ollama", model, "ok")
            upload = httpx.post(
                f"{url}/documents", data={"space_id": "ops"}, timeout=60,
                files={"file": ("rotation.md", b"# Keys\n\nAPI keys rotate every 90 days.")},
            )
            assert upload.status_code in (200, 201), upload.text
            answer = httpx.post(f"{url}/ask", json={"q": "How often do API keys rotate?", "space_id": "ops"}, timeout=60)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["engine"] == "ollama" and body["model"] == model and body["sources"]
            chat = ollama.bodies("/api/chat")[-1]
            assert chat["options"]["num_ctx"] == int(read_env_file(ROOT / ".env.ollama")["OLLAMA_NUM_CTX"])
        finally:
            stop_backend(proc)


def test_env_file_from_the_environment_selects_vllm(base_env):
    dead_vllm = f"http://127.0.0.1:{free_port()}/v1"
    proc, url = start_backend({**base_env, "ENV_FILE": ".env.vllm", "VLLM_BASE_URL": dead_vllm})
    try:
        health = httpx.get(f"{url}/health", timeout=30)
        llm = health.json()["components"]["llm"]
        # Store and embedder work, the engine is down: degraded, not dead; the model is the env file's.
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert (llm["engine"], llm["model"]) == ("vllm", read_env_file(ROOT / ".env.vllm")["VLLM_MODEL"])
        assert httpx.get(f"{url}/search", params={"q": "anything", "space_id": "ops"}, timeout=30).status_code in (200, 404)
    finally:
        stop_backend(proc)


def test_a_missing_env_file_is_a_usage_error(base_env):
    done = subprocess.run(
        [sys.executable, "-m", "backend", "--env-file", ".env.nope"], cwd=ROOT, env={**os.environ, **base_env},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "env file not found: .env.nope" in done.stderr
