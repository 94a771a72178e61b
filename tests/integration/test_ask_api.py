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
    assert set(body["timings"]) == {"retrieval_ms", "ttft_ms", "total_ms", "retrieval_stages", "check_ms"}
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
    assert 9 in body["invalid_citations"]


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


def test_search_and_documents_keep_working_while_the_llm_is_down(indexed, fake_llm, services):
    fake_llm.fail_before = LLMUnavailable("down")
    assert indexed.get("/search", params={"q": "backups", "space_id": "ops"}).status_code == 200
    assert indexed.get("/documents", params={"space_id": "ops"}).status_code == 200
    assert indexed.post("/ask", json={"q": "backups", "space_id": "ops"}).status_code == 503


# ---- The claim check (issue 19; CITATION_CHECK, backend/citations/): every sentence of the answer against its sources.

BACKUPS = "Backups run nightly at 02:00 to the NAS in rack B."
KEYS = "API keys are rotated every 90 days by the security team."


def ask_all(client, fake_llm, services, answer: str, q: str = "When do backups run and how often are keys rotated?",
            **extra) -> tuple[dict, dict[str, int]]:
    """/ask with every chunk shown to the model (no relevance floor); the answer written with the source numbers
    the retrieval gave: `{backups}` and `{keys}` in `answer` become their [n]. Returns (body, {name: n})."""
    services.settings.ask_min_score = -1.0
    fake_llm.answer = "probe"
    probe = client.post("/ask", json={"q": q, "space_id": "ops", "top_k": 3}).json()
    numbers = {name: next(s["n"] for s in probe["sources"] if text in s["text"])
               for name, text in (("backups", BACKUPS), ("keys", KEYS))}
    fake_llm.answer = answer.format(**numbers)
    response = client.post("/ask", json={"q": q, "space_id": "ops", "top_k": 3, **extra})
    assert response.status_code == 200, response.text
    return response.json() if not extra.get("stream") else sse_events(response.text), numbers


def source_text(body: dict, n: int) -> str:
    return next(s["text"] for s in body["sources"] if s["n"] == n)


def test_a_supported_sentence_comes_with_its_span_in_the_source(indexed, fake_llm, services):
    body, n = ask_all(indexed, fake_llm, services, "Backups run nightly at 02:00 [{backups}].")
    (claim,) = body["citations"]
    assert claim["status"] == "supported" and claim["supported"] is True and claim["sources"] == [n["backups"]]
    assert body["answer"][claim["start"]:claim["end"]] == claim["sentence"] == body["answer"]
    span = claim["span"]
    assert span["n"] == n["backups"] and source_text(body, span["n"])[span["start"]:span["end"]] == BACKUPS
    assert 0.5 <= claim["score"] <= 1 and claim["attributed"] is False and claim["missing"] == []
    assert body["grounded"] is True and body["cited"] == [n["backups"]] and body["invalid_citations"] == []
    assert body["timings"]["check_ms"] >= 0


def test_a_wrong_number_is_unsupported_and_an_answer_of_it_alone_not_grounded(indexed, fake_llm, services):
    body, n = ask_all(indexed, fake_llm, services, "API keys are rotated every 30 days [{keys}].")
    (claim,) = body["citations"]
    assert (claim["status"], claim["supported"]) == ("unsupported", False) and "30" in claim["missing"]
    assert claim["span"]["n"] == n["keys"]  # the closest passage is still shown
    assert body["grounded"] is False and body["answer"] == fake_llm.answer  # mark: reported, not removed
    assert "finish_reason" in body  # the engine answered: not a refusal


def test_the_right_fact_with_the_wrong_source_number_is_unsupported(indexed, fake_llm, services):
    body, n = ask_all(indexed, fake_llm, services,
                      "Backups run nightly at 02:00 [{backups}]. API keys are rotated every 90 days [{backups}].")
    first, second = body["citations"]
    assert first["status"] == "supported" and second["status"] == "unsupported" and second["sources"] == [n["backups"]]
    assert "90" in second["missing"]
    assert body["grounded"] is True  # one supported sentence keeps it grounded; the other is flagged


def test_a_sentence_with_facts_and_no_citation_is_uncited(indexed, fake_llm, services):
    body, n = ask_all(indexed, fake_llm, services,
                      "Backups run nightly at 02:00 [{backups}]. Rack B holds the NAS. Here is what I found.")
    assert [c["status"] for c in body["citations"]] == ["supported", "uncited", "no_claim"]
    uncited = body["citations"][1]
    assert uncited["supported"] is None and uncited["sources"] == [] and uncited["span"] is None
    assert not uncited["attributed"]  # the answer cites: its uncited sentences are reported, not attributed


def test_an_answer_citing_nothing_is_attributed_to_the_sources_that_support_it(indexed, fake_llm, services):
    body, n = ask_all(indexed, fake_llm, services, "Backups run nightly at 02:00. API keys are rotated every 90 days.")
    backups, keys = body["citations"]
    assert (backups["status"], backups["sources"], backups["attributed"]) == ("supported", [n["backups"]], True)
    assert (keys["status"], keys["sources"], keys["attributed"]) == ("supported", [n["keys"]], True)
    assert source_text(body, keys["span"]["n"])[keys["span"]["start"]:keys["span"]["end"]] == KEYS
    # Still the sources it was given, none of them cited; grounded, since the checker found them supported.
    assert body["grounded"] is True and body["cited"] == [] and not any(s["cited"] for s in body["sources"])
    assert len(body["sources"]) == 3


def test_an_uncited_answer_no_source_supports_is_not_grounded(indexed, fake_llm, services):
    body, _ = ask_all(indexed, fake_llm, services, "The office opens at 09:00 in Warsaw.")
    (claim,) = body["citations"]
    assert claim["status"] == "uncited" and claim["attributed"] is False and body["grounded"] is False


def test_drop_removes_unsupported_sentences_from_the_final_answer_only(indexed, fake_llm, services):
    services.settings.citation_check = "drop"
    answer = "Backups run nightly at 02:00 [{backups}]. API keys are rotated every 30 days [{keys}]."
    events, n = ask_all(indexed, fake_llm, services, answer, stream=True)
    streamed = "".join(data["text"] for kind, data in events if kind == "token")
    kind, done = events[-1]
    assert kind == "done" and streamed == fake_llm.answer  # the tokens were sent as the engine wrote them
    assert done["answer"] == f"Backups run nightly at 02:00 [{n['backups']}]."
    kept, dropped = done["citations"]
    assert kept["status"] == "supported" and done["answer"][kept["start"]:kept["end"]] == kept["sentence"]
    assert dropped["status"] == "unsupported" and dropped["dropped"] is True and dropped["start"] is None
    assert dropped["sentence"] == f"API keys are rotated every 30 days [{n['keys']}]."
    assert done["cited"] == [n["backups"]] and done["grounded"] is True


def test_drop_of_every_sentence_says_so(indexed, fake_llm, services):
    from backend.rag import DROPPED_ANSWER

    services.settings.citation_check = "drop"
    body, _ = ask_all(indexed, fake_llm, services, "API keys are rotated every 30 days [{keys}].")
    assert body["answer"] == DROPPED_ANSWER and body["grounded"] is False and body["cited"] == []
    assert [c.get("dropped") for c in body["citations"]] == [True]


def test_off_checks_nothing(indexed, fake_llm, services):
    services.settings.citation_check = "off"
    body, n = ask_all(indexed, fake_llm, services, "API keys are rotated every 30 days [{keys}].")
    assert body["citations"] == [] and body["grounded"] is True and "check_ms" not in body["timings"]
    assert body["cited"] == [n["keys"]]


def test_the_metrics_count_checked_sentences_by_status_and_the_check_time(indexed, fake_llm, services):
    from prometheus_client.parser import text_string_to_metric_families

    def counts() -> dict:
        out = {}
        for family in text_string_to_metric_families(indexed.get("/metrics").text):
            for s in family.samples:
                if s.name == "rag_citation_sentences_total":
                    out[s.labels["status"]] = s.value
                elif s.name in ("rag_citation_check_duration_seconds_count", "rag_answers_ungrounded_total"):
                    out[s.name] = s.value
        return out

    before = counts()
    ask_all(indexed, fake_llm, services, "Backups run nightly at 02:00 [{backups}]. The NAS sits in rack B.")
    ask_all(indexed, fake_llm, services, "API keys are rotated every 30 days [{keys}].")
    after = counts()
    # ask_all asks twice (a probe, then the answer): the probe's "probe" is one no_claim sentence.
    assert after["supported"] - before["supported"] == 1 and after["uncited"] - before["uncited"] == 1
    assert after["unsupported"] - before["unsupported"] == 1 and after["no_claim"] - before["no_claim"] == 2
    assert after["rag_citation_check_duration_seconds_count"] - before["rag_citation_check_duration_seconds_count"] == 4
    assert after["rag_answers_ungrounded_total"] - before["rag_answers_ungrounded_total"] == 1
