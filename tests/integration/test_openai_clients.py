"""The client matrix of docs/openai.md: the real clients, installed from PyPI, ask the real app (served over HTTP,
the real embedder and store, the scriptable fake engine) a question; each must get the answer and its sources.

- the `openai` SDK (chat, streamed chat, legacy completions): the text with its "Sources:" footer, and `sources`;
- LangChain (`langchain-openai`'s ChatOpenAI, invoke and stream): the text with its footer;
- LiteLLM's SDK (`openai/` provider, plain and streamed): the text with its footer, and `sources`;
- LlamaIndex's `OpenAILike`, default `is_chat_model=False` (/v1/completions) and chat: the text with its footer.
  LlamaIndex pins openai<3 while the appliance uses openai 3, so it runs in .venv-llamaindex (`make test`
  builds it), from a small script in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from backend.settings import Settings
from tests.support.openai_api import ADMIN_KEY, QUESTION, openai_settings, sdk, served_backend

ROOT = Path(__file__).resolve().parents[2]
LLAMAINDEX_PYTHON = ROOT / ".venv-llamaindex" / "bin" / "python"
ANSWER = "Backups run nightly at 02:00 [1]."
FOOTER = "\n\nSources:\n- [1] handbook.pdf, page 2"

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path, model_cache) -> Settings:
    return openai_settings(tmp_path, model_cache)


@pytest.fixture
def backend(settings, services, fake_llm):
    fake_llm.answer = ANSWER
    with served_backend(settings, services, fake_llm) as url:
        yield url


def test_openai_sdk(backend):
    client = sdk(backend)
    completion = client.chat.completions.create(model="rag/ops", messages=[{"role": "user", "content": QUESTION}])
    assert completion.choices[0].message.content == ANSWER + FOOTER and completion.sources[0]["path"] == "handbook.pdf"
    chunks = list(client.chat.completions.create(model="rag/ops", messages=[{"role": "user", "content": QUESTION}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER + FOOTER
    assert [c.sources[0]["path"] for c in chunks if getattr(c, "sources", None)] == ["handbook.pdf"]
    legacy = client.completions.create(model="rag/ops", prompt=QUESTION)
    assert legacy.choices[0].text == ANSWER + FOOTER and legacy.sources[0]["path"] == "handbook.pdf"


def test_langchain_chat_openai(backend):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model="rag/ops", base_url=f"{backend}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=30)
    message = chat.invoke(QUESTION)
    assert message.content == ANSWER + FOOTER
    streamed = "".join(str(chunk.content) for chunk in chat.stream(QUESTION))
    assert streamed == ANSWER + FOOTER


def test_litellm_sdk(backend, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of its price list
    import litellm

    kwargs = {"model": "openai/rag/ops", "api_base": f"{backend}/v1", "api_key": ADMIN_KEY, "max_retries": 0,
              "messages": [{"role": "user", "content": QUESTION}]}
    response = litellm.completion(**kwargs)
    assert response.choices[0].message.content == ANSWER + FOOTER
    assert response.sources[0]["path"] == "handbook.pdf"  # extra fields of the response are kept
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in litellm.completion(**kwargs, stream=True)
                       if chunk.choices)
    assert streamed == ANSWER + FOOTER  # chunks are rebuilt: `sources` is not kept, the footer is


LLAMAINDEX_SCRIPT = """
import json, sys
from llama_index.llms.openai_like import OpenAILike
from llama_index.core.llms import ChatMessage
url, key, question = sys.argv[1:4]
default = OpenAILike(model="rag/ops", api_base=url, api_key=key, max_retries=0, timeout=30)
chat = OpenAILike(model="rag/ops", api_base=url, api_key=key, max_retries=0, timeout=30, is_chat_model=True)
out = {
    "is_chat_model": default.metadata.is_chat_model,
    "complete": default.complete(question).text,
    "default_chat": default.chat([ChatMessage(role="user", content=question)]).message.content,
    "chat": chat.chat([ChatMessage(role="user", content=question)]).message.content,
    "stream_complete": "".join(r.delta or "" for r in default.stream_complete(question)),
    "chat_sources": getattr(chat.chat([ChatMessage(role="user", content=question)]).raw, "sources", None),
}
print(json.dumps(out))
"""


def test_llamaindex_openai_like(backend):
    if not LLAMAINDEX_PYTHON.exists():
        pytest.fail("LlamaIndex's venv is missing: run `make .venv-llamaindex/.installed-0.8.1` (make test builds it)",
                    pytrace=False)
    result = subprocess.run([str(LLAMAINDEX_PYTHON), "-c", LLAMAINDEX_SCRIPT, f"{backend}/v1", ADMIN_KEY, QUESTION],
                            capture_output=True, text=True, timeout=300, cwd="/", env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["is_chat_model"] is False  # the default: /v1/completions
    for key in ("complete", "default_chat", "chat", "stream_complete"):
        assert out[key].strip() == ANSWER + FOOTER, (key, out[key])
    assert out["chat_sources"][0]["path"] == "handbook.pdf"
