"""`python -m cli.index_cli --dir DIR --space SPACE`: index a folder into a space.

Writes directly into the store, except when the embedded store is held by a running backend (Qdrant
Edge is single-process): then the files are sent to that backend, found through BACKEND_URL or the
registration the backend leaves in DATA_DIR, or named by `--api URL`; the CLI waits for them to be indexed
(`--wait`, the default: progress bar, summary, exit code), or with `--no-wait` prints the ids of the jobs it
queued and exits.

Through a backend the folder goes as ingestion jobs (POST /documents with several files): batches of at
most BATCH_FILES files and MAX_UPLOAD_MB bytes (the CLI's setting; a batch the backend still finds too large
is split and sent again), two jobs in flight so the backend never waits for the next upload; the progress
bar follows each job's event stream (GET /jobs/{id}/events, else by polling GET /jobs/{id}).

Exit codes: 0 all files indexed or unchanged (unsupported files are skipped, not failures; with --no-wait:
all submitted), 1 some files failed, 2 usage, 401 or 403, 3 store, 4 backend unreachable, 5 embedder.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

from backend.errors import (
    EXIT_FILES_FAILED, EXIT_OK, EXIT_USAGE, AppError, BackendUnreachable, Forbidden, StoreLocked, Unauthorized, exit_code_for,
)
from backend.ingest.pipeline import IngestResult, iter_folder
from backend.api.request_guard import MULTIPART_ALLOWANCE
from backend.domain import normalize_doc_path, validate_space
from backend.settings import Settings, load_settings
from cli.client import BackendClient, UploadCut, auth_headers, discover_backend_url
from cli.progress import PLAIN_INTERVAL_S, IngestProgress

STATUSES = ("added", "replaced", "unchanged", "skipped", "failed")
# Files per job; with their multipart framing they stay within the backend's allowance over MAX_UPLOAD_MB.
BATCH_FILES = 64
# Jobs submitted ahead of the one being followed: the backend indexes one while the next is uploaded.
JOBS_IN_FLIGHT = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cli.index_cli", description="Index a folder of documents into a space.")
    parser.add_argument("--dir", required=True, type=Path, help="folder to index (recursively; hidden files skipped)")
    parser.add_argument("--space", required=True, help="space id to index into")
    parser.add_argument("--env-file", default=None, help="settings file (default: .env if present)")
    parser.add_argument("--api", default=None, help="send files to the backend at this URL instead of opening the store")
    parser.add_argument("--prune", action="store_true", help="delete documents of the space whose files are gone")
    parser.add_argument(
        "--wait", action=argparse.BooleanOptionalAction, default=True,
        help="through a backend: wait until it has indexed every file (progress bar, summary, exit code; the "
        "default); --no-wait queues the jobs, prints their ids and exits",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or progress lines (failures are still listed)")
    parser.add_argument(
        "--progress-interval", type=float, default=PLAIN_INTERVAL_S, metavar="S",
        help="when stderr is not a terminal: seconds between two progress lines (files/s, chunks/s, ETA)",
    )
    return parser.parse_args(argv)


@dataclass
class DirectRun:
    """Where a direct run's time went besides the files (`cli.bench_scale` reports them apart)."""

    startup_s: float  # building the runtime: embedder, store, parse workers
    optimize_s: float  # the store's index build after the writes (HNSW)


def run_direct(
    settings: Settings, root: Path, space: str, files: list[Path], results: list[IngestResult], bar: IngestProgress,
    prune: bool = False,
) -> DirectRun:
    """Index `files` (under `root`) straight into the store of `settings`, appending one result per file to
    `results` (`cli.bench_scale` times this same path). Files are read one at a time, when the pipeline gets
    to them: the corpus never sits in memory. A run killed half-way loses nothing committed: the next run
    finds those files unchanged."""
    from backend.runtime import build_runtime

    started = time.perf_counter()
    runtime = build_runtime(settings)
    startup_s = time.perf_counter() - started
    try:
        items = [(f.relative_to(root).as_posix(), f.read_bytes) for f in files]
        for outcome in runtime.pipeline.ingest_many(space, items):
            _record(outcome.result, results, bar)
        if prune:
            present = {p for p, _ in items}
            for doc in runtime.index.list(space):
                if doc.path not in present:
                    runtime.pipeline.delete(doc.doc_id)
                    results.append(IngestResult(doc.path, "pruned", doc.doc_id))
        # The writes above scheduled the store's optimisation, as the backend's do; no background thread runs it here.
        started = time.perf_counter()
        if runtime.optimizer.pending:
            bar.stage("building index")
            runtime.optimizer.optimize_now()
        return DirectRun(startup_s, time.perf_counter() - started)
    finally:
        runtime.close()


def _run_remote(
    url: str, args, files: list[Path], results: list[IngestResult], bar, settings: Settings, wait: bool
) -> list[str] | None:
    """Send the folder as ingestion jobs; with `wait`, follow them to the end (None), else their ids."""
    client = BackendClient(url, auth_headers(settings))
    try:
        client.health()
        items = []
        for f in files:
            rel = f.relative_to(args.dir).as_posix()
            try:
                normalize_doc_path(rel)
                size = f.stat().st_size
            except AppError as exc:
                _record(IngestResult(rel, "failed", error_type=exc.error_type, message=exc.message), results, bar)
                continue
            except OSError as exc:
                _record(IngestResult(rel, "failed", error_type="io_error", message=f"{rel}: {exc}"), results, bar)
                continue
            if size > settings.max_upload_bytes:  # the backend would refuse it: say so without sending it
                message = f"{rel}: {size / 1048576:.1f} MB exceeds MAX_UPLOAD_MB ({settings.max_upload_mb:g} MB)"
                _record(IngestResult(rel, "failed", error_type="file_too_large", message=message), results, bar)
                continue
            items.append((rel, f, size))
        batches = deque(make_batches(items, settings.max_upload_bytes))
        if not wait:
            return [job_id for batch in batches for job_id, _ in _submit(client, args.space, batch, results, bar)]
        active: deque[tuple[str, list]] = deque()
        while batches or active:
            while batches and len(active) < JOBS_IN_FLIGHT:
                active.extend(_submit(client, args.space, batches.popleft(), results, bar))
            if active:
                job_id, _ = active.popleft()
                _follow(client, job_id, results, bar)
        if args.prune:
            bar.note("--prune is not available through a running backend; run it with the backend stopped")
        return None
    except AppError as exc:
        raise _from_backend(exc, url) from exc
    finally:
        client.close()


def _from_backend(exc: AppError, url: str) -> AppError:
    """The backend's error, its message saying where it came from (and which setting holds the key it refused)."""
    if isinstance(exc, BackendUnreachable):  # the client's own words already name the URL
        return exc
    hint = " (BACKEND_API_KEY)" if isinstance(exc, (Unauthorized, Forbidden)) else ""
    return type(exc)(f"backend at {url}: {exc.message}{hint}")


def make_batches(items: list[tuple[str, Path, int]], max_bytes: int) -> list[list[tuple[str, Path, int]]]:
    """Consecutive groups of at most BATCH_FILES files and `max_bytes` bytes, whose multipart framing (estimated
    per file) also fits the backend's allowance; a file over `max_bytes` goes alone."""
    batches: list[list] = []
    batch: list = []
    size = framed = 0
    for item in items:
        rel, _, n = item
        overhead = 512 + 2 * len(rel.encode())
        if batch and (len(batch) >= BATCH_FILES or size + n > max_bytes or framed + n + overhead > max_bytes + MULTIPART_ALLOWANCE):
            batches.append(batch)
            batch, size, framed = [], 0, 0
        batch.append(item)
        size += n
        framed += n + overhead
    if batch:
        batches.append(batch)
    return batches


def _submit(client: BackendClient, space: str, batch: list, results: list[IngestResult], bar) -> list[tuple[str, list]]:
    """Queue one batch as a job: [(job id, batch)]. A batch the backend refuses as a whole (too large for it, a
    name it rejects) is split in halves and sent again; a single refused file is reported failed."""
    try:
        body = client.submit_job(space, [(rel, path) for rel, path, _ in batch])
    except (AppError, UploadCut) as exc:
        if isinstance(exc, AppError) and not _refused(exc):
            raise
        if len(batch) > 1:
            half = len(batch) // 2
            return _submit(client, space, batch[:half], results, bar) + _submit(client, space, batch[half:], results, bar)
        rel = batch[0][0]
        if isinstance(exc, UploadCut):
            error_type, message = "upload_failed", f"{rel}: the backend closed the connection during the upload (over its MAX_UPLOAD_MB?)"
        else:
            error_type, message = exc.error_type, exc.message
        status = "skipped" if error_type == "unsupported_file_type" else "failed"
        _record(IngestResult(rel, status, error_type=error_type, message=message), results, bar)
        return []
    return [(body["job_id"], batch)]


def _refused(exc: AppError) -> bool:
    """A 4xx for this batch (too large, a name it rejects, ...): not a refused key, which stops the run."""
    return 400 <= exc.status_code < 500 and not isinstance(exc, (Unauthorized, Forbidden))


def _follow(client: BackendClient, job_id: str, results: list[IngestResult], bar) -> None:
    """Move the bar as the job's files finish; record every file's outcome once."""
    seen: set[str] = set()

    def absorb(file: dict | None) -> None:
        if file and file["path"] not in seen and file["status"] not in ("queued", "running"):
            seen.add(file["path"])
            result = IngestResult(file["path"], file["status"], file.get("doc_id"), file.get("chunks") or 0,
                                  file.get("error_type"), file.get("message"))
            _record(result, results, bar)

    for event, data in client.follow_job(job_id):
        absorb(data.get("file"))
        if event == "done" or "files" in data:
            for file in data.get("files", []):
                absorb(file)
        if event == "done" and data["status"] != "done":
            bar.note(f"job {job_id} ended {data['status']}")


def _record(result: IngestResult, results: list[IngestResult], bar: IngestProgress) -> None:
    results.append(result)
    if result.status in ("failed", "skipped"):
        bar.note(f"{result.status}: {result.message}")
    bar.update(result.chunks if result.status in ("added", "replaced") else 0, result.path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        settings = load_settings(args.env_file)
        validate_space(args.space)
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:  # pydantic's ValidationError: a bad setting
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.dir.is_dir():
        print(f"error: {args.dir} is not a folder", file=sys.stderr)
        return EXIT_USAGE

    files = iter_folder(args.dir)
    results: list[IngestResult] = []
    started = time.perf_counter()
    mode = "direct"
    bar = IngestProgress(len(files), f"indexing into {args.space!r}", quiet=args.quiet, interval=args.progress_interval)
    submitted: list[str] | None = None
    try:
        if args.api:
            mode = f"via {args.api}"
            submitted = _run_remote(args.api, args, files, results, bar, settings, wait=args.wait)
        else:
            try:
                run_direct(settings, args.dir, args.space, files, results, bar, prune=args.prune)
            except StoreLocked:
                url = discover_backend_url(settings)
                if url is None:
                    raise
                mode = f"via the running backend at {url}"
                bar.note(f"the embedded store is held by a running backend; sending files to {url}")
                _run_remote(url, args, files, results, bar, settings, wait=args.wait)
    except AppError as exc:
        bar.close()
        print(f"error: {exc.message}", file=sys.stderr)
        return exit_code_for(exc)
    finally:
        bar.close()

    counts = Counter(r.status for r in results)
    if submitted is not None:
        base = args.api.rstrip("/")
        for job_id in submitted:
            print(f"queued job {job_id}: {base}/jobs/{job_id}")
        sent = len(files) - len(results)
        print(f"{len(files)} files ({mode}): {sent} queued in {len(submitted)} jobs, {counts.get('failed', 0)} failed, "
              f"{counts.get('skipped', 0)} skipped before upload; not waiting (--no-wait)")
        return EXIT_FILES_FAILED if counts.get("failed") else EXIT_OK
    chunks = sum(r.chunks for r in results if r.status in ("added", "replaced"))
    seconds = time.perf_counter() - started
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES)
    if counts.get("pruned"):
        summary += f", {counts['pruned']} pruned"
    print(f"{len(files)} files ({mode}): {summary}; {chunks} chunks written in {seconds:.1f} s")
    return EXIT_FILES_FAILED if counts.get("failed") else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
