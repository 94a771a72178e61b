"""How much ingestion work one space may have in flight: a counter per space, refused past its limit.

Synchronous uploads hold a slot while they are parsed, embedded and committed; past INGEST_MAX_PER_SPACE
slots the next one is refused at once with 429 `ingest_busy` (Retry-After) instead of queueing a request
thread, a parse worker and an embedding behind the others. Other spaces are not affected.

Asynchronous jobs take no slot: one worker thread runs them one file at a time for every space together,
so however many are queued they add one file in flight, and their queue is bounded on its own (JOBS_KEPT,
503 `job_queue_full`). Counting them here would answer a space's synchronous uploads 429 for as long as
one of its large jobs runs, and refuse the CLI's folder ingest, which keeps two jobs in flight.
"""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from backend.errors import IngestBusy


class SpaceSlots:
    """Per-space counters of ingests in flight (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: Counter[str] = Counter()

    @contextmanager
    def hold(self, space_id: str, limit: int) -> Iterator[None]:
        """Hold one of the space's `limit` slots for the block; `IngestBusy` at once when none is free."""
        with self._lock:
            if self._busy[space_id] >= limit:
                raise IngestBusy(
                    f"space {space_id!r} already has {limit} uploads being indexed (INGEST_MAX_PER_SPACE); "
                    "retry when they are done, or send several files in one request (an ingestion job)"
                )
            self._busy[space_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy[space_id] -= 1
                if not self._busy[space_id]:
                    del self._busy[space_id]

    def in_flight(self, space_id: str) -> int:
        """Slots the space holds now."""
        with self._lock:
            return self._busy[space_id]
