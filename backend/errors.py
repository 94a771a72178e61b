"""The appliance's one error family.

    AppError
    ├── InvalidRequest (400)
    │   ├── InvalidSpace (400)
    │   ├── FileTooLarge (413)
    │   └── RequestTooLarge (413)  a JSON body over MAX_REQUEST_KB
    ├── Unauthorized (401)         no or unknown API key
    ├── Forbidden (403)            the key does not cover the space
    ├── UnsupportedFileType (415)
    ├── DocumentError (422)
    │   ├── CorruptDocument (422)
    │   ├── EmptyDocument (422)
    │   ├── DocumentTooLarge (413) past the per-file budget (chunks, inflated bytes)
    │   └── ParseTimeout (422)     parsing took longer than MAX_PARSE_S
    ├── NotFound (404)
    │   ├── DocumentNotFound (404)
    │   ├── SpaceNotFound (404)
    │   └── JobNotFound (404)      no ingestion job with this id (or not one the key may see)
    ├── StoreError (503)
    │   ├── StoreUnavailable (503)
    │   ├── StoreLocked (503)
    │   └── StorageFull (507)      too little free disk under DATA_DIR to write safely
    ├── JobQueueFull (503)         too many ingestion jobs waiting or running
    ├── IngestBusy (429)           the space already has INGEST_MAX_PER_SPACE uploads being indexed
    ├── Overloaded (503)           ASK_MAX_IN_FLIGHT answers running and ASK_QUEUE_SIZE waiting (Retry-After)
    │   └── QueueTimeout (503)     an answer waited ASK_QUEUE_TIMEOUT_S in the queue without a slot
    ├── EmbedderError (500)
    │   └── EmbedderUnavailable (503)  the embedding worker died (it is restarted) or is restarting
    ├── BackendUnreachable (503)   (CLI talking to a running backend)
    ├── ContextOverflow (400)      (the question alone does not fit the model's context)
    └── LLMError (502)
        ├── LLMUnavailable (503)   could not reach the engine (connection refused, DNS, reset before a reply)
        │   └── LLMModelNotFound (503)  the engine is up but does not serve the model (not pulled / wrong name)
        ├── LLMTimeout (504)       no answer within the timeout
        │   └── AnswerTimeout (504)    the whole answer took longer than ANSWER_TIMEOUT_S
        └── LLMBadResponse (502)   the engine answered with an error or something unusable

Third-party exceptions are translated into these at the adapter boundary (`raise ... from exc`).
The HTTP layer maps them in one handler (`backend.api.errors`), the CLI to exit codes (`EXIT_CODES`); a
client turns a reply back into its class (`from_reply`).
"""

from __future__ import annotations


class AppError(Exception):
    """Base of every error the appliance reports; carries its HTTP status and a stable type name."""

    status_code: int = 500
    error_type: str = "internal_error"
    headers: dict[str, str] | None = None  # extra response headers (WWW-Authenticate on a 401)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict:
        return {"error": {"type": self.error_type, "message": self.message}}


class InvalidRequest(AppError):
    """The request itself is malformed (bad parameter, missing field)."""

    status_code = 400
    error_type = "invalid_request"


class InvalidSpace(InvalidRequest):
    """A space id that does not match the allowed pattern."""

    error_type = "invalid_space"


class FileTooLarge(InvalidRequest):
    """The file exceeds MAX_UPLOAD_MB."""

    status_code = 413
    error_type = "file_too_large"


class RequestTooLarge(InvalidRequest):
    """A request body larger than MAX_REQUEST_KB (counted while it arrives, before it is parsed)."""

    status_code = 413
    error_type = "request_too_large"


class Unauthorized(AppError):
    """No API key, or one that API_KEYS does not list."""

    status_code = 401
    error_type = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(AppError):
    """The API key is valid but does not cover the space (or the endpoint needs a '*' key)."""

    status_code = 403
    error_type = "forbidden"


class UnsupportedFileType(AppError):
    """No parser handles this file's extension."""

    status_code = 415
    error_type = "unsupported_file_type"


class DocumentError(AppError):
    """A supported file whose content cannot be indexed."""

    status_code = 422
    error_type = "document_error"


class CorruptDocument(DocumentError):
    """The parser rejected the file (broken PDF, invalid DOCX zip, undecodable text, ...)."""

    error_type = "corrupt_document"


class EmptyDocument(DocumentError):
    """The file parsed but holds no text to index (empty file, scanned PDF without a text layer, ...)."""

    error_type = "empty_document"


class DocumentTooLarge(DocumentError):
    """The file is within MAX_UPLOAD_MB but past its budget once opened: more chunks than MAX_FILE_CHUNKS, or it
    inflates (DOCX/ZIP members, PDF streams, extracted text) past MAX_EXTRACTED_MB."""

    status_code = 413
    error_type = "document_too_large"


class ParseTimeout(DocumentError):
    """Parsing the file took longer than MAX_PARSE_S (the parse was stopped; nothing was stored)."""

    error_type = "parse_timeout"


class NotFound(AppError):
    """The addressed resource does not exist."""

    status_code = 404
    error_type = "not_found"


class DocumentNotFound(NotFound):
    """No document with this id exists."""

    error_type = "document_not_found"


class SpaceNotFound(NotFound):
    """The space holds no documents."""

    error_type = "space_not_found"


class JobNotFound(NotFound):
    """No ingestion job with this id: unknown, dropped from the last JOBS_KEPT jobs, from before a restart
    (job state lives in memory), or in a space the API key does not cover (its existence is not revealed)."""

    error_type = "job_not_found"


class StoreError(AppError):
    """The vector store failed or cannot be reached."""

    status_code = 503
    error_type = "store_unavailable"


class StoreUnavailable(StoreError):
    """The vector store could not be reached or refused the operation."""


class StoreLocked(StoreError):
    """The embedded store is open in another process (Qdrant Edge is single-process)."""

    error_type = "store_locked"


class StorageFull(StoreError):
    """Too little free disk space to write to the embedded store (checked before writing, not after failing).

    Qdrant Edge keeps its segments memory-mapped: a write that finds the disk full kills the whole process
    with SIGBUS instead of raising an error (seen here on a full tmpfs), so the space is checked first.
    """

    status_code = 507
    error_type = "storage_full"


class JobQueueFull(AppError):
    """Too many ingestion jobs are already queued or running: retry when some have finished."""

    status_code = 503
    error_type = "job_queue_full"


class IngestBusy(AppError):
    """The space already has INGEST_MAX_PER_SPACE uploads being indexed: retry after them (Retry-After)."""

    status_code = 429
    error_type = "ingest_busy"
    headers = {"Retry-After": "5"}


class Overloaded(AppError):
    """Too many answers at once: ASK_MAX_IN_FLIGHT run and ASK_QUEUE_SIZE wait already (backend/llm/admission.py).
    Shed at once, before any work, with Retry-After: 503 (the server is busy, not this client: a load balancer
    tries another replica, the OpenAI SDKs retry it after Retry-After)."""

    status_code = 503
    error_type = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class QueueTimeout(Overloaded):
    """An answer waited ASK_QUEUE_TIMEOUT_S for a slot and was shed (503, Retry-After)."""

    error_type = "queue_timeout"


class EmbedderError(AppError):
    """The embedding model could not be loaded or failed to encode."""

    status_code = 500
    error_type = "embedder_error"


class EmbedderUnavailable(EmbedderError):
    """The embedding worker process died on this input or is being restarted; the request can be retried
    (an input that kills it again is refused again, never the server)."""

    status_code = 503
    error_type = "embedder_unavailable"
    headers = {"Retry-After": "1"}


class BackendUnreachable(AppError):
    """The CLI could not reach the running backend it was told to use."""

    status_code = 503
    error_type = "backend_unreachable"


class ContextOverflow(InvalidRequest):
    """The question and prompt alone exceed the model's context window (minus the answer's tokens)."""

    error_type = "context_overflow"


class LLMError(AppError):
    """The LLM engine failed to produce an answer."""

    status_code = 502
    error_type = "llm_error"


class LLMUnavailable(LLMError):
    """The LLM engine could not be reached (connection refused, DNS failure, connection reset before a reply)."""

    status_code = 503
    error_type = "llm_unavailable"


class LLMModelNotFound(LLMUnavailable):
    """The engine is up but does not serve the configured model (not pulled in Ollama, wrong VLLM_MODEL)."""

    error_type = "llm_model_not_found"


class LLMTimeout(LLMError):
    """The engine did not answer (or stopped streaming) within the configured timeout."""

    status_code = 504
    error_type = "llm_timeout"


class AnswerTimeout(LLMTimeout):
    """The whole answer (retrieval, prompt and every token) took longer than ANSWER_TIMEOUT_S; the engine
    request was cancelled."""

    error_type = "answer_timeout"


class LLMBadResponse(LLMError):
    """The engine answered with an error status or a malformed reply."""

    status_code = 502
    error_type = "llm_bad_response"


def _types(cls: type[AppError]) -> dict[str, type[AppError]]:
    """Type name -> class over the family drawn above (subclasses elsewhere take other constructor arguments)."""
    found = {cls.error_type: cls}
    for sub in cls.__subclasses__():
        if sub.__module__ == __name__:
            found.update(_types(sub))  # after its base: a subclass that keeps the base's type name wins
    return found


def from_reply(status_code: int, error_type: str | None, message: str) -> AppError:
    """The error a backend's reply reports (`{"error": {"type", "message"}}` with its HTTP status), as the class
    of the family with that type name, so that a client sees the error the server raised (a full disk stays
    StorageFull, a refused key Unauthorized). The reply's status and type are kept on the instance; an unknown
    or missing type gives AppError (type `http_<status>` when missing; 401/403 still Unauthorized/Forbidden)."""
    by_type = _types(AppError)
    cls = by_type.get(error_type or "") or {401: Unauthorized, 403: Forbidden}.get(status_code, AppError)
    error = cls(message)
    error.status_code, error.error_type = status_code, error_type or f"http_{status_code}"
    return error


# CLI exit codes, for every CLI (cli.index_cli, cli.eval, cli.ask, cli.bench): defined here and nowhere else.
EXIT_OK = 0
EXIT_FILES_FAILED = 1  # some files failed; also any error without a code of its own
EXIT_USAGE = 2  # the command line or the settings are wrong
EXIT_AUTH = EXIT_USAGE  # the backend refused the API key (401/403): the key given must change
EXIT_STORE = 3
EXIT_UNREACHABLE = 4  # no backend (or benchmark target) answers at the URL
EXIT_EMBEDDER = 5
EXIT_LLM = 6  # the LLM failed; cli.ask: the backend answered an error instead of an answer
EXIT_CODES: dict[type[AppError], int] = {
    InvalidRequest: EXIT_USAGE,
    Unauthorized: EXIT_AUTH,
    Forbidden: EXIT_AUTH,
    StoreError: EXIT_STORE,
    BackendUnreachable: EXIT_UNREACHABLE,
    EmbedderError: EXIT_EMBEDDER,
    LLMError: EXIT_LLM,
}


def exit_code_for(error: AppError) -> int:
    """The CLI exit code for an error (most specific registered base class wins)."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_FILES_FAILED
