"""`python -m cli.bench`: benchmarks that print figures and ratios (targets live here, not in tests).

    retrieval  /search latency through a real backend process at N chunks (synthetic corpora built
               from real chunk embeddings, written straight into the store), with the server-side split
               into query embedding and store search.
    ingest     the ingest pipeline's chunks/s next to the raw embedder's chunks/s on the same chunks,
               measured side by side in one run.
    isolation  EMBED_ISOLATION=process against inline on identical work: per-query ms and ingest chunks/s.
    ask        closed-loop streaming load on a running backend's POST /ask at several concurrency levels:
               req/s, output tok/s, TTFT, TPOT and end-to-end latency percentiles, errors by type.
    ab         the same load and questions on two backends (e.g. Ollama vs vLLM), one after the other per
               level, with the second-to-first ratios and how far their answers agree.
    raw        the same load straight on an OpenAI-compatible engine (vLLM's /v1/chat/completions).
    record     a pass-through proxy between a backend and its engine that writes down every chat request the
               backend sends (run `ask` once through it).
    replay     those recorded requests straight to the engine, with ask's loop, client and levels: the same
               prompts and sampling parameters as /ask, so that /ask's ratio to it is fair.
    corpus     N documents of real text (Markdown, HTML, DOCX, multi-page PDF; English, Polish, Russian),
               deterministic by seed (cli/corpus_gen.py).
    scale      a corpus sized for N chunks through index_cli's ingest path into a store on disk, then /search
               on it through a real backend: per-stage rates, RSS, disk, HNSW build, c=1 and c=32 latency
               (cli/bench_scale.py).
    soak       constant streaming /ask load on a running backend for a bounded time: errors, latency, and the
               backend's memory over time; with --ingest, a concurrent ingest of the same files checked for
               duplicates.

ask, ab and soak send `Authorization: Bearer` with --api-key, else BACKEND_API_KEY (env or env file).

Exit codes (backend.errors): 0 ran (errors of single requests are counted in the report), 2 usage or a key
refused (401/403: EXIT_AUTH), 4 a target did not answer (EXIT_UNREACHABLE).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from backend.errors import EXIT_AUTH, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from cli import bench_isolation, bench_scale, bench_soak, corpus_gen, loadgen
from cli.bench_corpus import QUERIES, corpus_texts
from cli.loadgen import percentile
from cli.local_backend import start_backend, stop_backend

# Per-dimension noise around a real embedding: ~0.85 cosine to it at 384 dims, so synthetic points form
# realistic clusters instead of a uniform sphere (which would make HNSW search unrealistically easy or hard).
SYNTHETIC_NOISE = 0.03


def synthetic_points(base: np.ndarray, texts: list[str], n: int, space: str, seed: int = 0, sparse=None):
    """n unit vectors scattered around real chunk embeddings (so the HNSW graph sees realistic clusters).

    Each point also carries the BM25 vector of the chunk it was drawn from (`sparse[i]` for `texts[i]`):
    every term then sits in n / len(texts) points, far longer posting lists than real text has, so the
    sparse half of a hybrid query is measured at its worst.
    """
    from backend.domain import make_point_id
    from backend.retrieval.stores.base import PointRecord

    rng = np.random.default_rng(seed)
    for start in range(0, n, 2048):
        m = min(2048, n - start)
        idx = rng.integers(0, len(base), size=m)
        vecs = base[idx] + rng.normal(scale=SYNTHETIC_NOISE, size=(m, base.shape[1])).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        yield [
            PointRecord(
                make_point_id(space, f"synthetic/{(start + j) // 20}.md", "bench", (start + j) % 20),
                vecs[j],
                {
                    "space_id": space,
                    "doc_id": f"syn{(start + j) // 20:08d}",
                    "path": f"synthetic/{(start + j) // 20}.md",
                    "chunk_index": (start + j) % 20,
                    "chunk_count": 20,
                    "text": texts[idx[j]],
                    "version": "bench",
                },
                sparse=None if sparse is None else sparse[idx[j]],
            )
            for j in range(m)
        ]


def bench_retrieval(args, settings) -> dict:
    import httpx

    from backend.retrieval.stores.edge import EdgeStore
    from backend.retrieval.embedders.registry import create_embedder

    from backend.retrieval.sparse import create_sparse_encoder

    embedder = create_embedder(settings)
    texts = corpus_texts(settings, embedder)
    base = embedder.embed_documents(texts)
    sparse = create_sparse_encoder(settings).embed_documents(texts)
    report = {"benchmark": "retrieval", "embed_model": embedder.name, "queries": args.queries, "sizes": []}
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix=f"bench-{size}-", dir=args.work_dir) as tmp:
            data_dir = Path(tmp)
            store = EdgeStore(data_dir / "qdrant-edge", embedder.dim)
            t0 = time.perf_counter()
            for batch in tqdm(synthetic_points(base, texts, size, "bench", sparse=sparse), total=-(-size // 2048), desc=f"writing {size} points"):
                store.upsert(batch)
            t1 = time.perf_counter()
            store.optimize()  # build HNSW, as the CLI and the backend do after ingest
            t2 = time.perf_counter()
            info = store.health()
            store.close()

            proc, url = start_backend({"DATA_DIR": str(data_dir), "QDRANT_URL": "", "LOG_LEVEL": "warning"})
            try:
                client = httpx.Client(base_url=url, timeout=30)
                rows = []
                for mode in args.modes:
                    params = {"space_id": "bench", "top_k": args.top_k, "mode": mode}
                    for q in QUERIES:  # warm-up: first calls pay for lazy initialisation
                        client.get("/search", params={**params, "q": q})
                    e2e, embed, search = [], [], []
                    for i in tqdm(range(args.queries), desc=f"/search {mode} at {size}"):
                        q = f"{QUERIES[i % len(QUERIES)]} {i}"  # distinct texts: nothing can be served from a cache
                        t = time.perf_counter()
                        r = client.get("/search", params={**params, "q": q})
                        e2e.append((time.perf_counter() - t) * 1000)
                        r.raise_for_status()
                        timings = r.json()["timings"]
                        embed.append(timings["embed_ms"])
                        search.append(timings["search_ms"])
                    rows.append({
                        "chunks": size,
                        "mode": mode,
                        "upsert_points_per_s": round(size / (t1 - t0)),
                        "index_build_s": round(t2 - t1, 1),
                        "indexed_vectors": info.get("indexed_vectors"),
                        "search_http_p50_ms": round(percentile(e2e, 50), 2),
                        "search_http_p99_ms": round(percentile(e2e, 99), 2),
                        "embed_p50_ms": round(percentile(embed, 50), 2),
                        "embed_p99_ms": round(percentile(embed, 99), 2),
                        "store_p50_ms": round(percentile(search, 50), 2),
                        "store_p99_ms": round(percentile(search, 99), 2),
                    })
                client.close()
            finally:
                stop_backend(proc)
        for row in rows:
            report["sizes"].append(row)
            print(json.dumps(row))
    print("\n| chunks | mode | /search p50 ms | /search p99 ms | query encode p50/p99 ms | store search p50/p99 ms | HNSW build s |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in report["sizes"]:
        print(
            f"| {r['chunks']:,} | {r['mode']} | {r['search_http_p50_ms']} | {r['search_http_p99_ms']} | "
            f"{r['embed_p50_ms']} / {r['embed_p99_ms']} | {r['store_p50_ms']} / {r['store_p99_ms']} | {r['index_build_s']} |"
        )
    print("target: /search p99 <= 10 ms at 100k chunks, query embedding included (HTTP, measured client-side)")
    return report


def synthetic_docs(n_files: int, texts: list[str]) -> list[tuple[str, bytes]]:
    """Markdown files assembled from real doc chunks, each unique."""
    rng = np.random.default_rng(1)
    files = []
    for i in range(n_files):
        picks = rng.choice(len(texts), size=min(8, len(texts)), replace=False)
        body = "\n\n".join(f"## Part {k}\n\n{texts[j]}" for k, j in enumerate(picks))
        files.append((f"bench/doc{i:04d}.md", f"# Bench document {i}\n\n{body}\n".encode()))
    return files


def bench_ingest(args, settings) -> dict:
    from backend.ingest.parsers import parse_document
    from backend.retrieval.embedders.registry import create_embedder
    from backend.runtime import build_runtime

    embedder = create_embedder(settings)
    files = synthetic_docs(args.files, corpus_texts(settings, embedder))
    embedder.embed_documents(["warm up"] * 8)
    raw_runs: list[float] = []
    pipe_runs: list[float] = []
    chunk_texts: list[str] = []
    for round_no in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-ingest-", dir=args.work_dir) as tmp:
            svc = build_runtime(settings.model_copy(update={"data_dir": Path(tmp)}), embedder=embedder)
            try:
                if not chunk_texts:
                    chunk_texts = [c.embed_text for _, d in files for c in svc.pipeline.chunker.chunk(parse_document(d, "x.md"))]
                t = time.perf_counter()
                embedder.embed_documents(chunk_texts)
                raw_runs.append(len(chunk_texts) / (time.perf_counter() - t))
                t = time.perf_counter()
                sources = [(p, functools.partial(bytes, d)) for p, d in files]
                written = sum(o.result.chunks for o in svc.pipeline.ingest_many("bench", sources))
                pipe_runs.append(written / (time.perf_counter() - t))
                assert written == len(chunk_texts), (written, len(chunk_texts))
            finally:
                svc.close()
        print(f"round {round_no + 1}: raw embedder {raw_runs[-1]:.1f} chunks/s, ingest pipeline {pipe_runs[-1]:.1f} chunks/s")
    raw, pipe = statistics.median(raw_runs), statistics.median(pipe_runs)
    report = {
        "benchmark": "ingest",
        "embed_model": embedder.name,
        "files": len(files),
        "chunks": len(chunk_texts),
        "raw_embedder_chunks_per_s": round(raw, 1),
        "ingest_chunks_per_s": round(pipe, 1),
        "ratio": round(pipe / raw, 3),
    }
    print(f"\n{len(files)} files, {len(chunk_texts)} chunks (median of {args.rounds} alternating rounds)")
    print(f"raw embedder: {raw:.1f} chunks/s   ingest pipeline: {pipe:.1f} chunks/s   ratio {pipe / raw:.2f} (target >= 0.90)")
    return report


def add_load_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the load benchmarks (ask, ab, raw)."""
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="requests in flight, one level after another")
    p.add_argument("--requests", type=int, default=None, help=f"requests per level (default {loadgen.DEFAULT_REQUESTS}, none with --duration alone)")
    p.add_argument("--duration", type=float, default=None, help="stop sending new requests of a level after this many seconds")
    p.add_argument("--warmup", type=int, default=1, help="requests sent to each target before measuring, not counted")
    p.add_argument("--timeout", type=float, default=loadgen.DEFAULT_TIMEOUT_S, help="longest wait for the server's next bytes, s")
    p.add_argument("--out-dir", type=Path, default=None, help="write <command>.md, <command>.json and PNG plots here")


def add_request_options(p: argparse.ArgumentParser, keys: str | None = None) -> None:
    """What the /ask requests carry (ask, ab, soak); `keys` (ab): --api-key takes several, as it says."""
    p.add_argument("--space", required=True, help="the space to ask over")
    p.add_argument("--questions", type=Path, default=None, help="one question per line, or JSON lines with a \"q\" key (default: built-in questions about docs/)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=None, help="longest answer (default: the backend's ANSWER_MAX_TOKENS)")
    p.add_argument(
        "--api-key", nargs="+" if keys else None, default=None, metavar="KEY",
        help=f"the backend's API key{f' ({keys})' if keys else ''}; default BACKEND_API_KEY, which keeps it off the command line",
    )


def add_ask_options(p: argparse.ArgumentParser, keys: str | None = None) -> None:
    """ask, ab: the requests and the load levels."""
    add_request_options(p, keys)
    add_load_options(p)


LOAD_COMMANDS = {"ask": loadgen.run_ask, "ab": loadgen.run_ab, "raw": loadgen.run_raw, "replay": loadgen.run_replay,
                 "record": loadgen.run_record, "soak": bench_soak.run_soak}
BACKEND_COMMANDS = ("ask", "ab", "soak")  # they talk to the appliance's backend: BACKEND_API_KEY applies


def backend_api_keys(args) -> list[str] | None:
    """--api-key as a list (one key, or one per ab target), else BACKEND_API_KEY from the settings, else None."""
    if args.api_key is not None:
        return [args.api_key] if isinstance(args.api_key, str) else list(args.api_key)
    from backend.settings import load_settings

    key = load_settings(args.env_file).backend_api_key
    return [key.get_secret_value()] if key and key.get_secret_value() else None


def main(argv: list[str] | None = None) -> int:
    from backend.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m cli.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-file", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--work-dir", default=None, help="where temporary stores go (default: system temp)")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("retrieval", help="/search latency at N chunks")
    r.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    r.add_argument("--queries", type=int, default=300)
    r.add_argument("--top-k", type=int, default=5)
    r.add_argument("--modes", nargs="+", default=["dense", "hybrid"], choices=["dense", "sparse", "hybrid"])
    i = sub.add_parser("ingest", help="ingest chunks/s vs the raw embedder")
    i.add_argument("--files", type=int, default=40)
    i.add_argument("--rounds", type=int, default=3)
    bench_isolation.add_options(sub.add_parser("isolation", help="embedder worker processes vs inline: query ms, chunks/s"))
    a = sub.add_parser("ask", help="streaming /ask load on one backend")
    a.add_argument("--url", default="http://127.0.0.1:8000", help="the backend")
    add_ask_options(a)
    ab = sub.add_parser("ab", help="the same /ask load on two backends, with ratios and answer agreement")
    ab.add_argument(
        "--target", type=loadgen.parse_target, action="extend", nargs="+", required=True, metavar="NAME=URL",
        help="exactly two backends, e.g. --target ollama=http://127.0.0.1:8000 vllm=http://127.0.0.1:9000",
    )
    add_ask_options(ab, keys="one for both targets, or one per target in --target order")
    w = sub.add_parser("raw", help="streaming chat completions straight to an OpenAI-compatible engine (vLLM)")
    w.add_argument("--url", default="http://127.0.0.1:8001/v1", help="the engine's OpenAI API, with /v1")
    w.add_argument("--model", default=None, help="served model name (default: the first listed)")
    w.add_argument("--name", default="raw", help="the target's name in the report")
    w.add_argument("--api-key", default=None, help="the server's --api-key, if it has one")
    w.add_argument("--prompt-tokens", type=int, default=1024, help="about this many prompt tokens (random common words)")
    w.add_argument("--max-tokens", type=int, default=256)
    w.add_argument("--ignore-eos", action="store_true", help="vLLM only: always generate --max-tokens tokens")
    add_load_options(w)
    rec = sub.add_parser("record", help="a proxy in front of the engine that records the chat requests a backend sends")
    rec.add_argument("--upstream", default="http://127.0.0.1:8001", help="the engine's root URL (vLLM, without /v1)")
    rec.add_argument("--listen", default="127.0.0.1:8010", help="HOST:PORT to serve on; point the backend's VLLM_BASE_URL at http://HOST:PORT/v1")
    rec.add_argument("--out", type=Path, required=True, help="JSON lines, one recorded chat request each (replaced unless --append)")
    rec.add_argument("--append", action="store_true", help="add to --out instead of starting it afresh")
    rp = sub.add_parser("replay", help="recorded chat requests straight to the engine: /ask's fair baseline")
    rp.add_argument("--url", default="http://127.0.0.1:8001/v1", help="the engine's OpenAI API, with /v1")
    rp.add_argument("--prompts", type=Path, required=True, help="the file `record --out` wrote")
    rp.add_argument("--model", default=None, help="send this model instead of the recorded one")
    rp.add_argument("--name", default="replay", help="the target's name in the report")
    rp.add_argument("--api-key", default=None, help="the server's --api-key, if it has one")
    rp.add_argument("--max-tokens", type=int, default=None, help="instead of the recorded max_tokens")
    rp.add_argument("--ignore-eos", action="store_true", help="vLLM only: always generate max_tokens tokens")
    add_load_options(rp)
    soak = sub.add_parser("soak", help="constant streaming /ask load for a bounded time: errors, latency, backend memory")
    add_request_options(soak)
    bench_soak.add_options(soak)
    corpus_gen.add_options(sub.add_parser("corpus", help="write N documents of real text in four formats and three languages"))
    bench_scale.add_options(sub.add_parser("scale", help="ingest a real corpus of N chunks, then /search on it"))
    args = parser.parse_args(argv)
    if args.command == "corpus":  # writes files only: no settings, no models
        report = corpus_gen.run(args)
    elif args.command in LOAD_COMMANDS:
        # The load benchmarks talk to servers over HTTP only: the settings give the backend's key, nothing else.
        if args.command in BACKEND_COMMANDS:
            try:
                args.api_key = backend_api_keys(args)
            except ValueError as exc:  # a missing env file or a bad setting (pydantic's ValidationError is a ValueError)
                print(f"error: invalid settings: {exc}", file=sys.stderr)
                return EXIT_USAGE
        try:
            report = LOAD_COMMANDS[args.command](args)
        except loadgen.UsageError as exc:
            sub.choices[args.command].error(str(exc))
        except loadgen.AuthRejected as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_AUTH
        except loadgen.TargetUnreachable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
    else:
        settings = load_settings(args.env_file)
        commands = {"retrieval": bench_retrieval, "ingest": bench_ingest, "isolation": bench_isolation.run, "scale": bench_scale.run}
        report = commands[args.command](args, settings)
    report["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    if args.command == "soak":
        bench_soak.publish(report, args.out_dir)
    elif args.command in LOAD_COMMANDS and args.command != "record":
        loadgen.publish(report, args.out_dir)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"report written to {args.json}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
