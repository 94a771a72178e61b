"""Fixtures of the deployment checks (their helpers live in tests/support: compose, healthchecks, vllm_args)."""

from __future__ import annotations

import http.server
import threading

import pytest

from tests.support.healthchecks import StandIn
from tests.support.vllm_args import ensure_vllm_python


@pytest.fixture
def stand_in():
    """A local HTTP server answering every path with a settable status (the service a check probes)."""
    handler = type("Handler", (StandIn,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()


@pytest.fixture(scope="module")
def vllm_python():
    """vLLM's venv python (built on first use)."""
    return ensure_vllm_python()
