"""`python -m cli.eval answers` end to end: a backend it starts itself (--fresh) over a small folder, the engine a
stand-in that speaks vLLM's API and answers each question as scripted (right and cited, wrong, "not found",
confidently made up), and the report's metrics checked against what those answers must score. The scoring rules
(fact matching, citations, the checker's verdicts) are checked on hand-written answers too."""

from __future__ import annotations

import json

import pytest

from cli import eval as eval_cli
from cli.eval_answers import cited_numbers, has_fact, load, score, summary
from tests.support.openai_server import FakeChatModel, FakeOpenAI

pytestmark = pytest.mark.usefixtures("minilm_cli_env")

QUESTIONS = {
    # question -> what the stand-in model answers
    "In which year was the Eiffel Tower completed?": "The Eiffel Tower was completed in 1889 [1].",
    "Where is the Colosseum?": "The Colosseum is in Paris.",
    "What is the salary of the company's CEO?": "I could not find this in the documents.",
    "How many visitors did the Eiffel Tower have in 2020?": "The Eiffel Tower had 5 million visitors in 2020 [1].",
}


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "monuments").mkdir(parents=True)
    (root / "monuments" / "eiffel.md").write_text("# Eiffel Tower\n\nThe Eiffel Tower is in Paris. It was completed in 1889.\n")
    (root / "monuments" / "colosseum.md").write_text("# Colosseum\n\nThe Colosseum is in Rome. It was completed in 80 AD.\n")
    (root / "backups.txt").write_text("Backups of the file server run every night at 02:00.\n")
    q = list(QUESTIONS)
    rows = [
        {"id": "right", "question": q[0], "lang": "en", "tags": ["fact"], "split": "tune", "facts": [["1889"]],
         "answers": [{"path": "monuments/eiffel.md", "passage": "completed in 1889"}]},
        {"id": "wrong", "question": q[1], "lang": "en", "tags": ["fact"], "split": "test", "facts": ["Rome"],
         "answers": [{"path": "monuments/colosseum.md", "passage": "is in Rome"}]},
        {"id": "abstains", "question": q[2], "lang": "en", "tags": ["unanswerable"], "split": "tune", "facts": [], "answers": []},
        {"id": "makes-up", "question": q[3], "lang": "en", "tags": ["unanswerable"], "split": "test", "facts": [], "answers": []},
    ]
    golden = tmp_path / "answers.jsonl"
    golden.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, golden


@pytest.fixture
def scripted_engine(monkeypatch):
    with FakeOpenAI({"fake-vllm": FakeChatModel(answers=dict(QUESTIONS))}) as fake:
        monkeypatch.setenv("LLM_BACKEND", "vllm")
        monkeypatch.setenv("VLLM_BASE_URL", f"{fake.url}/v1")
        monkeypatch.setenv("VLLM_MODEL", "fake-vllm")
        yield fake


def test_eval_answers_reports_correctness_citations_and_abstention_per_split(corpus, scripted_engine, tmp_path, capsys):
    root, golden = corpus
    out = tmp_path / "report.json"
    assert eval_cli.main(["answers", "--golden", str(golden), "--dir", str(root), "--fresh", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"] == "fake-vllm" and report["engine"] == "vllm" and len(report["questions"]) == 4
    # The CEO question retrieves nothing relevant: the appliance refuses it itself (an abstention) and never asks
    # the engine; the three others reach it, at temperature 0.
    assert len(scripted_engine.chat_requests) == 3
    assert {r["temperature"] for r in scripted_engine.chat_requests} == {0}
    rows = {r["id"]: r for r in report["questions"]}
    assert rows["right"]["correct"] and rows["right"]["cited"] == [1] and rows["right"]["cited_holding"] == [1]
    assert not rows["wrong"]["correct"] and rows["wrong"]["cited"] == [] and rows["wrong"]["passage_retrieved"]
    assert rows["abstains"]["abstained"] and not rows["makes-up"]["abstained"]

    overall = report["overall"]
    assert overall["answerable"] == 2 and overall["unanswerable"] == 2
    assert overall["correct"] == overall["correct_cited"] == 0.5 and overall["cites"] == 0.5
    assert overall["citation_recall"] == 0.5
    assert overall["citation_precision"] == 1.0 and overall["passage_retrieved"] == 1.0
    assert overall["abstained"] == 0.5 and overall["false_abstention"] == 0.0 and overall["errors"] == 0
    assert overall["seconds_p50"] > 0
    # Held-out questions are reported apart, and per language and tag within a split.
    assert report["by_split"]["tune"]["all"]["correct"] == 1.0 and report["by_split"]["test"]["all"]["correct"] == 0.0
    assert report["by_split"]["tune"]["tag:unanswerable"]["abstained"] == 1.0
    assert report["by_split"]["test"]["tag:unanswerable"]["abstained"] == 0.0
    assert report["by_split"]["test"]["lang:en"]["questions"] == 2
    printed = capsys.readouterr().out
    assert "### split: tune" in printed and "### split: test" in printed and "| tag:unanswerable |" in printed


def test_eval_answers_one_split_only(corpus, scripted_engine, tmp_path):
    root, golden = corpus
    out = tmp_path / "test-split.json"
    assert eval_cli.main(["answers", "--golden", str(golden), "--dir", str(root), "--fresh", "--split", "test",
                          "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["id"] for r in report["questions"]] == ["wrong", "makes-up"] and set(report["by_split"]) == {"test"}


def test_usage_errors_exit_2(corpus, tmp_path, capsys):
    root, golden = corpus
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "question": "q?", "facts": [["a"]], "answers": []}) + "\n")
    assert eval_cli.main(["answers", "--golden", str(bad), "--dir", str(root), "--fresh"]) == 2
    assert "facts and answers both" in capsys.readouterr().err
    assert eval_cli.main(["answers", "--golden", str(golden), "--dir", str(root), "--fresh", "--split", "none"]) == 2
    with pytest.raises(SystemExit):
        eval_cli.main(["answers", "--golden", str(golden), "--fresh"])  # --fresh needs --dir
    with pytest.raises(SystemExit):
        eval_cli.main(["answers", "--golden", str(golden), "--fresh", "--dir", str(root), "--url", "http://x"])


def test_facts_match_whole_numbers_and_any_spelling():
    assert has_fact(("20",), "was set to 20 connections") and not has_fact(("20",), "from 200 connections")
    assert has_fact(("3 000", "3000"), "3000 zapytań") and has_fact(("01:30",), "в 01:30 UTC")
    assert has_fact(("wygas",), "Certyfikat WYGASŁ.") and not has_fact(("5",), "after 15 minutes")
    assert has_fact(("2.8.1",), "wersja `2.8.1` lub nowsza") and not has_fact(("2.8.1",), "v12.8.10")


def test_scoring_reads_the_checkers_sentences_and_only_the_models_own_citations(tmp_path):
    golden = tmp_path / "g.jsonl"
    golden.write_text(json.dumps({"id": "q", "question": "When?", "lang": "en", "split": "test", "facts": [["1889"]],
                                  "answers": [{"path": "eiffel.md", "passage": "completed in 1889"}]}) + "\n")
    [q] = load(golden)
    sources = [{"n": 1, "path": "colosseum.md", "text": "The Colosseum was completed in 80 AD."},
               {"n": 2, "path": "eiffel.md", "text": "It was completed in 1889."}]
    body = {"answer": "Completed in 1889 [1]. Paris is nice.", "grounded": True, "finish_reason": "stop",
            "sources": sources, "cited": [1],
            "citations": [{"sentence": "Completed in 1889 [1].", "sources": [1], "supported": False, "status": "unsupported"},
                          {"sentence": "Paris is nice.", "sources": [2], "supported": True, "status": "supported",
                           "attributed": True},
                          {"sentence": "Here it is.", "sources": [], "supported": None, "status": "no_claim"}]}
    row = score(q, body, 2.0)
    # [2] was only attributed by the checker: the model cited [1], which does not hold the passage.
    assert row["correct"] and row["cited"] == [1] and row["cited_holding"] == [] and row["passage_retrieved"]
    assert (row["sentences_judged"], row["sentences_supported"]) == (2, 1)
    s = summary([row])
    assert s["citation_precision"] == 0.0 and s["citation_recall"] == 0.0 and s["supported"] == 0.5
    assert s["correct"] == 1.0 and s["correct_cited"] == 0.0  # right, but not backed by what it cites
    assert s["abstained"] is None and s["false_abstention"] == 0.0
    # Older answers: citations as {"cited", "invalid"}; the appliance's refusal (no finish_reason) is an abstention.
    assert cited_numbers({"citations": {"cited": [2], "invalid": []}}) == [2]
    refused = score(q, {"answer": "I could not find anything relevant.", "grounded": False, "sources": []}, 0.1)
    assert refused["abstained"] and not refused["correct"] and refused["sentences_judged"] is None
    # The model saying so, in the question's language, is an abstention too; an answer with the fact is not.
    for said in ("Nie znalazłem tej informacji w dokumentach.", "Я не смог найти это в документах.",
                 "The documents do not mention it."):
        assert score(q, {"answer": said, "finish_reason": "stop", "sources": sources}, 1.0)["abstained"], said
    assert not score(q, {"answer": "In 1889.", "finish_reason": "stop", "sources": sources}, 1.0)["abstained"]
