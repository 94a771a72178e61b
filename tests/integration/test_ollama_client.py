"""The Ollama client against a server speaking Ollama's documented HTTP API (the real daemon cannot run
on the CI machines; see docs/answering.md)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from backend.errors import LLMBadResponse, LLMError, LLMModelNotFound, LLMTimeout, LLMUnavailable
from backend.llm.base import StreamEnd, TokenDelta
from backend.llm.ollama import OllamaClient
from tests.fakes.ollama_server import FakeOllama

MESSAGES = [{"role": "system", "content": "Answer from the sources."}, {"role": "user", "content": "Sources: ...\n\nQuestion: Where are backups?"}]


@pytest.fixture
def fake():
    with FakeOllama({"llama3.1:8b": 131072, "tiny:1b": 2048}) as server:
        yield server


def run(coro_fn, *args, **kwargs):
    async def go():
        client = OllamaClient(*args, **kwargs)
        try:
            return await coro_fn(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


async def collect(client, **kwargs):
    events = []
    try:
        async for event in client.stream_chat(MESSAGES, max_tokens=kwargs.get("max_tokens", 64), temperature=0.2):
            events.append(event)
    except LLMError as exc:
        return events, exc
    return events, None


def test_model_info_caps_the_context_at_num_ctx(fake):
    info = run(lambda c: c.model_info(), fake.url, "llama3.1:8b", num_ctx=8192)
    assert (info.engine, info.model, info.context_length) == ("ollama", "llama3.1:8b", 8192)
    small = run(lambda c: c.model_info(), fake.url, "tiny:1b", num_ctx=8192)
    assert small.context_length == 2048  # the model's own limit wins when smaller


def test_chat_streams_tokens_then_one_end_and_sends_num_ctx(fake):
    events, error = run(collect, fake.url, "llama3.1:8b", num_ctx=8192, keep_alive="10m")
    assert error is None
    deltas = [e for e in events if isinstance(e, TokenDelta)]
    assert len(deltas) >= 5 and isinstance(events[-1], StreamEnd)
    assert "".join(d.text for d in deltas).startswith("You asked: Where are backups?")
    assert events[-1].finish_reason == "stop" and events[-1].prompt_tokens == 42
    (request,) = fake.chat_requests()
    assert request["options"]["num_ctx"] == 8192 and request["options"]["num_predict"] == 64
    assert request["options"]["temperature"] == 0.2 and request["keep_alive"] == "10m" and request["stream"] is True


def test_a_model_that_is_not_pulled(fake):
    with pytest.raises(LLMModelNotFound, match="ollama pull mistral:7b"):
        run(lambda c: c.model_info(), fake.url, "mistral:7b")
    health = run(lambda c: c.health(), fake.url, "mistral:7b")
    assert health["status"] == "error" and health["error_type"] == "llm_model_not_found"


def test_server_down_is_unavailable_after_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(LLMUnavailable, match="could not reach Ollama"):
        run(lambda c: c.model_info(), f"http://127.0.0.1:{port}", "llama3.1:8b")


def test_a_stream_that_breaks_after_tokens_is_not_retried(fake):
    fake.break_after = 3
    events, error = run(collect, fake.url, "llama3.1:8b")
    assert len([e for e in events if isinstance(e, TokenDelta)]) == 3
    assert isinstance(error, LLMBadResponse)
    assert len(fake.chat_requests()) == 1  # never replayed after the first token


def test_an_error_line_mid_stream(fake):
    fake.error_after = 2
    events, error = run(collect, fake.url, "llama3.1:8b")
    assert len(events) == 2 and isinstance(error, LLMBadResponse) and "error was encountered" in error.message


def test_a_slow_first_chunk_times_out(fake):
    fake.first_chunk_delay_s = 3
    events, error = run(collect, fake.url, "llama3.1:8b", timeout_s=1)
    assert events == [] and isinstance(error, LLMTimeout)


def test_a_server_error_is_a_bad_response_with_its_status(fake):
    fake.fail_status = 500
    events, error = run(collect, fake.url, "llama3.1:8b")
    assert isinstance(error, LLMBadResponse) and "500" in error.message and "llama runner" in error.message


def test_health_ok_and_token_estimates(fake):
    health = run(lambda c: c.health(), fake.url, "llama3.1:8b", num_ctx=4096)
    assert health == {"engine": "ollama", "url": fake.url, "model": "llama3.1:8b", "status": "ok", "context_length": 4096}
    counts = run(lambda c: c.count_tokens([{"role": "user", "content": "x" * 300}]), fake.url, "llama3.1:8b")
    assert counts[0] >= 100  # a deliberately high estimate: ~3 characters per token


def test_ask_end_to_end_through_the_app_with_ollama(fake, settings, services):
    from fastapi.testclient import TestClient

    from backend.app import create_app

    settings = settings.model_copy(update={"llm_backend": "ollama", "ollama_base_url": fake.url, "ollama_model": "llama3.1:8b"})
    with TestClient(create_app(settings, services)) as client:
        client.post("/documents", data={"space_id": "kb"}, files={"file": ("b.txt", b"Backups are stored on the NAS in rack B.")})
        body = client.post("/ask", json={"q": "Where are backups stored?", "space_id": "kb"}).json()
        assert body["engine"] == "ollama" and body["context"]["token_counts"] == "estimated"
        assert body["sources"][0]["path"] == "b.txt" and body["sources"][0]["cited"] is True
        assert fake.chat_requests()[0]["options"]["num_ctx"] == settings.ollama_num_ctx
        fake.models.clear()
        assert client.get("/health").json()["components"]["llm"]["error_type"] == "llm_model_not_found"
