# Run: python benchmarks/relay_deadline_cost.py (from the repository root, in the project venv)
"""Per-event cost of with_deadline (ANSWER_TIMEOUT_S) on the answer relay: the same 200k events through a
plain async generator and through the deadline wrapper, alternating rounds, in one process."""
import asyncio, time, statistics
from backend.api.answer_guard import with_deadline

N = 200_000

async def source():
    for i in range(N):
        yield ("token", {"text": "x"})

async def plain():
    t = time.perf_counter()
    async for _ in source():
        pass
    return time.perf_counter() - t

async def guarded():
    t = time.perf_counter()
    async for _ in with_deadline(source(), 300):
        pass
    return time.perf_counter() - t

async def main():
    a, b = [], []
    for _ in range(5):
        a.append(await plain()); b.append(await guarded())
    pa, pb = statistics.median(a), statistics.median(b)
    print(f"plain {pa/N*1e6:.2f} us/event, with_deadline {pb/N*1e6:.2f} us/event, added {(pb-pa)/N*1e6:.2f} us/event, ratio {pb/pa:.2f}")

asyncio.run(main())
