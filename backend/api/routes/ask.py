"""POST /ask: answer a question over a space, as JSON or as Server-Sent Events."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from backend.answers import AnswerEvent, AnswerStreamEvent
from backend.api.answer_guard import (
    ClientLeft,
    client_left_response,
    close,
    final_answer,
    next_event,
    until_disconnect,
    with_deadline,
)
from backend.api.deps import AdmissionDep, GrantDep, MetricsDep, RagDep
from backend.api.errors import error_body, unexpected
from backend.api.schemas import ERROR_RESPONSES, AskOut
from backend.api.streaming import NO_STORE, STREAM_HEADERS, sse_event
from backend.domain import validate_space
from backend.errors import AppError
from backend.observability.metrics import Metrics
from backend.rag import AskRequest

log = logging.getLogger(__name__)
router = APIRouter(tags=["ask"])


class AskBody(BaseModel):
    q: str = Field(..., description="The question.")
    space_id: str = Field(..., description="The space to answer from.")
    top_k: int = Field(5, description="How many chunks to retrieve (1..50); checked by RagService.ask.")
    stream: bool = Field(False, description="Answer as Server-Sent Events (also when Accept: text/event-stream).")
    max_tokens: int | None = Field(None, ge=1, le=32768, description="Longest answer, in tokens.")
    temperature: float | None = Field(None, ge=0, le=2)
    mode: Literal["dense", "sparse", "hybrid"] | None = Field(None, description="Retrieval mode; default SEARCH_MODE.")
    rerank: bool | None = Field(None, description="Rerank with RERANK_MODEL; default: when one is configured.")


# One Server-Sent Event of the answer stream.
SSE_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["token", "done", "error"]},
        "data": {"type": "string", "description": 'JSON: {"text"} for token, the JSON answer for done, {"error"} for error'},
    },
}
ASK_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    200: {"model": AskOut, "content": {"text/event-stream": {"schema": SSE_EVENT}},
          "description": "The answer as JSON, or as Server-Sent Events when streaming."},
    502: {"model": ERROR_RESPONSES[500]["model"]}, 504: {"model": ERROR_RESPONSES[500]["model"]},
}


@router.post("/ask", responses=ASK_RESPONSES)
async def ask(body: AskBody, rag: RagDep, grant: GrantDep, metrics: MetricsDep, admission: AdmissionDep, request: Request):
    """Retrieve from the space, answer with the configured engine, cite sources as [n].

    JSON: `{"answer", "sources": [{n, doc_id, path, chunk_index, page, score, text, cited}], "engine", "model",
    "usage", "timings": {retrieval_ms, ttft_ms, total_ms, check_ms}, "context", "grounded", "citations": [one claim
    check per sentence], "cited", "invalid_citations"}`.
    SSE: `token` events (`{"text"}`), then one `done` event with the JSON above; a failure after the
    answer started ends the stream with an `error` event (`{"error": {type, message}}`).
    The whole answer has ANSWER_TIMEOUT_S (504 answer_timeout, or an `error` event once streaming); a
    client that disconnects cancels its answer and the engine's request. Beyond ASK_MAX_IN_FLIGHT answers the
    request waits in the queue; a full queue, or ASK_QUEUE_TIMEOUT_S in it, is 503 with Retry-After.
    """
    grant.require(validate_space(body.space_id))
    ask_request = AskRequest(
        body.q, body.space_id, body.top_k, body.max_tokens, body.temperature, body.mode, body.rerank
    )
    events = with_deadline(admission.admit(rag.ask(ask_request)), rag.settings.answer_timeout_s)
    wants_stream = body.stream or "text/event-stream" in request.headers.get("accept", "")
    try:
        if not wants_stream:
            answer = await until_disconnect(request, final_answer(events))
            data = AskOut.from_answer(answer).body()
            metrics.observe_answer(data)
            return JSONResponse(data, headers=NO_STORE)
        # Pull the first event before answering: an error up to here (space not found, LLM down) still gets
        # its real status code as JSON instead of a 200 stream carrying an error.
        first = await until_disconnect(request, next_event(events))
    except ClientLeft:
        return client_left_response()
    finally:
        if not wants_stream:
            await close(events)
    return StreamingResponse(_stream(first, events, metrics), media_type="text/event-stream", headers=STREAM_HEADERS)


async def _stream(
    first: AnswerStreamEvent, events: AsyncGenerator[AnswerStreamEvent, None], metrics: Metrics
) -> AsyncIterator[bytes]:
    try:
        yield _sse(first, metrics)
        async for event in events:
            yield _sse(event, metrics)
    except AppError as exc:
        log.warning("answer stream failed after it started: %s", exc.error_type)
        metrics.observe_error(exc.error_type)
        yield sse_event("error", error_body(exc))
    except Exception as exc:  # the stream has started: the status cannot change any more, so say it in-band
        log.exception("answer stream failed")
        metrics.observe_error("internal_error")
        yield sse_event("error", error_body(unexpected(exc)))
    finally:
        # A client that disconnects closes this generator: close the engine's stream too, so it stops
        # generating tokens nobody will read.
        await events.aclose()


def _sse(event: AnswerStreamEvent, metrics: Metrics) -> bytes:
    """A `token` event, or the `done` event with the answer's JSON (observed in the metrics)."""
    if isinstance(event, AnswerEvent):
        data = AskOut.from_answer(event.answer).body()
        metrics.observe_answer(data)
        return sse_event("done", data)
    return sse_event("token", {"text": event.text})
