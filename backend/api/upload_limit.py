"""Refuse an upload larger than MAX_UPLOAD_MB while it arrives, not after it was spooled to disk.

Starlette parses a multipart body completely (spooling files to temporary storage) before a route
runs, so a check in the route comes after the bytes were received and written. This ASGI middleware
answers 413 at once when the declared Content-Length is already too large, and otherwise counts the
body as it streams in and stops reading at the limit. The route still checks the file's exact size.
"""

from __future__ import annotations

import json
from typing import Callable

from backend.observability.metrics import record_error

# Room for the multipart framing and the small form fields around the file.
MULTIPART_ALLOWANCE = 64 * 1024
UPLOAD_PATHS = ("/documents",)


class _BodyTooLarge(Exception):
    pass


class UploadSizeLimit:
    """Pure ASGI middleware for POST uploads; `max_bytes()` is read per request (settings can change in tests)."""

    def __init__(self, app, max_bytes: Callable[[], int]):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in UPLOAD_PATHS:
            return await self.app(scope, receive, send)
        limit = self.max_bytes()
        allowed = limit + MULTIPART_ALLOWANCE
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > allowed:
            return await _refuse(scope, send, limit)

        received = 0
        exceeded = False
        started = False

        async def counting_receive():
            nonlocal received, exceeded
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
                # The framework turned the aborted read into its own error response: send ours instead, once.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _refuse(scope, send, limit)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            if not started:
                await _refuse(scope, send, limit)


async def _refuse(scope, send, limit: int) -> None:
    record_error(scope, "file_too_large")
    body = json.dumps({"error": {"type": "file_too_large", "message": (
        f"the upload is larger than MAX_UPLOAD_MB ({limit / 1048576:g} MB); nothing was stored"
    )}}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body})
