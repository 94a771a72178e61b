"""cli.client's one Server-Sent Events decoder (every CLI stream goes through it: /ask, job events, the load
generator's /ask and raw engine streams): any chunking, multi-line data, comments, CRLF and CR, an event past
its cap, and the async form the load generator reads."""

from __future__ import annotations

import asyncio

import pytest

from backend.llm.wire import ReplyTooLarge
from cli.client import SseDecoder, SseEvent, adecode_sse, decode_sse, parse_sse

BODY = (
    b": keepalive\n\n"
    b"event: token\ndata: {\"text\": \"Hel\"}\n\n"
    b"data: plain message\n\n"
    b"event: done\ndata: first line\ndata:second line\ndata:  two spaces\n\n"
)
EXPECTED = [
    SseEvent("token", '{"text": "Hel"}'),
    SseEvent("message", "plain message"),
    SseEvent("done", "first line\nsecond line\n two spaces"),  # one leading space removed, never more
]


def chunked(body: bytes, size: int) -> list[bytes]:
    return [body[i:i + size] for i in range(0, len(body), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(BODY)])
def test_events_come_out_the_same_whatever_the_chunking(size):
    assert list(decode_sse(chunked(BODY, size))) == EXPECTED


@pytest.mark.parametrize("newline", [b"\r\n", b"\r", b"\n"])
def test_every_line_ending_of_the_specification_ends_lines(newline):
    body = BODY.replace(b"\n", newline)
    for size in (1, 2, 5, len(body)):  # a CRLF split between two reads is still one line ending
        assert list(decode_sse(chunked(body, size))) == EXPECTED


def test_comments_events_without_data_and_an_unfinished_event_yield_nothing():
    decoder = SseDecoder()
    assert decoder.feed(b": ping\n\n: another\n\nevent: progress\nid: 7\n\nretry: 10\n\n") == []
    assert decoder.feed(b"event: done\ndata: {\"n\": 1}\n") == []  # no blank line yet: not complete
    assert decoder.feed(b"\n") == [SseEvent("done", '{"n": 1}')]
    assert list(decode_sse([b"data: cut off before its blank line\n"])) == []


def test_data_decodes_as_json_on_demand():
    assert list(parse_sse([b"event: progress\ndata: {\"n\": 1,\ndata:  \"ok\": true}\n\n"])) == [("progress", {"n": 1, "ok": True})]
    with pytest.raises(ValueError):
        list(parse_sse([b"data: {not json\n\n"]))
    assert SseEvent("token", "[DONE]").data == "[DONE]"  # undecoded until asked: OpenAI's end marker is no JSON


def test_an_event_past_the_cap_is_refused_complete_or_not():
    cap = 1024
    assert list(decode_sse([b"data: " + b"a" * (cap - 6) + b"\n\n"], max_bytes=cap)) == [SseEvent("message", "a" * (cap - 6))]
    with pytest.raises(ReplyTooLarge):
        list(decode_sse([b"data: " + b"a" * (cap + 1) + b"\n\n"], max_bytes=cap))

    pulled = 0

    def endless():
        nonlocal pulled
        yield b"event: done\ndata: "
        while True:
            pulled += 1
            yield b"b" * 256

    with pytest.raises(ReplyTooLarge):
        list(decode_sse(endless(), max_bytes=cap))
    assert pulled <= cap // 256 + 1  # stopped at the cap, not at the end of the stream


def test_the_async_form_decodes_the_same():
    async def body(size: int):
        for chunk in chunked(BODY.replace(b"\n", b"\r\n"), size):
            yield chunk

    async def collect(size: int) -> list[SseEvent]:
        return [event async for event in adecode_sse(body(size))]

    for size in (1, 4, len(BODY)):
        assert asyncio.run(collect(size)) == EXPECTED
