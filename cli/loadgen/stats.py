"""What one request measured (`RequestResult`) and what the results of one level add up to (`summarize`)."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class RequestResult:
    """One request as the client saw it (perf_counter seconds); `error` is None when it succeeded."""

    index: int
    started: float
    first_token: float | None = None
    ended: float | None = None
    stream_tokens: int = 0  # answer-text events received
    usage_tokens: int | None = None  # completion tokens reported by the server, when it reports them
    prompt_tokens: int | None = None
    error: str | None = None
    grounded: bool | None = None  # /ask: False when nothing relevant was found and the LLM was not called
    answer: str | None = None
    sources: frozenset[str] = field(default_factory=frozenset)  # every source given to the model (doc_id)
    cited: frozenset[str] = field(default_factory=frozenset)  # the sources the answer cites

    @property
    def output_tokens(self) -> int:
        """The server's count when it gave one (a stream event may carry several tokens), else the events."""
        return self.usage_tokens if self.usage_tokens is not None else self.stream_tokens


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100, linear interpolation); NaN for no values."""
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _ms(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 2) if values else None


def summarize(target: str, concurrency: int, results: list[RequestResult], wall_s: float) -> dict:
    """One report row from the results of one level, for any endpoint.

    req/s and output tok/s count successful requests over the level's wall time. TTFT: request sent to
    first answer token; TPOT: (last - first token) / (tokens - 1), for answers of 2+ tokens; e2e: request
    sent to end of stream. `token_source`: "usage" (server-reported completion tokens), "stream_events"
    (answer events counted), or "mixed". `answers_without_llm`: /ask answers that said nothing relevant was
    found without calling the LLM (they are fast and flatter every figure).
    """
    ok = [r for r in results if r.error is None]
    errors = Counter(r.error for r in results if r.error)
    ttft = [(r.first_token - r.started) * 1000 for r in ok if r.first_token is not None]
    tpot = [
        (r.ended - r.first_token) * 1000 / (r.output_tokens - 1)
        for r in ok
        if r.first_token is not None and r.ended is not None and r.output_tokens > 1
    ]
    e2e = [(r.ended - r.started) * 1000 for r in ok if r.ended is not None]
    sources = {"usage" if r.usage_tokens is not None else "stream_events" for r in ok}
    prompt_tokens = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    return {
        "target": target,
        "concurrency": concurrency,
        "requests": len(results),
        "errors": sum(errors.values()),
        "error_types": dict(errors),
        "wall_s": round(wall_s, 3),
        "req_s": round(len(ok) / wall_s, 3) if wall_s > 0 else None,
        "output_tok_s": round(sum(r.output_tokens for r in ok) / wall_s, 2) if wall_s > 0 else None,
        "ttft_p50_ms": _ms(ttft, 50),
        "ttft_p99_ms": _ms(ttft, 99),
        "tpot_p50_ms": _ms(tpot, 50),
        "tpot_p99_ms": _ms(tpot, 99),
        "e2e_p50_ms": _ms(e2e, 50),
        "e2e_p99_ms": _ms(e2e, 99),
        "token_source": sources.pop() if len(sources) == 1 else ("mixed" if sources else None),
        "prompt_tokens_mean": round(statistics.mean(prompt_tokens), 1) if prompt_tokens else None,
        "answers_without_llm": sum(1 for r in ok if r.grounded is False),
    }
