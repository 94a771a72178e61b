"""POST /ask through the app: real model and store, the scriptable LLM fake for the engine's behaviour."""

from __future__ import annotations

import pytest

from backend.errors import LLMBadResponse, LLMModelNotFound, LLMTimeout, LLMUnavailable
from tests.support.docs_factory import make_pdf
from tests.support.http_api import sse_events


@pytest.fixture
def indexed(client):
    pdf = make_pdf(["Welcome to the operations handbook.", "Backups run nightly at 02:00 to the NAS in rack B."])
    assert client.post("/documents", data={"space_id": "ops"}, files={"file": ("handbook.pdf", pdf)}).status_code == 201
    notes = b"# Keys\n\nAPI keys are rotated every 90 days by the security team."
    assert client.post("/documents", data={"space_id": "ops"}, files={"file": ("keys.md", notes)}).status_code == 201
    return client


def test_ask_json_answers_with_numbered_sources(indexed, fake_llm):
    fake_llm.answer = "Backups run nightly at 02:00 [1]."
    response = indexed.post("/ask", json={"q": "When do backups run?", "space_id": "ops", "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"] == "Backups run nightly at 02:00 [1]."
    assert body["engine"] == "fake" and body["model"] == "fake-model"
    first = body["sources"][0]
    assert first["n"] == 1 and first["path"] == "handbook.pdf" and first["page"] == 2 and first["cited"] is True
    assert {"doc_id", "chunk_index", "score", "text"} <= set(first)
    assert body["usage"] == {"prompt_tokens": 100, "completion_tokens": 6}  # six words from the fake
    assert set(body["timings"]) == {"retrieval_ms", "ttft_ms", "total_ms", "retrieval_stages"}
    stages = body["timings"]["retrieval_stages"]
    assert body["timings"]["ttft_ms"] is not None and {"wait_ms", "embed_ms", "search_ms"} <= set(stages)
    # The wait for a retrieval thread is part of retrieval, and the stages fit inside it.
    assert 0 <= stages["wait_ms"] and stages["wait_ms"] + stages["embed_ms"] + stages["search_ms"] <= body["timings"]["retrieval_ms"]
    assert response.headers["cache-control"] == "no-store"
    # The prompt carried the numbered sources and the question.
    prompt = fake_llm.calls[0][1]["content"]
    assert "[1] (handbook.pdf, page 2)" in prompt and prompt.endswith("Question: When do backups run?")


def test_invalid_citations_are_removed_and_reported(indexed, fake_llm):
    fake_llm.answer = "Keys rotate every 90 days [2][9]."
    body = indexed.post("/ask", json={"q": "How often are API keys rotated?", "space_id": "ops", "top_k": 2}).json()
    assert body["answer"] == "Keys rotate every 90 days [2]." or body["answer"] == "Keys rotate every 90 days."
    assert 9 in body["citations"]["invalid"]


def test_ask_streams_tokens_then_a_final_event(indexed, fake_llm):
    fake_llm.answer = "Backups run at 02:00 in rack B [1]."
    response = indexed.post("/ask", json={"q": "When do backups run?", "space_id": "ops", "stream": True})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    tokens = [data["text"] for kind, data in events if kind == "token"]
    assert len(tokens) >= 5 and "".join(tokens) == fake_llm.answer
    kind, final = events[-1]
    assert kind == "done" and final["answer"] == fake_llm.answer and final["sources"] and final["timings"]["total_ms"] > 0


def test_accept_header_selects_streaming(indexed):
    response = indexed.post("/ask", json={"q": "backups?", "space_id": "ops"}, headers={"Accept": "text/event-stream"})
    assert response.headers["content-type"].startswith("text/event-stream")


@pytest.mark.parametrize(
    "error,status,error_type",
    [
        (LLMUnavailable("connection refused"), 503, "llm_unavailable"),
        (LLMModelNotFound("model not pulled"), 503, "llm_model_not_found"),
        (LLMTimeout("too slow"), 504, "llm_timeout"),
        (LLMBadResponse("500 from engine"), 502, "llm_bad_response"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_llm_failures_before_the_first_token_are_json_errors(indexed, fake_llm, error, status, error_type, stream):
    fake_llm.fail_before = error
    response = indexed.post("/ask", json={"q": "When do backups run?", "space_id": "ops", "stream": stream})
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type
    assert response.headers["cache-control"] == "no-store"


def test_a_stream_failing_half_way_ends_with_an_error_event(indexed, fake_llm):
    fake_llm.answer = "one two three four five six"
    fake_llm.fail_after_tokens = 3
    fake_llm.fail_with = LLMBadResponse("engine crashed mid-answer")
    response = indexed.post("/ask", json={"q": "When do backups run?", "space_id": "ops", "stream": True})
    events = sse_events(response.text)
    assert [k for k, _ in events] == ["token", "token", "token", "error"]
    assert events[-1][1]["error"]["type"] == "llm_bad_response"


def test_a_json_answer_failing_half_way_is_a_5xx_not_a_partial_200(indexed, fake_llm):
    fake_llm.fail_after_tokens = 2
    fake_llm.fail_with = LLMTimeout("stalled")
    response = indexed.post("/ask", json={"q": "When do backups run?", "space_id": "ops"})
    assert response.status_code == 504 and response.json()["error"]["type"] == "llm_timeout"


def test_nothing_relevant_means_no_llm_call(indexed, fake_llm, services):
    services.settings.ask_min_score = 0.99
    body = indexed.post("/ask", json={"q": "What is the airspeed of a swallow?", "space_id": "ops"}).json()
    assert body["grounded"] is False and body["sources"] == [] and "could not find" in body["answer"]
    assert fake_llm.calls == []


def test_ask_validation_and_unknown_space(indexed):
    assert indexed.post("/ask", json={"q": "x", "space_id": "nope"}).status_code == 404
    assert indexed.post("/ask", json={"q": "x", "space_id": "bad space"}).json()["error"]["type"] == "invalid_space"
    assert indexed.post("/ask", json={"q": "", "space_id": "ops"}).status_code == 400
    assert indexed.post("/ask", json={"space_id": "ops"}).json()["error"]["type"] == "validation_error"
    assert indexed.post("/ask", json={"q": "x", "space_id": "ops", "top_k": 500}).status_code == 400


def test_small_context_drops_chunks_and_reports_them(indexed, fake_llm):
    from backend.rag import SYSTEM_PROMPT, TEMPLATE_MARGIN_TOKENS, user_message

    q = "When do backups run?"
    fixed = len(SYSTEM_PROMPT.split()) + len(user_message(q, []).split())  # the fake counts one token per word
    # Room for the margin, the answer, the instructions and ~20 tokens: one short source, not two.
    fake_llm.context_length = TEMPLATE_MARGIN_TOKENS + 80 + fixed + 20
    body = indexed.post("/ask", json={"q": q, "space_id": "ops", "top_k": 2, "max_tokens": 80}).json()
    context = body["context"]
    assert context["used"] == 1 and len(context["dropped"]) == 1
    assert context["dropped"][0]["reason"] == "context_budget"
    assert context["prompt_tokens_counted"] <= context["context_length"] - 80 - 64


def test_search_and_documents_keep_working_while_the_llm_is_down(indexed, fake_llm):
    fake_llm.fail_before = LLMUnavailable("down")
    assert indexed.get("/search", params={"q": "backups", "space_id": "ops"}).status_code == 200
    assert indexed.get("/documents", params={"space_id": "ops"}).status_code == 200
    assert indexed.post("/ask", json={"q": "backups", "space_id": "ops"}).status_code == 503
