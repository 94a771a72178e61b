"""The HTTP API through its app: real model, Qdrant Edge on disk, real files."""

from __future__ import annotations

import pytest

from tests.support.docs_factory import make_docx, make_html, make_pdf
from tests.support.http_api import assert_error, upload


def test_health_reports_components(client):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["components"]["store"]["engine"] == "qdrant-edge"
    assert body["components"]["embedder"]["dim"] == 384
    assert body["components"]["llm"]["status"] == "ok"


def test_health_stays_200_but_degraded_while_the_llm_is_down(client, fake_llm):
    from backend.errors import LLMUnavailable

    fake_llm.fail_before = LLMUnavailable("no engine")
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "degraded"
    assert response.json()["components"]["llm"]["error_type"] == "llm_unavailable"


def test_upload_search_list_delete_roundtrip(client):
    pdf = make_pdf(["Welcome to the handbook.", "Backups run nightly at 02:00 to the NAS in rack B."])
    created = upload(client, "handbook.pdf", pdf)
    assert created.status_code == 201, created.text
    doc = created.json()
    assert doc["status"] == "added" and doc["chunks"] == 2 and doc["path"] == "handbook.pdf"

    again = upload(client, "handbook.pdf", pdf)
    assert again.status_code == 200 and again.json()["status"] == "unchanged"

    upload(client, "notes.docx", make_docx([("Onboarding", "New engineers get a laptop on day one.")]))
    upload(client, "faq.html", make_html("FAQ", [("Vacation", "Ask your manager two weeks ahead.")]))

    response = client.get("/search", params={"q": "when do backups run?", "space_id": "team", "top_k": 3})
    assert response.status_code == 200
    results = response.json()["results"]
    assert results[0]["path"] == "handbook.pdf" and results[0]["page"] == 2
    assert {"text", "score", "doc_id", "path", "chunk_index"} <= set(results[0])
    assert response.json()["timings"]["embed_ms"] > 0
    assert response.json()["mode"] == "hybrid" and response.json()["reranked"] is False
    assert 0 < results[0]["dense_score"] <= 1
    for mode in ("dense", "sparse", "hybrid"):
        body = client.get("/search", params={"q": "backups nightly NAS", "space_id": "team", "mode": mode}).json()
        assert body["mode"] == mode and body["results"][0]["path"] == "handbook.pdf"

    listing = client.get("/documents", params={"space_id": "team"}).json()["documents"]
    assert [d["path"] for d in listing] == ["faq.html", "handbook.pdf", "notes.docx"]
    assert client.get(f"/documents/{doc['doc_id']}").json()["chunks"] == 2

    deleted = client.delete(f"/documents/{doc['doc_id']}")
    assert deleted.status_code == 200 and deleted.json()["deleted_points"] == 2
    paths = {r["path"] for r in client.get("/search", params={"q": "backups", "space_id": "team"}).json()["results"]}
    assert "handbook.pdf" not in paths
    assert_error(client.delete(f"/documents/{doc['doc_id']}"), 404, "document_not_found")


def test_upload_with_a_logical_path_and_replacement(client):
    first = upload(client, "x.md", b"# Ports\n\nThe backend listens on 8000.", path="ops/ports.md").json()
    second = upload(client, "x.md", b"# Ports\n\nThe backend listens on 9000 now.", path="ops/ports.md")
    assert second.status_code == 201 and second.json()["status"] == "replaced"
    assert second.json()["doc_id"] == first["doc_id"]
    hits = client.get("/search", params={"q": "backend port", "space_id": "team"}).json()["results"]
    assert [h["text"] for h in hits] == ["The backend listens on 9000 now."]


@pytest.mark.parametrize(
    "name,data,status,error_type",
    [
        ("broken.pdf", b"%PDF-1.4\n\x00\x01 truncated", 422, "corrupt_document"),
        ("random.pdf", b"\x89PNG\r\n\x1a\n" + bytes(200), 422, "corrupt_document"),
        ("empty.txt", b"", 422, "empty_document"),
        ("bad.docx", b"PK\x03\x04nope", 422, "corrupt_document"),
        ("photo.png", b"\x89PNG\r\n", 415, "unsupported_file_type"),
        ("../../etc/passwd.txt", b"root", 400, "invalid_request"),
    ],
)
def test_bad_uploads_get_a_specific_json_error_and_write_nothing(client, services, name, data, status, error_type):
    assert_error(upload(client, name, data), status, error_type)
    assert services.store.health()["points"] == 0


def test_too_large_upload_is_413(client, services):
    services.settings.max_upload_mb = 0.01
    assert_error(upload(client, "big.txt", b"word " * 5000), 413, "file_too_large")
    assert services.store.health()["points"] == 0


def test_request_validation_errors_are_json(client):
    assert_error(client.post("/documents", data={"space_id": "team"}), 422, "validation_error")
    assert_error(upload(client, "a.txt", b"x", space="no spaces!"), 400, "invalid_space")
    assert_error(client.get("/search", params={"q": "x"}), 422, "validation_error")
    assert_error(client.get("/search", params={"q": "x", "space_id": "team", "top_k": 0}), 400, "invalid_request")
    assert_error(client.get("/search", params={"q": "x", "space_id": "team", "top_k": 10_000}), 400, "invalid_request")
    assert_error(client.get("/search", params={"q": "  ", "space_id": "team"}), 400, "invalid_request")
    assert_error(client.get("/search", params={"q": "x", "space_id": "team", "mode": "fuzzy"}), 422, "validation_error")
    # No RERANK_MODEL configured: asking for reranking is the client's mistake, said plainly.
    assert_error(client.get("/search", params={"q": "x", "space_id": "team", "rerank": "true"}), 400, "invalid_request")
    assert_error(client.get("/documents", params={"space_id": "../x"}), 400, "invalid_space")
    assert_error(client.get("/nope"), 404, "not_found")


def test_search_in_an_unknown_space_is_404(client):
    upload(client, "a.txt", b"something indexed")
    assert_error(client.get("/search", params={"q": "x", "space_id": "other"}), 404, "space_not_found")


def test_openapi_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/search", "/documents", "/documents/{doc_id}"} <= set(paths)


def _multipart(name: str, payload: bytes, space: str = "team") -> tuple[bytes, str]:
    boundary = "----rag-test-boundary"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"space_id\"\r\n\r\n{space}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    return head + payload + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_an_upload_over_the_limit_is_refused_while_it_streams(client, services):
    services.settings.max_upload_mb = 0.1  # 100 KiB
    body, content_type = _multipart("big.txt", b"word " * 200_000)  # ~1 MB
    # Declared size: refused before a byte of the body is read.
    assert_error(client.post("/documents", content=body, headers={"Content-Type": content_type}), 413, "file_too_large")

    # No declared size (chunked transfer): refused once the count of received bytes passes the limit.
    def chunks():
        for start in range(0, len(body), 16384):
            yield body[start : start + 16384]

    response = client.post("/documents", content=chunks(), headers={"Content-Type": content_type})
    assert_error(response, 413, "file_too_large")
    assert "MAX_UPLOAD_MB" in response.json()["error"]["message"]
    assert services.store.health()["points"] == 0
    # A file under the limit still goes through.
    small, content_type = _multipart("small.txt", b"Backups run nightly. " * 100)
    assert client.post("/documents", content=small, headers={"Content-Type": content_type}).status_code == 201
