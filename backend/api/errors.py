"""The one place where errors become HTTP responses: always JSON `{"error": {"type", "message"}}`.

Two parts: the exception handlers (the AppError family, validation, Starlette's HTTP errors), and
`ErrorBarrier`, the middleware around the app that

- answers an unexpected exception with the 500 JSON itself and keeps the connection: Starlette's
  ServerErrorMiddleware re-raises after sending its 500, and uvicorn then drops the keep-alive connection
  (a client's next request on it failed with a reset);
- scrubs every error body on its way out, whoever wrote it (these handlers, the /v1 routes' OpenAI-shaped
  errors, the request guard): credentials are always masked, and internal addresses (URLs, host:port) are
  hidden from tenants' 5xx errors, which come from dependencies (the engine, Qdrant). Operators (a '*' key,
  or API_KEYS unset) see redacted URLs as diagnostics.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.api.request_guard import send_error
from backend.auth import GRANT_SCOPE_KEY, is_operator
from backend.errors import AppError
from backend.observability.metrics import record_error
from backend.redaction import hide_addresses, redact_text, redact_value

log = logging.getLogger(__name__)

# Error bodies are small; a larger one (never seen) is passed on unscrubbed rather than held in memory.
MAX_SCRUBBED_BODY = 256 * 1024


def error_response(request: Request, status: int, error_type: str, message: str, headers: dict | None = None) -> JSONResponse:
    record_error(request.scope, error_type)
    # Errors must never be cached by a proxy: a retry after the cause is fixed has to reach us.
    merged = {"Cache-Control": "no-store", **(headers or {})}
    return JSONResponse({"error": {"type": error_type, "message": message}}, status_code=status, headers=merged)


def install_error_handlers(app: FastAPI) -> None:
    """The exception handlers; app.py adds `ErrorBarrier` (unexpected errors, scrubbing) as a middleware."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        if exc.status_code >= 500:
            log.warning("request failed: %s %s -> %s %s", request.method, request.url.path, exc.status_code, exc.error_type)
        return error_response(request, exc.status_code, exc.error_type, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form"))
            problems.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
        return error_response(request, 422, "validation_error", "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, error_type, str(exc.detail), getattr(exc, "headers", None))


def scrub_error(body: dict, status: int, scope: dict) -> dict:
    """An error body as the caller may see it: credentials masked; for tenants, no internal address in a 5xx."""
    operator = is_operator(scope.get(GRANT_SCOPE_KEY))
    return redact_value(body, redact_text if operator or status < 500 else hide_addresses)


class _Internal(AppError):
    """An unexpected exception, as answered: details only in the server log."""


class ErrorBarrier:
    """Pure ASGI middleware: unexpected exceptions become the 500 JSON on a connection that stays usable;
    error bodies are scrubbed (`scrub_error`)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False
        held: dict | None = None  # an error response's start, held until its body is scrubbed
        chunks: list[bytes] = []

        async def scrubbing_send(message):
            nonlocal started, held
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 400 and _is_json(message):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    if sum(map(len, chunks)) <= MAX_SCRUBBED_BODY:
                        return
                    start, held = held, None
                    await send(start)
                    await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
                    return
                start, held = held, None
                await _send_scrubbed(send, start, b"".join(chunks), scope)
                return
            await send(message)

        try:
            await self.app(scope, receive, scrubbing_send)
        except Exception as exc:
            if started:
                raise  # part of a response went out: only closing the connection can tell the client
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            error = _Internal(f"unexpected {type(exc).__name__}; see the server log (by the response's X-Request-ID)")
            await send_error(scope, send, error)


def _is_json(start: dict) -> bool:
    for name, value in start.get("headers") or []:
        if name.lower() == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json"
    return False


async def _send_scrubbed(send, start: dict, raw: bytes, scope: dict) -> None:
    try:
        body = json.dumps(scrub_error(json.loads(raw), start["status"], scope)).encode()
    except ValueError:  # not JSON after all: scrubbed as text
        body = redact_text(raw.decode("utf-8", "replace")).encode()
    headers = [(n, v) for n, v in start.get("headers") or [] if n.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body})
