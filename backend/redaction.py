"""Secrets out of everything the appliance shows: URLs with credentials, bearer tokens, key-like parameters.

Settings such as `VLLM_BASE_URL=https://user:token@llm.internal/v1` carry credentials inside a URL. Wherever
such a URL could be shown — `/health`, error messages, log lines, exceptions re-raised by HTTP clients — it
goes through `redact_url` / `redact_text` first. Internal URLs are shown only to operators (logs, '*'-key
diagnostics); tenants' error messages name the component ("the LLM engine"), not where it runs.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters whose value is a secret (matched case-insensitively, also as a suffix: x_api_key).
_SECRET_PARAMS = re.compile(r"(key|token|secret|password|passwd|pwd|signature|sig|auth|credential)s?$", re.I)
# A URL with a scheme, up to whitespace or a quote/bracket that usually ends it in prose and reprs.
_URL = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>()\[\]{}]+""")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")
_KEY_ASSIGNMENT = re.compile(r"""(?i)\b(api[_-]?key|x-api-key|authorization|password|token)(["']?\s*[:=]\s*["']?)[^\s"',;&]+""")


def redact_url(url: str) -> str:
    """The URL without user/password and without the values of secret-looking query parameters."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SECRET_PARAMS.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL in `text` redacted, bearer/basic credentials and `api_key=...` style assignments masked."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _KEY_ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


class RedactingFilter(logging.Filter):
    """A log filter that redacts the formatted message (and exception text) of every record it passes.

    Installed on the one handler of `configure_logging`, so third-party loggers (the openai SDK's "Retrying
    request to <url>", httpx's request lines) are covered as well as ours.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True
