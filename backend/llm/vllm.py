"""vLLM through its OpenAI-compatible server, with the official `openai` SDK (AsyncOpenAI).

The model's real context limit comes from vLLM's `/v1/models` (`max_model_len`), token counts from vLLM's
own `/tokenize` endpoint (the served model's tokenizer, exact). Retries are the SDK's: connection errors,
408, 429 and 5xx, only for the request itself, so never after the first streamed token. The answer's SSE
body is parsed here, from raw bytes (see `stream_chat`).
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

import httpx
import httpx2  # the openai SDK's transport: mid-stream failures surface as its exceptions
import openai

from backend.errors import LLMBadResponse, LLMError, LLMModelNotFound, LLMTimeout, LLMUnavailable
from backend.llm.base import CONNECT_TIMEOUT_S, RETRY_ATTEMPTS, Message, ModelInfo, StreamEnd, TokenDelta


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

    def _translate(self, exc: Exception, what: str, replied: bool = False) -> LLMError:
        """`replied`: the engine had started answering, so a broken connection is a bad answer (502), not
        an unreachable engine (503): the same split as the Ollama client."""
        where = f"vLLM at {self.base_url}"
        if isinstance(exc, (openai.APITimeoutError, httpx2.TimeoutException, httpx.TimeoutException)):
            return LLMTimeout(f"{where} did not answer in time while {what}")
        if replied and isinstance(exc, (openai.APIConnectionError, httpx.TransportError, httpx2.TransportError)):
            return LLMBadResponse(f"{where}: the connection broke while {what}: {type(exc).__name__}")
        if isinstance(exc, (openai.APIConnectionError, httpx.TransportError, httpx2.TransportError)):
            return LLMUnavailable(f"could not reach {where} while {what}: {exc}")
        if isinstance(exc, openai.NotFoundError):
            return LLMModelNotFound(f"{where} does not serve model {self.model!r} ({_message(exc)}); check VLLM_MODEL")
        if isinstance(exc, openai.APIStatusError):
            return LLMBadResponse(f"{where} answered {exc.status_code} while {what}: {_message(exc)}")
        if isinstance(exc, httpx.HTTPStatusError):
            return LLMBadResponse(f"{where} answered {exc.response.status_code} while {what}: {exc.response.text[:300]}")
        return LLMBadResponse(f"{where} failed while {what}: {type(exc).__name__}: {exc}")

    async def model_info(self, retries: bool = True) -> ModelInfo:
        if self._info is not None:
            return self._info
        client = self._client if retries else self._client.with_options(max_retries=0)
        try:
            page = await client.models.list()
        except (openai.APIError, httpx2.HTTPError) as exc:
            raise self._translate(exc, "listing models") from exc
        served = {m.id: m for m in page.data}
        if not served:
            raise LLMModelNotFound(f"vLLM at {self.base_url} serves no model")
        if not self.model:
            self.model = next(iter(served))
        if self.model not in served:
            raise LLMModelNotFound(
                f"vLLM at {self.base_url} serves {sorted(served)}, not {self.model!r}; set VLLM_MODEL to one of them"
            )
        extra = served[self.model].model_extra or {}
        max_len = extra.get("max_model_len")
        if not isinstance(max_len, int):
            raise LLMBadResponse(f"vLLM at {self.base_url} did not report max_model_len for {self.model!r}")
        self._info = ModelInfo("vllm", self.model, max_len, {"root": extra.get("root")})
        return self._info

    async def count_tokens(self, messages: list[Message]) -> list[int]:
        info = await self.model_info()

        async def one(text: str) -> int:
            try:
                response = await self._http.post("/tokenize", json={"model": info.model, "prompt": text, "add_special_tokens": False})
                response.raise_for_status()
                return int(response.json()["count"])
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                raise self._translate(exc, "counting tokens") from exc

        return list(await asyncio.gather(*(one(m["content"]) for m in messages)))

    async def stream_chat(self, messages: list[Message], *, max_tokens: int, temperature: float) -> AsyncIterator[TokenDelta | StreamEnd]:
        """Stream the answer. The SDK opens the request (its retries, status errors and timeouts apply); the
        body is read as raw SSE bytes, and every delta that arrived in one network read is passed on as one
        TokenDelta.

        Why not the SDK's chunk objects: building one per token cost the backend's single event loop
        about a third of a millisecond per token with /ask on top, which capped an H100 serving 64 streams
        at 12 req/s where vLLM itself did 20. Coalescing adds no delay (nothing waits for more bytes);
        under load, several tokens share a read and one event downstream.
        """
        info = await self.model_info()
        request = self._client.chat.completions.with_streaming_response.create(
            model=info.model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            stream=True,
            stream_options={"include_usage": True},
        )
        try:
            response = await request.__aenter__()
        except (openai.APIError, httpx2.HTTPError) as exc:
            raise self._translate(exc, "starting the answer") from exc
        parser = _SseChunks()
        try:
            async for raw in response.iter_bytes():
                text = "".join(parser.feed(raw))
                if text:
                    yield TokenDelta(text)
        except (openai.APIError, httpx2.HTTPError) as exc:
            raise self._translate(exc, "streaming the answer", replied=True) from exc
        finally:
            await request.__aexit__(None, None, None)
        if parser.error is not None:
            raise LLMBadResponse(f"vLLM at {self.base_url} failed mid-answer: {parser.error}")
        if parser.finish_reason is None:
            raise LLMBadResponse(f"vLLM at {self.base_url}: the stream ended before the answer was complete")
        usage = parser.usage or {}
        yield StreamEnd(parser.finish_reason, usage.get("prompt_tokens"), usage.get("completion_tokens"))

    async def health(self) -> dict:
        base = {"engine": "vllm", "url": self.base_url, "model": self.model or None}
        try:
            self._info = None  # re-read: the server may have restarted with another model
            info = await self.model_info(retries=False)  # a health probe must answer fast, not retry
            return {**base, "status": "ok", "model": info.model, "context_length": info.context_length}
        except LLMError as exc:
            return {**base, "status": "error", "error_type": exc.error_type, "error": exc.message}

    async def aclose(self) -> None:
        await self._client.close()
        await self._http.aclose()


class _SseChunks:
    """Incremental parser of an OpenAI chat-completion SSE body: `feed(bytes)` returns the content deltas of
    the events completed by those bytes; finish reason, usage and an in-band error are kept as they come."""

    def __init__(self) -> None:
        self._buffer = b""
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.error: str | None = None

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        *events, self._buffer = self._buffer.replace(b"\r\n", b"\n").split(b"\n\n")
        texts = []
        for event in events:
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue  # comments (": ping"), event names, ids
                payload = line[5:].strip()
                if payload == b"[DONE]" or not payload:
                    continue
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    self.error = f"unreadable stream data {payload[:200]!r}"
                    continue
                if "error" in chunk:
                    error = chunk["error"]
                    self.error = error.get("message", str(error)) if isinstance(error, dict) else str(error)
                    continue
                if chunk.get("usage"):
                    self.usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        texts.append(content)
                    if choice.get("finish_reason"):
                        self.finish_reason = choice["finish_reason"]
        return texts


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
        if isinstance(body.get("message"), str):
            return body["message"][:300]
    return str(exc)[:300]
