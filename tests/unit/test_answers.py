"""The answer path's types: RagService's typed events, the one JSON of an Answer (and AskOut derived from it),
the SSE writer, and the one error function in its two dialects."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import anyio
import pytest

from backend.answers import (
    Answer,
    AnswerEvent,
    Context,
    Source,
    Timings,
    TokenEvent,
    Usage,
)
from backend.api.errors import HTTPError, dialect_of, error_body, unexpected
from backend.api.schemas import AskOut
from backend.api.streaming import sse_event
from backend.errors import Forbidden, InvalidRequest, LLMUnavailable, Unauthorized
from backend.rag import NOT_FOUND_ANSWER, AskRequest, RagService
from backend.retrieval.retriever import Retrieved
from tests.support.fake_llm import FakeLLM

HIT = {"doc_id": "d1", "path": "handbook.md", "chunk_index": 0, "page": 2, "heading": "Keys", "score": 0.9,
       "dense_score": 0.9, "text": "API keys rotate every 90 days."}
SETTINGS = SimpleNamespace(answer_max_tokens=64, answer_temperature=0.1, search_max_top_k=50, ask_min_score=0.5,
                           ask_max_in_flight=8, citation_check="mark")


class StubRetriever:
    cross = None

    def __init__(self, hits: list[dict]) -> None:
        self.hits = hits

    def search(self, q, space_id, top_k, mode, rerank) -> Retrieved:
        return Retrieved(results=list(self.hits), timings={"embed_ms": 1.0}, mode="hybrid")


def events_of(stream) -> list:
    async def collect():
        return [event async for event in stream]

    return asyncio.run(collect())


def test_a_grounded_answer_streams_tokens_then_one_answer_with_every_key():
    rag = RagService(StubRetriever([HIT]), FakeLLM("Every 90 days [1] [7]."), SETTINGS)
    events = events_of(rag.ask(AskRequest("How often do keys rotate?", "kb")))
    assert all(isinstance(e, TokenEvent) for e in events[:-1]) and isinstance(events[-1], AnswerEvent)
    answer = events[-1].answer
    assert "".join(e.text for e in events[:-1]) == "Every 90 days [1] [7]."
    assert answer.grounded and not answer.refused and answer.text == "Every 90 days [1]."
    data = answer.to_dict()
    assert set(data) == {"engine", "model", "answer", "sources", "grounded", "finish_reason", "usage", "citations",
                         "cited", "invalid_citations", "context", "timings"}
    assert data["sources"] == [{**HIT, "n": 1, "cross_score": None, "cited": True}]
    assert data["cited"] == [1] and data["invalid_citations"] == [7] and data["finish_reason"] == "stop"
    # The claim check: one sentence, its fact (90) in source [1], the span the whole source.
    assert data["citations"] == [{"sentence": "Every 90 days [1].", "start": 0, "end": 18, "sources": [1],
                                  "supported": True, "status": "supported", "span": {"n": 1, "start": 0, "end": 30},
                                  "score": data["citations"][0]["score"], "missing": [], "attributed": False}]
    assert data["usage"] == {"prompt_tokens": 100, "completion_tokens": 5}  # FakeLLM: one per word
    assert data["context"]["used"] == 1 and data["context"]["token_counts"] == "upper_bound"
    assert "history" not in data["context"]
    assert set(data["timings"]) == {"retrieval_ms", "ttft_ms", "total_ms", "retrieval_stages", "check_ms"}


def test_no_answer_limit_means_no_retrieval_thread_limit_either():
    # ASK_MAX_IN_FLIGHT=0 is "no limit": the answers' retrieval threads must not become a pool of none.
    rag = RagService(StubRetriever([HIT]), FakeLLM("Every 90 days [1]."), SimpleNamespace(**{**vars(SETTINGS), "ask_max_in_flight": 0}))

    async def ask_with_deadline():
        with anyio.fail_after(30):
            return [event async for event in rag.ask(AskRequest("How often do keys rotate?", "kb"))]

    events = anyio.run(ask_with_deadline)
    assert events[-1].answer.text == "Every 90 days [1]." and "wait_ms" in events[-1].answer.timings.retrieval_stages


def test_a_refusal_asks_no_engine_and_has_no_finish_reason():
    llm = FakeLLM()
    rag = RagService(StubRetriever([{**HIT, "dense_score": 0.1}]), llm, SETTINGS)
    events = events_of(rag.ask(AskRequest("Something else?", "kb")))
    assert [type(e) for e in events] == [TokenEvent, AnswerEvent] and llm.calls == []
    answer = events[-1].answer
    assert answer.refused and answer.text == NOT_FOUND_ANSWER.format(space="kb")
    data = answer.to_dict()
    assert "finish_reason" not in data and data["usage"] is None and data["sources"] == []
    assert data["context"] == {"retrieved": 1, "below_min_score": 1, "used": 0, "dropped": [], "mode": "hybrid",
                               "reranked": False}


def test_plain_chat_is_the_same_events_without_retrieval():
    rag = RagService(StubRetriever([]), FakeLLM("Hello there"), SETTINGS)
    events = events_of(rag.chat([{"role": "user", "content": "hi"}]))
    answer = events[-1].answer
    assert answer.text == "Hello there" and answer.finish_reason == "stop" and not answer.refused
    assert "context" not in answer.to_dict() and "timings" not in answer.to_dict()


@pytest.mark.parametrize("top_k", [0, 51])
def test_top_k_is_checked_by_the_answer_path(top_k):
    rag = RagService(StubRetriever([HIT]), FakeLLM(), SETTINGS)
    with pytest.raises(InvalidRequest, match="top_k must be between 1 and 50"):
        events_of(rag.ask(AskRequest("q", "kb", top_k=top_k)))


def test_ask_out_is_derived_from_the_answer_with_the_same_json():
    source = Source(1, "d1", "a.md", 0, None, None, 1, None, None, "text", cited=True)
    grounded = Answer("A [1].", "vllm", "m", grounded=True, sources=[source], finish_reason="length",
                      usage=Usage(10, 2), cited=[1], context=Context(1, 0, "dense", False, used=1),
                      timings=Timings(1.234, 5.678, 9.0))
    refused = Answer("nothing", "vllm", None, context=Context(0, 0, "dense", False), timings=Timings(1, None, 2))
    for answer in (grounded, refused):
        assert AskOut.from_answer(answer).body() == answer.to_dict()
    assert grounded.to_dict()["timings"] == {"retrieval_ms": 1.23, "ttft_ms": 5.68, "total_ms": 9.0, "retrieval_stages": {}}
    assert "finish_reason" not in AskOut.from_answer(refused).body()


def test_one_error_function_two_dialects():
    exc = InvalidRequest("top_k must be between 1 and 50")
    assert error_body(exc) == {"error": {"type": "invalid_request", "message": "top_k must be between 1 and 50"}}
    assert error_body(exc, "openai") == {"error": {"message": "top_k must be between 1 and 50",
                                                   "type": "invalid_request_error", "param": None,
                                                   "code": "invalid_request"}}
    with_param = HTTPError(404, "model_not_found", "no such model", "model")
    assert error_body(with_param, "openai")["error"] == {"message": "no such model", "type": "invalid_request_error",
                                                         "param": "model", "code": "model_not_found"}
    assert error_body(with_param) == {"error": {"type": "model_not_found", "message": "no such model"}}
    kinds = {Unauthorized("k"): "authentication_error", Forbidden("f"): "permission_error",
             LLMUnavailable("down"): "server_error", unexpected(KeyError("x")): "server_error"}
    for error, kind in kinds.items():
        assert error_body(error, "openai")["error"]["type"] == kind
    assert error_body(unexpected(KeyError("x")))["error"] == {"type": "internal_error", "message": "unexpected KeyError"}
    assert dialect_of("/v1/chat/completions") == "openai" and dialect_of("/ask") == "appliance"


def test_one_sse_writer():
    assert sse_event("token", {"text": "é"}) == 'event: token\ndata: {"text": "é"}\n\n'.encode()
    assert sse_event(None, {"a": 1}) == b'data: {"a": 1}\n\n'


class Embedder:
    """The retriever's embedder as the claim check uses it: query-side vectors, every call recorded."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def embed_queries(self, texts):
        self.calls.append(list(texts))
        if self.fail:
            raise RuntimeError("the query worker died")
        return [[1.0, 0.0]] * len(texts)


def test_the_claim_check_uses_the_retrievers_embedder_only_when_a_cosine_decides():
    retriever = StubRetriever([HIT])
    retriever.embedder = Embedder()
    # Words and facts decide: no embedder call.
    rag = RagService(retriever, FakeLLM("API keys rotate every 90 days [1]."), SETTINGS)
    answer = events_of(rag.ask(AskRequest("How often do keys rotate?", "kb")))[-1].answer
    assert [c.status for c in answer.claims] == ["supported"] and retriever.embedder.calls == []
    # A paraphrase short of the word overlap: one call, the sentence and its span; the (stub) cosine of 1 decides.
    rag = RagService(retriever, FakeLLM("Credentials change on a quarterly schedule [1]."), SETTINGS)
    answer = events_of(rag.ask(AskRequest("How often do keys rotate?", "kb")))[-1].answer
    (call,) = retriever.embedder.calls
    assert len(call) == 2 and call[0].startswith("Credentials change on a quarterly schedule") and call[1] == HIT["text"]
    assert answer.claims[0].status == "supported" and answer.grounded


def test_a_failing_embedder_leaves_the_check_to_the_rules():
    retriever = StubRetriever([HIT])
    retriever.embedder = Embedder(fail=True)
    rag = RagService(retriever, FakeLLM("Credentials change on a quarterly schedule [1]."), SETTINGS)
    answer = events_of(rag.ask(AskRequest("How often do keys rotate?", "kb")))[-1].answer
    assert len(retriever.embedder.calls) == 1
    assert answer.claims[0].status == "unsupported" and not answer.grounded and not answer.refused
    assert "finish_reason" in answer.to_dict()
