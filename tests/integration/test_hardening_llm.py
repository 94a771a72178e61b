"""Issue 24, findings 6, 7, 8 and 10: an LLM engine that misbehaves must not hold an answer, the event loop or
the backend's liveness, and its URL must stay out of what tenants see.

The real app over real HTTP (uvicorn in a thread: disconnects are a matter of the wire), the real store and
embedder, the real engine clients; the engines are the stand-ins of tests/support switched into each
misbehaviour, and they record what became of every stream (bytes sent, when it was closed).

- 6: a stream that never ends and a first token that never comes are cut at ANSWER_TIMEOUT_S (504
  answer_timeout as JSON, an SSE `error` event once tokens went out, OpenAI's error shape under /v1), and a
  client that leaves (JSON or SSE, /ask or /v1/chat/completions) gets the engine's request closed.
- 7: a model list (vLLM /v1/models) or model description (Ollama /api/show) that is not JSON or not shaped
  like one: /health 200 with the engine's status `error`, /ask 502 llm_bad_response.
- 8: one event (vLLM SSE) or line (Ollama NDJSON) of 100 MB that never ends: refused once it passes the cap
  (the engine sent a few MB at most, then saw its request closed), with /health answering meanwhile.
- 10: an engine URL with credentials appears in no error body, and only redacted in the log.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from tests.support.misbehaviour import wait_closed
from tests.support.ollama_server import FakeModel, FakeOllama
from tests.support.openai_server import FakeChatModel, FakeOpenAI
from tests.support.ports import closed_port
from tests.support.threaded_server import AppServer

SPACE = "ops"
ASK = {"q": "When do backups run?", "space_id": SPACE}
NOTES = b"# Backups\n\nBackups run nightly at 02:00 to the NAS in rack B.\n\n# Keys\n\nAPI keys rotate every 90 days."
ANSWER = "Backups run nightly at 02:00 in rack B [1]."
MODELS = {"vllm": "fake-vllm", "ollama": "llama3.1:8b"}
DEADLINE_S = 1.0  # ANSWER_TIMEOUT_S where the deadline is under test
NO_DEADLINE_S = 120.0  # elsewhere: far beyond anything a test waits for
CLOSE_WAIT_S = 5.0  # how long the engine may take to see its request closed
HUGE = 100 * 1024 * 1024  # the unterminated event of the attack
SECRET = "s3cr3t-token-0123"


@pytest.fixture(scope="module")
def fakes():
    with FakeOpenAI({MODELS["vllm"]: FakeChatModel(answer=ANSWER)}) as vllm, \
            FakeOllama({MODELS["ollama"]: FakeModel(answer=ANSWER)}) as ollama:
        yield {"vllm": vllm, "ollama": ollama}


@pytest.fixture(params=["vllm", "ollama"])
def engine(request, fakes):
    """(name, fake server, its model's switches); every switch is put back after the test."""
    name = request.param
    fake = fakes[name]
    model = fake.models[next(iter(fake.models))]
    saved = dict(vars(model))
    yield name, fake, model
    vars(model).update(saved)
    if name == "vllm":
        fake.models_body = None
    else:
        fake.show_body = None


def engine_url(name: str, fake_url: str) -> str:
    return f"{fake_url}/v1" if name == "vllm" else fake_url


@contextmanager
def backend(settings, services, name: str, url: str, answer_timeout_s: float = NO_DEADLINE_S):
    """The app for engine `name` at `url`, with the notes indexed, served on a free port; yields its URL."""
    update = {"llm_backend": name, "llm_timeout_s": 30.0, "answer_timeout_s": answer_timeout_s, "ask_min_score": -1.0}
    update.update({"vllm_base_url": url, "vllm_model": MODELS[name]} if name == "vllm" else
                  {"ollama_base_url": url, "ollama_model": MODELS[name]})
    app = create_app(settings.model_copy(update=update), services)
    with TestClient(app) as client:
        indexed = client.post("/documents", data={"space_id": SPACE}, files={"file": ("notes.md", NOTES)})
        assert indexed.status_code in (200, 201), indexed.text  # 200: already indexed by an earlier app
        with AppServer(app) as server:
            yield server.url


def chat_body(stream: bool) -> dict:
    return {"model": f"rag/{SPACE}", "messages": [{"role": "user", "content": ASK["q"]}], "stream": stream}


def sse(text: str) -> list[tuple[str, dict]]:
    """(event, data) of /ask's SSE body."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


# -- 6: the answer's deadline ---------------------------------------------------------------------------------
def test_the_deadline_cuts_an_endless_answer_and_a_first_token_that_never_comes(settings, services, engine):
    name, fake, model = engine
    model.endless = True
    with backend(settings, services, name, engine_url(name, fake.url), answer_timeout_s=DEADLINE_S) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        # JSON: tokens keep coming (so no read timeout ever fires), the answer never ends.
        opened = len(fake.streams)
        response = http.post("/ask", json=ASK)
        assert response.status_code == 504, response.text
        assert response.json()["error"]["type"] == "answer_timeout"
        assert wait_closed(fake.streams[opened], CLOSE_WAIT_S) and not fake.streams[opened].finished

        # SSE: the tokens already sent, then an error event; never a final answer.
        opened = len(fake.streams)
        response = http.post("/ask", json={**ASK, "stream": True})
        assert response.status_code == 200
        events = sse(response.text)
        assert events[0][0] == "token" and events[-1][0] == "error" and "done" not in [e for e, _ in events]
        assert events[-1][1]["error"]["type"] == "answer_timeout"
        assert wait_closed(fake.streams[opened], CLOSE_WAIT_S)

        # The OpenAI-compatible route: OpenAI's error shape, in JSON and in the stream.
        response = http.post("/v1/chat/completions", json=chat_body(False))
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "answer_timeout" and response.json()["error"]["type"] == "server_error"
        lines = [line for line in http.post("/v1/chat/completions", json=chat_body(True)).text.splitlines() if line]
        assert lines[-1] == "data: [DONE]" and json.loads(lines[-2][6:])["error"]["code"] == "answer_timeout"

        # Nothing ever streamed: the deadline is a 504 before the first token, in a stream as well.
        model.endless = False
        setattr(model, "first_token_delay_s" if name == "vllm" else "first_chunk_delay_s", 30.0)
        response = http.post("/ask", json={**ASK, "stream": True})
        assert response.status_code == 504 and response.json()["error"]["type"] == "answer_timeout"


# -- 6: the client leaves ---------------------------------------------------------------------------------------
def leave_after_engine_started(url: str, path: str, body: dict, fake, stream: bool) -> float:
    """Send the request on a raw socket, wait until the engine's stream is open (and, streaming, until the
    first bytes of the answer came back), then close the socket. Returns when the client left."""
    opened = len(fake.streams)
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    deadline = time.monotonic() + 10
    while len(fake.streams) <= opened:
        assert time.monotonic() < deadline, "the engine never got the request"
        time.sleep(0.01)
    if stream:
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    sock.close()
    return time.monotonic()


@pytest.mark.parametrize("route", ["ask", "chat"])
def test_a_client_that_leaves_gets_the_engine_request_closed(settings, services, engine, route):
    name, fake, model = engine
    model.endless = True  # only the client leaving can end it (the deadline is minutes away)
    path = "/ask" if route == "ask" else "/v1/chat/completions"
    with backend(settings, services, name, engine_url(name, fake.url)) as url:
        for stream in (False, True):
            body = {**ASK, "stream": stream} if route == "ask" else chat_body(stream)
            opened = len(fake.streams)
            leave_after_engine_started(url, path, body, fake, stream)
            record = fake.streams[opened]
            assert wait_closed(record, CLOSE_WAIT_S), f"{route} stream={stream}: the engine request stayed open"
            assert not record.finished
        # The backend serves on.
        model.endless = False
        assert httpx.post(f"{url}/ask", json=ASK, timeout=30).json()["answer"] == ANSWER


# -- 8: one event that never ends -------------------------------------------------------------------------------
def test_an_event_of_100_mb_without_its_end_is_refused_at_the_cap_while_health_answers(settings, services, engine):
    name, fake, model = engine
    setattr(model, "unterminated_event_bytes" if name == "vllm" else "unterminated_line_bytes", HUGE)
    with backend(settings, services, name, engine_url(name, fake.url)) as url:
        probes: list[int] = []
        stop = threading.Event()

        def probe() -> None:
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    probes.append(http.get(f"{url}/health").status_code)

        prober = threading.Thread(target=probe)
        opened = len(fake.streams)
        prober.start()
        try:
            response = httpx.post(f"{url}/ask", json=ASK, timeout=120)
        finally:
            stop.set()
            prober.join()
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["type"] == "llm_bad_response" and "longer than" in error["message"]
        record = fake.streams[opened]
        assert wait_closed(record, CLOSE_WAIT_S) and not record.finished
        # Refused at the cap: the engine got to send a few MB (the cap plus socket buffers: 8 MB seen), not 100.
        assert record.sent_bytes < 32 * 1024 * 1024, record.sent_bytes
        assert probes and set(probes) == {200}


# -- 7: a model list that is not one ---------------------------------------------------------------------------
NONSENSE = {
    "vllm": [b"{not json", b'{"object": "list", "data": null}', b"[1, 2]", b"null", b'{"data": [{"id": 5}, "x"]}',
             b'{"data": [{"id": "fake-vllm", "max_model_len": "4096"}]}', b"\xff\xfe"],
    "ollama": [b"{not json", b"null", b"[]", b'{"capabilities": 5}', b'"text"', b"\xff\xfe"],
}


def test_a_nonsense_model_list_keeps_health_up_and_ask_gets_502(settings, services, engine):
    name, fake, _ = engine
    with backend(settings, services, name, engine_url(name, fake.url)) as url, httpx.Client(base_url=url, timeout=30) as http:
        for body in NONSENSE[name]:
            setattr(fake, "models_body" if name == "vllm" else "show_body", body)
            health = http.get("/health")
            assert health.status_code == 200, (body, health.text)
            llm = health.json()["components"]["llm"]
            assert llm["status"] == "error" and llm["error_type"] == "llm_bad_response", (body, llm)
            response = http.post("/ask", json=ASK)
            assert response.status_code == 502, (body, response.text)
            assert response.json()["error"]["type"] == "llm_bad_response"
            response = http.post("/v1/chat/completions", json=chat_body(False))
            assert response.status_code == 502 and response.json()["error"]["code"] == "llm_bad_response"


# -- 10: the engine's URL stays out of error bodies ----------------------------------------------------------------
def test_an_engine_url_with_credentials_is_in_no_error_body(settings, services, engine, caplog):
    name, fake, model = engine
    fake_port = fake.url.rsplit(":", 1)[1]
    down = f"http://operator:{SECRET}@127.0.0.1:{closed_port()}"
    failing = f"http://operator:{SECRET}@127.0.0.1:{fake_port}"
    caplog.set_level(logging.DEBUG)
    bodies = []
    for base, fault in ((down, None), (failing, 500)):
        model.chat_status = fault
        with backend(settings, services, name, engine_url(name, base)) as url, httpx.Client(base_url=url, timeout=30) as http:
            ask = http.post("/ask", json=ASK)
            stream = http.post("/ask", json={**ASK, "stream": True})
            chat = http.post("/v1/chat/completions", json=chat_body(False))
            assert ask.status_code == stream.status_code == chat.status_code == (503 if fault is None else 502), ask.text
            assert "the LLM engine" in ask.json()["error"]["message"]
            health = http.get("/health").json()["components"]["llm"]
            bodies += [ask.text, stream.text, chat.text, json.dumps(health)]
    for body in bodies:
        assert SECRET not in body and "operator:" not in body, body
    for body in bodies[0:3] + bodies[4:7]:  # the error bodies (not /health's) name the engine, not where it runs
        assert "127.0.0.1" not in body, body
    # The clients' own log lines carry the URL redacted (third-party lines, httpx's request lines, are
    # redacted by the log handler's filter, backend/redaction.py, which caplog does not go through).
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("backend.llm"))
    assert SECRET not in logged
    assert "***@127.0.0.1" in logged  # the operator still learns where the engine was looked for
