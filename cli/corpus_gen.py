"""`python -m cli.bench corpus`: a corpus of real text in the formats and languages users have.

The text is what this installation already ships, cut into paragraphs that read as prose (code, tables,
lists of links and licence boilerplate are dropped by `_is_prose`):
  en  docs/*.md, README.md and the long descriptions (READMEs) of the installed packages (site-packages
      `*.dist-info/METADATA`);
  pl, ru  the Polish and Russian documents of eval/corpora/multilingual (the only Polish and Russian prose
      found in the repository or its packages: a grep of site-packages finds only word lists and test
      strings). Their pool is small (~13 kB, ~43 paragraphs each), so a large corpus repeats their
      paragraphs in new combinations; the English pool is ~250 kB (~1,300 paragraphs).

Each document draws its format, its language and 3-12 (heading, paragraph) sections from a
`random.Random(seed)`: the same seed over the same installation gives the same bytes (DOCX zip times and
PDF creation dates are pinned for that). PDFs have several pages (one per group of sections, in DejaVu Sans
from matplotlib, the one TTF font in the venv with Latin-2 and Cyrillic). Files go under
`<lang>/<NNN>/doc-<i>.<ext>`, a thousand per folder, so that a 100k-file corpus stays listable.

`manifest.json` beside them records the seed, counts per format and language, characters, and the
expected chunk count (`estimate_chunks`); `cli.bench_scale` sizes a corpus for a chunk count from it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import random
import re
import sys
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("md", "html", "docx", "pdf")
LANGUAGES = ("en", "pl", "ru")
# Characters of a full chunk at CHUNK_TOKENS=200 with multilingual-e5-small's tokenizer: Polish and Russian
# words split into more tokens than English. Checked: 200 documents (seed 3) expected 1,359 chunks, the
# appliance's chunker cut 1,318 (3 % fewer). Other tokenizers (MiniLM's on Cyrillic) cut more.
CHARS_PER_CHUNK = {"en": 900, "pl": 650, "ru": 650}
# Fixed times written into DOCX zips and PDF metadata: the bytes depend on the seed only.
PINNED_ZIP_TIME = (2026, 1, 1, 0, 0, 0)
PINNED_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
FILES_PER_FOLDER = 1000
PDF_SECTIONS_PER_PAGE = 2


@dataclass(frozen=True)
class Paragraph:
    """A paragraph of prose with the heading it stood under (its source's file name when it had none)."""

    heading: str
    text: str


@dataclass
class CorpusManifest:
    """What `generate` wrote: the counts `scale` and the docs quote."""

    seed: int
    docs: int
    formats: dict[str, int] = field(default_factory=dict)
    languages: dict[str, int] = field(default_factory=dict)
    chars: int = 0
    expected_chunks: int = 0
    bytes: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


_CODE_HINTS = re.compile(r"[{}<>=|\\]|^\s*[-*+#>]|^\s{4}|https?://|\.\. |::", re.M)


def _is_prose(text: str) -> bool:
    """Sentences, not code, tables, link lists or licence capitals: most characters are letters and spaces."""
    words = text.split()
    if len(words) < 12 or len(text) > 4000 or _CODE_HINTS.search(text):
        return False
    letters = sum(ch.isalpha() or ch.isspace() for ch in text)
    upper = sum(ch.isupper() for ch in text)
    return letters / len(text) > 0.88 and upper / len(text) < 0.15 and text.rstrip()[-1:] in ".!?:)"


def split_paragraphs(text: str, fallback_heading: str) -> list[Paragraph]:
    """Prose paragraphs of a Markdown/RST text, each with the nearest heading above it."""
    heading = fallback_heading
    out = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        block = block.strip()
        first, _, rest = block.partition("\n")
        underlined = re.fullmatch(r"[=\-~^]{3,}", rest.strip()) is not None
        if first.startswith("#") or underlined:  # a Markdown heading (maybe with its text below) or an RST one
            # Letters, digits and plain punctuation only: emoji in package READMEs' headings have no glyph in the PDF font.
            heading = "".join(ch for ch in first.lstrip("#") if ch.isalnum() or ch in " .,:;()'-/&").strip()[:80] or heading
            if underlined:
                continue
            block = rest.strip()
        flat = " ".join(block.split())
        if _is_prose(flat):
            out.append(Paragraph(heading, flat))
    return out


def _metadata_body(path: Path) -> str:
    """A package's long description: what follows the headers of its METADATA file."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return text.split("\n\n", 1)[1] if "\n\n" in text else ""


def _site_packages() -> Path | None:
    for entry in sys.path:
        if entry.endswith("site-packages") and Path(entry).is_dir():
            return Path(entry)
    return None


@lru_cache(maxsize=1)
def text_pools() -> dict[str, list[Paragraph]]:
    """Paragraphs per language, in a fixed order (sorted sources, duplicates dropped)."""
    sources: dict[str, list[tuple[str, str]]] = {lang: [] for lang in LANGUAGES}
    for path in sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]:
        if path.exists():
            sources["en"].append((path.stem, path.read_text(encoding="utf-8")))
    site = _site_packages()
    if site is not None:
        for meta in sorted(site.glob("*.dist-info/METADATA")):
            sources["en"].append((meta.parent.name.split("-")[0], _metadata_body(meta)))
    for lang in ("en", "pl", "ru"):
        for path in sorted((ROOT / "eval" / "corpora" / "multilingual" / lang).glob("*.md")):
            sources[lang].append((path.stem, path.read_text(encoding="utf-8")))
    pools: dict[str, list[Paragraph]] = {}
    for lang, texts in sources.items():
        seen: set[str] = set()
        pool = []
        for name, text in texts:
            for para in split_paragraphs(text, name.replace("-", " ").replace("_", " ")):
                if para.text not in seen and (lang != "en" or para.text.isascii()):
                    seen.add(para.text)
                    pool.append(para)
        pools[lang] = pool
    return pools


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_md(title: str, sections: list[Paragraph]) -> bytes:
    return (f"# {title}\n\n" + "".join(f"## {p.heading}\n\n{p.text}\n\n" for p in sections)).encode()


def render_html(title: str, sections: list[Paragraph], lang: str) -> bytes:
    body = "".join(f"<h2>{_escape(p.heading)}</h2>\n<p>{_escape(p.text)}</p>\n" for p in sections)
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8"><title>{_escape(title)}</title></head>\n'
        f"<body><h1>{_escape(title)}</h1>\n{body}</body></html>\n"
    ).encode()


def _pin_zip(data: bytes) -> bytes:
    """The same zip with every member's time pinned (python-docx stamps the time of saving)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            pinned = zipfile.ZipInfo(info.filename, date_time=PINNED_ZIP_TIME)
            pinned.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(pinned, src.read(info.filename))
    return out.getvalue()


def render_docx(title: str, sections: list[Paragraph]) -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = title
    document.core_properties.created = PINNED_DATE.replace(tzinfo=None)
    document.core_properties.modified = PINNED_DATE.replace(tzinfo=None)
    document.add_heading(title, level=0)
    for para in sections:
        document.add_heading(para.heading, level=1)
        document.add_paragraph(para.text)
    buf = io.BytesIO()
    document.save(buf)
    return _pin_zip(buf.getvalue())


@lru_cache(maxsize=1)
def _pdf_font() -> Path:
    """DejaVu Sans as matplotlib ships it: Helvetica (the PDF core font) has no Polish or Cyrillic letters."""
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("PDF output needs matplotlib's DejaVu Sans font: install the bench extra (pip install -e .[bench])")
    return Path(list(spec.submodule_search_locations)[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"


def render_pdf(title: str, sections: list[Paragraph]) -> bytes:
    """A PDF of several pages: a page per PDF_SECTIONS_PER_PAGE sections (a long one flows onto the next)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_creation_date(PINNED_DATE)
    pdf.set_title(title)
    pdf.add_font("DejaVu", fname=str(_pdf_font()))
    for start in range(0, len(sections), PDF_SECTIONS_PER_PAGE):
        pdf.add_page()
        if start == 0:
            pdf.set_font("DejaVu", size=16)
            pdf.multi_cell(0, 9, title, new_x="LMARGIN", new_y="NEXT")
        for para in sections[start : start + PDF_SECTIONS_PER_PAGE]:
            pdf.set_font("DejaVu", size=13)
            pdf.multi_cell(0, 8, para.heading, new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("DejaVu", size=11)
            pdf.multi_cell(0, 6, para.text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
    return bytes(pdf.output())


EXTENSIONS = {"md": ".md", "html": ".html", "docx": ".docx", "pdf": ".pdf"}


def make_document(rng: random.Random, index: int, fmt: str, lang: str, pool: list[Paragraph]) -> tuple[str, bytes, int, int]:
    """One document: (relative path, bytes, characters of text, expected chunks)."""
    sections = [pool[rng.randrange(len(pool))] for _ in range(rng.randint(3, 12))]
    title = f"{sections[0].heading} ({index})"  # the index keeps every document distinct, even with a small pool
    if fmt == "md":
        data = render_md(title, sections)
    elif fmt == "html":
        data = render_html(title, sections, lang)
    elif fmt == "docx":
        data = render_docx(title, sections)
    else:
        data = render_pdf(title, sections)
    chars = len(title) + sum(len(p.heading) + len(p.text) for p in sections)
    rel = f"{lang}/{index // FILES_PER_FOLDER:03d}/doc-{index:07d}{EXTENSIONS[fmt]}"
    return rel, data, chars, estimate_chunks(title, sections, fmt, lang)


def estimate_chunks(title: str, sections: list[Paragraph], fmt: str, lang: str) -> int:
    """Expected chunks of a document: chunks never cross a parser's section, which is a heading's body in
    Markdown, HTML and DOCX (here one paragraph each) and a page in a PDF (PDF_SECTIONS_PER_PAGE paragraphs)."""
    per_chunk = CHARS_PER_CHUNK[lang]
    if fmt == "pdf":
        pages = [sections[i : i + PDF_SECTIONS_PER_PAGE] for i in range(0, len(sections), PDF_SECTIONS_PER_PAGE)]
        sizes = [sum(len(p.heading) + len(p.text) + 2 for p in page) for page in pages]
        sizes[0] += len(title)
    else:
        sizes = [len(p.heading) + len(p.text) for p in sections]
    return sum(-(-size // per_chunk) for size in sizes)


def generate(
    out: Path, docs: int | None, seed: int = 0, formats=FORMATS, languages=LANGUAGES, progress=None,
    target_chunks: int | None = None,
) -> CorpusManifest:
    """Write `docs` documents under `out` (created) and `out/manifest.json`; returns the manifest. With
    `docs=None`, as many as it takes to expect `target_chunks` chunks (the same seed gives a prefix of the
    same sequence of documents either way)."""
    if docs is None and not target_chunks:
        raise ValueError("give a number of documents or a target chunk count")
    unknown = (set(formats) - set(FORMATS)) | (set(languages) - set(LANGUAGES))
    if unknown or not formats or not languages:
        raise ValueError(f"formats are among {', '.join(FORMATS)} and languages among {', '.join(LANGUAGES)}; got {sorted(unknown)}")
    pools = text_pools()
    empty = [lang for lang in languages if not pools[lang]]
    if empty:
        raise ValueError(f"no prose found for {', '.join(empty)}")
    rng = random.Random(seed)
    manifest = CorpusManifest(seed=seed, docs=0)
    index = 0
    while (index < docs) if docs is not None else (manifest.expected_chunks < (target_chunks or 0)):
        fmt, lang = rng.choice(list(formats)), rng.choice(list(languages))
        rel, data, chars, expected = make_document(rng, index, fmt, lang, pools[lang])
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        manifest.formats[fmt] = manifest.formats.get(fmt, 0) + 1
        manifest.languages[lang] = manifest.languages.get(lang, 0) + 1
        manifest.chars += chars
        manifest.bytes += len(data)
        manifest.expected_chunks += expected
        if progress is not None:
            progress(1)
        index += 1
    manifest.docs = index
    (out / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True))
    return manifest


def read_manifest(out: Path) -> dict | None:
    """The manifest a previous `generate` left in `out`, if any."""
    path = out / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="folder to write the documents into (created)")
    p.add_argument("--docs", type=int, required=True, help="how many documents")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same bytes")
    p.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated, among {','.join(FORMATS)}")
    p.add_argument("--languages", default=",".join(LANGUAGES), help=f"comma-separated, among {','.join(LANGUAGES)}")


def run(args, settings=None) -> dict:
    """The `corpus` subcommand: generate, print the counts, return the manifest as the report."""
    from tqdm import tqdm

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    languages = tuple(lang.strip() for lang in args.languages.split(",") if lang.strip())
    with tqdm(total=args.docs, unit="doc", desc=f"writing {args.out}", disable=not sys.stderr.isatty()) as bar:
        manifest = generate(args.out, args.docs, args.seed, formats, languages, progress=bar.update)
    pools = text_pools()
    print(
        f"{manifest.docs} documents in {args.out} ({manifest.bytes / 1048576:.1f} MB): formats {manifest.formats}, "
        f"languages {manifest.languages}; ~{manifest.expected_chunks} chunks expected at CHUNK_TOKENS=200 "
        f"(text pools: {', '.join(f'{k} {len(v)} paragraphs' for k, v in pools.items())})"
    )
    return {"benchmark": "corpus", "out": str(args.out), **manifest.to_dict()}
