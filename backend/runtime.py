"""The runtime: every long-lived component, built once from the settings, started and closed in one place.

`build_runtime(settings)` loads the models, opens the store and wires the rest; the API's lifespan and the
command-line tools (local mode) both use it. A server then calls `start()` (the store's optimiser, the
ingestion jobs' worker) and, at shutdown, `aclose()`; a command-line run only writes and calls `close()`.

Ownership: the runtime closes what it built (or was handed with `adopt()`), never what a caller injected,
except the store and the pipeline, which it always closes (a store given to `build_runtime` becomes its own,
as the tests that bring a Qdrant-server adapter expect). `borrow()` serves the same components with other
settings and another LLM client (tests run several apps over one runtime); a borrower closes none of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from functools import cached_property

from backend.ingest.chunking import Chunker
from backend.ingest.isolation import PARSE_WORKERS, ParseLimits, ParsePool
from backend.ingest.jobs import JobManager
from backend.ingest.optimizer import BackgroundOptimizer
from backend.ingest.pipeline import IngestPipeline, IngestResult
from backend.llm.admission import Admission
from backend.llm.base import LLMClient
from backend.llm.registry import create_llm_client
from backend.observability.metrics import Metrics
from backend.rag import RagService
from backend.retrieval.embedders.base import Embedder
from backend.retrieval.embedders.registry import create_embedder
from backend.retrieval.index import DocumentIndex
from backend.retrieval.query_batching import QueryBatcher
from backend.retrieval.rerank import Reranker, create_reranker
from backend.retrieval.retriever import RetrievalConfig, Retriever
from backend.retrieval.sparse import create_sparse_encoder
from backend.retrieval.stores.base import VectorStore
from backend.retrieval.stores.registry import create_store
from backend.settings import Settings

log = logging.getLogger(__name__)


class Runtime:
    """The components of one backend (or one CLI run) and their life cycle.

    Attributes: `settings`, `embedder`, `cross_embedder` (CROSS_LANGUAGE_MODEL's, or None), `store`, `index`,
    `retriever`, `pipeline`, `optimizer`, `jobs`, `metrics` (None in a CLI run), `admission` (the one limit on
    answers in flight that /ask and /v1 share: backend/llm/admission.py), and, built on first use, `llm` (the
    engine's client: it connects lazily) and `rag`.
    """

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        store: VectorStore,
        index: DocumentIndex,
        retriever: Retriever,
        pipeline: IngestPipeline,
        *,
        cross_embedder: Embedder | None = None,
        optimizer: BackgroundOptimizer | None = None,
        llm: LLMClient | None = None,
        metrics: Metrics | None = None,
        owns_components: bool = True,
    ):
        self.settings = settings
        self.embedder = embedder
        self.cross_embedder = cross_embedder
        self.store = store
        self.index = index
        self.retriever = retriever
        self.pipeline = pipeline
        self.optimizer = optimizer or BackgroundOptimizer(store)
        self.metrics = metrics
        self.jobs = JobManager(settings.data_dir / "jobs", pipeline, self._count if metrics is not None else None)
        self.admission = Admission.from_settings(settings, metrics)
        self._llm = llm
        self._owns_components = owns_components  # store, pipeline (and what `adopt` names) close with this runtime
        self._owned: set[str] = set()  # of "embedder", "cross_embedder", "llm"
        self._advertised = False
        self._jobs_started = False

    # -- the parts built on first use --------------------------------------------------------------------
    @cached_property
    def llm(self) -> LLMClient:
        """The engine's client (LLM_BACKEND); built here on first use, then closed with the runtime."""
        if self._llm is None:
            self._llm = create_llm_client(self.settings)
            self._owned.add("llm")
        return self._llm

    @cached_property
    def rag(self) -> RagService:
        """Retrieval plus the engine: what /ask and the OpenAI-compatible routes answer with."""
        return RagService(self.retriever, self.llm, self.settings)

    def adopt(self, *names: str) -> None:
        """Close these components ("embedder", "cross_embedder", "llm") with the runtime, though they were built
        elsewhere (the app builds the embedder and the LLM client before the store answers)."""
        unknown = set(names) - {"embedder", "cross_embedder", "llm"}
        if unknown:
            raise ValueError(f"no component {sorted(unknown)} to adopt")
        self._owned.update(names)

    def borrow(self, settings: Settings, llm: LLMClient | None = None, metrics: Metrics | None = None) -> Runtime:
        """A runtime over these components that serves with `settings`, `llm` (default: one built from `settings`,
        closed with the borrower) and `metrics`, with its own job worker. It shares the optimiser and closes none
        of the components: they stay this runtime's."""
        return Runtime(
            settings, self.embedder, self.store, self.index, self.retriever, self.pipeline,
            cross_embedder=self.cross_embedder, optimizer=self.optimizer, llm=llm, metrics=metrics,
            owns_components=False,
        )

    # -- life cycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start a server's background work: the store's optimiser, then the ingestion jobs' worker (which
        removes the spooled uploads a crash left)."""
        self.optimizer.start()
        self.jobs.start()
        self._jobs_started = True

    def advertise(self) -> None:
        """Tell CLIs on this machine where this backend serves (they cannot open the embedded store while it is
        held). `close()` withdraws it before the store closes."""
        settings = self.settings
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        registration = {"url": f"http://{host}:{settings.port}", "pid": os.getpid()}
        settings.backend_registration_file.write_text(json.dumps(registration))
        self._advertised = True

    async def aclose(self) -> None:
        """`close()` from the event loop: the LLM client's connections are closed on the loop that used them,
        the blocking steps in a thread."""
        await asyncio.to_thread(self._stop_jobs)
        await self.admission.aclose()
        if "llm" in self._owned:
            await self.llm.aclose()
        await asyncio.to_thread(self._release)

    def close(self) -> None:
        """Shut down in order: the jobs first (files being indexed are committed, the rest reported interrupted,
        within SHUTDOWN_TIMEOUT_S), then the LLM client, then the advertisement, then the optimiser, pipeline,
        store and the embedders this runtime owns. From async code, use `aclose()`."""
        self._stop_jobs()
        if self.admission.engine_load is not None:
            asyncio.run(self.admission.aclose())
        if "llm" in self._owned:
            asyncio.run(self.llm.aclose())
        self._release()

    def _stop_jobs(self) -> None:
        if self._jobs_started:
            self._jobs_started = False
            self.jobs.stop(self.settings.shutdown_timeout_s)

    def _release(self) -> None:
        if self._advertised:
            self._advertised = False
            _withdraw(self.settings)
        self.optimizer.stop()
        if not self._owns_components:
            return
        self.pipeline.close()
        self.store.close()
        if "embedder" in self._owned:  # its worker processes (EMBED_ISOLATION=process) end here
            self.embedder.close()
        if "cross_embedder" in self._owned and self.cross_embedder is not None:
            self.cross_embedder.close()

    def _count(self, result: IngestResult) -> None:
        """A job's file went through the pipeline: count its outcome (uploads count theirs in the route)."""
        assert self.metrics is not None
        self.metrics.observe_ingest(result.status, result.timings or None)


def _withdraw(settings: Settings) -> None:
    """Remove the registration file, if it is still this process's."""
    path = settings.backend_registration_file
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def create_cross_embedder(settings: Settings, embedder: Embedder) -> Embedder | None:
    """The CROSS_LANGUAGE_MODEL embedder, through the same factory as EMBED_MODEL; None when off or the same model."""
    name = settings.cross_language_model.strip()
    if not name or name == embedder.name:
        return None
    # EMBED_BACKEND=openai serves EMBED_MODEL only: the cross-language model runs in process (onnx, or its engine).
    backend = "onnx" if settings.embed_backend == "openai" else settings.embed_backend
    return create_embedder(settings.model_copy(update={"embed_model": name, "embed_backend": backend}))


def build_runtime(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    store: VectorStore | None = None,
    reranker: Reranker | None = None,
    cross_embedder: Embedder | None = None,
    llm: LLMClient | None = None,
    metrics: Metrics | None = None,
) -> Runtime:
    """Load the models, open the store, wire the rest. Any component may be given (tests, reuse); the runtime
    closes the store it was given, not an embedder or LLM client it was given (see `Runtime.adopt`).

    The cross-language embedder (CROSS_LANGUAGE_MODEL) is built here when the embedder is EMBED_MODEL's own
    (built here, or by the app from the same settings); a caller that brings another embedder (tests on a
    small model) brings its own `cross_embedder`, or gets none. Whatever fails, what was built is closed."""
    built_embedder = embedder is None
    embedder = embedder or create_embedder(settings)
    owned_cross = None
    try:
        if cross_embedder is None and embedder.name == settings.embed_model:
            cross_embedder = owned_cross = create_cross_embedder(settings, embedder)
        reranker = reranker or create_reranker(settings)
        store = store or create_store(settings, embedder.dim, cross_embedder.dim if cross_embedder else None)
    except BaseException:
        _close_built(embedder if built_embedder else None, owned_cross)
        raise
    optimizer = BackgroundOptimizer(store)
    try:
        chunker = Chunker(embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap, hard_limit=embedder.max_tokens)
        sparse = create_sparse_encoder(settings)
        index = DocumentIndex(
            store, f"model={embedder.name};{chunker.fingerprint()}", sparse, embed_model=embedder.name, cross=cross_embedder
        )
        index.check_model()
        retriever = Retriever(
            QueryBatcher(embedder), sparse, index, RetrievalConfig.from_settings(settings), reranker=reranker,
            cross=cross_embedder,
        )
        # Parsing runs in worker processes that enforce the per-file budget (backend.ingest.isolation).
        # INGEST_WORKERS files are parsed at once ahead of the embedder; never fewer workers than the pool's default.
        parsing = ParsePool(chunker, ParseLimits.from_settings(settings), workers=max(PARSE_WORKERS, settings.ingest_workers))
        # After a write the store optimises: the rule of the ingest side, whoever wrote (API, job, CLI).
        pipeline = IngestPipeline(
            embedder, index, chunker, max_bytes=settings.max_upload_bytes, parsing=parsing, on_write=optimizer.schedule,
            workers=settings.ingest_workers,
        )
    except Exception:
        store.close()
        _close_built(embedder if built_embedder else None, owned_cross)
        raise
    runtime = Runtime(
        settings, embedder, store, index, retriever, pipeline,
        cross_embedder=cross_embedder, optimizer=optimizer, llm=llm, metrics=metrics,
    )
    runtime.adopt(*(["embedder"] if built_embedder else []), *(["cross_embedder"] if owned_cross else []))
    return runtime


def _close_built(embedder: Embedder | None, cross_embedder: Embedder | None) -> None:
    for built in (embedder, cross_embedder):
        if built is not None:
            built.close()
