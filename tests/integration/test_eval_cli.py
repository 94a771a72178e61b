"""`python -m cli.eval` end to end: a throwaway index of a small folder, every mode, a JSON report."""

from __future__ import annotations

import json

import pytest

from cli import eval as eval_cli

CODES = ["E1174", "E2291", "E3408", "E4517"]


pytestmark = pytest.mark.usefixtures("minilm_cli_env")


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "errors").mkdir(parents=True)
    for i, code in enumerate(CODES):
        (root / "errors" / f"{i}.md").write_text(
            f"# Controller fault\n\nThe controller raises {code} when a module stops answering; restart the module.\n"
        )
    (root / "leave.md").write_text("# Leave\n\nVacation requests need the manager's approval two weeks ahead.\n")
    golden = tmp_path / "golden.jsonl"
    rows = [{"id": f"c{i}", "question": f"what is fault {c}?", "tags": ["exact-term"], "answers": [{"path": f"errors/{i}.md", "passage": c}]}
            for i, c in enumerate(CODES)]
    rows.append({"id": "v", "question": "how early must I ask for holidays?", "tags": ["same-lang"], "answers": [{"path": "leave.md"}]})
    golden.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root, golden


def test_eval_reports_every_mode_with_per_tag_tables(corpus, tmp_path, capsys):
    root, golden = corpus
    out = tmp_path / "report.json"
    assert eval_cli.main(["--golden", str(golden), "--dir", str(root), "--fresh", "--out", str(out),
                          "--modes", "dense", "sparse", "hybrid", "hybrid:rrf:60:1:1", "--k", "1", "3"]) == 0
    report = json.loads(out.read_text())
    assert report["indexed"] == {"added": 5}
    modes = report["modes"]
    assert set(modes) == {"dense", "sparse", "hybrid", "hybrid:rrf:60:1:1"}
    for mode in modes.values():
        assert mode["overall"]["questions"] == 5 and len(mode["questions"]) == 5
        assert all(0 <= mode["overall"][k] <= 1 for k in ("hit@1", "hit@3", "mrr", "ndcg@3"))
    # Four near-identical fault notes told apart only by their code; the leave question has no shared term.
    assert modes["sparse"]["by_tag"]["exact-term"]["hit@1"] == 1.0
    assert modes["hybrid"]["by_tag"]["exact-term"]["hit@1"] == 1.0
    assert modes["dense"]["by_tag"]["same-lang"]["hit@1"] == modes["hybrid"]["by_tag"]["same-lang"]["hit@1"] == 1.0
    printed = capsys.readouterr().out
    assert "| mode | hit@1 | hit@3 | mrr | ndcg@3 |" in printed and "### tag: exact-term" in printed


def test_usage_errors_exit_2(corpus, tmp_path, capsys):
    root, golden = corpus
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    assert eval_cli.main(["--golden", str(bad), "--dir", str(root), "--fresh"]) == 2
    assert "not a golden-set line" in capsys.readouterr().err
    assert eval_cli.main(["--golden", str(golden), "--dir", str(root), "--fresh", "--modes", "fuzzy"]) == 2
    assert eval_cli.main(["--golden", str(golden), "--dir", str(root), "--fresh", "--modes", "hybrid:rrf:x"]) == 2
    with pytest.raises(SystemExit):
        eval_cli.main(["--golden", str(golden), "--fresh"])  # --fresh needs --dir


def test_an_unindexed_space_is_a_not_found_error(corpus, capsys):
    _, golden = corpus
    assert eval_cli.main(["--golden", str(golden), "--space", "nothing-here", "--modes", "dense"]) == 2
    assert "has no documents" in capsys.readouterr().err
