"""What is checked before a request's body is read: the API key first, then the body's size.

Starlette reads and parses a body (JSON into Python objects, multipart into spooled files) before a route and
its dependencies run, so a check there comes after the bytes were received and the work was done: against the
unguarded app an unauthenticated 1 GB body to /ask was read and parsed (+3 GB RSS) before its 401. This pure
ASGI middleware runs before any of that:

1. Authentication. With API_KEYS set, a request without a known key is answered 401 before one body byte is
   read, except the paths that hold no data: the probes (/health, /ready), the console's static files and the
   API's own description (/docs, /openapi.json). The grant is left in the scope (`GRANT_SCOPE_KEY`) and the
   routes' dependency reuses it: one authentication per request. Which spaces a key covers is still checked
   by the routes, which know the space.
2. Size. An upload (POST /documents) may carry MAX_UPLOAD_MB plus the multipart framing, every other request
   MAX_REQUEST_KB. A declared Content-Length over the limit is answered 413 at once; otherwise (chunked bodies
   too) the body is counted as it arrives and reading stops at the limit. The upload route still checks each
   file's exact size.

Refusals are in the error shape of the route (OpenAI's under /v1) and, when a body may still be on its way,
close the connection: the server would otherwise read and drop the rest of it.
"""

from __future__ import annotations

from typing import Callable

from backend.api.errors import send_error
from backend.auth import GRANT_SCOPE_KEY, OPEN, ApiKeys
from backend.errors import AppError, FileTooLarge, RequestTooLarge, Unauthorized

# Room for the multipart framing and the small form fields around the files of an upload.
MULTIPART_ALLOWANCE = 64 * 1024
UPLOAD_ROUTES = frozenset({("POST", "/documents")})
# Paths that answer without a key (GET/HEAD only): they hold no data.
OPEN_PATHS = frozenset({"/health", "/ready", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
OPEN_PREFIXES = ("/console/",)


def is_open(method: str, path: str) -> bool:
    """Whether this request may come without an API key."""
    return method in ("GET", "HEAD") and (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES))


class _BodyTooLarge(Exception):
    """Raised into the app from `receive` once the body passed its limit (the app's own error is replaced)."""


class RequestGuard:
    """Pure ASGI middleware; the callables are read per request (tests change limits and keys on a live app)."""

    def __init__(self, app, api_keys: Callable[[], ApiKeys], upload_bytes: Callable[[], int], request_bytes: Callable[[], int]):
        self.app = app
        self.api_keys = api_keys
        self.upload_bytes = upload_bytes
        self.request_bytes = request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        headers = _headers(scope)
        may_have_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers

        keys = self.api_keys()
        if keys.enabled:
            try:
                grant = keys.authenticate(headers.get(b"authorization", b"").decode("latin-1") or None)
            except Unauthorized as exc:
                if not is_open(method, path):
                    return await send_error(scope, send, exc, close=may_have_body)
                grant = None  # an anonymous probe: served, without operator diagnostics
        else:
            grant = OPEN
        scope[GRANT_SCOPE_KEY] = grant

        upload = (method, path) in UPLOAD_ROUTES
        limit = self.upload_bytes() if upload else self.request_bytes()
        allowed = limit + (MULTIPART_ALLOWANCE if upload else 0)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > allowed:
            return await send_error(scope, send, _too_large(upload, limit), close=True)
        if not may_have_body:
            return await self.app(scope, receive, send)

        received = 0
        exceeded = False
        started = False

        async def counting_receive():
            nonlocal received, exceeded
            if exceeded:  # the app asked again after the refusal: nothing more is read
                raise _BodyTooLarge()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > allowed:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded:
                # The framework turned the aborted read into an error response of its own: ours goes instead, once.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await send_error(scope, send, _too_large(upload, limit), close=True)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            if not started:
                await send_error(scope, send, _too_large(upload, limit), close=True)


def _headers(scope) -> dict[bytes, bytes]:
    """The request's headers by lower-case name; the first of repeated ones (no later copy overrides a key)."""
    found: dict[bytes, bytes] = {}
    for name, value in scope.get("headers") or []:
        found.setdefault(name.lower(), value)
    return found


def _too_large(upload: bool, limit: int) -> AppError:
    if upload:
        return FileTooLarge(f"the upload is larger than MAX_UPLOAD_MB ({limit / 1048576:g} MB); nothing was stored")
    return RequestTooLarge(f"the request body is larger than MAX_REQUEST_KB ({limit // 1024} KB)")
