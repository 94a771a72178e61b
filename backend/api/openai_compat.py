"""The OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`), for chat front ends and the OpenAI SDKs.

Every space is a model, `rag/<space>`: a chat completion on it answers the conversation's last user message
from that space exactly as `POST /ask` does ([n] citations, the sources in an extra `sources` field). With
OPENAI_EXPOSE_ENGINE_MODEL on, the engine's own model is listed and served too, as plain chat (no retrieval).

Errors are answered in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the status the
rest of the API uses for the same error (the route class below translates the AppError family for these
routes only; the app's own handler keeps `{"error": {"type", "message"}}` everywhere else). `code` is the
appliance's error type (`llm_unavailable`, `forbidden`, ...), or `model_not_found` for an unknown model.
docs/openai.md is the user-facing description.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import datetime
from typing import Any, AsyncIterator, Callable, Literal

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.api.answer_guard import ClientLeft, client_left_response, close, final_answer, next_event, until_disconnect, with_deadline
from backend.api.deps import GrantDep, MetricsDep, RagDep, ServicesDep
from backend.api.schemas import AskSource
from backend.auth import Grant
from backend.errors import AppError, LLMError, SpaceNotFound
from backend.observability.metrics import Metrics, record_error
from backend.rag import CITATION, MAX_TOP_K, AskRequest, RagService
from backend.domain import SPACE_PATTERN, STAGING_PREFIX
from backend.retrieval.stores.base import Filter
from backend.llm.base import StreamEnd, TokenDelta

log = logging.getLogger(__name__)

RAG_MODEL_PREFIX = "rag/"
OWNED_BY = "rag-appliance"
# Earlier turns passed to the model with a question: at most this many messages, and this many characters in
# all (newest kept). Retrieval never sees them; rag.py drops more of them when the model's window is short.
HISTORY_MAX_MESSAGES = 6
HISTORY_MAX_CHARS = 6000
SOURCES_HEADING = "\n\nSources:\n"
NO_STORE = {"Cache-Control": "no-store"}

# OpenAI's error `type` by HTTP status; the SDKs pick their exception class from the status alone.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
               413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error"}


class OpenAIError(AppError):
    """An error whose `param` and `code` OpenAI clients expect (an unknown model, an unsupported parameter)."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code, self.error_type, self.param = status, code, param


def model_not_found(model: str, why: str = "") -> OpenAIError:
    return OpenAIError(404, f"The model {model!r} does not exist{why}; GET /v1/models lists the available ones.",
                       "model_not_found", "model")


def unsupported(param: str, what: str) -> OpenAIError:
    return OpenAIError(400, f"{what} is not supported by this server", "unsupported_parameter", param)


def openai_error_body(status: int, message: str, code: str, param: str | None = None) -> dict:
    """OpenAI's error object for a status, message and the appliance's error type."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error_response(request: Request, exc: AppError) -> JSONResponse:
    if exc.status_code >= 500:
        log.warning("request failed: %s %s -> %s %s", request.method, request.url.path, exc.status_code, exc.error_type)
    record_error(request.scope, exc.error_type)
    body = openai_error_body(exc.status_code, exc.message, exc.error_type, getattr(exc, "param", None))
    return JSONResponse(body, status_code=exc.status_code, headers={**NO_STORE, **(exc.headers or {})})


class OpenAIRoute(APIRoute):
    """Answers the errors of its route (dependencies and body validation included) in OpenAI's format."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def openai_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except AppError as exc:
                return openai_error_response(request, exc)
            except RequestValidationError as exc:
                err = (exc.errors() or [{}])[0]
                param = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or None
                return openai_error_response(request, OpenAIError(400, f"{param or 'body'}: {err.get('msg', 'invalid')}",
                                                                  "invalid_request", param))
            except StarletteHTTPException as exc:  # FastAPI's own: a body that is not JSON, not UTF-8
                code = "invalid_request" if exc.status_code == 400 else "http_error"
                error = OpenAIError(exc.status_code, str(exc.detail), code)
                error.headers = getattr(exc, "headers", None)
                return openai_error_response(request, error)
            except Exception as exc:
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                return openai_error_response(request, OpenAIError(500, f"unexpected {type(exc).__name__}; see the server log",
                                                                  "internal_error"))

        return openai_errors


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)


# -- documented responses -------------------------------------------------------------------------------------
class OpenAIErrorBody(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error | authentication_error | permission_error | server_error")
    param: str | None = Field(None, description="The request field at fault, when one is.")
    code: str | None = Field(None, description="The appliance's error type (llm_unavailable, ...) or model_not_found.")


class OpenAIErrorOut(BaseModel):
    error: OpenAIErrorBody


class ModelOut(BaseModel):
    id: str = Field(description="rag/<space>, or the engine's model (OPENAI_EXPOSE_ENGINE_MODEL).")
    object: Literal["model"]
    created: int = Field(description="Unix time the space's first document was indexed (0: unknown).")
    owned_by: str = Field(description="rag-appliance for spaces, the engine's name for its model.")


class ModelListOut(BaseModel):
    object: Literal["list"]
    data: list[ModelOut]


class CompletionMessage(BaseModel):
    role: Literal["assistant"]
    content: str
    refusal: None = None


class CompletionChoice(BaseModel):
    index: int
    message: CompletionMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionOut(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[CompletionChoice]
    usage: CompletionUsage
    sources: list[AskSource] = Field(description="Extension: the sources the answer's [n] refer to (as in POST /ask).")
    rag: dict[str, Any] | None = Field(
        None, description="Extension (rag/<space> models): engine, model, grounded, citations, context, timings (as in POST /ask)."
    )


SSE_CHUNK = {"type": "string", "description": "`data: <chat.completion.chunk JSON>` lines, then `data: [DONE]`"}
ERROR_STATUSES = (400, 401, 403, 404, 500, 502, 503, 504)
V1_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": OpenAIErrorOut} for code in ERROR_STATUSES}
COMPLETION_RESPONSES: dict[int | str, dict[str, Any]] = {
    **V1_ERRORS,
    200: {"model": ChatCompletionOut, "content": {"text/event-stream": {"schema": SSE_CHUNK}},
          "description": "A chat.completion, or chat.completion.chunk Server-Sent Events when `stream` is true."},
}


# -- request bodies -------------------------------------------------------------------------------------------
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class RagOptions(BaseModel):
    """Extension (`extra_body={"rag": {...}}` in the SDK): retrieval knobs of `POST /ask` and the footer."""

    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="Chunks to retrieve.")
    mode: Literal["dense", "sparse", "hybrid"] | None = Field(None, description="Retrieval mode; default SEARCH_MODE.")
    rerank: bool | None = Field(None, description="Rerank with RERANK_MODEL; default: when one is configured.")
    sources_footer: bool = Field(True, description="Append a readable 'Sources:' list of the cited sources to the answer.")


class ChatCompletionBody(BaseModel):
    """OpenAI's chat completion request; the parameters this server cannot honour are refused (400)."""

    model_config = ConfigDict(extra="allow")  # front ends send fields of their own: ignored

    model: str = Field(..., description="`rag/<space>`, or the engine's model when OPENAI_EXPOSE_ENGINE_MODEL is on.")
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768, description="Wins over max_tokens.")
    temperature: float | None = Field(None, ge=0, le=2)
    n: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    rag: RagOptions | None = Field(None, description="Extension: retrieval knobs and the sources footer.")


def _check_supported(body: ChatCompletionBody) -> None:
    if body.n not in (None, 1):
        raise unsupported("n", "n other than 1")
    if body.tools or body.functions:
        raise unsupported("tools" if body.tools else "functions", "Tool and function calling")
    if body.tool_choice not in (None, "none", "auto") or body.function_call not in (None, "none", "auto"):
        raise unsupported("tool_choice" if body.tool_choice not in (None, "none", "auto") else "function_call", "Tool choice")
    if body.logprobs or body.top_logprobs:
        raise unsupported("logprobs" if body.logprobs else "top_logprobs", "logprobs")
    if body.response_format and body.response_format.get("type", "text") != "text":
        raise unsupported("response_format", f"response_format {body.response_format.get('type')!r}")
    if body.modalities and set(body.modalities) != {"text"} or body.audio is not None:
        raise unsupported("modalities" if body.audio is None else "audio", "Audio output")
    if body.prediction is not None:
        raise unsupported("prediction", "Predicted outputs")


def _text(message: ChatMessage, i: int) -> str:
    """A message's text; content parts other than text are refused."""
    if message.content is None or isinstance(message.content, str):
        text = message.content or ""
    else:
        texts = []
        for part in message.content:
            if part.get("type") not in ("text", "input_text") or not isinstance(part.get("text"), str):
                raise unsupported(f"messages.{i}.content", f"content part {part.get('type')!r} (only text)")
            texts.append(part["text"])
        text = "\n".join(texts)
    if any("\ud800" <= ch <= "\udfff" for ch in text):  # JSON can escape one; no engine can encode it
        raise OpenAIError(400, "the message is not valid Unicode (a lone surrogate)", "invalid_request", f"messages.{i}.content")
    return text


def _strip_for_history(text: str) -> str:
    """An earlier answer as the model sees it again: without our sources footer and its [n] citations, whose
    numbers referred to another list of sources than the next question's."""
    cut = text.rfind(SOURCES_HEADING)
    if cut >= 0 and all(re.match(r"- \[\d+\] ", line) for line in text[cut + len(SOURCES_HEADING):].strip().splitlines()):
        text = text[:cut]
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", CITATION.sub("", text)).strip()


def split_conversation(messages: list[ChatMessage]) -> tuple[str, list[dict]]:
    """The question (the last message, which must be the user's) and the earlier user/assistant turns kept
    for the model: the newest HISTORY_MAX_MESSAGES within HISTORY_MAX_CHARS. System, developer and tool
    messages are left out: a RAG model has its own instructions."""
    last = len(messages) - 1
    if messages[last].role != "user":
        raise OpenAIError(400, "the last message must be the user's question", "invalid_request", "messages")
    question = _text(messages[last], last).strip()
    history: list[dict] = []
    chars = 0
    for i in range(last - 1, -1, -1):
        message = messages[i]
        if message.role not in ("user", "assistant"):
            continue
        text = _text(message, i)
        text = _strip_for_history(text) if message.role == "assistant" else text.strip()
        if not text:
            continue
        if len(history) == HISTORY_MAX_MESSAGES or chars + len(text) > HISTORY_MAX_CHARS:
            break
        history.insert(0, {"role": message.role, "content": text})
        chars += len(text)
    # Some chat templates (Mistral's, Llama 2's) insist that roles alternate, starting with the user: merge
    # repeated roles (an answer that failed leaves two user turns in a row), drop an unanswered last question.
    turns: list[dict] = []
    for turn in history:
        if turns and turns[-1]["role"] == turn["role"]:
            turns[-1]["content"] += "\n\n" + turn["content"]
        else:
            turns.append(turn)
    while turns and turns[0]["role"] != "user":
        turns.pop(0)
    while turns and turns[-1]["role"] != "assistant":
        turns.pop()
    return question, turns


def engine_messages(messages: list[ChatMessage]) -> list[dict]:
    """The conversation as the engine gets it for plain chat (developer messages are system messages)."""
    out = []
    for i, message in enumerate(messages):
        if message.role in ("tool", "function"):
            raise unsupported(f"messages.{i}.role", f"role {message.role!r}")
        out.append({"role": "system" if message.role == "developer" else message.role, "content": _text(message, i)})
    return out


# -- models ---------------------------------------------------------------------------------------------------
def store_spaces(services) -> dict[str, int]:
    """Every space holding documents, with the time its first document was indexed (unix seconds).

    One scroll over the first chunk of every document (an indexed field), two payload fields each: the
    store's cost is one small record per document, not per chunk. Staged (half-committed) copies are skipped.
    """
    spaces: dict[str, int] = {}
    for payload in services.store.scroll(Filter(must={"chunk_index": 0}), ["space_id", "indexed_at"]):
        space = str(payload.get("space_id") or "")
        if not space or space.startswith(STAGING_PREFIX):
            continue
        try:
            created = int(datetime.fromisoformat(payload.get("indexed_at") or "").timestamp())
        except ValueError:
            created = 0
        spaces[space] = min(spaces.get(space, created), created) if created else spaces.get(space, 0)
    return spaces


async def engine_model(rag: RagService, grant: Grant) -> str | None:
    """The engine's model id when it is exposed to this caller (OPENAI_EXPOSE_ENGINE_MODEL, a key for all spaces)."""
    if not rag.settings.openai_expose_engine_model or grant.restricted:
        return None
    try:
        return (await rag.llm.model_info()).model
    except LLMError:
        return rag.llm.model or None  # the engine is down: its configured name, if any, is still the id


def _model(model_id: str, created: int, owned_by: str) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


@router.get("/models", response_model=ModelListOut, responses=V1_ERRORS)
async def list_models(services: ServicesDep, rag: RagDep, grant: GrantDep) -> JSONResponse:
    """OpenAI's model list: `rag/<space>` for every space with documents that the API key covers, then the
    engine's own model (plain chat) when OPENAI_EXPOSE_ENGINE_MODEL is on and the key covers every space."""
    spaces = await run_in_threadpool(store_spaces, services)
    data = [_model(RAG_MODEL_PREFIX + space, created, OWNED_BY) for space, created in sorted(spaces.items())
            if not grant.restricted or space in grant.spaces]
    engine = await engine_model(rag, grant)
    if engine:
        data.append(_model(engine, 0, rag.llm.engine))
    return JSONResponse({"object": "list", "data": data}, headers=NO_STORE)


@router.get("/models/{model_id:path}", response_model=ModelOut, responses=V1_ERRORS)
async def retrieve_model(model_id: str, services: ServicesDep, rag: RagDep, grant: GrantDep) -> JSONResponse:
    """One model of the list, or 404 `model_not_found`."""
    if model_id.startswith(RAG_MODEL_PREFIX):
        space = _space_of(model_id)
        grant.require(space)
        spaces = await run_in_threadpool(store_spaces, services)
        if space in spaces:
            return JSONResponse(_model(model_id, spaces[space], OWNED_BY), headers=NO_STORE)
    elif model_id == await engine_model(rag, grant):
        return JSONResponse(_model(model_id, 0, rag.llm.engine), headers=NO_STORE)
    raise model_not_found(model_id)


def _space_of(model_id: str) -> str:
    space = model_id[len(RAG_MODEL_PREFIX):]
    if not SPACE_PATTERN.fullmatch(space):
        raise model_not_found(model_id)
    return space


# -- chat completions -----------------------------------------------------------------------------------------
async def _plain_chat(rag: RagService, messages: list[dict], max_tokens: int | None, temperature: float | None
                      ) -> AsyncIterator[tuple[str, dict]]:
    """The engine's model without retrieval, as the same events as `RagService.ask`."""
    settings = rag.settings
    parts: list[str] = []
    end: StreamEnd | None = None
    async for event in rag.llm.stream_chat(
        messages, max_tokens=max_tokens or settings.answer_max_tokens,
        temperature=settings.answer_temperature if temperature is None else temperature,
    ):
        if isinstance(event, TokenDelta):
            parts.append(event.text)
            yield "token", {"text": event.text}
        else:
            end = event
    yield "done", {
        "engine": rag.llm.engine, "model": rag.llm.model, "answer": "".join(parts), "sources": [],
        "finish_reason": end.finish_reason if end else None,
        "usage": {"prompt_tokens": end.prompt_tokens, "completion_tokens": end.completion_tokens} if end else None,
    }


def sources_footer(sources: list[dict]) -> str:
    """The cited sources as a Markdown list under 'Sources:', for people reading the answer in a chat UI."""
    lines = []
    for s in sources:
        if s.get("cited"):
            where = s["path"] + (f", page {s['page']}" if s.get("page") else "") + (f" § {s['heading']}" if s.get("heading") else "")
            lines.append(f"- [{s['n']}] {where}")
    return SOURCES_HEADING + "\n".join(lines) if lines else ""


def _usage(done: dict) -> dict:
    usage = done.get("usage") or {}
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(done: dict) -> str:
    return "length" if done.get("finish_reason") == "length" else "stop"


def _rag_info(done: dict) -> dict:
    """What /ask says beyond the answer (engine, citations check, timings, context report)."""
    return {k: done[k] for k in ("engine", "model", "grounded", "citations", "context", "timings") if k in done}


class Completion:
    """The identity shared by every chunk of one answer."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def envelope(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "system_fingerprint": None}


@router.post("/chat/completions", responses=COMPLETION_RESPONSES)
async def chat_completions(body: ChatCompletionBody, rag: RagDep, grant: GrantDep, metrics: MetricsDep, request: Request) -> Response:
    """OpenAI's chat completion over a space (`rag/<space>`): the last user message is the question, answered
    as `POST /ask` answers it; earlier user/assistant turns go to the model (never to retrieval). The sources
    come in `sources` (the completion, or the stream's last chunk with a finish_reason) and, unless
    `rag.sources_footer` is false, as a 'Sources:' list at the end of the answer. As on /ask, the answer has
    ANSWER_TIMEOUT_S and a client that disconnects cancels it (backend/api/answer_guard.py)."""
    _check_supported(body)
    max_tokens = body.max_completion_tokens or body.max_tokens
    options = body.rag or RagOptions()
    if body.model.startswith(RAG_MODEL_PREFIX):
        space = _space_of(body.model)
        grant.require(space)
        question, history = split_conversation(body.messages)
        if not question:
            raise OpenAIError(400, "the last user message is empty", "invalid_request", "messages")
        events = rag.ask(AskRequest(question, space, options.top_k, max_tokens, body.temperature, options.mode,
                                    options.rerank, history=history))
        rag_answer = True
    else:
        if body.model != await engine_model(rag, grant):
            raise model_not_found(body.model)
        events = _plain_chat(rag, engine_messages(body.messages), max_tokens, body.temperature)
        rag_answer = False
    footer = options.sources_footer and rag_answer
    completion = Completion(body.model)
    events = with_deadline(events, rag.settings.answer_timeout_s)
    try:
        # Pull the first event before answering: an error up to here (unknown space, LLM down) gets its real
        # status code, in a stream as well.
        first = await until_disconnect(request, next_event(events))
    except ClientLeft:
        return client_left_response()
    except SpaceNotFound as exc:
        await events.aclose()
        raise model_not_found(body.model, f": {exc.message}") from exc
    except BaseException:
        await events.aclose()
        raise
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    if body.stream:
        chunks = _stream(completion, first, events, metrics, rag_answer, footer, include_usage)
        return StreamingResponse(chunks, media_type="text/event-stream", headers={**NO_STORE, "X-Accel-Buffering": "no"})
    try:
        done = await until_disconnect(request, final_answer(_with_first(first, events)))
    except ClientLeft:
        return client_left_response()
    finally:
        await close(events)
    if rag_answer:
        metrics.observe_answer(done)
    content = done["answer"] + (sources_footer(done["sources"]) if footer else "")
    return JSONResponse({
        **completion.envelope("chat.completion"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                     "logprobs": None, "finish_reason": _finish_reason(done)}],
        "usage": _usage(done),
        "sources": done["sources"],
        **({"rag": _rag_info(done)} if rag_answer else {}),
    }, headers=NO_STORE)


async def _with_first(first: tuple[str, dict], events: AsyncIterator[tuple[str, dict]]) -> AsyncIterator[tuple[str, dict]]:
    """The answer's events, the one already pulled (to answer errors with their status) included."""
    yield first
    async for event in events:
        yield event


def _data(payload: dict | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


async def _stream(completion: Completion, first: tuple[str, dict], events: AsyncIterator[tuple[str, dict]],
                  metrics: Metrics, rag_answer: bool, footer: bool, include_usage: bool) -> AsyncIterator[bytes]:
    """`chat.completion.chunk`s: the role, one per token, the footer, the finish_reason with `sources`, then
    (stream_options.include_usage) the usage with no choices, then `[DONE]`. A failure after the stream
    started is an `error` data line, then `[DONE]`, as OpenAI and vLLM do."""

    def chunk(delta: dict, finish_reason: str | None = None, **extra) -> bytes:
        return _data({
            **completion.envelope("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            **({"usage": None} if include_usage else {}),
            **extra,
        })

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for kind, data in _with_first(first, events):
            if kind == "token":
                if data["text"]:
                    yield chunk({"content": data["text"]})
            elif kind == "done":
                if rag_answer:
                    metrics.observe_answer(data)
                text = sources_footer(data["sources"]) if footer else ""
                if text:
                    yield chunk({"content": text})
                extra = {"sources": data["sources"], **({"rag": _rag_info(data)} if rag_answer else {})}
                yield chunk({}, _finish_reason(data), **extra)
                if include_usage:
                    yield _data({**completion.envelope("chat.completion.chunk"), "choices": [], "usage": _usage(data)})
    except AppError as exc:
        log.warning("chat completion stream failed after it started: %s", exc.error_type)
        metrics.observe_error(exc.error_type)
        yield _data(openai_error_body(exc.status_code, exc.message, exc.error_type))
    except Exception as exc:  # the status cannot change any more: say it in-band
        log.exception("chat completion stream failed")
        metrics.observe_error("internal_error")
        yield _data(openai_error_body(500, f"unexpected {type(exc).__name__}", "internal_error"))
    finally:
        await events.aclose()
    yield _data("[DONE]")
