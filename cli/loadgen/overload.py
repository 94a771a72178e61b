"""The soak's overload phase (`soak --overload-concurrency C`): offered load well beyond the backend's
ASK_MAX_IN_FLIGHT, to see that backpressure keeps the accepted answers' TTFT and sheds the rest fast.

`C` workers run the soak's closed loop for `--overload-s` seconds. A request the backend sheds (503
`overloaded`, or `queue_timeout` after its wait in the queue) is timed from send to the error reply, and its
worker then pauses `--overload-pause-s` (default 1 s, the backend's smallest Retry-After), as a client that
honours Retry-After would at least; a client retrying at once would only measure how fast refusals come back.
The summary: accepted answers (count, TTFT p50/p99), shed requests (count, by type, the reply's p50/p99 for
the immediate `overloaded` ones), queue timeouts, and any other error (there should be none).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from cli.loadgen.runner import Send, run_level
from cli.loadgen.stats import RequestResult, percentile

SHED_TYPES = {"503 overloaded": "overloaded", "503 queue_timeout": "queue_timeout"}


def _ms(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 2) if values else None


async def run_overload(send: Send, concurrency: int, duration_s: float, pause_s: float) -> dict:
    shed_ms: dict[str, list[float]] = {"overloaded": [], "queue_timeout": []}

    async def shedding_send(i: int) -> RequestResult:
        result = await send(i)
        kind = SHED_TYPES.get(result.error or "")
        if kind:
            shed_ms[kind].append((time.perf_counter() - result.started) * 1000)
            await asyncio.sleep(pause_s)
        return result

    results, wall = await run_level(shedding_send, concurrency, None, duration_s, f"overload c={concurrency}")
    ok = [r for r in results if r.error is None]
    ttft = [(r.first_token - r.started) * 1000 for r in ok if r.first_token is not None]
    other = Counter(r.error for r in results if r.error and r.error not in SHED_TYPES)
    return {
        "offered_c": concurrency,
        "wall_s": round(wall, 3),
        "requests": len(results),
        "accepted": len(ok),
        "accepted_req_s": round(len(ok) / wall, 3) if wall > 0 else None,
        "accepted_ttft_p50_ms": _ms(ttft, 50),
        "accepted_ttft_p99_ms": _ms(ttft, 99),
        "shed": len(shed_ms["overloaded"]) + len(shed_ms["queue_timeout"]),
        "shed_p50_ms": _ms(shed_ms["overloaded"], 50),
        "shed_p99_ms": _ms(shed_ms["overloaded"], 99),
        "queue_timeouts": len(shed_ms["queue_timeout"]),
        "queue_timeout_p50_ms": _ms(shed_ms["queue_timeout"], 50),
        "other_errors": sum(other.values()),
        "other_error_types": dict(other),
        "pause_after_shed_s": pause_s,
    }
