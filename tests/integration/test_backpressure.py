"""Backpressure over HTTP (issue 21, item 3): ASK_MAX_IN_FLIGHT, the queue and its deadline, Retry-After, the
OpenAI dialect on /v1, the metrics, and the gate on vLLM's own queue.

The real app over real HTTP (uvicorn in a thread), the real store and embedder, the real vLLM client; the engine
is the fixed-latency stand-in (tests/support/openai_server.py), whose first token is delayed so that answers
hold their slots while the test sends more. Nothing here asserts a duration: the delays only order events, with
wide margins (the engine holds a slot for seconds, the checks take milliseconds).
"""

from __future__ import annotations

import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from tests.support.openai_server import FakeChatModel, FakeOpenAI
from tests.support.threaded_server import AppServer

SPACE = "ops"
MODEL = "fake-vllm"
ASK = {"q": "When do backups run?", "space_id": SPACE, "stream": True}
CHAT = {"model": f"rag/{SPACE}", "messages": [{"role": "user", "content": "When do backups run?"}]}
NOTES = b"# Backups\n\nBackups run nightly at 02:00 to the NAS in rack B."
ANSWER = "Backups run nightly at 02:00 [1]."
HOLD_S = 3.0  # the engine's first-token delay while slots must stay taken


@pytest.fixture(scope="module")
def engine():
    with FakeOpenAI({MODEL: FakeChatModel(answer=ANSWER)}) as fake:
        yield fake


@pytest.fixture
def model(engine):
    m = engine.models[MODEL]
    saved = dict(vars(m))
    yield m
    vars(m).update(saved)
    engine.waiting, engine.metrics_status = 0.0, 200


@contextmanager
def backend(settings, services, engine, **limits):
    update = {"llm_backend": "vllm", "vllm_base_url": f"{engine.url}/v1", "vllm_model": MODEL, "ask_min_score": -1.0,
              "answer_timeout_s": 120.0, **limits}
    app = create_app(settings.model_copy(update=update), services)
    with TestClient(app) as client:
        indexed = client.post("/documents", data={"space_id": SPACE}, files={"file": ("notes.md", NOTES)})
        assert indexed.status_code in (200, 201), indexed.text
        with AppServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
            yield http


def metric(http: httpx.Client, name: str, labels: str = "") -> float:
    text = http.get("/metrics").text
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name}{labels} not in /metrics"
    return float(found.group(1))


def wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def retry_after(response: httpx.Response) -> int:
    value = int(response.headers["retry-after"])
    assert 1 <= value <= 60
    return value


def test_the_limit_queues_then_sheds_at_once_in_both_dialects(settings, services, engine, model):
    model.first_token_delay_s = HOLD_S
    with backend(settings, services, engine, ask_max_in_flight=2, ask_queue_size=1, ask_queue_timeout_s=60) as http, \
            ThreadPoolExecutor(3) as pool:
        assert metric(http, "rag_answers_limit") == 2
        holders: list[Future] = [pool.submit(http.post, "/ask", json=ASK) for _ in range(2)]
        wait_for(lambda: metric(http, "rag_answers_in_flight") == 2)
        queued = pool.submit(http.post, "/ask", json=ASK)
        wait_for(lambda: metric(http, "rag_answers_queued") == 1)
        sent = len(engine.chat_requests)

        shed = http.post("/ask", json=ASK)  # the queue is full: refused at once
        assert shed.status_code == 503, shed.text
        assert shed.json()["error"]["type"] == "overloaded" and "capacity" in shed.json()["error"]["message"]
        retry_after(shed)
        assert shed.headers["cache-control"] == "no-store"
        shed_v1 = http.post("/v1/chat/completions", json=CHAT)
        assert shed_v1.status_code == 503
        assert shed_v1.json() == {"error": {"message": shed_v1.json()["error"]["message"], "type": "server_error",
                                            "param": None, "code": "overloaded"}}
        retry_after(shed_v1)
        assert len(engine.chat_requests) == sent  # the shed requests never reached the engine

        for done in [*holders, queued]:  # the admitted ones, the queued one included, are answered in full
            response = done.result(timeout=60)
            assert response.status_code == 200 and "event: done" in response.text
        assert metric(http, "rag_answers_shed_total", '{reason="queue_full"}') == 2
        assert metric(http, "rag_answers_shed_total", '{reason="queue_timeout"}') == 0
        assert metric(http, "rag_errors_total", '{type="overloaded"}') == 2
        wait_for(lambda: metric(http, "rag_answers_in_flight") == 0 and metric(http, "rag_answers_queued") == 0)
        assert metric(http, "rag_stage_duration_seconds_count", '{stage="admission"}') == 3
        # The queued answer waited for a slot: the admission stage saw more than the instant admissions.
        assert metric(http, "rag_stage_duration_seconds_sum", '{stage="admission"}') > 0.5


def test_the_queue_deadline_and_a_retry_after_from_measured_answers(settings, services, engine, model):
    model.first_token_delay_s = HOLD_S
    with backend(settings, services, engine, ask_max_in_flight=1, ask_queue_size=4, ask_queue_timeout_s=0.5) as http, \
            ThreadPoolExecutor(1) as pool:
        holder = pool.submit(http.post, "/ask", json=ASK)
        wait_for(lambda: metric(http, "rag_answers_in_flight") == 1)
        late = http.post("/ask", json={**ASK, "stream": False})
        assert late.status_code == 503 and late.json()["error"]["type"] == "queue_timeout"
        assert "ASK_QUEUE_TIMEOUT_S" in late.json()["error"]["message"]
        assert retry_after(late) == 1  # no answer measured yet
        late_v1 = http.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert late_v1.status_code == 503 and late_v1.json()["error"]["code"] == "queue_timeout"
        assert holder.result(timeout=60).status_code == 200
        assert metric(http, "rag_answers_shed_total", '{reason="queue_timeout"}') == 2
        assert metric(http, "rag_answers_queued") == 0

        # One answer held its slot for HOLD_S: the next refusal says to come back after about that long.
        holder = pool.submit(http.post, "/ask", json=ASK)
        wait_for(lambda: metric(http, "rag_answers_in_flight") == 1)
        assert retry_after(http.post("/ask", json=ASK)) >= 2
        assert holder.result(timeout=60).status_code == 200


def test_the_engines_own_queue_holds_answers_back(settings, services, engine, model):
    engine.waiting = 5
    with backend(settings, services, engine, ask_max_in_flight=8, ask_queue_size=4, ask_queue_timeout_s=1.0,
                 ask_engine_waiting_max=3) as http:
        http.post("/ask", json=ASK)  # the first answer starts the polling (before a reading, nothing is held)
        wait_for(lambda: metric(http, "rag_engine_requests_waiting") == 5)
        held = http.post("/ask", json=ASK)
        assert held.status_code == 503 and held.json()["error"]["type"] == "queue_timeout"
        engine.waiting = 0
        wait_for(lambda: metric(http, "rag_engine_requests_waiting") == 0)
        assert http.post("/ask", json=ASK).status_code == 200
        engine.metrics_status = 404  # metrics gone: nothing is held back
        wait_for(lambda: str(metric(http, "rag_engine_requests_waiting")) == "nan")
        engine.waiting = 50
        assert http.post("/ask", json=ASK).status_code == 200
