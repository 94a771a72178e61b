"""Two bounds on every answer (POST /ask, /v1/chat/completions): its total time and its client's presence.

- `with_deadline` gives the whole answer — retrieval, prompt, every token — ANSWER_TIMEOUT_S. LLM_TIMEOUT_S
  only bounds the wait for the engine's next bytes, so an engine that keeps sending (a loop, a stream that
  never ends) was read for as long as it cared to send. Past the deadline the answer's generators are
  closed (which closes the engine's request) and AnswerTimeout is raised: a 504 JSON error before the first
  token, an SSE `error` event after it.
- `until_disconnect` runs a step of the answer while it watches the ASGI receive channel: when the client
  goes away, the step is cancelled (the engine's request with it) and ClientLeft is raised. A streamed
  answer needs it only until its first event: from then on Starlette's StreamingResponse listens for the
  disconnect itself and cancels the body, whose generators close the engine's request the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from backend.answers import Answer, AnswerEvent, AnswerStreamEvent
from backend.errors import AnswerTimeout

log = logging.getLogger(__name__)
T = TypeVar("T")

# The status logged (and "sent", to nobody) for an answer whose client left: nginx's "client closed request".
CLIENT_CLOSED_REQUEST = 499
# How long a cancelled answer may take to close its engine request before it is left to itself.
CANCEL_GRACE_S = 5.0


class ClientLeft(Exception):
    """The client disconnected while its answer was being prepared; the answer was cancelled."""


def with_deadline(events: AsyncGenerator[T, None], timeout_s: float) -> AsyncGenerator[T, None]:
    """`events`, cut off `timeout_s` seconds from now with AnswerTimeout (the deadline starts at this call,
    not at the first event pulled). `events` is closed however the iteration ends."""
    loop = asyncio.get_running_loop()
    return _bounded(events, loop.time() + timeout_s, timeout_s)


async def _bounded(events: AsyncGenerator[T, None], deadline: float, timeout_s: float) -> AsyncGenerator[T, None]:
    try:
        while True:
            limit = asyncio.timeout_at(deadline)
            try:
                async with limit:
                    event = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not limit.expired():
                    raise  # a TimeoutError of the answer's own, not the deadline's
                # The cancellation went through `events` (its generators ran their cleanup, the engine's
                # request included) before it surfaced here as TimeoutError.
                raise AnswerTimeout(
                    f"the answer took longer than ANSWER_TIMEOUT_S ({timeout_s:g} s) and was stopped"
                ) from None
            yield event
    finally:
        await events.aclose()


async def until_disconnect(request: Request, step: Awaitable[T]) -> T:
    """`await step`, unless the client disconnects first: then `step` is cancelled (and given up to
    CANCEL_GRACE_S to clean up) and ClientLeft is raised. Errors of `step` propagate unchanged.

    Reads the request's receive channel, so call it only once the body has been read (FastAPI reads it
    before the route runs)."""
    work = asyncio.ensure_future(step)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request's own task was cancelled (server shutdown): take the step along
        work.cancel()
        raise
    finally:
        watch.cancel()
    if work.done():
        return work.result()
    work.cancel()
    await asyncio.wait({work}, timeout=CANCEL_GRACE_S)
    if not work.done():
        log.warning("a cancelled answer did not finish closing within %g s; left to finish by itself", CANCEL_GRACE_S)
    elif not work.cancelled() and work.exception() is not None:
        log.debug("a cancelled answer failed while closing: %r", work.exception())
    raise ClientLeft("the client disconnected before its answer was ready")


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def client_left_response() -> Response:
    """What the route returns for a client that left: nobody reads it, but the access log and the metrics
    record the request as 499 rather than as an error of the server."""
    log.info("the client left before its answer was ready; the answer was cancelled")
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def close(events: AsyncGenerator) -> None:
    """Close the answer's generators, unless a cancelled step still runs them (it closes them itself)."""
    if not getattr(events, "ag_running", False):
        await events.aclose()


async def next_event(events: AsyncIterator[T]) -> T:
    """The answer's next event, as a coroutine (what `until_disconnect` runs as a task)."""
    return await anext(events)


async def final_answer(events: AsyncIterator[AnswerStreamEvent]) -> Answer:
    """The answer of the stream's AnswerEvent (the tokens before it are not needed for a JSON reply)."""
    async for event in events:
        if isinstance(event, AnswerEvent):
            return event.answer
    raise RuntimeError("the answer stream ended without a final event")
