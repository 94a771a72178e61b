"""The one place where errors become HTTP responses: always JSON `{"error": {"type", "message"}}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.errors import AppError
from backend.observability.metrics import record_error

log = logging.getLogger(__name__)


def error_response(request: Request, status: int, error_type: str, message: str, headers: dict | None = None) -> JSONResponse:
    record_error(request.scope, error_type)
    # Errors must never be cached by a proxy: a retry after the cause is fixed has to reach us.
    merged = {"Cache-Control": "no-store", **(headers or {})}
    return JSONResponse({"error": {"type": error_type, "message": message}}, status_code=status, headers=merged)


def install_error_handlers(app: FastAPI) -> None:
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

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal_error", f"unexpected {type(exc).__name__}; see the server log")
