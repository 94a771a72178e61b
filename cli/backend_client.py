"""A small HTTP client for a running backend (used by the CLI when the embedded store is held by it)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from backend.errors import AppError, BackendUnreachable, Forbidden, Unauthorized
from backend.ingest.pipeline import IngestResult
from backend.settings import Settings

# Uploads of large files are embedded while we wait: allow minutes, but fail fast when nobody listens.
CONNECT_TIMEOUT_S = 5.0
UPLOAD_TIMEOUT_S = 900.0


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
    """Uploads files to POST /documents; searches with GET /search."""

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

    def upload(self, space_id: str, rel_path: str, file: Path) -> IngestResult:
        try:
            with open(file, "rb") as handle:
                response = self._http.post(
                    "/documents",
                    data={"space_id": space_id, "path": rel_path},
                    files={"file": (file.name, handle, "application/octet-stream")},
                )
        except OSError as exc:
            return IngestResult(rel_path, "failed", error_type="io_error", message=f"{rel_path}: {exc}")
        except httpx.HTTPError as exc:
            raise BackendUnreachable(f"backend at {self.base_url} failed during upload of {rel_path}: {exc}") from exc
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code in (401, 403):  # no file will get through: stop the run, say why
            error_class = Unauthorized if response.status_code == 401 else Forbidden
            raise error_class(f"backend at {self.base_url}: {body.get('error', {}).get('message', response.text)} (BACKEND_API_KEY)")
        if response.is_success:
            return IngestResult(rel_path, body["status"], body.get("doc_id"), body.get("chunks", 0))
        error = body.get("error", {})
        status = "skipped" if response.status_code == 415 else "failed"
        return IngestResult(rel_path, status, error_type=error.get("type"), message=error.get("message", response.text))

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
