"""How a failed request is named in a report's `error_types`: "<status> <type>" for an error reply (e.g.
"503 llm_unavailable", `http_<status>` when the body names no type), "sse <type>" for an error event after the
stream started (named where the stream is read), "incomplete_stream", "timeout", "connect_error",
"connection_broken", another httpx error's class name, or "bad_response" for a reply that breaks the protocol."""

from __future__ import annotations

import json

import httpx

from backend.errors import AppError, BackendUnreachable


def reply_error_type(status: int, error_type: str | None) -> str:
    """An error reply's name: "<status> <type>", or `http_<status>` without a type."""
    return f"{status} {error_type}" if error_type else f"http_{status}"


def reply_type(exc: AppError) -> str | None:
    """The `error.type` an error reply named (None when its body named none: the client calls it http_<status>)."""
    return None if exc.error_type == f"http_{exc.status_code}" else exc.error_type


def error_type_of(exc: BaseException) -> str:
    """The name of a request's failure, from what the client raised (the backend client's errors included)."""
    if isinstance(exc, BackendUnreachable) and isinstance(exc.__cause__, httpx.HTTPError):
        exc = exc.__cause__  # no reply: how the transport failed is the figure
    elif isinstance(exc, AppError):  # an error reply, turned into its class by the client
        return reply_error_type(exc.status_code, reply_type(exc))
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection_broken"
    if isinstance(exc, httpx.HTTPError):
        return type(exc).__name__
    return "bad_response"  # a reply that does not parse as the protocol says


def body_error_type(body: bytes | str) -> str | None:
    """The `type` of an error body: the appliance's {"error": {"type"}}, or vLLM's {"object": "error", "type"}."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    inner = parsed.get("error", parsed) if isinstance(parsed, dict) else None
    return str(inner["type"]) if isinstance(inner, dict) and inner.get("type") else None


def body_error_message(body: bytes) -> str:
    """The `message` of an error body ("" without one; the start of a body that is not JSON)."""
    try:
        parsed = json.loads(body)
        inner = parsed.get("error", parsed) if isinstance(parsed, dict) else {}
        return str(inner.get("message") or "") if isinstance(inner, dict) else ""
    except ValueError:
        return body.decode("utf-8", "replace")[:200]
