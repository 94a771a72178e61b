"""The one place where errors become HTTP responses, in one of two dialects.

- `appliance` (every route but /v1): `{"error": {"type", "message"}}`;
- `openai` (the /v1 routes, for the OpenAI SDKs): `{"error": {"message", "type", "param", "code"}}`, where
  `type` is OpenAI's class of the status and `code` the appliance's error type.

`error_body` writes an AppError's body in either dialect, `error_response` the whole response (status,
no-store, the error's own headers) and `send_error` the same straight on the ASGI channel; the exception
handlers below, the /v1 routes, the request guard and `ErrorBarrier` all use them. Errors raised by the framework rather than the appliance (validation, Starlette's HTTP errors)
become an `HTTPError` first.

Then `ErrorBarrier`, the middleware around the app that

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
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.auth import GRANT_SCOPE_KEY, is_operator
from backend.errors import AppError
from backend.observability.metrics import record_error
from backend.redaction import hide_addresses, redact_text, redact_value

log = logging.getLogger(__name__)

# Error bodies are small; a larger one (never seen) is passed on unscrubbed rather than held in memory.
MAX_SCRUBBED_BODY = 256 * 1024


Dialect = Literal["appliance", "openai"]

OPENAI_PREFIX = "/v1/"
# OpenAI's error `type` by HTTP status; the SDKs pick their exception class from the status alone.
OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                      404: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
                      422: "invalid_request_error"}


class HTTPError(AppError):
    """An error the HTTP layer itself finds (a body that fails validation, an unknown path, a parameter /v1
    does not support): any status and type, and the request field at fault (`param`, shown in OpenAI's
    dialect)."""

    def __init__(self, status: int, error_type: str, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code, self.error_type, self.param, self.headers = status, error_type, param, headers


class Unexpected(AppError):
    """An unexpected exception, as answered: its class name only, the details in the server log."""


def unexpected(exc: BaseException, hint: str = "") -> Unexpected:
    """The 500 answered for `exc`: `unexpected <class>` and a hint where to look."""
    return Unexpected(f"unexpected {type(exc).__name__}{hint}")


def error_body(exc: AppError, dialect: Dialect = "appliance") -> dict:
    """The JSON error object for `exc` in the given dialect."""
    if dialect == "openai":
        status = exc.status_code
        kind = OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": exc.message, "type": kind, "param": getattr(exc, "param", None),
                          "code": exc.error_type}}
    return exc.to_dict()


def dialect_of(path: str) -> Dialect:
    """The error dialect of a path's API: OpenAI's under /v1/, the appliance's elsewhere."""
    return "openai" if path.startswith(OPENAI_PREFIX) else "appliance"


def error_response(request: Request, exc: AppError, dialect: Dialect = "appliance") -> JSONResponse:
    """`exc` answered: its status, its body in `dialect`, its headers; counted in the metrics, 5xx logged."""
    if exc.status_code >= 500:
        log.warning("request failed: %s %s -> %s %s", request.method, request.url.path, exc.status_code, exc.error_type)
    record_error(request.scope, exc.error_type)
    # Errors must never be cached by a proxy: a retry after the cause is fixed has to reach us.
    headers = {"Cache-Control": "no-store", **(exc.headers or {})}
    return JSONResponse(error_body(exc, dialect), status_code=exc.status_code, headers=headers)


async def send_error(scope, send, exc: AppError, close: bool = False) -> None:
    """Answer `exc` straight on the ASGI channel, in the dialect of the path's API (counted in the metrics):
    for the middleware, which answers outside the routes. `close`: tell the client the connection ends (a
    body it may still send is not read)."""
    record_error(scope, exc.error_type)
    body = json.dumps(error_body(exc, dialect_of(scope["path"]))).encode()
    headers = [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *((name.lower().encode(), value.encode()) for name, value in (exc.headers or {}).items()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install_error_handlers(app: FastAPI) -> None:
    """The exception handlers; app.py adds `ErrorBarrier` (unexpected errors, scrubbing) as a middleware."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form"))
            problems.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
        return error_response(request, HTTPError(422, "validation_error", "; ".join(problems) or "invalid request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        error = HTTPError(exc.status_code, error_type, str(exc.detail), headers=getattr(exc, "headers", None))
        return error_response(request, error, dialect_of(request.url.path))  # an unknown /v1/... path: OpenAI's


def scrub_error(body: dict, status: int, scope: dict) -> dict:
    """An error body as the caller may see it: credentials masked; for tenants, no internal address in a 5xx."""
    operator = is_operator(scope.get(GRANT_SCOPE_KEY))
    return redact_value(body, redact_text if operator or status < 500 else hide_addresses)


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
            await send_error(scope, send, unexpected(exc, "; see the server log (by the response's X-Request-ID)"))


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
