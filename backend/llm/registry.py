"""LLM_BACKEND -> client factory."""

from __future__ import annotations

from typing import Callable

from backend.llm.base import LLMClient


def _vllm(settings) -> LLMClient:
    from backend.llm.vllm import VllmClient

    return VllmClient.from_settings(settings)


def _ollama(settings) -> LLMClient:
    from backend.llm.ollama import OllamaClient

    return OllamaClient.from_settings(settings)


LLM_CLIENTS: dict[str, Callable[..., LLMClient]] = {"vllm": _vllm, "ollama": _ollama}


def create_llm_client(settings) -> LLMClient:
    """The client for the engine named by LLM_BACKEND (no connection is made here)."""
    return LLM_CLIENTS[settings.llm_backend](settings)
