"""Issue 22 on the /v1 API, through the official `openai` SDK against the real app over HTTP (real embedder and
store, the scriptable fake engine): tools accepted, a front end's housekeeping prompts answered without
retrieval, long messages, "Sources consulted", legacy completions, embeddings, unknown paths."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

from backend.settings import Settings
from tests.support.openai_api import ADMIN_KEY, HR_KEY, QUESTION, assert_openai_error, openai_settings, sdk, served_backend


@pytest.fixture
def settings(tmp_path, model_cache) -> Settings:
    return openai_settings(tmp_path, model_cache)


@pytest.fixture
def backend(settings, services, fake_llm):
    with served_backend(settings, services, fake_llm) as url:
        yield url


# Open WebUI 0.12.4's own title prompt (DEFAULT_TITLE_GENERATION_PROMPT_TEMPLATE) as it sends it, with an
# answer of normal length in the chat history: more than the retriever's 2,000-character query limit.
TITLE_PROMPT = """### Task:
Generate a concise title summarizing the chat history.
### Guidelines:
- The title should clearly represent the main theme or subject of the conversation.
- Keep it short: 2-4 words is best.
### Output:
JSON format: { "title": "your concise title here" }
### Chat History:
<chat_history>
USER: When do backups run?
ASSISTANT: """ + "Backups run nightly at 02:00 to the NAS in rack B [1]. " * 40 + """
</chat_history>"""
OPEN_WEBUI_TOOLS = [{"type": "function", "function": {"name": "search_web", "description": "Search the web",
                                                     "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]


def test_tools_are_accepted_and_never_called(backend, fake_llm):
    fake_llm.answer = "Backups run nightly at 02:00 [1]."
    for tool_choice in (None, "auto", "none"):
        extra = {"tool_choice": tool_choice} if tool_choice else {}
        completion = sdk(backend).chat.completions.create(
            model="rag/ops", messages=[{"role": "user", "content": QUESTION}], tools=OPEN_WEBUI_TOOLS, **extra)
        choice = completion.choices[0]
        assert choice.finish_reason == "stop" and choice.message.tool_calls is None
        assert choice.message.content.startswith("Backups run nightly at 02:00 [1].") and completion.sources
    stream = sdk(backend).chat.completions.create(model="rag/ops", messages=[{"role": "user", "content": QUESTION}],
                                                  tools=OPEN_WEBUI_TOOLS, stream=True)
    assert "Sources:" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_housekeeping_prompts_are_answered_by_the_engine_without_retrieval(backend, fake_llm):
    from backend.api.openai.tasks import TASK_MAX_TOKENS, client_task

    fake_llm.answer = '{ "title": "Backup Schedule" }'
    before = len(fake_llm.calls)
    completion = sdk(backend).chat.completions.create(model="rag/ops", max_tokens=1000,
                                                      messages=[{"role": "user", "content": TITLE_PROMPT}])
    assert completion.choices[0].message.content == '{ "title": "Backup Schedule" }'  # no footer, no citations
    assert completion.sources == [] and getattr(completion, "rag", None) is None
    assert len(fake_llm.calls) == before + 1
    assert fake_llm.calls[-1] == [{"role": "user", "content": TITLE_PROMPT}]  # the prompt as sent: no sources of ours
    assert fake_llm.kwargs[-1]["max_tokens"] == TASK_MAX_TOKENS
    # A short window: the oldest part of the chat history gives way, the instructions stay.
    fake_llm.context_length = TASK_MAX_TOKENS + 64 + 300
    sdk(backend).chat.completions.create(model="rag/ops", messages=[{"role": "user", "content": TITLE_PROMPT}])
    sent = fake_llm.calls[-1][0]["content"]
    assert len(sent.encode()) <= 300
    assert sent.startswith("### Task:\nGenerate a concise title") and sent.endswith("</chat_history>")
    # Every default task template of Open WebUI 0.12.4 is recognised; a question is not.
    from pathlib import Path
    owui = Path(".venv-openwebui/lib/python3.11/site-packages/open_webui/config.py")
    if owui.exists():
        import re
        templates = re.findall(r'DEFAULT_(\w+)_PROMPT_TEMPLATE = """(.*?)"""', owui.read_text(), re.S)
        names = {name: client_task(text) for name, text in templates if text.startswith("### Task:")}
        assert names == {"TITLE_GENERATION": "title", "TAGS_GENERATION": "tags", "IMAGE_PROMPT_GENERATION": "image_prompt",
                         "FOLLOW_UP_GENERATION": "follow_ups", "QUERY_GENERATION": "queries",
                         "AUTOCOMPLETE_GENERATION": "autocomplete"}
    assert client_task(QUESTION) is None and client_task("### Task list for the release?") is None


def test_a_long_message_never_trips_the_question_limit(backend, fake_llm):
    fake_llm.answer = "Every 90 days [1]."
    pasted = "Earlier notes that are not the question.\n" * 120 + "How often are API keys rotated?"
    assert len(pasted) > 2000
    fake_llm.context_length = 16384
    completion = sdk(backend).chat.completions.create(model="rag/ops", messages=[{"role": "user", "content": pasted}],
                                                      extra_body={"rag": {"top_k": 1}})
    assert completion.sources[0]["path"] == "keys.md"  # retrieval used the end of the message
    assert fake_llm.calls[-1][-1]["content"].endswith("Question: " + pasted)  # the model got all of it (it fits)
    # A short window: the message loses its start (it gets at most half the window), the question at its end stays.
    fake_llm.context_length = 64 + 50 + 400
    sdk(backend).chat.completions.create(model="rag/ops", max_tokens=50, messages=[{"role": "user", "content": pasted}],
                                         extra_body={"rag": {"top_k": 1}})
    assert fake_llm.calls[-1][-1]["content"].endswith("How often are API keys rotated?")


def test_sources_consulted_when_the_model_cites_nothing(backend, fake_llm):
    fake_llm.answer = "Backups run nightly at 02:00."
    completion = sdk(backend).chat.completions.create(model="rag/ops", messages=[{"role": "user", "content": QUESTION}],
                                                      extra_body={"rag": {"top_k": 2}})
    content = completion.choices[0].message.content
    assert content.startswith("Backups run nightly at 02:00.\n\nSources consulted:\n- [1] handbook.pdf, page 2")
    assert all(not s["cited"] for s in completion.sources) and len(completion.sources) >= 1
    # Sent back as history, the list is taken out again.
    from backend.api.openai.conversation import _strip_for_history
    assert _strip_for_history(content) == "Backups run nightly at 02:00."


def test_legacy_completions_answer_with_sources(backend, fake_llm):
    fake_llm.answer = "Backups run nightly at 02:00 [1]."
    completion = sdk(backend).completions.create(model="rag/ops", prompt=QUESTION)
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.choices[0].text.startswith("Backups run nightly at 02:00 [1].\n\nSources:\n- [1] handbook.pdf")
    assert completion.choices[0].finish_reason == "stop" and completion.sources[0]["path"] == "handbook.pdf"
    assert fake_llm.calls[-1][-1]["content"].endswith(f"Question: {QUESTION}")
    # A chat written out as one prompt (LlamaIndex's OpenAILike with is_chat_model=False): the last user turn.
    sdk(backend).completions.create(model="rag/ops", prompt=f"system: Be nice.\nuser: Hi\nassistant: Hello!\nuser: {QUESTION}\nassistant: ")
    assert fake_llm.calls[-1][-1]["content"].endswith(f"Question: {QUESTION}")
    assert fake_llm.calls[-1][1:3] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    chunks = list(sdk(backend).completions.create(model="rag/ops", prompt=QUESTION, stream=True,
                                                   stream_options={"include_usage": True}))
    assert all(c.object == "text_completion" for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text.startswith("Backups run nightly at 02:00 [1].\n\nSources:")
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][0]
    assert final.sources[0]["path"] == "handbook.pdf" and chunks[-1].usage.completion_tokens == 6
    with pytest.raises(openai.BadRequestError) as info:
        sdk(backend).completions.create(model="rag/ops", prompt=["one", "two"])
    assert_openai_error(info.value, 400, "unsupported_parameter", "invalid_request_error", "prompt")
    with pytest.raises(openai.NotFoundError) as info:
        sdk(backend).completions.create(model="rag/nope", prompt=QUESTION)
    assert_openai_error(info.value, 404, "model_not_found", "invalid_request_error", "model")
    with pytest.raises(openai.BadRequestError) as info:
        sdk(backend).completions.create(model="rag/ops", prompt=QUESTION, echo=True)
    assert info.value.param == "echo"


def test_embeddings_serve_the_appliance_embedder(backend, services):
    name = services.embedder.name
    client = sdk(backend)
    one = client.embeddings.create(model=name, input="When do backups run?")  # the SDK asks for base64
    assert one.object == "list" and one.model == name and len(one.data) == 1
    vector = np.array(one.data[0].embedding, dtype=np.float32)
    assert vector.shape == (services.embedder.dim,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-3
    assert np.allclose(vector, services.embedder.embed_query("When do backups run?"), atol=1e-5)
    assert one.usage.prompt_tokens == one.usage.total_tokens > 0
    many = client.embeddings.create(model="rag/ops", input=["a", "b", "c"], encoding_format="float")
    assert [d.index for d in many.data] == [0, 1, 2]
    raw = httpx.post(f"{backend}/v1/embeddings", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                     json={"model": name, "input": "x", "encoding_format": "base64", "input_type": "document"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, services.embedder.embed_documents(["x"])[0], atol=1e-5)
    for kwargs, param in [({"input": "x " * 5000}, "input"), ({"input": ["x"] * 257}, "input"), ({"input": [""]}, "input"),
                          ({"input": [[1, 2, 3]]}, "input.0"), ({"input": "x", "dimensions": 7}, "dimensions")]:
        with pytest.raises(openai.BadRequestError) as info:
            client.embeddings.create(model=name, **kwargs)
        assert info.value.param == param and info.value.status_code == 400, kwargs
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.PermissionDeniedError):
        sdk(backend, HR_KEY).embeddings.create(model="rag/ops", input="x")


@pytest.mark.parametrize("method,path", [("GET", "/v1/nope"), ("POST", "/v1/responses"), ("DELETE", "/v1/models/rag/ops"),
                                         ("GET", "/v1/chat/completions"), ("PUT", "/v1/embeddings")])
def test_unknown_paths_and_methods_answer_in_openai_shape(backend, method, path):
    response = httpx.request(method, f"{backend}{path}", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code in (404, 405), response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
