"""Asynchronous ingestion jobs through the app: real model, Qdrant Edge on disk, real files."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.support.docs_factory import make_docx, make_pdf
from tests.support.http_api import assert_error, submit, wait_for

KEY_TEAM = "team-key-0123456789abcdef"
KEY_OTHER = "other-key-0123456789abcdef"
KEY_ALL = "admin-key-0123456789abcdef"

BROKEN_PDF = b"%PDF-1.4 garbage"


def job_files() -> list[tuple[str, bytes]]:
    return [
        ("guides/backup.md", b"# Backups\n\nBackups run nightly at 02:00 to the NAS in rack B.\n"),
        ("policy.pdf", make_pdf(["Security policy.", "Rotate API keys every 90 days."])),
        ("broken.pdf", BROKEN_PDF),
        ("onboarding.docx", make_docx([("Onboarding", "New engineers get a laptop on day one.")])),
        ("notes.txt", b"The GPU server has one RTX 6000 card with 96 GB of memory."),
        ("diagram.png", b"\x89PNG\r\n"),
    ]


def read_events(response) -> list[tuple[str, dict]]:
    events, event, data = [], None, []
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data.append(line.partition(":")[2].strip())
        elif line == "" and event:
            events.append((event, json.loads("\n".join(data))))
            event, data = None, []
    return events


def spooled(settings) -> list:
    root = settings.data_dir / "jobs"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def test_a_job_indexes_every_good_file_and_reports_the_broken_one(client, settings):
    files = job_files()  # once: a PDF or DOCX made again carries a new timestamp
    response = submit(client, files)
    assert response.status_code == 202, response.text
    accepted = response.json()
    job_id = accepted["job_id"]
    assert accepted == {
        "job_id": job_id, "status": "queued", "space_id": "team", "total": 6,
        "url": f"/jobs/{job_id}", "events_url": f"/jobs/{job_id}/events",
    }
    assert response.headers["location"] == f"/jobs/{job_id}"

    job = wait_for(client, job_id)
    assert job["status"] == "done"  # a broken file does not fail the job: counts.failed says it
    assert job["progress"] == 1.0 and job["processed"] == job["total"] == 6
    assert job["counts"] == {"added": 4, "replaced": 0, "unchanged": 0, "failed": 1, "skipped": 1}
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    outcomes = {f["path"]: f for f in job["files"]}
    assert list(outcomes) == [name for name, _ in files]  # in the order of the upload
    assert outcomes["broken.pdf"]["status"] == "failed" and outcomes["broken.pdf"]["error_type"] == "corrupt_document"
    assert "broken.pdf" in outcomes["broken.pdf"]["message"]
    assert outcomes["diagram.png"]["status"] == "skipped" and outcomes["diagram.png"]["error_type"] == "unsupported_file_type"
    assert outcomes["policy.pdf"]["status"] == "added" and outcomes["policy.pdf"]["chunks"] == 2 and outcomes["policy.pdf"]["doc_id"]

    for q, path in [("how often rotate API keys", "policy.pdf"), ("when do backups run", "guides/backup.md"),
                    ("laptop for new engineers", "onboarding.docx"), ("GPU server memory", "notes.txt")]:
        hits = client.get("/search", params={"q": q, "space_id": "team", "top_k": 1}).json()["results"]
        assert hits[0]["path"] == path, (q, hits)
    assert spooled(settings) == [], "spooled uploads must be deleted once processed"

    metrics = client.get("/metrics").text
    assert 'rag_documents_ingested_total{status="added"} 4.0' in metrics
    assert 'rag_documents_ingested_total{status="failed"} 1.0' in metrics

    listing = client.get("/jobs", params={"space_id": "team"}).json()["jobs"]
    assert [j["job_id"] for j in listing] == [job_id] and "files" not in listing[0]

    # The same files again: unchanged, one job, one async single file.
    again = wait_for(client, submit(client, files).json()["job_id"])
    assert again["counts"] == {"added": 0, "replaced": 0, "unchanged": 4, "failed": 1, "skipped": 1}
    single = submit(client, [("notes.txt", b"The GPU server now has two H200 cards.")], **{"async": "true"})
    assert single.status_code == 202
    one = wait_for(client, single.json()["job_id"])
    assert one["total"] == 1 and one["files"][0]["status"] == "replaced"
    assert [j["job_id"] for j in client.get("/jobs").json()["jobs"]][-1] == job_id  # newest first


def test_the_event_stream_sends_progress_per_file_then_done(client, services):
    gate = threading.Event()
    original = services.pipeline.ingest_many

    def gated(space_id, items):
        assert gate.wait(30)
        yield from original(space_id, items)

    services.pipeline.ingest_many = gated
    try:
        files = job_files()[:4]
        job_id = submit(client, files).json()["job_id"]
        threading.Timer(0.5, gate.set).start()  # the stream connects while the job waits
        with client.stream("GET", f"/jobs/{job_id}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = read_events(response)
    finally:
        services.pipeline.ingest_many = original
        gate.set()

    kinds = [kind for kind, _ in events]
    assert kinds == ["progress"] * 5 + ["done"], kinds
    first = events[0][1]
    assert first["processed"] == 0 and first["file"] is None and first["status"] in ("queued", "running")
    progress = [data["progress"] for _, data in events[1:5]]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert sorted(data["file"]["path"] for _, data in events[1:5]) == sorted(name for name, _ in files)
    failed = [data["file"] for _, data in events[1:5] if data["file"]["status"] == "failed"]
    assert [f["path"] for f in failed] == ["broken.pdf"] and failed[0]["error_type"] == "corrupt_document"
    done = events[-1][1]
    assert done["status"] == "done" and done["progress"] == 1.0 and len(done["files"]) == 4
    assert done == client.get(f"/jobs/{job_id}").json()

    # Connecting after the end: the final state at once.
    with client.stream("GET", f"/jobs/{job_id}/events") as late:
        assert read_events(late) == [("done", done)]


def test_unknown_jobs_are_404_json(client):
    assert_error(client.get("/jobs/0123456789abcdef0123456789abcdef"), 404, "job_not_found")
    assert_error(client.get("/jobs/nope/events"), 404, "job_not_found")
    assert_error(client.get("/jobs", params={"space_id": "bad space"}), 400, "invalid_space")


def test_upload_validation_errors_are_answered_at_once_not_queued(client, services, settings):
    two = [("a.txt", b"first"), ("b.txt", b"second")]
    assert_error(submit(client, two, space="no spaces!"), 400, "invalid_space")
    assert_error(submit(client, [("a.txt", b"x"), ("../../etc/passwd.txt", b"root")]), 400, "invalid_request")
    assert_error(submit(client, [("a.txt", b"x"), ("./a.txt", b"y")]), 400, "invalid_request")  # same document twice
    assert_error(submit(client, two, path="only-one.txt"), 400, "invalid_request")
    assert_error(client.post("/documents", data={"space_id": "team", "async": "true"}), 422, "validation_error")
    services.settings.max_upload_mb = 0.01  # 10 KiB
    assert_error(submit(client, [("a.txt", b"x"), ("big.txt", b"word " * 3000)]), 413, "file_too_large")
    together = submit(client, [("a.txt", b"w" * 6000), ("b.txt", b"w" * 6000)])
    assert_error(together, 413, "file_too_large")
    assert "together" in together.json()["error"]["message"]
    services.settings.max_upload_mb = 50
    services.settings.min_free_disk_mb = 1e12  # the spool shares the store's disk
    assert_error(submit(client, two), 507, "storage_full")
    services.settings.min_free_disk_mb = 0
    assert client.get("/jobs").json()["jobs"] == []
    assert spooled(settings) == []
    assert services.store.health()["points"] == 0


def test_logical_paths_come_from_the_path_fields_never_from_disk_names(client, settings):
    files = [("../../x.md", b"# Ports\n\nThe backend listens on 8000."), ("y.txt", b"Qdrant listens on 6333.")]
    job_id = submit(client, files, path=["ops/ports.md", "ops/qdrant.txt"]).json()["job_id"]
    job = wait_for(client, job_id)
    assert [(f["path"], f["status"]) for f in job["files"]] == [("ops/ports.md", "added"), ("ops/qdrant.txt", "added")]
    assert not (settings.data_dir.parent / "x.md").exists()


@pytest.fixture
def keyed_client(settings, services, fake_llm):
    from fastapi.testclient import TestClient

    from backend.app import create_app

    from pydantic import SecretStr

    settings.api_keys = SecretStr(f"{KEY_TEAM}=team,{KEY_OTHER}=other,{KEY_ALL}=*")
    with TestClient(create_app(settings, services, llm=fake_llm)) as test_client:
        yield test_client


def test_a_key_sees_only_the_jobs_of_its_spaces(keyed_client):
    team, other, admin = ({"Authorization": f"Bearer {k}"} for k in (KEY_TEAM, KEY_OTHER, KEY_ALL))
    assert_error(submit(keyed_client, job_files()[:2]), 401, "unauthorized")
    assert_error(submit(keyed_client, job_files()[:2], headers=other), 403, "forbidden")
    job_id = submit(keyed_client, job_files()[:2], headers=team).json()["job_id"]
    assert wait_for(keyed_client, job_id, headers=team)["counts"]["added"] == 2
    # Another space's key: the job does not exist for it (404, like an unknown id), and lists do not show it.
    assert_error(keyed_client.get(f"/jobs/{job_id}", headers=other), 404, "job_not_found")
    assert_error(keyed_client.get(f"/jobs/{job_id}/events", headers=other), 404, "job_not_found")
    assert keyed_client.get("/jobs", headers=other).json()["jobs"] == []
    assert_error(keyed_client.get("/jobs", params={"space_id": "team"}, headers=other), 403, "forbidden")
    assert_error(keyed_client.get(f"/jobs/{job_id}"), 401, "unauthorized")
    assert keyed_client.get(f"/jobs/{job_id}", headers=admin).json()["status"] == "done"
    assert [j["job_id"] for j in keyed_client.get("/jobs", headers=team).json()["jobs"]] == [job_id]


def test_a_job_folder_left_by_a_crash_is_removed_at_start(settings, services, fake_llm):
    from fastapi.testclient import TestClient

    from backend.app import create_app

    leftover = settings.data_dir / "jobs" / "0123abcd"
    leftover.mkdir(parents=True)
    (leftover / "00000.bin").write_bytes(b"half an upload")
    with TestClient(create_app(settings, services, llm=fake_llm)) as client:
        assert spooled(settings) == []
        assert client.get("/jobs").json()["jobs"] == []


def test_shutdown_commits_the_file_in_hand_and_interrupts_the_rest(settings, services, fake_llm):
    from fastapi.testclient import TestClient

    from backend.app import create_app

    app = create_app(settings, services, llm=fake_llm)
    original = services.pipeline.ingest_many

    def one_then_shutdown(space_id, items):
        def feed():
            it = iter(items)
            yield next(it)
            app.state.serving.runtime.jobs._stopping.wait(30)  # the backend begins to shut down with one file in hand
            yield from it

        yield from original(space_id, feed())

    services.pipeline.ingest_many = one_then_shutdown
    try:
        with TestClient(app) as client:
            first = submit(client, job_files()[:2]).json()["job_id"]
            second = submit(client, job_files()[3:5]).json()["job_id"]
            while client.get(f"/jobs/{first}").json()["status"] != "running":
                time.sleep(0.05)
        states = {job_id: app.state.serving.runtime.jobs.snapshot(job_id) for job_id in (first, second)}
    finally:
        services.pipeline.ingest_many = original
    a, b = states[first], states[second]
    assert a["status"] == "interrupted" and a["progress"] == 1.0
    assert [(f["path"], f["status"], f["error_type"]) for f in a["files"]] == [
        ("guides/backup.md", "added", None), ("policy.pdf", "failed", "interrupted")]
    assert b["status"] == "interrupted" and {f["error_type"] for f in b["files"]} == {"interrupted"}
    assert [d.path for d in services.index.list("team")] == ["guides/backup.md"]  # nothing half-written
    assert spooled(settings) == []
