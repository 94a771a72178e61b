"""`python -m cli.prepare_models`: build what the embedder needs before the first request.

For a sentence-transformers model with EMBED_BACKEND=onnx this is the one-time ONNX export into
MODEL_CACHE_DIR (tens of seconds); the Docker image runs it at build time so a container starts ready and
never writes the export at run time. Models with their own engine (the default multilingual-e5-small)
are only loaded and checked. Idempotent: an existing export is reused.
"""

from __future__ import annotations

import argparse
import sys
import time

from backend.errors import EXIT_USAGE, AppError, exit_code_for
from backend.retrieval.embedders.registry import create_embedder
from backend.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.prepare_models", description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", default=None)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.env_file)
    except ValueError as exc:
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return EXIT_USAGE
    started = time.perf_counter()
    try:
        embedder = create_embedder(settings)
        dims = len(embedder.embed_query("warm-up"))
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exit_code_for(exc)
    print(f"{settings.embed_model} ({embedder.backend}, {dims} dims) ready after {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
