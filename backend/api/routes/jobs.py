"""/jobs: the state and progress of asynchronous ingestion jobs (created by POST /documents).

A key sees the jobs of the spaces it covers; a job in another space answers 404 `job_not_found`, exactly
like an unknown id, so a key learns nothing (not even the file names) about other spaces' uploads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from backend.api.deps import GrantDep, JobsDep
from backend.api.schemas import ERROR_RESPONSES, JobList, JobOut
from backend.api.streaming import STREAM_HEADERS, sse_event
from backend.domain import validate_space
from backend.ingest.jobs import JobManager

router = APIRouter(tags=["jobs"])

# An SSE comment this often while nothing happens (a job waiting behind another), so proxies keep the stream.
KEEPALIVE_S = 15.0


# One Server-Sent Event of a job's progress stream.
SSE_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["progress", "done"]},
        "data": {"type": "string", "description": 'JSON: the job without "files" plus "file" (the file that just '
                 'finished; null in the first event) for progress, the full job for done'},
    },
}
EVENTS_RESPONSES = {
    **ERROR_RESPONSES,
    200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}, "description": "The job's progress as Server-Sent Events."},
}


@router.get("/jobs", response_model=JobList, responses=ERROR_RESPONSES)
def list_jobs(
    jobs: JobsDep, grant: GrantDep,
    space_id: str | None = Query(None, description="Only this space's jobs; default: every space the key covers."),
) -> dict:
    """The remembered jobs (the last 200, kept in memory until a restart), newest first, without their file lists."""
    if space_id is not None:
        grant.require(validate_space(space_id))
    return {"jobs": jobs.list(space_id, grant.spaces)}


@router.get("/jobs/{job_id}", response_model=JobOut, responses=ERROR_RESPONSES)
def get_job(jobs: JobsDep, grant: GrantDep, job_id: str) -> dict:
    """One job: status, progress (0..1), counts per outcome and every file's outcome."""
    return jobs.snapshot(job_id, grant.spaces)


@router.get("/jobs/{job_id}/events", responses=EVENTS_RESPONSES, response_class=StreamingResponse)
async def job_events(jobs: JobsDep, grant: GrantDep, job_id: str) -> StreamingResponse:
    """Server-Sent Events: `progress` at once with the current state and each time a file finishes, then one
    `done` with the full job (as GET /jobs/{id}); the stream ends after `done`. A finished job sends `done` only."""
    events, first = jobs.subscribe(job_id, grant.spaces)
    return StreamingResponse(
        _stream(jobs, job_id, events, first), media_type="text/event-stream", headers=STREAM_HEADERS
    )


async def _stream(
    jobs: JobManager, job_id: str, events: asyncio.Queue | None, first: tuple[str, dict]
) -> AsyncIterator[bytes]:
    try:
        yield sse_event(*first)
        if events is None:
            return
        while True:
            try:
                event, data = await asyncio.wait_for(events.get(), KEEPALIVE_S)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            yield sse_event(event, data)
            if event == "done":
                return
    finally:
        if events is not None:
            jobs.unsubscribe(job_id, events)
