"""`raw`: the same load straight on an OpenAI-compatible engine (`POST {url}/chat/completions`, OpenAI-style
SSE ending in `data: [DONE]`), to set the engine's own figures next to /ask's. The engine is no appliance
backend: plain httpx over the run's pool, with the CLIs' one SSE decoder."""

from __future__ import annotations

import asyncio
import random
import time

import httpx

from cli.client import aiter_sse
from cli.loadgen.failures import body_error_message, body_error_type, error_type_of, reply_error_type
from cli.loadgen.report import build_report, now
from cli.loadgen.runner import make_client, run_levels
from cli.loadgen.stats import RequestResult
from cli.loadgen.targets import AUTH_STATUSES, AuthRejected, Target, TargetUnreachable, UsageError, auth_rejected, check_load_args

PROBE_TIMEOUT_S = 15.0
ENGINE_KEY_OPTION = "--api-key: the server's --api-key"

# Common English words, mostly one token each (with the leading space) in the usual LLM tokenizers: `raw` builds
# prompts of about --prompt-tokens tokens from them. The server's own count is reported (prompt_tokens_mean).
PROMPT_WORDS = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city name team "
    "minute idea kid body back parent face others level office door health person art war history party"
).split()


def synthetic_prompt(index: int, words: int) -> str:
    """About `words` tokens of random common words, different for every request: a shared prefix would be
    served from the engine's prefix cache and flatter its prompt processing."""
    rng = random.Random(index)
    return " ".join(rng.choices(PROMPT_WORDS, k=words)) + "\n\nWrite a long story that uses these words."


async def probe_openai(client: httpx.AsyncClient, target: Target, headers: dict) -> None:
    """Check the model against `GET {url}/models` (the first served when none was given) and read the engine
    from its `owned_by`; TargetUnreachable if the server does not answer, AuthRejected on a 401/403."""
    try:
        response = await client.get(f"{target.url}/models", headers=headers, timeout=PROBE_TIMEOUT_S)
        if response.status_code in AUTH_STATUSES:
            raise auth_rejected(target, response.status_code, body_error_message(response.content), ENGINE_KEY_OPTION)
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


async def chat_once(client: httpx.AsyncClient, target: Target, body: dict, index: int, headers: dict) -> RequestResult:
    """Send one streaming `POST {url}/chat/completions`; never raises but AuthRejected on a 401/403. Tokens come
    from the final usage chunk (`stream_options.include_usage`), else content chunks."""
    result = RequestResult(index, time.perf_counter())
    finished = False
    try:
        async with client.stream("POST", f"{target.url}/chat/completions", json=body, headers=headers) as response:
            if response.status_code in AUTH_STATUSES:
                raise auth_rejected(target, response.status_code, body_error_message(await response.aread()), ENGINE_KEY_OPTION)
            if response.status_code != 200:
                result.error = reply_error_type(response.status_code, body_error_type(await response.aread()))
                return result
            async for event in aiter_sse(response):
                if event.data == "[DONE]":
                    break
                chunk = event.json()
                if "error" in chunk or chunk.get("object") == "error":
                    result.error = f"sse {body_error_type(event.data) or 'error'}"
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
        result.error = error_type_of(exc)
    return result


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
        async with make_client(max(args.concurrency), args.timeout) as client:
            await probe_openai(client, target, headers)
            rows, _ = await run_levels([target], {target.name: lambda i: chat_once(client, target, body(i), i, headers)}, args)
        return rows

    started_at = now()
    rows = asyncio.run(measure())
    settings = {"prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens, "ignore_eos": args.ignore_eos}
    return build_report("raw", [target], args, settings, rows, started_at)
