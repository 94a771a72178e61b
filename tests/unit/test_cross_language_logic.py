"""The pure parts of cross-language search: weighted DBSF, a space's languages, when the lists are used."""

from __future__ import annotations

import numpy as np
import pytest

from backend.retrieval.fusion import weighted_dbsf
from backend.retrieval.languages import LanguageMixCache, cross_use, split_languages, wants_cross
from backend.retrieval.stores.base import Hit


def hits(*pairs) -> list[Hit]:
    return [Hit(pid, score, {"id": pid}) for pid, score in pairs]


def test_weighted_dbsf_normalises_each_list_and_weighs_it():
    # Scores on different scales (a cosine, a BM25 score): each list is mapped onto [0, 1] by its own spread.
    dense = hits(("a", 0.90), ("b", 0.80), ("c", 0.70))
    bm25 = hits(("c", 30.0), ("b", 20.0), ("d", 10.0))
    equal = weighted_dbsf([dense, bm25], [1, 1])
    assert {h.id for h in equal[:2]} == {"b", "c"}  # found by both lists
    # Down-weighting BM25 lets the dense list decide; its scores are the fused ones, payloads are kept.
    light = weighted_dbsf([dense, bm25], [1, 0.2])
    assert [h.id for h in light] == ["a", "b", "c", "d"]
    assert light[0].payload == {"id": "a"} and light[0].score == pytest.approx(0.5 + 0.1 / (6 * 0.0816), abs=1e-3)
    assert all(x.score >= y.score for x, y in zip(light, light[1:]))
    # A zero weight or an empty list contributes nothing.
    assert [h.id for h in weighted_dbsf([dense, bm25], [1, 0])] == ["a", "b", "c"]
    assert [h.id for h in weighted_dbsf([[], dense], [1, 1])] == ["a", "b", "c"]
    with pytest.raises(ValueError):
        weighted_dbsf([dense], [1, 1])


def test_weighted_dbsf_keeps_a_dense_vector_from_any_list_and_scores_a_lone_hit_at_half():
    vector = np.ones(3, dtype=np.float32)
    fused = weighted_dbsf([hits(("a", 1.0)), [Hit("a", 5.0, {}, vector)]], [1, 1])
    assert len(fused) == 1 and fused[0].score == pytest.approx(1.0) and fused[0].dense is vector


def test_a_language_needs_a_share_of_the_space_to_count():
    assert split_languages({"en": 380, "pl": 12, "unknown": 8}) == (["en"], True)
    assert split_languages({"en": 34, "ru": 31, "pl": 29}) == (["en", "ru", "pl"], False)
    assert split_languages({}) == ([], False)


@pytest.mark.parametrize("mix, question, expected", [
    ({"pl": 40}, "Ile dni urlopu przysługuje?", False),           # one language, question in it
    ({"pl": 40}, "How many days of leave do I get?", True),       # a question in another language
    ({"pl": 40}, "Сколько дней отпуска положено?", True),
    ({"en": 30, "ru": 30}, "How many days of leave?", True),      # several languages
    ({"en": 97, "ru": 3}, "How many days of leave?", False),      # a few quoted Russian words do not count
    ({"en": 50, "unknown": 50}, "How many days of leave?", True),  # chunks from before languages were recorded
    ({}, "anything", True),
])
def test_auto_uses_cross_language_search_unless_the_question_is_in_the_spaces_only_language(mix, question, expected):
    assert wants_cross("auto", mix, question) is expected
    assert wants_cross("always", mix, question) is True
    assert wants_cross("never", mix, question) is False


def test_cross_use_in_words():
    assert cross_use("auto", {"pl": 4}) == "questions not in pl"
    assert cross_use("auto", {"pl": 4, "en": 4}) == "every question"
    assert cross_use("always", {"pl": 4}) == "every question"
    assert cross_use("never", {"pl": 4, "en": 4}) == "off"


def test_the_language_mix_is_counted_again_only_after_its_ttl():
    now = [0.0]
    calls = []

    def count(space):
        calls.append(space)
        return {"en": len(calls)}

    cache = LanguageMixCache(count, ttl_s=30, clock=lambda: now[0])
    assert cache.get("a") == {"en": 1} and cache.get("a") == {"en": 1}
    now[0] = 31.0
    assert cache.get("a") == {"en": 2}
    cache.forget("a")
    assert cache.get("a") == {"en": 3} and calls == ["a", "a", "a"]
