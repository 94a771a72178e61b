"""vLLM through its OpenAI-compatible server, with the official `openai` SDK (AsyncOpenAI).

The model's real context limit comes from vLLM's `/v1/models` (`max_model_len`), token counts from vLLM's
own `/tokenize` endpoint (the served model's tokenizer, exact). Retries are the SDK's: connection errors,
408, 429 and 5xx, only for the request itself, so never after the first streamed token. The answer's SSE
body is parsed here, from raw bytes (see `stream_chat`), in linear time and with events capped at
`MAX_EVENT_BYTES` (backend/llm/wire.py).

Every reply is checked before it is used: a model list that is not JSON, has no `data` list or no
`max_model_len` is LLMBadResponse (502), never an exception that escapes as a 500. Error messages name
"the LLM engine (vLLM)", not its URL: VLLM_BASE_URL may hold credentials and is internal anyway; the URL,
redacted, goes to the server log with each failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import AsyncIterator, cast

import httpx
import httpx2  # the openai SDK's transport: mid-stream failures surface as its exceptions
import openai
from openai.types.chat import ChatCompletionMessageParam

from backend.errors import LLMBadResponse, LLMError, LLMModelNotFound, LLMTimeout, LLMUnavailable
from backend.llm.base import CONNECT_TIMEOUT_S, RETRY_ATTEMPTS, Message, ModelInfo, StreamEnd, TokenDelta, public_detail
from backend.llm.wire import IDENTITY, MAX_EVENT_BYTES, ReplyTooLarge, SseEvents, data_lines
from backend.redaction import redact_text, redact_url

log = logging.getLogger(__name__)

WHERE = "the LLM engine (vLLM)"
MAX_ERROR_TEXT = 300  # longest piece of an engine's error text quoted in a message
MAX_NAMES_SHOWN = 10  # served model names quoted when the configured one is missing


class VllmClient:
    """An `LLMClient` for a vLLM OpenAI-compatible server."""

    engine = "vllm"
    exact_token_counts = True

    def __init__(self, base_url: str, model: str = "", api_key: str | None = None, timeout_s: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=api_key or "EMPTY",  # vLLM without --api-key accepts any key; the SDK insists on one
            timeout=openai.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
            max_retries=RETRY_ATTEMPTS,
        )
        # /tokenize lives at the server root, next to /v1.
        root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=root, headers=headers, timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S))
        self._info: ModelInfo | None = None

    @classmethod
    def from_settings(cls, settings) -> "VllmClient":
        return cls(settings.vllm_base_url, settings.vllm_model, settings.vllm_api_key, settings.llm_timeout_s)

    def _failed(self, error: LLMError, quiet: bool = False, cause: BaseException | None = None) -> LLMError:
        """`error` (its message names no URL), logged with the redacted URL and the cause's own text for the
        operator; `quiet`: a health probe's failure (debug level: probes come every few seconds)."""
        why = f" ({type(cause).__name__}: {redact_text(str(cause))[:MAX_ERROR_TEXT]})" if cause is not None else ""
        log.log(logging.DEBUG if quiet else logging.WARNING, "vLLM at %s: %s%s", redact_url(self.base_url), error.message, why)
        return error

    def _translate(self, exc: Exception, what: str, replied: bool = False, quiet: bool = False) -> LLMError:
        """The LLMError for an SDK or HTTP exception, logged. `replied`: the engine had started answering, so
        a broken connection is a bad answer (502), not an unreachable engine (503): the same split as the
        Ollama client. Tenants' messages carry the exception's type, not its text (which may quote a URL)."""
        return self._failed(self._error(exc, what, replied), quiet, exc)

    def _error(self, exc: Exception, what: str, replied: bool) -> LLMError:
        kind = type(exc).__name__
        if isinstance(exc, (openai.APITimeoutError, httpx2.TimeoutException, httpx.TimeoutException)):
            return LLMTimeout(f"{WHERE} did not answer in time while {what}")
        if replied and isinstance(exc, (openai.APIConnectionError, httpx.TransportError, httpx2.TransportError)):
            return LLMBadResponse(f"{WHERE}: the connection broke while {what}: {kind}")
        if isinstance(exc, (openai.APIConnectionError, httpx.TransportError, httpx2.TransportError)):
            return LLMUnavailable(f"could not reach {WHERE} while {what} ({kind}); is it running at VLLM_BASE_URL?")
        if isinstance(exc, openai.NotFoundError):
            return LLMModelNotFound(f"{WHERE} does not serve model {self.model!r} ({_message(exc)}); check VLLM_MODEL")
        if isinstance(exc, openai.APIStatusError):
            return LLMBadResponse(f"{WHERE} answered {exc.status_code} while {what}: {_message(exc)}")
        if isinstance(exc, httpx.HTTPStatusError):
            return LLMBadResponse(f"{WHERE} answered {exc.response.status_code} while {what}: {public_detail(exc.response.text[:MAX_ERROR_TEXT])}")
        if isinstance(exc, ReplyTooLarge):
            return LLMBadResponse(f"{WHERE} sent {exc} while {what}; the request was closed")
        return LLMBadResponse(f"{WHERE} sent a malformed reply while {what} ({kind})")

    async def model_info(self, retries: bool = True, quiet: bool = False) -> ModelInfo:
        """The served model and its `max_model_len`, read once from /v1/models (`quiet`: for health probes).

        Raises LLMUnavailable, LLMModelNotFound, LLMTimeout, or LLMBadResponse for a model list that is not
        JSON or not shaped like one (no `data` list, entries without an `id`, no integer `max_model_len`)."""
        if self._info is not None:
            return self._info
        client = self._client if retries else self._client.with_options(max_retries=0)
        try:
            # The raw reply, parsed here: the SDK's parser lets malformed bodies escape as AttributeError,
            # TypeError or a page whose `data` is None.
            reply = await client.models.with_raw_response.list()
            listing = json.loads(reply.http_response.content)
        except (openai.APIError, httpx2.HTTPError) as exc:
            raise self._translate(exc, "listing models", quiet=quiet) from exc
        except ValueError as exc:  # not JSON, not UTF-8
            raise self._failed(LLMBadResponse(f"{WHERE} answered its model list with something that is not JSON"), quiet, exc) from exc
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise self._failed(LLMBadResponse(f"{WHERE} answered a model list without a `data` list"), quiet)
        served = {m["id"]: m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)}
        if not served and data:
            raise self._failed(LLMBadResponse(f"{WHERE} answered a model list whose entries have no `id`"), quiet)
        if not served:
            raise self._failed(LLMModelNotFound(f"{WHERE} serves no model"), quiet)
        if not self.model:
            self.model = next(iter(served))
        if self.model not in served:
            names = sorted(name[:100] for name in served)[:MAX_NAMES_SHOWN]
            raise self._failed(LLMModelNotFound(f"{WHERE} serves {names}, not {self.model!r}; set VLLM_MODEL to one of them"), quiet)
        entry = served[self.model]
        max_len = entry.get("max_model_len")
        if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len <= 0:
            raise self._failed(LLMBadResponse(f"{WHERE} did not report max_model_len for {self.model!r}"), quiet)
        self._info = ModelInfo("vllm", self.model, max_len)
        return self._info

    async def count_tokens(self, messages: list[Message]) -> list[int]:
        info = await self.model_info()

        async def one(text: str) -> int:
            try:
                response = await self._http.post("/tokenize", json={"model": info.model, "prompt": text, "add_special_tokens": False})
                response.raise_for_status()
                count = response.json()["count"]
                if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                    raise ValueError(f"a token count of {str(count)[:50]!r}")
                return count
            except (httpx.HTTPError, KeyError, ValueError, TypeError) as exc:
                raise self._translate(exc, "counting tokens") from exc

        return list(await asyncio.gather(*(one(m["content"]) for m in messages)))

    async def stream_chat(self, messages: list[Message], *, max_tokens: int, temperature: float) -> AsyncIterator[TokenDelta | StreamEnd]:
        """Stream the answer. The SDK opens the request (its retries, status errors and timeouts apply); the
        body is read as raw SSE bytes, and every delta that arrived in one network read is passed on as one
        TokenDelta. The request is closed whenever this generator ends: finished, failed, or closed early
        by the consumer (a client that left, the answer's deadline).

        Why not the SDK's chunk objects: building one per token cost the backend's single event loop
        about a third of a millisecond per token with /ask on top, which capped an H100 serving 64 streams
        at 12 req/s where vLLM itself did 20. Coalescing adds no delay (nothing waits for more bytes);
        under load, several tokens share a read and one event downstream.
        """
        info = await self.model_info()
        request = self._client.chat.completions.with_streaming_response.create(
            model=info.model,
            # Our messages are {"role": system | user | assistant, "content": text}: the SDK's typed dicts of
            # those roles, which mypy cannot see through a dict[str, str].
            messages=cast(list[ChatCompletionMessageParam], messages),
            max_tokens=max_tokens,
            temperature=temperature,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=IDENTITY,  # a compressed body would inflate before the event cap could see it
        )
        try:
            response = await request.__aenter__()
        except (openai.APIError, httpx2.HTTPError) as exc:
            raise self._translate(exc, "starting the answer") from exc
        parser = _SseChunks()
        try:
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise ReplyTooLarge(f"a compressed answer ({encoding[:50]}) though identity was asked")
            async for raw in response.iter_bytes():
                text = "".join(parser.feed(raw))
                if text:
                    yield TokenDelta(text)
        except (openai.APIError, httpx2.HTTPError, ReplyTooLarge) as exc:
            raise self._translate(exc, "streaming the answer", replied=True) from exc
        finally:
            await request.__aexit__(None, None, None)
        if parser.error is not None:
            raise self._failed(LLMBadResponse(f"{WHERE} failed mid-answer: {public_detail(parser.error)}"))
        if parser.finish_reason is None:
            raise self._failed(LLMBadResponse(f"{WHERE}: the stream ended before the answer was complete"))
        usage = parser.usage or {}
        yield StreamEnd(parser.finish_reason, _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))

    async def health(self) -> dict:
        """{"status": "ok"|"error", "engine", "url" (redacted), "model", "context_length"?, "error"?}; never
        raises: a health probe reports the engine's state, whatever the engine answered."""
        base = {"engine": "vllm", "url": redact_url(self.base_url), "model": self.model or None}
        try:
            self._info = None  # re-read: the server may have restarted with another model
            info = await self.model_info(retries=False, quiet=True)  # a health probe must answer fast, not retry
            return {**base, "status": "ok", "model": info.model, "context_length": info.context_length}
        except LLMError as exc:
            return {**base, "status": "error", "error_type": exc.error_type, "error": exc.message}
        except Exception as exc:  # a probe must report, not take /health down with it
            log.warning("vLLM health probe failed unexpectedly", exc_info=True)
            return {**base, "status": "error", "error_type": LLMError.error_type, "error": f"{WHERE} failed: {type(exc).__name__}"}

    async def aclose(self) -> None:
        await self._client.close()
        await self._http.aclose()


def _count(value) -> int | None:
    """A token count from the engine's usage, or None when it is not one."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _SseChunks:
    """Incremental parser of an OpenAI chat-completion SSE body: `feed(bytes)` returns the content deltas of
    the events completed by those bytes; finish reason, usage and an in-band error are kept as they come.
    Splitting is `SseEvents`' (linear time, events capped at `max_bytes`: ReplyTooLarge past it)."""

    def __init__(self, max_bytes: int = MAX_EVENT_BYTES) -> None:
        self._events = SseEvents(max_bytes)
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.error: str | None = None

    @property
    def scanned(self) -> int:
        """Bytes searched for event ends so far (linear in the bytes fed)."""
        return self._events.scanned

    def feed(self, data: bytes) -> list[str]:
        texts = []
        for event in self._events.feed(data):
            for line in data_lines(event):  # comments (": ping"), event names and ids carry nothing here
                payload = line.strip()
                if payload == b"[DONE]" or not payload:
                    continue
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    self.error = f"unreadable stream data {payload[:200]!r}"
                    continue
                if not isinstance(chunk, dict):
                    self.error = f"stream data that is not an object: {payload[:200]!r}"
                    continue
                if "error" in chunk:
                    error = chunk["error"]
                    message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
                    self.error = str(message)[:MAX_ERROR_TEXT]
                    continue
                if isinstance(chunk.get("usage"), dict):
                    self.usage = chunk["usage"]
                choices = chunk.get("choices")
                for choice in choices if isinstance(choices, list) else ():
                    if not isinstance(choice, dict):
                        continue
                    delta = choice.get("delta")
                    content = delta.get("content") if isinstance(delta, dict) else None
                    if isinstance(content, str) and content:
                        texts.append(content)
                    if isinstance(choice.get("finish_reason"), str):
                        self.finish_reason = choice["finish_reason"]
        return texts


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return public_detail(str(inner["message"]))[:MAX_ERROR_TEXT]
        if isinstance(body.get("message"), str):
            return public_detail(body["message"])[:MAX_ERROR_TEXT]
    return public_detail(str(exc))[:MAX_ERROR_TEXT]
