"""Probes and metrics: GET /health (liveness), GET /ready (readiness), GET /metrics (Prometheus).

Liveness answers "is this process able to serve HTTP": always 200 while it does, so an orchestrator
restarts the backend only when it is stuck, never because Qdrant or the engine is down (a restart would
not bring them back). Readiness answers "should traffic be sent here": 503 while the store or the embedder
cannot serve. Neither depends on the LLM for its status code: search and documents work without it, and
the engine is usually run (and restarted) by someone else. Each component check is bounded in time so
a hanging dependency cannot make a probe time out.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from backend import __version__
from backend.api.deps import GrantDep, MetricsDep
from backend.api.schemas import ERROR_RESPONSES
from backend.observability.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])

# Longest a probe waits for one component (Kubernetes' default probe timeout is 1 s, ours are set to 5 s).
CHECK_TIMEOUT_S = 2.0
NO_STORE = {"Cache-Control": "no-store"}


async def _bounded(check, component: str) -> dict:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except asyncio.TimeoutError:
        return {"status": "error", "error_type": "timeout", "error": f"{component} did not answer within {CHECK_TIMEOUT_S:g} s"}


async def _components(request: Request) -> dict:
    state = request.app.state
    services, llm = state.services, state.llm
    if services is None:  # still waiting for its store (a Qdrant server that does not answer yet)
        store = {"status": "error", "error": state.not_ready or "starting"}
        embedder = getattr(state, "embedder", None)
        embedder_status = {"status": "ok", "model": embedder.name} if embedder is not None else {"status": "starting"}
        return {"store": store, "embedder": embedder_status, "llm": await _bounded(llm.health, "the LLM engine")}
    embedder = services.embedder
    store, llm_status = await asyncio.gather(
        _bounded(lambda: run_in_threadpool(services.store.health), "the store"),
        _bounded(llm.health, "the LLM engine"),
    )
    return {
        "store": store,
        "embedder": {
            "status": "ok", "model": embedder.name, "backend": embedder.backend, "dim": embedder.dim, "max_tokens": embedder.max_tokens,
        },
        "llm": llm_status,
    }


def _core_ok(components: dict) -> bool:
    return components["store"]["status"] == "ok" and components["embedder"]["status"] == "ok"


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """Liveness, with every component's status: 200 while the process serves; "degraded" when a component is down.

    Needs no API key (orchestrators probe it); it reveals versions and component status, no data.
    """
    components = await _components(request)
    ok = _core_ok(components) and components["llm"]["status"] == "ok"
    body = {"status": "ok" if ok else "degraded", "version": __version__, "components": components}
    return JSONResponse(body, headers=NO_STORE)


@router.get("/ready", responses={503: {"description": "The store or the embedder cannot serve."}})
async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 when search and ingestion can be served, 503 (same body) while the store or embedder cannot.

    An engine that is down is reported (`components.llm`) but keeps 200: /ask then answers 503
    llm_unavailable by itself, and the other endpoints still work. No API key needed.
    """
    components = await _components(request)
    ready = _core_ok(components)
    body = {"status": "ready" if ready else "not_ready", "version": __version__, "components": components}
    return JSONResponse(body, status_code=200 if ready else 503, headers=NO_STORE)


@router.get(
    "/metrics", response_class=Response, responses={**ERROR_RESPONSES, 200: {"content": {CONTENT_TYPE: {}}}}
)
def metrics(metrics: MetricsDep, grant: GrantDep) -> Response:
    """Prometheus text format (docs/monitoring.md lists the series). With API_KEYS set, a '*' key is needed."""
    grant.require_all()
    return Response(metrics.render(), media_type=CONTENT_TYPE, headers=NO_STORE)
