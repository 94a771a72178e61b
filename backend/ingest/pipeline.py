"""Ingestion pipeline: bytes -> sections -> chunks -> vectors -> staged commit.

Files are handled in groups: each file is read, hashed, checked against the index (an unchanged file costs
three cheap store queries and no parsing), parsed and chunked; the chunks of a whole group are embedded in
one call so that small files still fill the model's batches, then each file is committed on its own.
A failure is per file: it is reported and the rest go on, whatever raised it.

Parsing and chunking go through `parsing` (backend.ingest.isolation): in the server a pool of worker
processes that enforces the per-file budget (MAX_FILE_CHUNKS, MAX_EXTRACTED_MB, MAX_PARSE_S).

With `workers` > 1 (INGEST_WORKERS) the next files are read, checked and parsed ahead, that many at once, on
threads that hand them to the parse workers, while the current group is embedded and committed: parsing
overlaps embedding. Commits stay in the files' order (the outcomes come as with one worker), at most
2 x `workers` prepared files wait (their chunks, not the corpus, are what is held), and a kill still loses
only what was not committed.

Every write (a commit that added or replaced a document, a delete) calls `on_write`: the runtime schedules the
store's optimisation there (backend.ingest.optimizer), so uploads, jobs and the CLI all get it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backend.domain import Chunk, make_doc_id, normalize_doc_path, validate_space
from backend.errors import AppError, DocumentError, FileTooLarge, UnsupportedFileType
from backend.ingest.admission import SpaceSlots
from backend.ingest.chunking import Chunker
from backend.ingest.isolation import InlineParsing, ParsePool
from backend.ingest.parsers import parser_for
from backend.retrieval.embedders.base import Embedder
from backend.retrieval.index import DocumentIndex

log = logging.getLogger(__name__)

# Embed this many chunks (at least) per call, across files.
GROUP_CHUNKS = 256
# The outcomes of a commit that changed the index.
WRITES = ("added", "replaced")


@dataclass
class IngestResult:
    """What happened to one file."""

    path: str
    status: str  # added | replaced | unchanged | failed | skipped
    doc_id: str | None = None
    chunks: int = 0
    error_type: str | None = None
    message: str | None = None
    # Milliseconds per stage (parse_ms, embed_ms, store_write_ms) for the metrics; absent for unchanged files.
    timings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Pending:
    path: str
    content_hash: str
    size: int
    chunks: list[Chunk]
    parse_ms: float


class IngestPipeline:
    """Parses, chunks, embeds and commits documents into one `DocumentIndex`."""

    def __init__(
        self, embedder: Embedder, index: DocumentIndex, chunker: Chunker, max_bytes: int,
        parsing: ParsePool | InlineParsing | None = None, on_write: Callable[[], None] | None = None,
        workers: int = 1,
    ):
        """`workers`: files prepared (read, checked, parsed and chunked) at once ahead of the embedder; 1 = in turn."""
        self.embedder = embedder
        self.index = index
        self.chunker = chunker
        self.max_bytes = max_bytes
        self.parsing = parsing or InlineParsing(chunker)
        # Synchronous uploads in flight per space (the API holds a slot per upload; INGEST_MAX_PER_SPACE).
        self.in_flight = SpaceSlots()
        # Called after every write, from the thread that wrote (backend.runtime wires the store's optimiser).
        self.on_write = on_write
        self.workers = max(1, workers)

    def close(self) -> None:
        """Stop the parse workers."""
        self.parsing.close()

    def delete(self, doc_id: str) -> int:
        """Remove a document and all its chunks (the number of points removed); a write, like a commit."""
        deleted = self.index.delete(doc_id)
        self._wrote()
        return deleted

    def _wrote(self) -> None:
        if self.on_write is None:
            return
        try:
            self.on_write()
        except Exception:  # the write itself succeeded: a failing hook must not turn it into an error
            log.exception("the after-write hook failed")

    def ingest_bytes(self, space_id: str, path: str, data: bytes) -> IngestResult:
        """Index one file's bytes; raises the AppError of a bad file (the API maps it to 4xx)."""
        outcome = next(iter(self.ingest_many(space_id, [(path, lambda: data)])))
        if outcome.error is not None:
            raise outcome.error
        if outcome.status == "failed":  # an I/O error has no AppError of its own
            raise DocumentError(outcome.result.message or f"{path}: could not be indexed")
        return outcome.result

    def ingest_many(
        self, space_id: str, items: Iterable[tuple[str, Callable[[], bytes]]]
    ) -> Iterator["_Outcome"]:
        """Index (path, load-bytes) items; yields one outcome per item, in order of completion."""
        validate_space(space_id)
        group: list[_Pending] = []
        group_chunks = 0
        for outcome in self._prepared(space_id, items):
            if isinstance(outcome, _Pending):
                group.append(outcome)
                group_chunks += len(outcome.chunks)
                if group_chunks >= GROUP_CHUNKS:
                    yield from self._commit_group(space_id, group)
                    group, group_chunks = [], 0
            else:
                yield outcome
        if group:
            yield from self._commit_group(space_id, group)

    def _prepared(self, space_id: str, items: Iterable[tuple[str, Callable[[], bytes]]]) -> Iterator["_Pending | _Outcome"]:
        """`_prepare` of every item, in the items' order; with several workers, up to 2 x workers ahead."""
        if self.workers == 1:
            for raw_path, load in items:
                yield self._prepare(space_id, raw_path, load)
            return
        ahead: deque[Future] = deque()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="ingest-prepare") as pool:
            try:
                for raw_path, load in items:
                    ahead.append(pool.submit(self._prepare, space_id, raw_path, load))
                    if len(ahead) >= 2 * self.workers:
                        yield ahead.popleft().result()
                while ahead:
                    yield ahead.popleft().result()
            finally:  # the caller stopped early (or failed): files not started yet are not parsed for nothing
                for future in ahead:
                    future.cancel()

    def _prepare(self, space_id: str, raw_path: str, load: Callable[[], bytes]):
        path = raw_path
        try:
            path = normalize_doc_path(raw_path)
            parser_for(path)  # unsupported type: skip before reading anything
            data = load()
            if len(data) > self.max_bytes:
                raise FileTooLarge(
                    f"{path}: {len(data) / 1048576:.1f} MB exceeds MAX_UPLOAD_MB ({self.max_bytes / 1048576:.0f} MB)"
                )
            content_hash = hashlib.sha256(data).hexdigest()
            doc_id = make_doc_id(space_id, path)
            if self.index.status(space_id, doc_id, self.index.version(content_hash)) == "unchanged":
                return _Outcome(IngestResult(path, "unchanged", doc_id))
            started = time.perf_counter()
            chunks = self.parsing.run(data, path)
            return _Pending(path, content_hash, len(data), chunks, _ms_since(started))
        except UnsupportedFileType as exc:
            return _Outcome(IngestResult(path, "skipped", error_type=exc.error_type, message=exc.message), exc)
        except AppError as exc:
            return _Outcome(IngestResult(path, "failed", error_type=exc.error_type, message=exc.message), exc)
        except OSError as exc:
            return _Outcome(IngestResult(path, "failed", error_type="io_error", message=f"{path}: {exc}"))
        except Exception as exc:  # a bug: this file fails (500 when uploaded alone), the others go on
            log.exception("ingesting %s failed", path)
            return _unexpected(path, exc)

    def _commit_group(self, space_id: str, group: list[_Pending]) -> Iterator["_Outcome"]:
        texts = [chunk.embed_text for pending in group for chunk in pending.chunks]
        started = time.perf_counter()
        try:
            vectors = self.embedder.embed_documents(texts)
        except AppError as exc:
            for pending in group:
                yield _Outcome(IngestResult(pending.path, "failed", error_type=exc.error_type, message=exc.message), exc)
            return
        except Exception as exc:
            log.exception("embedding a group of %d files failed", len(group))
            for pending in group:
                yield _unexpected(pending.path, exc)
            return
        embed_ms_per_chunk = _ms_since(started) / max(len(texts), 1)  # one call for the group, shared by size
        offset = 0
        for pending in group:
            n = len(pending.chunks)
            try:
                started = time.perf_counter()
                status = self.index.commit(
                    space_id, pending.path, pending.content_hash, pending.size, pending.chunks, vectors[offset : offset + n]
                )
                timings = {"parse_ms": pending.parse_ms, "embed_ms": round(embed_ms_per_chunk * n, 3), "store_write_ms": _ms_since(started)}
                if status in WRITES:
                    self._wrote()
                yield _Outcome(IngestResult(pending.path, status, make_doc_id(space_id, pending.path), n, timings=timings))
            except AppError as exc:
                yield _Outcome(IngestResult(pending.path, "failed", error_type=exc.error_type, message=exc.message), exc)
            except Exception as exc:
                log.exception("committing %s failed", pending.path)
                yield _unexpected(pending.path, exc)
            offset += n


def _unexpected(path: str, exc: Exception) -> "_Outcome":
    error = AppError(f"{path}: not indexed, unexpected {type(exc).__name__}; see the server log")
    return _Outcome(IngestResult(path, "failed", error_type=error.error_type, message=error.message), error)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


@dataclass
class _Outcome:
    result: IngestResult
    error: AppError | None = None

    @property
    def status(self) -> str:
        return self.result.status


def iter_folder(root: Path) -> list[Path]:
    """Every regular file under root, sorted, skipping hidden files and folders (.git, .DS_Store, ...)."""
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and not path.is_symlink():
            files.append(path)
    return files
