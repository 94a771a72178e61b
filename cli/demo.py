"""`make demo`: index docs/, start the backend against the running CPU vLLM, ask questions about the
appliance and print the answers with their sources; then stop the backend (make stops vLLM unless
KEEP_VLLM=1).

The model is the Makefile's DEMO_MODEL, served by scripts/vllm_cpu/ (VLLM_CPU_MODEL): Qwen2.5-Coder-1.5B-Instruct,
picked by measuring the three CPU models on these questions and the answer golden sets (docs/answering.md, "Answer
quality"). `make demo DEMO_MODEL=qwen-0.5b` (faster, less often right) or `smollm2` runs it with another one.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx

from backend.settings import load_settings
from cli import ask as ask_cli
from cli import index_cli
from cli.client import auth_headers
from cli.local_backend import BackendStartError, start_backend, stop_backend

ROOT = Path(__file__).resolve().parents[1]
# The demo's own store (`make demo`); only this one is rebuilt when an older version made it unusable.
DEMO_DATA_DIR = ROOT / "data" / "demo"
SPACE = "demo"
QUESTIONS = [
    "How do I index a folder of documents?",
    "Which vector store is used when QDRANT_URL is empty?",
]


def main() -> int:
    settings = load_settings()
    print(f"== indexing {ROOT / 'docs'} into space {SPACE!r} (DATA_DIR={settings.data_dir})")
    code = index_cli.main(["--dir", str(ROOT / "docs"), "--space", SPACE, "--quiet"])
    if code == 3 and settings.data_dir.resolve() == DEMO_DATA_DIR and settings.embedded_store_dir.exists():
        # A store written by an older version or another EMBED_MODEL: the demo's own, so rebuild it.
        print(f"== rebuilding the demo store {settings.embedded_store_dir} (made by another version or model)")
        shutil.rmtree(settings.embedded_store_dir)
        code = index_cli.main(["--dir", str(ROOT / "docs"), "--space", SPACE, "--quiet"])
    if code not in (0, 1):
        return code

    print(f"== starting the backend (LLM_BACKEND={settings.llm_backend}, {settings.vllm_base_url})")
    try:
        backend, url = start_backend({"LOG_LEVEL": "warning"})
    except BackendStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    try:
        llm = httpx.get(f"{url}/health", timeout=30).json()["components"]["llm"]
        if llm["status"] != "ok":
            print(f"error: the LLM is not ready: {llm.get('error')} (`make demo` starts it; by hand: "
                  "`make vllm-cpu VLLM_CPU_MODEL=...` and VLLM_MODEL set to its served name)", file=sys.stderr)
            return 6
        print(f"   engine {llm['engine']}, model {llm['model']}, context {llm['context_length']} tokens")
        for question in QUESTIONS:
            print(f"\n== Q: {question}\nA: ", end="")
            code = ask_cli.ask(url, question, SPACE, top_k=4, max_tokens=240, headers=auth_headers(settings))
            if code:
                return code
    finally:
        stop_backend(backend)
    print(f"\nThe index stays in {settings.data_dir}. Serve it: `make serve`; ask: `python -m cli.ask '...' --space {SPACE}`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
