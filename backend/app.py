"""The FastAPI app factory and its lifespan: components are built at start-up and closed at shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from backend import __version__
from backend.api.request_guard import RequestGuard
from backend.auth import ApiKeys
from backend.api.routes import ask, documents, health, jobs, search, spaces
from backend.api import openai
from backend.api.routes.console import install_console
from backend.api.errors import ErrorBarrier, install_error_handlers
from backend.errors import StoreLocked, StoreUnavailable
from backend.llm.base import LLMClient
from backend.observability.metrics import Metrics
from backend.observability.request_context import RequestContext
from backend.llm.registry import create_llm_client
from backend.rag import RagService
from backend.retrieval.embedder import create_embedder
from backend.services import Services, build_services
from backend.settings import Settings

log = logging.getLogger(__name__)


def _register(settings: Settings) -> None:
    """Tell CLIs on this machine where we serve (they cannot open the embedded store while we hold it)."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    registration = {"url": f"http://{host}:{settings.port}", "pid": os.getpid()}
    settings.backend_registration_file.write_text(json.dumps(registration))


def _unregister(settings: Settings) -> None:
    path = settings.backend_registration_file
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


# While a Qdrant server cannot be reached at start, how often the backend tries again (it serves unready meanwhile).
STORE_RETRY_S = 5.0


def create_app(settings: Settings, services: Services | None = None, llm: LLMClient | None = None) -> FastAPI:
    """Build the app. `services` and `llm` may be given (tests); otherwise the lifespan builds and closes them.

    With a Qdrant server (QDRANT_URL) that cannot be reached at start, the backend still starts: alive
    (/health 200), not ready (/ready 503), data endpoints 503 `store_unavailable`, and it connects as soon as
    the server answers. An orchestrator can then start the backend and Qdrant in any order. The embedded
    store has no such wait: a problem there (a lock held, a full disk) stops the start with its error.
    """

    def serve(app: FastAPI, svc: Services, client: LLMClient, owned: bool) -> None:
        if owned and svc.store.kind == "edge":
            _register(settings)
        svc.optimizer.start()
        app.state.jobs = jobs.start_job_worker(settings, svc, app.state.metrics)
        app.state.rag = RagService(svc.retriever, client, settings)
        app.state.services = svc
        app.state.not_ready = None
        app.state.metrics.set_info(__version__, client.engine, svc.embedder.name, svc.store.kind)
        log.info("serving: store=%s embedder=%s llm=%s", svc.store.kind, svc.embedder.name, client.engine)

    async def connect_later(app: FastAPI, embedder, client: LLMClient) -> None:
        while True:
            await asyncio.sleep(STORE_RETRY_S)
            try:
                svc = await run_in_threadpool(build_services, settings, embedder)
            except StoreUnavailable as exc:
                app.state.not_ready = f"starting: {exc.message}"
                continue
            serve(app, svc, client, owned=True)
            return

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = services is None
        # The LLM client connects lazily: the backend starts, and serves search, while the engine is down.
        client = llm or create_llm_client(settings)
        app.state.llm = client
        app.state.services = app.state.rag = app.state.jobs = None
        retry: asyncio.Task | None = None
        if not owned:
            serve(app, services, client, owned=False)
        else:
            embedder = await run_in_threadpool(create_embedder, settings)
            app.state.embedder = embedder
            try:
                serve(app, await run_in_threadpool(build_services, settings, embedder), client, owned=True)
            except StoreUnavailable as exc:
                if not settings.qdrant_url or isinstance(exc, StoreLocked):
                    raise
                log.warning("not ready: %s; retrying every %g s", exc.message, STORE_RETRY_S)
                app.state.not_ready = f"starting: {exc.message}"
                retry = asyncio.create_task(connect_later(app, embedder, client))
        if not app.state.api_keys.enabled:
            log.warning("API_KEYS is not set: every caller can search, ask, upload and delete in every space")
        try:
            yield
        finally:
            if retry is not None:
                retry.cancel()
            svc: Services | None = app.state.services
            if app.state.jobs is not None:
                # Before the store closes: files being indexed are committed, the rest reported interrupted.
                await run_in_threadpool(app.state.jobs.stop, settings.shutdown_timeout_s)
            if llm is None:
                await client.aclose()
            if svc is not None and owned:
                _unregister(settings)
                await run_in_threadpool(svc.close)
            elif svc is not None:
                svc.optimizer.stop()
            if owned:  # built here, so its worker processes (EMBED_ISOLATION=process) end here
                await run_in_threadpool(app.state.embedder.close)

    app = FastAPI(
        title="RAG appliance",
        version=__version__,
        description="Index a team's documents into Qdrant, search them, and answer questions with vLLM or Ollama.",
        lifespan=lifespan,
    )
    app.state.api_keys = ApiKeys.parse(settings.api_keys.get_secret_value())
    app.state.metrics = Metrics()
    app.state.not_ready = "starting"
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
