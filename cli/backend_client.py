"""A small HTTP client for a running backend (used by the CLI when the embedded store is held by it)."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable, Iterator

import httpx

from backend.errors import AppError, BackendUnreachable, Forbidden, StorageFull, StoreUnavailable, Unauthorized
from backend.llm.wire import SseEvents
from backend.settings import Settings

# Uploads of large batches take a while on slow links: allow minutes, but fail fast when nobody listens.
CONNECT_TIMEOUT_S = 5.0
UPLOAD_TIMEOUT_S = 900.0
# A job's event stream sends a keepalive every 15 s: silence for this long means the connection is gone.
EVENTS_READ_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.5
# The largest Server-Sent Event accepted from the backend: a job's final event lists every file of the job
# (a few hundred bytes each), so this is thousands of files; past it the stream is dropped and the job polled.
MAX_SSE_EVENT_BYTES = 16 << 20


class JobRefused(Exception):
    """The backend answered a job submission with a 4xx other than 401/403 (too large, bad name, ...)."""

    def __init__(self, status_code: int, error_type: str | None, message: str):
        super().__init__(message)
        self.status_code, self.error_type, self.message = status_code, error_type, message


class UploadCut(Exception):
    """The connection broke while the request was being sent (a backend refusing a body over its MAX_UPLOAD_MB
    answers 413 and closes before reading it, which the sender may only see as a broken connection)."""


def auth_headers(settings: Settings | None) -> dict[str, str]:
    """`Authorization: Bearer BACKEND_API_KEY` when the CLI has a key for the backend."""
    key = settings.backend_api_key.get_secret_value() if settings and settings.backend_api_key else ""
    return {"Authorization": f"Bearer {key}"} if key else {}


def discover_backend_url(settings: Settings) -> str | None:
    """BACKEND_URL if set, else the URL a backend registered in DATA_DIR/backend.json."""
    if settings.backend_url:
        return settings.backend_url
    try:
        return json.loads(settings.backend_registration_file.read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None


class BackendClient:
    """Queues files as ingestion jobs (POST /documents) and follows them; searches with GET /search."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers or {}, timeout=httpx.Timeout(UPLOAD_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        )

    def check(self) -> dict:
        try:
            response = self._http.get("/health")
        except httpx.HTTPError as exc:
            raise BackendUnreachable(f"no backend answers at {self.base_url}: {exc}") from exc
        return response.json()

    def submit_job(self, space_id: str, files: list[tuple[str, Path]]) -> dict:
        """POST the files as one ingestion job (202); returns its {job_id, url, events_url, ...}."""
        try:
            with ExitStack() as stack:
                parts = [
                    ("file", (Path(rel).name, stack.enter_context(open(path, "rb")), "application/octet-stream"))
                    for rel, path in files
                ]
                response = self._http.post(
                    "/documents", data={"space_id": space_id, "path": [rel for rel, _ in files], "async": "true"}, files=parts
                )
        except httpx.ConnectError as exc:
            raise BackendUnreachable(f"no backend answers at {self.base_url}: {exc}") from exc
        except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError) as exc:
            raise UploadCut(str(exc)) from exc
        except httpx.HTTPError as exc:
            raise BackendUnreachable(f"backend at {self.base_url} failed during an upload: {exc}") from exc
        if response.status_code == 202:
            return response.json()
        body = _json(response)
        error = body.get("error", {})
        self._raise_auth(response, body)
        if 400 <= response.status_code < 500:
            raise JobRefused(response.status_code, error.get("type"), error.get("message", response.text))
        raise _server_error(response, body)

    def follow_job(self, job_id: str) -> Iterator[tuple[str, dict]]:
        """The job's events: `progress` ({..., "file"}) per finished file, then `done` (the full job). Read from
        its Server-Sent Events; if that stream breaks, by polling GET /jobs/{id} (each poll a `progress` with
        the full job)."""
        try:
            with self._http.stream(
                "GET", f"/jobs/{job_id}/events", timeout=httpx.Timeout(EVENTS_READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
            ) as response:
                if response.status_code != 200:
                    response.read()
                    body = _json(response)
                    self._raise_auth(response, body)
                    raise _server_error(response, body)
                for event, data in parse_sse(response.iter_bytes()):
                    yield event, data
                    if event == "done":
                        return
        except (httpx.HTTPError, ValueError):
            pass  # the stream broke (or sent an event that is not JSON, or too large): the job goes on; poll it
        while True:
            try:
                response = self._http.get(f"/jobs/{job_id}")
            except httpx.HTTPError as exc:
                raise BackendUnreachable(f"lost the backend at {self.base_url} while following job {job_id}: {exc}") from exc
            body = _json(response)
            if not response.is_success:
                self._raise_auth(response, body)
                raise _server_error(response, body)
            if body["status"] not in ("queued", "running"):
                yield "done", body
                return
            yield "progress", body
            time.sleep(POLL_INTERVAL_S)

    def _raise_auth(self, response: httpx.Response, body: dict) -> None:
        if response.status_code in (401, 403):  # nothing will get through: stop the run, say why
            error_class = Unauthorized if response.status_code == 401 else Forbidden
            raise error_class(f"backend at {self.base_url}: {body.get('error', {}).get('message', response.text)} (BACKEND_API_KEY)")

    def search(self, q: str, space_id: str, top_k: int, mode: str) -> list[dict]:
        """GET /search results; a backend that rejects the query raises its error type as an AppError."""
        params: dict = {"q": q, "space_id": space_id, "top_k": top_k}
        if mode == "rerank":
            params.update(mode="hybrid", rerank="true")
        else:
            params["mode"] = mode
        try:
            response = self._http.get("/search", params=params)
        except httpx.HTTPError as exc:
            raise BackendUnreachable(f"no backend answers at {self.base_url}: {exc}") from exc
        body = response.json()
        if not response.is_success:
            error = AppError(body.get("error", {}).get("message", response.text))
            error.status_code, error.error_type = response.status_code, body.get("error", {}).get("type", "error")
            raise error
        return body["results"]

    def close(self) -> None:
        self._http.close()


def _json(response: httpx.Response) -> dict:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _server_error(response: httpx.Response, body: dict) -> AppError:
    """The backend's error as an AppError of its status and type (a full disk or a down store keep their class)."""
    error = body.get("error", {})
    error_type = error.get("type", "error")
    cls = {"storage_full": StorageFull, "store_unavailable": StoreUnavailable}.get(error_type, AppError)
    exc = cls(f"backend: {error.get('message', response.text[:300])}")
    exc.status_code, exc.error_type = response.status_code, error_type
    return exc


def parse_sse(chunks: Iterable[bytes], max_bytes: int = MAX_SSE_EVENT_BYTES) -> Iterator[tuple[str, dict]]:
    """(event, JSON data) pairs of a Server-Sent Events body given as byte chunks; comments (keepalives) are
    skipped. Linear in the bytes received, whatever the chunking (`SseEvents`); an event larger than
    `max_bytes` raises ReplyTooLarge (a ValueError), as does data that is not JSON (json's ValueError)."""
    splitter = SseEvents(max_bytes)
    for chunk in chunks:
        for block in splitter.feed(chunk):
            event, data = "message", []
            for line in block.decode("utf-8", "replace").split("\n"):
                if not line or line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
            if data:
                yield event, json.loads("\n".join(data))
