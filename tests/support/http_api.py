"""Calls to the backend's HTTP API through a test client, and checks of what it answers: shared by the
integration tests so that no test module imports another."""

from __future__ import annotations

import json
import time


def upload(client, name: str, data: bytes, space="team", path=None):
    """POST /documents with one file (synchronous indexing), optionally under a logical path."""
    form = {"space_id": space, **({"path": path} if path else {})}
    return client.post("/documents", data=form, files={"file": (name, data, "application/octet-stream")})


def submit(client, files, space="team", headers=None, **form):
    """POST /documents with several (name, bytes) files: the upload becomes an ingest job."""
    parts = [("file", (name, data, "application/octet-stream")) for name, data in files]
    return client.post("/documents", data={"space_id": space, **form}, files=parts, headers=headers or {})


def wait_for(client, job_id: str, headers=None, timeout_s: float = 120) -> dict:
    """The job's body once it is neither queued nor running; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/jobs/{job_id}", headers=headers or {}).json()
        if body["status"] not in ("queued", "running"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def assert_error(response, status: int, error_type: str):
    """The API's error shape, exactly: {"error": {"type", "message", ...}}, never cached."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["type"] == error_type and body["error"]["message"]
    assert response.headers["cache-control"] == "no-store"


def sse_events(text: str) -> list[tuple[str, dict]]:
    """(event, data) of each event of a whole server-sent-events body (every event named)."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields["event"], json.loads(fields["data"])))
    return events
