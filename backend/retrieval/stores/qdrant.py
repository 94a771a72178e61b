"""A Qdrant server (or cluster) through qdrant-client: used when QDRANT_URL is set.

Every space lives in one collection, separated by the `space_id` payload key (a tenant index), which is
Qdrant's recommended multitenancy layout. The backend keeps no state of its own with this store, so
several replicas can share one Qdrant. In tests the same class runs over qdrant-client's local mode.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Mapping, Sequence

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from backend.errors import StoreUnavailable
from backend.redaction import redact_text, redact_url
from backend.retrieval.stores.base import (
    CROSS_VECTOR,
    DENSE_VECTOR,
    SPARSE_VECTOR,
    Filter,
    Hit,
    PointRecord,
    SearchQuery,
)
from backend.retrieval.stores.qdrant_layout import (
    QdrantTypes,
    fusion_plan,
    payload_indexes,
    to_hit,
    upsert_batches,
)

log = logging.getLogger(__name__)

# Errors of qdrant-client and its transports that mean "the store failed", translated to StoreUnavailable.
CLIENT_ERRORS = (UnexpectedResponse, ResponseHandlingException, httpx.HTTPError, ConnectionError, OSError, TimeoutError)


def _reason(exc: BaseException) -> str:
    """The kind of failure, in words that hold no address (qdrant-client's messages name the URL)."""
    inner = getattr(exc, "source", None) or exc  # ResponseHandlingException wraps the transport's error
    if isinstance(inner, UnexpectedResponse):
        return f"it answered HTTP {inner.status_code}"
    if isinstance(inner, (TimeoutError, httpx.TimeoutException)):
        return "it did not answer in time"
    if isinstance(inner, (httpx.TransportError, ConnectionError, OSError)):
        return "it could not be reached"
    return f"unexpected {type(inner).__name__} (details in the server log)"


CLIENT = QdrantTypes(
    match=lambda key, value: models.FieldCondition(key=key, match=models.MatchValue(value=value)),
    filter=lambda must, must_not: models.Filter(must=must, must_not=must_not),
    sparse=lambda indices, values: models.SparseVector(indices=indices, values=values),
)


def _query_args(query: SearchQuery, flt: Filter, limit: int) -> dict:
    """query_points arguments for a query on one vector, or several fused on the server (prefetch each)."""
    common = {"query_filter": CLIENT.filter_of(flt), "limit": limit, "with_payload": query.with_payload,
              "with_vectors": [DENSE_VECTOR] if query.with_dense else False}
    plan = fusion_plan(query, limit)
    if plan is None:
        name = query.lists()[0]
        return {**common, "query": CLIENT.query_vector(query, name), "using": name}
    prefetch = [
        models.Prefetch(query=CLIENT.query_vector(query, name), using=name, filter=CLIENT.filter_of(flt), limit=plan.candidates)
        for name in plan.lists
    ]
    fused: models.RrfQuery | models.FusionQuery
    if plan.rrf_k is not None:
        fused = models.RrfQuery(rrf=models.Rrf(k=plan.rrf_k, weights=plan.weights))
    else:
        fused = models.FusionQuery(fusion=models.Fusion.DBSF)
    return {**common, "prefetch": prefetch, "query": fused}


class QdrantServerStore:
    """A `VectorStore` on one collection of a Qdrant server."""

    kind = "qdrant"

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        dim: int,
        where: str = "qdrant",
        *,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        cross_dim: int | None = None,
    ):
        """`shard_number`, `replication_factor` and `write_consistency_factor` shape the collection on a Qdrant
        cluster when this store creates it (None: the server's default); an existing collection keeps its own.
        `cross_dim`: size of the cross-language vector; a collection made without it keeps working without it."""
        self.client = client
        self.collection = collection
        self.dim = dim
        self.cross_dim = cross_dim
        self.where = where
        self.shard_number = shard_number
        self.replication_factor = replication_factor
        self.write_consistency_factor = write_consistency_factor
        self._call(self._ensure_collection, "prepare the collection")

    @classmethod
    def from_url(
        cls,
        url: str,
        collection: str,
        dim: int,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        *,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        cross_dim: int | None = None,
    ):
        client = QdrantClient(url=url, api_key=api_key, timeout=int(max(timeout_s, 1)))
        return cls(
            client, collection, dim, where=url, shard_number=shard_number,
            replication_factor=replication_factor, write_consistency_factor=write_consistency_factor, cross_dim=cross_dim,
        )

    def _call(self, fn, what: str, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CLIENT_ERRORS as exc:
            # Where and what exactly go to the operator's log (credentials masked); the error, which tenants
            # see, names the component and the kind of failure, never the server's address.
            log.warning("Qdrant at %s: could not %s: %s", redact_url(self.where), what, exc)
            raise StoreUnavailable(f"the Qdrant server could not {what}: {_reason(exc)}") from exc

    def _ensure_collection(self) -> None:
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(
                self.collection,
                vectors_config=self._vectors_config(),
                # IDF is the server's: it knows the document frequencies of everything stored.
                sparse_vectors_config={SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                # Cluster layout (QDRANT_SHARD_NUMBER / _REPLICATION_FACTOR / _WRITE_CONSISTENCY_FACTOR); None
                # leaves the server's default. qdrant-client's local mode accepts and ignores them.
                shard_number=self.shard_number,
                replication_factor=self.replication_factor,
                write_consistency_factor=self.write_consistency_factor,
            )
        else:
            info = self.client.get_collection(self.collection)
            vectors = info.config.params.vectors
            params = vectors.get(DENSE_VECTOR) if isinstance(vectors, dict) else None
            if params is None or params.size != self.dim:
                raise StoreUnavailable(
                    f"collection {self.collection!r} on the Qdrant server does not hold {self.dim}-dim '{DENSE_VECTOR}' "
                    "vectors (EMBED_MODEL changed?): use another QDRANT_COLLECTION"
                )
            cross = vectors.get(CROSS_VECTOR) if isinstance(vectors, dict) else None
            if self.cross_dim and cross is None:
                # Named vectors are fixed when a collection is created: an older one keeps working without it.
                log.warning("collection %r has no cross-language vectors (created before CROSS_LANGUAGE_MODEL): "
                            "cross-language search is off for it; re-index into another QDRANT_COLLECTION", self.collection)
                self.cross_dim = None
            elif self.cross_dim and cross is not None and cross.size != self.cross_dim:
                raise StoreUnavailable(
                    f"collection {self.collection!r} on the Qdrant server holds {cross.size}-dim '{CROSS_VECTOR}' vectors, not "
                    f"{self.cross_dim} (CROSS_LANGUAGE_MODEL changed?): use another QDRANT_COLLECTION"
                )
            if SPARSE_VECTOR not in (info.config.params.sparse_vectors or {}):
                raise StoreUnavailable(
                    f"collection {self.collection!r} on the Qdrant server has no '{SPARSE_VECTOR}' sparse vectors (created "
                    "before hybrid search): re-index into another QDRANT_COLLECTION"
                )
        schema = self.client.get_collection(self.collection).payload_schema or {}
        for name, kind, is_tenant in payload_indexes(schema):
            field_schema: models.KeywordIndexParams | models.PayloadSchemaType
            if kind == "keyword":
                field_schema = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=is_tenant)
            else:
                field_schema = models.PayloadSchemaType.INTEGER
            self.client.create_payload_index(self.collection, name, field_schema=field_schema)

    def _vectors_config(self) -> dict:
        config = {DENSE_VECTOR: models.VectorParams(size=self.dim, distance=models.Distance.COSINE)}
        if self.cross_dim:
            config[CROSS_VECTOR] = models.VectorParams(size=self.cross_dim, distance=models.Distance.COSINE)
        return config

    def facet(self, key: str, flt: Filter, limit: int = 32) -> dict[str, int]:
        response = self._call(
            self.client.facet, "count languages", self.collection, key=key, facet_filter=CLIENT.filter_of(flt), limit=limit, exact=True
        )
        return {str(hit.value): int(hit.count) for hit in response.hits}

    def upsert(self, points: Sequence[PointRecord]) -> None:
        for points_batch in upsert_batches(points):
            batch = [models.PointStruct(id=p.id, vector=CLIENT.point_vectors(p), payload=p.payload) for p in points_batch]
            self._call(self.client.upsert, "write points", self.collection, points=batch, wait=True)

    def search(self, query: SearchQuery, flt: Filter, limit: int) -> list[Hit]:
        response = self._call(self.client.query_points, "search", self.collection, **_query_args(query, flt, limit))
        return [to_hit(p) for p in response.points]

    def search_batch(self, requests: Sequence[tuple[SearchQuery, Filter]], limit: int) -> list[list[Hit]]:
        batch = []
        for query, flt in requests:
            args = _query_args(query, flt, limit)
            batch.append(models.QueryRequest(
                query=args["query"], using=args.get("using"), prefetch=args.get("prefetch"), filter=args["query_filter"],
                limit=limit, with_payload=args["with_payload"], with_vector=args["with_vectors"],
            ))
        responses = self._call(self.client.query_batch_points, "search", self.collection, requests=batch)
        return [[to_hit(p) for p in r.points] for r in responses]

    def retrieve(self, ids: Sequence[str], with_dense: bool = False) -> dict[str, Hit]:
        records = self._call(
            self.client.retrieve, "fetch points", self.collection, ids=list(ids), with_payload=True,
            with_vectors=[DENSE_VECTOR] if with_dense else False,
        )
        return {str(r.id): to_hit(r, score=0.0) for r in records}

    def scroll(self, flt: Filter, fields: Sequence[str] | None = None, batch: int = 256) -> Iterator[dict]:
        offset = None
        with_payload: Any = list(fields) if fields else True
        while True:
            records, offset = self._call(
                self.client.scroll,
                "scroll",
                self.collection,
                scroll_filter=CLIENT.filter_of(flt),
                limit=batch,
                offset=offset,
                with_payload=with_payload,
                with_vectors=False,
            )
            for record in records:
                yield dict(record.payload or {})
            if offset is None:
                return

    def count(self, flt: Filter) -> int:
        return int(self._call(self.client.count, "count", self.collection, count_filter=CLIENT.filter_of(flt), exact=True).count)

    def delete(self, flt: Filter) -> None:
        selector = models.FilterSelector(filter=CLIENT.filter_of(flt))
        self._call(self.client.delete, "delete points", self.collection, points_selector=selector, wait=True)

    def set_payload(self, flt: Filter, payload: Mapping[str, Any]) -> None:
        self._call(
            self.client.set_payload, "set payload", self.collection, payload=dict(payload), points=CLIENT.filter_of(flt), wait=True
        )

    def optimize(self) -> None:
        """The server's own optimizer indexes in the background: nothing to do."""

    def health(self) -> dict:
        try:
            info = self.client.get_collection(self.collection)
            return {
                "status": "ok",
                "engine": "qdrant",
                "url": redact_url(self.where),
                "collection": self.collection,
                "cross_language_vectors": bool(self.cross_dim),
                "points": info.points_count,
                "indexed_vectors": info.indexed_vectors_count,
            }
        except CLIENT_ERRORS + (ValueError,) as exc:
            return {"status": "error", "engine": "qdrant", "url": redact_url(self.where), "error": redact_text(str(exc))}

    def close(self) -> None:
        self.client.close()
