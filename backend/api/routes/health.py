"""Probes and metrics: GET /health (liveness), GET /ready (readiness), GET /metrics (Prometheus).

Liveness answers "is this process able to serve HTTP": always 200 while it does, so an orchestrator
restarts the backend only when it is stuck, never because Qdrant or the engine is down (a restart would
not bring them back). Readiness answers "should traffic be sent here": 503 while the store or the embedder
cannot serve. Neither depends on the LLM for its status code: search and documents work without it, and
the engine is usually run (and restarted) by someone else. Each component check is bounded in time so
a hanging dependency cannot make a probe time out, and whatever a check raises or returns (a dependency
that answers nonsense) becomes that component's `status: error`: the probe itself never fails.

The probes need no key, so what they show depends on the caller: internal addresses (the engine's and
Qdrant's URLs, the data directory) only to operators (a '*' key, or API_KEYS unset), and then with any
credentials in them masked.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from backend import __version__
from backend.api.deps import GrantDep, MetricsDep, Serving, ServingDep
from backend.api.schemas import ERROR_RESPONSES
from backend.auth import GRANT_SCOPE_KEY, is_operator
from backend.errors import AppError
from backend.observability.metrics import CONTENT_TYPE
from backend.redaction import hide_addresses, redact_text, redact_url, redact_value
from backend.observability.embed_workers import crash_counts

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])

# Longest a probe waits for one component (Kubernetes' default probe timeout is 1 s, ours are set to 5 s).
CHECK_TIMEOUT_S = 2.0
NO_STORE = {"Cache-Control": "no-store"}
# Fields that say where a component runs: shown to operators only.
ADDRESS_FIELDS = ("url", "path")


async def _bounded(check, component: str) -> dict:
    """The component's status from `check()`; any failure of the check is reported as the component's error."""
    try:
        result = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except asyncio.TimeoutError:
        return {"status": "error", "error_type": "timeout", "error": f"{component} did not answer within {CHECK_TIMEOUT_S:g} s"}
    except AppError as exc:
        return {"status": "error", "error_type": exc.error_type, "error": exc.message}
    except Exception as exc:  # a dependency that answered nonsense must not take the probe down with it
        log.warning("health check of %s failed", component, exc_info=True)
        return {"status": "error", "error_type": "check_failed", "error": f"the check of {component} failed ({type(exc).__name__})"}
    if not isinstance(result, dict) or not isinstance(result.get("status"), str):
        return {"status": "error", "error_type": "check_failed", "error": f"the check of {component} returned no status"}
    return _plain(result)


def _plain(value: Any) -> Any:
    """`value` as JSON can carry it (a check may return objects): other values become their str()."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return str(value)  # NaN and infinity too: JSON has no word for them


def _embedder_status(embedder) -> dict:
    try:
        status = {"status": "ok", "model": embedder.name, "backend": embedder.backend, "dim": embedder.dim, "max_tokens": embedder.max_tokens}
        pids = getattr(embedder, "worker_pids", None)
        if pids is not None:  # EMBED_ISOLATION=process: a worker between a crash and its restart is still "ok"
            status["workers"] = {role: "running" if pid else "restarting" for role, pid in pids().items()}
            status["worker_crashes"] = sum(crash_counts().values())
        return status
    except Exception as exc:
        return {"status": "error", "error_type": "check_failed", "error": f"the embedder did not describe itself ({type(exc).__name__})"}


def for_caller(components: dict, request: Request) -> dict:
    """The components as this caller may see them: addresses only for operators, credentials never."""
    if is_operator(request.scope.get(GRANT_SCOPE_KEY)):
        shown = redact_value(components, redact_text)
        for status in shown.values():
            for field in ADDRESS_FIELDS:
                if isinstance(status.get(field), str):
                    status[field] = redact_url(status[field])
        return shown
    hidden = {name: {k: v for k, v in status.items() if k not in ADDRESS_FIELDS} for name, status in components.items()}
    return redact_value(hidden, hide_addresses)


async def _components(serving: Serving) -> dict:
    runtime = serving.runtime
    if runtime is None:  # still waiting for its store (a Qdrant server that does not answer yet)
        store = {"status": "error", "error": serving.not_ready or "starting"}
        embedder = serving.embedder
        embedder_status = {"status": "ok", "model": embedder.name} if embedder is not None else {"status": "starting"}
        llm = serving.llm  # set by the lifespan before it yields; None only for an app that never started
        llm_status = await _bounded(llm.health, "the LLM engine") if llm is not None else {"status": "starting"}
        return {"store": store, "embedder": embedder_status, "llm": llm_status}
    store, llm_status = await asyncio.gather(
        _bounded(lambda: run_in_threadpool(runtime.store.health), "the store"),
        _bounded(runtime.llm.health, "the LLM engine"),
    )
    return {"store": store, "embedder": _embedder_status(runtime.embedder), "llm": llm_status}


def _core_ok(components: dict) -> bool:
    return components["store"]["status"] == "ok" and components["embedder"]["status"] == "ok"


@router.get("/health")
async def health(request: Request, serving: ServingDep) -> JSONResponse:
    """Liveness, with every component's status: 200 while the process serves; "degraded" when a component is down.

    Needs no API key (orchestrators probe it); it reveals versions and component status, no data. Where the
    components run (URLs, paths) is shown to '*' keys only when API_KEYS is set.
    """
    components = await _components(serving)
    ok = _core_ok(components) and components["llm"]["status"] == "ok"
    body = {"status": "ok" if ok else "degraded", "version": __version__, "components": for_caller(components, request)}
    return JSONResponse(body, headers=NO_STORE)


@router.get("/ready", responses={503: {"description": "The store or the embedder cannot serve."}})
async def ready(request: Request, serving: ServingDep) -> JSONResponse:
    """Readiness: 200 when search and ingestion can be served, 503 (same body) while the store or embedder cannot.

    An engine that is down is reported (`components.llm`) but keeps 200: /ask then answers 503
    llm_unavailable by itself, and the other endpoints still work. No API key needed.
    """
    components = await _components(serving)
    ready = _core_ok(components)
    body = {"status": "ready" if ready else "not_ready", "version": __version__, "components": for_caller(components, request)}
    return JSONResponse(body, status_code=200 if ready else 503, headers=NO_STORE)


@router.get(
    "/metrics", response_class=Response, responses={**ERROR_RESPONSES, 200: {"content": {CONTENT_TYPE: {}}}}
)
def metrics(metrics: MetricsDep, grant: GrantDep) -> Response:
    """Prometheus text format (docs/monitoring.md lists the series). With API_KEYS set, a '*' key is needed."""
    grant.require_all()
    return Response(metrics.render(), media_type=CONTENT_TYPE, headers=NO_STORE)
