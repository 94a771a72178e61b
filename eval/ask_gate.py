"""/ask's relevance gate on cross-language answers: what it keeps and what it lets through, before and after
the cross-language model's cosine counts too (docs/retrieval.md#relevance-threshold).

    python eval/ask_gate.py [--out eval/results/ask_gate.json]

Indexes the multilingual corpus and the English docs (docs/) into a throwaway DATA_DIR with the default
models (e5 + USE multilingual), then, with the default retrieval (hybrid, CROSS_LANGUAGE=auto, top_k 5):
- answerable: each multilingual question over its corpus. An answer "kept" is an answering chunk in the
  first five that `relevant_hits` passes to the model; "answered" means at least one chunk passes.
- off-topic (should all get "not found"): each multilingual question over the docs space (its split is the
  question's), the docs golden questions over the multilingual space, and a few general questions in each
  language over the multilingual space (written before any measurement).
- cosines: each multilingual question's USE cosine to its answer chunks, and the highest to a chunk of a
  document that does not answer it (the "unrelated" chunks), straight from the model.
"Before" is the e5 floor alone (the gate before this change), "after" the gate /ask runs now.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.rag import relevant_hits  # noqa: E402
from backend.retrieval.embedders.registry import relevance_floor  # noqa: E402
from backend.settings import load_settings  # noqa: E402
from cli.eval import _index, load_golden  # noqa: E402

# Off-topic for the multilingual corpus (company policies, runbooks, an API): written before measuring.
GENERAL_OFF_TOPIC = [
    ("en", "How long should I boil an egg for a soft yolk?"),
    ("en", "Who won the football world cup in 1998?"),
    ("en", "What is the capital of Australia?"),
    ("pl", "Jak długo piec sernik w piekarniku?"),
    ("pl", "Kto napisał „Pana Tadeusza”?"),
    ("pl", "Jaka jest najwyższa góra w Tatrach?"),
    ("ru", "Сколько варить гречку?"),
    ("ru", "Кто написал роман «Война и мир»?"),
    ("ru", "Какая самая длинная река в Европе?"),
]
TOP_K = 5
GATES = ("before", "either", "after")


def gate(question: str, results: list[dict], e5_floor: float, use_floor: float) -> dict:
    """The chunks each gate passes: e5's floor alone (before), either model's floor (the option not built),
    and /ask's gate now (relevant_hits)."""
    before = relevant_hits(question, results, e5_floor)
    either = [h for h in results if h in before or (h["cross_score"] is not None and h["cross_score"] >= use_floor)]
    return {"before": before, "either": either, "after": relevant_hits(question, results, e5_floor, use_floor)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write every question's figures here (JSON)")
    args = parser.parse_args(argv)
    from backend.runtime import build_runtime

    tmp = Path(tempfile.mkdtemp(prefix="rag-gate-"))
    svc = build_runtime(load_settings(None, data_dir=tmp))
    try:
        if svc.retriever.cross is None:
            print("error: no cross-language model (CROSS_LANGUAGE_MODEL)", file=sys.stderr)
            return 2
        e5_floor, use_floor = relevance_floor(svc.embedder.name), relevance_floor(svc.retriever.cross.name)
        _index(svc, "ml", ROOT / "eval/corpora/multilingual")
        _index(svc, "docs", ROOT / "docs")
        ml = load_golden(ROOT / "eval/golden/multilingual.jsonl")
        docs_q = load_golden(ROOT / "eval/golden/docs.jsonl")
        rows = []

        def search(q: str, space: str):
            return svc.retriever.search(q, space, TOP_K)

        # Answerable.
        for q in ml:
            r = search(q.question, "ml")
            g = gate(q.question, r.results, e5_floor, use_floor)
            answer = [h for h in r.results if any(a.matches(h["path"], h["text"] or "") for a in q.answers)]
            first = answer[0] if answer else None
            rows.append({
                "kind": "answerable", "id": q.id, "split": q.split, "cross": "cross-lang" in q.tags,
                "cross_search": r.cross_language, "in_top5": bool(answer),
                **{f"kept_{k}": bool(first) and any(h is first for h in g[k]) for k in GATES},
                **{f"answered_{k}": bool(g[k]) for k in GATES},
                "answer_dense": first and first["dense_score"], "answer_cross": first and first["cross_score"],
                "question": q.question, "lang": q.lang, "answer_rank": r.results.index(first) if first else None,
                "results": r.results,
            })
        # Off-topic.
        offtopic = [("ml-over-docs", q.split, q.question, "docs") for q in ml]
        offtopic += [("docs-over-ml", "-", q.question, "ml") for q in docs_q]
        offtopic += [("general-over-ml", "-", text, "ml") for _, text in GENERAL_OFF_TOPIC]
        for kind, split, text, space in offtopic:
            r = search(text, space)
            g = gate(text, r.results, e5_floor, use_floor)
            top_cross = max((h["cross_score"] for h in r.results if h["cross_score"] is not None), default=None)
            rows.append({
                "kind": kind, "question": text, "split": split, "cross_search": r.cross_language,
                **{f"answered_{k}": bool(g[k]) for k in GATES},
                "top_dense": max((h["dense_score"] or 0) for h in r.results) if r.results else None,
                "top_cross": top_cross, "results": r.results,
            })
        # USE cosines straight from the model: answer chunks against chunks of documents that do not answer.
        # As embedded at ingest: the heading, then the chunk (chunking.Chunk.embed_text).
        chunks = list(svc.store.scroll(_space("ml"), ["path", "text", "heading"]))
        embedded = [f"{c['heading']}\n\n{c['text']}" if c.get("heading") else c["text"] for c in chunks]
        vectors = np.asarray(svc.retriever.cross.embed_documents(embedded))
        cos_rows = []
        for q in ml:
            sims = vectors @ np.asarray(svc.retriever.cross.embed_query(q.question))
            ans = [float(s) for c, s in zip(chunks, sims) if any(a.matches(c["path"], c["text"]) for a in q.answers)]
            unrelated = [float(s) for c, s in zip(chunks, sims) if c["path"] not in {a.path for a in q.answers}]
            cos_rows.append({"id": q.id, "split": q.split, "cross": "cross-lang" in q.tags, "answer": max(ans),
                             "unrelated_max": max(unrelated),
                             "unrelated_over_floor": sum(s >= use_floor for s in unrelated), "unrelated": len(unrelated)})
    finally:
        svc.close()
    report(rows, cos_rows, e5_floor, use_floor)
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "cosines": cos_rows}, ensure_ascii=False, indent=1))
    return 0


def _space(space_id: str):
    from backend.retrieval.stores.base import Filter

    return Filter(must={"space_id": space_id})


def report(rows: list[dict], cos_rows: list[dict], e5_floor: float, use_floor: float) -> None:
    print(f"floors: e5 {e5_floor}, USE {use_floor}; top_k {TOP_K}, default retrieval\n")
    print("Answerable questions; each figure: before (e5 floor) / either cosine at its floor / now\n")
    print("| split | questions | answer in top 5 | answer kept by /ask | answered (any chunk passes) |")
    print("|---|---:|---:|---:|---:|")
    for split in ("tune", "test"):
        for label, pick in (("all", lambda r: True), ("cross-lang", lambda r: r["cross"]), ("same-lang", lambda r: not r["cross"])):
            sel = [r for r in rows if r["kind"] == "answerable" and r["split"] == split and pick(r)]
            if not sel:
                continue
            kept = " / ".join(str(sum(r[f"kept_{k}"] for r in sel)) for k in GATES)
            answered = " / ".join(str(sum(r[f"answered_{k}"] for r in sel)) for k in GATES)
            print(f"| {split}, {label} | {len(sel)} | {sum(r['in_top5'] for r in sel)} | {kept} | {answered} |")
    print("\nOff-topic questions wrongly answered (some chunk passes): before / either / now\n")
    print("| off-topic set | split | questions | cross-language search | wrongly answered |")
    print("|---|---|---:|---:|---:|")
    for kind in ("ml-over-docs", "docs-over-ml", "general-over-ml"):
        for split in ("tune", "test", "-"):
            sel = [r for r in rows if r["kind"] == kind and r["split"] == split]
            if sel:
                wrong = " / ".join(str(sum(r[f"answered_{k}"] for r in sel)) for k in GATES)
                print(f"| {kind} | {split} | {len(sel)} | {sum(r['cross_search'] for r in sel)} | {wrong} |")
    print("\nUSE cosine (model), per split: answer chunk min / median; best unrelated chunk median / max; "
          "unrelated chunks at or over the floor")
    for split in ("tune", "test"):
        sel = [r for r in cos_rows if r["split"] == split]
        ans = [r["answer"] for r in sel]
        un = [r["unrelated_max"] for r in sel]
        over = sum(r["unrelated_over_floor"] for r in sel)
        total = sum(r["unrelated"] for r in sel)
        print(f"- {split}: answer {min(ans):.3f} / {statistics.median(ans):.3f}; best unrelated "
              f"{statistics.median(un):.3f} / {max(un):.3f}; {over} of {total} unrelated pairs >= {use_floor}")
    for kind in ("ml-over-docs", "docs-over-ml", "general-over-ml"):
        tops = [r["top_cross"] for r in rows if r["kind"] == kind and r["top_cross"] is not None]
        if tops:
            print(f"- off-topic {kind}: top-5 best USE cosine median {statistics.median(tops):.3f}, max {max(tops):.3f}"
                  f" ({len(tops)} with cross-language search)")
    print("\nanswers in the top 5 that e5's floor drops (id, split, e5, USE, kept now):")
    for r in rows:
        if r["kind"] == "answerable" and r["in_top5"] and not r["kept_before"]:
            print(f"- {r['id']} {r['split']} {r['answer_dense']:.4f} {r['answer_cross'] or 0:.4f} {r['kept_after']}")


if __name__ == "__main__":
    sys.exit(main())
