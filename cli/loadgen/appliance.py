"""Load on the appliance's streaming `POST /ask`, through the backend client: `ask` (one backend) and `ab`
(two backends on the same questions, one after the other at each level)."""

from __future__ import annotations

import asyncio
import sys
import time

from backend.errors import AppError, BackendUnreachable, Forbidden, Unauthorized
from cli.client import AsyncBackendClient, ask_body
from cli.loadgen.compare import answer_agreement, ratios
from cli.loadgen.failures import error_type_of
from cli.loadgen.report import build_report, now
from cli.loadgen.runner import Send, make_client, run_levels
from cli.loadgen.stats import RequestResult
from cli.loadgen.targets import (
    Target, TargetUnreachable, UsageError, assign_keys, auth_rejected, check_load_args, load_questions,
)

PROBE_TIMEOUT_S = 15.0


async def probe_backend(backend: AsyncBackendClient, target: Target, space: str | None = None) -> None:
    """Fill the target's engine and model from the backend's `GET /health`; TargetUnreachable if none answers.

    /health needs no key: with `space`, `GET /documents?space_id=` checks the key against that space too, so a
    refused key (401) or one that does not cover the space (403) stops the run (AuthRejected) before any load."""
    await _probe_health(backend, target)
    if space is None:
        return
    try:
        await backend.documents(space, timeout=PROBE_TIMEOUT_S)
    except BackendUnreachable as exc:
        cause = exc.__cause__
        raise TargetUnreachable(f"{target.name}: {target.url}/documents did not answer ({type(cause).__name__}: {cause})") from exc
    except (Unauthorized, Forbidden) as exc:
        raise auth_rejected(target, exc.status_code, exc.message) from None
    except (AppError, ValueError, KeyError):
        pass  # any other answer: the key got through, which is all this checks


async def _probe_health(backend: AsyncBackendClient, target: Target) -> None:
    try:
        response = await backend.health(timeout=PROBE_TIMEOUT_S)
        llm = response.json()["components"]["llm"]
    except BackendUnreachable as exc:
        cause = exc.__cause__
        raise TargetUnreachable(f"{target.name}: no backend answers at {target.url} ({type(cause).__name__}: {cause})") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise TargetUnreachable(f"{target.name}: {target.url}/health (HTTP {response.status_code}) is not the appliance's backend") from exc
    target.engine, target.model = llm.get("engine"), llm.get("model")
    if response.status_code != 200 or llm.get("status") != "ok":
        # Measured anyway: the failures are counted, and a degraded engine is worth seeing in figures too.
        print(f"warning: {target.name} at {target.url} is not healthy: llm {llm.get('status')} {llm.get('error') or ''}".rstrip(), file=sys.stderr)


async def ask_once(backend: AsyncBackendClient, target: Target, body: dict, index: int) -> RequestResult:
    """Send one streaming `POST /ask`; a failure is the result's `error` (named as `failures` says), but a
    401/403 raises AuthRejected (a refused key is no load figure: every request would fail the same way).

    Token events are counted, never decoded: the final event carries the whole answer."""
    result = RequestResult(index, time.perf_counter())
    try:
        async with backend.ask(body) as events:
            async for event in events:
                if event.event == "token":
                    if result.first_token is None:
                        result.first_token = time.perf_counter()
                    result.stream_tokens += 1
                elif event.event == "done":
                    result.ended = time.perf_counter()
                    read_final_event(result, event.json())
                    return result
                elif event.event == "error":
                    result.error = f"sse {event.json()['error']['type']}"
                    return result
        result.error = "incomplete_stream"
    except (Unauthorized, Forbidden) as exc:
        raise auth_rejected(target, exc.status_code, exc.message) from None
    except Exception as exc:  # one bad reply is counted: it must not stop a load run
        result.error = error_type_of(exc)
    return result


def read_final_event(result: RequestResult, final: dict) -> None:
    """Tokens, grounding, answer and sources of /ask's `done` event, into the request's result."""
    usage = final.get("usage") or {}
    result.usage_tokens = usage.get("completion_tokens")
    result.prompt_tokens = usage.get("prompt_tokens")
    # False only for a refusal (nothing relevant, no engine asked: no finish_reason); an answer the claim check
    # found unsupported has `grounded` false too, but the engine wrote it.
    result.grounded = bool(final.get("grounded")) or "finish_reason" in final
    result.answer = final.get("answer") or ""
    sources = final.get("sources") or []
    result.sources = frozenset(s.get("doc_id") or s["path"] for s in sources)
    result.cited = frozenset(s.get("doc_id") or s["path"] for s in sources if s.get("cited"))


def ask_sender(backend: AsyncBackendClient, target: Target, questions: list[str], args) -> Send:
    """Request i asks question i % len(questions) over `args.space` (with --top-k and --max-tokens)."""
    return lambda i: ask_once(backend, target, ask_body(questions[i % len(questions)], args.space, args.top_k, args.max_tokens), i)


async def _measure_backends(kind: str, targets: list[Target], questions: list[str], args) -> tuple[dict, dict]:
    started_at = now()
    async with make_client(max(args.concurrency), args.timeout) as http:
        backends = {t.name: t.client(http) for t in targets}
        for target in targets:
            await probe_backend(backends[target.name], target, args.space)
        sends = {t.name: ask_sender(backends[t.name], t, questions, args) for t in targets}
        rows, results = await run_levels(targets, sends, args)
    settings = {
        "space": args.space,
        "top_k": args.top_k,
        "max_tokens": args.max_tokens,
        "questions": len(questions),
        "questions_file": str(args.questions) if args.questions else None,
    }
    return build_report(kind, targets, args, settings, rows, started_at), results


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
