"""Qdrant Edge (qdrant-edge-py): the embedded engine, one shard on disk under DATA_DIR.

Qdrant Edge is single-process: a second process opening the shard fails on the WAL lock. We take our
own advisory lock first (`store.lock`), so the failure is a clear `StoreLocked` and the CLI can fall
back to sending files to the running backend. Edge runs no background optimizer, so `optimize()` builds
the HNSW index when the caller decides (after an ingest run).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import qdrant_edge as qe

from backend.disk_space import ensure_free_space
from backend.errors import StoreLocked, StoreUnavailable
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

# One thread per search: a query reads one or two segments, and more threads only contend with the
# embedder and the HTTP server for the same few cores (measured: store p99 16 ms -> see docs/benchmarks.md).
SEARCH_THREADS = 1
# Qdrant Edge writes through memory maps, and a write that finds the disk full kills the process with SIGBUS
# (seen on a full tmpfs: no exception reaches Python). So free space is checked before every write:
# - opening needs room for the WAL's preallocated segment and the segment files' first growth;
OPEN_MIN_FREE_BYTES = 64 * 1024 * 1024
# - an upsert may take this many times its raw size (WAL record + segment copy; measured ~1.6x on 4000 points
#   of 2 kB text, doubled for the optimiser's copy of the segment it rewrites);
WRITE_AMPLIFICATION = 4
# - deletes and payload moves write small WAL records.
SMALL_WRITE_BYTES = 1024 * 1024


EDGE = QdrantTypes(
    match=lambda key, value: qe.FieldCondition(key=key, match=qe.MatchValue(value)),
    filter=lambda must, must_not: qe.Filter(must=must, must_not=must_not),
    sparse=qe.SparseVector,
)


def _request(query: SearchQuery, flt: Filter, limit: int) -> qe.QueryRequest:
    """A query on one vector, or several fused in the engine (prefetch each, then RRF or DBSF)."""
    with_vector = [DENSE_VECTOR] if query.with_dense else None
    plan = fusion_plan(query, limit)
    if plan is None:
        name = query.lists()[0]
        return qe.QueryRequest(
            limit=limit, query=qe.Query.Nearest(EDGE.query_vector(query, name), using=name),
            filter=EDGE.filter_of(flt), with_payload=query.with_payload, with_vector=with_vector,
        )
    prefetches = [
        qe.Prefetch(limit=plan.candidates, query=qe.Query.Nearest(EDGE.query_vector(query, name), using=name),
                    filter=EDGE.filter_of(flt))
        for name in plan.lists
    ]
    fusion = qe.Fusion.Rrf(k=plan.rrf_k, weights=plan.weights) if plan.rrf_k is not None else qe.Fusion.Dbsf()
    return qe.QueryRequest(
        # The stub declares Fusion.Rrf/Dbsf as plain nested classes; at run time they subclass Fusion.
        limit=limit, prefetches=prefetches, query=fusion,  # type: ignore[arg-type]
        filter=EDGE.filter_of(flt), with_payload=True,
        with_vector=with_vector,
    )


def _raw_size(point: PointRecord) -> int:
    """Bytes a point carries: payload as JSON, dense floats, sparse indices and values."""
    sparse = len(point.sparse.indices) * 8 if point.sparse is not None else 0
    return len(json.dumps(point.payload, ensure_ascii=False)) + 4 * len(point.vector) + sparse


class EdgeStore:
    """A `VectorStore` on a Qdrant Edge shard."""

    kind = "edge"

    def __init__(
        self, directory: Path, dim: int, search_threads: int = SEARCH_THREADS, min_free_bytes: int = 0,
        cross_dim: int | None = None,
    ):
        self.directory = Path(directory)
        self.dim = dim
        self.cross_dim = cross_dim
        self.min_free_bytes = min_free_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ensure_room(OPEN_MIN_FREE_BYTES, "open the store", reserve=0)
        self._lock_file = self._acquire_process_lock()
        shard_dir = self.directory / "shard"
        try:
            if (shard_dir / "segments").exists() or (shard_dir / "wal").exists():
                self._shard = self._load(shard_dir, search_threads)
            else:
                self._shard = qe.EdgeShard.create(str(shard_dir), self._config(search_threads, self.cross_dim))
        except Exception as exc:  # qdrant_edge raises plain Exception with the engine's message
            self._release_process_lock()
            hint = ""
            if SPARSE_VECTOR in str(exc):
                hint = " (the store was created before hybrid search and has no BM25 vectors: re-index into a new DATA_DIR)"
            elif "incompatible" in str(exc).lower():
                hint = " (EMBED_MODEL changed? its vectors differ from the stored ones: use a new DATA_DIR)"
            raise StoreUnavailable(f"could not open the embedded Qdrant Edge store at {shard_dir}: {exc}{hint}") from exc
        self._ensure_indexes()
        # Writes are serialised: Edge applies them in order anyway, and bookkeeping relies on it.
        self._write_lock = threading.Lock()
        self._closed = False

    def _config(self, search_threads: int, cross_dim: int | None) -> qe.EdgeConfig:
        vectors = {DENSE_VECTOR: qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine)}
        if cross_dim:
            vectors[CROSS_VECTOR] = qe.EdgeVectorParams(size=cross_dim, distance=qe.Distance.Cosine)
        return qe.EdgeConfig(
            vectors=vectors,
            # IDF is the engine's: it knows the document frequencies of everything stored.
            sparse_vectors={SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            max_search_threads=search_threads,
        )

    def _load(self, shard_dir: Path, search_threads: int):
        """Open an existing shard; passing the config makes the engine check it against the stored vectors.

        A shard's vectors are fixed when it is created. One made before the cross-language vector (or with
        it, now switched off) fails that check on the `cross` key alone; it is then opened as it is and keeps
        working: without a cross vector, cross-language search is off for it (warned, and in /health)."""
        try:
            return qe.EdgeShard.load(str(shard_dir), self._config(search_threads, self.cross_dim))
        except Exception as exc:
            if CROSS_VECTOR not in str(exc) or "incompatible" not in str(exc).lower():
                raise
        if self.cross_dim:
            log.warning("the embedded store at %s has no cross-language vectors (created before CROSS_LANGUAGE_MODEL): "
                        "cross-language search is off for it; re-index into a new DATA_DIR to turn it on", shard_dir)
            self.cross_dim = None
            return qe.EdgeShard.load(str(shard_dir), self._config(search_threads, None))
        # Stored with the cross vector, which is now off: the engine's own config (dense size checked below).
        shard = qe.EdgeShard.load(str(shard_dir), None)
        return shard

    # -- process lock ---------------------------------------------------------------------------------
    def _acquire_process_lock(self):
        path = self.directory / "store.lock"
        handle = open(path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise StoreLocked(
                f"the embedded store {self.directory} is open in {owner}; Qdrant Edge allows one process. "
                "Send files to the running backend (the CLI does this by itself) or stop it first."
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        return handle

    def _release_process_lock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # -- setup ----------------------------------------------------------------------------------------
    def _ensure_indexes(self) -> None:
        for name, kind, is_tenant in payload_indexes(self._shard.info().payload_schema):
            params = qe.KeywordIndexParams(is_tenant=is_tenant) if kind == "keyword" else qe.PayloadSchemaType.Integer
            self._shard.update(qe.UpdateOperation.create_field_index(name, params))

    # -- disk space -----------------------------------------------------------------------------------
    def free_bytes(self) -> int:
        return shutil.disk_usage(self.directory).free

    def _ensure_room(self, needed: int, what: str, reserve: int | None = None) -> None:
        ensure_free_space(self.directory, needed, self.min_free_bytes if reserve is None else reserve, what)

    # -- VectorStore ----------------------------------------------------------------------------------
    def _update(self, operation: qe.UpdateOperation, size: int = SMALL_WRITE_BYTES) -> None:
        self._ensure_room(size, "write")
        try:
            with self._write_lock:
                self._shard.update(operation)
        except Exception as exc:
            raise StoreUnavailable(f"embedded store write failed: {exc}") from exc

    def upsert(self, points: Sequence[PointRecord]) -> None:
        for batch in upsert_batches(points):
            self._update(
                qe.UpdateOperation.upsert_points([qe.Point(p.id, EDGE.point_vectors(p), p.payload) for p in batch]),
                # plus room for the delete and payload move that complete a document's commit after it
                size=WRITE_AMPLIFICATION * sum(_raw_size(p) for p in batch) + 2 * SMALL_WRITE_BYTES,
            )

    def search(self, query: SearchQuery, flt: Filter, limit: int) -> list[Hit]:
        try:
            points = self._shard.query(_request(query, flt, limit))
        except Exception as exc:
            raise StoreUnavailable(f"embedded store search failed: {exc}") from exc
        return [to_hit(p) for p in points]

    def search_batch(self, requests: Sequence[tuple[SearchQuery, Filter]], limit: int) -> list[list[Hit]]:
        try:
            results = self._shard.query_batch(qe.QueryBatchRequest([_request(q, f, limit) for q, f in requests]))
        except Exception as exc:
            raise StoreUnavailable(f"embedded store search failed: {exc}") from exc
        return [[to_hit(p) for p in points] for points in results]

    def retrieve(self, ids: Sequence[str], with_dense: bool = False) -> dict[str, Hit]:
        try:
            points = self._shard.retrieve(list(ids), True, [DENSE_VECTOR] if with_dense else None)
        except Exception as exc:
            raise StoreUnavailable(f"embedded store retrieve failed: {exc}") from exc
        return {str(p.id): to_hit(p, score=0.0) for p in points}

    def scroll(self, flt: Filter, fields: Sequence[str] | None = None, batch: int = 256) -> Iterator[dict]:
        offset = None
        with_payload: Any = list(fields) if fields else True
        while True:
            try:
                records, offset = self._shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=batch, filter=EDGE.filter_of(flt), with_payload=with_payload)
                )
            except Exception as exc:
                raise StoreUnavailable(f"embedded store scroll failed: {exc}") from exc
            for record in records:
                yield dict(record.payload or {})
            if offset is None:
                return

    def count(self, flt: Filter) -> int:
        try:
            return int(self._shard.count(qe.CountRequest(exact=True, filter=EDGE.filter_of(flt))))
        except Exception as exc:
            raise StoreUnavailable(f"embedded store count failed: {exc}") from exc

    def delete(self, flt: Filter) -> None:
        self._update(qe.UpdateOperation.delete_points_by_filter(EDGE.filter_of(flt)))

    def set_payload(self, flt: Filter, payload: Mapping[str, Any]) -> None:
        self._update(qe.UpdateOperation.set_payload_by_filter(EDGE.filter_of(flt), dict(payload)))

    def facet(self, key: str, flt: Filter, limit: int = 32) -> dict[str, int]:
        try:
            response = self._shard.facet(qe.FacetRequest(key=key, limit=limit, exact=True, filter=EDGE.filter_of(flt)))
        except Exception as exc:
            raise StoreUnavailable(f"embedded store facet failed: {exc}") from exc
        return {str(hit.value): int(hit.count) for hit in response.hits}

    def optimize(self) -> None:
        # Optimising rewrites segments: it may need as much room again as they take.
        segments = sum(f.stat().st_size for f in (self.directory / "shard" / "segments").rglob("*") if f.is_file())
        self._ensure_room(segments, "optimise the index")
        try:
            with self._write_lock:
                self._shard.optimize()
        except Exception as exc:
            raise StoreUnavailable(f"embedded store optimisation failed: {exc}") from exc

    def health(self) -> dict:
        try:
            info = self._shard.info()
            return {
                "status": "ok",
                "engine": "qdrant-edge",
                "cross_language_vectors": bool(self.cross_dim),
                "path": str(self.directory),
                "points": info.points_count,
                "indexed_vectors": info.indexed_vectors_count,
                "segments": info.segments_count,
                "disk_free_mb": round(self.free_bytes() / 1048576),
                "min_free_disk_mb": round(self.min_free_bytes / 1048576),
            }
        except Exception as exc:
            return {"status": "error", "engine": "qdrant-edge", "error": str(exc)}

    def close(self) -> None:
        if getattr(self, "_closed", True):
            self._release_process_lock()
            return
        self._closed = True
        try:
            self._shard.flush()
            self._shard.close()
        finally:
            self._release_process_lock()

