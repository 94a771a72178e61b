"""`python -m cli.bench soak`: a running backend under constant streaming load for a bounded time.

    1. `--concurrency` (default 64) streaming `POST /ask` in a closed loop (cli.loadgen's workers and requests,
       through cli.client), first for `--warmup-s` seconds (not measured), then for `--duration` seconds (measured).
    2. The backend's resident set size (RSS): before the load, after the warm-up, every `--sample-interval`
       seconds during the measured run, and at its end; the growth after warm-up and its slope (least squares
       over the samples; also over the run's second half, to tell memory that settles from a leak). Read from the backend's `GET /metrics` (`process_resident_memory_bytes`), else
       with psutil from `--pid` (a backend on this machine).
    3. With `--overload-concurrency C`: C streams (well beyond the backend's ASK_MAX_IN_FLIGHT) for `--overload-s`
       seconds: the accepted answers' TTFT next to the measured run's, and how fast the shed ones were refused
       (cli/loadgen/overload.py).
    4. With `--ingest FILE|DIR ...`: `--ingest-clients` clients (default 8) upload the same files (same space,
       same paths) to `POST /documents` at the same time; the space must then list each path exactly once,
       with the chunk count a single ingest of that file gives, and the store must hold exactly those chunks.

The report says whether the backend stayed correct (errors, every stream ended by its `done` event, no
duplicate documents) and whether its memory settled; the figures are the backend's overhead under load.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from cli import loadgen
from cli.loadgen import RequestResult, Target, UsageError
from cli.loadgen.ingest_check import check_concurrent_ingest, ingest_files
from cli.loadgen.memory import MB, MemoryProbe, memory_summary, sample_memory
from cli.loadgen.overload import run_overload

DEFAULT_CONCURRENCY = 64
DEFAULT_DURATION_S = 30.0
DEFAULT_WARMUP_S = 5.0
DEFAULT_SAMPLE_S = 2.0
DEFAULT_INGEST_CLIENTS = 8
DEFAULT_INGEST_SPACE = "soak-ingest"
DEFAULT_OVERLOAD_S = 10.0
DEFAULT_OVERLOAD_PAUSE_S = 1.0
DEFAULT_OUT_DIR = Path("benchmarks/out/soak")


def check_args(args) -> None:
    if args.concurrency < 1:
        raise UsageError("--concurrency must be >= 1")
    if args.duration <= 0 or args.warmup_s < 0 or args.sample_interval <= 0:
        raise UsageError("--duration and --sample-interval must be > 0, --warmup-s >= 0")
    if args.ingest and args.ingest_clients < 1:
        raise UsageError("--ingest-clients must be >= 1")
    if args.overload_concurrency < 0 or args.overload_s <= 0 or args.overload_pause_s < 0:
        raise UsageError("--overload-concurrency must be >= 0, --overload-s > 0, --overload-pause-s >= 0")


# -- the backend's memory ---------------------------------------------------------------------------------


async def _soak(args, target: Target, questions: list[str], files: list[tuple[str, bytes]] | None) -> dict:
    c = args.concurrency
    async with loadgen.make_client(max(c, args.overload_concurrency) + max(args.ingest_clients, 1), args.timeout) as http:
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
        overload = None
        if args.overload_concurrency:
            overload = await run_overload(send, args.overload_concurrency, args.overload_s, args.overload_pause_s)
        ingest = None
        if files:
            ingest = await check_concurrent_ingest(backend, target, files, args.ingest_clients, args.ingest_space)
    row = loadgen.summarize(target.name, c, results, wall)
    row["done_events"] = sum(1 for r in results if r.ended is not None)
    if overload is not None:  # against the measured run at capacity
        base = row["ttft_p99_ms"]
        overload["baseline_ttft_p99_ms"] = base
        overload["ttft_p99_vs_baseline"] = round(overload["accepted_ttft_p99_ms"] / base, 3) if base and overload["accepted_ttft_p99_ms"] else None
    return {
        "runs": [row],
        "warmup": {"requests": len(warm), "errors": sum(1 for r in warm if r.error)},
        "memory": memory_summary(probe, rss_before, rss_warm, rss_end, samples),
        "overload": overload,
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
            "overload_concurrency": args.overload_concurrency or None,
            "overload_s": args.overload_s if args.overload_concurrency else None,
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
    o = report.get("overload")
    if o:
        lines += [
            "",
            f"Overload: {o['offered_c']} streams for {o['wall_s']} s (a shed client pauses {o['pause_after_shed_s']} s): "
            f"{o['accepted']} accepted ({o['accepted_req_s']} req/s), TTFT p50 / p99 {_v(o['accepted_ttft_p50_ms'])} / "
            f"{_v(o['accepted_ttft_p99_ms'])} ms ({_v(o['ttft_p99_vs_baseline'])}x the measured run's p99); "
            f"{o['shed']} shed, answered in p50 / p99 {_v(o['shed_p50_ms'])} / {_v(o['shed_p99_ms'])} ms; "
            f"queue timeouts {o['queue_timeouts']}; other errors {o['other_errors']}"
            + (f" ({', '.join(f'{k} x{v}' for k, v in o['other_error_types'].items())})" if o["other_errors"] else ""),
        ]
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
    p.add_argument("--overload-concurrency", type=int, default=0, metavar="C",
                   help="after the measured run, C streams (beyond the backend's ASK_MAX_IN_FLIGHT) to check backpressure")
    p.add_argument("--overload-s", type=float, default=DEFAULT_OVERLOAD_S, help="seconds of the overload phase")
    p.add_argument("--overload-pause-s", type=float, default=DEFAULT_OVERLOAD_PAUSE_S,
                   help="a shed client's pause before its next request (the backend's smallest Retry-After)")
    p.add_argument("--timeout", type=float, default=loadgen.DEFAULT_TIMEOUT_S, help="longest wait for the server's next bytes, s")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="write soak.md, soak.json and soak_rss.png here")

