"""A real `python -m cli.index_cli` killed with SIGKILL at ~60 %, then run again: nothing lost, nothing doubled,
and the rerun embeds only the documents the first run had not committed.

Small chunks (CHUNK_TOKENS=32) give every file many chunks, so the pipeline commits a few files per embedding
group and the kill lands between groups, with later files parsed or embedded but not committed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.domain import STAGING_PREFIX
from backend.retrieval.stores.base import Filter
from backend.retrieval.stores.edge import EdgeStore
from cli.corpus_gen import generate
from tests.support.components import MINILM

ROOT = Path(__file__).resolve().parents[2]
DOCS = 16
PROGRESS = re.compile(r"(\d+)/(\d+) files")
SUMMARY = re.compile(r"(\d+) added, (\d+) replaced, (\d+) unchanged, (\d+) skipped, (\d+) failed; (\d+) chunks written")

pytestmark = pytest.mark.integration


def _env(data_dir: Path, model_cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "BACKEND_", "DATA_DIR", "PORT", "CHUNK_"))}
    return {
        **env, "DATA_DIR": str(data_dir), "QDRANT_URL": "", "BACKEND_URL": "", "HF_HUB_OFFLINE": "1",
        "EMBED_MODEL": MINILM, "MODEL_CACHE_DIR": str(model_cache), "CHUNK_TOKENS": "32", "CHUNK_OVERLAP": "0",
    }


def _cli(docs: Path, env: dict, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cli.index_cli", "--dir", str(docs), "--space", "kb", *extra]


def _run(docs: Path, env: dict) -> tuple[int, int, int]:
    """A full run: (added, unchanged, chunks written)."""
    done = subprocess.run(_cli(docs, env, "--quiet"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    match = SUMMARY.search(done.stdout)
    assert match, done.stdout
    added, replaced, unchanged, skipped, failed, chunks = map(int, match.groups())
    assert (replaced, skipped, failed) == (0, 0, 0), done.stdout
    return added, unchanged, chunks


def _stored(data_dir: Path) -> list[tuple]:
    """Every point of the store (live and staged), as (space, path, version, chunk_index, text), sorted."""
    store = EdgeStore(data_dir / "qdrant-edge", 384)
    try:
        fields = ["space_id", "path", "version", "chunk_index", "text"]
        return sorted(tuple(p[f] for f in fields) for p in store.scroll(Filter(), fields))
    finally:
        store.close()


def test_kill_at_60_percent_then_rerun_gives_one_clean_run(tmp_path, model_cache):
    docs = tmp_path / "docs"
    generate(docs, DOCS, seed=11)
    (docs / "manifest.json").unlink()

    clean_dir = tmp_path / "clean"
    added, _, clean_chunks = _run(docs, _env(clean_dir, model_cache))
    assert added == DOCS
    clean = _stored(clean_dir)
    assert len(clean) == clean_chunks

    data_dir = tmp_path / "data"
    env = _env(data_dir, model_cache)
    proc = subprocess.Popen(
        _cli(docs, env, "--progress-interval", "0"), cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    committed = 0
    deadline = time.monotonic() + 240
    assert proc.stderr is not None
    try:
        for line in proc.stderr:  # one plain progress line per file done: that file is committed
            match = PROGRESS.search(line)
            if match:
                committed = int(match.group(1))
                if committed >= 0.6 * DOCS:
                    proc.send_signal(signal.SIGKILL)
                    break
            assert time.monotonic() < deadline, "the first run never reached 60 %"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert 0.6 * DOCS <= committed < DOCS

    added, unchanged, chunks = _run(docs, env)
    # The rerun embedded only what the killed run had not committed (a file or two may have been committed
    # between its last line and the kill), and something was left for it to do.
    assert unchanged >= committed and added >= 1 and added + unchanged == DOCS
    assert 0 < chunks < clean_chunks
    stored = _stored(data_dir)
    assert not [p for p in stored if p[0].startswith(STAGING_PREFIX)], "staged leftovers of the killed commit"
    assert stored == clean  # same documents, versions, chunk indexes and texts: the ids of one clean run
