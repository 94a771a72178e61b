"""The parse worker pool: deadline, memory limit, errors carried back, workers replaced (real processes)."""

from __future__ import annotations

import time

import pytest

from backend.errors import CorruptDocument, DocumentTooLarge, ParseTimeout
from backend.ingest.chunking import Chunker
from backend.ingest.isolation import InlineParsing, ParseLimits, ParsePool
from tests.support import docs_factory as df

MB = 1024 * 1024


@pytest.fixture(scope="module")
def chunker(embedder):
    return Chunker(embedder.tokenizer, 128, 24, hard_limit=embedder.max_tokens)


def test_the_pool_gives_the_chunks_of_an_inline_parse(chunker):
    files = {
        "a.pdf": df.make_pdf(["Intro.", "Backups run nightly at 02:00."]),
        "b.docx": df.make_docx([("Setup", "The NAS is in rack B.")], table=[["port", "8000"]]),
        "c.md": df.make_markdown("Doc", [("Ports", "The backend listens on 8000.")]),
    }
    pool = ParsePool(chunker, ParseLimits())
    try:
        for name, data in files.items():
            assert pool.run(data, name) == InlineParsing(chunker).run(data, name)
    finally:
        pool.close()


def test_a_parse_past_the_deadline_is_stopped_and_its_worker_replaced(chunker):
    pool = ParsePool(chunker, ParseLimits(max_parse_s=1.5, max_inflate_ratio=1e9), workers=1)
    try:
        started = time.monotonic()
        with pytest.raises(ParseTimeout, match="MAX_PARSE_S"):
            pool.run(df.pdf_inflating(6), "slow.pdf")
        assert time.monotonic() - started < 4
        assert pool.run(b"# Next\n\nA fresh worker reads this.", "next.md")[0].text == "A fresh worker reads this."
    finally:
        pool.close()


def test_a_parse_past_the_memory_limit_is_too_large_and_errors_come_back_typed(chunker):
    pool = ParsePool(chunker, ParseLimits(memory_bytes=64 * MB, max_inflate_ratio=1e9), workers=1)
    try:
        with pytest.raises(DocumentTooLarge, match="memory limit"):
            pool.run(df.docx_inflating(60), "heavy.docx")  # within MAX_EXTRACTED_MB, not within 64 MB of memory
        with pytest.raises(CorruptDocument, match="malformed XML"):
            pool.run(df.docx_malformed_xml(), "bad.docx")
    finally:
        pool.close()


def test_a_small_file_may_inflate_only_a_ratio_of_its_size(chunker):
    limits = ParseLimits(max_extracted_bytes=200 * MB, max_inflate_ratio=100)
    assert limits.extract_limit(15_000) == 2 * MB  # the floor: small files keep room for verbose containers
    assert limits.extract_limit(1 * MB) == 100 * MB
    assert limits.extract_limit(50 * MB) == 200 * MB  # never above MAX_EXTRACTED_MB
    # A 0.1 MB DOCX whose XML inflates to 60 MB: refused by the ratio, from its central directory.
    with pytest.raises(DocumentTooLarge, match="MAX_INFLATE_RATIO"):
        InlineParsing(chunker, limits).run(df.docx_inflating(60), "bomb.docx")
    # An ordinary DOCX passes: its XML is many times its zipped size, well inside the floor and the ratio.
    docx = df.make_docx([("Heading 1", "Leave policy"), ("Normal", "Request leave ten working days ahead. " * 200)])
    chunks = InlineParsing(chunker, limits).run(docx, "policy.docx")
    assert any("ten working days" in chunk.text for chunk in chunks)
    # A 15 KB PDF whose stream unpacks into ~4 M characters (under MAX_FILE_CHUNKS: ~9,000 chunks, minutes of
    # embedding): refused once its text passes 2 MB.
    started = time.monotonic()
    with pytest.raises(DocumentTooLarge, match="MAX_INFLATE_RATIO"):
        InlineParsing(chunker, limits).run(df.pdf_inflating(4), "tiny.pdf")
    print(f"tiny inflating PDF refused in {time.monotonic() - started:.1f} s")
