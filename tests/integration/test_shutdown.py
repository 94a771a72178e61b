"""Graceful shutdown of a real backend process (`python -m backend`) on SIGTERM, while an answer streams.

The engine is the fixed-latency stand-in of vLLM's OpenAI API (tests/support/openai_server.py), slow on
purpose: 40 tokens at 50 ms (a 2 s answer) for the stream that must finish, 200 tokens at 50 ms (10 s) for
the one that SHUTDOWN_TIMEOUT_S=1 must cut. The store is the embedded Qdrant Edge, on disk under DATA_DIR.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from cli.client import iter_sse
from cli.local_backend import start_backend, stop_backend
from tests.support.openai_server import FakeChatModel, FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
SPACE = "docs"
DOC = "getting-started.md"
ANSWER = "The backend listens on port 8000 by default [1]. " + " ".join(f"word{i}" for i in range(30)) + " end."  # 40 tokens
LONG_ANSWER = " ".join(f"word{i}" for i in range(200))
# After SIGTERM, uvicorn lets the in-flight requests finish, runs the lifespan's shutdown (the store is flushed
# and closed), then re-raises the signal with its default action (uvicorn >= 0.29, so that a supervisor sees
# "terminated by SIGTERM"): the process ends with -SIGTERM (shell/Docker: 143), not 1 or a SIGKILL.
CLEAN_EXIT = (0, -signal.SIGTERM)


@pytest.fixture(scope="module")
def engine():
    models = {
        "two-seconds": FakeChatModel(answer=ANSWER, first_token_delay_s=0.05, token_delay_s=0.05),
        "ten-seconds": FakeChatModel(answer=LONG_ANSWER, first_token_delay_s=0.05, token_delay_s=0.05),
    }
    with FakeOpenAI(models) as fake:
        yield fake


def backend_env(engine, data_dir: Path, model_cache: Path, model: str, **extra: str) -> dict[str, str]:
    return {
        "DATA_DIR": str(data_dir), "MODEL_CACHE_DIR": str(model_cache), "QDRANT_URL": "", "LOG_LEVEL": "warning",
        "LLM_BACKEND": "vllm", "VLLM_BASE_URL": f"{engine.url}/v1", "VLLM_MODEL": model,
        "ASK_MIN_SCORE": "-1", "API_KEYS": "", **extra,
    }


def index(url: str) -> int:
    response = httpx.post(f"{url}/documents", data={"space_id": SPACE}, files={"file": (DOC, (ROOT / "docs" / DOC).read_bytes())}, timeout=300)
    assert response.status_code == 201, response.text
    return response.json()["chunks"]


class AnswerStream(threading.Thread):
    """One streaming POST /ask in a thread: its events, whether it ended with `done`, and when it ended."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.events: list[tuple[str, dict]] = []
        self.first_token = threading.Event()
        self.status: int | None = None
        self.error: Exception | None = None
        self.ended_at: float | None = None

    def run(self) -> None:
        body = {"q": "Which port does the backend listen on?", "space_id": SPACE, "stream": True, "max_tokens": 512}
        try:
            with httpx.stream("POST", f"{self.url}/ask", json=body, timeout=httpx.Timeout(60, connect=5)) as response:
                self.status = response.status_code
                for event, data in iter_sse(response):
                    self.events.append((event, data))
                    if event == "token":
                        self.first_token.set()
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.first_token.set()

    @property
    def done(self) -> dict | None:
        return next((data for event, data in self.events if event == "done"), None)

    @property
    def text(self) -> str:
        return "".join(data["text"] for event, data in self.events if event == "token")


def wait_until_refused(url: str, stream: AnswerStream, within_s: float = 3.0) -> str:
    """Open new connections until one is refused; returns how the last attempt ended. A 200 is allowed only in
    the moment between SIGTERM and the event loop handling it; the refusal must come while the answer streams."""
    deadline = time.monotonic() + within_s
    outcome = "never tried"
    while time.monotonic() < deadline:
        try:
            outcome = f"HTTP {httpx.get(f'{url}/health', timeout=2).status_code}"
        except httpx.ConnectError:
            return "refused"
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
            if not isinstance(exc, httpx.TimeoutException):
                return outcome  # accepted, then dropped without an answer: no 200 either
        assert stream.is_alive(), f"the stream ended before new connections were refused (last: {outcome})"
        time.sleep(0.05)
    return outcome


def test_sigterm_lets_the_running_answer_finish_then_exits(engine, tmp_path, model_cache):
    proc, url = start_backend(backend_env(engine, tmp_path / "data", model_cache, "two-seconds"))
    try:
        index(url)
        stream = AnswerStream(url)
        stream.start()
        assert stream.first_token.wait(60) and stream.error is None, stream.error
        proc.send_signal(signal.SIGTERM)
        sigterm_at = time.monotonic()

        assert wait_until_refused(url, stream) in ("refused", "RemoteProtocolError", "ReadError")
        stream.join(30)
        assert not stream.is_alive()
        assert stream.status == 200 and stream.error is None, stream.error
        done = stream.done
        assert done is not None, stream.events[-3:]  # the stream ended with its `done` event ...
        assert done["answer"] == ANSWER and stream.text == ANSWER  # ... and the whole answer
        assert done["usage"]["completion_tokens"] == 40
        assert stream.ended_at - sigterm_at > 1.0  # it really streamed on after SIGTERM (2 s answer)

        proc.wait(timeout=10)
        exited_after_s = time.monotonic() - stream.ended_at
        assert proc.returncode in CLEAN_EXIT, (proc.returncode, Path(proc.log_path).read_text()[-2000:])
        assert exited_after_s < 5, exited_after_s  # the lifespan's shutdown (store closed) is quick
        print(f"\nstreamed {stream.ended_at - sigterm_at:.2f} s after SIGTERM; exited {exited_after_s:.2f} s later, code {proc.returncode}")
    finally:
        stop_backend(proc)


def test_sigterm_cuts_a_long_answer_after_the_timeout_and_leaves_the_store_consistent(engine, tmp_path, model_cache):
    data_dir = tmp_path / "data"
    proc, url = start_backend(backend_env(engine, data_dir, model_cache, "ten-seconds", SHUTDOWN_TIMEOUT_S="1"))
    try:
        chunks = index(url)
        stream = AnswerStream(url)
        stream.start()
        assert stream.first_token.wait(60) and stream.error is None, stream.error
        proc.send_signal(signal.SIGTERM)
        sigterm_at = time.monotonic()
        proc.wait(timeout=15)
        exited_after_s = time.monotonic() - sigterm_at
        log = Path(proc.log_path).read_text()
        assert proc.returncode in CLEAN_EXIT, (proc.returncode, log[-2000:])
        assert 0.8 < exited_after_s < 3.5, (exited_after_s, log[-2000:])  # SHUTDOWN_TIMEOUT_S=1, then the lifespan
        stream.join(10)
        assert stream.done is None  # the 10 s answer was cut ...
        assert 0 < len(stream.text.split()) < 200  # ... after some of it had streamed
        print(f"\nexited {exited_after_s:.2f} s after SIGTERM, code {proc.returncode}; {len(stream.text.split())} of 200 tokens, then {stream.error!r}")
    finally:
        stop_backend(proc)

    # The embedded store was closed cleanly: a new backend on the same DATA_DIR opens it and serves its documents.
    proc, url = start_backend(backend_env(engine, data_dir, model_cache, "two-seconds"))
    try:
        (doc,) = httpx.get(f"{url}/documents", params={"space_id": SPACE}, timeout=30).json()["documents"]
        assert (doc["path"], doc["chunks"]) == (DOC, chunks)
        hits = httpx.get(f"{url}/search", params={"q": "which port does the backend listen on", "space_id": SPACE}, timeout=30).json()["results"]
        assert hits and {h["path"] for h in hits} == {DOC}
        store = httpx.get(f"{url}/health", timeout=30).json()["components"]["store"]
        assert store["status"] == "ok" and store["points"] == chunks
    finally:
        stop_backend(proc)
