"""Dependencies shared by the routes (the services built by the app's lifespan)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from backend.auth import GRANT_SCOPE_KEY, Grant
from backend.errors import StoreUnavailable
from backend.observability.metrics import Metrics
from backend.rag import RagService
from backend.services import Services


def started(request: Request, component: str):
    """A component the lifespan builds; 503 store_unavailable while the backend waits for its store."""
    value = getattr(request.app.state, component, None)
    if value is None:
        raise StoreUnavailable(request.app.state.not_ready or "the backend is starting")
    return value


def get_services(request: Request) -> Services:
    return started(request, "services")


ServicesDep = Annotated[Services, Depends(get_services)]


def get_rag(request: Request) -> RagService:
    return started(request, "rag")


RagDep = Annotated[RagService, Depends(get_rag)]


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
