"""cli.ask against the backend served over real HTTP (uvicorn in a thread; the LLM is the scriptable fake)."""

from __future__ import annotations

import io
import threading
import time

import pytest
import uvicorn

from backend.errors import EXIT_LLM, EXIT_UNREACHABLE, LLMBadResponse, LLMUnavailable
from cli import ask as ask_cli
from cli.local_backend import free_port


@pytest.fixture
def served(settings, services, fake_llm):
    from backend.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, services, llm=fake_llm), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    import httpx

    httpx.post(f"{url}/documents", data={"space_id": "kb"}, files={"file": ("keys.md", b"# Keys\n\nAPI keys rotate every 90 days.")})
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def test_cli_ask_streams_the_answer_then_sources(served, fake_llm):
    fake_llm.answer = "Keys rotate every 90 days [1]."
    out = io.StringIO()
    assert ask_cli.ask(served, "How often do keys rotate?", "kb", top_k=3, max_tokens=None, out=out) == 0
    text = out.getvalue()
    assert text.startswith("Keys rotate every 90 days [1].\n")
    assert "*[1] keys.md § Keys" in text and "fake / fake-model" in text


def test_cli_ask_exit_codes(served, fake_llm, capsys):
    fake_llm.fail_before = LLMUnavailable("engine down")
    assert ask_cli.ask(served, "How often do API keys rotate?", "kb", 3, None, out=io.StringIO()) == EXIT_LLM
    assert "503 llm_unavailable" in capsys.readouterr().err
    fake_llm.fail_before = None
    fake_llm.fail_after_tokens, fake_llm.fail_with = 2, LLMBadResponse("crashed")
    assert ask_cli.ask(served, "How often do API keys rotate?", "kb", 3, None, out=io.StringIO()) == EXIT_LLM
    assert "broke off: llm_bad_response" in capsys.readouterr().err
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert ask_cli.ask(dead, "q?", "kb", 3, None, out=io.StringIO()) == EXIT_UNREACHABLE
