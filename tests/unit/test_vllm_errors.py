"""vLLM client error translation: unreachable, timeout, bad status and a break mid-answer map to distinct types."""

from __future__ import annotations

import httpx
import httpx2
import openai

from backend.llm.vllm import VllmClient


def test_translation_separates_unreachable_timeout_and_bad_answers():
    client = VllmClient("http://127.0.0.1:9/v1", "m")
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    response = httpx2.Response(500, request=request, json={"error": {"message": "CUDA out of memory"}})
    cases = [
        (openai.APIConnectionError(request=request), False, "llm_unavailable"),
        (openai.APITimeoutError(request=request), False, "llm_timeout"),
        (httpx2.ReadTimeout("slow", request=request), True, "llm_timeout"),
        (httpx2.RemoteProtocolError("peer closed connection", request=request), True, "llm_bad_response"),
        (openai.InternalServerError("boom", response=response, body={"error": {"message": "CUDA out of memory"}}), False, "llm_bad_response"),
        (httpx.ConnectError("refused"), False, "llm_unavailable"),
    ]
    for exc, replied, expected in cases:
        error = client._translate(exc, "testing", replied=replied)
        assert error.error_type == expected, (exc, error)
    bad = client._translate(cases[4][0], "testing")
    assert "500" in bad.message and "CUDA out of memory" in bad.message and bad.status_code == 502
