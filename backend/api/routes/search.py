"""GET /search: dense, BM25 or hybrid search over one space."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from backend.api.deps import GrantDep, MetricsDep, RuntimeDep
from backend.api.schemas import ERROR_RESPONSES, SearchResponse
from backend.domain import validate_space

router = APIRouter(tags=["search"])


@router.get("/search", response_model=SearchResponse, responses=ERROR_RESPONSES)
def search(
    runtime: RuntimeDep,
    grant: GrantDep,
    metrics: MetricsDep,
    q: str = Query(..., description="The query text."),
    space_id: str = Query(..., description="The space to search."),
    top_k: int = Query(5, description="How many chunks to return (1..SEARCH_MAX_TOP_K)."),
    mode: Literal["dense", "sparse", "hybrid"] | None = Query(None, description="Retrieval mode; default SEARCH_MODE."),
    rerank: bool | None = Query(None, description="Rerank with RERANK_MODEL; default: when one is configured."),
) -> JSONResponse:
    """The `top_k` best chunks of `space_id` for `q`, best first."""
    grant.require(validate_space(space_id))
    start = time.perf_counter()
    retrieved = runtime.retriever.search(q, space_id, top_k, mode, rerank)
    metrics.observe_retrieval(retrieved.timings)
    timings = {**retrieved.timings, "total_ms": round((time.perf_counter() - start) * 1000, 3)}
    # Returned as is: the retriever already builds the documented shape, and re-validating it through the
    # response model costs more than the vector search itself. The model still documents the response.
    return JSONResponse({
        "results": retrieved.results, "space_id": space_id, "mode": retrieved.mode, "reranked": retrieved.reranked,
        "timings": timings,
    })
