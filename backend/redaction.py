"""Secrets out of everything the appliance shows: URLs with credentials, bearer tokens, key-like parameters.

Settings such as `VLLM_BASE_URL=https://user:token@llm.internal/v1` carry credentials inside a URL. Wherever
such a URL could be shown — `/health`, error messages, log lines, exceptions re-raised by HTTP clients — it
goes through `redact_url` / `redact_text` first. Internal URLs are shown only to operators (logs, '*'-key
diagnostics); tenants' error messages name the component ("the LLM engine"), not where it runs
(`hide_addresses`).
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# What a tenant sees instead of an internal URL or host:port.
HIDDEN_ADDRESS = "<internal address>"
# Query parameters whose value is a secret (matched case-insensitively, also as a suffix: x_api_key).
_SECRET_PARAMS = re.compile(r"(key|token|secret|password|passwd|pwd|signature|sig|auth|credential)s?$", re.I)
# A URL with a scheme, up to whitespace or a quote/bracket that usually ends it in prose and reprs.
_URL = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://(?:[^\s'"<>()\[\]{}@]*@)?(?:\[[0-9A-Fa-f:.]+\])?[^\s'"<>()\[\]{}]+""")
# `user:password@host` without a scheme (some clients print their origin so); `://` URLs are handled above.
_BARE_USERINFO = re.compile(r"""(?<![\w/.:@-])[\w.~%+-]+:[^\s@/'"<>]+@(?=[\w\[])""")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")
_KEY_ASSIGNMENT = re.compile(r"""(?i)\b(api[_-]?key|x-api-key|authorization|password|token)(["']?\s*[:=]\s*["']?)(?!(?:bearer|basic)\b)[^\s"',;&]+""")
# Addresses in prose and exception text: an IPv4 address (with its port), [IPv6]:port, host:port (a name
# with a letter in it, so "02:00" stays), ('127.0.0.1', 8001) as socket errors print them.
_ADDRESSES = re.compile(
    r"""\(\s*'[^']*'\s*,\s*\d{1,5}\s*\)"""
    r"""|\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\](?::\d{1,5})?"""
    r"""|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"""
    r"""|\b[A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*:\d{2,5}\b"""
)


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
    text = _BARE_USERINFO.sub(f"{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _KEY_ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def hide_addresses(text: str) -> str:
    """`text` redacted, and every URL and host:port in it replaced by HIDDEN_ADDRESS (for tenants' eyes)."""
    text = _URL.sub(HIDDEN_ADDRESS, redact_text(text))
    return _ADDRESSES.sub(HIDDEN_ADDRESS, text)


def redact_value(value: Any, scrub=redact_text) -> Any:
    """A JSON-like value with `scrub` applied to every string in it (keys kept)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: redact_value(v, scrub) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v, scrub) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A log filter that redacts the formatted message (and exception text) of every record it passes.

    Installed on the one handler of `configure_logging`, so third-party loggers (the openai SDK's "Retrying
    request to <url>", httpx's request lines, uvicorn's tracebacks) are covered as well as ours.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it itself when the record is formatted
            return True
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # The exception's text is rendered here, redacted, and exc_info dropped: formatters (the JSON one
            # included) would otherwise render the traceback again from exc_info, secrets and all.
            record.exc_text = redact_text(record.exc_text or logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True
