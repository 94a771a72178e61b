"""Documents on top of a `VectorStore`: identity, versions, crash-safe replacement, listing.

Identity. A document is (space, path): `doc_id` is derived from both, so the same file ingested again
maps to the same document. A point id is derived from (space, path, version, chunk_index), where the
version hashes the file's bytes with everything that shapes its chunks (embedding model, chunk sizes,
parser version): the same content always gives the same ids; changed content gives new ones.

Replacement is a staged commit, so readers never see a mix of two versions and a crash at any step
leaves a state the next run repairs:
  1. drop leftovers of an earlier, interrupted commit of this document (points in the staging space);
  2. write the new version's points under the staging space `~staging:<space>` (invisible to search);
  3. delete the live points of the document (all older versions);
  4. move the staged points into the live space (one set-payload by filter).
A crash in 1-2 leaves the old version live; in 3-4 the document is missing until the next run, which
finds it "changed" and commits again. `status()` calls a document unchanged only when every live point
belongs to the current version and their number equals the recorded chunk count.
"""

from __future__ import annotations

import builtins
import hashlib
import threading
from collections import defaultdict
from datetime import datetime, timezone
from typing import Sequence

import numpy as np

from backend.errors import DocumentNotFound, StoreUnavailable
from backend.domain import STAGING_PREFIX, Chunk, DocumentInfo, make_doc_id, make_point_id
from backend.retrieval.sparse import SparseEncoder, chunk_language
from backend.retrieval.stores.base import Filter, Hit, PointRecord, SearchQuery, VectorStore

# Bump when a parser change alters extracted text, so documents are re-indexed.
PARSER_VERSION = "1"
LISTING_FIELDS = ["doc_id", "space_id", "path", "chunk_count", "content_hash", "size_bytes", "indexed_at", "version"]


class DocumentIndex:
    """Document-level operations on a vector store."""

    def __init__(self, store: VectorStore, fingerprint: str, sparse: SparseEncoder, embed_model: str = "", cross=None):
        """`cross`: the cross-language embedder (CROSS_LANGUAGE_MODEL), used only when the store holds its vector."""
        self.store = store
        self.embed_model = embed_model
        self.cross = cross if cross is not None and getattr(store, "cross_dim", None) else None
        self.cross_model = self.cross.name if self.cross is not None else ""
        # Embedding model(s) + chunking + BM25 analysis: part of every version, so changing any re-indexes.
        self.fingerprint = f"{fingerprint};{sparse.fingerprint()}" + (f";cross={self.cross_model}" if self.cross else "")
        # The BM25 vector (and the cross-language one) is computed here, next to the dense one it is stored
        # with, for every writer.
        self.sparse = sparse
        self._doc_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()

    def version(self, content_hash: str) -> str:
        return hashlib.sha256(f"{content_hash}\x1f{self.fingerprint}\x1fparser={PARSER_VERSION}".encode()).hexdigest()[:16]

    def _lock(self, doc_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._doc_locks[doc_id]

    def status(self, space_id: str, doc_id: str, version: str) -> str:
        """'new' (no live points), 'unchanged' (exactly the current version, complete) or 'changed'."""
        live = self.store.count(Filter(must={"space_id": space_id, "doc_id": doc_id}))
        if live == 0:
            return "new"
        current = Filter(must={"space_id": space_id, "doc_id": doc_id, "version": version})
        head = next(iter(self.store.scroll(Filter(must={**current.must, "chunk_index": 0}), ["chunk_count"])), None)
        if head is not None and self.store.count(current) == head.get("chunk_count") == live:
            return "unchanged"
        return "changed"

    def commit(
        self,
        space_id: str,
        path: str,
        content_hash: str,
        size_bytes: int,
        chunks: Sequence[Chunk],
        vectors: np.ndarray,
    ) -> str:
        """Make `chunks` the document's live content; returns 'added', 'replaced' or 'unchanged'."""
        if len(chunks) != len(vectors) or not chunks:
            raise ValueError("commit needs one vector per chunk and at least one chunk")
        doc_id = make_doc_id(space_id, path)
        version = self.version(content_hash)
        staging = STAGING_PREFIX + space_id
        indexed_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        sparse = self.sparse.embed_documents([chunk.embed_text for chunk in chunks])
        cross = self.cross.embed_documents([chunk.embed_text for chunk in chunks]) if self.cross else [None] * len(chunks)
        points = [
            PointRecord(
                id=make_point_id(space_id, path, version, chunk.chunk_index),
                vector=vector,
                payload={
                    "space_id": staging,
                    "doc_id": doc_id,
                    "path": path,
                    "chunk_index": chunk.chunk_index,
                    "chunk_count": len(chunks),
                    "page": chunk.page,
                    "heading": chunk.heading,
                    "text": chunk.text,
                    "token_count": chunk.token_count,
                    "content_hash": content_hash,
                    "version": version,
                    "size_bytes": size_bytes,
                    "indexed_at": indexed_at,
                    "embed_model": self.embed_model,
                    "cross_model": self.cross_model,
                    # The chunk's language as BM25 analysis sees it: the space's language mix (GET /spaces)
                    # and when cross-language search is worth it come from here.
                    "lang": chunk_language(chunk.embed_text),
                },
                sparse=sparse_vector,
                cross=cross_vector,
            )
            for chunk, vector, sparse_vector, cross_vector in zip(chunks, vectors, sparse, cross)
        ]
        with self._lock(doc_id):
            # Another request may have committed this very version while we were embedding.
            state = self.status(space_id, doc_id, version)
            if state == "unchanged":
                return "unchanged"
            staged = Filter(must={"space_id": staging, "doc_id": doc_id})
            self.store.delete(staged)
            try:
                self.store.upsert(points)
            except Exception:
                # The old version is still live; do not leave a partial new one behind (best effort: the
                # next commit of this document drops staged leftovers anyway).
                try:
                    self.store.delete(staged)
                except Exception:
                    pass
                raise
            self.store.delete(Filter(must={"space_id": space_id, "doc_id": doc_id}))
            self.store.set_payload(Filter(must={"space_id": staging, "doc_id": doc_id, "version": version}), {"space_id": space_id})
        return "added" if state == "new" else "replaced"

    def check_model(self) -> None:
        """Refuse a store whose vectors come from another embedding model.

        Two models of the same dimension (MiniLM and multilingual-e5-small are both 384) would otherwise
        open the same store silently, and every search would compare vectors of different spaces.
        """
        if not self.embed_model:
            return
        stored = next(iter(self.store.scroll(Filter(must={"chunk_index": 0}), ["embed_model", "cross_model"], batch=1)), {})
        model = stored.get("embed_model")
        if model and model != self.embed_model:
            raise StoreUnavailable(
                f"the store holds vectors of EMBED_MODEL={model!r}, not {self.embed_model!r}: set EMBED_MODEL back, or "
                "index into a new DATA_DIR (or QDRANT_COLLECTION)"
            )
        # Same for the cross-language vector: two models of one dimension would share it silently.
        cross = stored.get("cross_model")
        if self.cross and cross and cross != self.cross_model:
            raise StoreUnavailable(
                f"the store holds cross-language vectors of CROSS_LANGUAGE_MODEL={cross!r}, not {self.cross_model!r}: set "
                "it back, or index into a new DATA_DIR (or QDRANT_COLLECTION)"
            )

    # Most spaces GET /spaces lists (one facet count over the tenant index).
    MAX_SPACES = 10000

    def spaces(self) -> dict[str, int]:
        """Chunks per live space (staging spaces of commits in progress left out)."""
        counts = self.store.facet("space_id", Filter(), limit=self.MAX_SPACES)
        return {space: n for space, n in sorted(counts.items()) if not space.startswith(STAGING_PREFIX)}

    def first_indexed(self) -> dict[str, int]:
        """Every live space holding documents, with the time its first document was indexed (unix seconds;
        0 when unknown).

        One scroll over the first chunk of every document (an indexed field), two payload fields each: the
        store's cost is one small record per document, not per chunk. Staged (half-committed) copies are skipped.
        """
        spaces: dict[str, int] = {}
        for payload in self.store.scroll(Filter(must={"chunk_index": 0}), ["space_id", "indexed_at"]):
            space = str(payload.get("space_id") or "")
            if not space or space.startswith(STAGING_PREFIX):
                continue
            try:
                created = int(datetime.fromisoformat(payload.get("indexed_at") or "").timestamp())
            except ValueError:
                created = 0
            spaces[space] = min(spaces.get(space, created), created) if created else spaces.get(space, 0)
        return spaces

    def document_count(self, space_id: str) -> int:
        return self.store.count(Filter(must={"space_id": space_id, "chunk_index": 0}))

    def language_mix(self, space_id: str) -> dict[str, int]:
        """Chunks per language in a space ('unknown': chunks indexed before languages were recorded)."""
        flt = Filter(must={"space_id": space_id})
        mix = self.store.facet("lang", flt)
        rest = self.store.count(flt) - sum(mix.values())
        if rest > 0:
            mix["unknown"] = rest
        return dict(sorted(mix.items(), key=lambda kv: (-kv[1], kv[0])))

    def delete(self, doc_id: str) -> int:
        """Remove every point of a document (live and staged); DocumentNotFound if it has none."""
        with self._lock(doc_id):
            n = self.store.count(Filter(must={"doc_id": doc_id}))
            if n == 0:
                raise DocumentNotFound(f"no document with id {doc_id!r}")
            self.store.delete(Filter(must={"doc_id": doc_id}))
        return n

    def get(self, doc_id: str) -> DocumentInfo:
        for payload in self.store.scroll(Filter(must={"doc_id": doc_id, "chunk_index": 0}), LISTING_FIELDS):
            if not str(payload.get("space_id", "")).startswith(STAGING_PREFIX):
                return _info(payload)
        raise DocumentNotFound(f"no document with id {doc_id!r}")

    def list(self, space_id: str) -> list[DocumentInfo]:
        docs = [_info(p) for p in self.store.scroll(Filter(must={"space_id": space_id, "chunk_index": 0}), LISTING_FIELDS)]
        return sorted(docs, key=lambda d: d.path)

    def count(self, space_id: str) -> int:
        return self.store.count(Filter(must={"space_id": space_id}))

    def search(self, space_id: str, query: SearchQuery, limit: int) -> builtins.list[Hit]:  # `list` is a method here
        return self.store.search(query, Filter(must={"space_id": space_id}), limit)


def _info(payload: dict) -> DocumentInfo:
    return DocumentInfo(
        doc_id=payload["doc_id"],
        space_id=payload["space_id"],
        path=payload["path"],
        chunks=int(payload.get("chunk_count", 0)),
        hash=payload.get("content_hash", ""),
        size_bytes=int(payload.get("size_bytes", 0)),
        indexed_at=payload.get("indexed_at", ""),
    )
