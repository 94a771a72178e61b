"""ASGI middleware around every request: its id, its metrics, its access-log line.

- Request id: the caller's `X-Request-ID` when it is a sane token (a proxy's or a client's id, so one
  request can be followed across services), else a fresh one; echoed in the response header and attached
  to every log line of the request (contextvar).
- Metrics: in-flight gauge, count and duration by route template and status. The duration runs until the
  response's last byte, so a streamed answer counts whole.
- One access line per request: method, route template, status, duration. Nothing from the URL's query or
  the body, which hold questions and document text.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from backend.observability.logs import request_id_var
from backend.observability.metrics import Metrics

log = logging.getLogger("backend.access")
REQUEST_ID_HEADER = b"x-request-id"
SANE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
# Probes and scrapes come every few seconds: count them, but do not fill the log with them.
QUIET_ROUTES = ("/health", "/ready", "/metrics")


def _route_of(scope: dict) -> str:
    route = scope.get("route")  # FastAPI puts the matched route into the scope
    return getattr(route, "path", None) or "unmatched"


class RequestContext:
    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER, b"")
        request_id = given.decode() if SANE_REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500  # if the app fails before it answers, the server sends a 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            route = _route_of(scope)
            self.metrics.observe_http(scope["method"], route, status, seconds)
            level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
            log.log(level, "%s %s %s %.1f ms", scope["method"], route, status, seconds * 1000,
                    extra={"method": scope["method"], "route": route, "status": status, "duration_ms": round(seconds * 1000, 2)})
            request_id_var.reset(token)
