"""The LLM client role: one small interface, implemented for vLLM (OpenAI API) and Ollama.

Implementations translate their SDK's exceptions into the `LLMError` family at this boundary:
`LLMUnavailable` (could not connect), `LLMModelNotFound` (the engine does not serve the model),
`LLMTimeout`, `LLMBadResponse` (the engine answered an error or garbage). They retry only connection
errors (and, for the OpenAI SDK, 408/429/5xx) and only before the first token: never mid-stream.
Any reply that is not what the engine's API promises (not JSON, wrong shapes, an endless event) is
`LLMBadResponse`, never another exception. Messages name the engine ("the LLM engine (vLLM)"), not its URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import AsyncIterator, Protocol, Union

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}

# Named constants so that every engine behaves alike (seconds).
CONNECT_TIMEOUT_S = 5.0
RETRY_ATTEMPTS = 2  # extra attempts after the first, for connection errors before any token
RETRY_BACKOFF_S = 0.5


@dataclass(frozen=True)
class ModelInfo:
    """What the engine says about the model it serves."""

    engine: str  # "vllm" | "ollama"
    model: str
    context_length: int  # tokens the engine accepts for prompt + answer (vLLM max_model_len, Ollama num_ctx)


@dataclass(frozen=True)
class TokenDelta:
    """A piece of the answer's text, as streamed."""

    text: str


@dataclass(frozen=True)
class StreamEnd:
    """The stream finished normally."""

    finish_reason: str | None  # "stop", "length", ...
    prompt_tokens: int | None
    completion_tokens: int | None


StreamEvent = Union[TokenDelta, StreamEnd]


class LLMClient(Protocol):
    """A chat model served by an engine."""

    engine: str
    model: str
    exact_token_counts: bool  # True when count_tokens uses the model's own tokenizer

    async def model_info(self) -> ModelInfo:
        """The served model and its real context limit; raises LLMUnavailable / LLMModelNotFound."""
        ...

    async def count_tokens(self, messages: list[Message]) -> list[int]:
        """Token counts of each message's content, with the model's tokenizer when the engine exposes it,
        otherwise a conservative estimate (see `exact_token_counts`)."""
        ...

    def stream_chat(self, messages: list[Message], *, max_tokens: int, temperature: float) -> AsyncIterator[StreamEvent]:
        """Generate an answer: `TokenDelta`s, then exactly one `StreamEnd`. Errors raise the LLMError family;
        an error after the first token raises too (the caller reports it in-band). Closing the generator
        early (a client that left, the answer's deadline) closes the engine's request. A streamed event or
        line larger than `wire.MAX_EVENT_BYTES` is LLMBadResponse."""
        ...

    async def health(self) -> dict:
        """{"status": "ok"|"error", "engine", "url" (credentials masked), "model", "context_length"?, "error"?,
        "error_type"?}; never raises, whatever the engine answered (a liveness probe calls it)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


# A URL as it appears in exception texts and engine error bodies (up to a space, quote or bracket).
_URL = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>()\[\]{}]+""")


def public_detail(text: str) -> str:
    """An engine's or SDK's error text fit for a tenant's error message: every URL in it replaced by
    "<url>". Messages name the engine ("the LLM engine (vLLM)"), never where it runs: its URL is internal
    and may carry credentials (http://user:token@host). The clients log the redacted URL instead."""
    return _URL.sub("<url>", text)


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate (about 3 characters per token) for engines without a tokenize endpoint:
    overestimating drops a chunk too many, underestimating lets the engine truncate the prompt."""
    return len(text) // 3 + 4
