"""cli.index_cli: direct into the embedded store, and through a running backend that holds it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cli.local_backend import start_backend, stop_backend
from tests.support.docs_factory import make_pdf

ROOT = Path(__file__).resolve().parents[2]


def make_folder(root: Path) -> Path:
    docs = root / "docs"
    (docs / "guides").mkdir(parents=True)
    (docs / "guides" / "backup.md").write_text("# Backups\n\nBackups run nightly at 02:00 to the NAS.\n")
    (docs / "policy.pdf").write_bytes(make_pdf(["Security policy.", "Rotate API keys every 90 days."]))
    (docs / "notes.txt").write_text("The GPU server has one RTX 6000 card with 96 GB.")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.5\n garbage \x00\x00")
    (docs / "diagram.png").write_bytes(b"\x89PNG\r\n")
    (docs / ".hidden.txt").write_text("never indexed")
    return docs


@pytest.fixture(autouse=True)
def _model_cache(model_cache, monkeypatch):
    monkeypatch.setenv("MODEL_CACHE_DIR", str(model_cache))  # reuse the session's ONNX export


def env_for(data_dir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "BACKEND_", "DATA_DIR", "PORT"))}
    return {**env, "DATA_DIR": str(data_dir), "QDRANT_URL": "", "BACKEND_URL": "", "HF_HUB_OFFLINE": "1", **extra}


def run_cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.index_cli", *args, "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_index_cli_direct_reports_failures_and_is_idempotent(tmp_path):
    docs = make_folder(tmp_path)
    env = env_for(tmp_path / "data")
    first = run_cli(["--dir", str(docs), "--space", "kb"], env)
    assert first.returncode == 1, first.stderr  # broken.pdf failed
    assert "5 files (direct): 3 added, 0 replaced, 0 unchanged, 1 skipped, 1 failed" in first.stdout
    assert "broken.pdf" in first.stderr and "diagram.png" in first.stderr

    (docs / "broken.pdf").unlink()
    (docs / "notes.txt").write_text("The GPU server now has two H200 cards.")
    second = run_cli(["--dir", str(docs), "--space", "kb"], env)
    assert second.returncode == 0, second.stderr
    assert "1 replaced, 2 unchanged, 1 skipped, 0 failed" in second.stdout

    (docs / "guides" / "backup.md").unlink()
    pruned = run_cli(["--dir", str(docs), "--space", "kb", "--prune"], env)
    assert pruned.returncode == 0 and "1 pruned" in pruned.stdout


def test_index_cli_usage_errors(tmp_path):
    env = env_for(tmp_path / "data")
    assert run_cli(["--dir", str(tmp_path / "missing"), "--space", "kb"], env).returncode == 2
    bad_space = run_cli(["--dir", str(tmp_path), "--space", "bad space"], env)
    assert bad_space.returncode == 2 and "invalid space_id" in bad_space.stderr


@pytest.fixture
def running_backend(tmp_path):
    env = env_for(tmp_path / "data")
    proc, url = start_backend(env)
    yield url, env
    stop_backend(proc)
    assert not (tmp_path / "data" / "backend.json").exists(), "the backend must remove its registration on shutdown"


def test_index_cli_sends_files_to_the_backend_holding_the_store(tmp_path, running_backend):
    url, env = running_backend
    docs = make_folder(tmp_path)
    result = run_cli(["--dir", str(docs), "--space", "kb"], env)
    assert "via the running backend" in result.stdout, result.stderr
    assert "3 added, 0 replaced, 0 unchanged, 1 skipped, 1 failed" in result.stdout
    assert result.returncode == 1
    hits = httpx.get(f"{url}/search", params={"q": "how often rotate API keys", "space_id": "kb"}).json()["results"]
    assert hits[0]["path"] == "policy.pdf" and hits[0]["page"] == 2
    again = run_cli(["--dir", str(docs), "--space", "kb"], env)
    assert "0 added, 0 replaced, 3 unchanged" in again.stdout


def test_the_cli_sends_its_key_to_a_backend_that_requires_one(tmp_path):
    key = "cli-key-0123456789abcdef"
    env = {**env_for(tmp_path / "data"), "API_KEYS": f"{key}=kb"}
    proc, url = start_backend(env)
    try:
        docs = make_folder(tmp_path)
        (docs / "broken.pdf").unlink()
        refused = run_cli(["--dir", str(docs), "--space", "kb"], env)
        assert refused.returncode == 2 and "missing API key" in refused.stderr and "BACKEND_API_KEY" in refused.stderr
        wrong_space = run_cli(["--dir", str(docs), "--space", "other"], {**env, "BACKEND_API_KEY": key})
        assert wrong_space.returncode == 2 and "does not cover space 'other'" in wrong_space.stderr
        accepted = run_cli(["--dir", str(docs), "--space", "kb"], {**env, "BACKEND_API_KEY": key})
        assert accepted.returncode == 0 and "3 added" in accepted.stdout, accepted.stdout + accepted.stderr
        assert key not in accepted.stdout + accepted.stderr + refused.stdout + refused.stderr
    finally:
        stop_backend(proc)


def test_index_cli_wait_follows_the_jobs_with_a_progress_bar(tmp_path, running_backend):
    url, env = running_backend
    docs = make_folder(tmp_path)
    args = [sys.executable, "-m", "cli.index_cli", "--dir", str(docs), "--space", "kb", "--api", url, "--wait"]
    waited = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert waited.returncode == 1, waited.stdout + waited.stderr  # broken.pdf failed
    assert f"5 files (via {url}): 3 added, 0 replaced, 0 unchanged, 1 skipped, 1 failed" in waited.stdout
    bar = waited.stderr.replace("\r", "\n")
    assert "100%" in bar and "5/5" in bar, waited.stderr  # the bar, fed by the job's events, reached the end
    assert "failed: broken.pdf:" in waited.stderr and "skipped: diagram.png" in waited.stderr
    hits = httpx.get(f"{url}/search", params={"q": "how often rotate API keys", "space_id": "kb"}).json()["results"]
    assert hits[0]["path"] == "policy.pdf"
    assert httpx.get(f"{url}/jobs", params={"space_id": "kb"}).json()["jobs"][0]["counts"]["failed"] == 1

    # --no-wait: the jobs are queued, their ids printed, and the CLI does not wait for them.
    (docs / "broken.pdf").unlink()
    (docs / "notes.txt").write_text("The GPU server now has two H200 cards.")
    queued = run_cli(["--dir", str(docs), "--space", "kb", "--api", url, "--no-wait"], env)
    assert queued.returncode == 0, queued.stdout + queued.stderr
    job_lines = [line for line in queued.stdout.splitlines() if line.startswith("queued job ")]
    assert len(job_lines) == 1 and "4 queued in 1 jobs" in queued.stdout
    job_url = job_lines[0].split(": ", 1)[1]
    for _ in range(600):
        job = httpx.get(job_url).json()
        if job["status"] == "done":
            break
        time.sleep(0.1)
    assert job["counts"] == {"added": 0, "replaced": 1, "unchanged": 2, "failed": 0, "skipped": 1}


def test_the_folder_is_sent_in_batches_bounded_by_count_and_bytes(tmp_path):
    from cli.index_cli import BATCH_FILES, make_batches

    items = [(f"f{n}.txt", tmp_path / f"f{n}.txt", 100) for n in range(BATCH_FILES + 10)]
    assert [len(b) for b in make_batches(items, 10**9)] == [BATCH_FILES, 10]
    assert [len(b) for b in make_batches(items[:10], 350)] == [3, 3, 3, 1]  # 3 x 100 bytes fit in 350
    big = [("a.txt", tmp_path / "a.txt", 50), ("huge.pdf", tmp_path / "huge.pdf", 10_000), ("b.txt", tmp_path / "b.txt", 50)]
    assert [[rel for rel, _, _ in b] for b in make_batches(big, 1000)] == [["a.txt"], ["huge.pdf"], ["b.txt"]]
