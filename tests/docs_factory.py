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
