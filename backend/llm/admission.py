"""Backpressure: how many answers one backend lets use the engine at once, and what the others get.

Every answer (`POST /ask`, `/v1/chat/completions`, `/v1/completions`) passes one `Admission`, owned by the
runtime. An answer takes a slot before any work of its own (retrieval included) and gives it back when its
generators close (its end, an error, a timeout, a client that left). At most ASK_MAX_IN_FLIGHT answers hold a
slot; up to ASK_QUEUE_SIZE more wait for one, first come first served, each for at most ASK_QUEUE_TIMEOUT_S.
Beyond that a request is shed at once, before any work: 503 `overloaded`, or 503 `queue_timeout` after the
wait, both with `Retry-After` (an estimate of when a slot frees up). Queueing without a bound only moves the
overload into every client's TTFT and, in the end, into timeouts; shedding early keeps the TTFT of the
answers that are accepted and tells the others, cheaply, to come back later.

Why 503 rather than 429: the limit is the server's capacity, not a quota of this client (which may have sent one
request). A load balancer in front of several backends takes a 503 as "try another replica", and the OpenAI
SDKs retry 503 as they retry 429, after `Retry-After`.

With ASK_ENGINE_WAITING_MAX set (vLLM), the engine's own queue (`vllm:num_requests_waiting`, polled in the
background, engine_load.py) closes the gate too: while the engine reports that many waiting requests, no new
answer starts; they queue here (and are shed as above) instead of in the engine, where no deadline applies
and every other client of the engine waits behind them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import AsyncGenerator
from typing import TypeVar

from backend.errors import Overloaded, QueueTimeout
from backend.llm.engine_load import EngineLoad
from backend.observability.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_INTERVAL_S = 0.5
MAX_RETRY_AFTER_S = 60
EWMA_WEIGHT = 0.1  # of each new answer's duration in the running estimate


class Admission:
    """The slots, the queue and the shed counts of one backend. `max_in_flight` 0: no limit (and no queue)."""

    def __init__(self, max_in_flight: int, queue_size: int, queue_timeout_s: float, metrics: Metrics | None = None,
                 engine_load: EngineLoad | None = None, engine_waiting_max: int | None = None) -> None:
        self.max_in_flight = max_in_flight
        self.queue_size = queue_size
        self.queue_timeout_s = queue_timeout_s
        self.metrics = metrics
        self.engine_load = engine_load
        self.engine_waiting_max = engine_waiting_max
        self.in_flight = 0
        self.engine_waiting: float | None = None  # last read, None when unknown or not polled
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self._answer_s: float | None = None  # running mean of an answer's time in its slot
        self._poller: asyncio.Task | None = None
        if metrics is not None:
            metrics.admission_limit.set(max_in_flight)

    @classmethod
    def from_settings(cls, settings, metrics: Metrics | None = None) -> Admission:
        return cls(settings.ask_max_in_flight, settings.ask_queue_size, settings.ask_queue_timeout_s, metrics,
                   EngineLoad.from_settings(settings), settings.ask_engine_waiting_max)

    # -- what the routes use --------------------------------------------------------------------------------
    def admit(self, events: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
        """`events` behind a slot: the first `anext` waits for one (or raises Overloaded / QueueTimeout); the slot
        is given back when the iteration ends, however it ends. Nothing is taken until the first `anext`."""
        return self._admitted(events)

    async def _admitted(self, events: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
        try:
            await self.acquire()
        except BaseException:
            await events.aclose()
            raise
        started = time.perf_counter()
        try:
            async for event in events:
                yield event
        finally:
            try:
                await events.aclose()
            finally:
                self.release(time.perf_counter() - started)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def limited(self) -> bool:
        return self.max_in_flight > 0

    # -- slots -------------------------------------------------------------------------------------------
    def _open(self) -> bool:
        """A slot may be taken now: under the limit, and the engine not over ASK_ENGINE_WAITING_MAX."""
        if self.limited and self.in_flight >= self.max_in_flight:
            return False
        return not self.engine_busy

    @property
    def engine_busy(self) -> bool:
        return (self.engine_waiting_max is not None and self.engine_waiting is not None
                and self.engine_waiting >= self.engine_waiting_max)

    async def acquire(self) -> None:
        """Take a slot: at once when one is free and nobody waits, else in the queue; Overloaded when the queue
        is full, QueueTimeout after ASK_QUEUE_TIMEOUT_S in it."""
        self._start_poller()
        if not self._queue and self._open():
            self._take(0.0)
            return
        if len(self._queue) >= self.queue_size:
            self._shed("queue_full")
            raise Overloaded(
                f"the backend is at capacity ({self._capacity()} answers running and {len(self._queue)} waiting); "
                f"retry after {self.retry_after_s()} s", self.retry_after_s())
        queued_at = time.perf_counter()
        slot = asyncio.get_running_loop().create_future()
        self._queue.append(slot)
        self._gauges()
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await slot
        except TimeoutError:
            if slot.done() and not slot.cancelled():  # the slot came as the deadline passed: keep it
                self._observe_wait(time.perf_counter() - queued_at)
                return
            self._leave(slot)
            self._shed("queue_timeout")
            raise QueueTimeout(
                f"no answer slot freed up within ASK_QUEUE_TIMEOUT_S ({self.queue_timeout_s:g} s); "
                f"retry after {self.retry_after_s()} s", self.retry_after_s()) from None
        except BaseException:  # cancelled (the client left, shutdown): give back a slot it may have been handed
            if slot.done() and not slot.cancelled():
                self.release(None)
            else:
                self._leave(slot)
            raise
        self._observe_wait(time.perf_counter() - queued_at)

    def release(self, held_s: float | None) -> None:
        """Give a slot back (`held_s`: how long the answer held it, for Retry-After's estimate) and hand free
        slots to the queue's head."""
        self.in_flight -= 1
        if held_s is not None:
            self._answer_s = held_s if self._answer_s is None else (1 - EWMA_WEIGHT) * self._answer_s + EWMA_WEIGHT * held_s
        self._wake()

    def retry_after_s(self) -> int:
        """When a slot is likely free for a newcomer: the queue ahead of it, run `max_in_flight` at a time, at the
        running mean of an answer's time; 1 s without a measure yet, 60 s at most."""
        if self._answer_s is None:
            return 1
        rounds = (len(self._queue) + 1) / max(self._capacity(), 1)
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(self._answer_s * rounds)))

    def _capacity(self) -> int:
        return self.max_in_flight if self.limited else self.in_flight

    def _take(self, waited_s: float) -> None:
        self.in_flight += 1
        self._observe_wait(waited_s)

    def _wake(self) -> None:
        while self._queue and self._open():
            slot = self._queue.popleft()
            if not slot.done():
                self.in_flight += 1
                slot.set_result(None)
        self._gauges()

    def _leave(self, slot: asyncio.Future[None]) -> None:
        try:
            self._queue.remove(slot)
        except ValueError:
            pass
        self._gauges()

    # -- the engine's own load ------------------------------------------------------------------------------
    def _start_poller(self) -> None:
        if self.engine_load is not None and self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="engine-load")

    async def _poll(self) -> None:
        assert self.engine_load is not None
        while True:
            self.engine_waiting = await self.engine_load.waiting()
            if self.metrics is not None:
                self.metrics.engine_waiting.set(math.nan if self.engine_waiting is None else self.engine_waiting)
            self._wake()
            await asyncio.sleep(POLL_INTERVAL_S)

    async def aclose(self) -> None:
        """Stop polling the engine (the runtime's `aclose`)."""
        poller, self._poller = self._poller, None
        if poller is not None and poller.get_loop() is not asyncio.get_running_loop():
            # Served on another loop than the one closing (tests serve an app's lifespan and its requests on
            # two): stop it there; its connections belong to that loop and go with it.
            if not poller.get_loop().is_closed():
                poller.get_loop().call_soon_threadsafe(poller.cancel)
            return
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        if self.engine_load is not None:
            await self.engine_load.aclose()

    # -- metrics -----------------------------------------------------------------------------------------
    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.answers_in_flight.set(self.in_flight)
            self.metrics.answers_queued.set(len(self._queue))

    def _observe_wait(self, seconds: float) -> None:
        self._gauges()
        if self.metrics is not None:
            self.metrics.observe_stage("admission", seconds)

    def _shed(self, reason: str) -> None:
        log.debug("answer shed: %s (%d running, %d waiting)", reason, self.in_flight, len(self._queue))
        if self.metrics is not None:
            self.metrics.answers_shed.labels(reason).inc()
