"""What an answer is made of, as typed records: the events `RagService` yields and the answer they end with.

An answer streams as `TokenEvent`s (each piece of text as the engine produced it), then exactly one
`AnswerEvent` carrying the `Answer`: the text with its citations checked (the numbers against the sources, and
each sentence's claim against the source it cites: `claims`), the sources, usage, the context report and timings. `Answer.to_dict()` is the one place its JSON (the `done` payload of POST /ask, the
`sources` and `rag` fields of /v1) is written; the API's `AskOut` is derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backend.citations import CitationCheck


@dataclass
class Source:
    """A retrieved chunk shown to the model as source [n]."""

    n: int
    doc_id: str
    path: str
    chunk_index: int
    page: int | None
    heading: str | None
    score: float
    dense_score: float | None
    cross_score: float | None
    text: str
    cited: bool = False

    @classmethod
    def from_hit(cls, n: int, hit: dict) -> Source:
        """Source [n] from one of the retriever's hits."""
        return cls(n, hit["doc_id"], hit["path"], hit["chunk_index"], hit.get("page"), hit.get("heading"),
                   hit["score"], hit.get("dense_score"), hit.get("cross_score"), hit["text"])

    def to_dict(self) -> dict:
        return {
            "n": self.n, "doc_id": self.doc_id, "path": self.path, "chunk_index": self.chunk_index, "page": self.page,
            "heading": self.heading, "score": self.score, "dense_score": self.dense_score,
            "cross_score": self.cross_score, "text": self.text, "cited": self.cited,
        }


@dataclass
class DroppedChunk:
    """A relevant chunk left out of the prompt, and why (`context_budget`: it did not fit the model's window)."""

    doc_id: str
    path: str
    chunk_index: int
    score: float
    tokens: int
    reason: str = "context_budget"

    def to_dict(self) -> dict:
        return {"doc_id": self.doc_id, "path": self.path, "chunk_index": self.chunk_index, "score": self.score,
                "tokens": self.tokens, "reason": self.reason}


@dataclass
class PromptBudget:
    """How the prompt was fitted to the model's window (only when the engine was asked)."""

    context_length: int
    max_tokens: int
    prompt_tokens_counted: int
    token_counts: str  # exact | estimated | upper_bound


@dataclass
class Context:
    """What retrieval found and what of it reached the model."""

    retrieved: int
    below_min_score: int
    mode: str
    reranked: bool
    used: int = 0
    dropped: list[DroppedChunk] = field(default_factory=list)
    budget: PromptBudget | None = None
    # Earlier turns of a conversation sent to the model and dropped for room; None when it had none.
    history_sent: int | None = None
    history_dropped: int | None = None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {
            "retrieved": self.retrieved, "below_min_score": self.below_min_score, "mode": self.mode,
            "reranked": self.reranked, "used": self.used, "dropped": [d.to_dict() for d in self.dropped],
        }
        if self.budget is not None:
            out.update(context_length=self.budget.context_length, max_tokens=self.budget.max_tokens,
                       prompt_tokens_counted=self.budget.prompt_tokens_counted, token_counts=self.budget.token_counts)
        if self.history_sent is not None:
            out["history"] = {"sent": self.history_sent, "dropped": self.history_dropped or 0}
        return out


@dataclass
class Usage:
    """Tokens as the engine reported them (None where it did not)."""

    prompt_tokens: int | None
    completion_tokens: int | None

    def to_dict(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


@dataclass
class Timings:
    """Milliseconds from the question's arrival: retrieval done, first token (None: none came), the end."""

    retrieval_ms: float
    ttft_ms: float | None
    total_ms: float
    retrieval_stages: dict = field(default_factory=dict)  # the retriever's embed_ms, search_ms (and rerank_ms)
    check_ms: float | None = None  # the claim check after the last token (part of total_ms); None: not checked

    def to_dict(self) -> dict:
        out = {
            "retrieval_ms": round(self.retrieval_ms, 2),
            "ttft_ms": round(self.ttft_ms, 2) if self.ttft_ms is not None else None,
            "total_ms": round(self.total_ms, 2),
            "retrieval_stages": self.retrieval_stages,
        }
        if self.check_ms is not None:
            out["check_ms"] = round(self.check_ms, 2)
        return out


@dataclass
class Answer:
    """A finished answer.

    Three kinds: grounded (retrieval found sources, the engine answered from them), refused (nothing relevant
    was found: the appliance says so itself and no engine is asked) and plain chat (the engine's model
    without retrieval, for /v1: no `context`, no `timings`).
    """

    text: str
    engine: str
    model: str | None
    grounded: bool = False
    sources: list[Source] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    cited: list[int] = field(default_factory=list)
    invalid_citations: list[int] = field(default_factory=list)  # numbers cited that no source has (removed)
    context: Context | None = None
    timings: Timings | None = None
    # The claim checker's verdict on each sentence (backend/citations/), in the order of the answer; None when
    # nothing was checked (CITATION_CHECK=off, a refusal, plain chat). Offsets `start`/`end` are into `text`;
    # sentences removed by CITATION_CHECK=drop are in `dropped_claims` instead (their offsets: the streamed text).
    claims: list[CitationCheck] | None = None
    dropped_claims: list[CitationCheck] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        """Retrieval found nothing relevant: no engine was asked (no prompt was fitted to its window).

        Not the same as `grounded` false: an answer the claim checker found unsupported is not grounded either,
        but the engine wrote it."""
        return self.context is not None and not self.grounded and self.context.budget is None

    def to_dict(self) -> dict:
        """The answer's JSON: the `done` event's data, POST /ask's body (`AskOut`)."""
        out: dict[str, Any] = {
            "engine": self.engine, "model": self.model, "answer": self.text,
            "sources": [s.to_dict() for s in self.sources], "grounded": self.grounded,
        }
        if not self.refused:  # a refusal has no engine's reason to stop
            out["finish_reason"] = self.finish_reason
        out["usage"] = self.usage.to_dict() if self.usage is not None else None
        # One entry per checked sentence (issue 19); the numbers cited and those no source has sit beside it.
        out["citations"] = [claim_dict(c) for c in self.claims or []] + [
            claim_dict(c, dropped=True) for c in self.dropped_claims]
        out["cited"] = self.cited
        out["invalid_citations"] = self.invalid_citations
        if self.context is not None:
            out["context"] = self.context.to_dict()
        if self.timings is not None:
            out["timings"] = self.timings.to_dict()
        return out


def claim_dict(check: CitationCheck, dropped: bool = False) -> dict:
    """One sentence's check as the API writes it: `{sentence, start, end, sources, supported, status, span, score,
    missing, attributed}` (+ `dropped: true`, offsets null, for a sentence CITATION_CHECK=drop removed)."""
    return {
        "sentence": check.sentence,
        "start": None if dropped else check.start,
        "end": None if dropped else check.end,
        "sources": list(check.sources),
        "supported": check.supported,
        "status": check.status,
        "span": {"n": check.span.n, "start": check.span.start, "end": check.span.end} if check.span else None,
        "score": check.score,
        "missing": list(check.missing),
        "attributed": check.attributed,
        **({"dropped": True} if dropped else {}),
    }


@dataclass
class TokenEvent:
    """A piece of the answer's text, as it streams."""

    text: str


@dataclass
class AnswerEvent:
    """The last event of every answer."""

    answer: Answer


AnswerStreamEvent = TokenEvent | AnswerEvent
