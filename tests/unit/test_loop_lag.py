"""The event-loop lag probe (backend/observability/loop_lag.py) records how long a blocked loop kept it waiting."""

import asyncio
import time

from prometheus_client import CollectorRegistry, Histogram

from backend.observability.loop_lag import watch_loop_lag


def _sum_and_count(histogram: Histogram) -> tuple[float, float]:
    samples = {s.name: s.value for metric in histogram.collect() for s in metric.samples}
    return samples["lag_seconds_sum"], samples["lag_seconds_count"]


def test_a_blocked_loop_shows_up_as_lag_and_an_idle_one_does_not():
    histogram = Histogram("lag_seconds", "test", buckets=(0.05, 0.2, 1.0), registry=CollectorRegistry())

    async def scenario() -> None:
        probe = asyncio.create_task(watch_loop_lag(histogram, interval_s=0.02))
        await asyncio.sleep(0.2)  # idle: the probe wakes about on time
        idle_sum, idle_count = _sum_and_count(histogram)
        assert idle_count >= 3
        time.sleep(0.4)  # a handler that blocks the loop (CPU work, a blocking call) for 0.4 s
        await asyncio.sleep(0.1)
        probe.cancel()
        blocked_sum, _ = _sum_and_count(histogram)
        # The probe that was due during the block woke >= 0.4 - 0.02 s late: that lateness is recorded.
        assert blocked_sum - idle_sum >= 0.35
        assert idle_sum < blocked_sum - idle_sum

    asyncio.run(scenario())
