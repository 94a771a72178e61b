"""Dependencies shared by the routes: the runtime the app's lifespan built, and the caller's grant and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from backend.auth import GRANT_SCOPE_KEY, Grant
from backend.errors import StoreUnavailable
from backend.ingest.jobs import JobManager
from backend.llm.admission import Admission
from backend.llm.base import LLMClient
from backend.observability.metrics import Metrics
from backend.rag import RagService
from backend.retrieval.embedders.base import Embedder
from backend.runtime import Runtime


@dataclass
class Serving:
    """What the app serves with (`app.state.serving`): the runtime once its store answers; until then why not
    (`not_ready`), and the LLM client and embedder already built, which the probes report meanwhile."""

    runtime: Runtime | None = None
    not_ready: str | None = "starting"
    llm: LLMClient | None = None
    embedder: Embedder | None = None


def get_serving(request: Request) -> Serving:
    return request.app.state.serving


ServingDep = Annotated[Serving, Depends(get_serving)]


def get_runtime(request: Request) -> Runtime:
    """The runtime; 503 store_unavailable while the backend waits for its store."""
    serving = get_serving(request)
    if serving.runtime is None:
        raise StoreUnavailable(serving.not_ready or "the backend is starting")
    return serving.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_rag(runtime: RuntimeDep) -> RagService:
    return runtime.rag


RagDep = Annotated[RagService, Depends(get_rag)]


def get_admission(runtime: RuntimeDep) -> Admission:
    """The runtime's one admission (ASK_MAX_IN_FLIGHT, the queue): every answering route passes it."""
    return runtime.admission


AdmissionDep = Annotated[Admission, Depends(get_admission)]


def get_jobs(runtime: RuntimeDep) -> JobManager:
    return runtime.jobs


JobsDep = Annotated[JobManager, Depends(get_jobs)]


def get_grant(request: Request) -> Grant:
    """The caller's grant from `Authorization: Bearer <key>` (everything when API_KEYS is unset).

    The request guard authenticated the request before its body was read; its grant is reused. None there is
    an anonymous caller of an open path (a probe), for whom a route that wants a key answers 401.
    """
    if GRANT_SCOPE_KEY in request.scope and request.scope[GRANT_SCOPE_KEY] is not None:
        return request.scope[GRANT_SCOPE_KEY]
    return request.app.state.api_keys.authenticate(request.headers.get("authorization"))


GrantDep = Annotated[Grant, Depends(get_grant)]


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


MetricsDep = Annotated[Metrics, Depends(get_metrics)]
