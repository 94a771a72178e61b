"""The /v1 routes: the model list (a model per space, and the engine's own when exposed), chat completions, legacy
completions and embeddings."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from backend.api.answer_guard import (
    ClientLeft,
    client_left_response,
    close,
    final_answer,
    next_event,
    until_disconnect,
    with_deadline,
)
from backend.api.deps import GrantDep, MetricsDep, RagDep, RuntimeDep, get_runtime
from backend.api.openai.completions import Completion, stream_chunks, with_first
from backend.api.openai.conversation import engine_messages, prompt_conversation, retrieval_query, split_conversation
from backend.api.openai.embeddings import embed
from backend.api.openai.errors import OpenAIRoute, invalid, model_not_found
from backend.api.openai.schemas import (
    COMPLETION_RESPONSES,
    V1_ERRORS,
    ChatCompletionBody,
    ChatMessage,
    CompletionBody,
    EmbeddingBody,
    EmbeddingOut,
    ModelListOut,
    ModelOut,
    RagOptions,
)
from backend.api.openai.tasks import client_task, task_answer
from backend.api.streaming import NO_STORE, STREAM_HEADERS
from backend.auth import Grant
from backend.domain import SPACE_PATTERN
from backend.errors import LLMError, SpaceNotFound
from backend.observability.metrics import Metrics
from backend.answers import AnswerStreamEvent
from backend.rag import AskRequest, RagService

RAG_MODEL_PREFIX = "rag/"
OWNED_BY = "rag-appliance"

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)


# -- models ---------------------------------------------------------------------------------------------------
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


def _space_of(model_id: str) -> str:
    space = model_id[len(RAG_MODEL_PREFIX):]
    if not SPACE_PATTERN.fullmatch(space):
        raise model_not_found(model_id)
    return space


@router.get("/models", response_model=ModelListOut, responses=V1_ERRORS)
async def list_models(runtime: RuntimeDep, rag: RagDep, grant: GrantDep) -> JSONResponse:
    """OpenAI's model list: `rag/<space>` for every space with documents that the API key covers, then the
    engine's own model (plain chat) when OPENAI_EXPOSE_ENGINE_MODEL is on and the key covers every space."""
    spaces = await run_in_threadpool(runtime.index.first_indexed)
    data = [_model(RAG_MODEL_PREFIX + space, created, OWNED_BY) for space, created in sorted(spaces.items())
            if not grant.restricted or space in (grant.spaces or ())]
    engine = await engine_model(rag, grant)
    if engine:
        data.append(_model(engine, 0, rag.llm.engine))
    return JSONResponse({"object": "list", "data": data}, headers=NO_STORE)


@router.get("/models/{model_id:path}", response_model=ModelOut, responses=V1_ERRORS)
async def retrieve_model(model_id: str, runtime: RuntimeDep, rag: RagDep, grant: GrantDep) -> JSONResponse:
    """One model of the list, or 404 `model_not_found`."""
    if model_id.startswith(RAG_MODEL_PREFIX):
        space = _space_of(model_id)
        grant.require(space)
        spaces = await run_in_threadpool(runtime.index.first_indexed)
        if space in spaces:
            return JSONResponse(_model(model_id, spaces[space], OWNED_BY), headers=NO_STORE)
    elif model_id == await engine_model(rag, grant):
        return JSONResponse(_model(model_id, 0, rag.llm.engine), headers=NO_STORE)
    raise model_not_found(model_id)


# -- chat completions -----------------------------------------------------------------------------------------
@router.post("/chat/completions", responses=COMPLETION_RESPONSES)
async def chat_completions(body: ChatCompletionBody, rag: RagDep, grant: GrantDep, metrics: MetricsDep, request: Request) -> Response:
    """OpenAI's chat completion over a space (`rag/<space>`): the last user message is the question, answered
    as `POST /ask` answers it; earlier user/assistant turns go to the model (never to retrieval). The sources
    come in `sources` (the completion, or the stream's last chunk with a finish_reason) and, unless
    `rag.sources_footer` is false, as a 'Sources:' list at the end of the answer. A front end's housekeeping
    prompt (a title, tags, follow-ups: tasks.py) is answered by the engine alone, without retrieval or sources.
    Tools are accepted and never called. As on /ask, the answer has ANSWER_TIMEOUT_S and a client that
    disconnects cancels it (backend/api/answer_guard.py)."""
    body.check_supported()
    return await _complete(body.model, body.messages, body.max_completion_tokens or body.max_tokens, body.temperature,
                           body.rag, body.stream, bool(body.stream_options and body.stream_options.include_usage),
                           False, rag, grant, metrics, request)


@router.post("/completions", responses=COMPLETION_RESPONSES)
async def completions(body: CompletionBody, rag: RagDep, grant: GrantDep, metrics: MetricsDep, request: Request) -> Response:
    """OpenAI's legacy completion (LlamaIndex's `OpenAILike` default): the prompt is the question, answered as
    a chat completion with one user message is (a prompt that is a chat written out as `user: ...` /
    `assistant:` lines is read as that chat); `text_completion` objects, streamed or not, with `sources`."""
    messages = prompt_conversation(body.the_prompt())
    return await _complete(body.model, messages, body.max_tokens, body.temperature, body.rag, body.stream,
                           bool(body.stream_options and body.stream_options.include_usage), True, rag, grant, metrics,
                           request)


async def _complete(model: str, messages: list[ChatMessage], max_tokens: int | None, temperature: float | None,
                    rag_options: RagOptions | None, stream: bool, include_usage: bool, legacy: bool, rag: RagService,
                    grant: Grant, metrics: Metrics, request: Request) -> Response:
    options = rag_options or RagOptions.model_validate({})
    events: AsyncGenerator[AnswerStreamEvent, None]
    if model.startswith(RAG_MODEL_PREFIX):
        space = _space_of(model)
        grant.require(space)
        question, history = split_conversation(messages)
        if not question:
            raise invalid("the last user message is empty", "prompt" if legacy else "messages")
        if client_task(question):
            events = await task_answer(rag, question, max_tokens, temperature)
            rag_answer = False
        else:
            events = rag.ask(AskRequest(question, space, options.top_k, max_tokens, temperature, options.mode,
                                        options.rerank, history=history, query=retrieval_query(question)))
            rag_answer = True
    else:
        if model != await engine_model(rag, grant):
            raise model_not_found(model)
        events = rag.chat(engine_messages(messages), max_tokens, temperature)
        rag_answer = False
    completion = Completion(model, rag_answer, footer=options.sources_footer and rag_answer, legacy=legacy)
    # The same admission as /ask (the runtime's one): a slot before any work, else 503 with Retry-After.
    events = with_deadline(get_runtime(request).admission.admit(events), rag.settings.answer_timeout_s)
    try:
        # Pull the first event before answering: an error up to here (unknown space, LLM down) gets its real
        # status code, in a stream as well.
        first = await until_disconnect(request, next_event(events))
    except ClientLeft:
        return client_left_response()
    except SpaceNotFound as exc:
        await events.aclose()
        raise model_not_found(model, f": {exc.message}") from exc
    except BaseException:
        await events.aclose()
        raise
    if stream:
        chunks = stream_chunks(completion, first, events, metrics, include_usage)
        return StreamingResponse(chunks, media_type="text/event-stream", headers=STREAM_HEADERS)
    try:
        answer = await until_disconnect(request, final_answer(with_first(first, events)))
    except ClientLeft:
        return client_left_response()
    finally:
        await close(events)
    return JSONResponse(completion.to_json(answer, metrics), headers=NO_STORE)


# -- embeddings -----------------------------------------------------------------------------------------------
@router.post("/embeddings", response_model=EmbeddingOut, responses=V1_ERRORS)
async def embeddings(body: EmbeddingBody, runtime: RuntimeDep, grant: GrantDep) -> JSONResponse:
    """OpenAI's embeddings from the appliance's own embedder (EMBED_MODEL), for clients doing their own
    retrieval: `model` is the embedder's name or a `rag/<space>` the key covers; at most
    OPENAI_EMBEDDINGS_MAX_INPUTS inputs, each within the embedder's token limit (400 otherwise)."""
    if body.model.startswith(RAG_MODEL_PREFIX):
        grant.require(_space_of(body.model))
    elif body.model != runtime.embedder.name:
        raise model_not_found(body.model, f" (the embedder here is {runtime.embedder.name!r})")
    return JSONResponse(await embed(runtime.embedder, body, runtime.settings.openai_embeddings_max_inputs),
                        headers=NO_STORE)
