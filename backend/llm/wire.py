"""Reading an engine's streamed reply with bounded work and memory.

An engine is a trusted component until it misbehaves (a bug, a proxy in between, a compromised host): one
endless line or event must neither hold the backend's single event loop nor fill its memory. So:

- `SseEvents` splits a Server-Sent Events body into events in linear time: each read is searched for the
  blank line that ends an event only in its own bytes (plus one byte of overlap), never the whole buffer
  again; an event larger than `max_bytes` is refused. vLLM's answers and the CLI's job events use it.
- `cap_lines` is an httpx response hook for NDJSON replies (Ollama): the body's bytes pass through a counter
  of the bytes since the last newline, which stops the reply at `max_bytes` before httpx's line decoder
  buffers more (that decoder is linear but unbounded, and the `ollama` SDK then parses every line whole).
- Both refuse compressed replies: the clients ask for `identity`, and a compressed body would let a few
  kilobytes on the wire inflate to gigabytes before any of these counts sees them.
"""

from __future__ import annotations

from typing import AsyncIterator, Callable

import httpx

# The largest single event (SSE) or line (NDJSON) accepted from an engine. One chunk of a streamed answer
# is a few hundred bytes (vLLM with usage and logprobs off, Ollama's NDJSON line); a megabyte is far above
# anything a well-behaved engine sends and small enough to parse without noticing.
MAX_EVENT_BYTES = 1 << 20
# The largest line of a reply that is not a streamed answer (Ollama's /api/show is one JSON line with the
# model's license and template: tens of kilobytes).
MAX_REPLY_LINE_BYTES = 8 << 20
IDENTITY = {"Accept-Encoding": "identity"}


class ReplyTooLarge(ValueError):
    """An engine's event or line went past its byte limit (or came compressed though `identity` was asked):
    the reply is refused and its connection closed."""


class SseEvents:
    """Incremental splitter of a Server-Sent Events body into events (the bytes between blank lines).

    `feed(bytes)` returns the events that those bytes complete, with line endings normalised to `\\n`
    (CRLF and lone CR are line endings too, as the SSE specification says). `scanned` counts the bytes
    searched for an event's end: it grows with the input, not with the input times the number of reads.
    """

    def __init__(self, max_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_bytes = max_bytes
        self.scanned = 0
        self._pending = bytearray()  # the start of the event not yet complete
        self._after_cr = False  # the last read ended with CR: a LF opening the next read belongs to it

    def feed(self, data: bytes) -> list[bytes]:
        """The events completed by `data`; raises ReplyTooLarge when an event exceeds `max_bytes`."""
        if self._after_cr and data.startswith(b"\n"):
            data = data[1:]
        if data:
            self._after_cr = data.endswith(b"\r")
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        # An event ends at "\n\n": the first "\n" may be the last byte already pending, never an earlier one.
        search = max(len(self._pending) - 1, 0)
        self._pending += data
        self.scanned += len(self._pending) - search
        events: list[bytes] = []
        start = 0
        while (end := self._pending.find(b"\n\n", search)) >= 0:
            if end - start > self.max_bytes:
                raise ReplyTooLarge(f"an event of {end - start} bytes (the limit is {self.max_bytes})")
            events.append(bytes(self._pending[start:end]))
            start = search = end + 2
        # Only this read's bytes can follow the last complete event, so the copy is as long as the read.
        del self._pending[:start]
        if len(self._pending) > self.max_bytes:
            raise ReplyTooLarge(f"an event longer than {self.max_bytes} bytes without its end")
        return events


def data_lines(event: bytes) -> list[bytes]:
    """The values of an event's `data:` fields (one leading space removed, as the specification says)."""
    values = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            values.append(value[1:] if value.startswith(b" ") else value)
    return values


class _LineCappedStream(httpx.AsyncByteStream):
    """A response body that raises ReplyTooLarge once `max_bytes` arrive without a newline."""

    def __init__(self, inner: httpx.AsyncByteStream, max_bytes: int) -> None:
        self._inner = inner
        self._max = max_bytes

    async def __aiter__(self) -> AsyncIterator[bytes]:
        run = 0  # bytes since the last newline
        async for chunk in self._inner:
            cut = chunk.rfind(b"\n")
            run = run + len(chunk) if cut < 0 else len(chunk) - cut - 1
            if run > self._max:
                raise ReplyTooLarge(f"a line longer than {self._max} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def cap_lines(limit_for_path: Callable[[str], int]) -> Callable[[httpx.Response], object]:
    """An httpx `response` event hook (it runs before the body is read, streamed or not) that bounds every
    line of the body to `limit_for_path(request path)` bytes and refuses compressed bodies."""

    async def hook(response: httpx.Response) -> None:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            await response.aclose()
            raise ReplyTooLarge(f"a compressed reply ({encoding}) though identity was asked")
        stream = response.stream
        if not isinstance(stream, httpx.AsyncByteStream):  # the hook is async: only an AsyncClient runs it
            raise TypeError(f"cap_lines needs an httpx.AsyncClient, got a {type(stream).__name__} body")
        response.stream = _LineCappedStream(stream, limit_for_path(response.request.url.path))

    return hook
