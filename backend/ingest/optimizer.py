"""Optimisation of the store after writes: Qdrant Edge has no optimizer of its own, so whoever writes asks for one.

Every write of the ingest side (a commit that added or replaced a document, a delete) calls `schedule()`; the
pipeline does it through its `on_write` hook, so the API, the ingestion jobs and the CLI share the rule. In
the server a background thread runs `store.optimize()` once the writes pause; a command-line run, which has
no such thread, runs the pending optimisation itself before it closes the store (`optimize_now()`).
"""

from __future__ import annotations

import logging
import threading

from backend.errors import StorageFull
from backend.retrieval.stores.base import VectorStore

log = logging.getLogger(__name__)

# Wait this long after the last write before optimising, so a burst of uploads triggers one run.
OPTIMIZE_DEBOUNCE_S = 2.0
# How long stop() waits for an optimisation in progress (a large segment merge takes minutes).
STOP_WAIT_S = 600


class BackgroundOptimizer:
    """Runs `store.optimize()` in a background thread after writes."""

    def __init__(self, store: VectorStore, debounce_s: float = OPTIMIZE_DEBOUNCE_S):
        self.store = store
        self.debounce_s = debounce_s
        self._wake = threading.Event()  # set: a write waits for its optimisation
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the background thread (nothing when it already runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="store-optimizer", daemon=True)
        self._thread.start()

    def schedule(self) -> None:
        """A write happened: optimise once the writes pause (the background thread), or at `optimize_now()`."""
        self._wake.set()

    @property
    def pending(self) -> bool:
        """Whether a write waits for its optimisation."""
        return self._wake.is_set()

    def optimize_now(self) -> bool:
        """Run the pending optimisation in the caller's thread (a CLI without the background thread); False when
        none was pending. The store's errors (StorageFull, ...) reach the caller."""
        if not self._wake.is_set():
            return False
        self._wake.clear()
        self.store.optimize()
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            while self._wake.is_set() and not self._stop.is_set():
                self._wake.clear()
                self._stop.wait(self.debounce_s)  # more writes in this window restart the wait
            if self._stop.is_set():
                return
            try:
                self.store.optimize()
            except StorageFull as exc:  # searches still work, only slower; the next write retries
                log.warning("store optimisation skipped: %s", exc.message)
            except Exception:  # an optimisation failure must not kill the thread; it is retried next time
                log.exception("store optimisation failed")

    def stop(self) -> None:
        """Stop the background thread (a pending optimisation is dropped: the next start runs it)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_WAIT_S)
