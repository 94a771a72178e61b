"""The indexing progress of `cli.index_cli`: files/s, chunks/s and ETA.

On a terminal it is tqdm's bar (files/s and ETA are tqdm's own; chunks/s rides in the postfix). Anywhere
else (a log file, `docker compose run` without a TTY, CI) a bar of carriage returns is unreadable, so it is a
plain line at most every `interval` seconds and one at the end:

    indexing into 'kb': 1200/5000 files (24%), 3.1 files/s, 41.7 chunks/s, 18423 chunks, ETA 20m26s

`--quiet` turns both off; notes (failed and skipped files) are still written.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

# Seconds between two plain lines when stderr is not a terminal.
PLAIN_INTERVAL_S = 10.0


def format_eta(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class IngestProgress:
    """Counts files and written chunks; shows them as a bar (TTY), plain lines (no TTY) or nothing (quiet)."""

    def __init__(
        self, total: int, desc: str, quiet: bool = False, stream: TextIO | None = None,
        interval: float = PLAIN_INTERVAL_S, tty: bool | None = None,
    ):
        self.total = total
        self.desc = desc
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.interval = interval
        self.files = 0
        self.chunks = 0
        self.started = time.perf_counter()
        self._last_line = self.started
        self._shown = -1  # files counted in the last plain line
        is_tty = self.stream.isatty() if tty is None else tty
        self._bar = tqdm(total=total, unit="file", desc=desc, file=self.stream) if is_tty and not quiet else None

    def update(self, chunks: int = 0, label: str = "") -> None:
        """One more file done, having written `chunks` chunks (0 when unchanged, skipped or failed)."""
        self.files += 1
        self.chunks += chunks
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"{self.chunks_per_s():.1f} chunks/s {label[-40:]}".rstrip(), refresh=False)
        elif not self.quiet and time.perf_counter() - self._last_line >= self.interval:
            self._line()

    def stage(self, desc: str) -> None:
        """A step after the files (building the index): shown in place of the bar's description."""
        if self._bar is not None:
            self._bar.set_description(desc)
        elif not self.quiet:
            print(f"{self.desc}: {desc}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A message that must be seen even with --quiet (a file that failed), without breaking the bar."""
        if self._bar is not None:
            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Final state: the bar closed, or one last plain line when the last one is out of date."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif not self.quiet and self.files != self._shown:
            self._line()

    def elapsed(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    def chunks_per_s(self) -> float:
        return self.chunks / self.elapsed()

    def line(self) -> str:
        """The plain progress line."""
        elapsed = self.elapsed()
        rate = self.files / elapsed
        pct = f" ({100 * self.files / self.total:.0f}%)" if self.total else ""
        left = self.total - self.files
        eta = format_eta(left / rate) if rate > 0 and left > 0 else ("done" if left <= 0 else "?")
        return (
            f"{self.desc}: {self.files}/{self.total} files{pct}, {rate:.1f} files/s, {self.chunks_per_s():.1f} chunks/s, "
            f"{self.chunks} chunks, ETA {eta}"
        )

    def _line(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._last_line = time.perf_counter()
        self._shown = self.files
