"""Print the comparison tables of docs/retrieval.md from the reports eval/sweep.sh writes."""

from __future__ import annotations

import json
from pathlib import Path

SWEEP = Path(__file__).resolve().parent / "results" / "sweep"
MODELS = [
    ("all-MiniLM-L6-v2", "MiniLM-L6 (English)"),
    ("multilingual-e5-small", "multilingual-e5-small (4-bit)"),
    ("universal-sentence-encoder-multilingual", "USE multilingual v3"),
]
MODES = [
    ("dense", "dense"),
    ("sparse", "sparse"),
    ("hybrid:dbsf", "hybrid (DBSF)"),
    ("hybrid:rrf:60:1:1", "hybrid (RRF k=60)"),
    ("hybrid:rrf:2:1:1", "hybrid (RRF k=2)"),
]
FUSIONS = ["hybrid:dbsf", "hybrid:rrf:60:1:1", "hybrid:rrf:10:1:1", "hybrid:rrf:2:1:1", "hybrid:rrf:60:2:1", "hybrid:rrf:60:1:2"]


def modes(model: str, tokens: int, golden: str) -> dict:
    return json.loads((SWEEP / f"{model}-{tokens}-{golden}.json").read_text())["modes"]


def main() -> None:
    print("| model | mode | docs MRR | docs hit@5 | multilingual MRR | multilingual hit@5 | same-lang MRR | cross-lang MRR | exact-term MRR |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for model, label in MODELS:
        docs, ml = modes(model, 200, "docs"), modes(model, 200, "multilingual")
        for mode, name in MODES:
            d, m, tags = docs[mode]["overall"], ml[mode]["overall"], ml[mode]["by_tag"]
            print(f"| {label} | {name} | {d['mrr']:.3f} | {d['hit@5']:.3f} | {m['mrr']:.3f} | {m['hit@5']:.3f} | "
                  f"{tags['same-lang']['mrr']:.3f} | {tags['cross-lang']['mrr']:.3f} | {tags['exact-term']['mrr']:.3f} |")
    print("\n| model | CHUNK_TOKENS | docs MRR dense / hybrid | multilingual MRR dense / hybrid |")
    print("|---|---:|---|---|")
    for model, label in MODELS:
        for tokens in (128, 200, 320):
            d, m = modes(model, tokens, "docs"), modes(model, tokens, "multilingual")
            print(f"| {label} | {tokens} | {d['dense']['overall']['mrr']:.3f} / {d['hybrid:dbsf']['overall']['mrr']:.3f} | "
                  f"{m['dense']['overall']['mrr']:.3f} / {m['hybrid:dbsf']['overall']['mrr']:.3f} |")
    print("\n| fusion | " + " | ".join(label for _, label in MODELS) + " |")
    print("|---" * (len(MODELS) + 1) + "|")
    for fusion in FUSIONS:
        cells = []
        for model, _ in MODELS:
            d, m = modes(model, 200, "docs")[fusion]["overall"], modes(model, 200, "multilingual")[fusion]["overall"]
            cells.append(f"{d['mrr']:.3f} / {m['mrr']:.3f}")
        print(f"| {fusion} | " + " | ".join(cells) + " |")
    print("\n| BM25_LANGUAGE | MRR all | pl→pl | ru→ru | en→en | cross-language |")
    print("|---|---:|---:|---:|---:|---:|")
    for language in ("auto", "none", "english", "russian"):
        path = SWEEP / f"bm25-{language}-multilingual.json"
        if not path.exists():
            continue
        sparse = json.loads(path.read_text())["modes"]["sparse"]
        pairs = sparse["by_language_pair"]
        print(f"| {language} | {sparse['overall']['mrr']:.3f} | {pairs['pl→pl']['mrr']:.3f} | {pairs['ru→ru']['mrr']:.3f} | "
              f"{pairs['en→en']['mrr']:.3f} | {sparse['by_tag']['cross-lang']['mrr']:.3f} |")


if __name__ == "__main__":
    main()
