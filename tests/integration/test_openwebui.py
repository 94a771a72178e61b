"""Open WebUI (the real one, 0.12.4 from PyPI, in its own venv: `make openwebui`) against the appliance's /v1, end to
end in Debian's chromium with Playwright, with Open WebUI's defaults: its built-in tools offered with every
request, its background tasks (title, tags, follow-ups) sent to the chat's own model.

A real backend process (`python -m backend`: the default embedder, the embedded store, API keys on) answers with
`LLM_BACKEND=vllm`, its real VllmClient pointed at the streaming stand-in of vLLM's API
(tests/support/openai_server.py), which answers a question with a sentence citing [1] and Open WebUI's title
prompt with the JSON title it asks for. Open WebUI runs offline (`OFFLINE_MODE`, `HF_HUB_OFFLINE`, no Ollama, no
login); its document embeddings point at the appliance's /v1/embeddings, so it loads no model of its own.
`OPENWEBUI_TEST=skip` skips this module; without .venv-openwebui it fails and says how to install it. The
screenshot goes to docs/img/openwebui-answer.png (the one docs/openai.md shows) and test-artifacts/openwebui/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from cli.local_backend import free_port, start_backend, stop_backend
from tests.support.openai_server import FakeChatModel, FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
OPENWEBUI = ROOT / ".venv-openwebui" / "bin" / "open-webui"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "openwebui"
SCREENSHOT = ROOT / "docs" / "img" / "openwebui-answer.png"
MODEL = "fake-vllm"
SPACE = "handbook"
KEY = "openwebui-key-0123456789abcdef"
ANSWER = "Backups run nightly at 02:00 to the NAS in rack B [1]. They are kept for thirty days."
TITLE = "Backup Schedule"
START_TIMEOUT_S = 300
EXPECT_TIMEOUT_MS = 60_000

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed() -> Path:
    if os.environ.get("OPENWEBUI_TEST") == "skip":
        pytest.skip("OPENWEBUI_TEST=skip: the Open WebUI test was skipped on request")
    missing = [str(p) for p in (OPENWEBUI, Path(CHROMIUM)) if not p.exists()]
    if missing:
        pytest.fail(f"the Open WebUI test needs {missing}: run `make openwebui browser` (or set OPENWEBUI_TEST=skip)",
                    pytrace=False)
    return OPENWEBUI


@pytest.fixture(scope="module")
def engine():
    answers = {"### Task:\nGenerate a concise title": '{ "title": "%s" }' % TITLE,
               "### Task:\nGenerate 1-3 broad tags": '{ "tags": ["Operations"] }',
               "### Task:\nPredict 3-5 useful messages": '{ "follow_ups": ["Where are the backups kept?"] }'}
    with FakeOpenAI({MODEL: FakeChatModel(answer=ANSWER, token_delay_s=0.15, answers=answers)}) as fake:
        yield fake


@pytest.fixture(scope="module")
def backend(installed, engine, tmp_path_factory, model_cache):
    env = {
        "DATA_DIR": str(tmp_path_factory.mktemp("openwebui-backend")), "MODEL_CACHE_DIR": str(model_cache),
        "QDRANT_URL": "", "LLM_BACKEND": "vllm", "VLLM_BASE_URL": f"{engine.url}/v1", "VLLM_MODEL": MODEL,
        "ASK_MIN_SCORE": "-1", "LOG_LEVEL": "warning", "API_KEYS": f"{KEY}=*",
    }
    proc, url = start_backend(env)
    try:
        response = httpx.post(f"{url}/documents", data={"space_id": SPACE}, headers={"Authorization": f"Bearer {KEY}"},
                              files={"file": ("backups.md", b"# Backups\n\nBackups run nightly at 02:00 to the NAS in rack B.")},
                              timeout=120)
        assert response.status_code == 201, response.text
        yield url
    finally:
        stop_backend(proc)


def openwebui_env(backend: str, data_dir: str) -> dict[str, str]:
    """Open WebUI's settings for the appliance, offline: what docs/openai.md tells users, plus the test's own."""
    return {
        **os.environ,
        "OPENAI_API_BASE_URL": f"{backend}/v1", "OPENAI_API_KEY": KEY,
        "ENABLE_OLLAMA_API": "false", "WEBUI_AUTH": "false", "DATA_DIR": data_dir,
        # Nothing downloaded at start: no model updates, Hugging Face offline, document embeddings from the
        # appliance (so Open WebUI's default sentence-transformers model is never loaded).
        "OFFLINE_MODE": "true", "HF_HUB_OFFLINE": "1", "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "false",
        "RAG_RERANKING_MODEL_AUTO_UPDATE": "false", "WHISPER_MODEL_AUTO_UPDATE": "false",
        "RAG_EMBEDDING_ENGINE": "openai", "RAG_OPENAI_API_BASE_URL": f"{backend}/v1", "RAG_OPENAI_API_KEY": KEY,
        "ANONYMIZED_TELEMETRY": "false", "DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true",
    }


@pytest.fixture(scope="module")
def openwebui(installed, backend):
    """Open WebUI's base URL; the server (its own process group) is stopped at the end."""
    data_dir = tempfile.mkdtemp(prefix="openwebui-")
    port = free_port()
    log_path = Path(data_dir) / "open-webui.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(installed), "serve", "--host", "127.0.0.1", "--port", str(port)],
                                env=openwebui_env(backend, data_dir), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=data_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Open WebUI exited ({proc.returncode}): {log_path.read_text()[-3000:]}", pytrace=False)
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Open WebUI did not start in {START_TIMEOUT_S} s: {log_path.read_text()[-3000:]}", pytrace=False)
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_open_webui_with_its_defaults_answers_with_sources_and_a_title(openwebui, engine):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{openwebui}/")
            page.get_by_role("button", name="Okay, Let's Go!").click()  # the release notes, shown once
            # Pick the space's model in the model picker.
            page.locator("#model-selector-model-button").click()
            page.get_by_role("button", name=f"rag/{SPACE}").or_(page.get_by_text(f"rag/{SPACE}", exact=True)).last.click()
            expect(page.locator("#model-selector-model-button")).to_have_attribute(
                "aria-label", f"Selected model: rag/{SPACE}")
            page.locator("#chat-input").click()
            page.keyboard.type("When do backups run?")
            page.keyboard.press("Enter")

            # The answer streams in: part of it shows before the end (the sources footer comes last).
            message = page.locator("#messages-container")
            page.wait_for_function(
                """() => { const m = document.querySelector('#messages-container');
                           return m && m.innerText.includes('Backups run nightly') && !m.innerText.includes('Sources:'); }""",
                timeout=EXPECT_TIMEOUT_MS)
            expect(message).to_contain_text(ANSWER.split(" [1]")[0])
            expect(message).to_contain_text("They are kept for thirty days.")
            expect(message).to_contain_text("Sources:")
            expect(message).to_contain_text("[1] backups.md § Backups")
            # The title, from Open WebUI's own title prompt answered by the engine without retrieval.
            expect(page.get_by_text(TITLE).first).to_be_visible()
            page.wait_for_timeout(500)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "openwebui-answer.png"))
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            assert "Tool and function calling is not supported" not in page.locator("body").inner_text()
        finally:
            browser.close()

    # What reached the engine: the question with the appliance's sources, and the title prompt as Open WebUI
    # wrote it (no sources, no retrieval); every task prompt recognised, none answered as a question.
    prompts = [r["messages"][-1]["content"] for r in engine.chat_requests]
    questions = [p for p in prompts if p.startswith("Sources:")]
    tasks = [p for p in prompts if p.startswith("### Task:")]
    assert len(questions) == 1 and questions[0].endswith("Question: When do backups run?")
    assert any(p.startswith("### Task:\nGenerate a concise title") for p in tasks), prompts
    assert len(questions) + len(tasks) == len(prompts)
