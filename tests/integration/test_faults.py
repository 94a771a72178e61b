"""Faults, through the real app, the real store and model, and the real engine clients.

The engines are the stand-ins that speak vLLM's OpenAI API and Ollama's API (tests/support), switched into
each failure: down, model missing, slow before the first token, stalled mid-answer, 5xx, an error
mid-answer, a connection cut mid-answer. The store faults are a Qdrant server that stops answering (the
server adapter's client re-pointed at a closed port) and a full disk under the embedded store (a tmpfs
really filled when this process may mount one; the free-space reserve set above what is free otherwise).

Each fault must give its specific JSON error (or, once an answer streams, an SSE `error` event), write
nothing, cache nothing, and leave every other endpoint serving.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from backend.app import create_app
from backend.runtime import build_runtime
from tests.support.components import server_store_or_none
from tests.support.ollama_server import FakeModel, FakeOllama
from tests.support.openai_server import FakeChatModel, FakeOpenAI
from tests.support.http_api import sse_events
from tests.support.ports import closed_port

SPACE = "ops"
QUESTION = "When do backups run?"
ANSWER = "Backups run nightly at 02:00 in rack B [1]."
NOTES = b"# Backups\n\nBackups run nightly at 02:00 to the NAS in rack B.\n\n# Keys\n\nAPI keys rotate every 90 days."
TIMEOUT_S = 1.0  # LLM_TIMEOUT_S for these tests: the "slow" engines wait 3 s
SLOW_S = 3.0

# The same fault, spelled in each stand-in's switches.
SWITCHES = {
    "vllm": {"first_delay": "first_token_delay_s", "token_delay": "token_delay_s", "status": "chat_status",
             "error_after": "error_after_tokens", "cut_after": "break_after_tokens"},
    "ollama": {"first_delay": "first_chunk_delay_s", "token_delay": "token_delay_s", "status": "chat_status",
               "error_after": "error_after_tokens", "cut_after": "break_after_tokens"},
}
MODELS = {"vllm": "fake-vllm", "ollama": "llama3.1:8b"}

# fault -> (switches, JSON status and type without streaming, and with streaming: the status, then the
# error event's type when the answer had started)
ENGINE_FAULTS = {
    "down": ({}, (503, "llm_unavailable"), (503, None)),
    "model_missing": ({}, (503, "llm_model_not_found"), (503, None)),
    "slow_first_token": ({"first_delay": SLOW_S}, (504, "llm_timeout"), (504, None)),
    "stalls_mid_answer": ({"token_delay": SLOW_S}, (504, "llm_timeout"), (200, "llm_timeout")),
    "http_500": ({"status": 500}, (502, "llm_bad_response"), (502, None)),
    "error_mid_answer": ({"error_after": 2}, (502, "llm_bad_response"), (200, "llm_bad_response")),
    "cut_mid_answer": ({"cut_after": 2}, (502, "llm_bad_response"), (200, "llm_bad_response")),
}


def metric(client: TestClient, name: str, **labels) -> float:
    """One sample's value from GET /metrics (0 when absent)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def assert_error(response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["type"] == error_type
    assert response.json()["error"]["message"]


@pytest.fixture(scope="module")
def engines():
    with FakeOpenAI({MODELS["vllm"]: FakeChatModel(answer=ANSWER)}) as vllm, \
            FakeOllama({MODELS["ollama"]: FakeModel(answer=ANSWER)}) as ollama:
        yield {"vllm": vllm, "ollama": ollama}


def engine_settings(settings, engine: str, url: str, model: str):
    base = {"llm_backend": engine, "llm_timeout_s": TIMEOUT_S, "ask_min_score": -1.0}
    if engine == "vllm":
        return settings.model_copy(update={**base, "vllm_base_url": f"{url}/v1", "vllm_model": model})
    return settings.model_copy(update={**base, "ollama_base_url": url, "ollama_model": model})


@pytest.fixture(params=["vllm", "ollama"])
def engine(request, engines):
    name = request.param
    fake = engines[name]
    model = fake.models[next(iter(fake.models))]
    saved = dict(vars(model))
    yield name, fake, model
    vars(model).update(saved)  # the module's stand-ins are shared: undo the fault


@pytest.mark.parametrize("fault", ENGINE_FAULTS)
def test_engine_faults_get_their_error_and_the_service_keeps_serving(settings, services, engine, fault):
    name, fake, model = engine
    switches, plain, streamed = ENGINE_FAULTS[fault]
    for switch, value in switches.items():
        setattr(model, SWITCHES[name][switch], value)
    url = f"http://127.0.0.1:{closed_port()}" if fault == "down" else fake.url
    model_name = "no-such-model" if fault == "model_missing" else MODELS[name]
    app = create_app(engine_settings(settings, name, url, model_name), services)
    with TestClient(app) as client:
        assert client.post("/documents", data={"space_id": SPACE}, files={"file": ("notes.md", NOTES)}).status_code == 201
        ask = {"q": QUESTION, "space_id": SPACE}

        assert_error(client.post("/ask", json=ask), *plain)

        response = client.post("/ask", json={**ask, "stream": True})
        status, event_error = streamed
        assert response.status_code == status, response.text
        if status == 200:
            events = sse_events(response.text)
            assert events[0][0] == "token" and events[-1][0] == "error"
            assert "done" not in [kind for kind, _ in events]  # never a final answer after a failure
            assert events[-1][1]["error"]["type"] == event_error
        else:
            assert response.json()["error"]["type"] == plain[1]

        # Everything else still serves, and the failure was counted.
        assert client.get("/search", params={"q": "backups", "space_id": SPACE}).json()["results"]
        assert client.get("/documents", params={"space_id": SPACE}).json()["documents"]
        assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
        assert sum(
            metric(client, "rag_errors_total", type=t)
            for t in ("llm_unavailable", "llm_model_not_found", "llm_timeout", "llm_bad_response")
        ) >= 2

    # Nothing was cached: with the engine healthy again, the same question gets its answer.
    vars(model).update({SWITCHES[name][s]: 0.0 if "delay" in s else None for s in SWITCHES[name]})
    with TestClient(create_app(engine_settings(settings, name, fake.url, MODELS[name]), services)) as client:
        response = client.post("/ask", json=ask)
        assert response.status_code == 200, response.text
        assert response.json()["answer"] == ANSWER


def test_a_stalled_engine_does_not_hold_up_other_requests(settings, services, engines):
    """While one answer waits on an engine that has stopped sending, search and documents answer at once."""
    model = engines["vllm"].models[MODELS["vllm"]]
    model.token_delay_s, model.answer = SLOW_S, "At 02:00 [1]."  # three tokens: about 6 s in all
    try:
        app = create_app(
            engine_settings(settings, "vllm", engines["vllm"].url, MODELS["vllm"]).model_copy(update={"llm_timeout_s": 10.0}),
            services,
        )
        with TestClient(app) as client:
            assert client.post("/documents", data={"space_id": SPACE}, files={"file": ("notes.md", NOTES)}).status_code == 201
            stalled = threading.Thread(target=client.post, args=("/ask",), kwargs={"json": {"q": QUESTION, "space_id": SPACE}})
            stalled.start()
            time.sleep(0.5)
            assert stalled.is_alive()
            started = time.perf_counter()
            assert client.get("/search", params={"q": "backups", "space_id": SPACE}).status_code == 200
            assert client.get("/documents", params={"space_id": SPACE}).status_code == 200
            assert time.perf_counter() - started < 2.0
            assert stalled.is_alive()  # still waiting for its tokens
            stalled.join(timeout=60)
    finally:
        model.token_delay_s, model.answer = 0.0, ANSWER


@pytest.fixture
def server_store_services(settings, embedder, tmp_path):
    store = server_store_or_none("qdrant", tmp_path, embedder.dim)
    svc = build_runtime(settings, embedder=embedder, store=store)
    yield svc
    svc.close()


def test_a_qdrant_server_that_stops_answering(settings, server_store_services, fake_llm):
    """503 store_unavailable on every data endpoint, nothing half-written; back to serving when it returns."""
    from qdrant_client import QdrantClient

    store = server_store_services.store
    with TestClient(create_app(settings, server_store_services, llm=fake_llm)) as client:
        assert client.post("/documents", data={"space_id": SPACE}, files={"file": ("notes.md", NOTES)}).status_code == 201
        working = store.client
        store.client = QdrantClient(url=f"http://127.0.0.1:{closed_port()}", timeout=1)
        try:
            assert_error(client.get("/search", params={"q": "backups", "space_id": SPACE}), 503, "store_unavailable")
            assert_error(client.post("/ask", json={"q": QUESTION, "space_id": SPACE}), 503, "store_unavailable")
            assert_error(client.post("/ask", json={"q": QUESTION, "space_id": SPACE, "stream": True}), 503, "store_unavailable")
            assert_error(client.get("/documents", params={"space_id": SPACE}), 503, "store_unavailable")
            assert_error(
                client.post("/documents", data={"space_id": SPACE}, files={"file": ("new.md", b"# New\n\nA new document.")}),
                503, "store_unavailable",
            )
            health = client.get("/health")
            assert health.status_code == 200 and health.json()["status"] == "degraded"  # alive: do not restart
            ready = client.get("/ready")
            assert ready.status_code == 503 and ready.json()["components"]["store"]["status"] == "error"
            assert metric(client, "rag_errors_total", type="store_unavailable") >= 5
        finally:
            store.client.close()
            store.client = working
        assert client.get("/ready").status_code == 200
        docs = client.get("/documents", params={"space_id": SPACE}).json()["documents"]
        assert [d["path"] for d in docs] == ["notes.md"]  # the upload that failed left nothing
        assert client.get("/search", params={"q": "backups", "space_id": SPACE}).json()["results"]


BIG_DOC = ("# Runbook\n\n" + "\n\n".join(
    f"Step {i}: check the replication lag on node {i % 7} and page the on-call engineer if it exceeds {i} seconds."
    for i in range(200)
)).encode()


def _ingest_is_refused_for_lack_of_space(client: TestClient, store) -> None:
    points_before = store.health()["points"]
    response = client.post("/documents", data={"space_id": SPACE}, files={"file": ("runbook.md", BIG_DOC)})
    assert_error(response, 507, "storage_full")
    assert "MIN_FREE_DISK_MB" in response.json()["error"]["message"]
    assert store.health()["points"] == points_before  # nothing written, not even staged chunks
    assert [d["path"] for d in client.get("/documents", params={"space_id": SPACE}).json()["documents"]] == ["notes.md"]
    assert client.get("/search", params={"q": "backups", "space_id": SPACE}).json()["results"]  # reads still work
    assert client.get("/ready").status_code == 200


def test_ingest_is_refused_before_writing_when_the_disk_reserve_would_be_crossed(settings, services, fake_llm):
    """MIN_FREE_DISK_MB: a write that would leave less free space is refused up front (507), nothing written."""
    store = services.store
    with TestClient(create_app(settings, services, llm=fake_llm)) as client:
        assert client.post("/documents", data={"space_id": SPACE}, files={"file": ("notes.md", NOTES)}).status_code == 201
        reserve = store.min_free_bytes
        # A reserve just above what is free (by a margin that other writers on a shared disk cannot erase).
        store.min_free_bytes = store.free_bytes() + 100 * 1024 * 1024
        try:
            _ingest_is_refused_for_lack_of_space(client, store)
        finally:
            store.min_free_bytes = reserve
        assert client.post("/documents", data={"space_id": SPACE}, files={"file": ("runbook.md", BIG_DOC)}).status_code == 201


@pytest.fixture
def full_disk(tmp_path):
    """A 96 MB tmpfs, mounted for this test (root only); yields its path and unmounts it afterwards."""
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mountpoint)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the reserve test above covers the logic")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_a_really_full_disk_refuses_the_write_and_the_process_survives(settings, embedder, fake_llm, full_disk: Path):
    """On a disk filled up to its last MBs, ingest gets 507 (Qdrant Edge would die of SIGBUS writing there)."""
    settings = settings.model_copy(update={"data_dir": full_disk / "data", "min_free_disk_mb": 8.0})
    services = build_runtime(settings, embedder=embedder)
    ballast = full_disk / "ballast"
    try:
        with TestClient(create_app(settings, services, llm=fake_llm)) as client:
            assert client.post("/documents", data={"space_id": SPACE}, files={"file": ("notes.md", NOTES)}).status_code == 201
            # Leave 10 MB free: above the 8 MB reserve, below what a commit asks for (its chunks, WAL and segment copies).
            with open(ballast, "wb") as f:
                f.write(b"\0" * max(shutil.disk_usage(full_disk).free - 10 * 1024 * 1024, 0))
            _ingest_is_refused_for_lack_of_space(client, services.store)
            ballast.unlink()
            response = client.post("/documents", data={"space_id": SPACE}, files={"file": ("runbook.md", BIG_DOC)})
            assert response.status_code == 201, response.text
            assert json.loads(client.get("/ready").text)["components"]["store"]["disk_free_mb"] > 8
    finally:
        services.close()
