"""GET /health: liveness plus the status of every component."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from backend import __version__
from starlette.concurrency import run_in_threadpool

from backend.api.deps import RagDep, ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(services: ServicesDep, rag: RagDep) -> JSONResponse:
    """Component status: store, embedder and LLM.

    503 when the store or the embedder is down (nothing works without them). An LLM that is down makes the
    status "degraded" but keeps 200: search and documents still work, and an orchestrator must not restart
    the backend for an engine it does not run.
    """
    embedder = services.embedder
    components = {
        "store": await run_in_threadpool(services.store.health),
        "embedder": {
            "status": "ok", "model": embedder.name, "backend": embedder.backend, "dim": embedder.dim, "max_tokens": embedder.max_tokens,
        },
        "llm": await rag.llm.health(),
    }
    core_ok = components["store"]["status"] == "ok" and components["embedder"]["status"] == "ok"
    all_ok = core_ok and components["llm"]["status"] == "ok"
    body = {"status": "ok" if all_ok else "degraded", "version": __version__, "components": components}
    return JSONResponse(body, status_code=200 if core_ok else 503, headers={"Cache-Control": "no-store"})
