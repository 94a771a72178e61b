"""The one place where the pieces meet: retrieve -> fit to the model's budget -> prompt -> stream -> cite.

`RagService.ask()` is an async generator of events: `("token", {"text"})` for each piece of the answer,
then one `("done", {...})` with the answer (citations checked), sources, usage, context report and timings.
Errors are raised, never yielded: the HTTP layer turns one raised before the first token into a JSON
error status, and one raised later into an SSE `error` event.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from starlette.concurrency import run_in_threadpool

from backend.errors import ContextOverflow, InvalidRequest
from backend.llm.base import LLMClient, StreamEnd, TokenDelta
from backend.retrieval.embedder import relevance_floor
from backend.retrieval.retriever import Retriever
from backend.retrieval.sparse import identifier_terms

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources provided by the user. "
    "Cite the sources you use with their numbers in square brackets, like [1] or [2][3]. "
    "If the sources do not contain the answer, say that you could not find it in the documents. "
    "Do not invent facts. Answer in the language of the question."
)
NOT_FOUND_ANSWER = "I could not find anything relevant to this question in the documents of space {space!r}."
# Room for the chat template's role markers and separators, which per-message counts do not include.
TEMPLATE_MARGIN_TOKENS = 64
HISTORY_MESSAGE_MARGIN_TOKENS = 8  # the role markers of each earlier turn of a conversation
MAX_TOP_K = 50
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


def format_source(n: int, hit: dict) -> str:
    """How a source appears in the prompt: its number, where it comes from, its text."""
    where = hit["path"] + (f", page {hit['page']}" if hit.get("page") else "")
    where += f", section {hit['heading']}" if hit.get("heading") else ""
    return f"[{n}] ({where})\n{hit['text']}"


def user_message(question: str, blocks: list[str]) -> str:
    return "Sources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"


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
    """Answers questions over one space with the configured engine."""

    def __init__(self, retriever: Retriever, llm: LLMClient, settings):
        self.retriever = retriever
        self.llm = llm
        self.settings = settings

    async def ask(self, request: AskRequest) -> AsyncIterator[tuple[str, dict]]:
        started = time.perf_counter()
        max_tokens = request.max_tokens or self.settings.answer_max_tokens
        temperature = self.settings.answer_temperature if request.temperature is None else request.temperature
        if not 1 <= request.top_k <= min(MAX_TOP_K, self.settings.search_max_top_k):
            raise InvalidRequest(f"top_k must be between 1 and {min(MAX_TOP_K, self.settings.search_max_top_k)}")

        retrieved = await run_in_threadpool(
            self.retriever.search, request.q, request.space_id, request.top_k, request.mode, request.rerank
        )
        retrieval_ms = (time.perf_counter() - started) * 1000
        min_score = self.settings.ask_min_score
        if min_score is None:
            min_score = relevance_floor(self.retriever.embedder.name)
        cross_model = getattr(self.retriever, "cross", None)
        cross_min = relevance_floor(cross_model.name) if cross_model is not None and retrieved.cross_language else None
        relevant = relevant_hits(request.q, retrieved.results, min_score, cross_min)
        below = len(retrieved.results) - len(relevant)
        base = {"engine": self.llm.engine, "model": self.llm.model or None}

        if not relevant:
            # Nothing worth showing the model: say so rather than let it answer from its own memory.
            answer = NOT_FOUND_ANSWER.format(space=request.space_id)
            yield "token", {"text": answer}
            yield "done", {
                **base,
                "answer": answer,
                "sources": [],
                "grounded": False,
                "usage": None,
                "citations": {"cited": [], "invalid": []},
                "context": {
                    "retrieved": len(retrieved.results), "below_min_score": below, "used": 0, "dropped": [],
                    "mode": retrieved.mode, "reranked": retrieved.reranked,
                },
                "timings": _timings(started, retrieval_ms, None, retrieved.timings),
            }
            return

        info = await self.llm.model_info()
        base["model"] = info.model
        blocks = [format_source(i + 1, hit) for i, hit in enumerate(relevant)]
        history = list(request.history)
        fixed_text = [SYSTEM_PROMPT, *(m["content"] for m in history), user_message(request.q, [])]
        # Exact counts cost the engine one tokenize request per text, which competes with its token streams
        # (measured on an H100: 25 ms of TTFT at c=1, 10 % of req/s at c=16). They matter only near the window's
        # end: when the byte upper bound already fits, nothing can be dropped and no count is needed.
        counts = byte_upper_bounds(fixed_text + blocks)
        token_counts = "upper_bound"
        limit = prompt_limit(info.context_length, max_tokens)
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
        sources = [
            {
                "n": n,
                "doc_id": hit["doc_id"],
                "path": hit["path"],
                "chunk_index": hit["chunk_index"],
                "page": hit.get("page"),
                "heading": hit.get("heading"),
                "score": hit["score"],
                "dense_score": hit.get("dense_score"),
                "cross_score": hit.get("cross_score"),
                "text": hit["text"],
            }
            for n, hit in ((i + 1, relevant[i]) for i in budget.kept)
        ]
        dropped = [
            {"doc_id": relevant[i]["doc_id"], "path": relevant[i]["path"], "chunk_index": relevant[i]["chunk_index"],
             "score": relevant[i]["score"], "tokens": counts[n_fixed + i], "reason": "context_budget"}
            for i in budget.dropped
        ]
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            *({"role": m["role"], "content": m["content"]} for m in history),
            {"role": "user", "content": user_message(request.q, [blocks[i] for i in budget.kept])},
        ]

        ttft_ms = None
        parts: list[str] = []
        end: StreamEnd | None = None
        async for event in self.llm.stream_chat(messages, max_tokens=max_tokens, temperature=temperature):
            if isinstance(event, TokenDelta):
                if ttft_ms is None:
                    ttft_ms = (time.perf_counter() - started) * 1000
                parts.append(event.text)
                yield "token", {"text": event.text}
            else:
                end = event
        answer, cited, invalid = map_citations("".join(parts), len(sources))
        for source in sources:
            source["cited"] = source["n"] in cited
        yield "done", {
            **base,
            "answer": answer,
            "sources": sources,
            "grounded": True,
            "finish_reason": end.finish_reason if end else None,
            "usage": {"prompt_tokens": end.prompt_tokens, "completion_tokens": end.completion_tokens} if end else None,
            "citations": {"cited": cited, "invalid": invalid},
            "context": {
                "retrieved": len(retrieved.results),
                "below_min_score": below,
                "mode": retrieved.mode,
                "reranked": retrieved.reranked,
                "used": len(sources),
                "dropped": dropped,
                "context_length": info.context_length,
                "max_tokens": max_tokens,
                "prompt_tokens_counted": budget.prompt_tokens,
                "token_counts": token_counts,
                **({"history": {"sent": len(history), "dropped": len(request.history) - len(history)}}
                   if request.history else {}),
            },
            "timings": _timings(started, retrieval_ms, ttft_ms, retrieved.timings),
        }


def _timings(started: float, retrieval_ms: float, ttft_ms: float | None, retrieval_stages: dict) -> dict:
    return {
        "retrieval_ms": round(retrieval_ms, 2),
        "ttft_ms": round(ttft_ms, 2) if ttft_ms is not None else None,
        "total_ms": round((time.perf_counter() - started) * 1000, 2),
        "retrieval_stages": retrieval_stages,  # the retriever's embed_ms, search_ms (and rerank_ms)
    }
