"""Load benchmarks of answering, used by `python -m cli.bench ask | ab | raw`.

    ask  closed-loop streaming load on one backend's `POST /ask` (SSE), at several concurrency levels.
    ab   the same questions against two backends (one after the other at each level), the ratio of the
         second to the first, and how far their answers agree.
    raw  the same load straight on an OpenAI-compatible engine (`POST /v1/chat/completions`, OpenAI-style
         SSE), to set the engine's own figures next to /ask's.

Closed loop: at a level `c`, exactly `c` requests are in flight; each worker sends its next request as soon
as its previous one ended. Every request is one `RequestResult` (client-side timestamps, tokens, error type);
`summarize` turns the results of one level into the report's row, whatever endpoint produced them.

The generator runs next to the server it measures, so it is kept cheap: one event loop, one shared
`httpx.AsyncClient` for every request, SSE parsed line by line as it arrives, and no JSON decoding of
/ask's token events (the final event carries the whole answer).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import itertools
import json
import math
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import httpx
import numpy as np
from tqdm import tqdm

CONNECT_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 15.0
DEFAULT_TIMEOUT_S = 300.0  # longest wait for the server's next bytes, first token included
DEFAULT_REQUESTS = 40
EXIT_UNREACHABLE = 4  # as cli.ask: no server answers at the URL
EXIT_AUTH = 2  # as the other CLIs: the server refused the API key (401/403); nothing would be measured
AUTH_STATUSES = (401, 403)

# Questions answerable from this repository's README.md and docs/*.md (index them to benchmark on them).
QUESTIONS = [
    "Which port does the backend listen on by default?",
    "How do I index a folder of documents into a space?",
    "Which file types can the appliance index?",
    "What happens when a PDF has no text layer?",
    "How is the size of a chunk measured, and what is the default chunk size?",
    "What does GET /health report, and when does it answer 503?",
    "Which status code does /ask return when the LLM engine cannot be reached?",
    "How do I switch the answering engine from vLLM to Ollama?",
    "Why does the Ollama client always send num_ctx?",
    "Where is the embedded vector store kept on disk?",
    "Can the CLI index files while the backend is running on the same data directory?",
    "How do I delete a document and all its chunks?",
    "What does ASK_MIN_SCORE do?",
    "What happens to retrieved chunks that do not fit the model's context?",
    "What happens to citations of sources that do not exist?",
    "Which embedding model is used by default, and is it downloaded at run time?",
    "What does re-running the index command on an unchanged folder do?",
    "How do I upload a single file through the API?",
    "What does the error 504 llm_timeout mean and how do I fix it?",
    "How do I use a Qdrant server instead of the embedded store?",
]

# Common English words, mostly one token each (with the leading space) in the usual LLM tokenizers: `raw` builds
# prompts of about --prompt-tokens tokens from them. The server's own count is reported (prompt_tokens_mean).
PROMPT_WORDS = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city name team "
    "minute idea kid body back parent face others level office door health person art war history party"
).split()


class UsageError(ValueError):
    """The command line asks for something that cannot run (bad target, empty question file, ...)."""


class TargetUnreachable(RuntimeError):
    """A target did not answer its probe at start-up: nothing would be measured."""


class AuthRejected(RuntimeError):
    """A target answered 401/403: every further request would fail the same way, so the run stops (exit 2)."""


@dataclass
class Target:
    """A server under load: its name in the report, its base URL, and what it said it serves.

    `api_key` is sent as `Authorization: Bearer`; it is never printed nor written into a report."""

    name: str
    url: str
    engine: str | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False, compare=False)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def public(self) -> dict:
        """The target as reports show it: without its key."""
        return {k: v for k, v in asdict(self).items() if k != "api_key"}


@dataclass
class RequestResult:
    """One request as the client saw it (perf_counter seconds); `error` is None when it succeeded."""

    index: int
    started: float
    first_token: float | None = None
    ended: float | None = None
    stream_tokens: int = 0  # answer-text events received
    usage_tokens: int | None = None  # completion tokens reported by the server, when it reports them
    prompt_tokens: int | None = None
    error: str | None = None
    grounded: bool | None = None  # /ask: False when nothing relevant was found and the LLM was not called
    answer: str | None = None
    sources: frozenset[str] = field(default_factory=frozenset)  # every source given to the model (doc_id)
    cited: frozenset[str] = field(default_factory=frozenset)  # the sources the answer cites

    @property
    def output_tokens(self) -> int:
        """The server's count when it gave one (a stream event may carry several tokens), else the events."""
        return self.usage_tokens if self.usage_tokens is not None else self.stream_tokens


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100, linear interpolation); NaN for no values."""
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# -- inputs -----------------------------------------------------------------------------------------------


def parse_target(spec: str) -> Target:
    """`NAME=URL` -> Target (an argparse `type=`: its error becomes a usage error)."""
    name, sep, url = spec.partition("=")
    if not sep or not name.strip() or not url.strip().startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"a target is NAME=URL with an http(s) URL, not {spec!r}")
    return Target(name.strip(), url.strip().rstrip("/"))


def load_questions(path: Path | None) -> list[str]:
    """The built-in questions, or those of `path`: one per line, or JSON lines with a "q" key (mixing is fine)."""
    if path is None:
        return list(QUESTIONS)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read the questions file: {exc}") from exc
    questions = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                question = json.loads(line)["q"]
            except (ValueError, KeyError, TypeError) as exc:
                raise UsageError(f"{path}:{n}: a JSON line needs a \"q\" string ({exc})") from exc
            if not isinstance(question, str) or not question.strip():
                raise UsageError(f"{path}:{n}: \"q\" must be a non-empty string")
            line = question.strip()
        questions.append(line)
    if not questions:
        raise UsageError(f"{path} holds no question")
    return questions


def assign_keys(targets: list[Target], keys: list[str] | None) -> None:
    """`--api-key`: none, one for every target, or one per target in the targets' order."""
    keys = [k for k in keys or [] if k is not None]
    if len(keys) > 1 and len(keys) != len(targets):
        raise UsageError(f"--api-key takes one key for every target or one per target ({len(targets)}), not {len(keys)}")
    for n, target in enumerate(targets):
        target.api_key = (keys[n] if len(keys) > 1 else keys[0]) if keys else None


def check_load_args(args) -> None:
    """Usage checks shared by the load commands (argparse cannot express them)."""
    if any(c < 1 for c in args.concurrency):
        raise UsageError("--concurrency levels must be >= 1")
    if args.requests is not None and args.requests < 1:
        raise UsageError("--requests must be >= 1")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be > 0")
    if args.warmup < 0:
        raise UsageError("--warmup must be >= 0")


# -- one request ------------------------------------------------------------------------------------------


async def aiter_sse(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream response, as they arrive; `data` is left undecoded."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif line.startswith("event:"):
            event = line[6:].strip()
    if data:
        yield event, "\n".join(data)


def _exception_type(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection_broken"
    if isinstance(exc, httpx.HTTPError):
        return type(exc).__name__
    return "bad_response"  # a reply that does not parse as the protocol says


def _error_body_type(body: bytes) -> str | None:
    """The `type` of an error body: the appliance's {"error": {"type"}}, or vLLM's {"object": "error", "type"}."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    inner = parsed.get("error", parsed) if isinstance(parsed, dict) else None
    return str(inner["type"]) if isinstance(inner, dict) and inner.get("type") else None


async def _status_error(response: httpx.Response) -> str:
    kind = _error_body_type(await response.aread())
    return f"{response.status_code} {kind}" if kind else f"http_{response.status_code}"


def _error_message(body: bytes) -> str:
    try:
        parsed = json.loads(body)
        inner = parsed.get("error", parsed) if isinstance(parsed, dict) else {}
        return str(inner.get("message") or "") if isinstance(inner, dict) else ""
    except ValueError:
        return body.decode("utf-8", "replace")[:200]


def auth_rejected(target: Target, status: int, body: bytes, key_option: str = "--api-key or BACKEND_API_KEY") -> AuthRejected:
    """The error that stops a run on a 401/403, with the server's own message (it never echoes the key)."""
    sent = "with an API key" if target.api_key else "without an API key"
    reason = _error_message(body) or ("unauthorized" if status == 401 else "forbidden")
    return AuthRejected(f"{target.name}: {target.url} refused the request sent {sent}: HTTP {status}, {reason} ({key_option})")


async def ask_once(client: httpx.AsyncClient, target: Target, body: dict, index: int) -> RequestResult:
    """Send one streaming `POST /ask`; a failure is the result's `error`, but a 401/403 raises AuthRejected
    (a refused key is no load figure: every request would fail the same way).

    Error types: "<status> <type>" for an HTTP error (e.g. "503 llm_unavailable"), "sse <type>" for an
    `error` event after the stream started, "incomplete_stream", "timeout", "connect_error", ...
    """
    result = RequestResult(index, time.perf_counter())
    try:
        async with client.stream("POST", f"{target.url}/ask", json=body, headers=target.headers) as response:
            if response.status_code in AUTH_STATUSES:
                raise auth_rejected(target, response.status_code, await response.aread())
            if response.status_code != 200:
                result.error = await _status_error(response)
                return result
            async for event, data in aiter_sse(response):
                if event == "token":
                    if result.first_token is None:
                        result.first_token = time.perf_counter()
                    result.stream_tokens += 1
                elif event == "done":
                    result.ended = time.perf_counter()
                    _read_final_event(result, json.loads(data))
                    return result
                elif event == "error":
                    result.error = f"sse {json.loads(data)['error']['type']}"
                    return result
            result.error = "incomplete_stream"
    except AuthRejected:
        raise
    except Exception as exc:  # one bad reply is counted: it must not stop a load run
        result.error = _exception_type(exc)
    return result


def _read_final_event(result: RequestResult, final: dict) -> None:
    usage = final.get("usage") or {}
    result.usage_tokens = usage.get("completion_tokens")
    result.prompt_tokens = usage.get("prompt_tokens")
    result.grounded = final.get("grounded")
    result.answer = final.get("answer") or ""
    sources = final.get("sources") or []
    result.sources = frozenset(s.get("doc_id") or s["path"] for s in sources)
    result.cited = frozenset(s.get("doc_id") or s["path"] for s in sources if s.get("cited"))


async def chat_once(client: httpx.AsyncClient, target: Target, body: dict, index: int, headers: dict) -> RequestResult:
    """Send one streaming `POST {url}/chat/completions` (OpenAI-style SSE, `data: [DONE]` at the end); never
    raises but AuthRejected on a 401/403. Tokens come from the final usage chunk (`stream_options.include_usage`),
    else content chunks."""
    result = RequestResult(index, time.perf_counter())
    finished = False
    try:
        async with client.stream("POST", f"{target.url}/chat/completions", json=body, headers=headers) as response:
            if response.status_code in AUTH_STATUSES:
                raise auth_rejected(target, response.status_code, await response.aread(), "--api-key: the server's --api-key")
            if response.status_code != 200:
                result.error = await _status_error(response)
                return result
            async for _, data in aiter_sse(response):
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk or chunk.get("object") == "error":
                    result.error = f"sse {_error_body_type(data.encode()) or 'error'}"
                    return result
                for choice in chunk.get("choices") or ():
                    if (choice.get("delta") or {}).get("content"):
                        if result.first_token is None:
                            result.first_token = time.perf_counter()
                        result.stream_tokens += 1
                    finished = finished or bool(choice.get("finish_reason"))
                if chunk.get("usage"):
                    result.usage_tokens = chunk["usage"].get("completion_tokens")
                    result.prompt_tokens = chunk["usage"].get("prompt_tokens")
            result.ended = time.perf_counter()
            if not finished:
                result.error = "incomplete_stream"
    except AuthRejected:
        raise
    except Exception as exc:  # one bad reply is counted: it must not stop a load run
        result.error = _exception_type(exc)
    return result


# -- load and metrics -------------------------------------------------------------------------------------


Send = Callable[[int], Awaitable[RequestResult]]


async def run_level(send: Send, concurrency: int, requests: int | None, duration_s: float | None, desc: str) -> tuple[list[RequestResult], float]:
    """Closed-loop load: `concurrency` workers send requests 0, 1, 2, ... until `requests` were sent or
    `duration_s` passed (requests in flight then finish). Returns (results, wall seconds).

    An exception of `send` (AuthRejected: the key was refused) cancels the other workers and is raised."""
    results: list[RequestResult] = []
    errors = 0
    indexes = itertools.count()  # shared by the workers; safe, they only switch at awaits
    bar = tqdm(total=requests, desc=desc, unit="req", leave=False, dynamic_ncols=True)
    started = time.perf_counter()
    deadline = started + duration_s if duration_s else math.inf

    async def worker() -> None:
        nonlocal errors
        for i in indexes:
            if (requests is not None and i >= requests) or time.perf_counter() >= deadline:
                return
            result = await send(i)
            results.append(result)
            bar.update()
            if result.error:
                errors += 1
                bar.set_postfix(errors=errors, refresh=False)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None  # the first cause: the others are the same refusal, or cancellations
    finally:
        bar.close()
    return results, time.perf_counter() - started


def _ms(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 2) if values else None


def summarize(target: str, concurrency: int, results: list[RequestResult], wall_s: float) -> dict:
    """One report row from the results of one level, for any endpoint.

    req/s and output tok/s count successful requests over the level's wall time. TTFT: request sent to
    first answer token; TPOT: (last - first token) / (tokens - 1), for answers of 2+ tokens; e2e: request
    sent to end of stream. `token_source`: "usage" (server-reported completion tokens), "stream_events"
    (answer events counted), or "mixed". `answers_without_llm`: /ask answers that said nothing relevant was
    found without calling the LLM (they are fast and flatter every figure).
    """
    ok = [r for r in results if r.error is None]
    errors = Counter(r.error for r in results if r.error)
    ttft = [(r.first_token - r.started) * 1000 for r in ok if r.first_token is not None]
    tpot = [
        (r.ended - r.first_token) * 1000 / (r.output_tokens - 1)
        for r in ok
        if r.first_token is not None and r.ended is not None and r.output_tokens > 1
    ]
    e2e = [(r.ended - r.started) * 1000 for r in ok if r.ended is not None]
    sources = {"usage" if r.usage_tokens is not None else "stream_events" for r in ok}
    prompt_tokens = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    return {
        "target": target,
        "concurrency": concurrency,
        "requests": len(results),
        "errors": sum(errors.values()),
        "error_types": dict(errors),
        "wall_s": round(wall_s, 3),
        "req_s": round(len(ok) / wall_s, 3) if wall_s > 0 else None,
        "output_tok_s": round(sum(r.output_tokens for r in ok) / wall_s, 2) if wall_s > 0 else None,
        "ttft_p50_ms": _ms(ttft, 50),
        "ttft_p99_ms": _ms(ttft, 99),
        "tpot_p50_ms": _ms(tpot, 50),
        "tpot_p99_ms": _ms(tpot, 99),
        "e2e_p50_ms": _ms(e2e, 50),
        "e2e_p99_ms": _ms(e2e, 99),
        "token_source": sources.pop() if len(sources) == 1 else ("mixed" if sources else None),
        "prompt_tokens_mean": round(statistics.mean(prompt_tokens), 1) if prompt_tokens else None,
        "answers_without_llm": sum(1 for r in ok if r.grounded is False),
    }


async def run_levels(targets: list[Target], sends: dict[str, Send], args) -> tuple[list[dict], dict[tuple[str, int], list[RequestResult]]]:
    """Every concurrency level, each target in turn (never two at once); returns the rows and the results
    by (target name, level)."""
    for target in targets:  # not measured: the first requests pay for lazy set-up (connections, model info)
        for i in range(args.warmup):
            await sends[target.name](i)
    rows, results = [], {}
    requests = requests_per_level(args)
    for concurrency in args.concurrency:
        for target in targets:
            level, wall = await run_level(sends[target.name], concurrency, requests, args.duration, f"{target.name} c={concurrency}")
            results[(target.name, concurrency)] = level
            rows.append(summarize(target.name, concurrency, level, wall))
    return rows, results


def make_client(concurrency: int, timeout_s: float) -> httpx.AsyncClient:
    """One client for a whole run, with room for every request in flight: a request must never wait for a
    connection, or the pool's queue would be measured instead of the server."""
    room = concurrency + 2
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
        limits=httpx.Limits(max_connections=room, max_keepalive_connections=room),
    )


def _client(args) -> httpx.AsyncClient:
    return make_client(max(args.concurrency), args.timeout)


def requests_per_level(args) -> int | None:
    """--requests, else DEFAULT_REQUESTS, else (with --duration alone) no count limit."""
    return args.requests if args.requests is not None or args.duration else DEFAULT_REQUESTS


def _report(kind: str, targets: list[Target], args, settings: dict, rows: list[dict], started_at: str) -> dict:
    return {
        "kind": kind,
        "started_at": started_at,
        "targets": [t.public() for t in targets],
        "settings": {
            "concurrency": args.concurrency,
            "requests_per_level": requests_per_level(args),
            "duration_s": args.duration,
            "warmup": args.warmup,
            **settings,
        },
        "runs": rows,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- the appliance's /ask ---------------------------------------------------------------------------------


async def probe_backend(client: httpx.AsyncClient, target: Target, space: str | None = None) -> None:
    """Fill the target's engine and model from the backend's `GET /health`; TargetUnreachable if none answers.

    /health needs no key: with `space`, `GET /documents?space_id=` checks the key against that space too, so a
    refused key (401) or one that does not cover the space (403) stops the run (AuthRejected) before any load."""
    await _probe_health(client, target)
    if space is None:
        return
    try:
        response = await client.get(f"{target.url}/documents", params={"space_id": space}, headers=target.headers, timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise TargetUnreachable(f"{target.name}: {target.url}/documents did not answer ({type(exc).__name__}: {exc})") from exc
    if response.status_code in AUTH_STATUSES:
        raise auth_rejected(target, response.status_code, response.content)


async def _probe_health(client: httpx.AsyncClient, target: Target) -> None:
    try:
        response = await client.get(f"{target.url}/health", timeout=PROBE_TIMEOUT_S)
        llm = response.json()["components"]["llm"]
    except httpx.HTTPError as exc:
        raise TargetUnreachable(f"{target.name}: no backend answers at {target.url} ({type(exc).__name__}: {exc})") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise TargetUnreachable(f"{target.name}: {target.url}/health (HTTP {response.status_code}) is not the appliance's backend") from exc
    target.engine, target.model = llm.get("engine"), llm.get("model")
    if response.status_code != 200 or llm.get("status") != "ok":
        # Measured anyway: the failures are counted, and a degraded engine is worth seeing in figures too.
        print(f"warning: {target.name} at {target.url} is not healthy: llm {llm.get('status')} {llm.get('error') or ''}".rstrip(), file=sys.stderr)


def _ask_sender(client: httpx.AsyncClient, target: Target, questions: list[str], args) -> Send:
    def body(i: int) -> dict:
        q = {"q": questions[i % len(questions)], "space_id": args.space, "top_k": args.top_k, "stream": True}
        return q | ({"max_tokens": args.max_tokens} if args.max_tokens else {})

    return lambda i: ask_once(client, target, body(i), i)


async def _measure_backends(kind: str, targets: list[Target], questions: list[str], args) -> tuple[dict, dict]:
    started_at = _now()
    async with _client(args) as client:
        for target in targets:
            await probe_backend(client, target, args.space)
        sends = {t.name: _ask_sender(client, t, questions, args) for t in targets}
        rows, results = await run_levels(targets, sends, args)
    settings = {
        "space": args.space,
        "top_k": args.top_k,
        "max_tokens": args.max_tokens,
        "questions": len(questions),
        "questions_file": str(args.questions) if args.questions else None,
    }
    return _report(kind, targets, args, settings, rows, started_at), results


def run_ask(args) -> dict:
    """`ask`: streaming /ask on one backend at each --concurrency level; returns the report (`publish` shows it)."""
    check_load_args(args)
    questions = load_questions(args.questions)
    target = Target("backend", args.url.rstrip("/"))
    assign_keys([target], args.api_key)
    report, _ = asyncio.run(_measure_backends("ask", [target], questions, args))
    return report


def run_ab(args) -> dict:
    """`ab`: the same load on two backends, one after the other per level; the report adds ratios and answer agreement."""
    check_load_args(args)
    questions = load_questions(args.questions)
    if len(args.target) != 2:
        raise UsageError(f"ab takes exactly two --target NAME=URL, got {len(args.target)}")
    first, second = args.target
    if first.name == second.name:
        raise UsageError("the two targets need different names")
    assign_keys([first, second], args.api_key)
    report, results = asyncio.run(_measure_backends("ab", [first, second], questions, args))
    report["ratios"] = ratios(report["runs"], first.name, second.name)
    level = min(args.concurrency)  # the quietest level (1 when it was run): timeouts under load skew nothing
    report["agreement"] = {
        "concurrency": level,
        **answer_agreement(results[(first.name, level)], results[(second.name, level)], len(questions)),
    }
    return report


def ratios(rows: list[dict], first: str, second: str) -> dict:
    """Second target over first, per level, for req/s and output tok/s (None when the first is 0)."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(b / a, 3) if a and b is not None else None

    by = {(r["target"], r["concurrency"]): r for r in rows}
    levels = sorted({r["concurrency"] for r in rows})
    return {
        "of": f"{second} / {first}",
        "levels": [
            {
                "concurrency": c,
                "req_s": ratio(by[(first, c)]["req_s"], by[(second, c)]["req_s"]),
                "output_tok_s": ratio(by[(first, c)]["output_tok_s"], by[(second, c)]["output_tok_s"]),
            }
            for c in levels
        ],
    }


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a & b| / |a | b|; two empty sets agree (1.0): both answers cite nothing."""
    return len(a & b) / len(a | b) if a or b else 1.0


def answer_agreement(first: list[RequestResult], second: list[RequestResult], n_questions: int) -> dict:
    """How far two targets' answers to the same questions agree (means over the questions both answered).

    `cited_sources_jaccard`: Jaccard of the documents each answer cites; `sources_jaccard`: of the documents
    each target gave its model (differs when retrieval or the context budget differ); `answer_similarity`:
    difflib's ratio over the two answers' words (1.0 identical, 0.0 nothing in common). Request i asked
    question i % n_questions of the same list on both targets.
    """

    def by_question(results: list[RequestResult]) -> dict[int, RequestResult]:
        answered: dict[int, RequestResult] = {}
        for r in sorted(results, key=lambda r: r.index):
            if r.error is None:
                answered.setdefault(r.index % n_questions, r)  # a question asked twice: its first answer
        return answered

    a, b = by_question(first), by_question(second)
    common = sorted(a.keys() & b.keys())

    def mean(values: list[float]) -> float | None:
        return round(statistics.mean(values), 3) if values else None

    return {
        "questions_compared": len(common),
        "cited_sources_jaccard": mean([jaccard(a[q].cited, b[q].cited) for q in common]),
        "sources_jaccard": mean([jaccard(a[q].sources, b[q].sources) for q in common]),
        "answer_similarity": mean(
            [difflib.SequenceMatcher(None, (a[q].answer or "").split(), (b[q].answer or "").split(), autojunk=False).ratio() for q in common]
        ),
    }


# -- an OpenAI-compatible engine, raw ---------------------------------------------------------------------


async def probe_openai(client: httpx.AsyncClient, target: Target, headers: dict) -> None:
    """Check the model against `GET {url}/models` (the first served when none was given) and read the engine
    from its `owned_by`; TargetUnreachable if the server does not answer, AuthRejected on a 401/403."""
    try:
        response = await client.get(f"{target.url}/models", headers=headers, timeout=PROBE_TIMEOUT_S)
        if response.status_code in AUTH_STATUSES:
            raise auth_rejected(target, response.status_code, response.content, "--api-key: the server's --api-key")
        response.raise_for_status()
        served = {m["id"]: m for m in response.json()["data"]}
    except httpx.HTTPError as exc:
        raise TargetUnreachable(f"no OpenAI-compatible server answers at {target.url}/models ({type(exc).__name__}: {exc})") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise TargetUnreachable(f"{target.url}/models is not an OpenAI-compatible model list") from exc
    if not served:
        raise TargetUnreachable(f"{target.url} serves no model")
    target.model = target.model or next(iter(served))
    if target.model not in served:
        raise TargetUnreachable(f"{target.url} serves {sorted(served)}, not {target.model!r}")
    target.engine = served[target.model].get("owned_by")


def synthetic_prompt(index: int, words: int) -> str:
    """About `words` tokens of random common words, different for every request: a shared prefix would be
    served from the engine's prefix cache and flatter its prompt processing."""
    rng = random.Random(index)
    return " ".join(rng.choices(PROMPT_WORDS, k=words)) + "\n\nWrite a long story that uses these words."


def run_raw(args) -> dict:
    """`raw`: streaming chat completions straight to an OpenAI-compatible server; the report has /ask's metrics."""
    check_load_args(args)
    if args.prompt_tokens < 1 or args.max_tokens < 1:
        raise UsageError("--prompt-tokens and --max-tokens must be >= 1")
    target = Target(args.name, args.url.rstrip("/"), model=args.model, api_key=args.api_key)
    headers = target.headers

    def body(i: int) -> dict:
        chat = {
            "model": target.model,
            "messages": [{"role": "user", "content": synthetic_prompt(i, args.prompt_tokens)}],
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        return chat | ({"ignore_eos": True} if args.ignore_eos else {})  # vLLM's extension: exactly max_tokens out

    async def measure() -> list[dict]:
        async with _client(args) as client:
            await probe_openai(client, target, headers)
            rows, _ = await run_levels([target], {target.name: lambda i: chat_once(client, target, body(i), i, headers)}, args)
        return rows

    started_at = _now()
    rows = asyncio.run(measure())
    settings = {"prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens, "ignore_eos": args.ignore_eos}
    return _report("raw", [target], args, settings, rows, started_at)


# -- output -----------------------------------------------------------------------------------------------


TITLES = {
    "ask": "`POST /ask` load (streaming)",
    "ab": "A/B: `POST /ask` on two backends",
    "raw": "Raw `POST /v1/chat/completions` load (streaming)",
}


def _pair(a, b) -> str:
    return f"{'-' if a is None else a} / {'-' if b is None else b}"


def markdown(report: dict) -> str:
    """The report as markdown: targets, settings, one row per target and level, errors, ratios, agreement."""
    lines = [f"## {TITLES[report['kind']]}", "", f"Started {report['started_at']}."]
    for t in report["targets"]:
        lines.append(f"- **{t['name']}**: {t['url']} (engine {t['engine'] or '?'}, model {t['model'] or '?'})")
    lines.append(f"- settings: {', '.join(f'{k}={v}' for k, v in report['settings'].items() if v is not None)}")
    lines += [
        "",
        "| target | concurrency | requests | errors | req/s | output tok/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms | e2e p50 / p99 ms | tokens from |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['target']} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['req_s']} | {r['output_tok_s']} | "
            f"{_pair(r['ttft_p50_ms'], r['ttft_p99_ms'])} | {_pair(r['tpot_p50_ms'], r['tpot_p99_ms'])} | "
            f"{_pair(r['e2e_p50_ms'], r['e2e_p99_ms'])} | {r['token_source'] or '-'} |"
        )
    without_llm = [r for r in report["runs"] if r["answers_without_llm"]]
    if without_llm:
        lines += ["", "Answered without the LLM (nothing relevant found in the space; fast, so they flatter the figures):"]
        lines += [f"- {r['target']} c={r['concurrency']}: {r['answers_without_llm']} of {r['requests']}" for r in without_llm]
    failed = [r for r in report["runs"] if r["errors"]]
    if failed:
        lines += ["", "Errors by type:"]
        lines += [f"- {r['target']} c={r['concurrency']}: " + ", ".join(f"{k} x{v}" for k, v in r["error_types"].items()) for r in failed]
    if "ratios" in report:
        lines += ["", f"Ratios ({report['ratios']['of']}):", "", "| concurrency | req/s | output tok/s |", "|---:|---:|---:|"]
        lines += [f"| {x['concurrency']} | {x['req_s']} | {x['output_tok_s']} |" for x in report["ratios"]["levels"]]
    if "agreement" in report:
        a = report["agreement"]
        lines += [
            "",
            f"Answer agreement at concurrency {a['concurrency']} over {a['questions_compared']} questions answered by both: "
            f"cited sources Jaccard {a['cited_sources_jaccard']}, sources given to the model Jaccard {a['sources_jaccard']}, "
            f"answer text similarity {a['answer_similarity']}.",
        ]
    return "\n".join(lines) + "\n"


def write_plots(report: dict, out_dir: Path) -> list[Path]:
    """`<kind>_throughput.png` (req/s and output tok/s) and `<kind>_ttft.png` (TTFT p50 and p99) against
    concurrency, one line per target. Agg canvases: no display, no pyplot global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    levels = sorted({r["concurrency"] for r in report["runs"]})
    names = [t["name"] for t in report["targets"]]

    def series(name: str, key: str) -> list[float]:
        by = {r["concurrency"]: r[key] for r in report["runs"] if r["target"] == name}
        return [math.nan if by.get(c) is None else by[c] for c in levels]  # NaN: a gap, not a zero

    def axes_for(ax, ylabel: str) -> None:
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()

    paths = []
    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, key, label in zip(fig.subplots(1, 2), ("req_s", "output_tok_s"), ("requests/s", "output tokens/s")):
        for name in names:
            ax.plot(levels, series(name, key), marker="o", label=name)
        axes_for(ax, label)
    fig.suptitle(f"{report['kind']}: throughput")
    paths.append(out_dir / f"{report['kind']}_throughput.png")
    fig.savefig(paths[-1], dpi=100)

    fig = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name in names:
        line, = ax.plot(levels, series(name, "ttft_p50_ms"), marker="o", label=f"{name} p50")
        ax.plot(levels, series(name, "ttft_p99_ms"), marker="x", linestyle="--", color=line.get_color(), label=f"{name} p99")
    axes_for(ax, "time to first token, ms")
    fig.suptitle(f"{report['kind']}: time to first token")
    paths.append(out_dir / f"{report['kind']}_ttft.png")
    fig.savefig(paths[-1], dpi=100)
    return paths


def publish(report: dict, out_dir: Path | None) -> None:
    """Print the summary; with `out_dir`, write `<kind>.md`, `<kind>.json` and the plots there."""
    text = markdown(report)
    print("\n" + text)
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        kind = report["kind"]
        (out_dir / f"{kind}.md").write_text(text, encoding="utf-8")
        (out_dir / f"{kind}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        written = [out_dir / f"{kind}.md", out_dir / f"{kind}.json", *write_plots(report, out_dir)]
        print("written: " + ", ".join(str(p) for p in written))
