"""Issue 24, the HTTP side: hostile requests against the real app on a real uvicorn server (API_KEYS set).

One regression test per finding:
- 4: an unauthenticated body is answered 401 before it is read (declared 1 GB, or chunked and endless);
  a keyed body over MAX_REQUEST_KB is answered 413 while it arrives, uploads keep MAX_UPLOAD_MB;
- 5: an unexpected exception gets the 500 JSON and the keep-alive connection stays usable;
- 7: /health answers 200 whatever a component's check raises or returns;
- 9: another space's document is "not found" exactly like a missing one (no existence oracle);
- 10: credentials inside VLLM_BASE_URL / QDRANT_URL never reach /health, error bodies or the log, and tenants'
  errors do not name internal addresses.
Where the behaviour is about the wire (when bytes are read, connections) the app runs under uvicorn in a
thread, spoken to over raw sockets or one httpx client; the rest goes through TestClient.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.errors import LLMUnavailable, StoreUnavailable
from backend.domain import make_doc_id
from backend.settings import Settings
from cli.local_backend import free_port
from tests.support.fake_llm import FakeLLM
from tests.support.threaded_server import ThreadedServer

TEAM_KEY = "team-key-0123456789abcdef"
OPS_KEY = "ops-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
# The defaults of MAX_REQUEST_KB and MAX_UPLOAD_MB (the scenarios are those of the report, on default settings).
REQUEST_LIMIT = 1024 * 1024
UPLOAD_LIMIT = 50 * 1024 * 1024
NOTES = b"# Backups\n\nBackups run nightly at 02:00 to the NAS in rack B."
SECRET = "s3cret"
ANSWER_WAIT_S = 5.0  # how long a refusal may take to arrive (it comes in milliseconds)


@pytest.fixture
def settings(tmp_path, model_cache) -> Settings:
    return Settings(
        _env_file=None, data_dir=tmp_path / "data", MODEL_CACHE_DIR=model_cache, chunk_tokens=128, chunk_overlap=24,
        api_keys=f"{TEAM_KEY}=team, {OPS_KEY}=ops, {ADMIN_KEY}=*",
    )


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def serving(app):
    """The app (lifespan included) under uvicorn, as `python -m backend` runs it, in a thread; yields (host, port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def server(settings, services, fake_llm):
    with serving(create_app(settings, services, llm=fake_llm)) as address:
        yield address


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response with a Content-Length (what every refusal has); socket.timeout if none comes."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            raise ConnectionError(f"the connection closed after {data!r}")
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        part = sock.recv(65536)
        if not part:
            break
        body += part
    return int(lines[0].split()[1]), headers, body


def request_head(method: str, path: str, headers: dict) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def declared_body_answer(address, path: str, length: int, headers: dict | None = None):
    """Send only the head of a request declaring `length` body bytes; the answer, which must come without them."""
    with socket.create_connection(address, timeout=ANSWER_WAIT_S) as sock:
        sock.sendall(request_head("POST", path, {"Content-Type": "application/json", "Content-Length": length, **(headers or {})}))
        return read_response(sock)


def endless_chunked_answer(address, path: str, headers: dict | None = None, chunk: int = 16 * 1024, give_up: int = 64 * 1024 * 1024):
    """Stream a chunked body until the server answers; (status, body, bytes sent before the answer came)."""
    with socket.create_connection(address, timeout=ANSWER_WAIT_S) as sock:
        sock.sendall(request_head("POST", path, {"Content-Type": "application/json", "Transfer-Encoding": "chunked", **(headers or {})}))
        piece = b"%x\r\n" % chunk + b'{"q": "' + b"x" * (chunk - 7) + b"\r\n"
        sent = 0
        while sent < give_up and not select.select([sock], [], [], 0.005)[0]:
            try:
                sock.sendall(piece)
            except OSError:  # the server answered and closed: its answer is waiting to be read
                break
            sent += chunk
        assert sent < give_up, f"no answer after {sent} body bytes: the body is being read"
        status, _, body = read_response(sock)
        return status, json.loads(body), sent


# -- finding 4: unbounded work before any check --------------------------------------------------------------
def test_an_unauthenticated_body_gets_its_401_before_it_is_read(server):
    # 1 GB declared, not one byte sent: the 401 comes from the headers alone.
    started = time.monotonic()
    status, headers, body = declared_body_answer(server, "/ask", 1 << 30)
    assert status == 401 and json.loads(body)["error"]["type"] == "unauthorized"
    assert headers["www-authenticate"] == "Bearer" and headers["connection"] == "close"
    assert time.monotonic() - started < 1.0
    # A chunked body that never ends, with an unknown key: answered after at most a few chunks.
    status, body, sent = endless_chunked_answer(server, "/ask", bearer("wrong-key-0123456789"))
    assert status == 401 and body["error"]["type"] == "unauthorized"
    assert sent <= 4 * 1024 * 1024  # what the sockets' buffers take in; nothing like the body
    # The OpenAI-compatible API answers in OpenAI's shape.
    status, _, body = declared_body_answer(server, "/v1/chat/completions", 1 << 30)
    assert status == 401
    assert json.loads(body)["error"] == {
        "message": "missing API key: send 'Authorization: Bearer <key>'", "type": "authentication_error",
        "param": None, "code": "unauthorized",
    }


def test_a_keyed_body_over_the_limit_is_refused_while_it_arrives(server):
    key = bearer(TEAM_KEY)
    # Declared too large: 413 at once, nothing read.
    status, headers, body = declared_body_answer(server, "/ask", REQUEST_LIMIT + 1, key)
    assert status == 413 and json.loads(body)["error"]["type"] == "request_too_large"
    assert headers["connection"] == "close"
    status, _, body = declared_body_answer(server, "/v1/chat/completions", REQUEST_LIMIT + 1, key)
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    # Chunked (no length declared): counted as it arrives, refused once past the limit.
    status, body, sent = endless_chunked_answer(server, "/ask", key)
    assert status == 413 and body["error"]["type"] == "request_too_large"
    assert REQUEST_LIMIT <= sent <= REQUEST_LIMIT + 4 * 1024 * 1024
    # Uploads keep MAX_UPLOAD_MB: larger than MAX_REQUEST_KB is fine, larger than the upload limit is not.
    url = "http://%s:%d" % server
    with httpx.Client(base_url=url, headers=key, timeout=60) as client:
        big_notes = NOTES + b"\n" + b" " * REQUEST_LIMIT + b"\n"  # over MAX_REQUEST_KB, yet quick to index
        assert len(big_notes) > REQUEST_LIMIT
        assert client.post("/documents", data={"space_id": "team"}, files={"file": ("notes.md", big_notes)}).status_code == 201
        assert client.post("/ask", json={"q": "When do backups run?", "space_id": "team"}).status_code == 200
    status, _, body = declared_body_answer(server, "/documents", UPLOAD_LIMIT + 128 * 1024, {**key, "Content-Type": "multipart/form-data; boundary=x"})
    assert status == 413 and json.loads(body)["error"]["type"] == "file_too_large"


class CountingKeys:
    """API_KEYS that count how often a request is authenticated."""

    def __init__(self, keys):
        self.keys, self.calls = keys, 0
        self.enabled = keys.enabled

    def authenticate(self, authorization):
        self.calls += 1
        return self.keys.authenticate(authorization)


def test_a_request_is_authenticated_once(settings, services, fake_llm):
    app = create_app(settings, services, llm=fake_llm)
    with TestClient(app) as client:
        app.state.api_keys = counting = CountingKeys(app.state.api_keys)
        assert client.get("/documents", params={"space_id": "team"}, headers=bearer(TEAM_KEY)).status_code == 200
        assert counting.calls == 1
        assert client.get("/documents", params={"space_id": "ops"}, headers=bearer(TEAM_KEY)).status_code == 403
        assert client.get("/metrics", headers=bearer(TEAM_KEY)).status_code == 403  # the space check stays in the routes
        assert counting.calls == 3


# -- finding 5: the keep-alive connection after an unexpected error ------------------------------------------
def test_an_unexpected_error_gets_json_and_the_connection_stays_usable(server, services, caplog):
    def broken(doc_id):
        raise RuntimeError("a bug")

    services.index.get = broken
    with httpx.Client(base_url="http://%s:%d" % server, headers=bearer(ADMIN_KEY), timeout=10) as client:
        with caplog.at_level(logging.ERROR):
            failed = client.get("/documents/0123456789abcdef")
        assert failed.status_code == 500
        assert failed.json()["error"]["type"] == "internal_error" and "a bug" not in failed.text
        after = client.get("/health")
        assert after.status_code == 200
        # The same TCP connection (same client port) carried both: it was not reset after the 500.
        ports = [r.extensions["network_stream"].get_extra_info("client_addr") for r in (failed, after)]
        assert ports[0] == ports[1]
        assert failed.headers.get("connection") != "close"
        assert failed.headers["x-request-id"]  # the id to find the traceback by
    assert "RuntimeError: a bug" in caplog.text  # the details are in the server log


# -- finding 7: /health whatever a dependency answers --------------------------------------------------------
class OddLLM(FakeLLM):
    """An engine client whose health check raises, or returns what is not a status."""

    def __init__(self, health):
        super().__init__()
        self._health = health

    async def health(self):
        return self._health()


def _raise():
    raise ValueError("Expecting value: line 1 column 1 (char 0)")


@pytest.mark.parametrize("health", [
    _raise, lambda: None, lambda: "ok", lambda: {"status": None},
    lambda: {"status": "ok", "model": object(), "context_length": float("nan")},
], ids=["raises", "none", "a_string", "no_status", "not_json"])
def test_health_answers_whatever_the_llm_check_does(settings, services, health):
    with TestClient(create_app(settings, services, llm=OddLLM(health)), raise_server_exceptions=False) as client:
        response = client.get("/health")
        assert response.status_code == 200, response.text
        llm = response.json()["components"]["llm"]
        assert llm["status"] in ("error", "ok")  # "ok" only where the check said so (not_json)
        assert client.get("/ready").status_code == 200  # the engine never decides readiness


def test_health_answers_when_the_store_check_raises(settings, services, fake_llm):
    def broken():
        raise RuntimeError("segment file vanished")

    services.store.health = broken
    with TestClient(create_app(settings, services, llm=fake_llm), raise_server_exceptions=False) as client:
        response = client.get("/health")
        assert response.status_code == 200, response.text
        assert response.json()["components"]["store"]["status"] == "error"
        assert client.get("/ready").status_code == 503


class NonsenseEngine(ThreadedServer):
    """An engine whose /v1/models answers 200 with `body`: invalid JSON, or `data: null`."""

    name = "nonsense-engine"

    def __init__(self, body: bytes):
        super().__init__()
        self.body = body

    def app(self):
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": self.body})

        return app


@pytest.mark.parametrize("body", [b"{not json", b'{"object": "list", "data": null}'], ids=["invalid_json", "data_null"])
def test_health_answers_when_the_engine_answers_nonsense(settings, services, body):
    with NonsenseEngine(body) as engine:
        real = settings.model_copy(update={"llm_backend": "vllm", "vllm_base_url": f"{engine.url}/v1", "vllm_model": ""})
        with TestClient(create_app(real, services), raise_server_exceptions=False) as client:
            response = client.get("/health")
    assert response.status_code == 200, response.text
    assert response.json()["components"]["llm"]["status"] == "error"


# -- finding 9: no existence oracle over document ids --------------------------------------------------------
def test_another_spaces_document_is_not_found_like_a_missing_one(client):
    created = client.post("/documents", data={"space_id": "ops"}, files={"file": ("runbook.md", NOTES)}, headers=bearer(ADMIN_KEY))
    assert created.status_code == 201
    existing = created.json()["doc_id"]
    missing = make_doc_id("ops", "no-such-file.md")
    assert existing == make_doc_id("ops", "runbook.md")  # what an attacker can compute from a guessed name
    for method in ("GET", "DELETE"):
        there = client.request(method, f"/documents/{existing}", headers=bearer(TEAM_KEY))
        absent = client.request(method, f"/documents/{missing}", headers=bearer(TEAM_KEY))
        assert there.status_code == absent.status_code == 404
        assert there.json()["error"]["type"] == "document_not_found"
        assert there.text.replace(existing, "ID") == absent.text.replace(missing, "ID")
        assert {k: v for k, v in there.headers.items() if k not in ("x-request-id", "content-length")} == \
            {k: v for k, v in absent.headers.items() if k not in ("x-request-id", "content-length")}
    # The team's DELETE removed nothing; the space's own key still sees and may delete it.
    assert client.get(f"/documents/{existing}", headers=bearer(OPS_KEY)).status_code == 200
    assert client.delete(f"/documents/{existing}", headers=bearer(OPS_KEY)).status_code == 200


# -- finding 10: secrets and internal addresses --------------------------------------------------------------
def test_credentials_in_urls_reach_no_caller_and_no_log(settings, services, json_log):
    port = free_port()  # nothing listens there: every request to the engine fails
    address = f"127.0.0.1:{port}"
    engine_url = f"http://user:{SECRET}@{address}/v1"
    keyed = settings.model_copy(update={"llm_backend": "vllm", "vllm_base_url": engine_url, "vllm_model": "m", "llm_timeout_s": 2.0})
    with serving(create_app(keyed, services)) as server:
        with httpx.Client(base_url="http://%s:%d" % server, timeout=60) as client:
            assert client.post("/documents", data={"space_id": "team"}, files={"file": ("notes.md", NOTES)},
                               headers=bearer(TEAM_KEY)).status_code == 201
            seen = []
            for headers in ({}, bearer(TEAM_KEY)):  # anonymous probes and tenants: no address at all
                health = client.get("/health", headers=headers)
                assert health.status_code == 200 and "url" not in health.json()["components"]["llm"]
                seen.append(health.text)
            operator = client.get("/health", headers=bearer(ADMIN_KEY)).json()["components"]["llm"]
            assert operator["url"] == f"http://***@{address}/v1"  # diagnostics for '*' keys, masked
            question = {"q": "When do backups run?", "space_id": "team"}
            tenant_errors = [
                client.post("/ask", json=question, headers=bearer(TEAM_KEY)),
                client.post("/ask", json={**question, "stream": True}, headers=bearer(TEAM_KEY)),
                client.post("/v1/chat/completions", headers=bearer(TEAM_KEY),
                            json={"model": "rag/team", "messages": [{"role": "user", "content": question["q"]}]}),
            ]
            for response in tenant_errors:
                assert response.status_code == 503, response.text
                seen.append(response.text)
    for text in seen:
        assert SECRET not in text and address not in text and "user:" not in text
    log = json_log.getvalue()
    assert "llm_unavailable" in log or "request failed" in log  # the failures were logged ...
    assert SECRET not in log  # ... without the credentials


def test_error_bodies_are_scrubbed_whoever_wrote_them(settings, services):
    """The safety net: an engine error that names its URL (as the clients' messages did) reaches tenants
    without the address and operators without the credentials, in both error shapes."""
    address = f"127.0.0.1:{free_port()}"
    down = LLMUnavailable(f"could not reach vLLM at http://user:{SECRET}@{address}/v1 while listing models")
    with TestClient(create_app(settings, services, llm=FakeLLM(fail_before=down))) as client:
        assert client.post("/documents", data={"space_id": "team"}, files={"file": ("notes.md", NOTES)},
                           headers=bearer(TEAM_KEY)).status_code == 201
        question = {"q": "When do backups run?", "space_id": "team"}
        chat = {"model": "rag/team", "messages": [{"role": "user", "content": question["q"]}]}
        for key in (TEAM_KEY, ADMIN_KEY):
            for response in (client.post("/ask", json=question, headers=bearer(key)),
                             client.post("/v1/chat/completions", json=chat, headers=bearer(key))):
                assert response.status_code == 503 and SECRET not in response.text, response.text
                assert (address in response.text) == (key == ADMIN_KEY)  # operators keep the diagnostics
        assert f"http://***@{address}/v1" in client.post("/ask", json=question, headers=bearer(ADMIN_KEY)).text


def test_a_qdrant_url_with_credentials_stays_out_of_errors(caplog):
    from backend.retrieval.stores.qdrant import QdrantServerStore

    address = f"127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING), pytest.raises(StoreUnavailable) as failed:
        QdrantServerStore.from_url(f"http://user:{SECRET}@{address}", "chunks", 384, timeout_s=1)
    assert SECRET not in failed.value.message and address not in failed.value.message
    assert "Qdrant" in failed.value.message
