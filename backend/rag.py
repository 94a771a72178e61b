"""The one place where the pieces meet: retrieve -> fit to the model's budget -> prompt -> stream -> cite.

`RagService.ask()` is an async generator of typed events (backend/answers.py): a `TokenEvent` for each piece
of the answer, then one `AnswerEvent` with the `Answer` (citations checked, sources, usage, context report,
timings). Errors are raised, never yielded: the HTTP layer turns one raised before the first token into a
JSON error status, and one raised later into an SSE `error` event.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, replace

import anyio
import anyio.to_thread

from backend.answers import (
    Answer,
    AnswerEvent,
    AnswerStreamEvent,
    Context,
    DroppedChunk,
    PromptBudget,
    Source,
    Timings,
    TokenEvent,
    Usage,
)
from backend.citations import CitationCheck
from backend.citations import check as check_claims
from backend.errors import ContextOverflow, InvalidRequest
from backend.llm.base import LLMClient, StreamEnd, TokenDelta
from backend.retrieval.embedders.base import off_path_query_embedding
from backend.retrieval.embedders.registry import relevance_floor
from backend.retrieval.retriever import Retrieved, Retriever
from backend.retrieval.sparse import identifier_terms

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources provided by the user. "
    "Cite the sources you use with their numbers in square brackets, like [1] or [2][3]. "
    "If the sources do not contain the answer, say that you could not find it in the documents. "
    "Do not invent facts. Answer in the language of the question."
)
NOT_FOUND_ANSWER = "I could not find anything relevant to this question in the documents of space {space!r}."
# CITATION_CHECK=drop removed every sentence of the answer.
DROPPED_ANSWER = "None of this answer's sentences is supported by the sources it was given, so it is not shown."
# Room for the chat template's role markers and separators, which per-message counts do not include.
TEMPLATE_MARGIN_TOKENS = 64
HISTORY_MESSAGE_MARGIN_TOKENS = 8  # the role markers of each earlier turn of a conversation
MAX_TOP_K = 50
log = logging.getLogger(__name__)
CITATION = re.compile(r"(?<!\w)\[(\d+(?:\s*,\s*\d+)*)\]")  # not list[0]


@dataclass
class AskRequest:
    q: str
    space_id: str
    top_k: int = 5
    max_tokens: int | None = None
    temperature: float | None = None
    mode: str | None = None  # dense | sparse | hybrid; None = SEARCH_MODE
    rerank: bool | None = None  # None = rerank when a model is configured
    # Earlier turns of a conversation ({"role": "user" | "assistant", "content"}), oldest first: shown to the
    # model between the instructions and the sources, never used for retrieval; when the window is short they
    # give way (the oldest first) before any source does. /ask sends none.
    history: list[dict] = field(default_factory=list)
    # Retrieval's query when it is not the question itself (/v1: a bounded query from the end of a long
    # message). Set, the question is also cut (its start first) to what fits the model's window rather than
    # refused: the long message is a conversation or a document pasted in, its question at the end.
    query: str | None = None


def format_source(n: int, hit: dict) -> str:
    """How a source appears in the prompt: its number, where it comes from, its text."""
    where = hit["path"] + (f", page {hit['page']}" if hit.get("page") else "")
    where += f", section {hit['heading']}" if hit.get("heading") else ""
    return f"[{n}] ({where})\n{hit['text']}"


# Right before the question: small models (Qwen2.5-1.5B) follow the system prompt's citation rule far less often
# than an instruction next to the question (measured on the tune split of eval/golden/answers.jsonl).
CITE_REMINDER = "After each sentence of your answer, write the number of the source it comes from in square brackets."


def user_message(question: str, blocks: list[str]) -> str:
    return "Sources:\n\n" + "\n\n".join(blocks) + f"\n\n{CITE_REMINDER}\n\nQuestion: {question}"


@dataclass
class Budget:
    """Which ranked chunks fit the model's window; what was dropped and why."""

    context_length: int
    max_tokens: int
    limit: int  # tokens available for the prompt
    prompt_tokens: int  # counted tokens of the prompt that will be sent (margin excluded)
    kept: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)


def prompt_limit(context_length: int, max_tokens: int) -> int:
    """Tokens the prompt may use: the window minus the answer's tokens and the chat template's margin."""
    return context_length - max_tokens - TEMPLATE_MARGIN_TOKENS


def fit_budget(fixed_tokens: int, chunk_tokens: list[int], context_length: int, max_tokens: int) -> Budget:
    """Keep the best-ranked chunks that fit in `context_length - max_tokens`, dropping the lowest-ranked first.

    `chunk_tokens` are in rank order. Nothing is truncated: a chunk either fits whole or is dropped and
    reported. Raises ContextOverflow when not even the question and instructions fit.
    """
    limit = prompt_limit(context_length, max_tokens)
    if fixed_tokens > limit:
        raise ContextOverflow(
            f"the question and instructions need {fixed_tokens} tokens but the model's context of {context_length} "
            f"leaves {max(limit, 0)} after reserving {max_tokens} for the answer; shorten the question or lower max_tokens"
        )
    budget = Budget(context_length, max_tokens, limit, fixed_tokens)
    for i, n in enumerate(chunk_tokens):
        if budget.dropped or budget.prompt_tokens + n > limit:
            budget.dropped.append(i)  # once one does not fit, every lower-ranked one goes too
        else:
            budget.kept.append(i)
            budget.prompt_tokens += n
    return budget


def byte_upper_bounds(texts: list[str]) -> list[int]:
    """An upper bound on each text's token count, free to compute: its UTF-8 length.

    Every token of a byte-level BPE or a SentencePiece model with byte fallback (Llama, Mistral, Qwen, ...)
    covers at least one byte, so no text has more tokens than bytes.
    """
    return [len(t.encode("utf-8")) for t in texts]


def fit_tail(text: str, max_bytes: int) -> str:
    """The end of `text` in at most `max_bytes` UTF-8 bytes (an upper bound on its tokens), from a line or word
    boundary; the text itself when it fits."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    tail = data[len(data) - max_bytes:].decode("utf-8", "ignore")
    for sep in ("\n", " "):
        cut = tail.find(sep)
        if 0 <= cut < len(tail) // 4:
            return tail[cut + 1:]
    return tail


def map_citations(answer: str, n_sources: int) -> tuple[str, list[int], list[int]]:
    """Check [n] citations against the sources: returns (answer with invalid ones removed, cited, invalid)."""
    cited: set[int] = set()
    invalid: list[int] = []

    def fix(match: re.Match) -> str:
        numbers = [int(x) for x in re.split(r"\s*,\s*", match.group(1))]
        good = [n for n in numbers if 1 <= n <= n_sources]
        invalid.extend(n for n in numbers if not 1 <= n <= n_sources)
        cited.update(good)
        return "[" + ", ".join(str(n) for n in good) + "]" if good else ""

    cleaned = CITATION.sub(fix, answer)
    if invalid:
        cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", cleaned)  # "text [9]." -> "text ." -> "text."
        cleaned = re.sub(r"[ \t]{2,}", " ", cleaned).strip()
    return cleaned, sorted(cited), sorted(set(invalid))


def answer_unsupported(claims: list[CitationCheck]) -> bool:
    """The grounding rule of a checked answer: it is unsupported, and so not `grounded`, when none of its sentences
    is supported (by the sources it cites, or, attributed, by one it was given) and at least one is `unsupported`
    or `uncited`. One supported sentence is enough to keep it grounded (its other sentences are still flagged);
    an answer of `no_claim` sentences alone ("I could not find this in the documents.") claims nothing and stays
    grounded."""
    statuses = {c.status for c in claims}
    return "supported" not in statuses and bool(statuses & {"unsupported", "uncited"})


def drop_unsupported(text: str, claims: list[CitationCheck]) -> tuple[str, list[CitationCheck], list[CitationCheck]]:
    """CITATION_CHECK=drop: `text` without its unsupported sentences (and list items left empty by that), the kept
    checks with their offsets moved into the new text, and the dropped ones (offsets into `text`)."""
    dropped = [c for c in claims if c.status == "unsupported"]
    if not dropped:
        return text, claims, []
    pieces, pos = [], 0
    for c in sorted(dropped, key=lambda c: c.start):
        pieces.append(text[pos:c.start])
        pos = c.end
        while pos < len(text) and text[pos] in " \t":
            pos += 1
    pieces.append(text[pos:])
    cleaned = "".join(pieces)
    cleaned = re.sub(r"(?m)^[ \t]*(?:[-*•+]|\d{1,3}[.)])[ \t]*(?:\n|\Z)", "", cleaned)  # an emptied list item
    cleaned = re.sub(r"[ \t]+(?=\n|\Z)", "", cleaned)
    cleaned = re.sub(r"\n{3,}", "\n\n", cleaned).strip()
    kept, cursor = [], 0
    for c in claims:
        if c.status == "unsupported":
            continue
        at = cleaned.find(c.sentence, cursor)
        if at >= 0:
            kept.append(replace(c, start=at, end=at + len(c.sentence)))
            cursor = at + len(c.sentence)
    return cleaned, kept, dropped


# How far under the main embedder's floor a hit of a cross-language query may be when the cross-language
# model's cosine reaches that model's own floor (both models agree, mildly). Calibrated on the tune split of
# the multilingual golden set (docs/retrieval.md#relevance-threshold): the highest e5 floor that keeps every
# answer cross-language search found there, 0.78 under e5's 0.80. USE's floor alone (either cosine enough)
# kept no more of those answers and let twice as many off-topic questions through.
CROSS_AGREEMENT_MARGIN = 0.02


def relevant_hits(question: str, hits: list[dict], min_score: float, cross_min_score: float | None = None) -> list[dict]:
    """The hits worth showing the model.

    The threshold applies to the dense cosine (`dense_score`), whatever the ranking score is (BM25 and
    fused scores have no fixed scale). A chunk below it still counts when it contains an identifier of
    the question verbatim (ERR-4521, v3.14.2, max_conn_pool): that exact match is what hybrid search is
    for, and a small embedder often scores such chunks low. BM25-only results (no cosine) all count: each
    shares at least one term with the question.

    `cross_min_score`: the cross-language model's own floor, for hits of a cross-language query (they carry
    that model's cosine, `cross_score`). e5 scores an answer in another language than the question lower
    than one in its language, so its floor alone drops answers cross-language search found; such a hit also
    counts when its `cross_score` reaches `cross_min_score` and its `dense_score` is at most
    CROSS_AGREEMENT_MARGIN under `min_score`. Either cosine alone is not enough: USE's floor is low
    (it separates related from unrelated text poorly) and lets off-topic questions through.
    """
    codes = identifier_terms(question)
    keep = []
    for hit in hits:
        cosine = hit.get("dense_score")
        cross = hit.get("cross_score")
        text = (hit.get("text") or "").lower()
        agree = (cross is not None and cross_min_score is not None and cross >= cross_min_score
                 and cosine is not None and cosine >= min_score - CROSS_AGREEMENT_MARGIN)
        if cosine is None or cosine >= min_score or agree or any(code in text for code in codes):
            keep.append(hit)
    return keep


class RagService:
    """Answers questions over one space with the configured engine (and, for /v1, plain chat with it)."""

    def __init__(self, retriever: Retriever, llm: LLMClient, settings):
        self.retriever = retriever
        self.llm = llm
        self.settings = settings
        self._retrieval_threads: anyio.CapacityLimiter | None = None

    async def _retrieve(self, query: str, request: AskRequest) -> Retrieved:
        """The retriever's search on a thread of the answers' own pool, its wait for a thread as `wait_ms`.

        Not Starlette's shared pool: its 40 threads made the 41st concurrent answer wait for a whole search
        before its own could start, and only the 40 running ones could share a batched query-embedding pass
        (measured on the H100 box at c=64: retrieval ~3.0 s per answer, of which query embedding ~1.1 s).
        One thread per admitted answer (ASK_MAX_IN_FLIGHT; 0, no limit, gives no limit here either: a limiter of
        0 tokens would block every answer): threads waiting for the embedder's next pass cost no CPU, and every
        waiting question joins that pass.
        """
        if self._retrieval_threads is None:  # created on the event loop (anyio needs one)
            self._retrieval_threads = anyio.CapacityLimiter(self.settings.ask_max_in_flight or math.inf)
        submitted = time.perf_counter()
        started: list[float] = []

        def search() -> Retrieved:
            started.append(time.perf_counter())
            return self.retriever.search(query, request.space_id, request.top_k, request.mode, request.rerank)

        retrieved = await anyio.to_thread.run_sync(search, limiter=self._retrieval_threads)
        retrieved.timings["wait_ms"] = round((started[0] - submitted) * 1000, 3)
        return retrieved

    @property
    def max_top_k(self) -> int:
        """The most chunks an answer may retrieve: MAX_TOP_K, or SEARCH_MAX_TOP_K when that is lower."""
        return min(MAX_TOP_K, self.settings.search_max_top_k)

    async def ask(self, request: AskRequest) -> AsyncGenerator[AnswerStreamEvent, None]:
        """The answer to `request`: TokenEvents, then one AnswerEvent. Errors are raised, never yielded."""
        started = time.perf_counter()
        max_tokens = request.max_tokens or self.settings.answer_max_tokens
        # The one check of an answer's top_k (/ask and /v1 both come here); /search has the retriever's own.
        if not 1 <= request.top_k <= self.max_top_k:
            raise InvalidRequest(f"top_k must be between 1 and {self.max_top_k}")

        query = request.query or request.q
        retrieved = await self._retrieve(query, request)
        retrieval_ms = (time.perf_counter() - started) * 1000
        min_score = self.settings.ask_min_score
        if min_score is None:
            min_score = relevance_floor(self.retriever.embedder.name)
        cross_model = getattr(self.retriever, "cross", None)
        cross_min = relevance_floor(cross_model.name) if cross_model is not None and retrieved.cross_language else None
        relevant = relevant_hits(query, retrieved.results, min_score, cross_min)
        context = Context(len(retrieved.results), len(retrieved.results) - len(relevant), retrieved.mode, retrieved.reranked)

        if not relevant:
            # Nothing worth showing the model: say so rather than let it answer from its own memory.
            text = NOT_FOUND_ANSWER.format(space=request.space_id)
            yield TokenEvent(text)
            timings = _timings(started, retrieval_ms, None, retrieved.timings)
            yield AnswerEvent(Answer(text, self.llm.engine, self.llm.model or None, context=context, timings=timings))
            return

        info = await self.llm.model_info()
        blocks = [format_source(i + 1, hit) for i, hit in enumerate(relevant)]
        history = list(request.history)
        limit = prompt_limit(info.context_length, max_tokens)
        question = request.q
        if request.query is not None:
            question = fit_tail(question, max(limit // 2, 0))
        fixed_text = [SYSTEM_PROMPT, *(m["content"] for m in history), user_message(question, [])]
        # Exact counts cost the engine one tokenize request per text, which competes with its token streams
        # (measured on an H100: 25 ms of TTFT at c=1, 10 % of req/s at c=16). They matter only near the window's
        # end: when the byte upper bound already fits, nothing can be dropped and no count is needed.
        counts = byte_upper_bounds(fixed_text + blocks)
        token_counts = "upper_bound"
        if sum(counts) + len(blocks) + HISTORY_MESSAGE_MARGIN_TOKENS * len(history) > limit:
            counts = await self.llm.count_tokens([{"role": "user", "content": t} for t in fixed_text + blocks])
            token_counts = "exact" if self.llm.exact_token_counts else "estimated"
        counts = [c + HISTORY_MESSAGE_MARGIN_TOKENS if 0 < i <= len(history) else c for i, c in enumerate(counts)]
        # Earlier turns give way before any source is dropped, the oldest first; a conversation starts with the user.
        while history and (sum(counts) + len(blocks) > limit or history[0]["role"] != "user"):
            history.pop(0)
            del counts[1]
        n_fixed = 2 + len(history)
        budget = fit_budget(sum(counts[:n_fixed]), [c + 1 for c in counts[n_fixed:]], info.context_length, max_tokens)
        sources = [Source.from_hit(i + 1, relevant[i]) for i in budget.kept]
        context.used = len(sources)
        context.dropped = [
            DroppedChunk(relevant[i]["doc_id"], relevant[i]["path"], relevant[i]["chunk_index"], relevant[i]["score"],
                         counts[n_fixed + i])
            for i in budget.dropped
        ]
        context.budget = PromptBudget(info.context_length, max_tokens, budget.prompt_tokens, token_counts)
        if request.history:
            context.history_sent, context.history_dropped = len(history), len(request.history) - len(history)
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            *({"role": m["role"], "content": m["content"]} for m in history),
            {"role": "user", "content": user_message(question, [blocks[i] for i in budget.kept])},
        ]

        generation = _Generation(started)
        async for token in generation.run(self.llm, messages, max_tokens, self._temperature(request.temperature)):
            yield token
        text, cited, invalid = map_citations(generation.text, len(sources))
        for source in sources:
            source.cited = source.n in cited
        answer = Answer(
            text, self.llm.engine, info.model, grounded=True, sources=sources,
            finish_reason=generation.finish_reason, usage=generation.usage, cited=cited, invalid_citations=invalid,
            context=context,
        )
        check_started = time.perf_counter()
        await self._check_claims(answer)
        answer.timings = _timings(started, retrieval_ms, generation.ttft_ms, retrieved.timings)
        if answer.claims is not None:
            answer.timings.check_ms = (time.perf_counter() - check_started) * 1000
        yield AnswerEvent(answer)

    async def _check_claims(self, answer: Answer) -> None:
        """The claim check of a finished answer (CITATION_CHECK; backend/citations/, docs/answering.md).

        `mark`: each sentence's verdict into `answer.claims`; `drop`: also the unsupported sentences out of
        `answer.text` (the tokens already streamed keep them); `off`: nothing. The sources are those the model was
        given, numbered as in its prompt. When the model cited none of them, each sentence stating facts is tried
        against every source (attribution). `grounded` follows `answer_unsupported`. The checker runs on a worker
        thread (CPU work and, for the sentences that need it, one query-side pass of the retriever's embedder);
        should it fail, the answer goes out unchecked (`claims` None) and the failure is logged.
        """
        mode = getattr(self.settings, "citation_check", "mark")
        if mode == "off" or not answer.sources:
            return
        texts = [""] * max(s.n for s in answer.sources)
        for source in answer.sources:
            texts[source.n - 1] = source.text
        try:
            claims = await anyio.to_thread.run_sync(self._run_check, answer.text, texts, not answer.cited)
        except Exception:
            log.exception("claim check failed; the answer goes out unchecked")
            return
        answer.claims = claims
        answer.grounded = not answer_unsupported(claims)
        if mode == "drop":
            text, kept, dropped = drop_unsupported(answer.text, claims)
            if dropped:
                answer.text = text or DROPPED_ANSWER
                answer.claims, answer.dropped_claims = kept, dropped
                _, answer.cited, _ = map_citations(answer.text, len(texts))
                for source in answer.sources:
                    source.cited = source.n in answer.cited

    def _run_check(self, text: str, sources: list[str], attribute: bool) -> list[CitationCheck]:
        embedder = getattr(self.retriever, "embedder", None)
        if embedder is None:
            return check_claims(text, sources, attribute=attribute)
        try:
            return check_claims(text, sources, embed=off_path_query_embedding(embedder), attribute=attribute)
        except Exception:  # the embedder failing (a worker restarting) must not cost the answer its checks
            log.warning("claim check: the embedder failed; checked without it", exc_info=True)
            return check_claims(text, sources, attribute=attribute)

    async def chat(self, messages: list[dict], max_tokens: int | None = None, temperature: float | None = None
                   ) -> AsyncGenerator[AnswerStreamEvent, None]:
        """The engine's model without retrieval (/v1's plain chat), as the same events as `ask`."""
        generation = _Generation(time.perf_counter())
        async for token in generation.run(self.llm, messages, max_tokens or self.settings.answer_max_tokens,
                                          self._temperature(temperature)):
            yield token
        yield AnswerEvent(Answer(generation.text, self.llm.engine, self.llm.model,
                                 finish_reason=generation.finish_reason, usage=generation.usage))

    def _temperature(self, requested: float | None) -> float:
        return self.settings.answer_temperature if requested is None else requested


class _Generation:
    """One run of the engine: its tokens as they come, then what it said about the end."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.parts: list[str] = []
        self.ttft_ms: float | None = None
        self.end: StreamEnd | None = None

    async def run(self, llm: LLMClient, messages: list[dict], max_tokens: int, temperature: float
                  ) -> AsyncIterator[TokenEvent]:
        async for event in llm.stream_chat(messages, max_tokens=max_tokens, temperature=temperature):
            if isinstance(event, TokenDelta):
                if self.ttft_ms is None:
                    self.ttft_ms = (time.perf_counter() - self.started) * 1000
                self.parts.append(event.text)
                yield TokenEvent(event.text)
            else:
                self.end = event

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def finish_reason(self) -> str | None:
        return self.end.finish_reason if self.end else None

    @property
    def usage(self) -> Usage | None:
        return Usage(self.end.prompt_tokens, self.end.completion_tokens) if self.end else None


def _timings(started: float, retrieval_ms: float, ttft_ms: float | None, retrieval_stages: dict) -> Timings:
    return Timings(retrieval_ms, ttft_ms, (time.perf_counter() - started) * 1000, retrieval_stages)
