"""Ollama through the official `ollama` SDK (`ollama.AsyncClient`).

Every chat request sends `num_ctx`: without it Ollama silently truncates prompts to its small default
context (2048 or 4096 tokens depending on the version), which would cut the sources out of a RAG prompt
without any error. The effective context is `min(OLLAMA_NUM_CTX, the model's own)`, the model's own being
read from `/api/show` (`model_info["<architecture>.context_length"]`). Ollama has no tokenize endpoint, so
token counts are high estimates (`exact_token_counts = False`).

Errors: the SDK lets three kinds escape, all translated here into the `LLMError` family:
- `ollama.ResponseError`: an HTTP error status (404 = model not pulled), or an `{"error": ...}` line in the
  middle of a stream (then `status_code` is -1);
- the builtin `ConnectionError` for a refused connection on plain requests, but raw `httpx` exceptions for
  streamed ones (the SDK's stream path does not wrap them), and `httpx` timeouts everywhere;
- `ValueError` (`json.JSONDecodeError`, pydantic's `ValidationError`), `TypeError` or `AttributeError` (JSON
  that is not an object: the SDK calls `part.get(...)` and `Model(**part)`) for a body that is not Ollama's JSON.
Connection errors are retried (`RETRY_ATTEMPTS`, `RETRY_BACKOFF_S`) only before the first streamed chunk.

Bounds: the SDK reads NDJSON with httpx's line decoder, which has no line-size limit, and parses each line
whole; so every reply passes through `wire.cap_lines` (a streamed answer's line at most `MAX_EVENT_BYTES`,
other replies' lines `MAX_REPLY_LINE_BYTES`), and replies are asked uncompressed. Messages name "the LLM
engine (Ollama)", never its URL (internal, and it may carry credentials); the redacted URL goes to the log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncGenerator, AsyncIterator, Awaitable, Callable, TypeVar, cast

import httpx
import ollama

from backend.errors import LLMBadResponse, LLMError, LLMModelNotFound, LLMTimeout, LLMUnavailable
from backend.llm.base import (
    CONNECT_TIMEOUT_S,
    RETRY_ATTEMPTS,
    RETRY_BACKOFF_S,
    Message,
    ModelInfo,
    StreamEnd,
    StreamEvent,
    TokenDelta,
    estimate_tokens,
    public_detail,
)
from backend.llm.wire import IDENTITY, MAX_EVENT_BYTES, MAX_REPLY_LINE_BYTES, ReplyTooLarge, cap_lines
from backend.redaction import redact_text, redact_url

T = TypeVar("T")
log = logging.getLogger(__name__)

ENGINE = "ollama"
WHERE = "the LLM engine (Ollama)"
CHAT_PATH = "/api/chat"
# The capability Ollama's /api/show lists for models that can chat (embedding models list only "embedding").
CHAT_CAPABILITY = "completion"
# Longest piece of an error body quoted in a message (a proxy in front of Ollama may answer a whole HTML page).
MAX_ERROR_TEXT = 300

# Everything the SDK lets escape from a call (see the module docstring).
_SDK_ERRORS = (ollama.ResponseError, httpx.HTTPError, ConnectionError, ValueError, TypeError, AttributeError)
# Failures to open a connection: Ollama is not running there, or not reachable.
_CONNECT_ERRORS = (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout)


class OllamaClient:
    """An `LLMClient` for an Ollama server, with one model (`OLLAMA_MODEL`)."""

    engine = ENGINE
    exact_token_counts = False  # no tokenize endpoint: `estimate_tokens`, deliberately high

    def __init__(self, base_url: str, model: str, num_ctx: int = 8192, keep_alive: str = "30m", timeout_s: float = 120.0) -> None:
        """`num_ctx`: the context requested (capped at the model's own); `keep_alive`: how long Ollama keeps
        the model loaded ("30m", or seconds); `timeout_s`: the longest wait for Ollama's next bytes.
        The defaults are the settings' (OLLAMA_NUM_CTX, OLLAMA_KEEP_ALIVE, LLM_TIMEOUT_S)."""
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.num_ctx = num_ctx
        self.keep_alive = _keep_alive(keep_alive)
        self.timeout_s = timeout_s
        # The read timeout bounds the wait for every next bytes (the first token included), not the whole answer.
        # The hook bounds every reply's lines before the SDK's line decoder buffers them (module docstring).
        self._client = ollama.AsyncClient(
            host=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
            headers=IDENTITY,
            event_hooks={"response": [cap_lines(_line_limit)]},
        )
        self._info: ModelInfo | None = None

    @classmethod
    def from_settings(cls, settings) -> "OllamaClient":
        """The client described by the OLLAMA_* settings and LLM_TIMEOUT_S (no connection is made here)."""
        return cls(
            settings.ollama_base_url,
            settings.ollama_model,
            settings.ollama_num_ctx,
            settings.ollama_keep_alive,
            settings.llm_timeout_s,
        )

    # -- the LLMClient role -------------------------------------------------------------------------------

    async def model_info(self) -> ModelInfo:
        """The model's effective context (`min(num_ctx, the model's own)`), read once from `/api/show`.

        Raises LLMUnavailable (Ollama not reachable), LLMModelNotFound (not pulled, or not a chat model),
        LLMTimeout, LLMBadResponse."""
        if self._info is None:
            self._info = await self._read_model_info(retries=RETRY_ATTEMPTS)
        return self._info

    async def count_tokens(self, messages: list[Message]) -> list[int]:
        """High estimates: Ollama exposes no tokenizer over its API."""
        return [estimate_tokens(m["content"]) for m in messages]

    async def stream_chat(self, messages: list[Message], *, max_tokens: int, temperature: float) -> AsyncIterator[StreamEvent]:
        """`TokenDelta`s, then one `StreamEnd` with Ollama's `done_reason` and token counts.

        Connection errors are retried only until the first chunk arrives; once it has, any failure (the
        connection breaking, an `{"error"}` line, a stall longer than the timeout, the stream ending without
        its `done` chunk) raises the matching LLMError: replaying would duplicate text already sent."""
        info = await self.model_info()
        options = {
            # Always sent: Ollama's default context is small and it truncates longer prompts silently.
            "num_ctx": info.context_length,
            "num_predict": max_tokens,
            "temperature": temperature,
        }

        async def start() -> tuple[AsyncGenerator[ollama.ChatResponse, None], ollama.ChatResponse]:
            # The SDK declares an AsyncIterator; what it returns is an async generator, whose aclose() ends the
            # HTTP response at once.
            stream = cast(AsyncGenerator[ollama.ChatResponse, None], await self._client.chat(
                model=self.model, messages=messages, stream=True, keep_alive=self.keep_alive, options=options
            ))
            try:
                # The SDK sends the request on the first iteration: this is where a refused connection shows.
                return stream, await anext(stream)
            except BaseException:
                await stream.aclose()
                raise

        try:
            stream, chunk = await self._with_retries("starting the answer", start, retries=RETRY_ATTEMPTS)
        except StopAsyncIteration:
            raise self._failed(LLMBadResponse(f"{WHERE}: the stream ended before completion (no chunk at all)")) from None
        try:
            chunks = 1
            while True:
                if chunk.message.content:
                    yield TokenDelta(chunk.message.content)
                if chunk.done:
                    yield StreamEnd(chunk.done_reason, chunk.prompt_eval_count, chunk.eval_count)
                    return
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    raise self._failed(LLMBadResponse(
                        f"{WHERE}: the stream ended before completion (chunks received: {chunks}, none marked done)"
                    )) from None
                except _SDK_ERRORS as exc:
                    raise self._translate(exc, f"streaming the answer (chunks received: {chunks})", replied=True) from exc
                chunks += 1
        finally:
            # Also runs when the consumer stops early (aclose): releases the HTTP response at once.
            await stream.aclose()

    async def health(self) -> dict:
        """{"status": "ok", "engine", "model", "context_length", "url"} or {"status": "error", ..., "error",
        "error_type"}; never raises. `url` is redacted (no user, password or secret parameters).

        Always asks Ollama again (the cached info says nothing about whether it is still up, or whether the
        model is still pulled), without retries so that a probe answers fast."""
        base = {"engine": self.engine, "model": self.model, "url": redact_url(self.base_url)}
        try:
            info = await self._read_model_info(retries=0, quiet=True)
        except LLMError as exc:
            return {**base, "status": "error", "error": exc.message, "error_type": exc.error_type}
        except Exception as exc:  # a health probe must report, not take /health down with it
            log.warning("Ollama health probe failed unexpectedly", exc_info=True)
            return {**base, "status": "error", "error": f"{WHERE} failed: {type(exc).__name__}", "error_type": LLMError.error_type}
        self._info = info
        return {**base, "status": "ok", "context_length": info.context_length}

    async def aclose(self) -> None:
        """Close the SDK's HTTP client (its connection pool)."""
        await self._client.close()

    # -- internals ------------------------------------------------------------------------------------------

    async def _read_model_info(self, *, retries: int, quiet: bool = False) -> ModelInfo:
        shown = await self._with_retries(
            "reading the model's details", lambda: self._client.show(self.model), retries=retries, quiet=quiet
        )
        capabilities = list(shown.capabilities or [])
        # Older Ollama versions do not report capabilities: then the first chat request tells.
        if capabilities and CHAT_CAPABILITY not in capabilities:
            raise self._failed(LLMModelNotFound(
                f"Ollama model {self.model!r} cannot chat (capabilities: {', '.join(capabilities)}); "
                "set OLLAMA_MODEL to a chat model"
            ), quiet)
        own = _model_context_length(dict(shown.modelinfo or {}))
        return ModelInfo(engine=ENGINE, model=self.model, context_length=min(self.num_ctx, own) if own else self.num_ctx)

    async def _with_retries(self, what: str, call: Callable[[], Awaitable[T]], *, retries: int, quiet: bool = False) -> T:
        """`call()`, repeated after `RETRY_BACKOFF_S` when it failed before Ollama answered anything."""
        for attempt in range(retries + 1):
            try:
                return await call()
            except _SDK_ERRORS as exc:
                if attempt < retries and _is_retryable(exc):
                    await asyncio.sleep(RETRY_BACKOFF_S)
                    continue
                raise self._translate(exc, what, quiet=quiet) from exc
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _failed(self, error: LLMError, quiet: bool = False, cause: BaseException | None = None) -> LLMError:
        """`error` (its message names no URL), logged with the redacted URL and the cause's own text for the
        operator; `quiet`: a health probe's failure (debug level: probes come every few seconds)."""
        why = f" ({type(cause).__name__}: {redact_text(str(cause))[:MAX_ERROR_TEXT]})" if cause is not None else ""
        log.log(logging.DEBUG if quiet else logging.WARNING, "Ollama at %s: %s%s", redact_url(self.base_url), error.message, why)
        return error

    def _translate(self, exc: Exception, what: str, *, replied: bool = False, quiet: bool = False) -> LLMError:
        """The LLMError for an SDK exception, logged; `replied`: Ollama had already started answering."""
        return self._failed(self._error(exc, what, replied), quiet, exc)

    def _error(self, exc: Exception, what: str, replied: bool) -> LLMError:
        kind = type(exc).__name__
        if isinstance(exc, _CONNECT_ERRORS):
            return LLMUnavailable(f"could not reach {WHERE} while {what}: is `ollama serve` running at OLLAMA_BASE_URL?")
        if isinstance(exc, httpx.TimeoutException):
            return LLMTimeout(f"{WHERE} sent nothing for {self.timeout_s:g} s (LLM_TIMEOUT_S) while {what}")
        if isinstance(exc, ollama.ResponseError):
            text = public_detail(str(exc.error)[:MAX_ERROR_TEXT])
            if exc.status_code == 404:
                return LLMModelNotFound(f"{WHERE} does not have model {self.model!r} ({text}): run `ollama pull {self.model}`")
            if exc.status_code < 0:  # the SDK's marker for an {"error": ...} line inside a 200 stream
                return LLMBadResponse(f"{WHERE} reported an error while {what}: {text}")
            return LLMBadResponse(f"{WHERE} answered {exc.status_code} while {what}: {text}")
        if isinstance(exc, httpx.TransportError):
            # Before any reply the engine is as good as unreachable; after it, the answer is broken.
            if replied:
                return LLMBadResponse(f"the connection to {WHERE} broke while {what}: {kind}")
            return LLMUnavailable(f"the connection to {WHERE} broke before it answered, while {what}: {kind}")
        if isinstance(exc, ReplyTooLarge):
            return LLMBadResponse(f"{WHERE} sent {exc} while {what}; the request was closed")
        return LLMBadResponse(f"{WHERE} sent a malformed reply while {what} ({kind})")


def _line_limit(path: str) -> int:
    """The longest line accepted in a reply to `path`: an answer's NDJSON chunk, or any other reply."""
    return MAX_EVENT_BYTES if path.endswith(CHAT_PATH) else MAX_REPLY_LINE_BYTES


def _is_retryable(exc: Exception) -> bool:
    """Connection failures, and connections dropped before any reply (e.g. a pooled keep-alive connection
    Ollama had already closed): the request can be sent again. Timeouts are not retried (the wait would
    multiply), nor are answers (an error status means Ollama did process the request)."""
    if isinstance(exc, _CONNECT_ERRORS):
        return True
    return isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.TimeoutException)


def _model_context_length(modelinfo: dict) -> int | None:
    """The model's trained context from /api/show's `model_info`: `<architecture>.context_length`."""
    arch = modelinfo.get("general.architecture")
    value = modelinfo.get(f"{arch}.context_length") if arch else None
    if not isinstance(value, int):
        value = next((v for k, v in modelinfo.items() if k.endswith(".context_length") and isinstance(v, int)), None)
    return value if value and value > 0 else None


def _keep_alive(value: str) -> str | float:
    """OLLAMA_KEEP_ALIVE as Ollama's API expects it: a duration string ("30m", "1h") or a number of seconds
    (negative = keep loaded forever). Ollama parses a JSON string with Go's ParseDuration, which rejects a
    bare number like "-1" or "3600", so numeric values are sent as numbers."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else number
