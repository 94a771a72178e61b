"""File parsers: bytes in, text sections (with page / heading metadata) out.

One small interface (`Parser`) and a registry keyed by file extension. Parsers work on bytes, never on
a caller-supplied path, so uploads and folder ingest share them and a filename is never used to open
anything. Library exceptions are translated to `CorruptDocument` here, at the boundary.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import PurePath
from typing import Protocol

from backend.errors import CorruptDocument, EmptyDocument, UnsupportedFileType


@dataclass(frozen=True)
class Section:
    """A run of text that shares one location: a PDF page, or the body under one heading."""

    text: str
    page: int | None = None
    heading: str | None = None


class Parser(Protocol):
    """Turns one file's bytes into sections of plain text."""

    extensions: tuple[str, ...]

    def parse(self, data: bytes, name: str) -> list[Section]:
        """Return the file's sections in reading order.

        Raises `CorruptDocument` when the bytes are not a valid file of this type.
        Sections may be empty; the caller decides whether the document as a whole is empty.
        """
        ...


def decode_text(data: bytes, name: str) -> str:
    """Decode text bytes: UTF-8 (with or without BOM) first, then charset detection (cp1251, latin-2, ...)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise CorruptDocument(f"{name}: not valid text in any known encoding")
    return str(best)


def _check_not_binary(text: str, name: str) -> None:
    # A NUL byte or a high share of control characters means a binary file with a text extension.
    sample = text[:4096]
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\r\t\f")
    if "\x00" in sample or (sample and controls / len(sample) > 0.1):
        raise CorruptDocument(f"{name}: binary content in a text file")


def _sections_by_headings(blocks: list[tuple[str | None, str]]) -> list[Section]:
    """Merge (heading, text) blocks into sections, dropping blank ones."""
    return [Section(text=text.strip(), heading=heading) for heading, text in blocks if text.strip()]


class TextParser:
    """Plain text: one section."""

    extensions = (".txt", ".text", ".log", ".csv", ".rst")

    def parse(self, data: bytes, name: str) -> list[Section]:
        text = decode_text(data, name)
        _check_not_binary(text, name)
        return [Section(text=text.strip())] if text.strip() else []


class MarkdownParser:
    """Markdown: split at headings (found by markdown-it, so `#` inside code fences is not a heading).

    Each section keeps its heading path ("Install > Docker"), so chunks know where they came from.
    """

    extensions = (".md", ".markdown", ".mdx")

    def parse(self, data: bytes, name: str) -> list[Section]:
        from markdown_it import MarkdownIt

        text = decode_text(data, name)
        _check_not_binary(text, name)
        lines = text.splitlines()
        tokens = MarkdownIt("commonmark").parse(text)
        headings: list[tuple[int, int, int, str]] = []  # (start line, end line, level, title)
        for i, tok in enumerate(tokens):
            if tok.type == "heading_open" and tok.map:
                title = tokens[i + 1].content.strip() if i + 1 < len(tokens) else ""
                headings.append((tok.map[0], tok.map[1], int(tok.tag[1]), title))

        blocks: list[tuple[str | None, str]] = []
        path: list[tuple[int, str]] = []
        cursor = 0
        current: str | None = None
        for start, end, level, title in headings:
            blocks.append((current, "\n".join(lines[cursor:start])))
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
            current = " > ".join(t for _, t in path)
            cursor = end
        blocks.append((current, "\n".join(lines[cursor:])))
        return _sections_by_headings(blocks)


class HtmlParser:
    """HTML: visible text (scripts, styles, navigation dropped), split at h1-h6."""

    extensions = (".html", ".htm", ".xhtml")

    def parse(self, data: bytes, name: str) -> list[Section]:
        from bs4 import BeautifulSoup

        try:
            soup = BeautifulSoup(data, "lxml")
        except Exception as exc:  # lxml raises its own family; anything here means unparseable markup
            raise CorruptDocument(f"{name}: not parseable HTML ({exc})") from exc
        for tag in soup(["script", "style", "noscript", "template", "nav", "footer", "header", "svg"]):
            tag.decompose()
        body = soup.body or soup
        blocks: list[tuple[str | None, str]] = []
        heading: str | None = soup.title.get_text(" ", strip=True) if soup.title else None
        parts: list[str] = []
        block_tags = ["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "td", "th", "blockquote", "dd", "dt"]
        for el in body.find_all(block_tags):
            # Only leaf-level blocks: a <p> inside an <li> is read through its parent.
            if el.find_parent(block_tags[6:]) is not None and el.name not in ("pre",):
                continue
            text = el.get_text(" ", strip=True) if el.name != "pre" else el.get_text()
            if not text:
                continue
            if el.name in block_tags[:6]:
                blocks.append((heading, "\n".join(parts)))
                heading, parts = text, []
            else:
                parts.append(text)
        blocks.append((heading, "\n".join(parts)))
        sections = _sections_by_headings(blocks)
        if not sections:  # markup without block tags: fall back to all visible text
            text = body.get_text("\n", strip=True)
            sections = [Section(text=text)] if text else []
        return sections


class PdfParser:
    """PDF through pypdf: one section per page, page numbers (1-based) kept."""

    extensions = (".pdf",)

    def parse(self, data: bytes, name: str) -> list[Section]:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError

        if not data.lstrip()[:5].startswith(b"%PDF"):
            raise CorruptDocument(f"{name}: not a PDF (no %PDF header)")
        try:
            reader = PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted:
                try:
                    reader.decrypt("")
                except Exception as exc:
                    raise CorruptDocument(f"{name}: encrypted PDF ({exc})") from exc
            sections = []
            for number, page in enumerate(reader.pages, start=1):
                text = page.extract_text() or ""
                text = re.sub(r"[ \t]+\n", "\n", text).strip()
                if text:
                    sections.append(Section(text=text, page=number))
            return sections
        except CorruptDocument:
            raise
        except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
            raise CorruptDocument(f"{name}: unreadable PDF ({type(exc).__name__}: {exc})") from exc


class DocxParser:
    """Word documents through python-docx: split at Heading styles, tables read row by row."""

    extensions = (".docx",)

    def parse(self, data: bytes, name: str) -> list[Section]:
        import docx
        from docx.opc.exceptions import PackageNotFoundError

        try:
            document = docx.Document(io.BytesIO(data))
        except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise CorruptDocument(f"{name}: not a valid DOCX file ({type(exc).__name__}: {exc})") from exc

        from docx.table import Table
        from docx.text.paragraph import Paragraph

        blocks: list[tuple[str | None, str]] = []
        path: list[tuple[int, str]] = []
        heading: str | None = None
        parts: list[str] = []
        for item in document.iter_inner_content():
            if isinstance(item, Paragraph):
                text = item.text.strip()
                style = (item.style.name if item.style is not None else "") or ""
                match = re.match(r"(?:Heading|Title)\s*(\d*)", style)
                if match and text:
                    level = int(match.group(1) or 1) if style.startswith("Heading") else 0
                    blocks.append((heading, "\n".join(parts)))
                    path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, text)]
                    heading, parts = " > ".join(t for _, t in path), []
                elif text:
                    parts.append(text)
            elif isinstance(item, Table):
                for row in item.rows:
                    cells = [cell.text.strip() for cell in row.cells]
                    if any(cells):
                        parts.append(" | ".join(cells))
        blocks.append((heading, "\n".join(parts)))
        return _sections_by_headings(blocks)


PARSERS: dict[str, Parser] = {}
for _parser in (TextParser(), MarkdownParser(), HtmlParser(), PdfParser(), DocxParser()):
    for _ext in _parser.extensions:
        PARSERS[_ext] = _parser


def supported_extensions() -> list[str]:
    return sorted(PARSERS)


def parser_for(name: str) -> Parser:
    """The parser for a file name; `UnsupportedFileType` when no parser handles its extension."""
    ext = PurePath(name).suffix.lower()
    parser = PARSERS.get(ext)
    if parser is None:
        shown = ext or "(no extension)"
        raise UnsupportedFileType(
            f"{name}: unsupported file type {shown}; supported: {', '.join(supported_extensions())}"
        )
    return parser


def parse_document(data: bytes, name: str) -> list[Section]:
    """Parse a file into non-empty sections; raises UnsupportedFileType, CorruptDocument or EmptyDocument."""
    parser = parser_for(name)
    if not data.strip():
        raise EmptyDocument(f"{name}: the file is empty")
    sections = parser.parse(data, name)
    if not sections:
        raise EmptyDocument(f"{name}: no text could be extracted (a scanned PDF needs OCR first)")
    return sections
