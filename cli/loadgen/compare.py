"""`ab`'s comparison of two targets: throughput ratios per level, and how far their answers agree."""

from __future__ import annotations

import difflib
import statistics

from cli.loadgen.stats import RequestResult


def ratios(rows: list[dict], first: str, second: str) -> dict:
    """Second target over first, per level, for req/s and output tok/s (None when the first is 0)."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(b / a, 3) if a and b is not None else None

    by = {(r["target"], r["concurrency"]): r for r in rows}
    levels = sorted({r["concurrency"] for r in rows})
    return {
        "of": f"{second} / {first}",
        "levels": [
            {
                "concurrency": c,
                "req_s": ratio(by[(first, c)]["req_s"], by[(second, c)]["req_s"]),
                "output_tok_s": ratio(by[(first, c)]["output_tok_s"], by[(second, c)]["output_tok_s"]),
            }
            for c in levels
        ],
    }


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a & b| / |a | b|; two empty sets agree (1.0): both answers cite nothing."""
    return len(a & b) / len(a | b) if a or b else 1.0


def answer_agreement(first: list[RequestResult], second: list[RequestResult], n_questions: int) -> dict:
    """How far two targets' answers to the same questions agree (means over the questions both answered).

    `cited_sources_jaccard`: Jaccard of the documents each answer cites; `sources_jaccard`: of the documents
    each target gave its model (differs when retrieval or the context budget differ); `answer_similarity`:
    difflib's ratio over the two answers' words (1.0 identical, 0.0 nothing in common). Request i asked
    question i % n_questions of the same list on both targets.
    """

    def by_question(results: list[RequestResult]) -> dict[int, RequestResult]:
        answered: dict[int, RequestResult] = {}
        for r in sorted(results, key=lambda r: r.index):
            if r.error is None:
                answered.setdefault(r.index % n_questions, r)  # a question asked twice: its first answer
        return answered

    a, b = by_question(first), by_question(second)
    common = sorted(a.keys() & b.keys())

    def mean(values: list[float]) -> float | None:
        return round(statistics.mean(values), 3) if values else None

    return {
        "questions_compared": len(common),
        "cited_sources_jaccard": mean([jaccard(a[q].cited, b[q].cited) for q in common]),
        "sources_jaccard": mean([jaccard(a[q].sources, b[q].sources) for q in common]),
        "answer_similarity": mean(
            [difflib.SequenceMatcher(None, (a[q].answer or "").split(), (b[q].answer or "").split(), autojunk=False).ratio() for q in common]
        ),
    }
