"""Closed-loop load: at a level `c`, exactly `c` requests are in flight; each worker sends its next request as
soon as its previous one ended. `Send` is one request of any endpoint (request i of the run -> its result)."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from typing import Awaitable, Callable

import httpx
from tqdm import tqdm

from cli.loadgen.stats import RequestResult, summarize
from cli.loadgen.targets import Target

CONNECT_TIMEOUT_S = 10.0
DEFAULT_TIMEOUT_S = 300.0  # longest wait for the server's next bytes, first token included
DEFAULT_REQUESTS = 40

Send = Callable[[int], Awaitable[RequestResult]]


def make_client(concurrency: int, timeout_s: float) -> httpx.AsyncClient:
    """One connection pool for a whole run, with room for every request in flight: a request must never wait
    for a connection, or the pool's queue would be measured instead of the server."""
    room = concurrency + 2
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
        limits=httpx.Limits(max_connections=room, max_keepalive_connections=room),
    )


def requests_per_level(args) -> int | None:
    """--requests, else DEFAULT_REQUESTS, else (with --duration alone) no count limit."""
    return args.requests if args.requests is not None or args.duration else DEFAULT_REQUESTS


async def run_level(send: Send, concurrency: int, requests: int | None, duration_s: float | None, desc: str) -> tuple[list[RequestResult], float]:
    """Closed-loop load: `concurrency` workers send requests 0, 1, 2, ... until `requests` were sent or
    `duration_s` passed (requests in flight then finish). Returns (results, wall seconds).

    An exception of `send` (AuthRejected: the key was refused) cancels the other workers and is raised."""
    results: list[RequestResult] = []
    errors = 0
    indexes = itertools.count()  # shared by the workers; safe, they only switch at awaits
    bar = tqdm(total=requests, desc=desc, unit="req", leave=False, dynamic_ncols=True)
    started = time.perf_counter()
    deadline = started + duration_s if duration_s else math.inf

    async def worker() -> None:
        nonlocal errors
        for i in indexes:
            if (requests is not None and i >= requests) or time.perf_counter() >= deadline:
                return
            result = await send(i)
            results.append(result)
            bar.update()
            if result.error:
                errors += 1
                bar.set_postfix(errors=errors, refresh=False)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None  # the first cause: the others are the same refusal, or cancellations
    finally:
        bar.close()
    return results, time.perf_counter() - started


async def run_levels(targets: list[Target], sends: dict[str, Send], args) -> tuple[list[dict], dict[tuple[str, int], list[RequestResult]]]:
    """Every concurrency level, each target in turn (never two at once); returns the rows and the results
    by (target name, level)."""
    for target in targets:  # not measured: the first requests pay for lazy set-up (connections, model info)
        for i in range(args.warmup):
            await sends[target.name](i)
    rows, results = [], {}
    requests = requests_per_level(args)
    for concurrency in args.concurrency:
        for target in targets:
            level, wall = await run_level(sends[target.name], concurrency, requests, args.duration, f"{target.name} c={concurrency}")
            results[(target.name, concurrency)] = level
            rows.append(summarize(target.name, concurrency, level, wall))
    return rows, results
