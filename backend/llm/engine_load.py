"""How loaded the engine says it is: vLLM's `vllm:num_requests_waiting` from its Prometheus `/metrics`.

Admission (admission.py) polls it when ASK_ENGINE_WAITING_MAX is set, so that a backend holds new answers back
while the engine already queues requests of its own (other backends or clients on the same vLLM included).
Each read has a short timeout and never raises: an engine whose metrics cannot be read reports None, and
admission then goes by its own limit alone.
"""

from __future__ import annotations

import logging
import re

import httpx

from backend.redaction import redact_url

log = logging.getLogger(__name__)

WAITING_METRIC = "vllm:num_requests_waiting"
READ_TIMEOUT_S = 0.5
# `vllm:num_requests_waiting{engine="0",model_name="m"} 3.0`: one sample per engine core (data parallel), summed.
_SAMPLE = re.compile(r"^vllm:num_requests_waiting(?:\{[^}]*\})?\s+([0-9.eE+-]+|NaN)\s*(?:\d+)?\s*$", re.MULTILINE)


def parse_waiting(text: str) -> float | None:
    """The sum of `vllm:num_requests_waiting` over its samples in a Prometheus text page; None when absent."""
    values = [float(v) for v in _SAMPLE.findall(text) if v != "NaN"]
    return sum(values) if values else None


def metrics_url(vllm_base_url: str) -> str:
    """vLLM serves /metrics at its root, next to /v1."""
    root = vllm_base_url.rstrip("/")
    return (root[: -len("/v1")] if root.endswith("/v1") else root) + "/metrics"


class EngineLoad:
    """Reads the engine's waiting requests from `url` (its /metrics page)."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = READ_TIMEOUT_S) -> None:
        self.url = url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout_s))
        self._failing = False

    @classmethod
    def from_settings(cls, settings) -> EngineLoad | None:
        """The probe for the configured engine, or None: polling is off (ASK_ENGINE_WAITING_MAX empty) or the engine
        is not vLLM (Ollama publishes no queue length)."""
        if settings.ask_engine_waiting_max is None or settings.llm_backend != "vllm":
            return None
        return cls(metrics_url(settings.vllm_base_url), settings.vllm_api_key)

    async def waiting(self) -> float | None:
        """Requests the engine has waiting now, or None when its metrics cannot be read (logged once per outage)."""
        try:
            response = await self._http.get(self.url)
            response.raise_for_status()
            value = parse_waiting(response.text)
            if value is None:
                raise ValueError(f"no {WAITING_METRIC} on the page")
        except (httpx.HTTPError, ValueError) as exc:
            if not self._failing:
                log.warning("engine load unknown (%s at %s: %s); admission goes by ASK_MAX_IN_FLIGHT alone",
                            type(exc).__name__, redact_url(self.url), str(exc)[:200])
            self._failing = True
            return None
        if self._failing:
            log.info("engine load readable again at %s", redact_url(self.url))
        self._failing = False
        return value

    async def aclose(self) -> None:
        await self._http.aclose()
