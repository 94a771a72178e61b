"""Admission's bookkeeping (backend/llm/admission.py), on one event loop, without a server or a clock to race:
slots, the FIFO queue, shedding, what a cancelled or closed answer gives back, the engine's load gate, and the
parsing of vLLM's metrics page. The HTTP side (503, Retry-After, /metrics, both dialects) is
tests/integration/test_backpressure.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from backend.errors import Overloaded, QueueTimeout
from backend.llm.admission import Admission
from backend.llm.engine_load import metrics_url, parse_waiting
from backend.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


async def answer(tokens: int = 2, hold: asyncio.Event | None = None):
    if hold is not None:
        await hold.wait()
    for i in range(tokens):
        yield i


def sample(metrics: Metrics, name: str, labels: dict | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


def test_slots_queue_in_order_and_shed_beyond_the_queue():
    async def run():
        metrics = Metrics()
        admission = Admission(2, 1, 60, metrics)
        hold = asyncio.Event()
        holders = [admission.admit(answer(hold=hold)) for _ in range(2)]
        tasks = [asyncio.create_task(anext(h)) for h in holders]
        await asyncio.sleep(0)
        assert admission.in_flight == 2 and admission.queued == 0
        queued = admission.admit(answer())
        waiting = asyncio.create_task(anext(queued))
        await asyncio.sleep(0)
        assert admission.queued == 1 and not waiting.done()
        assert (sample(metrics, "rag_answers_in_flight"), sample(metrics, "rag_answers_queued")) == (2, 1)
        with pytest.raises(Overloaded) as shed:
            await anext(admission.admit(answer()))
        assert shed.value.status_code == 503 and shed.value.error_type == "overloaded"
        assert shed.value.headers == {"Retry-After": "1"}  # no answer measured yet
        assert sample(metrics, "rag_answers_shed_total", {"reason": "queue_full"}) == 1
        hold.set()
        assert [await t for t in tasks] == [0, 0]
        await holders[0].aclose()  # an answer closed early gives its slot to the queue's head
        assert await waiting == 0
        assert admission.in_flight == 2 and admission.queued == 0
        for h in (holders[1], queued):
            assert [e async for e in h] == [1]
        assert admission.in_flight == 0
        assert sample(metrics, "rag_stage_duration_seconds_count", {"stage": "admission"}) == 3
        assert sample(metrics, "rag_answers_limit") == 2
        # Retry-After follows the answers' measured time: ~0 s here, so still 1 s at least
        assert admission.retry_after_s() == 1

    asyncio.run(run())


def test_a_waiter_that_times_out_or_is_cancelled_leaves_the_queue():
    async def run():
        metrics = Metrics()
        admission = Admission(1, 4, 0.05, metrics)
        hold = asyncio.Event()
        holder = admission.admit(answer(hold=hold))
        first = asyncio.create_task(anext(holder))
        await asyncio.sleep(0)
        with pytest.raises(QueueTimeout) as late:
            await anext(admission.admit(answer()))
        assert late.value.error_type == "queue_timeout" and late.value.status_code == 503 and "Retry-After" in late.value.headers
        assert admission.queued == 0 and sample(metrics, "rag_answers_shed_total", {"reason": "queue_timeout"}) == 1
        cancelled = asyncio.create_task(anext(admission.admit(answer())))
        await asyncio.sleep(0)
        assert admission.queued == 1
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert admission.queued == 0 and admission.in_flight == 1
        hold.set()
        assert [await first, *[e async for e in holder]] == [0, 1]
        assert admission.in_flight == 0

    asyncio.run(run())


def test_an_answer_that_fails_gives_its_slot_back():
    async def failing():
        yield 0
        raise RuntimeError("engine gone")

    async def run():
        admission = Admission(1, 0, 1)
        with pytest.raises(RuntimeError):
            async for _ in admission.admit(failing()):
                pass
        assert admission.in_flight == 0
        assert [e async for e in admission.admit(answer())] == [0, 1]  # the slot is free again
        unlimited = Admission(0, 0, 1)
        gens = [unlimited.admit(answer()) for _ in range(50)]
        assert [await anext(g) for g in gens] == [0] * 50 and unlimited.in_flight == 50

    asyncio.run(run())


class FakeLoad:
    def __init__(self, waiting: float | None) -> None:
        self.value = waiting
        self.reads = 0

    async def waiting(self) -> float | None:
        self.reads += 1
        return self.value

    async def aclose(self) -> None:
        pass


def test_the_engines_queue_holds_new_answers_back_until_it_drains():
    async def run():
        metrics = Metrics()
        load = FakeLoad(5)
        admission = Admission(8, 4, 30, metrics, engine_load=load, engine_waiting_max=3)  # type: ignore[arg-type]
        assert await anext(admission.admit(answer())) == 0  # nothing read yet: the gate is open
        while load.reads == 0:
            await asyncio.sleep(0.01)
        held = asyncio.create_task(anext(admission.admit(answer())))
        await asyncio.sleep(0.01)
        assert admission.engine_busy and admission.queued == 1 and not held.done()
        assert sample(metrics, "rag_engine_requests_waiting") == 5
        load.value = 0
        assert await asyncio.wait_for(held, 5) == 0  # the next poll opens the gate
        load.value = None  # unreadable metrics: the gate stays open
        while admission.engine_waiting is not None:
            await asyncio.sleep(0.01)
        assert not admission.engine_busy
        await admission.aclose()

    asyncio.run(run())


def test_vllm_metrics_page():
    page = (ROOT / "monitoring" / "vllm-0.32.0-metrics.txt").read_text()
    assert parse_waiting(page) is None or parse_waiting(page) >= 0
    text = (
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{engine="0",model_name="m"} 3.0\n'
        'vllm:num_requests_waiting{engine="1",model_name="m"} 2.0\n'
        'vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 40.0\n'
        'vllm:num_requests_running{engine="0",model_name="m"} 7.0\n'
    )
    assert parse_waiting(text) == 5.0
    assert parse_waiting("vllm:num_requests_waiting 1e+01\n") == 10.0
    assert parse_waiting("# nothing\n") is None
    assert metrics_url("http://vllm:8001/v1") == "http://vllm:8001/metrics"
    assert metrics_url("http://vllm:8001/") == "http://vllm:8001/metrics"
