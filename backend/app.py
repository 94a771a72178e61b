"""The FastAPI app factory and its lifespan: components are built at start-up and closed at shutdown."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from backend import __version__
from backend.api import openai
from backend.api.deps import Serving
from backend.api.errors import ErrorBarrier, install_error_handlers
from backend.api.request_guard import RequestGuard
from backend.api.routes import ask, documents, health, jobs, search, spaces
from backend.api.routes.console import install_console
from backend.auth import ApiKeys
from backend.errors import StoreLocked, StoreUnavailable
from backend.llm.base import LLMClient
from backend.llm.registry import create_llm_client
from backend.observability.loop_lag import watch_loop_lag
from backend.observability.metrics import Metrics
from backend.observability.request_context import RequestContext
from backend.retrieval.embedders.base import Embedder
from backend.retrieval.embedders.registry import create_embedder
from backend.runtime import Runtime, build_runtime
from backend.settings import Settings

log = logging.getLogger(__name__)


# While a Qdrant server cannot be reached at start, how often the backend tries again (it serves unready meanwhile).
STORE_RETRY_S = 5.0


def create_app(settings: Settings, runtime: Runtime | None = None, llm: LLMClient | None = None) -> FastAPI:
    """Build the app. `runtime` and `llm` may be given (tests); otherwise the lifespan builds and closes them.

    A given runtime is served through `Runtime.borrow`: with this app's settings, LLM client, jobs and metrics,
    and left open at shutdown (its owner closes it).

    With a Qdrant server (QDRANT_URL) that cannot be reached at start, the backend still starts: alive
    (/health 200), not ready (/ready 503), data endpoints 503 `store_unavailable`, and it connects as soon as
    the server answers. An orchestrator can then start the backend and Qdrant in any order. The embedded
    store has no such wait: a problem there (a lock held, a full disk) stops the start with its error.
    """

    def serve(app: FastAPI, rt: Runtime, owned: bool) -> None:
        serving: Serving = app.state.serving
        if owned and rt.store.kind == "edge":
            rt.advertise()
        rt.start()
        serving.runtime, serving.not_ready = rt, None
        app.state.metrics.set_info(__version__, rt.llm.engine, rt.embedder.name, rt.store.kind)
        log.info("serving: store=%s embedder=%s llm=%s", rt.store.kind, rt.embedder.name, rt.llm.engine)

    def build_owned(app: FastAPI, embedder: Embedder, client: LLMClient) -> Runtime:
        rt = build_runtime(settings, embedder=embedder, llm=client, metrics=app.state.metrics)
        rt.adopt("embedder", *(["llm"] if llm is None else []))  # built by this lifespan: closed with the runtime
        return rt

    async def connect_later(app: FastAPI, embedder: Embedder, client: LLMClient) -> None:
        while True:
            await asyncio.sleep(STORE_RETRY_S)
            try:
                rt = await run_in_threadpool(build_owned, app, embedder, client)
            except StoreUnavailable as exc:
                app.state.serving.not_ready = f"starting: {exc.message}"
                continue
            serve(app, rt, owned=True)
            return

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        serving = app.state.serving = Serving()  # nothing of an earlier run of this app is served again
        # The LLM client connects lazily: the backend starts, and serves search, while the engine is down.
        client = serving.llm = llm or create_llm_client(settings)
        retry: asyncio.Task | None = None
        if runtime is not None:
            borrowed = runtime.borrow(settings, client, app.state.metrics)
            if llm is None:
                borrowed.adopt("llm")
            serve(app, borrowed, owned=False)
        else:
            embedder = serving.embedder = await run_in_threadpool(create_embedder, settings)
            try:
                serve(app, await run_in_threadpool(build_owned, app, embedder, client), owned=True)
            except StoreUnavailable as exc:
                if not settings.qdrant_url or isinstance(exc, StoreLocked):
                    raise
                log.warning("not ready: %s; retrying every %g s", exc.message, STORE_RETRY_S)
                serving.not_ready = f"starting: {exc.message}"
                retry = asyncio.create_task(connect_later(app, embedder, client))
        if not app.state.api_keys.enabled:
            log.warning("API_KEYS is not set: every caller can search, ask, upload and delete in every space")
        lag = asyncio.create_task(watch_loop_lag(app.state.metrics.loop_lag), name="loop-lag")
        try:
            yield
        finally:
            lag.cancel()
            if retry is not None:
                retry.cancel()
            if serving.runtime is not None:
                # Jobs, then the LLM client, the registration, the store and the embedder: Runtime.close's order.
                await serving.runtime.aclose()
            else:  # never connected: only what this lifespan built so far
                if llm is None:
                    await client.aclose()
                if serving.embedder is not None:
                    await run_in_threadpool(serving.embedder.close)

    app = FastAPI(
        title="RAG appliance",
        version=__version__,
        description="Index a team's documents into Qdrant, search them, and answer questions with vLLM or Ollama.",
        lifespan=lifespan,
    )
    # app.state holds what the app serves with and what the middleware reads per request (tests change the keys
    # of a running app).
    app.state.serving = Serving()
    app.state.api_keys = ApiKeys.parse(settings.api_keys.get_secret_value())
    app.state.metrics = Metrics()
    install_error_handlers(app)
    # The key and the body's size are checked before the body is read. The callables read the live settings
    # and keys per request (tests change them on a running app).
    app.add_middleware(
        RequestGuard, api_keys=lambda: app.state.api_keys,
        upload_bytes=lambda: settings.max_upload_bytes, request_bytes=lambda: settings.max_request_bytes,
    )
    # Around the guard: unexpected errors get the 500 JSON on a connection that stays open; error bodies are scrubbed.
    app.add_middleware(ErrorBarrier)
    # Outermost (added last): its id and timing cover everything, the guard's 401 and 413 included.
    app.add_middleware(RequestContext, metrics=app.state.metrics)
    app.include_router(health.router)
    app.include_router(search.router)
    app.include_router(documents.router)
    app.include_router(jobs.router)
    app.include_router(spaces.router)
    app.include_router(ask.router)
    install_console(app)  # the web console: GET / and /console/*
    app.include_router(openai.router)
    return app
