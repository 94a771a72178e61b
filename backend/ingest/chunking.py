"""Token-aware chunking with the embedder's own tokenizer.

Sizes are counted in the embedding model's tokens, so no chunk is ever silently cut by the model's
max sequence length. Each section is tokenized once (with character offsets); chunk ends are placed
at the best boundary inside the window (paragraph > line / sentence > word), and consecutive chunks
of a section share up to `overlap` tokens, starting at a sentence or word start. A chunk's text is an
exact substring of its section, so what is shown to users is what was embedded (plus its heading).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, Sequence

from backend.ingest.parsers import Section

# A heading is prepended to the text that gets embedded (it gives the chunk its context), but it may
# not eat the chunk's budget: past this many tokens it is cut.
MAX_HEADING_TOKENS = 32
_SENTENCE_END = re.compile(r"[.!?;:…。]['\")\]]*$")


class Tokenizer(Protocol):
    """What chunking needs from a `tokenizers.Tokenizer` (the fast tokenizer behind every HF model)."""

    def encode(self, sequence: str, add_special_tokens: bool = ...): ...

    def encode_batch(self, inputs: list[str], add_special_tokens: bool = ...): ...


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, sized for the embedder."""

    chunk_index: int
    text: str
    page: int | None
    heading: str | None
    token_count: int

    @property
    def embed_text(self) -> str:
        """The text that is embedded: the heading (its context) followed by the chunk."""
        return f"{self.heading}\n\n{self.text}" if self.heading else self.text


class Chunker:
    """Cuts sections into chunks of at most `max_tokens` embedder tokens (heading included)."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int, overlap: int, hard_limit: int | None = None):
        if overlap >= max_tokens:
            raise ValueError("overlap must be smaller than max_tokens")
        self.tokenizer = tokenizer
        # The model's own ceiling wins over a configured size that exceeds it.
        self.max_tokens = min(max_tokens, hard_limit) if hard_limit else max_tokens
        self.overlap = min(overlap, self.max_tokens // 2)
        self.hard_limit = hard_limit or self.max_tokens

    def fingerprint(self) -> str:
        """Identifies the chunking so that changing it re-indexes documents."""
        return f"tokens={self.max_tokens};overlap={self.overlap}"

    def chunk(self, sections: Sequence[Section]) -> list[Chunk]:
        chunks: list[Chunk] = []
        for section in sections:
            heading, heading_tokens = self._fit_heading(section.heading)
            budget = max(self.max_tokens - heading_tokens, self.max_tokens // 2)
            for text, n_tokens in self._split(section.text, budget):
                chunks.append(
                    Chunk(
                        chunk_index=len(chunks),
                        text=text,
                        page=section.page,
                        heading=heading,
                        token_count=n_tokens + heading_tokens,
                    )
                )
        return self._enforce_hard_limit(chunks)

    def _fit_heading(self, heading: str | None) -> tuple[str | None, int]:
        if not heading:
            return None, 0
        enc = self.tokenizer.encode(heading + "\n\n", add_special_tokens=False)
        if len(enc.ids) <= MAX_HEADING_TOKENS:
            return heading, len(enc.ids)
        cut = enc.offsets[MAX_HEADING_TOKENS - 2][1]
        heading = heading[:cut].rstrip() + "…"
        return heading, len(self.tokenizer.encode(heading + "\n\n", add_special_tokens=False).ids)

    def _split(self, text: str, budget: int) -> list[tuple[str, int]]:
        offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        n = len(offsets)
        if n == 0:
            return []
        if n <= budget:
            return [(text.strip(), n)]

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

        pieces: list[tuple[str, int]] = []
        start = 0
        while start < n:
            if n - start <= budget:
                end = n
            else:
                lowest = start + max(budget // 2, 1)
                end = max(range(lowest, start + budget + 1), key=lambda i: (gap_score(i), i))
            piece = text[offsets[start][0] : offsets[end - 1][1]].strip()
            if piece:
                pieces.append((piece, end - start))
            if end >= n:
                break
            # Overlap: begin the next chunk at a sentence (else word) start within the last `overlap` tokens.
            window = range(max(end - self.overlap, start + 1), end + 1)
            nxt = next((i for i in window if gap_score(i) >= 3), None)
            if nxt is None:
                nxt = next((i for i in window if gap_score(i) >= 1), end)
            start = nxt
        return pieces

    def _enforce_hard_limit(self, chunks: list[Chunk]) -> list[Chunk]:
        """Re-count each chunk as the model will see it; split any that drifted past the model's limit.

        Tokenizing a substring can differ slightly from the slice of the whole text's tokens (SentencePiece
        models), so this is checked, not assumed.
        """
        if not chunks:
            return chunks
        encodings = self.tokenizer.encode_batch([c.embed_text for c in chunks], add_special_tokens=False)
        out: list[Chunk] = []
        for chunk, enc in zip(chunks, encodings):
            if len(enc.ids) <= self.hard_limit:
                out.append(Chunk(len(out), chunk.text, chunk.page, chunk.heading, len(enc.ids)))
                continue
            cut = len(chunk.text) // 2
            halves = [chunk.text[:cut], chunk.text[cut:]]
            for half in halves:
                sub = Chunker(self.tokenizer, self.max_tokens // 2, 0, self.hard_limit)
                for piece in sub.chunk([Section(half, chunk.page, chunk.heading)]):
                    out.append(Chunk(len(out), piece.text, piece.page, piece.heading, piece.token_count))
        return out
