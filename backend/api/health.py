"""GET /health: liveness plus the status of every component."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from backend import __version__
from backend.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(services: ServicesDep) -> JSONResponse:
    """Component status; 200 when every component is ok, 503 otherwise (the body says which)."""
    embedder = services.embedder
    components = {
        "store": services.store.health(),
        "embedder": {"status": "ok", "model": embedder.name, "dim": embedder.dim, "max_tokens": embedder.max_tokens},
    }
    ok = all(c.get("status") == "ok" for c in components.values())
    body = {"status": "ok" if ok else "degraded", "version": __version__, "components": components}
    return JSONResponse(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})
