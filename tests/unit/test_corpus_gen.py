"""cli.corpus_gen: deterministic, parseable, multilingual documents in four formats."""

from __future__ import annotations

import json

from backend.ingest.parsers import parse_document
from cli import bench
from cli.corpus_gen import FORMATS, LANGUAGES, generate, split_paragraphs, text_pools


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("doc-*"))}


def test_same_seed_same_bytes_other_seed_other_corpus(tmp_path):
    a = generate(tmp_path / "a", 24, seed=7)
    b = generate(tmp_path / "b", 24, seed=7)
    c = generate(tmp_path / "c", 24, seed=8)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert a == b and len(_files(tmp_path / "a")) == 24
    assert _files(tmp_path / "a") != _files(tmp_path / "c") and c.seed == 8


def test_every_file_parses_in_its_language_and_format(tmp_path):
    manifest = generate(tmp_path, 40, seed=1)
    assert set(manifest.formats) == set(FORMATS) and set(manifest.languages) == set(LANGUAGES)
    seen = set()
    for rel, data in _files(tmp_path).items():
        lang, fmt = rel.split("/")[0], rel.rsplit(".", 1)[1]
        sections = parse_document(data, rel)
        text = " ".join(s.text for s in sections)
        assert len(text) > 200, rel
        if lang == "ru":
            assert sum("\u0400" <= ch <= "\u04ff" for ch in text) > len(text) / 3, rel
        elif lang == "pl":
            assert any(ch in text for ch in "ąęłśżźćń"), rel
        else:
            assert text.isascii(), rel
        if fmt == "pdf":
            assert len({s.page for s in sections}) >= 2, f"{rel}: a PDF of one page"
        seen.add((lang, fmt))
    assert len(seen) >= 10  # most of the 12 language x format pairs in 40 documents
    assert json.loads((tmp_path / "manifest.json").read_text())["docs"] == 40


def test_prose_filter_keeps_sentences_and_drops_code():
    text = (
        "Intro\n=====\n\nThe appliance indexes a team's documents and answers questions about them with citations to each source.\n\n"
        "```python\nimport os\nprint(os.environ)\n```\n\n| a | b |\n|---|---|\n\n    indented = code(here, and, here, too)\n\n"
        "# Usage\n\nRun the command once, then point the browser at the backend to ask the first question of the day.\n"
    )
    paragraphs = split_paragraphs(text, "fallback")
    assert [(p.heading, p.text[:12]) for p in paragraphs] == [("Intro", "The applianc"), ("Usage", "Run the comm")]


def test_text_pools_hold_all_three_languages():
    pools = text_pools()
    assert all(len(pools[lang]) >= 30 for lang in LANGUAGES)


def test_bench_corpus_command(tmp_path, capsys):
    out = tmp_path / "corpus"
    assert bench.main(["--json", str(tmp_path / "r.json"), "corpus", "--out", str(out), "--docs", "6", "--formats", "md,pdf", "--languages", "pl"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["docs"] == 6 and set(report["formats"]) <= {"md", "pdf"} and report["languages"] == {"pl": 6}
    assert report["expected_chunks"] >= 6
    assert "chunks expected" in capsys.readouterr().out
