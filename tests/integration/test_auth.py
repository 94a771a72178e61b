"""API keys bound to spaces, over the real app, store and model (the LLM is the scriptable fake)."""

from __future__ import annotations

import logging

import pytest

from backend.auth import ApiKeys
from backend.settings import Settings

TEAM_KEY = "team-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
BOTH_KEY = "both-key-0123456789abcdef"


@pytest.fixture
def settings(tmp_path, model_cache) -> Settings:
    return Settings(
        _env_file=None, data_dir=tmp_path / "data", MODEL_CACHE_DIR=model_cache, chunk_tokens=128, chunk_overlap=24,
        api_keys=f"{TEAM_KEY}=team, {ADMIN_KEY}=*, {BOTH_KEY}=team|ops",
    )


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def upload(client, space, key, name="notes.md", body=b"# Notes\n\nBackups run nightly at 02:00."):
    return client.post("/documents", data={"space_id": space}, files={"file": (name, body)}, headers=bearer(key))


def assert_error(response, status, error_type):
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == error_type


def test_liveness_needs_no_key_and_everything_else_does(client):
    assert client.get("/health").status_code == 200
    for response in (
        client.get("/search", params={"q": "x", "space_id": "team"}),
        client.get("/documents", params={"space_id": "team"}),
        client.post("/ask", json={"q": "x", "space_id": "team"}),
        client.delete("/documents/abc"),
    ):
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert_error(client.get("/search", params={"q": "x", "space_id": "team"}, headers={"Authorization": TEAM_KEY}), 401, "unauthorized")
    assert_error(client.get("/search", params={"q": "x", "space_id": "team"}, headers=bearer("wrong-key-0123456789")), 401, "unauthorized")


def test_a_key_reaches_its_spaces_only(client, fake_llm):
    created = upload(client, "team", TEAM_KEY)
    assert created.status_code == 201
    doc_id = created.json()["doc_id"]
    assert client.get("/search", params={"q": "backups", "space_id": "team"}, headers=bearer(TEAM_KEY)).status_code == 200
    assert client.get(f"/documents/{doc_id}", headers=bearer(BOTH_KEY)).status_code == 200
    assert upload(client, "ops", ADMIN_KEY).status_code == 201
    ops_doc = client.get("/documents", params={"space_id": "ops"}, headers=bearer(ADMIN_KEY)).json()["documents"][0]

    assert_error(upload(client, "ops", TEAM_KEY), 403, "forbidden")
    assert_error(client.get("/search", params={"q": "x", "space_id": "ops"}, headers=bearer(TEAM_KEY)), 403, "forbidden")
    assert_error(client.get("/documents", params={"space_id": "ops"}, headers=bearer(TEAM_KEY)), 403, "forbidden")
    # Another space's document is "not found", as a missing one (ids derive from space and path: no oracle).
    assert_error(client.get(f"/documents/{ops_doc['doc_id']}", headers=bearer(TEAM_KEY)), 404, "document_not_found")
    assert_error(client.delete(f"/documents/{ops_doc['doc_id']}", headers=bearer(TEAM_KEY)), 404, "document_not_found")
    assert_error(client.post("/ask", json={"q": "When?", "space_id": "ops"}, headers=bearer(TEAM_KEY)), 403, "forbidden")
    assert fake_llm.calls == []  # refused before retrieval, let alone the engine

    assert client.get("/documents", params={"space_id": "ops"}, headers=bearer(BOTH_KEY)).status_code == 200
    assert client.delete(f"/documents/{ops_doc['doc_id']}", headers=bearer(ADMIN_KEY)).status_code == 200
    assert client.post("/ask", json={"q": "When do backups run?", "space_id": "team"}, headers=bearer(TEAM_KEY)).status_code == 200


def test_keys_never_reach_the_log(client, caplog):
    with caplog.at_level(logging.DEBUG):
        client.get("/search", params={"q": "x", "space_id": "team"}, headers=bearer("leaked-key-0123456789"))
        client.get("/search", params={"q": "x", "space_id": "ops"}, headers=bearer(TEAM_KEY))
    assert "leaked-key" not in caplog.text and TEAM_KEY not in caplog.text


def test_api_keys_parsing():
    keys = ApiKeys.parse(f" {TEAM_KEY}=team|ops , {ADMIN_KEY}=* ,")
    assert keys.authenticate(f"Bearer {TEAM_KEY}").spaces == frozenset({"team", "ops"})
    assert keys.authenticate(f"bearer {ADMIN_KEY}").spaces is None
    assert not ApiKeys.parse("").enabled and ApiKeys.parse("").authenticate(None).spaces is None
    for bad, message in ((f"{TEAM_KEY}", "not 'key=space1"), ("short=team", "shorter than 16"),
                         (f"{TEAM_KEY}=a,{TEAM_KEY}=b", "same key twice")):
        with pytest.raises(ValueError, match=message) as info:
            ApiKeys.parse(bad)
        assert TEAM_KEY not in str(info.value)


def test_settings_refuse_malformed_keys_without_echoing_them(tmp_path):
    with pytest.raises(ValueError, match="API_KEYS entry 1") as info:
        Settings(_env_file=None, data_dir=tmp_path, api_keys="secret-but-malformed-key")
    assert "secret-but-malformed" not in str(info.value)
    assert "secret" not in repr(Settings(_env_file=None, data_dir=tmp_path, api_keys=f"{TEAM_KEY}=team"))


def test_an_open_api_warns_at_start(tmp_path, model_cache, services, fake_llm, caplog):
    from fastapi.testclient import TestClient

    from backend.app import create_app

    open_settings = Settings(_env_file=None, data_dir=tmp_path / "open", MODEL_CACHE_DIR=model_cache)
    with caplog.at_level(logging.WARNING), TestClient(create_app(open_settings, services, llm=fake_llm)) as client:
        assert client.get("/documents", params={"space_id": "team"}).status_code == 200
    assert "API_KEYS is not set" in caplog.text
