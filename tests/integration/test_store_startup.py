"""A backend whose Qdrant server does not answer at start: it starts unready, then serves once Qdrant is up.

The first attempts go through the real Qdrant-server adapter to a closed port (connection refused, the
same error a Qdrant that is still starting gives); "Qdrant comes up" is then the same adapter over
qdrant-client's local mode (no server binary runs here).
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

import backend.app
from backend.app import create_app
from backend.errors import StoreLocked
from backend.retrieval.stores import registry as store_module
from backend.retrieval.stores.edge import EdgeStore
from tests.support.components import server_store_or_none
from tests.support.ports import closed_port


def test_the_backend_starts_unready_without_qdrant_and_serves_once_it_answers(settings, embedder, fake_llm, tmp_path, monkeypatch):
    settings = settings.model_copy(update={"qdrant_url": f"http://127.0.0.1:{closed_port()}", "qdrant_timeout_s": 1.0})
    qdrant_up = {"now": False}
    real_factory = store_module.STORES["qdrant"]

    def qdrant(settings_, dim):
        if not qdrant_up["now"]:
            return real_factory(settings_, dim)  # the real adapter: connection refused -> StoreUnavailable
        return server_store_or_none("qdrant", tmp_path, dim)

    monkeypatch.setitem(store_module.STORES, "qdrant", qdrant)
    monkeypatch.setattr(backend.app, "STORE_RETRY_S", 0.2)
    monkeypatch.setattr(backend.app, "create_embedder", lambda _settings: embedder)

    with TestClient(create_app(settings, llm=fake_llm)) as client:
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"  # alive: do not restart it
        ready = client.get("/ready")
        assert ready.status_code == 503 and "could not" in ready.json()["components"]["store"]["error"]
        for response in (
            client.get("/search", params={"q": "backups", "space_id": "ops"}),
            client.post("/ask", json={"q": "When do backups run?", "space_id": "ops"}),
            client.post("/documents", data={"space_id": "ops"}, files={"file": ("notes.md", b"# Backups\n\nNightly.")}),
            client.get("/jobs"),
        ):
            assert response.status_code == 503, response.text
            assert response.json()["error"]["type"] == "store_unavailable"
            assert response.json()["error"]["message"].startswith("starting:")

        qdrant_up["now"] = True
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "the backend never connected"
            time.sleep(0.1)
        upload = client.post("/documents", data={"space_id": "ops"}, files={"file": ("notes.md", b"# Backups\n\nBackups run nightly.")})
        assert upload.status_code == 201, upload.text
        assert client.get("/search", params={"q": "backups", "space_id": "ops"}).json()["results"]
        assert client.get("/health").json()["components"]["store"]["status"] == "ok"


def test_an_embedded_store_problem_still_stops_the_start(settings, embedder, fake_llm, monkeypatch):
    """Only a Qdrant server is waited for: a held embedded store is an error at start, as before."""
    monkeypatch.setattr(backend.app, "create_embedder", lambda _settings: embedder)
    holder = EdgeStore(settings.embedded_store_dir, embedder.dim)
    try:
        with pytest.raises(StoreLocked):
            with TestClient(create_app(settings, llm=fake_llm)):
                pass
    finally:
        holder.close()
