"""Load benchmarks of answering, used by `python -m cli.bench ask | ab | raw` (and `soak`, cli.bench_soak).

    ask  closed-loop streaming load on one backend's `POST /ask` (SSE), at several concurrency levels.
    ab   the same questions against two backends (one after the other at each level), the ratio of the
         second to the first, and how far their answers agree.
    raw  the same load straight on an OpenAI-compatible engine (`POST /v1/chat/completions`, OpenAI-style
         SSE), to set the engine's own figures next to /ask's.
    record  a pass-through proxy between a backend and its engine that writes every chat request down;
    replay  those exact requests straight to the engine, with the same loop and levels: /ask's fair baseline.

Closed loop (`runner`): at a level `c`, exactly `c` requests are in flight; each worker sends its next request
as soon as its previous one ended. Every request is one `RequestResult` (client-side timestamps, tokens, error
type); `stats.summarize` turns the results of one level into the report's row, whatever endpoint produced them.

The generator runs next to the server it measures, so it is kept cheap: one event loop, one shared
`httpx.AsyncClient` pool for every request (the backend clients of `cli.client` ride on it), SSE decoded as it
arrives, and no JSON decoding of /ask's token events (the final event carries the whole answer).

    targets    Target, questions, usage checks; the errors that stop a run
    stats      RequestResult, percentile, summarize
    runner     the connection pool, run_level, run_levels
    failures   how a failed request is named in the report
    appliance  /ask: probe_backend, ask_once, ask_sender, run_ask, run_ab
    engine     raw: probe_openai, chat_once, run_raw
    recorder   record: RecordingProxy, run_record, load_prompts;  replay: run_replay
    compare    ab's ratios and answer agreement
    report     the report's frame, markdown, publish;  plots: its PNGs
    memory, ingest_check   the soak's backend memory probe and its concurrent-ingest check (cli.bench_soak)
"""

from cli.loadgen.appliance import ask_once, ask_sender, probe_backend, run_ab, run_ask
from cli.loadgen.engine import run_raw
from cli.loadgen.recorder import RecordingProxy, load_prompts, run_record
from cli.loadgen.replay import run_replay
from cli.loadgen.failures import error_type_of
from cli.loadgen.report import build_report, markdown, now, publish
from cli.loadgen.runner import DEFAULT_REQUESTS, DEFAULT_TIMEOUT_S, make_client, run_level, run_levels
from cli.loadgen.stats import RequestResult, percentile, summarize
from cli.loadgen.targets import (
    QUESTIONS, AuthRejected, Target, TargetUnreachable, UsageError, assign_keys, auth_rejected, load_questions, parse_target,
)

__all__ = [
    "DEFAULT_REQUESTS", "DEFAULT_TIMEOUT_S", "QUESTIONS", "AuthRejected", "RequestResult", "Target", "TargetUnreachable",
    "RecordingProxy", "UsageError", "ask_once", "ask_sender", "assign_keys", "auth_rejected", "build_report", "error_type_of", "load_questions",
    "make_client", "markdown", "now", "parse_target", "percentile", "probe_backend", "publish", "run_ab", "run_ask",
    "load_prompts", "run_level", "run_levels", "run_raw", "run_record", "run_replay", "summarize",
]
