"""`python -m cli.bench soak`: a running backend under constant streaming load for a bounded time.

    1. `--concurrency` (default 64) streaming `POST /ask` in a closed loop (cli.loadgen's workers and requests,
       through cli.client), first for `--warmup-s` seconds (not measured), then for `--duration` seconds (measured).
    2. The backend's resident set size (RSS): before the load, after the warm-up, every `--sample-interval`
       seconds during the measured run, and at its end; the growth after warm-up and its slope (least squares
       over the samples; also over the run's second half, to tell memory that settles from a leak). Read from the backend's `GET /metrics` (`process_resident_memory_bytes`), else
       with psutil from `--pid` (a backend on this machine).
    3. With `--ingest FILE|DIR ...`: `--ingest-clients` clients (default 8) upload the same files (same space,
       same paths) to `POST /documents` at the same time; the space must then list each path exactly once,
       with the chunk count a single ingest of that file gives, and the store must hold exactly those chunks.

The report says whether the backend stayed correct (errors, every stream ended by its `done` event, no
duplicate documents) and whether its memory settled; the figures are the backend's overhead under load.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from backend.errors import AppError, BackendUnreachable, Forbidden, Unauthorized
from cli import loadgen
from cli.client import AsyncBackendClient
from cli.loadgen import RequestResult, Target, UsageError
from cli.loadgen.failures import reply_type

if TYPE_CHECKING:
    import psutil

DEFAULT_CONCURRENCY = 64
DEFAULT_DURATION_S = 30.0
DEFAULT_WARMUP_S = 5.0
DEFAULT_SAMPLE_S = 2.0
DEFAULT_INGEST_CLIENTS = 8
DEFAULT_INGEST_SPACE = "soak-ingest"
DEFAULT_OUT_DIR = Path("benchmarks/out/soak")
METRICS_TIMEOUT_S = 10.0
UPLOAD_TIMEOUT_S = 600.0
RETRY_AFTER_CAP_S = 5.0  # the longest a 429's Retry-After is waited at once
MB = 1024 * 1024
RSS_METRIC = "process_resident_memory_bytes"
INGEST_SUFFIXES = {".md", ".markdown", ".txt", ".pdf", ".html", ".htm", ".docx"}


def check_args(args) -> None:
    if args.concurrency < 1:
        raise UsageError("--concurrency must be >= 1")
    if args.duration <= 0 or args.warmup_s < 0 or args.sample_interval <= 0:
        raise UsageError("--duration and --sample-interval must be > 0, --warmup-s >= 0")
    if args.ingest and args.ingest_clients < 1:
        raise UsageError("--ingest-clients must be >= 1")


# -- the backend's memory ---------------------------------------------------------------------------------


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


def ingest_files(paths: list[Path]) -> list[tuple[str, bytes]]:
    """(path in the space, bytes) of the files named and of the indexable files under the folders named."""
    files: dict[str, bytes] = {}
    for given in paths:
        if given.is_dir():
            found = [(p.relative_to(given).as_posix(), p) for p in sorted(given.rglob("*")) if p.is_file() and p.suffix.lower() in INGEST_SUFFIXES]
        elif given.is_file():
            found = [(given.name, given)]
        else:
            raise UsageError(f"--ingest: no file or folder {given}")
        for name, path in found:
            if name in files:
                raise UsageError(f"--ingest: two files would have the path {name!r} in the space")
            files[name] = path.read_bytes()
    if not files:
        raise UsageError("--ingest: no indexable file found")
    return sorted(files.items())


class IngestFailed(RuntimeError):
    """The scratch spaces could not be listed or cleared: the check cannot run."""


async def _listing(backend: AsyncBackendClient, target: Target, space: str) -> list[dict]:
    try:
        return await backend.documents(space)
    except (Unauthorized, Forbidden) as exc:
        raise loadgen.auth_rejected(target, exc.status_code, exc.message) from None
    except AppError as exc:
        raise IngestFailed(f"GET /documents?space_id={space}: HTTP {exc.status_code} {exc.message[:200]}") from exc


async def _clear(backend: AsyncBackendClient, target: Target, space: str) -> None:
    for doc in await _listing(backend, target, space):
        try:
            await backend.delete_document(doc["doc_id"])
        except AppError as exc:
            if exc.status_code != 404:  # already gone: cleared all the same
                raise IngestFailed(f"DELETE /documents/{doc['doc_id']}: HTTP {exc.status_code}") from exc


async def _store_points(backend: AsyncBackendClient) -> int | None:
    try:
        points = (await backend.health()).json()["components"]["store"].get("points")
    except (AppError, ValueError, KeyError, TypeError):
        return None
    return points if isinstance(points, int) else None


async def _upload(
    backend: AsyncBackendClient, target: Target, space: str, path: str, data: bytes, throttled: Counter | None = None
) -> tuple[str, dict]:
    """("<status> <ingest status or error type>", body) of one `POST /documents`. A 429 (the space already has
    INGEST_MAX_PER_SPACE uploads in flight) is retried after its Retry-After, as a well-behaved client does, until
    UPLOAD_TIMEOUT_S; each such wait is counted in `throttled`."""
    deadline = time.monotonic() + UPLOAD_TIMEOUT_S
    while True:
        try:
            status, body = await backend.upload(space, path, data, timeout=UPLOAD_TIMEOUT_S)
            return f"{status} {body.get('status') or 'unknown'}", body
        except (Unauthorized, Forbidden) as exc:
            raise loadgen.auth_rejected(target, exc.status_code, exc.message) from None
        except BackendUnreachable as exc:
            return loadgen.error_type_of(exc), {}
        except AppError as exc:
            if exc.status_code != 429 or time.monotonic() >= deadline:
                return f"{exc.status_code} {reply_type(exc) or 'unknown'}", {}
            if throttled is not None:
                throttled["429"] += 1
            await asyncio.sleep(min(_retry_after(exc), RETRY_AFTER_CAP_S))
        except ValueError:  # a success whose body is not JSON
            return "bad_response", {}


def _retry_after(exc: AppError) -> float:
    try:
        return max(float((exc.headers or {}).get("Retry-After", "1")), 0.1)
    except ValueError:
        return 1.0


async def check_concurrent_ingest(backend: AsyncBackendClient, target: Target, files: list[tuple[str, bytes]], clients: int, space: str) -> dict:
    """Single ingest of `files` into `<space>-single` (the reference chunk counts), then `clients` clients upload
    them all at once into `space`; the listing and the store's point count are checked against the reference.

    Both spaces are the check's scratch: their documents are deleted before and after."""
    single = f"{space}-single"
    for s in (space, single):
        await _clear(backend, target, s)
    expected: dict[str, int] = {}
    errors: Counter = Counter()
    for path, data in files:
        status, body = await _upload(backend, target, single, path, data)
        if status.startswith("201"):
            expected[path] = int(body["chunks"])
        else:
            errors[f"single: {status}"] += 1
    points_before = await _store_points(backend)
    throttled: Counter = Counter()

    async def one_client() -> list[str]:
        return [(await _upload(backend, target, space, path, data, throttled))[0] for path, data in files]

    started = time.perf_counter()
    statuses = Counter(s for per_client in await asyncio.gather(*(one_client() for _ in range(clients))) for s in per_client)
    wall = time.perf_counter() - started
    points_after = await _store_points(backend)
    listed = await _listing(backend, target, space)
    per_path = Counter(d["path"] for d in listed)
    chunk_mismatches = {
        d["path"]: {"listed": d["chunks"], "single_ingest": expected[d["path"]]}
        for d in listed if d["path"] in expected and d["chunks"] != expected[d["path"]]
    }
    errors.update({s: n for s, n in statuses.items() if not s.startswith(("200 ", "201 "))})
    points_added = None if points_before is None or points_after is None else points_after - points_before
    expected_points = sum(expected.values())
    report = {
        "clients": clients,
        "files": len(files),
        "space": space,
        "uploads": sum(statuses.values()),
        "wall_s": round(wall, 3),
        "statuses": dict(sorted(statuses.items())),
        "throttled_retries": throttled["429"],  # 429 ingest_busy answers waited out (INGEST_MAX_PER_SPACE)
        "errors": dict(errors),
        "listed_documents": len(listed),
        "duplicates": sum(n - 1 for n in per_path.values() if n > 1),
        "duplicate_paths": sorted(p for p, n in per_path.items() if n > 1),
        "missing_paths": sorted(set(p for p, _ in files) - set(per_path)),
        "chunk_mismatches": chunk_mismatches,
        "single_ingest_chunks": sum(expected.values()),
        "store_points_added": points_added,
        "store_points_expected": expected_points,
    }
    report["ok"] = (
        not errors and report["duplicates"] == 0 and not report["missing_paths"] and not chunk_mismatches
        and (points_added is None or points_added == expected_points)
    )
    for s in (space, single):
        await _clear(backend, target, s)
    return report


# -- the run ----------------------------------------------------------------------------------------------


async def _soak(args, target: Target, questions: list[str], files: list[tuple[str, bytes]] | None) -> dict:
    c = args.concurrency
    async with loadgen.make_client(c + max(args.ingest_clients, 1), args.timeout) as http:
        backend = target.client(http)
        await loadgen.probe_backend(backend, target, args.space)
        if files:  # the scratch spaces too: refused keys stop the run before the load, not after
            await loadgen.probe_backend(backend, target, args.ingest_space)
        probe = MemoryProbe(backend, args.pid)
        await probe.detect()
        send = loadgen.ask_sender(backend, target, questions, args)
        rss_before = await probe.rss()
        warm: list[RequestResult] = []
        if args.warmup_s > 0:
            warm, _ = await loadgen.run_level(send, c, None, args.warmup_s, f"warm-up c={c}")
        rss_warm = await probe.rss()
        samples: list[dict] = []
        stop = asyncio.Event()
        t0 = time.perf_counter()
        sampler = asyncio.create_task(sample_memory(probe, args.sample_interval, t0, samples, stop))
        try:
            results, wall = await loadgen.run_level(send, c, None, args.duration, f"soak c={c}")
        finally:
            stop.set()
            await sampler
        rss_end = await probe.rss()
        if rss_end is not None:
            samples.append({"t_s": round(time.perf_counter() - t0, 2), "rss_mb": round(rss_end / MB, 2)})
        ingest = None
        if files:
            ingest = await check_concurrent_ingest(backend, target, files, args.ingest_clients, args.ingest_space)
    row = loadgen.summarize(target.name, c, results, wall)
    row["done_events"] = sum(1 for r in results if r.ended is not None)
    return {
        "runs": [row],
        "warmup": {"requests": len(warm), "errors": sum(1 for r in warm if r.error)},
        "memory": memory_summary(probe, rss_before, rss_warm, rss_end, samples),
        "ingest": ingest,
    }


def run_soak(args) -> dict:
    check_args(args)
    questions = loadgen.load_questions(args.questions)
    files = ingest_files(args.ingest) if args.ingest else None
    target = Target("backend", args.url.rstrip("/"))
    loadgen.assign_keys([target], args.api_key)
    started_at = loadgen.now()
    parts = asyncio.run(_soak(args, target, questions, files))
    return {
        "kind": "soak",
        "started_at": started_at,
        "targets": [target.public()],
        "settings": {
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "warmup_s": args.warmup_s,
            "sample_interval_s": args.sample_interval,
            "space": args.space,
            "top_k": args.top_k,
            "max_tokens": args.max_tokens,
            "questions": len(questions),
            "questions_file": str(args.questions) if args.questions else None,
            "ingest_clients": args.ingest_clients if files else None,
            "ingest_files": len(files) if files else None,
        },
        **parts,
    }


# -- output -----------------------------------------------------------------------------------------------


def _v(value, suffix: str = "") -> str:
    return "-" if value is None else f"{value}{suffix}"


def markdown(report: dict) -> str:
    t, s, r, m = report["targets"][0], report["settings"], report["runs"][0], report["memory"]
    lines = [
        "## Soak: `POST /ask` under constant streaming load",
        "",
        f"Started {report['started_at']}.",
        f"- **{t['name']}**: {t['url']} (engine {t['engine'] or '?'}, model {t['model'] or '?'})",
        f"- settings: {', '.join(f'{k}={v}' for k, v in s.items() if v is not None)}",
        f"- warm-up: {report['warmup']['requests']} requests, {report['warmup']['errors']} errors (not measured)",
        "",
        "| concurrency | duration s | requests | `done` events | errors | req/s | TTFT p50 / p99 ms | e2e p50 / p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['concurrency']} | {r['wall_s']} | {r['requests']} | {r['done_events']} | {r['errors']} | {r['req_s']} | "
        f"{_v(r['ttft_p50_ms'])} / {_v(r['ttft_p99_ms'])} | {_v(r['e2e_p50_ms'])} / {_v(r['e2e_p99_ms'])} |",
    ]
    if r["errors"]:
        lines += ["", "Errors by type: " + ", ".join(f"{k} x{v}" for k, v in r["error_types"].items())]
    if r["answers_without_llm"]:
        lines += ["", f"Answered without the LLM (nothing relevant found): {r['answers_without_llm']} of {r['requests']}."]
    lines += ["", f"Backend memory (RSS, from {m['source'] or 'nowhere'}{': ' + m['note'] if m['note'] else ''}):", ""]
    lines += [
        "| before | after warm-up | end | growth after warm-up | slope after warm-up | slope, second half |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {_v(m['rss_before_mb'], ' MB')} | {_v(m['rss_after_warmup_mb'], ' MB')} | {_v(m['rss_end_mb'], ' MB')} | "
        f"{_v(m['growth_after_warmup_mb'], ' MB')} ({_v(m['growth_after_warmup_pct'], ' %')}) | {_v(m['slope_after_warmup_mb_per_min'], ' MB/min')} | "
        f"{_v(m['slope_last_half_mb_per_min'], ' MB/min')} |",
    ]
    if m["samples"]:
        lines += ["", "Samples (s: MB): " + ", ".join(f"{x['t_s']:g}: {x['rss_mb']:g}" for x in m["samples"])]
    i = report.get("ingest")
    if i:
        lines += [
            "",
            f"Concurrent ingest: {i['clients']} clients x {i['files']} files into `{i['space']}` ({i['wall_s']} s): "
            f"statuses {', '.join(f'{k} x{v}' for k, v in i['statuses'].items())}; {i['listed_documents']} documents listed, "
            f"duplicates {i['duplicates']}, missing {len(i['missing_paths'])}, chunk mismatches {len(i['chunk_mismatches'])}, "
            f"store points added {_v(i['store_points_added'])} (single ingest: {i['store_points_expected']}): "
            f"**{'OK' if i['ok'] else 'FAILED'}**" + (f"; errors {i['errors']}" if i["errors"] else ""),
        ]
    return "\n".join(lines) + "\n"


def write_plot(report: dict, path: Path) -> Path | None:
    """RSS over the measured run (Agg canvas: no display)."""
    samples = report["memory"]["samples"]
    if not samples:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([x["t_s"] for x in samples], [x["rss_mb"] for x in samples], marker="o")
    ax.set_xlabel("seconds after warm-up")
    ax.set_ylabel("backend RSS, MB")
    ax.grid(True, alpha=0.3)
    fig.suptitle(f"soak: c={report['settings']['concurrency']}, slope {_v(report['memory']['slope_after_warmup_mb_per_min'], ' MB/min')}")
    fig.savefig(path, dpi=100)
    return path


def publish(report: dict, out_dir: Path | None) -> None:
    """Print the summary; with `out_dir`, write `soak.md`, `soak.json` and `soak_rss.png` there."""
    text = markdown(report)
    print("\n" + text)
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "soak.md").write_text(text, encoding="utf-8")
        (out_dir / "soak.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        written = [out_dir / "soak.md", out_dir / "soak.json", write_plot(report, out_dir / "soak_rss.png")]
        print("written: " + ", ".join(str(p) for p in written if p))


def add_options(p) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the backend")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="streaming /ask requests in flight")
    p.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="measured seconds of load")
    p.add_argument("--warmup-s", type=float, default=DEFAULT_WARMUP_S, help="seconds of the same load before measuring")
    p.add_argument("--sample-interval", type=float, default=DEFAULT_SAMPLE_S, help="seconds between RSS readings")
    p.add_argument("--pid", type=int, default=None, help="the backend's process id, to read its RSS with psutil when /metrics has none")
    p.add_argument("--ingest", type=Path, nargs="+", default=None, metavar="FILE|DIR", help="also check a concurrent ingest of these files")
    p.add_argument("--ingest-clients", type=int, default=DEFAULT_INGEST_CLIENTS, help="clients uploading the same files at once")
    p.add_argument(
        "--ingest-space", default=DEFAULT_INGEST_SPACE,
        help="scratch space of the ingest check (and <space>-single): their documents are deleted before and after",
    )
    p.add_argument("--timeout", type=float, default=loadgen.DEFAULT_TIMEOUT_S, help="longest wait for the server's next bytes, s")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="write soak.md, soak.json and soak_rss.png here")

