"""Start `python -m backend` as a child process on a free port and wait until it serves (demo, bench, tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BackendStartError(RuntimeError):
    """The backend exited or did not answer /health in time; carries its output."""


def start_backend(
    env: dict[str, str] | None = None, timeout_s: float = START_TIMEOUT_S, args: list[str] | None = None
) -> tuple[subprocess.Popen, str]:
    """Start the backend (`python -m backend *args`) with `env` on top of this process's environment; returns
    (process, base URL) once GET /health answers (any status: a degraded LLM is the caller's business)."""
    port = free_port()
    child_env = {**os.environ, **(env or {}), "PORT": str(port), "HOST": "127.0.0.1"}
    # Output goes to a file, not a pipe: a pipe nobody reads fills up and blocks a chatty server.
    log = tempfile.NamedTemporaryFile("w+", prefix="backend-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "backend", *(args or [])], cwd=ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log.name  # type: ignore[attr-defined]
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise BackendStartError(f"the backend exited during start-up:\n{Path(log.name).read_text()[-3000:]}")
        try:
            httpx.get(f"{url}/health", timeout=5)
            return proc, url
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                stop_backend(proc)
                raise BackendStartError(f"the backend did not answer /health within {timeout_s:.0f} s") from None
            time.sleep(0.3)


def stop_backend(proc: subprocess.Popen, timeout_s: float = 60) -> None:
    """SIGTERM (graceful shutdown: the store is flushed and unlocked), SIGKILL if it hangs."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log_path = getattr(proc, "log_path", None)
    if log_path:
        Path(log_path).unlink(missing_ok=True)
