"""Prometheus metrics of one app: HTTP traffic, time per stage, errors by type, what retrieval left out.

Every app gets its own `CollectorRegistry` (tests build many apps in one process; the global registry would
count them together). Names (docs/monitoring.md lists them with their meaning):

    rag_http_requests_total{method,route,status}       rag_http_request_duration_seconds{method,route}
    rag_http_requests_in_flight                        rag_stage_duration_seconds{stage}
    rag_errors_total{type}                             rag_empty_retrievals_total
    rag_context_chunks_dropped_total                   rag_context_tokens_dropped_total
    rag_llm_tokens_total{kind}                         rag_documents_ingested_total{status}
    rag_info{version,engine,embed_model,store}         process_* (resident memory, CPU, open fds)
    rag_embed_worker_crashes_total{role,reason}        (process-wide, like process_*: the workers are this process's)
    rag_answers_in_flight      rag_answers_queued      rag_answers_limit      rag_answers_shed_total{reason}
    rag_engine_requests_waiting                        (admission: backend/llm/admission.py)
    rag_citation_sentences_total{status}               rag_citation_check_duration_seconds
    rag_answers_ungrounded_total                       (the claim check: backend/citations/, CITATION_CHECK)

Labels never carry user input (no space ids, paths or questions): `route` is the route's template, and an
unmatched path is "unmatched", so a scanner cannot grow the series without bound.
"""

from __future__ import annotations

from typing import Any, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds. From sub-millisecond stages (a BM25 search) to long answers (a slow engine's full generation).
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Seconds of one answer's claim check: ~1 ms of CPU per sentence, plus an embedder pass when one is needed.
CHECK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
CLAIM_STATUSES = ("supported", "unsupported", "uncited", "no_claim")
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
INGEST_STAGES = ("parse", "embed", "store_write")
QUERY_STAGES = {"wait_ms": "retrieval_wait", "embed_ms": "query_embed", "search_ms": "search", "rerank_ms": "rerank"}
CONTENT_TYPE = CONTENT_TYPE_LATEST


class EmbedWorkerCrashes:
    """rag_embed_worker_crashes_total{role,reason}: embedding worker processes that died or hung (and were
    restarted), read from `embed_workers.crash_counts()` at each scrape. Both roles and reasons are always
    exported (0 until the first incident), so an alert on increase() works from the start."""

    def collect(self):
        from backend.observability.embed_workers import ROLES, crash_counts

        counts = crash_counts()
        family = CounterMetricFamily(
            "rag_embed_worker_crashes", "Embedding worker processes that died or hung on a call, by role and reason (each restarted).",
            labels=["role", "reason"],
        )
        for role in ROLES:
            for reason in ("died", "hung"):
                family.add_metric([role, reason], counts.get((role, reason), 0))
        yield family


class Metrics:
    """The app's metrics; `observe_*` take what the components already report (timings dicts, results)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.http_requests = Counter(
            "rag_http_requests", "HTTP requests answered, by route template and status.", ["method", "route", "status"], registry=r
        )
        self.http_duration = Histogram(
            "rag_http_request_duration_seconds", "Time from request to the last byte of the response (streams included).",
            ["method", "route"], buckets=HTTP_BUCKETS, registry=r,
        )
        self.in_flight = Gauge("rag_http_requests_in_flight", "Requests being served right now.", registry=r)
        self.stage = Histogram(
            "rag_stage_duration_seconds",
            "Time per stage: parse, embed, store_write (ingest); retrieval_wait, query_embed, search, rerank (retrieval); "
            "retrieval, ttft, generation, total (one /ask); admission (an answer's wait for its slot).",
            ["stage"], buckets=STAGE_BUCKETS, registry=r,
        )
        self.loop_lag = Histogram(
            "rag_event_loop_lag_seconds", "How late the event loop ran a probe that was due (loop_lag.py): the wait of "
            "every request and token for the loop.", buckets=LOOP_LAG_BUCKETS, registry=r,
        )
        self.errors = Counter("rag_errors", "Errors answered, by the type in the JSON error body.", ["type"], registry=r)
        self.empty_retrievals = Counter(
            "rag_empty_retrievals", "Questions answered 'not found' because nothing relevant was retrieved (no LLM call).", registry=r
        )
        self.chunks_dropped = Counter(
            "rag_context_chunks_dropped", "Retrieved chunks left out of prompts because the model's window was full.", registry=r
        )
        self.tokens_dropped = Counter(
            "rag_context_tokens_dropped", "Tokens of the chunks left out of prompts (window full).", registry=r
        )
        self.llm_tokens = Counter("rag_llm_tokens", "Tokens the engine reported, by kind.", ["kind"], registry=r)
        self.documents = Counter("rag_documents_ingested", "Files through the ingest pipeline, by outcome.", ["status"], registry=r)
        self.info = Gauge("rag_info", "What this backend runs.", ["version", "engine", "embed_model", "store"], registry=r)
        # Admission (backend/llm/admission.py): the answers holding a slot, those waiting for one, the limit, and
        # those shed (reason: queue_full, queue_timeout). Their wait is the stage "admission".
        self.answers_in_flight = Gauge("rag_answers_in_flight", "Answers holding a slot (ASK_MAX_IN_FLIGHT).", registry=r)
        self.answers_queued = Gauge("rag_answers_queued", "Answers waiting for a slot (at most ASK_QUEUE_SIZE).", registry=r)
        self.admission_limit = Gauge("rag_answers_limit", "ASK_MAX_IN_FLIGHT (0: no limit).", registry=r)
        self.answers_shed = Counter(
            "rag_answers_shed", "Answers refused with 503 and Retry-After, by reason: queue_full, queue_timeout.",
            ["reason"], registry=r,
        )
        for reason in ("queue_full", "queue_timeout"):
            self.answers_shed.labels(reason)  # exported from the start, so rate() and alerts see 0 rather than nothing
        self.engine_waiting = Gauge(
            "rag_engine_requests_waiting",
            "vllm:num_requests_waiting as last read by admission (ASK_ENGINE_WAITING_MAX); NaN when unknown.", registry=r,
        )
        self.engine_waiting.set(float("nan"))
        # The claim check of each answer (CITATION_CHECK mark|drop): its sentences by the checker's status, its
        # time, and the answers it found unsupported (grounded false although the engine answered).
        self.citation_sentences = Counter(
            "rag_citation_sentences", "Answer sentences checked against their sources, by status: supported, "
            "unsupported, uncited, no_claim.", ["status"], registry=r,
        )
        for status in CLAIM_STATUSES:
            self.citation_sentences.labels(status)
        self.citation_check = Histogram(
            "rag_citation_check_duration_seconds", "Time of one answer's claim check, after its last token.",
            buckets=CHECK_BUCKETS, registry=r,
        )
        self.answers_ungrounded = Counter(
            "rag_answers_ungrounded", "Answers the claim check found unsupported (grounded false; the engine answered).",
            registry=r,
        )
        r.register(EmbedWorkerCrashes())

    # -- recording ---------------------------------------------------------------------------------------
    def set_info(self, version: str, engine: str, embed_model: str, store: str) -> None:
        self.info.labels(version, engine, embed_model, store).set(1)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)

    def observe_error(self, error_type: str) -> None:
        self.errors.labels(error_type).inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage).observe(seconds)

    def observe_retrieval(self, timings: dict) -> None:
        """A `Retrieved.timings` dict (embed_ms, search_ms, rerank_ms; /ask's wait_ms for a retrieval thread)."""
        for key, stage in QUERY_STAGES.items():
            if timings.get(key) is not None:
                self.observe_stage(stage, timings[key] / 1000)

    def observe_ingest(self, status: str, timings: dict | None) -> None:
        """One file's outcome and its `parse_ms`/`embed_ms`/`store_write_ms` (absent for unchanged files)."""
        self.documents.labels(status).inc()
        for stage in INGEST_STAGES:
            ms = (timings or {}).get(f"{stage}_ms")
            if ms is not None:
                self.observe_stage(stage, ms / 1000)

    def observe_answer(self, done: dict) -> None:
        """The final event of one /ask: its timings, dropped context, token usage, or that nothing was found."""
        timings = done.get("timings") or {}
        self.observe_retrieval(timings.get("retrieval_stages") or {})
        self.observe_stage("retrieval", timings["retrieval_ms"] / 1000)
        self.observe_stage("total", timings["total_ms"] / 1000)
        if timings.get("ttft_ms") is not None:
            self.observe_stage("ttft", timings["ttft_ms"] / 1000)
            self.observe_stage("generation", (timings["total_ms"] - timings["ttft_ms"]) / 1000)
        refused = "finish_reason" not in done  # nothing relevant was found: no engine asked, no reason to stop
        if refused:
            self.empty_retrievals.inc()
        elif not done.get("grounded"):
            self.answers_ungrounded.inc()
        for claim in done.get("citations") or []:
            if claim.get("status") in CLAIM_STATUSES:
                self.citation_sentences.labels(claim["status"]).inc()
        if timings.get("check_ms") is not None:
            self.citation_check.observe(timings["check_ms"] / 1000)
        dropped = (done.get("context") or {}).get("dropped") or []
        if dropped:
            self.chunks_dropped.inc(len(dropped))
            self.tokens_dropped.inc(sum(d.get("tokens") or 0 for d in dropped))
        usage = done.get("usage") or {}
        for kind in ("prompt", "completion"):
            if usage.get(f"{kind}_tokens"):
                self.llm_tokens.labels(kind).inc(usage[f"{kind}_tokens"])

    def render(self) -> bytes:
        return generate_latest(self.registry)


def record_error(scope: Mapping[str, Any], error_type: str) -> None:
    """Count an error answered for the request of this ASGI scope (no-op for an app without metrics)."""
    app = scope.get("app")
    metrics = getattr(getattr(app, "state", None), "metrics", None)
    if metrics is not None:
        metrics.observe_error(error_type)
