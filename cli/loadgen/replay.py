"""`replay`: the chat requests a backend sent its engine (recorded by `record`), sent straight to the engine with
the same closed loop, client and levels as `ask`: the fair baseline of /ask's figures.

Request i of a level sends recorded body i % N, as `ask` sends question i % N: a recording made by one pass of
`ask` over its questions at concurrency 1 (`--requests` = the number of questions, `--warmup 0`) pairs every
replayed request with the /ask request of the same index, so both sides send the engine the same prompts in
the same order (prefix-cache hits included), with the same sampling parameters and `max_tokens`. Only the
streaming options are forced (`stream`, `stream_options.include_usage`: the client reads tokens from usage).
"""

from __future__ import annotations

import asyncio

from cli.loadgen.engine import chat_once, probe_openai
from cli.loadgen.recorder import load_prompts
from cli.loadgen.report import build_report, now
from cli.loadgen.runner import make_client, run_levels
from cli.loadgen.targets import Target, UsageError, check_load_args


def replay_body(recorded: dict, model: str | None, max_tokens: int | None, ignore_eos: bool) -> dict:
    """A recorded body as the replay sends it: streamed with usage; `model`, `max_tokens`, `ignore_eos` when given."""
    body = {**recorded, "stream": True, "stream_options": {"include_usage": True}}
    if model:
        body["model"] = model
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
        body.pop("max_completion_tokens", None)
    if ignore_eos:
        body["ignore_eos"] = True
    return body


def run_replay(args) -> dict:
    """`replay`: recorded chat requests straight to an OpenAI-compatible engine; the report has /ask's metrics."""
    check_load_args(args)
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UsageError("--max-tokens must be >= 1")
    prompts = load_prompts(args.prompts)
    target = Target(args.name, args.url.rstrip("/"), model=args.model, api_key=args.api_key)
    headers = target.headers
    bodies = [replay_body(p, args.model, args.max_tokens, args.ignore_eos) for p in prompts]

    async def measure() -> list[dict]:
        async with make_client(max(args.concurrency), args.timeout) as client:
            await probe_openai(client, target, headers)
            if not args.model:  # the recorded model is the one to serve; report it, not the first listed
                target.model = bodies[0].get("model") or target.model
            send = lambda i: chat_once(client, target, bodies[i % len(bodies)], i, headers)  # noqa: E731
            rows, _ = await run_levels([target], {target.name: send}, args)
        return rows

    started_at = now()
    rows = asyncio.run(measure())
    settings = {
        "prompts_file": str(args.prompts),
        "prompts": len(bodies),
        "max_tokens": sorted({b.get("max_tokens") for b in bodies}, key=str),
        "temperature": sorted({b.get("temperature") for b in bodies}, key=str),
        "ignore_eos": args.ignore_eos,
    }
    return build_report("replay", [target], args, settings, rows, started_at)
