"""Real documents made by the tests: PDFs (fpdf2), DOCX (python-docx), HTML, Markdown, text."""

from __future__ import annotations

import io


def make_pdf(pages: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def make_docx(blocks: list[tuple[str, str]], table: list[list[str]] | None = None) -> bytes:
    """blocks: (heading, paragraph) pairs."""
    import docx

    document = docx.Document()
    for heading, paragraph in blocks:
        document.add_heading(heading, level=1)
        document.add_paragraph(paragraph)
    if table:
        t = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                t.cell(r, c).text = cell
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


def make_html(title: str, sections: list[tuple[str, str]]) -> bytes:
    body = "".join(f"<h2>{h}</h2><p>{p}</p>" for h, p in sections)
    return (
        f"<html><head><title>{title}</title><script>var secret = 'do not index';</script></head>"
        f"<body><nav>menu items</nav>{body}</body></html>"
    ).encode()


def make_markdown(title: str, sections: list[tuple[str, str]]) -> bytes:
    return (f"# {title}\n\n" + "".join(f"## {h}\n\n{p}\n\n" for h, p in sections)).encode()


# -- Hostile inputs (issue 24): each is a small upload that is broken, or costs far more once opened. -------------

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def docx_with_parts(parts: dict[str, bytes], base: bytes | None = None) -> bytes:
    """A real DOCX (make_docx) with some members replaced (or added): the zip stays valid, the content is not."""
    import zipfile

    base = base or make_docx([("Title", "Body text.")])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(base)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, parts.get(info.filename, src.read(info.filename)))
        for name, data in parts.items():
            if name not in src.namelist():
                dst.writestr(name, data)
    return out.getvalue()


def docx_malformed_xml() -> bytes:
    """word/document.xml is cut off mid-element (not well-formed XML)."""
    return docx_with_parts({"word/document.xml": f'<w:document xmlns:w="{W_NS}"><w:body><w:p><w:r><w:t>cut'.encode()})


def docx_entity_expansion(levels: int = 9) -> bytes:
    """The 'billion laughs': an internal DTD whose nested entities expand to 10**levels copies of a word."""
    entities = ['<!ENTITY e0 "lol">'] + [f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, levels + 1)]
    xml = (
        f'<?xml version="1.0"?><!DOCTYPE w:document [{"".join(entities)}]>'
        f'<w:document xmlns:w="{W_NS}"><w:body><w:p><w:r><w:t>&e{levels};</w:t></w:r></w:p></w:body></w:document>'
    )
    return docx_with_parts({"word/document.xml": xml.encode()})


def docx_truncated() -> bytes:
    """A DOCX cut in half (an interrupted download): the zip's central directory is gone."""
    data = make_docx([("Title", "Body text. " * 200)])
    return data[: len(data) // 2]


def docx_inflating(xml_mb: int, word: str = "lorem ") -> bytes:
    """A valid DOCX whose word/document.xml inflates to about `xml_mb` MB (×400 and more: one repeated paragraph).

    Written through zipfile in blocks, so making it never holds the inflated XML in memory."""
    import zipfile

    base = make_docx([("Title", "Body text.")])
    paragraph = f"<w:p><w:r><w:t>{word * 2000}</w:t></w:r></w:p>".encode()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(base)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            if info.filename != "word/document.xml":
                dst.writestr(info.filename, src.read(info.filename))
        with dst.open("word/document.xml", "w", force_zip64=True) as xml:
            xml.write(f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{W_NS}"><w:body>'.encode())
            block = paragraph * (1024 * 1024 // len(paragraph) + 1)
            for _ in range(xml_mb):
                xml.write(block)
            xml.write(b"</w:body></w:document>")
    return out.getvalue()


def docx_lying_sizes(xml_mb: int) -> bytes:
    """docx_inflating, with word/document.xml's declared size in the central directory patched down to 1 KB."""
    import struct
    import zipfile

    data = bytearray(docx_inflating(xml_mb))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("word/document.xml")
    # The central directory record of this member: find it by name, patch "uncompressed size" (offset 24).
    name = info.filename.encode()
    pos = 0
    while True:
        pos = data.find(b"PK\x01\x02", pos)
        assert pos >= 0, "central directory record not found"
        n_len = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46 : pos + 46 + n_len]) == name:
            break
        pos += 4
    if struct.unpack_from("<I", data, pos + 24)[0] == 0xFFFFFFFF:  # zip64: the real size is in the extra field
        extra = pos + 46 + n_len
        struct.pack_into("<Q", data, extra + 4, 1024)
    else:
        struct.pack_into("<I", data, pos + 24, 1024)
    return bytes(data)


def docx_encrypted() -> bytes:
    """What Word saves for a password-protected DOCX: an OLE compound file (CFB) holding the streams
    EncryptionInfo and EncryptedPackage, not a zip. A minimal valid CFB (version 3, 512-byte sectors)."""
    import struct

    sector = 512
    info = b"\x04\x00\x04\x00\x40\x00\x00\x00" + b"\x00" * (4096 - 8)  # Agile-encryption header, padded
    package = struct.pack("<Q", 1234) + bytes(range(256)) * 16  # declared size + "ciphertext"
    streams = [("EncryptionInfo", info), ("EncryptedPackage", package)]  # >= 4096 bytes: regular sectors
    fat: list[int] = [0xFFFFFFFD, 0xFFFFFFFE]  # sector 0: the FAT itself, sector 1: the directory
    starts, body = [], b""
    for _, data in streams:
        n = -(-len(data) // sector)
        first = len(fat)
        starts.append(first)
        fat += [first + i + 1 for i in range(n - 1)] + [0xFFFFFFFE]
        body += data.ljust(n * sector, b"\x00")
    assert len(fat) <= sector // 4
    fat_sector = struct.pack(f"<{len(fat)}I", *fat).ljust(sector, b"\xff")

    def entry(name: str, kind: int, left: int, right: int, child: int, start: int, size: int) -> bytes:
        encoded = (name + "\x00").encode("utf-16-le")
        return (
            encoded.ljust(64, b"\x00") + struct.pack("<HBB3I", len(encoded), kind, 1, left, right, child)
            + b"\x00" * 36 + struct.pack("<IQ", start, size)
        )

    none = 0xFFFFFFFF
    directory = (
        entry("Root Entry", 5, none, none, 1, 0xFFFFFFFE, 0)
        + entry(streams[0][0], 2, none, 2, none, starts[0], len(streams[0][1]))
        + entry(streams[1][0], 2, none, none, none, starts[1], len(streams[1][1]))
    ).ljust(sector, b"\x00")
    header = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 16 + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
        + b"\x00" * 6 + struct.pack("<IIIIIIIII", 0, 1, 1, 0, 4096, 0xFFFFFFFE, 0, 0xFFFFFFFE, 0)
        + struct.pack("<109I", 0, *([none] * 108))
    )
    assert len(header) == sector
    return header + fat_sector + directory + body


def _assemble_pdf(objects: list[bytes]) -> bytes:
    """A PDF file of these object bodies (numbered from 1, the first the catalog), with its xref table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def pdf_inflating(text_mb: int) -> bytes:
    """A one-page PDF whose Flate content stream inflates to about `text_mb` MB of text-showing operators
    (a few hundred KB on disk): pypdf extracts every character of it."""
    import zlib

    line = b"(" + b"lorem ipsum dolor sit amet " * 4 + b") Tj T*\n"
    content = b"BT /F1 10 Tf 12 TL 20 800 Td\n" + line * (text_mb * 1024 * 1024 // len(line)) + b"ET\n"
    stream = zlib.compress(content, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    return _assemble_pdf(objects)


def pdf_repeated_form(text_kb: int, times: int) -> bytes:
    """A PDF whose page draws one form XObject (about `text_kb` KB of text) `times` times: its streams are
    small, its extracted text is `times` as large."""
    import zlib

    line = b"(" + b"lorem ipsum dolor sit amet " * 4 + b") Tj T*\n"
    form = b"BT /F1 10 Tf 12 TL 20 800 Td\n" + line * (text_kb * 1024 // len(line)) + b"ET\n"
    form_stream = zlib.compress(form, 9)
    page = b"".join(b"q /Fm1 Do Q\n" for _ in range(times))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> /XObject << /Fm1 6 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(page) + page + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 842] /Resources << /Font << /F1 5 0 R >> >> "
        b"/Length %d /Filter /FlateDecode >>\nstream\n" % len(form_stream) + form_stream + b"\nendstream",
    ]
    return _assemble_pdf(objects)
