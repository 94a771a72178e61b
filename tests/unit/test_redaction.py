"""Redaction of credentials and internal addresses (backend.redaction), and the log filter on the one handler."""

from __future__ import annotations

import io
import json
import logging

import pytest

from backend.observability.logs import configure_logging
from backend.redaction import HIDDEN_ADDRESS, hide_addresses, redact_text, redact_url

URL = "http://user:s3cret@vllm.internal:8001/v1"


@pytest.mark.parametrize("text, expected", [
    (f"vLLM at {URL} refused", "vLLM at http://***@vllm.internal:8001/v1 refused"),
    ("GET https://q.example/x?api_key=abc&page=2", "GET https://q.example/x?api_key=***&page=2"),
    ("origin user:s3cret@10.0.0.5:6333 down", "origin ***@10.0.0.5:6333 down"),
    ("Authorization: Bearer abcdef123456", "Authorization: Bearer ***"),
    ("send 'Authorization: Bearer <key>'", "send 'Authorization: Bearer <key>'"),  # the 401's hint stays readable
    ("backups at 02:00, 3 files", "backups at 02:00, 3 files"),
])
def test_redact_text(text, expected):
    assert redact_text(text) == expected


def test_redact_url_keeps_what_an_operator_needs():
    assert redact_url(URL) == "http://***@vllm.internal:8001/v1"
    assert redact_url("http://[::1]:8001/v1") == "http://[::1]:8001/v1"


@pytest.mark.parametrize("text", [
    f"vLLM at {URL}: connection refused", "Connect call failed ('127.0.0.1', 8001)", "qdrant:6333 did not answer",
    "http://[::1]:8001/v1 refused", "from 10.1.2.3",
])
def test_hide_addresses_leaves_no_address(text):
    hidden = hide_addresses(text)
    assert HIDDEN_ADDRESS in hidden
    for part in ("s3cret", "8001", "6333", "127.0.0.1", "10.1.2.3", "::1", "vllm.internal"):
        assert part not in hidden
    assert hide_addresses("the answer took 02:00 minutes") == "the answer took 02:00 minutes"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_the_log_handler_redacts_messages_and_tracebacks(fmt):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    configure_logging("info", fmt, stream=buffer)
    try:
        logging.getLogger("openai._base_client").info("Retrying request to %s in 0.4 seconds", f"{URL}/chat/completions")
        try:
            raise ConnectionError(f"could not reach {URL}")
        except ConnectionError:
            logging.getLogger("backend.test").exception("engine down")
    finally:
        root.handlers[:], root.level = saved
    text = buffer.getvalue()
    assert "s3cret" not in text
    assert text.count("http://***@vllm.internal:8001/v1") == 2  # message and traceback, redacted not dropped
    if fmt == "json":
        assert all(json.loads(line) for line in text.splitlines())
