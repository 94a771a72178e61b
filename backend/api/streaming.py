"""One way to write Server-Sent Events, and the headers every uncached or streamed answer carries."""

from __future__ import annotations

import json
from typing import Any

from fastapi.sse import format_sse_event

# Answers, job states and health depend on the moment they were asked for: no cache may keep them.
NO_STORE = {"Cache-Control": "no-store"}
# A stream also tells buffering proxies (nginx) to pass each event on as it comes.
STREAM_HEADERS = {**NO_STORE, "X-Accel-Buffering": "no"}


def sse_event(event: str | None, data: Any) -> bytes:
    """One SSE frame: `event: <event>` and `data: <data as JSON>` (non-ASCII kept as is). Without an event
    name (OpenAI's streams), only the `data:` line."""
    return format_sse_event(event=event, data_str=json.dumps(data, ensure_ascii=False))
