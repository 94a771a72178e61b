"""`/v1/embeddings` from the appliance's own embedder: OpenAI's request and response shapes, with bounds.

Clients doing retrieval of their own (LangChain, LlamaIndex, Open WebUI's document upload) can use the
model the appliance already runs. Inputs are checked before any is embedded: their number
(OPENAI_EMBEDDINGS_MAX_INPUTS) and each one's length in the embedder's tokens (its `max_tokens`; a longer
text would be cut silently by the model, so it is refused with the index of the input at fault).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from backend.api.openai.errors import invalid, unsupported
from backend.api.openai.schemas import EmbeddingBody
from backend.retrieval.embedders.base import MAX_CHARS_PER_TOKEN, Embedder, clean_text


def _inputs(body: EmbeddingBody, max_inputs: int) -> list[str]:
    texts: list[Any] = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise invalid("input is empty: give a string or a list of strings", "input")
    if len(texts) > max_inputs:
        raise invalid(f"input has {len(texts)} items, at most {max_inputs} per request (OPENAI_EMBEDDINGS_MAX_INPUTS)",
                      "input")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise unsupported(f"input.{i}", "An input other than a string (token arrays)")
        if not text.strip():
            raise invalid(f"input[{i}] is empty", "input")
    return texts


def _token_counts(embedder: Embedder, texts: list[str]) -> list[int]:
    """Each text's tokens in the embedder's tokenizer; 400 for one over the embedder's limit."""
    counts = []
    for i, text in enumerate(texts):
        if len(text) > embedder.max_tokens * MAX_CHARS_PER_TOKEN:
            n = len(text)
            raise invalid(f"input[{i}] has {n} characters, more than the {embedder.max_tokens} tokens "
                          f"{embedder.name} reads; split it", "input")
        n = len(embedder.tokenizer.encode(clean_text(text), add_special_tokens=False).ids)
        if n > embedder.max_tokens:
            raise invalid(f"input[{i}] has {n} tokens, at most {embedder.max_tokens} for {embedder.name}; split it",
                          "input")
        counts.append(n)
    return counts


async def embed(embedder: Embedder, body: EmbeddingBody, max_inputs: int) -> dict:
    """OpenAI's embedding list for `body` (floats, or base64 of little-endian float32 as OpenAI sends)."""
    if body.dimensions is not None and body.dimensions != embedder.dim:
        raise unsupported("dimensions", f"dimensions other than the embedder's {embedder.dim}")
    texts = _inputs(body, max_inputs)
    counts = await run_in_threadpool(_token_counts, embedder, texts)
    run = embedder.embed_queries if body.input_type == "query" else embedder.embed_documents
    vectors = np.asarray(await run_in_threadpool(run, texts), dtype="<f4")
    data = []
    for i, vector in enumerate(vectors):
        value: Any = (base64.b64encode(vector.tobytes()).decode() if body.encoding_format == "base64"
                      else vector.tolist())
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(counts)
    return {"object": "list", "data": data, "model": embedder.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
