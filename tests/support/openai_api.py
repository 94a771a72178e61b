"""The /v1 tests' backend: the real app served over HTTP (uvicorn in a thread) with the real embedder and store,
three documents in two spaces and three API keys; the official `openai` SDK pointed at it; OpenAI's error shape
checked. Used by tests/integration/test_openai_compat.py, test_openai_paths.py and test_openai_clients.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import openai
from fastapi.testclient import TestClient

from backend.settings import Settings
from tests.support.docs_factory import make_pdf
from tests.support.threaded_server import AppServer

ADMIN_KEY = "admin-key-0123456789abcdef"
OPS_KEY = "ops-key-0123456789abcdef"
HR_KEY = "hr-key-0123456789abcdef"
QUESTION = "When do backups run?"


def openai_settings(tmp_path, model_cache) -> Settings:
    return Settings(
        _env_file=None, data_dir=tmp_path / "data", MODEL_CACHE_DIR=model_cache, chunk_tokens=128, chunk_overlap=24,
        api_keys=f"{ADMIN_KEY}=*, {OPS_KEY}=ops, {HR_KEY}=hr",
    )


@contextmanager
def served_backend(settings: Settings, services, llm) -> Iterator[str]:
    """The app over `services` and `llm`, with spaces `ops` (a PDF handbook, a keys note) and `hr`; yields its URL."""
    from backend.app import create_app

    app = create_app(settings, services, llm=llm)
    with TestClient(app) as client:  # runs the lifespan (state.rag, ...) for the server below as well
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        pdf = make_pdf(["Welcome to the operations handbook.", "Backups run nightly at 02:00 to the NAS in rack B."])
        for space, name, body in [
            ("ops", "handbook.pdf", pdf),
            ("ops", "keys.md", b"# Keys\n\nAPI keys are rotated every 90 days by the security team."),
            ("hr", "leave.md", b"# Leave\n\nEvery employee has 26 days of paid leave a year."),
        ]:
            response = client.post("/documents", data={"space_id": space}, files={"file": (name, body)}, headers=admin)
            assert response.status_code == 201, response.text
        with AppServer(app) as server:
            yield server.url


def sdk(url: str, key: str = ADMIN_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def assert_openai_error(exc: openai.APIStatusError, status: int, code: str, kind: str, param: str | None = None):
    assert exc.status_code == status
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"]
    assert (body["error"]["code"], body["error"]["type"], body["error"]["param"]) == (code, kind, param)
    assert exc.code == code and exc.type == kind
