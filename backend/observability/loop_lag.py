"""How late the backend's event loop runs what is due: `rag_event_loop_lag_seconds`.

One event loop relays every token stream, answers every request (a shed 503 included) and hands retrieval to
threads. When it is saturated, every client waits for it, and nothing else in /metrics says so: the stage
histograms time the work, not the wait for the loop to get to it. A probe sleeps `INTERVAL_S` and records how
much later than due it woke up: ~0 on an idle loop, the length of the queue of ready callbacks (and of the GIL
held by other threads) on a busy one. Issue 21: the GPU run's shed requests took p99 1.6 s while doing no
work of their own; this is the reading that tells a saturated loop from a slow handler.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Histogram

INTERVAL_S = 0.1


async def watch_loop_lag(histogram: Histogram, interval_s: float = INTERVAL_S) -> None:
    """Observe the loop's lateness every `interval_s` until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        histogram.observe(max(0.0, loop.time() - due))
