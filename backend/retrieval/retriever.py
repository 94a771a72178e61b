"""Query-time retrieval: embed the question, search one space, return scored chunks with timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from backend.errors import InvalidRequest, SpaceNotFound
from backend.retrieval.documents import DocumentIndex, validate_space
from backend.retrieval.embedder import Embedder

MAX_QUERY_CHARS = 2000
# Payload keys returned with every result (the embedded text itself is "text").
RESULT_FIELDS = ("text", "doc_id", "path", "chunk_index", "page", "heading", "content_hash")


@dataclass
class Retrieved:
    """Search results plus where the time went."""

    results: list[dict]
    timings: dict = field(default_factory=dict)


class Retriever:
    """Embeds a query and searches one space."""

    def __init__(self, embedder: Embedder, index: DocumentIndex, max_top_k: int = 50):
        self.embedder = embedder
        self.index = index
        self.max_top_k = max_top_k

    def search(self, q: str, space_id: str, top_k: int = 5) -> Retrieved:
        validate_space(space_id)
        q = (q or "").strip()
        if not q:
            raise InvalidRequest("q must not be empty")
        if len(q) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"q is too long ({len(q)} characters, at most {MAX_QUERY_CHARS})")
        if not 1 <= top_k <= self.max_top_k:
            raise InvalidRequest(f"top_k must be between 1 and {self.max_top_k}")
        t0 = time.perf_counter()
        vector = self.embedder.embed_query(q)
        t1 = time.perf_counter()
        hits = self.index.search(space_id, vector, top_k)
        t2 = time.perf_counter()
        if not hits and self.index.count(space_id) == 0:
            raise SpaceNotFound(f"space {space_id!r} has no documents; index some with cli.index_cli or POST /documents")
        results = [{"score": round(h.score, 6), **{k: h.payload.get(k) for k in RESULT_FIELDS}} for h in hits]
        timings = {"embed_ms": round((t1 - t0) * 1000, 3), "search_ms": round((t2 - t1) * 1000, 3)}
        return Retrieved(results=results, timings=timings)
