"""BM25 analysis with the engine's encoder: language per chunk, stopwords, accent folding, identifiers."""

from __future__ import annotations

import pytest
import qdrant_edge as qe

from backend.retrieval.sparse import Bm25Encoder, detect_script_language, identifier_terms
from backend.settings import BM25_LANGUAGES, Settings


def _shared(query, doc) -> set[int]:
    return set(query.indices) & set(doc.indices)


@pytest.fixture(scope="module")
def bm25():
    return Bm25Encoder()


def test_script_detection_picks_the_analyzer_per_chunk():
    assert detect_script_language("Резервное копирование выполняется каждую ночь.") == "russian"
    assert detect_script_language("Kopia zapasowa jest wykonywana każdej nocy.") == "polish"
    assert detect_script_language("Die Sicherung läuft jede Nacht.") == "latin-other"
    assert detect_script_language("Backups run nightly.") == "english"
    assert detect_script_language("4521 — 17") == "english"


def test_inflected_forms_meet_in_english_and_russian(bm25):
    en_doc, ru_doc = bm25.embed_documents(["The backups were failing nightly.", "Резервные копии создаются ночью."])
    assert _shared(bm25.embed_query("backup failure"), en_doc)
    assert _shared(bm25.embed_query("резервная копия"), ru_doc)


def test_polish_is_folded_so_queries_without_diacritics_match(bm25):
    (doc,) = bm25.embed_documents(["Błąd połączenia z bazą danych wymaga restartu usługi."])
    assert _shared(bm25.embed_query("blad polaczenia"), doc)
    assert _shared(bm25.embed_query("błąd połączenia"), doc)


def test_a_question_of_stopwords_has_no_terms(bm25):
    assert bm25.embed_query("what is it and how").indices == []
    # The engine's Russian list lacks a few function words ("как" survives): fewer terms than words, not none.
    assert len(bm25.embed_query("что это и как").indices) <= 2


def test_identifiers_are_indexed_whole_as_well_as_in_pieces(bm25):
    assert identifier_terms("ERR-4521 after v3.14.2, max_conn_pool=10, E1174 in 2024.") == [
        "err-4521", "v3.14.2", "max_conn_pool", "e1174"
    ]
    a, b = bm25.embed_documents(["Release v3.14.2 fixed the pool.", "Release v3.1.4 fixed the pool."])
    query = bm25.embed_query("what changed in v3.14.2?")
    # Both share the pieces (v3, 14 or 1, 4 ...); only the first shares the whole version as one term.
    assert len(_shared(query, a)) > len(_shared(query, b))


def test_one_fixed_language_and_a_bad_one():
    assert Bm25Encoder(language="english").fingerprint().startswith("bm25:english:")
    with pytest.raises(ValueError, match="BM25_LANGUAGE"):
        Bm25Encoder(language="klingon")


def test_the_settings_list_of_bm25_languages_is_the_engines():
    """Settings check BM25_LANGUAGE against their own list (they import nothing of the app): every entry builds
    an encoder, and every language the engine names is on it."""
    for name in BM25_LANGUAGES:
        Bm25Encoder(language=name)
    assert {name.lower() for name in dir(qe.Language) if not name.startswith("_")} <= BM25_LANGUAGES


def test_settings_refuse_a_bad_bm25_language_in_the_encoders_words(tmp_path):
    with pytest.raises(ValueError) as from_encoder:
        Bm25Encoder(language="klingon")
    with pytest.raises(ValueError, match="BM25_LANGUAGE") as from_settings:
        Settings(_env_file=None, data_dir=tmp_path, bm25_language=" Klingon ")
    assert str(from_encoder.value) in str(from_settings.value)
    assert Settings(_env_file=None, data_dir=tmp_path, bm25_language=" EN ").bm25_language == "en"
