"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis): no request may get a 5xx.

The app is the real one (embedding model, Qdrant Edge on disk; the LLM is the scriptable fake) with a few
documents indexed, so search, ask and the document routes reach their data paths. Every response is checked:
no 5xx, every error is the JSON `{"error": {"type", "message"}}`, and the status code and body conform to the
schema where it documents them. Generation is bounded and derandomized: CI runs the same cases every time.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backend.settings import Settings

ADMIN_KEY = "fuzz-admin-key-0123456789abcdef"
SPACE = "team"
DOCS = {
    "handbook.md": b"# Backups\n\nBackups run nightly at 02:00 to the NAS in rack B.\n\n# Laptops\n\nNew engineers get a laptop.",
    "ops/ports.txt": b"The backend listens on port 8000; Qdrant listens on 6333.",
}
SCRATCH = ("scratch.md", b"# Scratch\n\nA document the fuzzer may delete.")

# The operations the app must keep serving; routes added later are fuzzed as well (the schema drives the
# run), this set only makes sure none of these silently drops out of it.
EXPECTED_OPERATIONS = {
    "GET /health", "GET /search", "POST /ask", "GET /documents", "POST /documents",
    "GET /documents/{doc_id}", "DELETE /documents/{doc_id}",
}
# Served without an API key (probes).
PUBLIC_OPERATIONS = {"GET /health", "GET /ready"}


def fuzz_settings(max_examples: int):
    # FUZZ_SCALE=10 (say) for a deeper local run; CI runs the default.
    max_examples *= int(os.environ.get("FUZZ_SCALE", "1"))
    # derandomize: the same cases on every run (CI); deadline None: the first embedding call is slow.
    return hypothesis_settings(
        max_examples=max_examples, deadline=None, derandomize=True, database=None, print_blob=False,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def error_body_is_json(ctx, response, case) -> None:
    """Every error (status >= 400) has the JSON body `{"error": {"type": str, "message": str}}`."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except Exception as exc:
        raise AssertionError(f"{response.status_code} with a body that is not JSON: {response.text[:200]!r}") from exc
    error = body.get("error") if isinstance(body, dict) else None
    if not (isinstance(error, dict) and isinstance(error.get("type"), str) and isinstance(error.get("message"), str)
            and error["type"] and error["message"]):
        raise AssertionError(f"{response.status_code} error body is not {{'error': {{type, message}}}}: {body!r}")
    return None


CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
    error_body_is_json,
]


def _index(services) -> dict[str, str]:
    """Index the documents through the pipeline the upload route uses; returns path -> doc_id."""
    ids = {}
    for path, data in (*DOCS.items(), SCRATCH):
        result = services.pipeline.ingest_bytes(SPACE, path, data)
        assert result.status == "added", result
        ids[path] = result.doc_id
    return ids


def _steer(schema, doc_ids: dict[str, str]) -> None:
    """Send part of the cases to the indexed space and documents, so the fuzzer reaches the data paths
    (random space ids, doc ids and top_k alone would nearly always stop at a 400 or 404). The other fields
    (the query text, the file's bytes, ...) stay fuzzed."""
    readable = [doc_ids[p] for p in DOCS]
    scratch = doc_ids[SCRATCH[0]]

    def steer(value, upload: bool = False):
        if not isinstance(value, dict) or "space_id" not in value:
            return st.just(value)
        in_space = {**value, "space_id": SPACE}
        options = [st.just(value), st.just(in_space)]
        if upload:  # a name with a parser, so the fuzzed bytes reach parsing, chunking and indexing
            options.append(st.sampled_from(["fuzz/notes.txt", "fuzz/notes.md", "fuzz/page.html"]).map(
                lambda path: {**in_space, "path": path}))
        else:
            options.append(st.integers(1, 10).map(lambda k: {**in_space, "top_k": k}))
        return st.one_of(options)

    @schema.hook
    def flatmap_query(context, query):
        return steer(query)

    @schema.hook
    def flatmap_body(context, body):
        return steer(body, upload=context.operation.path == "/documents")

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        if not isinstance(path_parameters, dict) or "doc_id" not in path_parameters:
            return st.just(path_parameters)
        # DELETE only ever reaches the scratch document: the others stay for search and ask.
        real = [scratch] if context.operation.method.upper() == "DELETE" else readable
        return st.sampled_from([path_parameters, *({**path_parameters, "doc_id": d} for d in real)])


def _labels(schema) -> set[str]:
    return {result.ok().label for result in schema.get_all_operations()}


def _assert_every_operation_ran(calls: Counter, schema) -> None:
    labels = _labels(schema)
    assert EXPECTED_OPERATIONS <= labels, f"the schema lost operations: {EXPECTED_OPERATIONS - labels}"
    never = sorted(label for label in labels if calls[label] == 0)
    assert not never, f"operations the fuzzer never called: {never}"


@pytest.fixture(autouse=True)
def _pytest_node_id_shim(request):
    """schemathesis 4.32.5's lazy loader (`from_fixture`) reads and rewrites `request.node._nodeid`, which
    pytest 9.2 no longer has (node ids moved to `_id`): give it the attribute it expects."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture
def calls() -> Counter:
    """Cases sent per operation label, and per (label, status)."""
    return Counter()


def _fuzzed_schema(app_settings, services, fake_llm, calls):
    from schemathesis.python import asgi

    from backend.app import create_app

    doc_ids = _index(services)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(app_settings, services, llm=fake_llm))
    _steer(schema, doc_ids)
    yield schema
    # schemathesis started the app's lifespan on the first call; end it before the store is closed.
    asgi.shutdown_lifespans()
    _assert_every_operation_ran(calls, schema)


@pytest.fixture
def open_schema(settings, services, fake_llm, calls):
    yield from _fuzzed_schema(settings, services, fake_llm, calls)


@pytest.fixture
def keyed_settings(settings) -> Settings:
    return Settings(
        _env_file=None, data_dir=settings.data_dir, MODEL_CACHE_DIR=settings.model_cache,
        chunk_tokens=settings.chunk_tokens, chunk_overlap=settings.chunk_overlap,
        api_keys=f"{ADMIN_KEY}=*",
    )


@pytest.fixture
def keyed_schema(keyed_settings, services, fake_llm, calls):
    yield from _fuzzed_schema(keyed_settings, services, fake_llm, calls)


open_api = schemathesis.pytest.from_fixture("open_schema")
keyed_api = schemathesis.pytest.from_fixture("keyed_schema")


def _record(calls: Counter, case, response) -> None:
    calls[case.operation.label] += 1
    calls[(case.operation.label, response.status_code)] += 1


@open_api.parametrize()
@fuzz_settings(40)
def test_open_api_answers_every_request_without_a_server_error(case, calls):
    response = case.call(headers={"Authorization": "Bearer ignored-when-api-keys-are-off"})
    _record(calls, case, response)
    case.validate_response(response, checks=CHECKS)


@keyed_api.parametrize()
@fuzz_settings(25)
def test_api_with_keys_answers_every_request_without_a_server_error(case, calls):
    response = case.call(headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    _record(calls, case, response)
    case.validate_response(response, checks=CHECKS)


@keyed_api.parametrize()
@fuzz_settings(5)
def test_without_a_key_everything_but_the_probes_is_a_json_401(case, calls):
    response = case.call()
    _record(calls, case, response)
    case.validate_response(response, checks=CHECKS)
    if case.operation.label not in PUBLIC_OPERATIONS:
        # Nothing is served without a key; what comes before authentication (a body that cannot be parsed,
        # a multipart body without a boundary, a method the route does not have) is refused for its own reason.
        assert response.status_code in (400, 401, 405, 413, 422), (case.operation.label, response.status_code, response.text)


def test_the_error_check_rejects_what_it_should():
    """The custom check itself: a fuzz run whose check cannot fail would prove nothing."""
    import requests

    def response(status: int, body: bytes, content_type="application/json"):
        r = requests.Response()
        r.status_code, r._content = status, body
        r.headers["Content-Type"] = content_type
        return schemathesis.Response.from_any(r)

    error_body_is_json(None, response(200, b"plain"), None)
    error_body_is_json(None, response(404, b'{"error": {"type": "not_found", "message": "no"}}'), None)
    for bad in (b"Internal Server Error", b'{"detail": "x"}', b'{"error": "x"}', b'{"error": {"type": "x"}}',
                b'{"error": {"type": "", "message": "m"}}', b'[]'):
        with pytest.raises(AssertionError):
            error_body_is_json(None, response(400, bad, "text/plain"), None)


# Regressions: what fuzzing found, each confirmed by hand first.


@pytest.fixture
def client_with_docs(client, services):
    _index(services)
    return client


def _assert_error(response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == error_type and response.json()["error"]["message"]


def test_a_space_id_with_a_trailing_newline_is_refused_everywhere(client_with_docs):
    # `^...$` with re.match accepted "team\n": an upload created a second, invisible "team" space.
    client = client_with_docs
    upload = client.post("/documents", data={"space_id": "team\n"}, files={"file": ("a.md", b"# A\n\nBackups.")})
    _assert_error(upload, 400, "invalid_space")
    _assert_error(client.get("/documents", params={"space_id": "team\n"}), 400, "invalid_space")
    _assert_error(client.get("/search", params={"q": "backups", "space_id": "team\n"}), 400, "invalid_space")
    _assert_error(client.post("/ask", json={"q": "backups", "space_id": "team\n"}), 400, "invalid_space")
    assert client.get("/search", params={"q": "backups", "space_id": "team"}).status_code == 200


def test_a_document_path_that_is_not_utf8_is_a_clean_error(services):
    # A file name read with surrogateescape (not UTF-8 on disk) crashed hashing with UnicodeEncodeError.
    from backend.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="not valid UTF-8"):
        services.pipeline.ingest_bytes(SPACE, "report-\udcff.txt", b"hello world")
    assert services.store.health()["points"] == 0


def test_a_question_with_a_lone_surrogate_is_a_400(client_with_docs):
    # JSON may escape a lone surrogate ("\ud800"); a query string cannot carry one (it is decoded with replacement).
    response = client_with_docs.post(
        "/ask", content=b'{"q": "backups \\ud800", "space_id": "team"}', headers={"Content-Type": "application/json"}
    )
    _assert_error(response, 400, "invalid_request")


def test_the_schema_documents_every_status_the_app_returns(client):
    upload = {"data": {"space_id": SPACE}, "files": {"file": ("a.md", b"# A\n\nBackups run nightly.")}}
    assert client.post("/documents", **upload).status_code == 201
    assert client.post("/documents", **upload).status_code == 200
    responses = client.get("/openapi.json").json()["paths"]["/documents"]["post"]["responses"]
    assert {"200", "201"} <= set(responses)


def test_the_schema_documents_the_answer_stream(client):
    content = client.get("/openapi.json").json()["paths"]["/ask"]["post"]["responses"]["200"].get("content", {})
    assert "text/event-stream" in content


@pytest.mark.parametrize("name,data", [("a.txt", b"\x7f"), ("a.txt", "\u200b".encode()), ("a.md", "\u00ad".encode()), ("a.html", b"<p>\x7f</p>")])
def test_a_file_with_no_indexable_text_is_a_422(services, settings, fake_llm, name, data):
    from fastapi.testclient import TestClient

    from backend.app import create_app

    with TestClient(create_app(settings, services, llm=fake_llm), raise_server_exceptions=False) as client:
        response = client.post("/documents", data={"space_id": SPACE}, files={"file": (name, data)})
    _assert_error(response, 422, "empty_document")
    assert services.store.health()["points"] == 0
