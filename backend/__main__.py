"""`python -m backend`: serve the API on $HOST:$PORT (default 127.0.0.1:8000)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from backend.app import create_app
from backend.errors import AppError
from backend.settings import load_settings


def main() -> int:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower())
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
