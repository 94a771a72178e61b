"""`python -m cli.prepare_models`: build what the embedder needs before the first request.

For EMBED_BACKEND=onnx this is the one-time ONNX export of EMBED_MODEL into MODEL_CACHE_DIR (tens of
seconds); the Docker image runs it at build time so a container starts ready and never writes the export
at run time. Idempotent: an existing export is reused.
"""

from __future__ import annotations

import argparse
import sys
import time

from backend.errors import EXIT_USAGE, AppError, exit_code_for
from backend.retrieval.embedder import create_embedder
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
    print(
        f"{settings.embed_model} ({settings.embed_backend}, {dims} dims) ready in "
        f"{settings.model_cache_dir} after {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
