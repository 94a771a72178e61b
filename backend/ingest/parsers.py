"""File parsers: bytes in, text sections (with page / heading metadata) out.

One small interface (`Parser`) and a registry keyed by file extension. Parsers work on bytes, never on
a caller-supplied path, so uploads and folder ingest share them and a filename is never used to open
anything. Library exceptions are translated to `CorruptDocument` here, at the boundary: whatever a library
raises on a bad file is that file's 422, never a 500.

Each parse has a budget (`limit`, MAX_EXTRACTED_MB): DOCX members are checked before python-docx opens them
(backend.ingest.containers), PDF streams are decompressed under pypdf's own limits lowered to it and the text
extracted is counted while it is extracted; past it, `DocumentTooLarge`. Time and memory are bounded by the
process the parse runs in (backend.ingest.isolation).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Protocol

from backend.errors import CorruptDocument, DocumentError, DocumentTooLarge, EmptyDocument, UnsupportedFileType

from backend.ingest.containers import check_docx

MB = 1024 * 1024
# The budget when the caller gives none (the default MAX_EXTRACTED_MB).
DEFAULT_EXTRACT_LIMIT = 200 * MB


@dataclass(frozen=True)
class Section:
    """A run of text that shares one location: a PDF page, or the body under one heading."""

    text: str
    page: int | None = None
    heading: str | None = None


class Parser(Protocol):
    """Turns one file's bytes into sections of plain text."""

    extensions: tuple[str, ...]

    def parse(self, data: bytes, name: str, limit: int = DEFAULT_EXTRACT_LIMIT) -> list[Section]:
        """Return the file's sections in reading order.

        Raises `CorruptDocument` when the bytes are not a valid file of this type, `DocumentTooLarge` when it
        inflates past `limit` bytes (containers, streams) or characters (extracted text).
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

    extensions: tuple[str, ...] = (".txt", ".text", ".log", ".csv", ".rst")

    def parse(self, data: bytes, name: str, limit: int = DEFAULT_EXTRACT_LIMIT) -> list[Section]:
        text = decode_text(data, name)
        _check_not_binary(text, name)
        return [Section(text=text.strip())] if text.strip() else []


class MarkdownParser:
    """Markdown: split at headings (found by markdown-it, so `#` inside code fences is not a heading).

    Each section keeps its heading path ("Install > Docker"), so chunks know where they came from.
    """

    extensions: tuple[str, ...] = (".md", ".markdown", ".mdx")

    def parse(self, data: bytes, name: str, limit: int = DEFAULT_EXTRACT_LIMIT) -> list[Section]:
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

    extensions: tuple[str, ...] = (".html", ".htm", ".xhtml")

    def parse(self, data: bytes, name: str, limit: int = DEFAULT_EXTRACT_LIMIT) -> list[Section]:
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

    extensions: tuple[str, ...] = (".pdf",)

    def parse(self, data: bytes, name: str, limit: int = DEFAULT_EXTRACT_LIMIT) -> list[Section]:
        from pypdf import PdfReader, apply_configuration, get_configuration
        from pypdf.errors import LimitReachedError

        if not data.lstrip()[:5].startswith(b"%PDF"):
            raise CorruptDocument(f"{name}: not a PDF (no %PDF header)")
        # pypdf's own per-stream limits, lowered to the budget where it is smaller (never raised above pypdf's).
        defaults = get_configuration()
        caps = {field: min(getattr(defaults, field), limit) for field in _PYPDF_OUTPUT_LIMITS}
        extracted = _TextBudget(name, limit)
        try:
            with apply_configuration(**caps):
                reader = PdfReader(io.BytesIO(data), strict=False)
                if reader.is_encrypted:
                    try:
                        reader.decrypt("")
                    except Exception as exc:
                        raise CorruptDocument(f"{name}: encrypted PDF ({exc})") from exc
                sections = []
                for number, page in enumerate(reader.pages, start=1):
                    text = page.extract_text(visitor_text=extracted.visit) or ""
                    extracted.check()  # pypdf swallows errors inside form XObjects: the count decides
                    text = re.sub(r"[ \t]+\n", "\n", text).strip()
                    if text:
                        sections.append(Section(text=text, page=number))
                return sections
        except DocumentError:
            raise
        except LimitReachedError as exc:
            raise DocumentTooLarge(
                f"{name}: past a PDF reading limit of {limit / MB:g} MB (MAX_EXTRACTED_MB, MAX_INFLATE_RATIO; a stream "
                f"inflates too far, or a cycle): {exc}"
            ) from exc
        except RecursionError as exc:
            raise CorruptDocument(f"{name}: unreadable PDF (nested too deeply)") from exc
        except MemoryError:
            raise
        except Exception as exc:  # pypdf raises many kinds on broken files; each is this file's problem
            raise CorruptDocument(f"{name}: unreadable PDF ({type(exc).__name__}: {exc})") from exc


# pypdf's decompression output limits (pypdf.Configuration), each capped at the file's budget.
_PYPDF_OUTPUT_LIMITS = (
    "zlib_maximum_output_length", "lzw_maximum_output_length", "run_length_maximum_output_length",
    "jbig2_maximum_output_length", "brotli_maximum_output_length", "array_based_stream_maximum_output_length",
    "image_maximum_buffer_size", "maximum_declared_stream_length", "stream_decoding_work_maximum_length",
)


class _TextBudget:
    """Counts the characters pypdf extracts (its visitor sees every piece) and stops past the budget."""

    def __init__(self, name: str, limit: int):
        self.name, self.limit, self.count = name, limit, 0

    def visit(self, text, *_position) -> None:
        self.count += len(text)
        self.check()

    def check(self) -> None:
        if self.count > self.limit:
            raise DocumentTooLarge(
                f"{self.name}: more than {self.limit / MB:g} MB of extracted text (MAX_EXTRACTED_MB, MAX_INFLATE_RATIO)"
            )


class DocxParser:
    """Word documents through python-docx: split at Heading styles, tables read row by row."""

    extensions: tuple[str, ...] = (".docx",)

    def parse(self, data: bytes, name: str, limit: int = DEFAULT_EXTRACT_LIMIT) -> list[Section]:
        check_docx(data, name, limit)
        try:
            return self._read(data, limit)
        except DocumentError as exc:
            raise type(exc)(f"{name}: {exc.message}") from exc
        except MemoryError:
            raise
        except Exception as exc:  # lxml (malformed XML), python-docx (missing parts, bad relationships), ...
            from lxml import etree

            what = "malformed XML in the DOCX" if isinstance(exc, etree.XMLSyntaxError) else "not a valid DOCX file"
            raise CorruptDocument(f"{name}: {what} ({type(exc).__name__}: {exc})") from exc

    def _read(self, data: bytes, limit: int) -> list[Section]:
        import docx
        from docx.table import Table
        from docx.text.paragraph import Paragraph

        document = docx.Document(io.BytesIO(data))
        extracted = 0

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
                extracted += len(text)
            elif isinstance(item, Table):
                for row in item.rows:
                    cells = [cell.text.strip() for cell in row.cells]
                    if any(cells):
                        parts.append(" | ".join(cells))
                        extracted += sum(map(len, cells))
            if extracted > limit:  # merged table cells repeat their text per grid column
                raise DocumentTooLarge(f"more than {limit / MB:g} MB of extracted text (MAX_EXTRACTED_MB, MAX_INFLATE_RATIO)")
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


def parse_document(data: bytes, name: str, limit: int = DEFAULT_EXTRACT_LIMIT) -> list[Section]:
    """Parse a file into non-empty sections; raises UnsupportedFileType, CorruptDocument, DocumentTooLarge
    (past `limit`, MAX_EXTRACTED_MB) or EmptyDocument."""
    parser = parser_for(name)
    if not data.strip():
        raise EmptyDocument(f"{name}: the file is empty")
    try:
        sections = parser.parse(data, name, limit=limit)
    except (DocumentError, MemoryError):
        raise
    except Exception as exc:  # a parser's library failing in a way its parser did not foresee: still this file's 422
        raise CorruptDocument(f"{name}: could not be parsed ({type(exc).__name__}: {exc})") from exc
    if sum(len(section.text) for section in sections) > limit:
        raise DocumentTooLarge(f"{name}: more than {limit / MB:g} MB of extracted text (MAX_EXTRACTED_MB, MAX_INFLATE_RATIO)")
    if not sections:
        raise EmptyDocument(f"{name}: no text could be extracted (a scanned PDF needs OCR first)")
    return sections
