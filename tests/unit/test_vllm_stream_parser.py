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


# -- bounds (issue 24, finding 8): linear work, events capped ---------------------------------------------------
import pytest  # noqa: E402

from backend.llm.wire import MAX_EVENT_BYTES, ReplyTooLarge  # noqa: E402


def test_the_work_is_linear_in_the_bytes_fed_whatever_the_read_size():
    """Before: every read re-split the whole buffer, so an event arriving in R reads cost O(R x size)."""
    one = delta("x" * 200)
    body = one * 20_000  # ~4.6 MB of ordinary events
    for read in (7, 1024, 65536):
        parser = _SseChunks()
        texts = [t for i in range(0, len(body), read) for t in parser.feed(body[i:i + read])]
        assert len(texts) == 20_000
        assert parser.scanned <= len(body) + len(body) // read + 1  # each byte searched once, plus a byte per read

    # One big event (just under the cap) in small reads: still each byte once, not the buffer per read.
    big = delta("y" * (MAX_EVENT_BYTES - 200))
    parser = _SseChunks()
    texts = [t for i in range(0, len(big), 512) for t in parser.feed(big[i:i + 512])]
    assert texts == ["y" * (MAX_EVENT_BYTES - 200)]
    assert parser.scanned <= len(big) + len(big) // 512 + 1


def test_an_event_that_never_ends_is_refused_at_the_cap():
    parser = _SseChunks()
    parser.feed(delta("ok"))
    parser.feed(b'data: {"choices": [{"delta": {"content": "')
    piece = b"a" * 65536
    fed = 0
    with pytest.raises(ReplyTooLarge):
        for _ in range(100 * 16):  # 100 MB if nothing stopped it
            parser.feed(piece)
            fed += len(piece)
    assert fed <= MAX_EVENT_BYTES  # refused at the cap, not after the 100 MB
    with pytest.raises(ReplyTooLarge):  # a complete event over the cap, in one read, too
        _SseChunks(max_bytes=1000).feed(delta("z" * 2000))


def test_line_endings_split_across_reads_and_odd_chunks():
    parser = _SseChunks()
    assert parser.feed(delta("a").replace(b"\n\n", b"\r")) == []  # a line ended, the event not yet
    assert parser.feed(b"\n\r\n" + delta("b")) == ["a", "b"]  # that CRLF was split between two reads
    assert parser.feed(delta("c").replace(b"\n", b"\r")) == ["c"]  # lone CRs end lines too
    # JSON that is not a chunk object is noted, never an exception
    for odd in (b"[]", b"null", b'{"choices": null}', b'{"choices": [{"delta": "x"}]}', b'{"choices": ["x"]}', b'{"usage": 5}'):
        parser = _SseChunks()
        assert parser.feed(event(odd)) == []
    parser = _SseChunks()
    parser.feed(event(b"[1]"))
    assert parser.error and "not an object" in parser.error
