"""The OpenAI-compatible API through the official `openai` SDK, against the real app served over real HTTP
(uvicorn in a thread), the real embedder and Qdrant Edge store; the engine is the scriptable fake LLM."""

from __future__ import annotations

import httpx
import openai
import pytest

from backend.errors import LLMBadResponse, LLMTimeout, LLMUnavailable
from backend.rag import CITE_REMINDER, SYSTEM_PROMPT
from backend.settings import Settings
from tests.support.openai_api import (
    ADMIN_KEY,
    HR_KEY,
    OPS_KEY,
    QUESTION,
    assert_openai_error,
    openai_settings,
    sdk,
    served_backend,
)


@pytest.fixture
def settings(tmp_path, model_cache) -> Settings:
    return openai_settings(tmp_path, model_cache)


@pytest.fixture
def backend(settings, services, fake_llm):
    with served_backend(settings, services, fake_llm) as url:
        yield url


def test_models_lists_the_spaces_the_key_covers(backend, services):
    models = sdk(backend).models.list()
    assert [m.id for m in models.data] == ["rag/hr", "rag/ops"]
    assert all(m.object == "model" and m.owned_by == "rag-appliance" and m.created > 1_700_000_000 for m in models.data)
    assert [m.id for m in sdk(backend, OPS_KEY).models.list().data] == ["rag/ops"]
    assert sdk(backend).models.retrieve("rag/ops").id == "rag/ops"
    with pytest.raises(openai.NotFoundError):
        sdk(backend).models.retrieve("rag/nope")
    # The engine's own model only when OPENAI_EXPOSE_ENGINE_MODEL is on, and for keys of every space.
    services.settings.openai_expose_engine_model = True
    assert [m.id for m in sdk(backend).models.list().data] == ["rag/hr", "rag/ops", "fake-model"]
    assert sdk(backend).models.list().data[-1].owned_by == "fake"
    assert [m.id for m in sdk(backend, OPS_KEY).models.list().data] == ["rag/ops"]


def test_a_completion_answers_with_citations_sources_and_usage(backend, fake_llm):
    fake_llm.answer = "Backups run nightly at 02:00 [1]."
    completion = sdk(backend).chat.completions.create(
        model="rag/ops", messages=[{"role": "user", "content": QUESTION}], max_tokens=100, temperature=0.3,
    )
    assert completion.object == "chat.completion" and completion.model == "rag/ops" and completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert choice.message.content == "Backups run nightly at 02:00 [1].\n\nSources:\n- [1] handbook.pdf, page 2"
    assert completion.usage.prompt_tokens == 100 and completion.usage.completion_tokens == 6
    assert completion.usage.total_tokens == 106
    sources = completion.sources  # the extra field, kept by the SDK's models
    assert sources[0]["n"] == 1 and sources[0]["path"] == "handbook.pdf" and sources[0]["cited"] is True
    assert completion.rag["engine"] == "fake" and completion.rag["cited"] == [1] and completion.rag["grounded"] is True
    # The claim check, as in POST /ask: the one sentence, supported by source [1], its span in that source's text.
    (claim,) = completion.rag["citations"]
    assert claim["status"] == "supported" and claim["sources"] == [1] and claim["span"]["n"] == 1
    span_text = sources[0]["text"][claim["span"]["start"]:claim["span"]["end"]]
    assert "02:00" in span_text
    prompt = fake_llm.calls[-1][1]["content"]
    assert "[1] (handbook.pdf, page 2)" in prompt and prompt.endswith(f"Question: {QUESTION}")
    # The footer is optional (extension `rag`), the sources field is not.
    plain = sdk(backend).chat.completions.create(
        model="rag/ops", messages=[{"role": "user", "content": QUESTION}], extra_body={"rag": {"sources_footer": False, "top_k": 1}},
    )
    assert plain.choices[0].message.content == "Backups run nightly at 02:00 [1]." and len(plain.sources) == 1


def test_a_streamed_completion_ends_with_sources_usage_and_done(backend, fake_llm):
    fake_llm.answer = "Backups run nightly at 02:00 [1]."
    stream = sdk(backend).chat.completions.create(
        model="rag/ops", messages=[{"role": "user", "content": QUESTION}], stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Backups run nightly at 02:00 [1].\n\nSources:\n- [1] handbook.pdf, page 2"
    final, usage = chunks[-2], chunks[-1]
    assert final.choices[0].finish_reason == "stop" and final.sources[0]["path"] == "handbook.pdf"
    assert usage.choices == [] and usage.usage.prompt_tokens == 100 and usage.usage.completion_tokens == 6
    assert all(c.usage is None for c in chunks[:-1])
    # Without include_usage there is no usage chunk; the raw stream ends with [DONE].
    with httpx.stream("POST", f"{backend}/v1/chat/completions", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                      json={"model": "rag/ops", "messages": [{"role": "user", "content": QUESTION}], "stream": True}) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in raw.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and '"finish_reason":"stop"' in lines[-2].replace(" ", "")
    assert '"usage"' not in "".join(lines)


EARLIER = [
    {"role": "system", "content": "You are a pirate."},
    {"role": "user", "content": QUESTION},
    {"role": "assistant", "content": "Backups run nightly at 02:00 [1].\n\nSources:\n- [1] handbook.pdf, page 2"},
]


def test_earlier_turns_reach_the_model_but_not_retrieval(backend, fake_llm):
    fake_llm.answer = "Every 90 days [1]."
    completion = sdk(backend).chat.completions.create(model="rag/ops", messages=[
        *EARLIER, {"role": "user", "content": [{"type": "text", "text": "How often are API keys rotated?"}]},
    ], extra_body={"rag": {"top_k": 1}})
    messages = fake_llm.calls[-1]
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}  # the client's system prompt is not used
    # The earlier answer without its footer and its citations (their numbers meant other sources).
    assert messages[1:3] == [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "Backups run nightly at 02:00."}]
    # Retrieval saw the last question only: its one source is the keys note, not the backups page.
    assert messages[3]["content"] == (
        "Sources:\n\n[1] (keys.md, section Keys)\nAPI keys are rotated every 90 days by the security team.\n\n"
        f"{CITE_REMINDER}\n\nQuestion: How often are API keys rotated?"
    )
    assert completion.rag["context"]["history"] == {"sent": 2, "dropped": 0}


def test_a_short_window_drops_earlier_turns_before_sources(backend, fake_llm):
    from backend.rag import TEMPLATE_MARGIN_TOKENS

    fake_llm.answer = "Every 90 days [1]."
    long_turns = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "Noted."}]
    # The fake counts a token per word: room for the instructions, the question and one source, not 300 words more.
    fake_llm.context_length = TEMPLATE_MARGIN_TOKENS + 50 + 200
    completion = sdk(backend).chat.completions.create(model="rag/ops", max_tokens=50, extra_body={"rag": {"top_k": 1}}, messages=[
        *long_turns, *EARLIER[1:], {"role": "user", "content": "How often are API keys rotated?"},
    ])
    context = completion.rag["context"]
    assert context["history"] == {"sent": 2, "dropped": 2} and context["used"] == 1 and context["dropped"] == []
    assert [m["role"] for m in fake_llm.calls[-1]] == ["system", "user", "assistant", "user"]
    assert fake_llm.calls[-1][1]["content"] == QUESTION


@pytest.mark.parametrize("stream", [False, True])
def test_errors_come_in_openai_format_with_the_right_status(backend, fake_llm, stream):
    ask = [{"role": "user", "content": QUESTION}]
    with pytest.raises(openai.NotFoundError) as info:
        sdk(backend).chat.completions.create(model="rag/nope", messages=ask, stream=stream)
    assert_openai_error(info.value, 404, "model_not_found", "invalid_request_error", "model")
    with pytest.raises(openai.NotFoundError) as info:
        sdk(backend).chat.completions.create(model="gpt-4o", messages=ask, stream=stream)
    assert_openai_error(info.value, 404, "model_not_found", "invalid_request_error", "model")
    with pytest.raises(openai.AuthenticationError) as info:
        sdk(backend, "wrong-key-0123456789abcdef").chat.completions.create(model="rag/ops", messages=ask, stream=stream)
    assert_openai_error(info.value, 401, "unauthorized", "authentication_error")
    with pytest.raises(openai.PermissionDeniedError) as info:
        sdk(backend, HR_KEY).chat.completions.create(model="rag/ops", messages=ask, stream=stream)
    assert_openai_error(info.value, 403, "forbidden", "permission_error")
    with pytest.raises(openai.BadRequestError) as info:
        sdk(backend).chat.completions.create(model="rag/ops", messages=ask, stream=stream, n=2)
    assert_openai_error(info.value, 400, "unsupported_parameter", "invalid_request_error", "n")
    for error, status, code in [(LLMUnavailable("connection refused"), 503, "llm_unavailable"),
                                (LLMTimeout("too slow"), 504, "llm_timeout"), (LLMBadResponse("500"), 502, "llm_bad_response")]:
        fake_llm.fail_before = error
        with pytest.raises(openai.InternalServerError) as info:
            sdk(backend).chat.completions.create(model="rag/ops", messages=ask, stream=stream)
        assert_openai_error(info.value, status, code, "server_error")
    fake_llm.fail_before = None


def test_missing_key_and_invalid_requests(backend):
    response = httpx.get(f"{backend}/v1/models")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["type"] == "authentication_error"
    client = sdk(backend)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    for tool_choice in ("required", {"type": "function", "function": {"name": "f"}}):  # a call it cannot make
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="rag/ops", messages=[{"role": "user", "content": "x"}], tools=tools,
                                           tool_choice=tool_choice)
        assert_openai_error(info.value, 400, "unsupported_parameter", "invalid_request_error", "tool_choice")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="rag/ops", messages=[{"role": "user", "content": "x"}], logprobs=True)
    assert info.value.param == "logprobs"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="rag/ops", messages=[{"role": "assistant", "content": "x"}])
    assert info.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="rag/ops", messages=[{"role": "user", "content": "x"}], temperature=5)
    assert info.value.param == "temperature" and info.value.code == "invalid_request"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="rag/ops", messages=[])
    assert info.value.param == "messages"
    for raw in (b"\xac\xff", b"{not json", b'{"model": "rag/ops", "messages": [{"role": "user", "content": "x \\ud800"}]}'):
        response = httpx.post(f"{backend}/v1/chat/completions", content=raw,
                              headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error", response.text
    # The rest of the API keeps its own error format.
    assert httpx.get(f"{backend}/search", params={"q": "x", "space_id": "ops"}).json()["error"]["type"] == "unauthorized"


def test_a_stream_failing_half_way_raises_in_the_sdk(backend, fake_llm):
    fake_llm.answer = "one two three four five six"
    fake_llm.fail_after_tokens, fake_llm.fail_with = 3, LLMBadResponse("engine crashed mid-answer")
    stream = sdk(backend).chat.completions.create(model="rag/ops", messages=[{"role": "user", "content": QUESTION}], stream=True)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "one two three"
    assert not isinstance(info.value, openai.APIStatusError)  # the status was 200: the error came in-band
    assert info.value.code == "llm_bad_response" and info.value.type == "server_error"
    assert info.value.body["message"] == "engine crashed mid-answer"
    # On the wire: an error data line, then [DONE].
    with httpx.stream("POST", f"{backend}/v1/chat/completions", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                      json={"model": "rag/ops", "messages": [{"role": "user", "content": QUESTION}], "stream": True}) as raw:
        lines = [line for line in raw.iter_lines() if line]
    assert lines[-2].startswith('data: {"error": ') and lines[-1] == "data: [DONE]"
    metrics = httpx.get(f"{backend}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).text
    assert 'rag_errors_total{type="llm_bad_response"} 2.0' in metrics


def test_the_engine_model_is_plain_chat_only_when_exposed(backend, fake_llm, services):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
    with pytest.raises(openai.NotFoundError):
        sdk(backend).chat.completions.create(model="fake-model", messages=chat)
    services.settings.openai_expose_engine_model = True
    fake_llm.answer = "Hello there."
    completion = sdk(backend).chat.completions.create(model="fake-model", messages=chat)
    assert completion.choices[0].message.content == "Hello there." and completion.sources == []
    assert fake_llm.calls[-1] == chat  # no retrieval, no instructions of ours
    streamed = sdk(backend).chat.completions.create(model="fake-model", messages=chat, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "Hello there."
    with pytest.raises(openai.NotFoundError):  # a key for some spaces only does not get the raw engine
        sdk(backend, OPS_KEY).chat.completions.create(model="fake-model", messages=chat)


def test_the_history_alternates_user_and_assistant_turns():
    from backend.api.openai.conversation import split_conversation
    from backend.api.openai.schemas import ChatMessage

    def conversation(*turns):
        return [ChatMessage(role=role, content=text) for role, text in turns]

    question, history = split_conversation(conversation(
        ("assistant", "Hi, ask me anything."), ("user", "First?"), ("assistant", ""), ("user", "Second?"),
        ("assistant", "Answer [2]."), ("user", "Unanswered?"), ("tool", "x"), ("user", "Last?"),
    ))
    assert question == "Last?"
    # The greeting goes (a conversation starts with the user), the empty answer's two questions merge, the
    # unanswered question before the last goes.
    assert history == [{"role": "user", "content": "First?\n\nSecond?"}, {"role": "assistant", "content": "Answer."}]
    long = conversation(*[("user", "q" * 1000), ("assistant", "a" * 1000)] * 5, ("user", "Now?"))
    assert len(split_conversation(long)[1]) == 6  # HISTORY_MAX_MESSAGES, newest kept
