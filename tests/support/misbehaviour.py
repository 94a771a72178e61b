"""What the engine stand-ins share to misbehave on purpose and to show what the client did about it.

- `StreamRecord` / `tracked`: every streamed reply is wrapped so that a test sees when it opened, how many
  bytes went out, and when (and whether) the server saw it closed — by its end, or by the client leaving.
- `unterminated`: one event or line that never ends (`size` bytes without a terminator, in pieces), the
  reply of an engine that would make a naive parser buffer and re-scan forever.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

PIECE_BYTES = 64 * 1024
# How long a "stream that never ends" sleeps between its pieces when no token delay is set: slow enough
# not to busy the test machine's two cores, fast enough to look alive.
ENDLESS_TICK_S = 0.02


@dataclass
class StreamRecord:
    """One streamed reply as the server saw it."""

    path: str
    opened_at: float = field(default_factory=time.monotonic)
    sent_bytes: int = 0
    closed_at: float | None = None  # when the body stopped: finished, failed, or cut by the client leaving
    finished: bool = False  # the body ran to its end (not closed early)

    @property
    def closed(self) -> bool:
        return self.closed_at is not None


async def tracked(body: AsyncIterator[bytes], record: StreamRecord) -> AsyncIterator[bytes]:
    """`body`, counted into `record`; `closed_at` is set however the body stops (the server cancels it when
    the client disconnects)."""
    try:
        async for piece in body:
            record.sent_bytes += len(piece)
            yield piece
        record.finished = True
    finally:
        record.closed_at = time.monotonic()


async def unterminated(prefix: bytes, size: int, piece: int = PIECE_BYTES) -> AsyncIterator[bytes]:
    """`prefix`, then `size` bytes of 'a' with no newline, then nothing more while the connection stays open."""
    yield prefix
    block = b"a" * piece
    left = size
    while left > 0:
        yield block[: min(piece, left)]
        left -= piece
        await asyncio.sleep(0)  # let the server notice a client that left
    while True:
        await asyncio.sleep(ENDLESS_TICK_S * 50)


def wait_closed(record: StreamRecord, timeout_s: float) -> bool:
    """Wait (from the test's thread) until the server saw `record` closed; False if it did not in time."""
    deadline = time.monotonic() + timeout_s
    while not record.closed:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
