"""Asynchronous ingestion jobs: uploads spooled under DATA_DIR/jobs and indexed by one background worker.

`POST /documents` with several files (or `async=true`) copies each file to `DATA_DIR/jobs/<job id>/<n>.bin`
(generated names: the client's file name is only the document's logical path, never a path on disk) and
queues a `Job`. One worker thread runs the jobs one after another, first in first out: ingestion is
CPU-bound and the embedded store has one writer. It feeds a job's files to `IngestPipeline.ingest_many`, so
small files share embedding batches, and deletes each spooled file as soon as its outcome is known. A broken
file is reported (`failed`, with the parser's reason) and the others go on; the job then ends `done` with
`counts.failed` > 0 (there is no separate "done with errors" status: the counts say it).

Job states: queued -> running -> done | failed (the worker itself hit an unexpected error) | interrupted
(the backend shut down first: the files already being indexed are committed, the others are reported as
`failed` with `error_type` "interrupted"). Files: queued -> running -> added | replaced | unchanged |
failed | skipped.

Job state lives in memory: the last `JOBS_KEPT` jobs are kept and a restart forgets them (the documents they
indexed stay). A job folder left by a crash is removed when the next worker starts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import shutil
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from backend.errors import JobNotFound, JobQueueFull
from backend.ingest.pipeline import IngestPipeline, IngestResult

log = logging.getLogger(__name__)

# How many jobs are remembered (finished ones are forgotten oldest first); also the most unfinished jobs.
JOBS_KEPT = 200
# The most files in one job (one request).
MAX_JOB_FILES = 1000
FILE_OUTCOMES = ("added", "replaced", "unchanged", "failed", "skipped")
FINISHED_JOB = ("done", "failed", "interrupted")
COPY_BLOCK = 1024 * 1024


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class JobFile:
    """One file of a job: its logical path, where it is spooled until processed, and its outcome."""

    path: str
    spool: Path | None
    status: str = "queued"
    doc_id: str | None = None
    chunks: int = 0
    error_type: str | None = None
    message: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FILE_OUTCOMES

    def to_dict(self) -> dict:
        return {
            "path": self.path, "status": self.status, "doc_id": self.doc_id, "chunks": self.chunks,
            "error_type": self.error_type, "message": self.message,
        }


class Job:
    """One upload's files and their progress. Mutated by the worker under the manager's lock."""

    def __init__(self, job_id: str, space_id: str, folder: Path, files: list[JobFile]):
        self.job_id = job_id
        self.space_id = space_id
        self.folder = folder
        self.files = files
        self.status = "queued"
        self.created_at = _now()
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_JOB

    def summary(self) -> dict:
        """The job without its file list (listings, progress events)."""
        processed = sum(f.finished for f in self.files)
        total = len(self.files)
        counts = {status: 0 for status in FILE_OUTCOMES}
        for f in self.files:
            if f.finished:
                counts[f.status] += 1
        return {
            "job_id": self.job_id, "space_id": self.space_id, "status": self.status,
            "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
            "total": total, "processed": processed, "progress": round(processed / total, 4) if total else 1.0,
            "counts": counts,
        }

    def to_dict(self) -> dict:
        return {**self.summary(), "files": [f.to_dict() for f in self.files]}


class JobManager:
    """Registry of recent jobs plus the one worker thread that runs them in order."""

    def __init__(
        self,
        root: Path,
        pipeline: IngestPipeline,
        on_result: Callable[[IngestResult], None] | None = None,
        keep: int = JOBS_KEPT,
    ):
        self.root = root
        self.pipeline = pipeline
        self.on_result = on_result
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Remove job folders left by a crash (their jobs are gone with the process), start the worker."""
        if self.root.exists():
            for leftover in self.root.iterdir():
                log.warning("removing spooled uploads of an interrupted job: %s", leftover.name)
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="ingest-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop feeding files: the files already being indexed are committed, later ones and queued jobs are
        reported interrupted. Waits up to `timeout_s` for the worker."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the ingestion worker did not stop within %.0f s; its current file may be lost", timeout_s)

    # -- submitting -----------------------------------------------------------------------------------
    def create(self, space_id: str, uploads: list[tuple[str, BinaryIO]]) -> Job:
        """Spool (logical path, readable file) pairs into a new job folder and queue the job."""
        if self._stopping.is_set():
            raise JobQueueFull("the backend is shutting down; upload again once it is back")
        with self._lock:
            if sum(not job.finished for job in self._jobs.values()) >= self.keep:
                raise JobQueueFull(f"{self.keep} ingestion jobs are already waiting or running; retry later")
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        folder.mkdir(parents=True)
        files = []
        try:
            for n, (path, source) in enumerate(uploads):
                spool = folder / f"{n:05d}.bin"
                with open(spool, "wb") as out:
                    shutil.copyfileobj(source, out, COPY_BLOCK)
                files.append(JobFile(path, spool))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        job = Job(job_id, space_id, folder, files)
        with self._lock:
            self._jobs[job_id] = job
            self._evict()
        self._queue.put(job)
        return job

    # -- reading --------------------------------------------------------------------------------------
    def get(self, job_id: str, spaces: frozenset[str] | None = None) -> Job:
        """The job, if the caller's spaces (None: all) cover it; JobNotFound otherwise."""
        job = self._jobs.get(job_id)
        if job is None or (spaces is not None and job.space_id not in spaces):
            raise JobNotFound(f"no job {job_id!r}: unknown, or forgotten (the last {self.keep} jobs are kept, until a restart)")
        return job

    def snapshot(self, job_id: str, spaces: frozenset[str] | None = None) -> dict:
        with self._lock:
            return self.get(job_id, spaces).to_dict()

    def list(self, space_id: str | None = None, spaces: frozenset[str] | None = None) -> list[dict]:
        """Summaries of the remembered jobs, newest first, of one space or of every space the caller sees."""
        with self._lock:
            jobs = [
                job.summary() for job in reversed(self._jobs.values())
                if (space_id is None or job.space_id == space_id) and (spaces is None or job.space_id in spaces)
            ]
        return jobs

    def subscribe(self, job_id: str, spaces: frozenset[str] | None = None) -> tuple[asyncio.Queue | None, tuple[str, dict]]:
        """From the event loop: the current state as a first event, and a queue of the events to come
        (None when the job has finished: the first event is then its `done`)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            job = self.get(job_id, spaces)
            if job.finished:
                return None, ("done", job.to_dict())
            events: asyncio.Queue = asyncio.Queue()
            job.subscribers.append((loop, events))
            return events, ("progress", {**job.summary(), "file": None})

    def unsubscribe(self, job_id: str, events: asyncio.Queue) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.subscribers = [(loop, q) for loop, q in job.subscribers if q is not events]

    # -- the worker -----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                if self._stopping.is_set():
                    self._finish(job, "interrupted")
                else:
                    self._process(job)
            except Exception as exc:  # a bug or an unexpected library error: the job fails, the worker goes on
                log.exception("ingestion job %s failed", job.job_id)
                self._finish(job, "failed", error_type="internal_error", message=f"unexpected {type(exc).__name__}; see the server log")
            finally:
                shutil.rmtree(job.folder, ignore_errors=True)

    def _process(self, job: Job) -> None:
        with self._lock:
            job.status, job.started_at = "running", _now()
        by_path = {f.path: f for f in job.files}

        def items() -> Iterator[tuple[str, Callable[[], bytes]]]:
            for f in job.files:
                if self._stopping.is_set():  # shutting down: what was handed over is finished, nothing more
                    return
                with self._lock:
                    f.status = "running"
                yield f.path, functools.partial(_read_and_delete, f)

        for outcome in self.pipeline.ingest_many(job.space_id, items()):
            result = outcome.result
            f = by_path.get(result.path) or next(x for x in job.files if x.status == "running")
            self._file_done(job, f, result)
        if self._stopping.is_set() and not all(f.finished for f in job.files):
            self._finish(job, "interrupted")
        else:
            self._finish(job, "done")

    def _file_done(self, job: Job, f: JobFile, result: IngestResult) -> None:
        if f.spool is not None:
            f.spool.unlink(missing_ok=True)
            f.spool = None
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:  # metrics must never stop ingestion
                log.exception("ingest result hook failed")
        with self._lock:
            f.status, f.doc_id, f.chunks = result.status, result.doc_id, result.chunks
            f.error_type, f.message = result.error_type, result.message
            self._publish(job, "progress", {**job.summary(), "file": f.to_dict()})

    def _finish(self, job: Job, status: str, error_type: str = "interrupted", message: str | None = None) -> None:
        """End the job; files without an outcome are reported failed (interrupted or the worker's error)."""
        with self._lock:
            for f in job.files:
                if not f.finished:
                    f.status, f.error_type = "failed", error_type
                    f.message = message or f"{f.path}: not indexed, the backend shut down first; upload it again"
                f.spool = None
            job.status, job.finished_at = status, _now()
            job.started_at = job.started_at or job.finished_at
            self._publish(job, "done", job.to_dict())
            job.subscribers = []
            self._evict()

    def _publish(self, job: Job, event: str, data: dict) -> None:
        """Hand an event to every listening stream (called under the lock, so a new subscriber misses none)."""
        for loop, events in job.subscribers:
            try:
                loop.call_soon_threadsafe(events.put_nowait, (event, data))
            except RuntimeError:  # that stream's event loop is closed
                pass

    def _evict(self) -> None:
        """Forget the oldest finished jobs beyond `keep` (under the lock)."""
        excess = len(self._jobs) - self.keep
        if excess <= 0:
            return
        for job_id in [j.job_id for j in self._jobs.values() if j.finished][:excess]:
            del self._jobs[job_id]


def _read_and_delete(f: JobFile) -> bytes:
    """The spooled bytes; the spool file is removed at once (the bytes are in memory from here on)."""
    assert f.spool is not None
    data = f.spool.read_bytes()
    f.spool.unlink(missing_ok=True)
    return data
