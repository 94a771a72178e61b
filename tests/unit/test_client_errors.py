"""cli.client turns a backend's error reply back into the AppError it raised (backend.errors.from_reply), and the
CLIs' exit codes follow from that class (backend.errors.exit_code_for)."""

from __future__ import annotations

import httpx
import pytest

from backend.errors import (
    EXIT_AUTH, EXIT_FILES_FAILED, EXIT_LLM, EXIT_STORE, EXIT_UNREACHABLE, AppError, BackendUnreachable, Forbidden,
    IngestBusy, LLMUnavailable, SpaceNotFound, StorageFull, StoreUnavailable, Unauthorized, exit_code_for,
)
from cli.client import BackendClient, error_from_response


def reply(status: int, body: dict | None = None, text: str = "", headers: dict | None = None) -> httpx.Response:
    if body is not None:
        return httpx.Response(status, json=body, headers=headers)
    return httpx.Response(status, text=text, headers=headers)


@pytest.mark.parametrize("status, error_type, cls, code", [
    (507, "storage_full", StorageFull, EXIT_STORE),
    (503, "store_unavailable", StoreUnavailable, EXIT_STORE),
    (503, "llm_unavailable", LLMUnavailable, EXIT_LLM),
    (401, "unauthorized", Unauthorized, EXIT_AUTH),
    (403, "forbidden", Forbidden, EXIT_AUTH),
    (404, "space_not_found", SpaceNotFound, EXIT_FILES_FAILED),
])
def test_an_error_reply_becomes_the_class_the_backend_raised(status, error_type, cls, code):
    exc = error_from_response(reply(status, {"error": {"type": error_type, "message": "as the server said"}}))
    assert type(exc) is cls and exc.message == "as the server said"
    assert (exc.status_code, exc.error_type, exit_code_for(exc)) == (status, error_type, code)


def test_an_unknown_or_missing_type_keeps_the_status_and_the_reply_headers():
    unknown = error_from_response(reply(418, {"error": {"type": "teapot", "message": "no"}}))
    assert type(unknown) is AppError and (unknown.status_code, unknown.error_type) == (418, "teapot")
    page = error_from_response(reply(502, text="<html>bad gateway</html>"))
    assert type(page) is AppError and page.error_type == "http_502" and "bad gateway" in page.message
    assert type(error_from_response(reply(401, text="denied"))) is Unauthorized
    busy = error_from_response(reply(429, {"error": {"type": "ingest_busy", "message": "wait"}}, headers={"Retry-After": "2"}))
    assert type(busy) is IngestBusy and busy.headers == {"Retry-After": "2"}  # the server's wait, not the class default
    assert error_from_response(reply(429, {"error": {"type": "ingest_busy", "message": "wait"}})).headers is None


def test_no_reply_is_backend_unreachable_with_its_cause():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = BackendClient("http://127.0.0.1:9", http=httpx.Client(transport=httpx.MockTransport(refuse)))
    with pytest.raises(BackendUnreachable, match="no backend answers at http://127.0.0.1:9") as info:
        client.health()
    assert isinstance(info.value.__cause__, httpx.ConnectError) and exit_code_for(info.value) == EXIT_UNREACHABLE
