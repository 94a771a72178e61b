"""Incidents of the embedding worker processes in this process: counted where they happen (the workers' parent,
backend/retrieval/embedders/worker.py), read by /metrics (rag_embed_worker_crashes_total) and /health.

Process-wide, like process_*: the workers belong to this process, whichever app instance started them.
"""

from __future__ import annotations

import threading
from collections import Counter

# A worker per role: queries and document batches never wait for each other.
ROLES = ("query", "document")

_crashes: Counter[tuple[str, str]] = Counter()
_crashes_lock = threading.Lock()


def crash_counts() -> dict[tuple[str, str], int]:
    """Worker incidents in this process so far: (role, reason) -> count; reason "died" (the process exited or was
    killed) or "hung" (it stayed silent past the call's timeout, and was killed)."""
    with _crashes_lock:
        return dict(_crashes)


def count_crash(role: str, reason: str) -> None:
    """Count one incident of the `role` worker."""
    with _crashes_lock:
        _crashes[(role, reason)] += 1
