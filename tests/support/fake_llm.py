"""A scriptable in-process LLMClient for unit tests of the answering plumbing (the real engines have their
own integration tests: vLLM on CPU, and the Ollama client against a server speaking Ollama's API)."""

from __future__ import annotations

import asyncio

from backend.errors import LLMError
from backend.llm.base import ModelInfo, StreamEnd, TokenDelta


class FakeLLM:
    engine = "fake"
    exact_token_counts = True

    def __init__(self, answer: str = "The answer is in the handbook [1].", context_length: int = 4096,
                 fail_before: LLMError | None = None, fail_after_tokens: int | None = None, fail_with: LLMError | None = None,
                 token_delay_s: float = 0.0):
        self.model = "fake-model"
        self.answer = answer
        self.context_length = context_length
        self.fail_before = fail_before
        self.fail_after_tokens = fail_after_tokens
        self.fail_with = fail_with
        self.token_delay_s = token_delay_s
        self.calls: list[list[dict]] = []
        self.kwargs: list[dict] = []  # each call's max_tokens and temperature

    async def model_info(self) -> ModelInfo:
        if self.fail_before:
            raise self.fail_before
        return ModelInfo("fake", self.model, self.context_length)

    async def count_tokens(self, messages):
        return [len(m["content"].split()) for m in messages]  # one token per word

    async def stream_chat(self, messages, *, max_tokens, temperature):
        if self.fail_before:
            raise self.fail_before
        self.calls.append(messages)
        self.kwargs.append({"max_tokens": max_tokens, "temperature": temperature})
        words = self.answer.split(" ")
        for i, word in enumerate(words):
            if self.fail_after_tokens is not None and i == self.fail_after_tokens:
                raise self.fail_with
            await asyncio.sleep(self.token_delay_s)
            yield TokenDelta(word if i == 0 else " " + word)
        yield StreamEnd("stop", 100, len(words))

    async def health(self):
        if self.fail_before:
            return {"status": "error", "engine": "fake", "error_type": self.fail_before.error_type, "error": self.fail_before.message}
        return {"status": "ok", "engine": "fake", "model": self.model, "context_length": self.context_length}

    async def aclose(self):
        pass
