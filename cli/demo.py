"""`make demo`: index docs/, start the backend against the running CPU vLLM, ask questions about the
appliance and print the answers with their sources; then stop the backend (make stops vLLM unless
KEEP_VLLM=1).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from backend.settings import load_settings
from cli import ask as ask_cli
from cli import index_cli

ROOT = Path(__file__).resolve().parents[1]
SPACE = "demo"
QUESTIONS = [
    "How do I index a folder of documents?",
    "Which vector store is used when QDRANT_URL is empty?",
]
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    settings = load_settings()
    print(f"== indexing {ROOT / 'docs'} into space {SPACE!r} (DATA_DIR={settings.data_dir})")
    code = index_cli.main(["--dir", str(ROOT / "docs"), "--space", SPACE, "--quiet"])
    if code not in (0, 1):
        return code

    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "LOG_LEVEL": "warning"}
    print(f"== starting the backend on :{port} (LLM_BACKEND={settings.llm_backend}, {settings.vllm_base_url})")
    backend = subprocess.Popen([sys.executable, "-m", "backend"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if backend.poll() is not None:
                print("error: the backend exited during start-up", file=sys.stderr)
                return 3
            try:
                health = httpx.get(f"{url}/health", timeout=5).json()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    print("error: the backend did not start", file=sys.stderr)
                    return 3
                time.sleep(0.5)
        llm = health["components"]["llm"]
        if llm["status"] != "ok":
            print(f"error: the LLM is not ready: {llm.get('error')} (start it with `make vllm-cpu`)", file=sys.stderr)
            return 6
        print(f"   engine {llm['engine']}, model {llm['model']}, context {llm['context_length']} tokens")
        for question in QUESTIONS:
            print(f"\n== Q: {question}\nA: ", end="")
            code = ask_cli.ask(url, question, SPACE, top_k=4, max_tokens=160)
            if code:
                return code
    finally:
        backend.terminate()
        backend.wait(timeout=60)
    print(f"\nThe index stays in {settings.data_dir}. Serve it: `make serve`; ask: `python -m cli.ask '...' --space {SPACE}`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
