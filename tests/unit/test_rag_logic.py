"""The budget logic (long documents, tiny context windows) and the citation mapping."""

from __future__ import annotations

import pytest

from backend.errors import ContextOverflow
from backend.rag import TEMPLATE_MARGIN_TOKENS, fit_budget, format_source, map_citations


def test_everything_fits_in_a_large_window():
    budget = fit_budget(50, [100, 100, 100], context_length=8192, max_tokens=512)
    assert budget.kept == [0, 1, 2] and budget.dropped == [] and budget.prompt_tokens == 350


def test_lowest_ranked_chunks_are_dropped_first_and_reported():
    # limit = 1000 - 200 - margin; room for fixed 100 + two 300-token chunks only
    context = 100 + 300 + 300 + 200 + TEMPLATE_MARGIN_TOKENS + 10
    budget = fit_budget(100, [300, 300, 300, 50], context_length=context, max_tokens=200)
    assert budget.kept == [0, 1]
    assert budget.dropped == [2, 3]  # the small 4th chunk would fit, but it ranks below a dropped one
    assert budget.prompt_tokens + budget.max_tokens + TEMPLATE_MARGIN_TOKENS <= budget.context_length


def test_a_single_huge_chunk_is_dropped_not_truncated():
    budget = fit_budget(40, [5000, 80], context_length=2048, max_tokens=256)
    assert budget.kept == [] and budget.dropped == [0, 1]


@pytest.mark.parametrize("context_length,max_tokens", [(512, 400), (256, 100), (4096, 4096)])
def test_tiny_windows_never_exceed_the_limit(context_length, max_tokens):
    if 30 + max_tokens + TEMPLATE_MARGIN_TOKENS > context_length:
        with pytest.raises(ContextOverflow, match="lower max_tokens"):
            fit_budget(30, [10, 10], context_length=context_length, max_tokens=max_tokens)
    else:
        budget = fit_budget(30, [10] * 100, context_length=context_length, max_tokens=max_tokens)
        assert budget.prompt_tokens <= context_length - max_tokens - TEMPLATE_MARGIN_TOKENS
        assert budget.kept and budget.dropped and budget.kept + budget.dropped == list(range(100))


def test_question_too_long_for_the_window():
    with pytest.raises(ContextOverflow) as info:
        fit_budget(5000, [10], context_length=4096, max_tokens=512)
    assert info.value.status_code == 400 and "5000" in info.value.message


def test_citations_are_mapped_and_invalid_ones_removed():
    answer, cited, invalid = map_citations("Backups run at 02:00 [1]. Keys rotate [2][7]. See [3, 9].", 3)
    assert answer == "Backups run at 02:00 [1]. Keys rotate [2]. See [3]."
    assert cited == [1, 2, 3] and invalid == [7, 9]


def test_an_answer_citing_only_unknown_sources():
    answer, cited, invalid = map_citations("It is Paris [4].", 2)
    assert answer == "It is Paris." and cited == [] and invalid == [4]


def test_no_citations_and_non_citation_brackets():
    answer, cited, invalid = map_citations("Use the [--prune] flag, or list[0].", 2)
    assert answer == "Use the [--prune] flag, or list[0]." and cited == [] and invalid == []
    assert map_citations("Plain answer.", 0) == ("Plain answer.", [], [])


def test_source_formatting_names_the_location():
    text = format_source(2, {"path": "ops/guide.pdf", "page": 3, "heading": None, "text": "Body."})
    assert text == "[2] (ops/guide.pdf, page 3)\nBody."


def test_identifier_terms_are_codes_ids_versions_and_keys():
    from backend.retrieval.sparse import identifier_terms

    q = "What does ERR-4521 mean after upgrading to v3.14.2 with max_conn_pool=10 (ticket OPS-2291)?"
    terms = identifier_terms(q)
    assert {"err-4521", "v3.14.2", "max_conn_pool", "ops-2291"} <= set(terms)
    assert not {"what", "does", "mean", "upgrading"} & set(terms)
    assert identifier_terms("how do backups work?") == []


def test_relevance_uses_the_cosine_and_keeps_verbatim_identifier_matches():
    from backend.rag import relevant_hits

    hits = [
        {"text": "Error ERR-4521: the volume is full.", "dense_score": 0.12, "score": 0.03},
        {"text": "Backups run nightly.", "dense_score": 0.55, "score": 0.02},
        {"text": "Unrelated lunch menu.", "dense_score": 0.05, "score": 0.01},
        {"text": "BM25-only result", "dense_score": None, "score": 4.2},
    ]
    kept = relevant_hits("what is err-4521?", hits, 0.2)
    assert [h["text"] for h in kept] == [hits[0]["text"], hits[1]["text"], hits[3]["text"]]
    # Without the identifier in the question, the low-cosine chunk is not relevant.
    assert hits[0] not in relevant_hits("why is the volume full?", hits, 0.2)
