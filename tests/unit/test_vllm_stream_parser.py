"""The vLLM client's SSE body parser: events split anywhere across reads, deltas of one read coalesced."""

from __future__ import annotations

import json

from backend.llm.vllm import _SseChunks


def event(payload) -> bytes:
    return b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode()) + b"\n\n"


def delta(text: str, finish: str | None = None) -> bytes:
    return event({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]})


def test_deltas_of_one_read_come_out_together_and_split_events_wait_for_their_end():
    body = delta("Hel") + delta("lo") + delta(" wor") + delta("ld", "stop") + event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4}}) + event(b"[DONE]")
    parser = _SseChunks()
    first, second = body[:120], body[120:]  # the first event whole, the second cut in two
    assert parser.feed(first) == ["Hel"]
    assert parser.feed(second) == ["lo", " wor", "ld"]
    assert parser.finish_reason == "stop" and parser.usage == {"prompt_tokens": 7, "completion_tokens": 4}
    assert parser.error is None


def test_byte_by_byte_crlf_comments_and_role_chunks():
    body = (b": ping\r\n\r\n" + b'data: {"choices":[{"delta":{"role":"assistant"},"finish_reason":null}]}\r\n\r\n'
            + delta("ok", "length").replace(b"\n", b"\r\n"))
    parser = _SseChunks()
    texts = [t for i in range(len(body)) for t in parser.feed(body[i:i + 1])]
    assert texts == ["ok"] and parser.finish_reason == "length"


def test_an_error_event_mid_stream_is_kept():
    parser = _SseChunks()
    parser.feed(delta("par") + event({"error": {"message": "engine died", "type": "InternalServerError"}}) + event(b"[DONE]"))
    assert parser.error == "engine died" and parser.finish_reason is None
    assert _SseChunks().feed(b"data: {not json\n\n") == []
