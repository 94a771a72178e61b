"""Response models (they document the API in /docs and keep responses stable)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from backend.answers import Answer


class SearchResult(BaseModel):
    text: str
    score: float = Field(description="The ranking score: cosine (dense), BM25 (sparse), fused (hybrid) or reranker's.")
    dense_score: float | None = Field(None, description="Cosine between question and chunk (dense and hybrid modes).")
    cross_score: float | None = Field(
        None, description="The cross-language model's cosine between question and chunk (CROSS_LANGUAGE_MODEL), when "
        "the question got cross-language search; /ask's relevance gate also looks at it.",
    )
    doc_id: str
    path: str
    chunk_index: int
    page: int | None = None
    heading: str | None = None
    content_hash: str | None = None


class SearchResponse(BaseModel):
    results: list[SearchResult]
    space_id: str
    mode: str = Field(description="The retrieval mode used: dense | sparse | hybrid.")
    reranked: bool
    timings: dict[str, float] = Field(description="embed_ms, search_ms, total_ms (rerank_ms when reranked)")


class DocumentOut(BaseModel):
    doc_id: str
    space_id: str
    path: str
    chunks: int
    hash: str = Field(description="sha256 of the file's bytes")
    size_bytes: int
    indexed_at: str


class DocumentList(BaseModel):
    space_id: str
    documents: list[DocumentOut]


class IngestOut(BaseModel):
    path: str
    status: str = Field(description="added | replaced | unchanged")
    doc_id: str | None
    chunks: int
    space_id: str


class DeleteOut(BaseModel):
    doc_id: str
    deleted_points: int


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 413, 415, 422, 500, 503, 507)}


class AskSource(BaseModel):
    n: int = Field(description="The number the answer cites as [n].")
    doc_id: str
    path: str
    chunk_index: int
    page: int | None = None
    heading: str | None = None
    score: float
    dense_score: float | None = None
    cross_score: float | None = Field(None, description="The cross-language model's cosine, for a cross-language question.")
    text: str
    cited: bool = Field(description="Whether the answer cites this source.")


class AskOut(BaseModel):
    """The answer (JSON), or the `data` of the final `done` event of the SSE stream: `Answer.to_dict()`."""

    answer: str
    sources: list[AskSource]
    grounded: bool = Field(
        description="False when nothing relevant was found and no LLM was called, or when the claim check found the "
        "answer unsupported (no supported sentence, at least one unsupported or uncited)."
    )
    engine: str
    model: str | None
    usage: dict | None = Field(description="prompt_tokens, completion_tokens as the engine reported them")
    finish_reason: str | None = None
    citations: list[dict] = Field(
        description="The claim check (CITATION_CHECK), one entry per sentence of the answer: {sentence, start, end "
        "(character offsets into `answer`), sources: [n], supported: true|false|null, status: supported|unsupported|"
        "uncited|no_claim, span: {n, start, end} (character offsets into sources[n-1].text) or null, score, missing, "
        "attributed}; sentences CITATION_CHECK=drop removed follow with dropped: true and null offsets. [] when "
        "nothing was checked."
    )
    cited: list[int] = Field(description="The source numbers the answer cites.")
    invalid_citations: list[int] = Field(description="Numbers the model cited that no source has (removed from `answer`).")
    context: dict = Field(description="retrieved, below_min_score, used, dropped chunks, mode, reranked, token budget")
    timings: dict = Field(description="retrieval_ms, ttft_ms, total_ms, retrieval_stages (and check_ms: the claim check)")

    @classmethod
    def from_answer(cls, answer: Answer) -> AskOut:
        """The typed answer as the API describes it (a refusal leaves `finish_reason` unset: no engine ran)."""
        return cls.model_validate(answer.to_dict())

    def body(self) -> dict:
        """The JSON body: the fields the answer set, nothing filled in."""
        return self.model_dump(mode="json", exclude_unset=True)


class JobAccepted(BaseModel):
    """202 from POST /documents with several files or `async=true`: the job is queued."""

    job_id: str
    status: str = Field(description="queued")
    space_id: str
    total: int = Field(description="How many files the job holds.")
    url: str = Field(description="GET it for the job's state: /jobs/{job_id}")
    events_url: str = Field(description="Server-Sent Events of its progress: /jobs/{job_id}/events")


class JobFileOut(BaseModel):
    path: str
    status: str = Field(description="queued | running | added | replaced | unchanged | failed | skipped")
    doc_id: str | None
    chunks: int
    error_type: str | None = Field(description="Why it failed or was skipped (corrupt_document, interrupted, ...).")
    message: str | None


class JobCounts(BaseModel):
    added: int
    replaced: int
    unchanged: int
    failed: int
    skipped: int


class JobSummary(BaseModel):
    job_id: str
    space_id: str
    status: str = Field(description="queued | running | done | failed | interrupted (done also when files failed: see counts)")
    created_at: str
    started_at: str | None
    finished_at: str | None
    total: int
    processed: int = Field(description="Files with an outcome.")
    progress: float = Field(description="processed / total, 0..1")
    counts: JobCounts


class JobOut(JobSummary):
    files: list[JobFileOut]


class JobList(BaseModel):
    jobs: list[JobSummary] = Field(description="Newest first; the last 200 jobs, kept in memory until a restart.")
