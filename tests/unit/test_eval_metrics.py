"""The evaluation command's scoring: golden-set parsing, answer matching, hit@k / MRR / nDCG."""

from __future__ import annotations

import json
import math

import pytest

from cli.eval import Answer, load_golden, normalize, score_ranking


def test_metrics_of_a_ranking_with_one_answer():
    m = score_ranking([set(), {0}, set()], n_answers=1, ks=(1, 3))
    assert m["first_rank"] == 2 and m["mrr"] == 0.5
    assert m["hit@1"] == 0.0 and m["hit@3"] == 1.0
    assert m["ndcg@3"] == pytest.approx(1 / math.log2(3))  # ideal: the answer at rank 1


def test_a_second_chunk_of_a_found_answer_gains_nothing_and_two_answers_share_the_ideal():
    m = score_ranking([{0}, {0}, {1}], n_answers=2, ks=(3,))
    ideal = 1 + 1 / math.log2(3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert score_ranking([{0}, {1}], n_answers=2, ks=(2,))["ndcg@2"] == pytest.approx(1.0)


def test_nothing_found_scores_zero():
    m = score_ranking([set()] * 5, n_answers=1, ks=(1, 5))
    assert m == {"first_rank": None, "mrr": 0.0, "hit@1": 0.0, "ndcg@1": 0.0, "hit@5": 0.0, "ndcg@5": 0.0}


def test_answers_match_the_path_and_the_passage_ignoring_case_whitespace_and_markup():
    answer = Answer("ops/runbook.md", "run the   restore JOB")
    assert answer.matches("ops/runbook.md", "First, **run** the restore\njob twice.")
    assert not answer.matches("ops/other.md", "run the restore job")
    assert not answer.matches("ops/runbook.md", "restore the job")
    assert Answer("ops/runbook.md").matches("ops/runbook.md", "anything")
    assert normalize("  `ERR-4521`\tmeans ") == "err-4521 means"


def test_golden_sets_are_checked_line_by_line(tmp_path):
    good = {"id": "q1", "question": "Why?", "answers": [{"path": "a.md"}], "tags": ["x"], "lang": "pl", "doc_lang": "ru"}
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps(good) + "\n\n", encoding="utf-8")
    (q,) = load_golden(path)
    assert q.pair == "pl→ru" and q.answers == (Answer("a.md"),)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match="duplicate id"):
        load_golden(path)
    path.write_text(json.dumps({**good, "answers": []}) + "\n")
    with pytest.raises(ValueError, match=":1: needs a question"):
        load_golden(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=":1: not a golden-set line"):
        load_golden(path)


@pytest.mark.parametrize("name", ["docs.jsonl", "multilingual.jsonl"])
def test_the_shipped_golden_sets_load_and_point_at_real_passages(name):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    corpus = root / ("docs" if name == "docs.jsonl" else "eval/corpora/multilingual")
    questions = load_golden(root / "eval/golden" / name)
    assert len(questions) >= 30
    for q in questions:
        for a in q.answers:
            text = (corpus / a.path).read_text(encoding="utf-8")
            assert a.passage is None or normalize(a.passage) in normalize(text), (q.id, a.path)
