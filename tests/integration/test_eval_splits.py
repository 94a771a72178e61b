"""`cli.eval` keeps a golden set's held-out split apart, and its +cross / -cross modes reach the retriever."""

from __future__ import annotations

import json

import pytest

from cli import eval as eval_cli


pytestmark = pytest.mark.usefixtures("minilm_cli_env")


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "en").mkdir(parents=True)
    (root / "pl").mkdir()
    (root / "en" / "backup.md").write_text("# Backups\n\nFull database backups run every night at 01:30 UTC.\n")
    (root / "pl" / "urlop.md").write_text("# Urlop\n\nWniosek urlopowy składa się najpóźniej 10 dni przed urlopem.\n")
    rows = [
        {"id": "t1", "question": "When do database backups run?", "lang": "en", "doc_lang": "en", "tags": ["same-lang"],
         "answers": [{"path": "en/backup.md"}]},
        {"id": "h1", "question": "Kiedy wykonywane są kopie zapasowe bazy danych?", "lang": "pl", "doc_lang": "en",
         "tags": ["cross-lang"], "split": "test", "answers": [{"path": "en/backup.md"}]},
    ]
    golden = tmp_path / "golden.jsonl"
    golden.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return root, golden


def test_splits_are_reported_apart_and_can_be_run_alone(corpus, tmp_path, capsys):
    root, golden = corpus
    out = tmp_path / "report.json"
    assert eval_cli.main(["--golden", str(golden), "--dir", str(root), "--fresh", "--out", str(out),
                          "--modes", "dense-cross", "dense+cross", "hybrid+cross:0.5:0.1"]) == 0
    report = json.loads(out.read_text())
    for mode in ("dense-cross", "dense+cross", "hybrid+cross:0.5:0.1"):
        by_split = report["modes"][mode]["by_split"]
        assert by_split["tune"]["overall"]["questions"] == 1 and by_split["test"]["overall"]["questions"] == 1
        assert set(by_split["test"]["by_language_pair"]) == {"en→en", "pl→en"}
    assert [q["split"] for q in report["modes"]["dense+cross"]["questions"]] == ["tune", "test"]
    printed = capsys.readouterr().out
    assert "## split: tune (1 questions)" in printed and "## split: test (1 questions)" in printed
    assert report["settings"]["cross_language_model"] == "universal-sentence-encoder-multilingual"

    assert eval_cli.main(["--golden", str(golden), "--dir", str(root), "--fresh", "--out", str(out),
                          "--modes", "dense", "--split", "test"]) == 0
    report = json.loads(out.read_text())
    assert report["split"] == "test" and [q["id"] for q in report["modes"]["dense"]["questions"]] == ["h1"]
    assert eval_cli.main(["--golden", str(golden), "--dir", str(root), "--fresh", "--split", "nope"]) == 2
    assert eval_cli.main(["--golden", str(golden), "--dir", str(root), "--fresh", "--modes", "dense+cross:x:y"]) == 2
