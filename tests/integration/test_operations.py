"""Operations over the real app, store and model: probes, Prometheus metrics, request ids, JSON logs."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from backend.app import create_app
from tests.support.docs_factory import make_pdf
from tests.support.http_api import sse_events

SPACE = "ops"
SECRET_TEXT = "Backups run nightly at 02:00 to the NAS in rack B."
QUESTION = "When do the backups of rack B run?"
STAR_KEY = "admin-key-0123456789abcdef"
TEAM_KEY = "team-key-0123456789abcdef"
# Every name docs/monitoring.md, the Grafana dashboard and the alert rules use (tests/deploy/test_monitoring.py).
EXPORTED = {
    "rag_http_requests_total", "rag_http_request_duration_seconds", "rag_http_requests_in_flight",
    "rag_stage_duration_seconds", "rag_errors_total", "rag_empty_retrievals_total",
    "rag_context_chunks_dropped_total", "rag_context_tokens_dropped_total", "rag_llm_tokens_total",
    "rag_documents_ingested_total", "rag_info", "process_resident_memory_bytes", "process_cpu_seconds_total",
    "process_open_fds", "rag_citation_sentences_total", "rag_citation_check_duration_seconds",
    "rag_answers_ungrounded_total",
}


def samples(text: str) -> dict[tuple, float]:
    """{(name, frozenset(labels)): value} of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(all_samples: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in all_samples.items() if n == name and set(labels.items()) <= ls)


@pytest.fixture
def indexed(client):
    pdf = make_pdf(["Welcome to the operations handbook.", SECRET_TEXT])
    assert client.post("/documents", data={"space_id": SPACE}, files={"file": ("handbook.pdf", pdf)}).status_code == 201
    return client


def test_probes(indexed):
    live = indexed.get("/health")
    assert live.status_code == 200 and live.json()["status"] == "ok"
    ready = indexed.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert {"store", "embedder", "llm"} <= set(ready.json()["components"])
    assert ready.headers["cache-control"] == "no-store"


def test_readiness_ignores_the_llm_but_reports_it(indexed, fake_llm):
    from backend.errors import LLMUnavailable

    fake_llm.fail_before = LLMUnavailable("connection refused")
    ready = indexed.get("/ready")
    assert ready.status_code == 200 and ready.json()["components"]["llm"]["status"] == "error"
    assert indexed.get("/health").json()["status"] == "degraded"


def test_metrics_cover_every_stage_after_real_traffic(indexed, fake_llm):
    client = indexed
    fake_llm.answer = "Backups run nightly [1]."
    assert client.post("/ask", json={"q": QUESTION, "space_id": SPACE}).status_code == 200
    assert sse_events(client.post("/ask", json={"q": QUESTION, "space_id": SPACE, "stream": True}).text)[-1][0] == "done"
    assert client.get("/search", params={"q": "backups", "space_id": SPACE}).status_code == 200
    assert client.get("/search", params={"q": "backups", "space_id": "nope"}).status_code == 404
    assert client.get("/search", params={"space_id": SPACE}).status_code == 422
    assert client.post("/documents", data={"space_id": SPACE}, files={"file": ("x.exe", b"MZ")}).status_code == 415
    assert client.get("/no/such/path/12345").status_code == 404
    # Nothing relevant: answered without the LLM, counted as an empty retrieval.
    nothing = client.post("/ask", json={"q": "Quelle est la recette de la tarte tatin ?", "space_id": SPACE})
    assert nothing.json()["grounded"] is False
    # A small window: retrieved chunks are dropped from the prompt and counted.
    fake_llm.context_length = 700
    long_doc = ("# Backups\n\n" + " ".join(["Backups of rack B run nightly at 02:00 and are verified weekly."] * 40)).encode()
    assert client.post("/documents", data={"space_id": SPACE}, files={"file": ("long.md", long_doc)}).status_code == 201
    dropped = client.post("/ask", json={"q": QUESTION, "space_id": SPACE, "top_k": 10, "max_tokens": 64}).json()
    assert dropped["context"]["dropped"]

    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    all_samples = samples(response.text)
    names = {name for name, _ in all_samples}
    for family in EXPORTED:
        assert any(n == family or n.startswith(family.removesuffix("_total") + "_") or n == family for n in names), family
    for stage in ("parse", "embed", "store_write", "query_embed", "search", "retrieval", "ttft", "generation", "total"):
        assert value(all_samples, "rag_stage_duration_seconds_count", stage=stage) >= 1, stage
    assert value(all_samples, "rag_stage_duration_seconds_count", stage="total") == 4  # every /ask, answered or not
    assert value(all_samples, "rag_http_requests_total", route="/ask", status="200") == 4
    assert value(all_samples, "rag_http_requests_total", route="/search", status="404") == 1
    assert value(all_samples, "rag_http_requests_total", route="unmatched", status="404") == 1  # no raw paths as labels
    assert value(all_samples, "rag_errors_total", type="space_not_found") == 1
    assert value(all_samples, "rag_errors_total", type="validation_error") == 1
    assert value(all_samples, "rag_errors_total", type="unsupported_file_type") == 1
    assert value(all_samples, "rag_documents_ingested_total", status="added") == 2
    assert value(all_samples, "rag_documents_ingested_total", status="skipped") == 1
    assert value(all_samples, "rag_empty_retrievals_total") == 1
    assert value(all_samples, "rag_context_chunks_dropped_total") == len(dropped["context"]["dropped"])
    assert value(all_samples, "rag_context_tokens_dropped_total") == sum(d["tokens"] for d in dropped["context"]["dropped"])
    assert value(all_samples, "rag_llm_tokens_total", kind="completion") >= 3
    assert value(all_samples, "rag_info", engine="fake", store="edge") == 1
    assert value(all_samples, "process_resident_memory_bytes") > 50e6
    assert value(all_samples, "rag_http_requests_in_flight") == 1  # the scrape itself


def test_a_mid_stream_failure_is_counted(indexed, fake_llm):
    from backend.errors import LLMBadResponse

    fake_llm.fail_after_tokens, fake_llm.fail_with = 2, LLMBadResponse("engine died")
    events = sse_events(indexed.post("/ask", json={"q": QUESTION, "space_id": SPACE, "stream": True}).text)
    assert events[-1][0] == "error"
    assert value(samples(indexed.get("/metrics").text), "rag_errors_total", type="llm_bad_response") == 1


@pytest.fixture
def keyed_settings(settings):
    return settings.model_copy(update={"api_keys": SecretStr(f"{STAR_KEY}=*,{TEAM_KEY}={SPACE}")})


def test_metrics_need_a_key_for_all_spaces_and_probes_need_none(keyed_settings, services, fake_llm):
    with TestClient(create_app(keyed_settings, services, llm=fake_llm)) as client:
        assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
        assert client.get("/metrics").status_code == 401
        forbidden = client.get("/metrics", headers={"Authorization": f"Bearer {TEAM_KEY}"})
        assert forbidden.status_code == 403 and forbidden.json()["error"]["type"] == "forbidden"
        assert client.get("/metrics", headers={"Authorization": f"Bearer {STAR_KEY}"}).status_code == 200


def test_request_ids_and_json_logs_without_text_or_keys(keyed_settings, services, fake_llm, json_log):
    auth = {"Authorization": f"Bearer {STAR_KEY}"}
    with TestClient(create_app(keyed_settings, services, llm=fake_llm)) as client:
        pdf = make_pdf([SECRET_TEXT])
        upload = client.post("/documents", data={"space_id": SPACE}, files={"file": ("handbook.pdf", pdf)},
                             headers={**auth, "X-Request-ID": "upload-42"})
        assert upload.status_code == 201 and upload.headers["x-request-id"] == "upload-42"
        ask = client.post("/ask", json={"q": QUESTION, "space_id": SPACE}, headers=auth)
        generated = ask.headers["x-request-id"]
        assert len(generated) == 32
        odd = client.get("/search", params={"q": QUESTION, "space_id": SPACE}, headers={**auth, "X-Request-ID": "bad id\twith spaces"})
        assert odd.headers["x-request-id"] != "bad id\twith spaces"
        assert client.get("/search", params={"q": "x", "space_id": "other"}, headers={"Authorization": "Bearer wrong-key-0123456789"}).status_code == 401

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]  # every line is one JSON object
    assert lines and all({"time", "level", "logger", "message", "request_id"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "backend.access"]
    by_id = {line["request_id"]: line for line in access}
    assert by_id["upload-42"]["route"] == "/documents" and by_id["upload-42"]["status"] == 201
    assert by_id[generated]["route"] == "/ask" and by_id[generated]["duration_ms"] > 0
    assert any(line["status"] == 401 for line in access)
    text = json_log.getvalue()
    for secret in (SECRET_TEXT, "rack B", QUESTION, STAR_KEY, "wrong-key-0123456789"):
        assert secret not in text
