"""The backend's memory during a soak (`python -m cli.bench soak`): a probe, its samples, growth and slope.

RSS comes from the backend's `GET /metrics` (`process_resident_memory_bytes`) when it has it, else from psutil
with `--pid` (a backend on this machine); the slope over the samples tells memory that settles from a leak.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import numpy as np

from backend.errors import AppError, BackendUnreachable
from cli.client import AsyncBackendClient
from cli.loadgen.targets import UsageError

if TYPE_CHECKING:
    import psutil

METRICS_TIMEOUT_S = 10.0
MB = 1024 * 1024
RSS_METRIC = "process_resident_memory_bytes"


def rss_from_metrics(text: str) -> float | None:
    """`process_resident_memory_bytes` of a Prometheus text exposition, None when it has none."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == RSS_METRIC:
                return float(sample.value)
    return None


class MemoryProbe:
    """The backend's RSS in bytes: from its `GET /metrics` when that has it, else from `pid` with psutil.

    `source` says which ("metrics", "pid N") or why there is none."""

    def __init__(self, backend: AsyncBackendClient, pid: int | None) -> None:
        self.backend, self.pid = backend, pid
        self.source: str | None = None
        self.note = ""
        self._process: psutil.Process | None = None

    async def _from_metrics(self) -> float | None:
        return rss_from_metrics(await self.backend.metrics(timeout=METRICS_TIMEOUT_S))

    async def detect(self) -> None:
        try:
            if await self._from_metrics() is not None:
                self.source = "metrics"
                return
            self.note = f"/metrics has no {RSS_METRIC}"
        except BackendUnreachable as exc:
            self.note = f"GET /metrics failed ({type(exc.__cause__).__name__})"
        except AppError as exc:  # a key that may not read it (403), an older backend without it (404)
            self.note = f"GET /metrics answered HTTP {exc.status_code}"
        except ValueError as exc:
            self.note = str(exc)
        if self.pid is not None:
            import psutil

            try:
                self._process = psutil.Process(self.pid)
                self._process.memory_info()
            except psutil.Error as exc:
                raise UsageError(f"--pid {self.pid}: {exc}") from exc
            self.source = f"pid {self.pid}"
        else:
            self.note += "; give --pid (the backend's process on this machine) to read it with psutil"

    async def rss(self) -> float | None:
        """Bytes, or None (no source, or this one read failed: a gap in the samples, not a stop)."""
        try:
            if self.source == "metrics":
                return await self._from_metrics()
            if self._process is not None:
                return float(self._process.memory_info().rss)
        except Exception:  # noqa: BLE001 - one failed reading must not end a soak run
            return None
        return None


async def sample_memory(probe: MemoryProbe, interval_s: float, t0: float, samples: list[dict], stop: asyncio.Event) -> None:
    """Append {"t_s", "rss_mb"} every `interval_s` (on a fixed cadence: a slow /metrics under load delays one
    reading, not every later one) until `stop` is set."""
    next_at = time.perf_counter()
    while not stop.is_set():
        rss = await probe.rss()
        if rss is not None:
            samples.append({"t_s": round(time.perf_counter() - t0, 2), "rss_mb": round(rss / MB, 2)})
        next_at = max(next_at + interval_s, time.perf_counter())
        try:
            await asyncio.wait_for(stop.wait(), next_at - time.perf_counter())
        except TimeoutError:
            pass


def slope_mb_per_min(samples: list[dict]) -> float | None:
    """Least-squares slope of RSS over time, MB per minute; None for fewer than 3 samples."""
    if len(samples) < 3:
        return None
    t = np.array([s["t_s"] for s in samples]) / 60
    rss = np.array([s["rss_mb"] for s in samples])
    if np.ptp(t) == 0:
        return None
    return round(float(np.polyfit(t, rss, 1)[0]), 2) + 0.0  # + 0.0: no "-0.0"


def memory_summary(probe: MemoryProbe, before: float | None, after_warmup: float | None, end: float | None, samples: list[dict]) -> dict:
    def mb(value: float | None) -> float | None:
        return None if value is None else round(value / MB, 2)

    growth = None if after_warmup is None or end is None else end - after_warmup
    return {
        "source": probe.source,
        "note": probe.note if probe.source != "metrics" else "",
        "rss_before_mb": mb(before),
        "rss_after_warmup_mb": mb(after_warmup),
        "rss_end_mb": mb(end),
        "growth_after_warmup_mb": mb(growth),
        "growth_after_warmup_pct": round(100 * growth / after_warmup, 2) if growth is not None and after_warmup else None,
        "slope_after_warmup_mb_per_min": slope_mb_per_min(samples),
        # Over the run's second half: memory that settles (allocator arenas, pools filling) shows a slope over the
        # whole run but a flat second half; a leak keeps its slope.
        "slope_last_half_mb_per_min": slope_mb_per_min([x for x in samples if x["t_s"] >= samples[-1]["t_s"] / 2]) if samples else None,
        "samples": samples,
    }


# -- concurrent ingest of the same files ------------------------------------------------------------------
