"""The optional reranking stage: a cross-encoder scores (question, chunk) pairs over the fused candidates.

Off by default (RERANK_MODEL empty): no cross-encoder ships inside a PyPI package, and the appliance
never downloads models at run time. Set RERANK_MODEL to a local folder holding a sentence-transformers
CrossEncoder (e.g. a copy of cross-encoder/ms-marco-MiniLM-L6-v2, or BAAI/bge-reranker-v2-m3 for
multilingual text) to enable it; docs/retrieval.md says what was and was not measured.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Protocol, Sequence

from backend.errors import EmbedderError


class Reranker(Protocol):
    """Scores how well each text answers the question; higher is better (any scale)."""

    name: str

    def rerank(self, question: str, texts: Sequence[str]) -> list[float]:
        ...


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder, on CPU or GPU."""

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 16, max_length: int = 512):
        from sentence_transformers import CrossEncoder
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bars in CLI output
        try:
            self._model = CrossEncoder(model, device=device, max_length=max_length, local_files_only=Path(model).is_dir())
        except Exception as exc:  # hub/format errors from several libraries
            raise EmbedderError(f"could not load the reranking model {model!r}: {exc}") from exc
        self.name = model
        self.batch_size = batch_size
        self._lock = threading.Lock()  # one forward pass at a time, as for the embedder

    def rerank(self, question: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        with self._lock:
            scores = self._model.predict(
                [(question, t) for t in texts], batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
            )
        return [float(s) for s in scores]


RerankerFactory = Callable[..., Reranker]
RERANKERS: dict[str, RerankerFactory] = {
    "cross-encoder": lambda s: CrossEncoderReranker(s.rerank_model, s.embed_device),
}


def create_reranker(settings) -> Reranker | None:
    """The reranker named by RERANK_BACKEND, or None when RERANK_MODEL is empty (the default)."""
    if not settings.rerank_model:
        return None
    return RERANKERS[settings.rerank_backend](settings)
