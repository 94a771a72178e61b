"""`python -m cli.eval citations`: the claim checker (backend/citations/) against hand-labelled sentences.

    python -m cli.eval citations --golden eval/golden/citations.jsonl
    python -m cli.eval citations --golden eval/golden/citations.jsonl --min-overlap 0.4 --out eval/results/citations.json
    python -m cli.eval citations --golden eval/golden/citations.jsonl --sweep      # overlap thresholds, per split

A row is {"id", "split": tune|test, "lang", "doc_lang", "kind", "label", "answer", "sources": [{"path", "text"}]};
`label` is supported | unsupported | uncited | no_claim, written by reading the source. Each answer is one sentence;
the checker's status of it is compared with the label. Prints, per split (and per language within it): accuracy,
precision and recall of "unsupported", and the checker's p50/p95 time per answer. Exit codes: 0 ran, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from backend.citations import MIN_OVERLAP, check
from backend.errors import EXIT_USAGE


def load(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row["sources"] = [s["text"] for s in row["sources"]]
            if row["label"] not in ("supported", "unsupported", "uncited", "no_claim"):
                raise ValueError(f"label {row['label']!r}")
            row["answer"], row["split"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a citation-golden line ({exc})") from exc
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def run(rows: list[dict], min_overlap: float) -> list[dict]:
    out = []
    for row in rows:
        started = time.perf_counter()
        checks = check(row["answer"], row["sources"], min_overlap=min_overlap)
        ms = (time.perf_counter() - started) * 1000
        status = checks[0].status if len(checks) == 1 else ("unsupported" if any(
            c.status == "unsupported" for c in checks) else checks[0].status if checks else "no_claim")
        out.append({"id": row["id"], "split": row["split"], "lang": row.get("lang"), "kind": row.get("kind"),
                    "label": row["label"], "status": status, "ms": round(ms, 3),
                    "checks": [c.to_dict() for c in checks]})
    return out


def summary(results: list[dict]) -> dict:
    tp = sum(1 for r in results if r["status"] == "unsupported" and r["label"] == "unsupported")
    predicted = sum(1 for r in results if r["status"] == "unsupported")
    actual = sum(1 for r in results if r["label"] == "unsupported")
    times = sorted(r["ms"] for r in results)
    return {
        "n": len(results),
        "accuracy": round(sum(r["status"] == r["label"] for r in results) / len(results), 3) if results else None,
        "unsupported_precision": round(tp / predicted, 3) if predicted else None,
        "unsupported_recall": round(tp / actual, 3) if actual else None,
        "p50_ms": round(statistics.median(times), 3) if times else None,
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 3) if times else None,
    }


def _fmt(x: object) -> str:
    return "-" if x is None else str(x)


def table(results: list[dict]) -> str:
    lines = ["| split | lang | n | accuracy | unsupported P | unsupported R | p50 ms | p95 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for split in sorted({r["split"] for r in results}, key=lambda s: (s != "tune", s)):
        rows = [r for r in results if r["split"] == split]
        for lang in ["all", *sorted({r["lang"] for r in rows if r["lang"]})]:
            s = summary(rows if lang == "all" else [r for r in rows if r["lang"] == lang])
            lines.append(f"| {split} | {lang} | {s['n']} | {_fmt(s['accuracy'])} | {_fmt(s['unsupported_precision'])} "
                         f"| {_fmt(s['unsupported_recall'])} | {_fmt(s['p50_ms'])} | {_fmt(s['p95_ms'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.eval citations", description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", type=Path, required=True)
    parser.add_argument("--min-overlap", type=float, default=MIN_OVERLAP)
    parser.add_argument("--sweep", action="store_true", help="accuracy per split for overlap thresholds 0.2-0.8")
    parser.add_argument("--out", type=Path, help="write every row's checks and the summaries (JSON)")
    args = parser.parse_args(argv)
    try:
        rows = load(args.golden)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.sweep:
        print("| min_overlap | split | accuracy | unsupported P | unsupported R |\n|---|---|---|---|---|")
        for step in range(2, 9):
            threshold = step / 10
            results = run(rows, threshold)
            for split in ("tune", "test"):
                s = summary([r for r in results if r["split"] == split])
                print(f"| {threshold} | {split} | {_fmt(s['accuracy'])} | {_fmt(s['unsupported_precision'])} "
                      f"| {_fmt(s['unsupported_recall'])} |")
        return 0
    results = run(rows, args.min_overlap)
    print(f"citation checker, min_overlap {args.min_overlap}, no embedder ({len(rows)} labelled sentences)\n")
    print(table(results))
    wrong = [r for r in results if r["status"] != r["label"]]
    if wrong:
        print("\nmisjudged:")
        for r in wrong:
            print(f"  {r['id']} [{r['split']}/{r['lang']}/{r['kind']}] label {r['label']}, checker {r['status']}")
    if args.out:
        splits = {split: summary([r for r in results if r["split"] == split]) for split in ("tune", "test")}
        by_lang = {f"{split}/{lang}": summary([r for r in results if r["split"] == split and r["lang"] == lang])
                   for split in ("tune", "test") for lang in sorted({r["lang"] for r in results})}
        args.out.write_text(json.dumps({"golden": str(args.golden), "min_overlap": args.min_overlap, "embed": None,
                                        "splits": splits, "per_language": by_lang, "rows": results},
                                       ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
