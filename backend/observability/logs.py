"""Server logging: one JSON object per line (or plain text), every line of a request carrying its id.

What is logged is chosen so that logs can be shipped anywhere: methods, route templates, statuses,
durations, error types and counts. Never document text, questions, query strings or keys: the access line
names the route template (`/documents/{doc_id}`), not the URL. Every line passes the redaction filter,
third-party ones too: a URL setting with credentials in it (VLLM_BASE_URL=http://user:token@...) reaches
log lines through HTTP clients' retries and exceptions, and leaves them with its credentials masked.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

from backend.redaction import RedactingFilter

# The id of the request being served in this task (set by the request-context middleware).
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
JSON_FIELDS = ["asctime", "levelname", "name", "message", "request_id"]


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (None outside a request: start-up, background threads)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


def configure_logging(level: str, fmt: str, stream=None) -> None:
    """Route every logger (uvicorn's included) to one handler on `stream` (stderr) in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(
            JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        ))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's loggers propagate to this handler (uvicorn is started with log_config=None); its access log is
    # replaced by ours, which has the request id, the route template and the duration.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The HTTP clients log every request to the engine at INFO: per /ask several lines of no use to an
    # operator, formatted on the event loop under load. Their warnings and errors still come through.
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
