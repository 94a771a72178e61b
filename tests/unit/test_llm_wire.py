"""Bounded reading of streamed replies (issue 24, finding 8): the NDJSON line cap the Ollama client installs on
its httpx client, and the CLI's SSE decoder. Both must stop a line or event that never ends at their cap,
having read about the cap and no more, and decode ordinary streams as before."""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx
import pytest

from backend.llm.wire import ReplyTooLarge, SseEvents, cap_lines
from cli.client import parse_sse

CAP = 4096
PIECE = 1024


class Pieces(httpx.AsyncByteStream):
    """A response body of `count` pieces, counting how many the client pulled."""

    def __init__(self, first: bytes, piece: bytes, count: int) -> None:
        self.first, self.piece, self.count, self.pulled = first, piece, count, 0

    async def __aiter__(self):
        yield self.first
        for _ in range(self.count):
            self.pulled += 1
            yield self.piece


def capped_client(body: Pieces, headers: dict | None = None) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers or {}, stream=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler), event_hooks={"response": [cap_lines(lambda path: CAP)]})


async def read_lines(client: httpx.AsyncClient) -> list[str]:
    async with client.stream("POST", "http://engine/api/chat") as response:
        return [line async for line in response.aiter_lines()]


def test_ordinary_ndjson_passes_and_a_line_that_never_ends_stops_at_the_cap():
    lines = [json.dumps({"message": {"content": f"w{i}"}, "done": False}) for i in range(200)]
    body = Pieces(b"", ("\n".join(lines) + "\n").encode(), 1)
    assert asyncio.run(read_lines(capped_client(body))) == lines

    endless = Pieces(b'{"message": {"content": "', b"a" * PIECE, 100_000)  # ~100 MB if read through
    with pytest.raises(ReplyTooLarge):
        asyncio.run(read_lines(capped_client(endless)))
    assert endless.pulled <= CAP // PIECE + 1


def test_a_compressed_reply_is_refused_before_it_inflates():
    body = Pieces(b"", gzip.compress(b"a" * 1_000_000), 0)
    with pytest.raises(ReplyTooLarge, match="compressed"):
        asyncio.run(read_lines(capped_client(body, {"content-encoding": "gzip"})))


def test_the_cli_decoder_reads_events_in_any_chunking_and_refuses_one_past_its_cap():
    body = b": keepalive\n\nevent: progress\ndata: {\"n\": 1}\n\nevent: done\r\ndata: {\"n\": 2,\r\ndata:  \"ok\": true}\r\n\r\n"
    expected = [("progress", {"n": 1}), ("done", {"n": 2, "ok": True})]
    for size in (1, 2, 5, len(body)):
        assert list(parse_sse(body[i:i + size] for i in range(0, len(body), size))) == expected

    pulled = 0

    def endless():
        nonlocal pulled
        yield b"event: done\ndata: "
        while True:
            pulled += 1
            yield b"a" * PIECE

    with pytest.raises(ReplyTooLarge):
        list(parse_sse(endless(), max_bytes=CAP))
    assert pulled <= CAP // PIECE + 1


def test_the_splitter_searches_each_byte_about_once():
    splitter = SseEvents(max_bytes=1 << 20)
    body = b"data: " + b"b" * 900_000 + b"\n\n"
    events = [e for i in range(0, len(body), 100) for e in splitter.feed(body[i:i + 100])]
    assert events == [body[:-2]]
    assert splitter.scanned <= len(body) + len(body) // 100 + 1  # before: the whole buffer on every read
