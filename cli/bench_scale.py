"""`python -m cli.bench scale --chunks N`: index a real corpus of about N chunks, then search it.

1. Corpus: `--corpus DIR` as it is when it holds a `manifest.json` (from `cli.bench corpus`), else a new one
   generated there (or in a temporary folder) with enough documents to expect N chunks (cli/corpus_gen.py).
2. Ingest: `cli.index_cli.run_direct`, the code `python -m cli.index_cli --dir ... --space ...` runs, into an
   embedded store on disk (`--store`, else a temporary folder), with the settings of this process (env,
   --env-file, the --embed-* options). Per stage (parse+chunk, embed, store write) its seconds summed over the
   files and the files/s and chunks/s they give ("store write" is `DocumentIndex.commit`, which also computes
   the BM25 vectors and, when CROSS_LANGUAGE_MODEL is on, the cross-language ones); end to end, the files'
   wall time without the start-up (models, workers) and the HNSW build at the end (the optimiser), both reported;
   peak RSS of this process and its children (parse and embedder workers), sampled; disk used by the store.
   `searchable_after_s` is the wall time from the first file to the built index: when every chunk is
   searchable at full speed.
3. Rerun: the same command again over the unchanged corpus (the unchanged-file check, files/s).
4. Search: a real backend process (`python -m backend`) on the store; GET /search with distinct English,
   Polish and Russian questions: latency at c=1 (p50/p99, measured by the client, query embedding included)
   and a closed loop at c=32 (req/s, p50/p99), with the server's own split into query embedding and store.

Writes the report as JSON (--json) and a markdown summary (--md), both also printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from typing import TYPE_CHECKING

from cli.bench_corpus import QUERIES
from cli.corpus_gen import generate, read_manifest

if TYPE_CHECKING:
    from backend.settings import Settings

# Questions in the corpus's other languages (its Polish and Russian documents are about these topics).
MULTILINGUAL_QUERIES = [
    "Z jakim wyprzedzeniem należy złożyć wniosek o urlop?",
    "Jak połączyć się z siecią firmową przez VPN?",
    "Jak długo przechowujemy dokumenty rekrutacyjne?",
    "Как часто делается резервная копия базы данных?",
    "Какие лимиты запросов действуют для API?",
    "Кто оплачивает командировочные расходы?",
]
RSS_SAMPLE_S = 0.2
SPACE = "scale"


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chunks", type=int, required=True, help="about this many chunks (the corpus is sized for it)")
    p.add_argument("--corpus", type=Path, default=None, help="corpus folder: reused when it has a manifest.json, else generated there")
    p.add_argument("--seed", type=int, default=0, help="the corpus's seed when it is generated")
    p.add_argument("--store", type=Path, default=None, help="DATA_DIR of the store (default: a temporary folder, removed after)")
    p.add_argument("--embed-model", default=None, help="EMBED_MODEL for this run (default: the settings')")
    p.add_argument("--embed-backend", default=None, choices=["onnx", "torch", "openai"], help="EMBED_BACKEND for this run")
    p.add_argument("--embed-base-url", default=None, help="EMBED_BASE_URL (with --embed-backend openai)")
    p.add_argument("--device", default="cpu2", help="the machine's name in the report (cpu2: this 2-core machine)")
    p.add_argument("--queries", type=int, default=200, help="/search requests at c=1")
    p.add_argument("--requests", type=int, default=640, help="/search requests at c=32")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--md", type=Path, default=None, help="also write the markdown summary here")


class RssSampler:
    """Peak resident memory of this process and all its descendants together, sampled in a thread."""

    def __init__(self, pid: int | None = None):
        import psutil

        self._proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def total(self) -> int:
        import psutil

        total = 0
        for proc in [self._proc, *self._proc.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # a worker that just exited
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.total())
            self._stop.wait(RSS_SAMPLE_S)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.total())


def _dir_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1048576, 1)


@contextmanager
def _folder(path: Path | None, prefix: str, work_dir):
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=work_dir))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def embed_engine(settings) -> str:
    """What computes the embeddings: a server's /v1/embeddings, or the catalogue's engine for the model."""
    from backend.retrieval.embedders import catalogue

    if settings.embed_backend == "openai":
        return f"openai ({settings.embed_base_url})"
    record = catalogue.find(settings.embed_model)
    engine = record.engine if record is not None else catalogue.SENTENCE_TRANSFORMERS
    return f"{engine} ({settings.embed_backend})" if engine == catalogue.SENTENCE_TRANSFORMERS else engine


def prepare_corpus(corpus: Path, chunks: int, seed: int) -> dict:
    """The manifest of `corpus`: the one there, or that of a corpus generated for `chunks` chunks."""
    manifest = read_manifest(corpus)
    if manifest is None:
        started = time.perf_counter()
        manifest = generate(corpus, None, seed=seed, target_chunks=chunks).to_dict()
        manifest["generated_s"] = round(time.perf_counter() - started, 1)
        print(f"corpus: {manifest['docs']} documents generated in {manifest['generated_s']} s in {corpus}")
    return manifest


def ingest(settings, corpus: Path, quiet: bool) -> dict:
    """Index the corpus as `python -m cli.index_cli` does; the ingest part of the report."""
    from backend.ingest.pipeline import iter_folder
    from cli.index_cli import run_direct
    from cli.progress import IngestProgress

    files = [f for f in iter_folder(corpus) if f.name != "manifest.json"]
    results: list = []
    progress = IngestProgress(len(files), f"indexing into {SPACE!r}", quiet=quiet)
    with RssSampler() as rss:
        started = time.perf_counter()
        timing = run_direct(settings, corpus, SPACE, files, results, progress)
        wall = time.perf_counter() - started
    progress.close()
    written = [r for r in results if r.status in ("added", "replaced")]
    failed = [r for r in results if r.status == "failed"]
    chunks = sum(r.chunks for r in written)
    stages = {}
    for stage, key in (("parse_chunk", "parse_ms"), ("embed", "embed_ms"), ("store_write", "store_write_ms")):
        seconds = sum(r.timings.get(key, 0.0) for r in written) / 1000
        stages[stage] = {
            "seconds": round(seconds, 2),
            "files_per_s": round(len(written) / seconds, 2) if seconds else None,
            "chunks_per_s": round(chunks / seconds, 1) if seconds else None,
        }
    # The files alone: neither loading the models (startup) nor the index build at the end.
    ingest_s = wall - timing.startup_s - timing.optimize_s
    return {
        "files": len(files),
        "files_written": len(written),
        "files_failed": len(failed),
        "failures": [r.message for r in failed[:5]],
        "chunks": chunks,
        "ingest_s": round(ingest_s, 1),
        "ingest_files_per_s": round(len(written) / ingest_s, 2),
        "ingest_chunks_per_s": round(chunks / ingest_s, 2),
        "stages": stages,
        "startup_s": round(timing.startup_s, 1),
        "hnsw_build_s": round(timing.optimize_s, 1),
        "searchable_after_s": round(wall, 1),
        "peak_rss_mb": round(rss.peak / 1048576),
    }


def rerun(settings, corpus: Path) -> dict:
    """The same command over the unchanged corpus: how fast the unchanged-file check is."""
    from backend.ingest.pipeline import iter_folder
    from cli.index_cli import run_direct
    from cli.progress import IngestProgress

    files = [f for f in iter_folder(corpus) if f.name != "manifest.json"]
    results: list = []
    started = time.perf_counter()
    run_direct(settings, corpus, SPACE, files, results, IngestProgress(len(files), "rerun", quiet=True))
    seconds = time.perf_counter() - started
    unchanged = sum(r.status == "unchanged" for r in results)
    return {"rerun_s": round(seconds, 1), "rerun_unchanged": unchanged, "rerun_files_per_s": round(len(files) / seconds, 1)}


def _questions(n: int) -> list[str]:
    pool = QUERIES + MULTILINGUAL_QUERIES
    return [f"{pool[i % len(pool)]} {i}" for i in range(n)]  # distinct: nothing is served from a cache


def search(url: str, args) -> dict:
    """/search at c=1 and at c=args.concurrency through the real HTTP server, query embedding included."""
    import httpx

    from cli.loadgen import RequestResult, make_client, percentile, run_level, summarize

    params = {"space_id": SPACE, "top_k": args.top_k}
    with httpx.Client(base_url=url, timeout=60) as client:
        for q in QUERIES[:4] + MULTILINGUAL_QUERIES[:2]:  # warm-up: lazy initialisation, first HNSW pages
            client.get("/search", params={**params, "q": q}).raise_for_status()
        e2e, embed, store, hits = [], [], [], []
        for q in _questions(args.queries):
            t = time.perf_counter()
            r = client.get("/search", params={**params, "q": q})
            e2e.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
            body = r.json()
            embed.append(body["timings"]["embed_ms"])
            store.append(body["timings"]["search_ms"])
            hits.append(len(body["results"]))
    questions = _questions(args.requests)

    async def load() -> tuple[list, float]:
        async with make_client(args.concurrency, 120) as aclient:
            async def send(i: int) -> RequestResult:
                result = RequestResult(index=i, started=time.perf_counter())
                try:
                    r = await aclient.get(f"{url}/search", params={**params, "q": questions[i]})
                    r.raise_for_status()
                except httpx.HTTPError as exc:
                    result.error = type(exc).__name__
                result.ended = time.perf_counter()
                return result
            return await run_level(send, args.concurrency, args.requests, None, f"/search c={args.concurrency}")

    results, wall = asyncio.run(load())
    row = summarize("search", args.concurrency, results, wall)
    return {
        "search_p50_ms_c1": round(percentile(e2e, 50), 2),
        "search_p99_ms_c1": round(percentile(e2e, 99), 2),
        "query_embed_p50_ms_c1": round(percentile(embed, 50), 2),
        "store_search_p50_ms_c1": round(percentile(store, 50), 2),
        "store_search_p99_ms_c1": round(percentile(store, 99), 2),
        "search_results_mean": round(sum(hits) / len(hits), 2) if hits else 0,
        "search_rps_c32": row["req_s"],
        "search_p50_ms_c32": row["e2e_p50_ms"],
        "search_p99_ms_c32": row["e2e_p99_ms"],
        "search_errors_c32": row["errors"],
    }


def run(args, settings: "Settings") -> dict:
    """The `scale` subcommand."""
    from cli.local_backend import start_backend, stop_backend

    overrides = {k: v for k, v in (("embed_model", args.embed_model), ("embed_backend", args.embed_backend),
                                   ("embed_base_url", args.embed_base_url)) if v is not None}
    started = time.perf_counter()
    # The machine's load around the run: on a shared machine the figures mean little without it.
    load_start = os.getloadavg()[0]
    with _folder(args.corpus, "scale-corpus-", args.work_dir) as corpus, _folder(args.store, "scale-store-", args.work_dir) as data_dir:
        manifest = prepare_corpus(corpus, args.chunks, args.seed)
        # The model cache stays where it was: a temporary DATA_DIR must not re-export the model every run.
        update = {**overrides, "data_dir": data_dir, "qdrant_url": "", "model_cache": settings.model_cache_dir}
        run_settings = settings.model_copy(update=update)
        report = {
            "benchmark": "scale",
            "device": args.device,
            "embedder": run_settings.embed_model,
            "embed_engine": embed_engine(run_settings),
            "cross_language_model": run_settings.cross_language_model,
            "ingest_workers": run_settings.ingest_workers,
            "target_chunks": args.chunks,
            "corpus": {k: manifest[k] for k in ("docs", "seed", "formats", "languages", "bytes", "expected_chunks") if k in manifest},
        }
        ing = ingest(run_settings, corpus, quiet=False)  # a bar on a terminal, a line every 10 s in a log
        report.update(ing)
        report["disk_mb"] = _dir_mb(run_settings.embedded_store_dir)
        report.update(rerun(run_settings, corpus))
        env = {"DATA_DIR": str(data_dir), "QDRANT_URL": "", "LOG_LEVEL": "warning", "EMBED_MODEL": run_settings.embed_model,
               "EMBED_BACKEND": run_settings.embed_backend, "EMBED_BASE_URL": run_settings.embed_base_url or "",
               "MODEL_CACHE_DIR": str(run_settings.model_cache_dir)}
        t = time.perf_counter()
        proc, url = start_backend(env)
        report["backend_start_s"] = round(time.perf_counter() - t, 1)
        try:
            report.update(search(url, args))
            report["backend_rss_mb"] = round(RssSampler(proc.pid).total() / 1048576)
        finally:
            stop_backend(proc)
    report["bench_wall_s"] = round(time.perf_counter() - started, 1)
    report["cpus"] = os.cpu_count()
    report["load_avg_1m"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    summary = markdown(report)
    print(summary)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(summary)
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)}))
    return report


def markdown(r: dict) -> str:
    """The report as a short markdown page."""
    st = r["stages"]
    lines = [
        f"# Scale: {r['chunks']:,} chunks on {r['device']} ({r['embedder']}, {r['embed_engine']})",
        "",
        f"Corpus: {r['files']:,} files ({r['corpus'].get('formats')}, {r['corpus'].get('languages')}), "
        f"{r['corpus'].get('bytes', 0) / 1048576:.1f} MB, {r['files_failed']} failed.",
        "",
        "| stage | seconds (sum over files) | files/s | chunks/s |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {s['seconds']} | {s['files_per_s']} | {s['chunks_per_s']} |" for name, s in st.items()),
        f"| **ingest end to end** | {r['ingest_s']} | {r['ingest_files_per_s']} | {r['ingest_chunks_per_s']} |",
        "",
        f"- store_write is DocumentIndex.commit: the BM25 vectors and the cross-language ones "
        f"(CROSS_LANGUAGE_MODEL={r['cross_language_model'] or 'off'}) are computed there.",
        f"- Start-up (models, workers) {r['startup_s']} s; HNSW build (optimiser) {r['hnsw_build_s']} s; searchable after "
        f"{r['searchable_after_s']} s (start-up, files and build); "
        f"peak RSS {r['peak_rss_mb']} MB (CLI and its workers); store on disk {r['disk_mb']} MB.",
        f"- Rerun over the unchanged corpus: {r['rerun_s']} s ({r['rerun_files_per_s']} files/s, {r['rerun_unchanged']} unchanged).",
        f"- /search (HTTP, query embedding included) at c=1: p50 {r['search_p50_ms_c1']} ms, p99 {r['search_p99_ms_c1']} ms "
        f"(query embedding p50 {r['query_embed_p50_ms_c1']} ms, store p50/p99 {r['store_search_p50_ms_c1']}/{r['store_search_p99_ms_c1']} ms).",
        f"- /search at c=32: {r['search_rps_c32']} req/s, p50 {r['search_p50_ms_c32']} ms, p99 {r['search_p99_ms_c32']} ms, "
        f"{r['search_errors_c32']} errors; backend RSS {r['backend_rss_mb']} MB.",
        f"- Whole benchmark: {r['bench_wall_s']} s; {r['cpus']} CPUs, load average (1 min) {r['load_avg_1m']['start']} at "
        f"the start, {r['load_avg_1m']['end']} at the end (other work on the machine slows every figure).",
        "",
    ]
    return "\n".join(lines)
