"""cli.progress: the plain progress lines written when stderr is not a terminal, and --quiet."""

from __future__ import annotations

import io
import re

from cli.progress import IngestProgress, format_eta

LINE = re.compile(
    r"^indexing into 'kb': (\d+)/4 files \((\d+)%\), [\d.]+ files/s, [\d.]+ chunks/s, (\d+) chunks, ETA (\S+)$"
)


def test_plain_lines_count_files_chunks_and_end_with_done():
    out = io.StringIO()
    progress = IngestProgress(4, "indexing into 'kb'", stream=out, interval=0)
    progress.update(10, "a.md")
    progress.update(0, "b.md")  # unchanged: a file, no chunks
    progress.note("failed: c.pdf: corrupt")
    progress.update(0, "c.pdf")
    progress.update(5, "d.md")
    progress.stage("building index")
    progress.close()
    lines = out.getvalue().splitlines()
    parsed = [LINE.match(line) for line in lines]
    rows = [(int(m.group(1)), int(m.group(3)), m.group(4)) for m in parsed if m]
    assert [(files, chunks) for files, chunks, _ in rows] == [(1, 10), (2, 10), (3, 10), (4, 15)]
    assert rows[-1][2] == "done" and re.fullmatch(r"\d+m\d\ds", rows[0][2])
    assert "failed: c.pdf: corrupt" in lines and lines[-1] == "indexing into 'kb': building index"
    assert "\r" not in out.getvalue()  # no carriage-return bar in a log


def test_interval_limits_lines_and_close_writes_the_final_state():
    out = io.StringIO()
    progress = IngestProgress(4, "indexing into 'kb'", stream=out, interval=3600)
    for _ in range(4):
        progress.update(2)
    assert out.getvalue() == ""
    progress.close()
    progress.close()  # closing twice (error path, then finally) writes it once
    assert [LINE.match(line).group(1) for line in out.getvalue().splitlines()] == ["4"]  # type: ignore[union-attr]


def test_quiet_writes_only_notes():
    out = io.StringIO()
    progress = IngestProgress(2, "indexing into 'kb'", quiet=True, stream=out, interval=0)
    progress.update(3)
    progress.note("skipped: x.png")
    progress.update(1)
    progress.stage("building index")
    progress.close()
    assert out.getvalue() == "skipped: x.png\n"
    assert progress.files == 2 and progress.chunks == 4


def test_tty_uses_tqdm_bar():
    out = io.StringIO()
    progress = IngestProgress(2, "indexing into 'kb'", stream=out, tty=True)
    progress.update(7, "a.md")
    progress.update(1, "b.md")
    progress.close()
    text = out.getvalue()
    assert "\r" in text and "2/2" in text and "chunks/s" in text


def test_format_eta():
    assert format_eta(65) == "1m05s" and format_eta(3 * 3600 + 120) == "3h02m"
