"""Token-aware chunking with the embedder's own tokenizer.

Sizes are counted in the embedding model's tokens, so no chunk is ever silently cut by the model's
max sequence length. Each section is tokenized once (with character offsets; a very long section in
bounded windows, see `Chunker`); chunk ends are placed at the best boundary inside the window (paragraph > line / sentence > word), and consecutive chunks
of a section share up to `overlap` tokens, starting at a sentence or word start. A chunk's text is an
exact substring of its section, so what is shown to users is what was embedded (plus its heading).
"""

from __future__ import annotations

import re
from typing import Iterator, Protocol, Sequence

from backend.domain import Chunk
from backend.errors import DocumentTooLarge
from backend.ingest.parsers import Section

# A heading is prepended to the text that gets embedded (it gives the chunk its context), but it may
# not eat the chunk's budget: past this many tokens it is cut.
MAX_HEADING_TOKENS = 32
_SENTENCE_END = re.compile(r"[.!?;:…。]['\")\]]*$")
# Characters of a section tokenized at once (see `Chunker`): ~16k tokens of ordinary text, a few MB of
# tokenizer output; far longer than a page or a section under one heading.
WINDOW_CHARS = 1 << 16
# A window with too few tokens for one chunk (words of hundreds of characters) is widened up to this factor,
# then cut hard.
MAX_WINDOW_GROWTH = 16
# Where a window may end, best first (all of them keep the words on both sides whole).
_WINDOW_CUTS = ("\n\n", "\n", ". ", "。", " ", "\t")
# Chunks re-counted against the model's limit per `encode_batch` call (one call for 20,000 chunks is large).
RECOUNT_BATCH = 256


class Encoding(Protocol):
    """What chunking reads of a `tokenizers.Encoding`: the token ids and each token's character span."""

    @property
    def ids(self) -> list[int]: ...

    @property
    def offsets(self) -> list[tuple[int, int]]: ...


class Tokenizer(Protocol):
    """What chunking needs from a `tokenizers.Tokenizer` (the fast tokenizer behind every HF model)."""

    def encode(self, sequence: str, /, *, add_special_tokens: bool = ...) -> Encoding:
        """The tokens of one text."""
        ...

    def encode_batch(self, inputs: list[str], /, *, add_special_tokens: bool = ...) -> Sequence[Encoding]:
        """The tokens of each text, in one call."""
        ...

    def to_str(self) -> str:
        """The tokenizer as JSON (how a parse worker process gets the same tokenizer)."""
        ...


class Chunker:
    """Cuts sections into chunks of at most `max_tokens` embedder tokens (heading included).

    A section is tokenized in windows of about `window_chars` characters (cut at a paragraph, line, sentence or
    space, else hard): tokenizer output costs some hundred bytes per token, so a multi-megabyte section
    tokenized at once needs gigabytes. Each window after the first starts where the next chunk starts, so
    the chunks are the ones a whole-section pass would make; sections shorter than a window (nearly all)
    are tokenized whole, exactly as before.
    """

    def __init__(
        self, tokenizer: Tokenizer, max_tokens: int, overlap: int, hard_limit: int | None = None,
        window_chars: int = WINDOW_CHARS,
    ):
        if overlap >= max_tokens:
            raise ValueError("overlap must be smaller than max_tokens")
        self.tokenizer = tokenizer
        # The model's own ceiling wins over a configured size that exceeds it.
        self.max_tokens = min(max_tokens, hard_limit) if hard_limit else max_tokens
        self.overlap = min(overlap, self.max_tokens // 2)
        self.hard_limit = hard_limit or self.max_tokens
        self.window_chars = window_chars

    def fingerprint(self) -> str:
        """Identifies the chunking so that changing it re-indexes documents."""
        return f"tokens={self.max_tokens};overlap={self.overlap}"

    def chunk(self, sections: Sequence[Section], max_chunks: int | None = None) -> list[Chunk]:
        """The sections' chunks, numbered from 0. Past `max_chunks` chunks it stops at once and raises
        `DocumentTooLarge` (the rest of the document is never tokenized)."""
        out: list[Chunk] = []
        pending: list[Chunk] = []
        for section in sections:
            heading, heading_tokens = self._fit_heading(section.heading)
            budget = max(self.max_tokens - heading_tokens, self.max_tokens // 2)
            for text, n_tokens in self._split(section.text, budget):
                pending.append(Chunk(0, text, section.page, heading, n_tokens + heading_tokens))
                if max_chunks is not None and len(out) + len(pending) > max_chunks:
                    raise DocumentTooLarge(f"more than {max_chunks} chunks (MAX_FILE_CHUNKS)")
                if len(pending) >= RECOUNT_BATCH:
                    out.extend(self._enforce_hard_limit(pending, len(out)))
                    pending = []
        out.extend(self._enforce_hard_limit(pending, len(out)))
        if max_chunks is not None and len(out) > max_chunks:
            raise DocumentTooLarge(f"more than {max_chunks} chunks (MAX_FILE_CHUNKS)")
        return out

    def _fit_heading(self, heading: str | None) -> tuple[str | None, int]:
        if not heading:
            return None, 0
        enc = self.tokenizer.encode(heading + "\n\n", add_special_tokens=False)
        if len(enc.ids) <= MAX_HEADING_TOKENS:
            return heading, len(enc.ids)
        cut = enc.offsets[MAX_HEADING_TOKENS - 2][1]
        heading = heading[:cut].rstrip() + "…"
        return heading, len(self.tokenizer.encode(heading + "\n\n", add_special_tokens=False).ids)

    def _window(self, text: str, base: int, size: int) -> tuple[int, bool]:
        """Where the window from `base` ends, and whether it is final (the section's end, or a hard cut:
        nothing after it may be tokenized together with it)."""
        limit = base + size
        if limit >= len(text):
            return len(text), True
        low = base + size // 2
        for sep in _WINDOW_CUTS:
            at = text.rfind(sep, low, limit)
            if at >= 0:
                return at + len(sep), False
        return limit, True

    def _split(self, text: str, budget: int) -> Iterator[tuple[str, int]]:
        base, size = 0, self.window_chars
        while base < len(text):
            stop, final = self._window(text, base, size)
            # Offsets into the whole section, so boundaries look at the same characters as a whole-section pass.
            offsets = [(a + base, b + base) for a, b in self.tokenizer.encode(text[base:stop], add_special_tokens=False).offsets]
            n = len(offsets)
            if n == 0:
                base = stop
                continue
            if base == 0 and stop == len(text) and n <= budget:
                yield text.strip(), n
                return
            if not final and n <= budget + 1:  # too few tokens for one chunk (very long words): a wider window
                if size < self.window_chars * MAX_WINDOW_GROWTH:
                    size *= 2
                    continue
                final = True

            def gap_score(i: int) -> int:
                """How good a boundary lies just before token i (0 = inside a word)."""
                if i <= 0 or i >= n:
                    return 4
                gap = text[offsets[i - 1][1] : offsets[i][0]]
                if "\n\n" in gap or "\n\r\n" in gap:
                    return 4
                if "\n" in gap:
                    return 3
                if not gap:
                    return 0
                prev_end = offsets[i - 1][1]
                if _SENTENCE_END.search(text[max(prev_end - 4, 0) : prev_end]):
                    return 3
                return 2 if text[prev_end - 1] in ",-–—" else 1

            start = 0
            while start < n:
                if n - start <= budget and final:
                    end = n
                elif not final and start + budget + 1 >= n:
                    break  # this chunk may need tokens past the window: the next window starts with it
                else:
                    lowest = start + max(budget // 2, 1)
                    end = max(range(lowest, start + budget + 1), key=lambda i: (gap_score(i), i))
                piece = text[offsets[start][0] : offsets[end - 1][1]].strip()
                if piece:
                    yield piece, end - start
                if end >= n:
                    break
                # Overlap: begin the next chunk at a sentence (else word) start within the last `overlap` tokens.
                window = range(max(end - self.overlap, start + 1), end + 1)
                nxt = next((i for i in window if gap_score(i) >= 3), None)
                if nxt is None:
                    nxt = next((i for i in window if gap_score(i) >= 1), end)
                start = nxt
            if final:
                base = stop
            else:
                base, size = offsets[start][0], self.window_chars

    def _enforce_hard_limit(self, chunks: list[Chunk], first_index: int) -> list[Chunk]:
        """Re-count each chunk as the model will see it; split any that drifted past the model's limit.
        Numbers the chunks from `first_index`.

        Tokenizing a substring can differ slightly from the slice of the whole text's tokens (SentencePiece
        models), so this is checked, not assumed.
        """
        if not chunks:
            return chunks
        encodings = self.tokenizer.encode_batch([c.embed_text for c in chunks], add_special_tokens=False)
        out: list[Chunk] = []
        for chunk, enc in zip(chunks, encodings):
            if len(enc.ids) <= self.hard_limit:
                out.append(Chunk(first_index + len(out), chunk.text, chunk.page, chunk.heading, len(enc.ids)))
                continue
            cut = len(chunk.text) // 2
            halves = [chunk.text[:cut], chunk.text[cut:]]
            for half in halves:
                sub = Chunker(self.tokenizer, self.max_tokens // 2, 0, self.hard_limit, self.window_chars)
                for piece in sub.chunk([Section(half, chunk.page, chunk.heading)]):
                    out.append(Chunk(first_index + len(out), piece.text, piece.page, piece.heading, piece.token_count))
        return out
