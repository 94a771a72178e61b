"""`python -m backend [--env-file FILE]`: serve the API on $HOST:$PORT (default 127.0.0.1:8000).

The env file is the same one the compose stacks use (`.env.vllm`, `.env.ollama`); `ENV_FILE=...` works too.
Outside Docker the in-network addresses that compose adds (qdrant, vllm, ollama hosts) are absent, so the
backend falls back to the embedded store and to engines on localhost.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from backend.app import create_app
from backend.errors import EXIT_USAGE, AppError, exit_code_for
from backend.observability.logs import configure_logging
from backend.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend", description="Serve the RAG appliance's HTTP API.")
    parser.add_argument("--env-file", default=None, help="env file to read (default: $ENV_FILE, else .env)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.env_file)
    except ValueError as exc:  # a missing env file or a bad setting (pydantic's ValidationError is a ValueError)
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)
    try:
        # On SIGTERM uvicorn stops accepting connections, lets in-flight requests (answer streams too) finish for
        # up to SHUTDOWN_TIMEOUT_S, then runs the lifespan's shutdown (store closed cleanly).
        uvicorn.run(
            create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
            # uvicorn annotates this int, but hands it to asyncio.wait_for, which takes any seconds (0.5 too).
            timeout_graceful_shutdown=settings.shutdown_timeout_s,  # type: ignore[arg-type]
            # Logging is configured above (JSON lines with request ids); the access line is our middleware's.
            log_config=None, access_log=False,
        )
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exit_code_for(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
