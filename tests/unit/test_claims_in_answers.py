"""The claim check in the answer path (backend/rag.py): the grounding rule and CITATION_CHECK=drop's cleaning."""

from __future__ import annotations

from backend.citations import check
from backend.rag import answer_unsupported, drop_unsupported

SOURCE = "Backups run nightly at 02:00 to the NAS in rack B. API keys are rotated every 90 days."


def test_the_grounding_rule():
    def rule(answer: str) -> bool:
        return answer_unsupported(check(answer, [SOURCE]))

    assert not rule("Backups run nightly at 02:00 [1].")
    assert rule("Backups run nightly at 03:00 [1].")  # unsupported alone
    assert rule("Backups run nightly at 02:00.")  # uncited alone
    assert not rule("Backups run nightly at 02:00 [1]. Keys rotate every 30 days [1].")  # one supported is enough
    assert not rule("I could not find this in the documents.")  # claims nothing


def test_drop_keeps_the_rest_with_offsets_into_the_new_text():
    answer = "Backups run nightly at 03:00 [1]. API keys are rotated every 90 days [1]. Ask the team."
    text, kept, dropped = drop_unsupported(answer, check(answer, [SOURCE]))
    assert text == "API keys are rotated every 90 days [1]. Ask the team."
    assert [c.sentence for c in dropped] == ["Backups run nightly at 03:00 [1]."]
    assert all(text[c.start:c.end] == c.sentence for c in kept) and len(kept) == 2


def test_drop_removes_an_emptied_list_item_and_keeps_the_list():
    answer = "Two facts:\n- Backups run nightly at 03:00 [1].\n- API keys are rotated every 90 days [1].\n"
    text, kept, dropped = drop_unsupported(answer, check(answer, [SOURCE]))
    assert text == "Two facts:\n- API keys are rotated every 90 days [1]." and len(dropped) == 1
    assert all(text[c.start:c.end] == c.sentence for c in kept)


def test_nothing_unsupported_changes_nothing():
    answer = "Backups run nightly at 02:00 [1].\n\nAsk the team."
    checks = check(answer, [SOURCE])
    assert drop_unsupported(answer, checks) == (answer, checks, [])
