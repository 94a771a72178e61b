"""An answer's typed events in OpenAI's shapes: one `chat.completion`, or `chat.completion.chunk` Server-Sent
Events. The answer's JSON parts (`sources`, the `rag` extension) come from `Answer.to_dict()`, as POST /ask's."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

from fastapi.sse import format_sse_event

from backend.answers import Answer, AnswerEvent, AnswerStreamEvent
from backend.api.errors import error_body, unexpected
from backend.api.openai.conversation import sources_footer
from backend.api.streaming import sse_event
from backend.errors import AppError
from backend.observability.metrics import Metrics

log = logging.getLogger(__name__)

SSE_DONE = format_sse_event(data_str="[DONE]")
# What /ask says beyond the answer, in the `rag` extension of a rag/<space> model's completion.
RAG_INFO_KEYS = ("engine", "model", "grounded", "citations", "cited", "invalid_citations", "context", "timings")


@dataclass
class Completion:
    """One completion being answered: the identity shared by its chunks, and how its answer is shown."""

    model: str
    rag_answer: bool  # a rag/<space> model (retrieval, sources, the `rag` extension), not plain chat
    footer: bool  # append the cited sources to the answer's text
    legacy: bool = False  # /v1/completions: `text_completion` objects, the text in `choices[0].text`
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.id = self.id or f"{'cmpl' if self.legacy else 'chatcmpl'}-{uuid.uuid4().hex}"

    def envelope(self, obj: str) -> dict:
        if self.legacy:
            obj = "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "system_fingerprint": None}

    def choice(self, text: str | None, reason: str | None, role: bool = False) -> dict:
        """choices[0] of a completion (`text`) or of a stream's chunk (`delta`, `text` for legacy)."""
        if self.legacy:
            return {"text": text or "", "index": 0, "logprobs": None, "finish_reason": reason}
        delta: dict = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}

    def observe(self, answer: Answer, metrics: Metrics) -> dict:
        """The answer's JSON, observed in the metrics when it is a RAG answer (as /ask's are)."""
        data = answer.to_dict()
        if self.rag_answer:
            metrics.observe_answer(data)
        return data

    def extensions(self, data: dict) -> dict:
        """`sources` always, `rag` for a RAG answer."""
        return {"sources": data["sources"], **({"rag": {k: data[k] for k in RAG_INFO_KEYS if k in data}} if self.rag_answer else {})}

    def footer_text(self, answer: Answer) -> str:
        return sources_footer(answer.sources) if self.footer else ""

    def to_json(self, answer: Answer, metrics: Metrics) -> dict:
        """The whole `chat.completion`."""
        data = self.observe(answer, metrics)
        text = answer.text + self.footer_text(answer)
        if self.legacy:
            choice = self.choice(text, finish_reason(answer))
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                      "logprobs": None, "finish_reason": finish_reason(answer)}
        return {
            **self.envelope("chat.completion"),
            "choices": [choice],
            "usage": usage(answer),
            **self.extensions(data),
        }


def usage(answer: Answer) -> dict:
    """OpenAI's usage: zeros where the engine reported nothing (a refusal asks no engine)."""
    prompt = (answer.usage.prompt_tokens if answer.usage else None) or 0
    completion = (answer.usage.completion_tokens if answer.usage else None) or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(answer: Answer) -> str:
    return "length" if answer.finish_reason == "length" else "stop"


async def with_first(first: AnswerStreamEvent, events: AsyncIterator[AnswerStreamEvent]
                     ) -> AsyncIterator[AnswerStreamEvent]:
    """The answer's events, the one already pulled (to answer errors with their status) included."""
    yield first
    async for event in events:
        yield event


async def stream_chunks(completion: Completion, first: AnswerStreamEvent, events: AsyncGenerator[AnswerStreamEvent, None],
                        metrics: Metrics, include_usage: bool) -> AsyncIterator[bytes]:
    """`chat.completion.chunk`s (legacy: `text_completion`s, without the role's): the role, one per token, the
    footer, the finish_reason with `sources`, then
    (stream_options.include_usage) the usage with no choices, then `[DONE]`. A failure after the stream
    started is an `error` data line, then `[DONE]`, as OpenAI and vLLM do."""

    def chunk(text: str | None, reason: str | None = None, role: bool = False, **extra) -> bytes:
        return sse_event(None, {
            **completion.envelope("chat.completion.chunk"),
            "choices": [completion.choice(text, reason, role)],
            **({"usage": None} if include_usage else {}),
            **extra,
        })

    try:
        if not completion.legacy:
            yield chunk(None, role=True)
        async for event in with_first(first, events):
            if not isinstance(event, AnswerEvent):
                if event.text:
                    yield chunk(event.text)
                continue
            answer = event.answer
            data = completion.observe(answer, metrics)
            text = completion.footer_text(answer)
            if text:
                yield chunk(text)
            # `sources` ride on the chunk with the finish_reason; proxies that rebuild chunks (LiteLLM's) drop
            # unknown fields, so the footer above carries them in the text as well (docs/openai.md).
            yield chunk(None, finish_reason(answer), **completion.extensions(data))
            if include_usage:
                yield sse_event(None, {**completion.envelope("chat.completion.chunk"), "choices": [], "usage": usage(answer)})
    except AppError as exc:
        log.warning("chat completion stream failed after it started: %s", exc.error_type)
        metrics.observe_error(exc.error_type)
        yield sse_event(None, error_body(exc, "openai"))
    except Exception as exc:  # the status cannot change any more: say it in-band
        log.exception("chat completion stream failed")
        metrics.observe_error("internal_error")
        yield sse_event(None, error_body(unexpected(exc), "openai"))
    finally:
        await events.aclose()
    yield SSE_DONE
