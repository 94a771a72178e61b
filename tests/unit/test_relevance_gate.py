"""/ask's relevance gate on hits of a cross-language query: the cross-language model's cosine counts only
together with an e5 cosine close to e5's floor (docs/retrieval.md#relevance-threshold)."""

from __future__ import annotations

import pytest

from backend.rag import CROSS_AGREEMENT_MARGIN, relevant_hits
from backend.retrieval.embedders.registry import relevance_floor

E5 = relevance_floor("intfloat/multilingual-e5-small")
USE = relevance_floor("universal-sentence-encoder-multilingual")


def hit(text: str, dense: float | None, cross: float | None = None) -> dict:
    return {"text": text, "score": 0.5, "dense_score": dense, "cross_score": cross}


def test_the_floors_it_is_calibrated_with():
    assert (E5, USE, CROSS_AGREEMENT_MARGIN) == (0.80, 0.16, 0.02)


@pytest.mark.parametrize(
    "dense,cross,kept",
    [
        (0.81, None, True),  # e5 alone, as before
        (0.81, 0.02, True),  # a low USE cosine takes nothing away
        (0.7801, 0.2735, True),  # ml-059: an answer in another language, both models agree
        (0.7969, 0.1672, True),  # ml-060: USE just over its floor
        (0.7775, 0.1482, False),  # ml-063: neither model vouches for it
        (0.78, 0.16, True),  # both exactly at their floors
        (0.779, 0.45, False),  # USE alone is not enough: its floor lets unrelated chunks through
        (0.79, 0.159, False),  # nor e5 under its floor
        (0.79, None, False),  # no cross-language cosine (a plain query): e5's floor alone
    ],
)
def test_a_cross_language_hit_counts_when_both_cosines_agree(dense, cross, kept):
    assert bool(relevant_hits("Jak często robi się kopię zapasową?", [hit("Резервная копия", dense, cross)], E5, USE)) is kept


def test_without_a_cross_language_floor_the_cross_score_is_ignored():
    # A plain query (or a retriever without a cross-language model) passes no floor for it.
    assert relevant_hits("backups?", [hit("Backups run nightly.", 0.79, 0.9)], E5) == []


def test_an_explicit_ask_min_score_moves_the_agreement_floor_with_it():
    answer = hit("Резервная копия снимается ежедневно.", 0.84, 0.3)
    assert relevant_hits("Jak często?", [answer], 0.85, USE) == [answer]  # 0.84 >= 0.85 - 0.02
    assert relevant_hits("Jak często?", [answer], 0.87, USE) == []


def test_identifiers_and_bm25_only_results_still_count():
    hits = [hit("Komunikat ERR-4521 oznacza wygasły certyfikat.", 0.70, 0.05), hit("BM25 only", None, None)]
    assert relevant_hits("What does ERR-4521 mean?", hits, E5, USE) == hits
