"""The free-space check before writing under DATA_DIR (the embedded store, the ingestion job spool).

Qdrant Edge keeps its files memory-mapped and dies of SIGBUS when a write finds the disk full, so whatever
writes on its disk checks first and refuses with `StorageFull` (507) while nothing has been written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from backend.errors import StorageFull

MB = 1024 * 1024


def ensure_free_space(directory: Path, needed: int, reserve: int, what: str) -> None:
    """StorageFull unless `needed` bytes fit on `directory`'s disk with `reserve` bytes (MIN_FREE_DISK_MB) left over."""
    free = shutil.disk_usage(directory).free
    if free - needed < reserve:
        raise StorageFull(
            f"not enough free disk space under {directory} to {what}: {free / MB:.0f} MB free, "
            f"{needed / MB:.1f} MB needed plus the MIN_FREE_DISK_MB reserve of {reserve / MB:.0f} MB; "
            "nothing was written. Free some space (or move DATA_DIR) and retry."
        )
