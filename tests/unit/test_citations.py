"""The claim checker (backend/citations/): sentence splitting, facts, support, spans; no model, no I/O."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.citations import check, numbers, split_sentences
from cli.eval_citations import main as eval_main

PASSWORDS = ("Passwords must be at least 14 characters long. We do not force periodic password changes, because they "
             "lead to weaker passwords. Everyone uses the company password manager.")
ERRORS = ("The error AUTH-E017 means that the single sign-on session stored on the device has expired or was revoked. "
          "Sign in again in the browser.")
CENTRES = "Engineering costs go to cost centre CC-4410. Claims above 1,000 EUR need the finance controller."
CONFIG = "The parameter vpn.split_tunnel is true by default. The client listens on UDP port 51820; use --fallback-tcp."


def one(answer: str, sources: list[str]):
    checks = check(answer, sources)
    assert len(checks) == 1, checks
    return checks[0]


def test_supported_sentence_with_its_span():
    c = one("Passwords must be at least 14 characters long [1].", [PASSWORDS])
    assert (c.status, c.supported, c.sources) == ("supported", True, [1])
    assert c.span is not None and c.span.n == 1
    assert PASSWORDS[c.span.start:c.span.end] == "Passwords must be at least 14 characters long."
    assert c.score >= 0.5


def test_span_offsets_point_into_the_cited_source_not_the_first():
    answer = "Intro sentence here. The error AUTH-E017 means the sign-on session expired [2]."
    checks = check(answer, [PASSWORDS, ERRORS])
    c = checks[-1]
    assert c.status == "supported" and c.span is not None and c.span.n == 2
    assert ERRORS[c.span.start:c.span.end].startswith("The error AUTH-E017 means")
    assert answer[c.start:c.end] == c.sentence


def test_wrong_number_is_unsupported():
    c = one("Passwords must be at least 12 characters long [1].", [PASSWORDS])
    assert (c.status, c.supported) == ("unsupported", False)
    assert "12" in c.missing


def test_wrong_identifier_is_unsupported():
    assert one("The error AUTH-E071 means the session expired [1].", [ERRORS]).status == "unsupported"
    assert one("Set `vpn.split_mode` to false [1].", [CONFIG]).status == "unsupported"
    assert one("Use --fallback-udp when the port is blocked [1].", [CONFIG]).status == "unsupported"
    assert one("The client listens on UDP port 51820 [1].", [CONFIG]).status == "supported"
    assert one("The parameter `vpn.split_tunnel` is true by default [1].", [CONFIG]).status == "supported"


def test_right_fact_with_the_wrong_source_number_is_unsupported():
    answer = "Engineering costs go to cost centre CC-4410 [1]."
    assert one(answer, [PASSWORDS, CENTRES]).status == "unsupported"
    assert one(answer.replace("[1]", "[2]"), [PASSWORDS, CENTRES]).status == "supported"


def test_thousands_separators_and_decimal_commas_are_normalised():
    for written in ("1000", "1 000", "1,000", "1\u00a0000"):
        assert one(f"Claims above {written} EUR need the finance controller [1].", [CENTRES]).status == "supported"
    assert numbers("3,5 and 3.5 and 10 000 and v2.8.1") == {"3.5", "10000", "2.8.1"}


def test_negation_that_the_source_does_not_share_is_unsupported():
    assert one("We force periodic password changes [1].", [PASSWORDS]).status == "unsupported"


def test_uncited_and_no_claim():
    checks = check("Here is what I found. The mailbox is kept for 30 days. Accounts go through Okta.", [PASSWORDS])
    assert [c.status for c in checks] == ["no_claim", "uncited", "uncited"]
    assert all(c.supported is None and c.span is None for c in checks)


def test_cross_language_sentence_is_supported_by_its_facts():
    pl = one("Hasło musi mieć co najmniej 14 znaków [1].", [PASSWORDS])
    assert pl.status == "supported"
    assert one("Hasło musi mieć co najmniej 16 znaków [1].", [PASSWORDS]).status == "unsupported"
    ru = one("Ошибка AUTH-E017 означает, что сессия истекла [1].", [ERRORS])
    assert ru.status == "supported"
    # Nothing to compare across languages without facts or an embedder: not taken as supported.
    assert one("Hasła nie trzeba zmieniać okresowo [1].", [PASSWORDS]).status == "unsupported"


def test_cross_language_sentence_needs_the_embedder_to_agree_when_one_is_given():
    def agree(texts):
        return [[1.0, 0.0] for _ in texts]

    def disagree(texts):
        return [[1.0, 0.0], [0.0, 1.0]]

    answer = "Hasło musi mieć co najmniej 14 znaków [1]."
    assert check(answer, [PASSWORDS], embed=agree)[0].status == "supported"
    assert check(answer, [PASSWORDS], embed=disagree)[0].status == "unsupported"


def test_embedder_rescues_a_same_language_paraphrase():
    answer = "You need a long secret of fourteen or more symbols [1]."
    assert check(answer, [PASSWORDS])[0].status == "unsupported"
    assert check(answer, [PASSWORDS], embed=lambda texts: [[1.0, 0.0]] * len(texts))[0].status == "supported"


@pytest.mark.parametrize("reference", [
    "This is stated in [2].", "This is specified in the [2] source.", "According to source [2].",
    "Это указано в [2].", "Informacja pochodzi ze źródła [2].",
])
def test_a_reference_only_sentence_hands_its_number_to_the_uncited_sentence_before_it(reference):
    # Qwen2.5-1.5B's habit: the fact first, then where it comes from, as a sentence of its own.
    checks = check(f"Passwords must be at least 14 characters long. {reference}", [CENTRES, PASSWORDS])
    assert [(c.status, c.sources) for c in checks] == [("supported", [2]), ("no_claim", [2])]
    assert checks[0].span is not None and checks[0].span.n == 2
    # Handed to the wrong source, the fact is checked there and fails, as if cited so.
    wrong = check(f"Passwords must be at least 14 characters long. {reference.replace('[2]', '[1]')}", [CENTRES, PASSWORDS])
    assert [c.status for c in wrong] == ["unsupported", "no_claim"]


def test_a_cited_claim_after_an_uncited_sentence_keeps_its_own_number():
    # Not a reference sentence (it states something of its own): the uncited sentence stays uncited.
    checks = check("Passwords must be at least 14 characters long. Everyone uses the company password manager [1].",
                   [PASSWORDS])
    assert [(c.status, c.sources) for c in checks] == [("uncited", []), ("supported", [1])]


def test_citation_beyond_the_sources_is_unsupported():
    assert one("Passwords must be at least 14 characters long [3].", [PASSWORDS]).status == "unsupported"


@pytest.mark.parametrize(("answer", "expected"), [
    ("It costs 3.5 EUR [1]. Next one.", ["It costs 3.5 EUR [1].", "Next one."]),
    ("Use e.g. the portal, i.e. the web page. Done.", ["Use e.g. the portal, i.e. the web page.", "Done."]),
    ("Limit wynosi np. 600 zapytań itd. w minucie. Koniec.", ["Limit wynosi np. 600 zapytań itd. w minucie.", "Koniec."]),
    ("Т.е. лимит 600 запросов [1]. Ещё одно!", ["Т.е. лимит 600 запросов [1].", "Ещё одно!"]),
    ("Run `make test. Then more` now. Ok.", ["Run `make test. Then more` now.", "Ok."]),
    ("Steps:\n- Install it [1]\n- Run it.\n1. First step. Second step [2]",
     ["Steps:", "Install it [1]", "Run it.", "First step.", "Second step [2]"]),
    ("Version v2.8.1 is needed.[1] The port is 443 [2].", ["Version v2.8.1 is needed.[1]", "The port is 443 [2]."]),
    ("Is it true? Yes! Wow… ok then.", ["Is it true?", "Yes!", "Wow… ok then."]),
    ("Ends with a marker on its own line.\n[1]", ["Ends with a marker on its own line.\n[1]"]),
])
def test_split_sentences(answer, expected):
    sentences = split_sentences(answer)
    assert [s.text for s in sentences] == expected
    assert all(answer[s.start:s.end] == s.text for s in sentences)


def test_split_sentences_collects_markers():
    sentences = split_sentences("A fact [1][2]. Another [3, 4]. None.")
    assert [s.markers for s in sentences] == [(1, 2), (3, 4), ()]


def test_golden_set_is_labelled_and_split(tmp_path: Path, capsys):
    golden = Path(__file__).resolve().parents[2] / "eval/golden/citations.jsonl"
    rows = [json.loads(line) for line in golden.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 100
    assert {r["split"] for r in rows} == {"tune", "test"}
    assert {r["label"] for r in rows} >= {"supported", "unsupported", "uncited"}
    out = tmp_path / "r.json"
    assert eval_main(["--golden", str(golden), "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["splits"]["test"]["n"] > 0 and "| test | all |" in capsys.readouterr().out


def test_the_embedder_is_called_once_per_answer_and_only_for_sentences_that_need_it():
    calls: list[list[str]] = []

    def embed(texts):
        calls.append(list(texts))
        return [[1.0, 0.0]] * len(texts)

    # Supported by its words alone, and a wrong number: the cosine would change neither verdict.
    answer = "Passwords must be at least 14 characters long [1]. Passwords must be at least 12 characters long [1]."
    assert [c.status for c in check(answer, [PASSWORDS], embed=embed)] == ["supported", "unsupported"]
    assert calls == []
    # Two paraphrases short of the overlap: one call, with both sentences and their spans.
    answer = "Periodic rotation is not forced [1]. Staff keep secrets in the manager [1]."
    check(answer, [PASSWORDS], embed=embed)
    assert len(calls) == 1 and len(calls[0]) == 4


def test_attribution_finds_the_source_of_an_uncited_sentence():
    answer = "Engineering costs go to cost centre CC-4410. Passwords must be at least 14 characters long. Hello."
    checks = check(answer, [PASSWORDS, CENTRES], attribute=True)
    assert [(c.status, c.sources, c.attributed) for c in checks] == [
        ("supported", [2], True), ("supported", [1], True), ("no_claim", [], False)]
    assert CENTRES[checks[0].span.start:checks[0].span.end].startswith("Engineering costs go to cost centre CC-4410")
    # Nothing supports it: still uncited. Without attribute=True, uncited sentences are not tried.
    assert check("The office opens at 09:00.", [PASSWORDS, CENTRES], attribute=True)[0].status == "uncited"
    assert check(answer, [PASSWORDS, CENTRES])[0].status == "uncited"
