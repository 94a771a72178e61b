"""The long-lived components, built once from the settings and shared by the API and the CLI."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from backend.errors import StorageFull
from backend.ingest.chunking import Chunker
from backend.ingest.isolation import ParseLimits, ParsePool
from backend.ingest.pipeline import IngestPipeline
from backend.retrieval.index import DocumentIndex
from backend.retrieval.embedder import Embedder, create_embedder
from backend.retrieval.query_batching import QueryBatcher
from backend.retrieval.rerank import Reranker, create_reranker
from backend.retrieval.retriever import RetrievalConfig, Retriever
from backend.retrieval.sparse import create_sparse_encoder
from backend.retrieval.stores.registry import create_store
from backend.retrieval.stores.base import VectorStore
from backend.settings import Settings

log = logging.getLogger(__name__)


# Wait this long after the last write before optimising, so a burst of uploads triggers one run.
OPTIMIZE_DEBOUNCE_S = 2.0


class BackgroundOptimizer:
    """Runs `store.optimize()` in a background thread after writes (Qdrant Edge has no optimizer of its own)."""

    def __init__(self, store: VectorStore, debounce_s: float = OPTIMIZE_DEBOUNCE_S):
        self.store = store
        self.debounce_s = debounce_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="store-optimizer", daemon=True)
        self._thread.start()

    def schedule(self) -> None:
        self._wake.set()

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
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=600)


@dataclass
class Services:
    settings: Settings
    embedder: Embedder
    store: VectorStore
    index: DocumentIndex
    retriever: Retriever
    pipeline: IngestPipeline
    optimizer: BackgroundOptimizer = field(init=False)
    owns_embedder: bool = False  # built here (the CLI): its worker processes end with these services
    cross_embedder: Embedder | None = None  # CROSS_LANGUAGE_MODEL, when built here (in-process: closed with these)

    def __post_init__(self) -> None:
        self.optimizer = BackgroundOptimizer(self.store)

    def close(self) -> None:
        self.optimizer.stop()
        self.pipeline.close()
        self.store.close()
        if self.owns_embedder:
            self.embedder.close()
        if self.cross_embedder is not None:
            self.cross_embedder.close()


def create_cross_embedder(settings: Settings, embedder: Embedder) -> Embedder | None:
    """The CROSS_LANGUAGE_MODEL embedder, through the same factory as EMBED_MODEL; None when off or the same model."""
    name = settings.cross_language_model.strip()
    if not name or name == embedder.name:
        return None
    return create_embedder(settings.model_copy(update={"embed_model": name}))


def build_services(
    settings: Settings,
    embedder: Embedder | None = None,
    store: VectorStore | None = None,
    reranker: Reranker | None = None,
    cross_embedder: Embedder | None = None,
) -> Services:
    """Load the models, open the store, wire the rest. `embedder`/`store`/`reranker` may be given (tests, reuse).

    The cross-language embedder (CROSS_LANGUAGE_MODEL) is built here when the embedder is EMBED_MODEL's own
    (built here, or by the app from the same settings); a caller that brings another embedder (tests on a
    small model) brings its own `cross_embedder`, or gets none."""
    owns_embedder = embedder is None
    embedder = embedder or create_embedder(settings)
    owned_cross = None
    try:
        if cross_embedder is None and embedder.name == settings.embed_model:
            cross_embedder = owned_cross = create_cross_embedder(settings, embedder)
        reranker = reranker or create_reranker(settings)
        store = store or create_store(settings, embedder.dim, cross_embedder.dim if cross_embedder else None)
    except BaseException:
        if owns_embedder:
            embedder.close()
        if owned_cross is not None:
            owned_cross.close()
        raise
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
        parsing = ParsePool(chunker, ParseLimits.from_settings(settings))
        pipeline = IngestPipeline(embedder, index, chunker, max_bytes=settings.max_upload_bytes, parsing=parsing)
    except Exception:
        store.close()
        if owns_embedder:
            embedder.close()
        if owned_cross is not None:
            owned_cross.close()
        raise
    return Services(
        settings, embedder, store, index, retriever, pipeline, owns_embedder=owns_embedder, cross_embedder=owned_cross
    )
