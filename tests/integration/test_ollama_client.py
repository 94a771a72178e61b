"""The Ollama client against a server speaking Ollama's documented HTTP API (`tests/support/ollama_server.py`).

The real Ollama daemon is not run here (no binary, no model downloads on the CI machines; see
docs/answering.md): these tests check what the client sends and how it reads and translates what Ollama's
API answers, over real HTTP with the official SDK.
"""

from __future__ import annotations

import asyncio
import time

import ollama
import pytest

from backend.errors import LLMBadResponse, LLMError, LLMModelNotFound, LLMTimeout, LLMUnavailable
from backend.llm.base import RETRY_ATTEMPTS, RETRY_BACKOFF_S, StreamEnd, TokenDelta
from backend.llm.ollama import OllamaClient
from backend.settings import Settings
from cli.local_backend import free_port
from tests.support.ollama_server import FakeModel, FakeOllama

MODEL = "llama3.1:8b"
MESSAGES = [
    {"role": "system", "content": "Answer only from the sources."},
    {"role": "user", "content": "Where are backups stored? Sources: [1] Backups are on the NAS."},
]
ERROR_TEXT = "llama runner process has terminated: exit status 2"
RETRY_WAIT_S = RETRY_ATTEMPTS * RETRY_BACKOFF_S  # the least time a request retried to the end takes


@pytest.fixture
def fake():
    with FakeOllama(
        {
            MODEL: 131072,
            "tiny:1b": 2048,
            "no-context": None,  # model_info without <family>.context_length
            "flaky": FakeModel(break_after_tokens=3),
            "erroring": FakeModel(error_after_tokens=2, error_text=ERROR_TEXT),
            "slow": FakeModel(first_chunk_delay_s=3),
            "truncated": FakeModel(end_without_done=True),
            "broken": FakeModel(chat_status=500, error_text=ERROR_TEXT),
            "embedder": FakeModel(capabilities=("embedding",)),
            "restarting": FakeModel(cut_first_requests=RETRY_ATTEMPTS),  # succeeds on the last attempt
            "dead": FakeModel(cut_first_requests=1000),
        }
    ) as server:
        yield server


def run(work, *args, **kwargs):
    """`await work(client)` with a fresh OllamaClient(*args, **kwargs), closed afterwards."""

    async def go():
        client = OllamaClient(*args, **kwargs)
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


async def collect(client: OllamaClient, max_tokens: int = 64):
    """Every event of one answer, and the LLMError that ended it (or None)."""
    events = []
    try:
        async for event in client.stream_chat(MESSAGES, max_tokens=max_tokens, temperature=0.2):
            events.append(event)
    except LLMError as exc:
        return events, exc
    return events, None


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_model_info_reads_the_models_context_and_caps_it_at_num_ctx(fake):
    async def twice(client):
        return await client.model_info(), await client.model_info()

    info, again = run(twice, fake.url, MODEL, num_ctx=8192)
    assert (info.engine, info.model, info.context_length) == ("ollama", MODEL, 8192)
    assert again is info and len(fake.show_requests()) == 1  # cached after the first success
    assert run(lambda c: c.model_info(), fake.url, MODEL, num_ctx=1 << 20).context_length == 131072  # the model's own

    assert run(lambda c: c.model_info(), fake.url, "tiny:1b", num_ctx=8192).context_length == 2048  # the model's own wins
    assert run(lambda c: c.model_info(), fake.url, "no-context", num_ctx=4096).context_length == 4096  # nothing to cap with


def test_chat_streams_deltas_then_one_end_and_sends_num_ctx_and_keep_alive(fake):
    events, error = run(collect, fake.url, MODEL, num_ctx=8192, keep_alive="10m")
    assert error is None
    deltas, end = events[:-1], events[-1]
    assert len(deltas) >= 5 and all(isinstance(e, TokenDelta) for e in deltas)
    assert "".join(d.text for d in deltas) == "You asked: Where are backups stored? Sources: [1]. Answer [1]."
    assert isinstance(end, StreamEnd) and end.finish_reason == "stop"
    assert end.completion_tokens == len(deltas) and end.prompt_tokens and end.prompt_tokens > 0

    (request,) = fake.chat_requests()
    assert request["model"] == MODEL and request["stream"] is True and request["messages"] == MESSAGES
    assert request["options"] == {"num_ctx": 8192, "num_predict": 64, "temperature": 0.2}
    assert request["keep_alive"] == "10m"


def test_num_ctx_is_the_capped_context_max_tokens_is_num_predict_and_numeric_keep_alive(fake):
    events, error = run(lambda c: collect(c, max_tokens=3), fake.url, "tiny:1b", num_ctx=8192, keep_alive="-1")
    assert error is None and [type(e) for e in events] == [TokenDelta] * 3 + [StreamEnd]
    assert events[-1].finish_reason == "length" and events[-1].completion_tokens == 3
    (request,) = fake.chat_requests()
    assert request["options"]["num_ctx"] == 2048 and request["options"]["num_predict"] == 3
    assert request["keep_alive"] == -1  # a number: Ollama rejects the string "-1" (not a Go duration)


def test_a_model_that_is_not_pulled(fake):
    with pytest.raises(LLMModelNotFound, match="ollama pull mistral:7b"):
        run(lambda c: c.model_info(), fake.url, "mistral:7b")

    async def removed_after_model_info(client):
        await client.model_info()
        del fake.models[MODEL]  # `ollama rm` while the backend runs: /api/chat answers 404
        return await collect(client)

    events, error = run(removed_after_model_info, fake.url, MODEL)
    assert events == [] and isinstance(error, LLMModelNotFound) and f"ollama pull {MODEL}" in error.message


def test_a_model_that_cannot_chat(fake):
    with pytest.raises(LLMModelNotFound, match="cannot chat"):
        run(lambda c: c.model_info(), fake.url, "embedder")


def test_ollama_down_is_unavailable_after_retries_and_health_does_not_retry(monkeypatch):
    # The back-off waits are counted, not timed: a loaded CI machine may take longer than a back-off for a probe.
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def counted_sleep(delay, *args, **kwargs):
        waits.append(delay)
        return await real_sleep(delay, *args, **kwargs)

    monkeypatch.setattr(asyncio, "sleep", counted_sleep)
    url = closed_port_url()
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match=r"could not reach the LLM engine \(Ollama\)") as raised:
        run(lambda c: c.model_info(), url, MODEL)
    assert time.monotonic() - started >= RETRY_WAIT_S  # retried, with the back-off
    assert waits.count(RETRY_BACKOFF_S) == RETRY_ATTEMPTS
    assert url not in raised.value.message  # the engine's address goes to the log, not to tenants

    waits.clear()
    health = run(lambda c: c.health(), url, MODEL)
    assert RETRY_BACKOFF_S not in waits  # a probe answers at once: no retry, no back-off
    assert health["status"] == "error" and health["error_type"] == "llm_unavailable" and health["url"] == url


def test_ollama_stopping_before_the_chat_is_retried_then_unavailable(fake):
    async def stop_then_chat(client):
        await client.model_info()
        fake.stop()
        started = time.monotonic()
        result = await collect(client)
        return result, time.monotonic() - started

    (events, error), elapsed = run(stop_then_chat, fake.url, MODEL)
    assert events == [] and isinstance(error, LLMUnavailable) and "could not reach" in error.message
    assert elapsed >= RETRY_WAIT_S


def test_a_connection_dropped_before_the_first_chunk_is_retried(fake):
    events, error = run(collect, fake.url, "restarting")
    assert error is None and isinstance(events[-1], StreamEnd)
    assert len(fake.chat_requests()) == RETRY_ATTEMPTS + 1

    events, error = run(collect, fake.url, "dead")
    assert events == [] and isinstance(error, LLMUnavailable) and "before it answered" in error.message
    assert len(fake.chat_requests()) == 2 * (RETRY_ATTEMPTS + 1)


def test_a_stream_that_breaks_after_tokens_raises_and_is_never_retried(fake):
    events, error = run(collect, fake.url, "flaky")
    assert [type(e) for e in events] == [TokenDelta] * 3
    assert isinstance(error, LLMBadResponse) and "connection" in error.message and "broke" in error.message
    assert len(fake.chat_requests()) == 1  # the tokens already sent are never replayed


def test_an_error_line_mid_stream_is_a_bad_response(fake):
    events, error = run(collect, fake.url, "erroring")
    assert [type(e) for e in events] == [TokenDelta] * 2
    assert isinstance(error, LLMBadResponse) and ERROR_TEXT in error.message
    assert len(fake.chat_requests()) == 1


def test_a_stream_ending_without_its_done_chunk_is_a_bad_response(fake):
    events, error = run(collect, fake.url, "truncated")
    assert events and all(isinstance(e, TokenDelta) for e in events)  # no StreamEnd
    assert isinstance(error, LLMBadResponse) and "stream ended before completion" in error.message


def test_a_slow_first_chunk_times_out_without_retry(fake):
    started = time.monotonic()
    events, error = run(collect, fake.url, "slow", timeout_s=0.5)
    assert events == [] and isinstance(error, LLMTimeout) and "LLM_TIMEOUT_S" in error.message
    assert time.monotonic() - started < 2.5 and len(fake.chat_requests()) == 1


def test_a_server_error_is_a_bad_response_with_its_status(fake):
    events, error = run(collect, fake.url, "broken")
    assert events == [] and isinstance(error, LLMBadResponse)
    assert "500" in error.message and ERROR_TEXT in error.message
    assert len(fake.chat_requests()) == 1  # an answer, even an error, is not retried


def test_a_consumer_stopping_early_closes_the_stream(fake):
    async def first_delta_only(client):
        stream = client.stream_chat(MESSAGES, max_tokens=64, temperature=0)
        first = await anext(stream)
        await stream.aclose()  # what /ask does when its client goes away
        return first

    assert isinstance(run(first_delta_only, fake.url, MODEL), TokenDelta)


def test_health_ok_and_error_shapes(fake):
    health = run(lambda c: c.health(), fake.url, MODEL, num_ctx=4096)
    assert health == {"engine": "ollama", "model": MODEL, "url": fake.url, "status": "ok", "context_length": 4096}

    health = run(lambda c: c.health(), fake.url, "mistral:7b")
    assert set(health) == {"engine", "model", "url", "status", "error", "error_type"}
    assert health["status"] == "error" and health["error_type"] == "llm_model_not_found"
    assert "ollama pull mistral:7b" in health["error"]


def test_token_counts_are_high_estimates_and_settings_build_the_client(fake):
    counts = run(lambda c: c.count_tokens([{"role": "user", "content": "x" * 300}, {"role": "user", "content": ""}]), fake.url, MODEL)
    assert counts[0] >= 100 and counts[1] > 0  # ~3 characters per token, plus a margin

    settings = Settings(_env_file=None, ollama_base_url=fake.url + "/", ollama_model="tiny:1b", ollama_num_ctx=1024, llm_timeout_s=7)
    client = OllamaClient.from_settings(settings)
    assert (client.engine, client.model, client.exact_token_counts, client.base_url) == ("ollama", "tiny:1b", False, fake.url)
    assert (client.num_ctx, client.keep_alive, client.timeout_s) == (1024, "30m", 7)
    asyncio.run(client.aclose())


def test_the_fake_speaks_what_the_sdk_parses(fake):
    """The fake's answers validate against the official SDK's own response models."""

    async def go():
        client = ollama.AsyncClient(host=fake.url)
        try:
            listed = await client.list()
            shown = await client.show(MODEL)
            whole = await client.chat(model=MODEL, messages=MESSAGES, stream=False)
            return listed, shown, whole
        finally:
            await client.close()

    listed, shown, whole = asyncio.run(go())
    assert MODEL in [m.model for m in listed.models]
    assert shown.modelinfo["llama.context_length"] == 131072 and "completion" in shown.capabilities
    assert whole.done and whole.done_reason == "stop" and whole.message.content.startswith("You asked:")


def test_ask_end_to_end_through_the_app_with_ollama(fake, settings, services):
    from fastapi.testclient import TestClient

    from backend.app import create_app

    settings = settings.model_copy(update={"llm_backend": "ollama", "ollama_base_url": fake.url, "ollama_model": MODEL})
    with TestClient(create_app(settings, services)) as client:
        response = client.post("/documents", data={"space_id": "kb"}, files={"file": ("b.txt", b"Backups are stored on the NAS in rack B.")})
        assert response.status_code == 201, response.text
        response = client.post("/ask", json={"q": "Where are backups stored?", "space_id": "kb"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["engine"] == "ollama" and body["context"]["token_counts"] == "upper_bound"
        assert body["sources"][0]["path"] == "b.txt" and body["sources"][0]["cited"] is True
        assert fake.chat_requests()[0]["options"]["num_ctx"] == settings.ollama_num_ctx
        fake.models.clear()
        assert client.get("/health").json()["components"]["llm"]["error_type"] == "llm_model_not_found"
