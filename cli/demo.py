"""`make demo`: index docs/ into the space "demo" and run a few searches, printing results with sources."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from backend.errors import AppError, StoreLocked
from backend.settings import load_settings
from cli import index_cli

ROOT = Path(__file__).resolve().parents[1]
SPACE = "demo"
QUESTIONS = [
    "How do I index a folder of documents?",
    "Which vector store is used when QDRANT_URL is empty?",
    "What happens to a file that cannot be parsed?",
    "How does the CLI work while the backend is running?",
]


def main() -> int:
    print(f"== indexing {ROOT / 'docs'} into space {SPACE!r}")
    code = index_cli.main(["--dir", str(ROOT / "docs"), "--space", SPACE])
    if code not in (0, 1):
        return code
    settings = load_settings()
    from backend.services import build_services

    try:
        services = build_services(settings)
    except StoreLocked as exc:
        print(f"error: {exc.message}\nstop the backend using {settings.data_dir} or set DATA_DIR", file=sys.stderr)
        return 3
    try:
        for question in QUESTIONS:
            retrieved = services.retriever.search(question, SPACE, top_k=3)
            print(f"\n== {question}   (embed {retrieved.timings['embed_ms']:.1f} ms, search {retrieved.timings['search_ms']:.1f} ms)")
            for rank, hit in enumerate(retrieved.results, start=1):
                where = hit["path"] + (f" p.{hit['page']}" if hit.get("page") else "")
                where += f" § {hit['heading']}" if hit.get("heading") else ""
                snippet = textwrap.shorten(hit["text"], width=220, placeholder=" …")
                print(f"  [{rank}] {hit['score']:.3f}  {where}\n      {snippet}")
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        services.close()
    print("\nNext: `make serve` and try the API at http://127.0.0.1:8000/docs (see README).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
