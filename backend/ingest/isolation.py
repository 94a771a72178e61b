"""Where a file is parsed and chunked: in a small pool of worker processes (the server), or inline (tests).

A thread cannot be stopped, and pypdf, lxml and python-docx have inputs that take minutes or gigabytes (a
content stream of millions of text operators, an XML part of a million empty paragraphs). So the server
parses in worker processes, reused across files:

- a parse that outlives MAX_PARSE_S is stopped by killing its worker (a new one replaces it at the next
  file): the file gets 422 `parse_timeout`;
- each worker runs under an address-space limit (`RLIMIT_AS`, its size at start plus `memory_bytes`): an
  allocation past it is a MemoryError in the worker, reported as 413 `document_too_large`, and the worker
  is replaced;
- a worker that dies (a crash in native code, the kernel's OOM killer) costs that file a 422, never the server;
- parsing and chunking hold the worker's GIL, not the server's: searches go on while a big file is read.

A worker gets the chunker once (the tokenizer as JSON) and sends back chunks, never the extracted text:
at most MAX_FILE_CHUNKS of them cross the pipe. Workers come from a fork server that has imported the
parsers already (a fork of the multi-threaded server process could inherit a held lock), so replacing one
costs milliseconds. As with any multiprocessing start method but fork, an entry point must guard its
main code with `if __name__ == "__main__"` (`python -m backend`, the CLIs and pytest do).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Literal

from backend.errors import AppError, CorruptDocument, DocumentTooLarge, EmptyDocument, ParseTimeout
from backend.domain import Chunk
from backend.ingest.chunking import Chunker
from backend.ingest.parsers import DEFAULT_EXTRACT_LIMIT, parse_document

log = logging.getLogger(__name__)

MB = 1024 * 1024
# Parses at once. Each worker costs ~100 MB idle; files beyond this wait for a free one (not counted in
# MAX_PARSE_S). Two keeps a slow file from holding every upload behind it on a small machine.
PARSE_WORKERS = 2
# A worker's address space beyond its size at start: room for the largest budgeted parse (a DOCX of
# MAX_EXTRACTED_MB of XML as an lxml tree, or its text as Python strings) with margin.
MIN_WORKER_MEMORY = 1024 * MB
WORKER_MEMORY_PER_BUDGET = 6
# The smallest inflation budget of a file (see ParseLimits.extract_limit): small files get room for formats
# with verbose containers (a 20 KB DOCX holds ~200 KB of XML).
MIN_INFLATE_BYTES = 2 * MB
# How long a new worker may take to say it is ready (a fork from the fork server takes milliseconds; the first
# start imports the parsers).
WORKER_START_S = 60.0
# Modules the fork server imports once, so that each worker starts with them loaded.
PRELOAD = ["backend.ingest.isolation", "pypdf", "docx", "lxml.etree", "bs4", "markdown_it", "charset_normalizer", "tokenizers"]

# What a worker answers for one file: ("ok", chunks, reusable) or ("error", (error class, message), reusable).
_Reply = tuple[Literal["ok"], list[Chunk], bool] | tuple[Literal["error"], tuple[type[AppError], str], bool]


@dataclass(frozen=True)
class ParseLimits:
    """The per-file budget: MAX_FILE_CHUNKS, MAX_EXTRACTED_MB, MAX_PARSE_S, and the worker's memory."""

    max_chunks: int = 20_000
    max_extracted_bytes: int = DEFAULT_EXTRACT_LIMIT
    max_parse_s: float = 120.0
    memory_bytes: int | None = None  # the worker's address-space allowance; None: derived from the budget
    max_inflate_ratio: float = 100.0

    @classmethod
    def from_settings(cls, settings) -> "ParseLimits":
        return cls(
            settings.max_file_chunks, settings.max_extracted_bytes, settings.max_parse_s,
            max_inflate_ratio=settings.max_inflate_ratio,
        )

    def extract_limit(self, size: int) -> int:
        """What one file of `size` bytes may inflate to: MAX_INFLATE_RATIO times its size, at least
        MIN_INFLATE_BYTES, at most MAX_EXTRACTED_MB. Ordinary files stay far below (text 1x, PDF and DOCX
        text a few times their size, a DOCX's XML ~20x); a tiny file that unpacks into millions of characters
        would otherwise cost many minutes of embedding while staying under MAX_FILE_CHUNKS."""
        return int(min(self.max_extracted_bytes, max(MIN_INFLATE_BYTES, self.max_inflate_ratio * size)))

    @property
    def worker_memory(self) -> int:
        return self.memory_bytes or max(MIN_WORKER_MEMORY, WORKER_MEMORY_PER_BUDGET * self.max_extracted_bytes)


def parse_and_chunk(data: bytes, name: str, chunker: Chunker, limits: ParseLimits) -> list[Chunk]:
    """Parse and chunk one file within its budget (here, in the calling process). Raises the file's
    DocumentError (corrupt, empty, too large) or UnsupportedFileType."""
    sections = parse_document(data, name, limit=limits.extract_limit(len(data)))
    try:
        chunks = chunker.chunk(sections, max_chunks=limits.max_chunks)
    except DocumentTooLarge as exc:
        raise DocumentTooLarge(f"{name}: {exc.message}") from None
    if not chunks:
        raise EmptyDocument(f"{name}: no text to index (only characters the embedding model ignores)")
    return chunks


class InlineParsing:
    """Parses in the calling thread: the chunk and extraction budgets hold, time and memory are not bounded.
    For tests and debugging; the server uses `ParsePool`."""

    def __init__(self, chunker: Chunker, limits: ParseLimits | None = None):
        self.chunker = chunker
        self.limits = limits or ParseLimits()

    def run(self, data: bytes, name: str) -> list[Chunk]:
        """The file's chunks, or its AppError."""
        return parse_and_chunk(data, name, self.chunker, self.limits)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class _ChunkerSpec:
    """What a worker needs to build the same chunker (a tokenizer travels as its JSON)."""

    tokenizer_json: str
    max_tokens: int
    overlap: int
    hard_limit: int
    window_chars: int

    @classmethod
    def of(cls, chunker: Chunker) -> "_ChunkerSpec":
        return cls(chunker.tokenizer.to_str(), chunker.max_tokens, chunker.overlap, chunker.hard_limit, chunker.window_chars)

    def build(self) -> Chunker:
        from tokenizers import Tokenizer

        return Chunker(Tokenizer.from_str(self.tokenizer_json), self.max_tokens, self.overlap, self.hard_limit, self.window_chars)


class _Worker:
    def __init__(self, ctx, spec: _ChunkerSpec, limits: ParseLimits):
        """Start a worker and wait for its "ready": a worker that cannot start is the server's problem (500),
        not the file's, so it is told apart from one that dies on a file."""
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, spec, limits), name="parse-worker", daemon=True)
        try:
            self.process.start()
            child.close()
            if not self.conn.poll(WORKER_START_S) or self.conn.recv() != "ready":
                raise EOFError("no ready message")
        except (OSError, EOFError) as exc:
            self.stop(kill=True)
            raise AppError(
                f"the parse worker could not start ({type(exc).__name__}: {exc}; exit code {self.process.exitcode})"
            ) from exc

    def stop(self, kill: bool = False) -> None:
        if self.process.pid is None:  # never started
            self.conn.close()
            return
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


class ParsePool:
    """`PARSE_WORKERS` worker processes, started on first use and replaced when killed or dead."""

    def __init__(self, chunker: Chunker, limits: ParseLimits, workers: int = PARSE_WORKERS):
        self.chunker = chunker
        self.limits = limits
        self._spec = _ChunkerSpec.of(chunker)
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(PRELOAD)
        self._slots = threading.BoundedSemaphore(workers)
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._all: set[_Worker] = set()
        self._closed = False

    def run(self, data: bytes, name: str) -> list[Chunk]:
        """The file's chunks, parsed in a worker within MAX_PARSE_S; raises the file's AppError."""
        with self._slots:
            worker = self._take()
            healthy = False
            try:
                healthy, reply = self._ask(worker, data, name)
            finally:
                if healthy and not self._closed:
                    self._idle.put(worker)
                else:
                    self._drop(worker, kill=True)
        if isinstance(reply, AppError):
            raise reply
        return reply

    def _take(self) -> _Worker:
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            if worker.process.is_alive():
                return worker
            self._drop(worker, kill=True)  # died while idle (killed from outside): not this file's fault
        if self._closed:
            raise RuntimeError("the parse pool is closed")
        worker = _Worker(self._ctx, self._spec, self.limits)
        with self._lock:
            self._all.add(worker)
        return worker

    def _ask(self, worker: _Worker, data: bytes, name: str) -> tuple[bool, list[Chunk] | AppError]:
        """(whether the worker may be reused, chunks or the file's error)."""
        deadline = self.limits.max_parse_s
        started = time.monotonic()
        try:
            worker.conn.send((data, name))
            if not worker.conn.poll(max(deadline - (time.monotonic() - started), 0)):
                log.warning("parse of %s stopped after %.0f s (MAX_PARSE_S)", name, deadline)
                return False, ParseTimeout(
                    f"{name}: parsing took longer than MAX_PARSE_S ({deadline:g} s) and was stopped"
                )
            kind, payload, reusable = worker.conn.recv()
        except (EOFError, OSError) as exc:
            worker.process.join(1)
            code = worker.process.exitcode
            log.warning("parse worker died on %s (exit code %s)", name, code)
            return False, CorruptDocument(
                f"{name}: the parser process died on this file (exit code {code}; {type(exc).__name__})"
            )
        if kind == "ok":
            return reusable, payload
        error_class, message = payload
        return reusable, error_class(message)

    def _drop(self, worker: _Worker, kill: bool) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.stop(kill=kill)

    def close(self) -> None:
        """Stop every worker (a parse in progress is killed)."""
        self._closed = True
        with self._lock:
            workers, self._all = list(self._all), set()
        for worker in workers:
            worker.stop(kill=True)


def _limit_memory(allowance: int) -> None:
    """RLIMIT_AS at this process's current size plus `allowance` (Linux; elsewhere only the deadline holds)."""
    try:
        import resource

        with open("/proc/self/statm") as statm:
            size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (size + allowance, size + allowance))
    except (ImportError, OSError, ValueError) as exc:
        log.warning("parse worker runs without a memory limit: %s", exc)


def _serve(conn, spec: _ChunkerSpec, limits: ParseLimits) -> None:
    """A worker's loop: (bytes, name) in, ("ok", chunks, reusable) or ("error", (class, message), reusable) out."""
    chunker = spec.build()
    _limit_memory(limits.worker_memory)
    conn.send("ready")
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        data, name = job
        reusable = True
        reply: _Reply
        try:
            reply = ("ok", parse_and_chunk(data, name, chunker, limits), True)
        except AppError as exc:
            reply = ("error", (type(exc), exc.message), True)
        except MemoryError:
            reusable = False  # the heap may be left fragmented and large: a fresh worker takes the next file
            reply = ("error", (DocumentTooLarge, (
                f"{name}: parsing it needs more than the parser's memory limit "
                f"({limits.worker_memory / MB:.0f} MB, from MAX_EXTRACTED_MB)"
            )), False)
        except Exception as exc:  # whatever a parser library raises is this file's 422
            reply = ("error", (CorruptDocument, f"{name}: could not be parsed ({type(exc).__name__}: {exc})"), True)
        del data, job
        try:
            conn.send(reply)
        except MemoryError:
            conn.send(("error", (DocumentTooLarge, f"{name}: too many chunks to send back"), False))
            reusable = False
        if not reusable:
            return
