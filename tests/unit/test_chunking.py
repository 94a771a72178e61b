"""Chunking with the real model's tokenizer: sizes, overlap, boundaries, metadata."""

from __future__ import annotations

import pytest

from backend.ingest.chunking import MAX_HEADING_TOKENS, Chunker
from backend.ingest.parsers import Section

PARAGRAPH = (
    "Qdrant Edge keeps the vectors on disk under DATA_DIR. The backend is its only writer while it runs. "
    "Each chunk carries its page and heading, so answers can cite where they came from. "
)


@pytest.fixture(scope="module")
def tokenizer(embedder):
    return embedder.tokenizer


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def test_short_section_is_one_chunk(tokenizer):
    chunks = Chunker(tokenizer, 100, 20).chunk([Section("One short sentence.", page=3, heading="Intro")])
    assert len(chunks) == 1
    assert (chunks[0].text, chunks[0].page, chunks[0].heading, chunks[0].chunk_index) == ("One short sentence.", 3, "Intro", 0)
    assert chunks[0].embed_text == "Intro\n\nOne short sentence."


def test_chunks_respect_the_token_budget_heading_included(tokenizer):
    text = "\n\n".join(PARAGRAPH * 3 for _ in range(20))
    chunker = Chunker(tokenizer, 80, 16)
    chunks = chunker.chunk([Section(text, heading="Storage > Edge")])
    assert len(chunks) > 10
    for chunk in chunks:
        assert n_tokens(tokenizer, chunk.embed_text) <= 80
        assert chunk.token_count == n_tokens(tokenizer, chunk.embed_text)
        assert chunk.text in text  # an exact substring: what users see is what was embedded
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))


def test_consecutive_chunks_overlap_and_cover_everything(tokenizer):
    words = [f"w{i}" for i in range(600)]
    text = " ".join(words)
    chunks = Chunker(tokenizer, 60, 15).chunk([Section(text)])
    covered = set()
    for prev, cur in zip(chunks, chunks[1:]):
        shared = set(prev.text.split()) & set(cur.text.split())
        assert shared, "consecutive chunks must overlap"
        assert n_tokens(tokenizer, " ".join(sorted(shared))) <= 15 + 4
    for chunk in chunks:
        covered.update(chunk.text.split())
    assert covered == set(words)


def test_chunks_end_at_sentence_boundaries_when_possible(tokenizer):
    text = " ".join(f"Sentence number {i} talks about vector search and chunking." for i in range(60))
    chunks = Chunker(tokenizer, 64, 10).chunk([Section(text)])
    assert all(c.text.endswith(".") for c in chunks[:-1])
    assert all(c.text.startswith("Sentence") for c in chunks)


def test_a_word_longer_than_the_budget_is_split(tokenizer):
    blob = "x" * 5000  # one "word": no boundary anywhere
    chunks = Chunker(tokenizer, 50, 5).chunk([Section(blob)])
    assert "".join(c.text for c in chunks).count("x") >= 5000
    assert all(n_tokens(tokenizer, c.text) <= 50 for c in chunks)


def test_model_limit_caps_the_configured_size(tokenizer, embedder):
    chunker = Chunker(tokenizer, 10_000, 50, hard_limit=embedder.max_tokens)
    chunks = chunker.chunk([Section(PARAGRAPH * 80)])
    assert chunker.max_tokens == embedder.max_tokens
    assert all(c.token_count <= embedder.max_tokens for c in chunks)


def test_long_heading_is_cut_to_its_cap(tokenizer):
    heading = " > ".join(f"Part {i} of a very deep outline" for i in range(30))
    chunks = Chunker(tokenizer, 100, 10).chunk([Section(PARAGRAPH * 4, heading=heading)])
    assert n_tokens(tokenizer, chunks[0].heading + "\n\n") <= MAX_HEADING_TOKENS
    assert all(c.token_count <= 100 for c in chunks)


def test_page_metadata_follows_sections(tokenizer):
    chunks = Chunker(tokenizer, 40, 8).chunk([Section(PARAGRAPH, page=1), Section(PARAGRAPH * 2, page=2)])
    pages = [c.page for c in chunks]
    assert pages == sorted(pages) and set(pages) == {1, 2}


def test_overlap_must_be_smaller_than_size(tokenizer):
    with pytest.raises(ValueError):
        Chunker(tokenizer, 50, 50)


# -- Bounded windows (issue 24): a long section is tokenized piece by piece, with the same chunks. -----------------

LONG_TEXTS = {
    "paragraphs": "\n\n".join(PARAGRAPH * (1 + i % 3) for i in range(60)),
    "one line": " ".join(f"word{i}, then sentence {i} ends here." for i in range(1500)),
    "lines": "\n".join(f"line {i}: value={i * 7} ok" for i in range(2000)),
}


@pytest.mark.parametrize("name", sorted(LONG_TEXTS))
def test_windowed_chunking_gives_the_chunks_of_a_whole_section_pass(tokenizer, name):
    text = LONG_TEXTS[name]
    whole = Chunker(tokenizer, 64, 12, window_chars=len(text) + 1).chunk([Section(text, heading="H")])
    windowed = Chunker(tokenizer, 64, 12, window_chars=700).chunk([Section(text, heading="H")])
    assert len(whole) > 20
    assert windowed == whole


def test_a_huge_line_without_boundaries_is_cut_hard_in_bounded_windows(tokenizer):
    blob = "x" * 300_000 + "y" * 300_000  # no paragraph, line, sentence or space anywhere
    chunks = Chunker(tokenizer, 50, 5, window_chars=4096).chunk([Section(blob)])
    assert "".join(c.text for c in chunks) == blob  # hard cuts, no overlap to share
    assert max(len(c.text) for c in chunks) <= 4096 * 16  # bounded by the widest window


def test_the_chunk_budget_stops_chunking_early(tokenizer):
    from backend.errors import DocumentTooLarge

    text = "\n\n".join(PARAGRAPH for _ in range(400))
    assert len(Chunker(tokenizer, 40, 8).chunk([Section(text)], max_chunks=10_000)) > 100
    with pytest.raises(DocumentTooLarge, match="more than 100 chunks"):
        Chunker(tokenizer, 40, 8).chunk([Section(text)], max_chunks=100)
