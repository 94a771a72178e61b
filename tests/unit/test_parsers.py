"""Parser contract: every registered parser extracts text, rejects corrupt bytes, reports empty files."""

from __future__ import annotations

import pytest

from backend.errors import CorruptDocument, EmptyDocument, UnsupportedFileType
from backend.ingest.parsers import PARSERS, parse_document, parser_for
from tests.support.docs_factory import make_docx, make_html, make_markdown, make_pdf

MARKER = "Zebrafish telemetry uses port 7341"

SAMPLES = {
    ".pdf": lambda: make_pdf(["Intro page.", MARKER]),
    ".docx": lambda: make_docx([("Setup", MARKER)]),
    ".html": lambda: make_html("Doc", [("Setup", MARKER)]),
    ".md": lambda: make_markdown("Doc", [("Setup", MARKER)]),
    ".txt": lambda: MARKER.encode(),
}
CORRUPT = {
    ".pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> garbage \x00\xff trailer",
    ".docx": b"PK\x03\x04 this is not a real zip archive",
    ".txt": b"\x00\x01\x02\x03binary\x00\x00\x00\x00" * 20,
    ".md": b"\x00\x00\x00\xff\xfe\x00\x00" * 30,
}


def _parser_exts():
    return sorted({parser.extensions[0] for parser in PARSERS.values()})


@pytest.mark.parametrize("ext", _parser_exts())
def test_every_parser_extracts_text(ext):
    sample_ext = ext if ext in SAMPLES else {".text": ".txt", ".markdown": ".md", ".htm": ".html"}.get(ext, ".txt")
    sections = parse_document(SAMPLES[sample_ext](), f"sample{ext}")
    assert MARKER in " ".join(s.text for s in sections)


@pytest.mark.parametrize("ext", sorted(CORRUPT))
def test_corrupt_files_raise_corrupt_document(ext):
    with pytest.raises(CorruptDocument) as info:
        parse_document(CORRUPT[ext], f"broken{ext}")
    assert f"broken{ext}" in info.value.message


@pytest.mark.parametrize("ext", [".pdf", ".docx", ".html", ".md", ".txt"])
def test_empty_files_raise_empty_document(ext):
    with pytest.raises(EmptyDocument, match="empty"):
        parse_document(b"", f"empty{ext}")


@pytest.mark.parametrize("ext", [".md", ".txt", ".html"])
def test_whitespace_only_text_files_are_empty(ext):
    with pytest.raises(EmptyDocument):
        parse_document(b"  \n\n \t", f"blank{ext}")


def test_markup_without_text_is_empty():
    with pytest.raises(EmptyDocument):
        parse_document(b"<html><body><script>x()</script></body></html>", "s.html")


def test_pdf_keeps_page_numbers():
    sections = parse_document(make_pdf(["First page text.", "", "Third page mentions Kubernetes."]), "p.pdf")
    assert [(s.page, s.text) for s in sections] == [(1, "First page text."), (3, "Third page mentions Kubernetes.")]


def test_pdf_without_text_layer_is_empty():
    with pytest.raises(EmptyDocument, match="no text"):
        parse_document(make_pdf(["", ""]), "scan.pdf")


def test_markdown_heading_paths_and_code_fences():
    md = b"# Guide\nintro\n## Install\nstep one\n```\n# not a heading\n```\n### Docker\nrun it\n## Usage\nask\n"
    sections = parse_document(md, "g.md")
    by_heading = {s.heading: s.text for s in sections}
    assert by_heading["Guide"] == "intro"
    assert "# not a heading" in by_heading["Guide > Install"]
    assert by_heading["Guide > Install > Docker"] == "run it"
    assert by_heading["Guide > Usage"] == "ask"


def test_html_drops_scripts_and_navigation():
    sections = parse_document(make_html("T", [("Setup", MARKER)]), "x.html")
    text = " ".join(s.text for s in sections)
    assert "do not index" not in text and "menu items" not in text
    assert any(s.heading == "Setup" for s in sections)


def test_docx_headings_and_tables():
    data = make_docx([("Overview", "Body one."), ("Limits", "Body two.")], table=[["key", "value"], ["MAX_UPLOAD_MB", "50"]])
    sections = parse_document(data, "d.docx")
    headings = [s.heading for s in sections]
    assert headings == ["Overview", "Limits"]
    assert "MAX_UPLOAD_MB | 50" in sections[-1].text


def test_text_in_legacy_cyrillic_encoding():
    text = "Векторное хранилище индексирует документы команды. " * 5
    sections = parse_document(text.encode("cp1251"), "ru.txt")
    assert "Векторное хранилище" in sections[0].text


def test_unknown_extension_is_unsupported():
    with pytest.raises(UnsupportedFileType, match=r"\.png"):
        parser_for("picture.png")
    with pytest.raises(UnsupportedFileType, match="no extension"):
        parser_for("Makefile")


# -- Hostile files (issue 24): each is this file's CorruptDocument / DocumentTooLarge with its reason. -------------

import io  # noqa: E402
import zipfile  # noqa: E402

from backend.errors import DocumentTooLarge  # noqa: E402
from tests.support import docs_factory as df  # noqa: E402


@pytest.mark.parametrize(
    "make, reason",
    [
        (df.docx_malformed_xml, "malformed XML"),
        (df.docx_entity_expansion, "entity expansion"),
        (lambda: df.docx_entity_expansion(2), "entity expansion"),  # harmless size, still no DTD allowed
        (df.docx_encrypted, "encrypted"),
        (df.docx_truncated, "truncated zip"),
        (lambda: df.docx_lying_sizes(8), "damaged DOCX part"),
    ],
)
def test_bad_docx_files_are_corrupt_documents_with_their_reason(make, reason):
    with pytest.raises(CorruptDocument) as info:
        parse_document(make(), "bad.docx")
    assert "bad.docx" in info.value.message and reason in info.value.message


def test_a_dtd_is_refused_in_any_encoding_the_xml_declares():
    xml = zipfile.ZipFile(io.BytesIO(df.docx_entity_expansion(2))).read("word/document.xml").decode()
    utf16 = xml.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>').encode("utf-16")
    with pytest.raises(CorruptDocument, match="entity expansion"):
        parse_document(df.docx_with_parts({"word/document.xml": utf16}), "u16.docx")


def test_a_docx_past_the_extraction_budget_is_too_large():
    data = df.docx_inflating(12)
    with pytest.raises(DocumentTooLarge, match="MAX_EXTRACTED_MB"):
        parse_document(data, "big.docx", limit=8 * 1024 * 1024)
    assert parse_document(data, "big.docx", limit=16 * 1024 * 1024)  # within it: read


def test_pdf_inflation_and_extracted_text_are_capped():
    with pytest.raises(DocumentTooLarge, match="inflates too far"):
        parse_document(df.pdf_inflating(4), "stream.pdf", limit=1024 * 1024)
    # A 1.4 KB PDF that draws one 100 KB form 20 times: small streams, 1.9 MB of text (counted while extracted).
    repeated = df.pdf_repeated_form(100, 20)
    assert sum(len(s.text) for s in parse_document(repeated, "form.pdf")) > 1_800_000
    with pytest.raises(DocumentTooLarge, match="of extracted text"):
        parse_document(repeated, "form.pdf", limit=1024 * 1024)
