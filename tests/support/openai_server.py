"""A small HTTP server speaking the parts of vLLM's OpenAI-compatible API that the appliance and the load
benchmark use, with a fixed latency per token, for tests that need an engine but not a model:

- `GET /v1/models`: the served models with vLLM's `max_model_len` and `owned_by: "vllm"`;
- `GET /metrics` (at the server root): `vllm:num_requests_waiting` = `FakeOpenAI.waiting` (admission's engine
  load); `metrics_status` other than 200 answers that status instead;
- `POST /tokenize` (vLLM's, at the server root): `{"count", "tokens", "max_model_len"}`, a word per token;
- `POST /v1/chat/completions` with `"stream": true` only: OpenAI-style SSE chunks (a first chunk with the
  role, one chunk per word, a chunk with `finish_reason`), then with `stream_options.include_usage` a chunk
  with `usage` and no choices, then `data: [DONE]`. An error before any token is a JSON error status
  (`{"error": {"message", "type", "code"}}`); an error after some is an `error` data line, then `[DONE]`.

Misbehaviours for the hardening tests (tests/integration/test_hardening_llm.py): a stream that never ends
(`endless`), one event of N bytes that never ends (`unterminated_event_bytes`), a model list that is not
JSON or not shaped like one (`FakeOpenAI.models_body`). Every chat stream is recorded in `streams`
(`StreamRecord`: bytes sent, and when the server saw it closed).

The real vLLM is tested against in tests/integration/test_ask_vllm.py; this stand-in only has to stream.

    with FakeOpenAI({"fake-vllm": FakeChatModel(token_delay_s=0.01)}) as fake:
        VllmClient(f"{fake.url}/v1", "fake-vllm")  ...
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import AsyncIterator, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.misbehaviour import ENDLESS_TICK_S, StreamRecord, tracked, unterminated
from tests.support.threaded_server import DeliberateCut, ThreadedServer

DEFAULT_ANSWER = "The answer is in the documents [1]."


@dataclass
class FakeChatModel:
    """A served model and how it behaves (every failure switch off by default)."""

    max_model_len: int = 4096
    answer: str = DEFAULT_ANSWER
    first_token_delay_s: float = 0.0  # prompt processing
    token_delay_s: float = 0.0  # between tokens
    chat_status: int | None = None  # answer every chat request with this error status
    error_after_tokens: int | None = None  # an error data line after N tokens
    break_after_tokens: int | None = None  # cut the connection (no [DONE], no final chunk) after N tokens
    endless: bool = False  # after the answer's words, more words forever (no finish_reason, no [DONE])
    unterminated_event_bytes: int = 0  # after the role chunk, one data line of N bytes that never ends
    # Other answers by prompt: the first key found in the last message's text picks its answer (a chat front
    # end's title prompt answered with the JSON it expects, tests/integration/test_openwebui.py).
    answers: dict[str, str] = field(default_factory=dict)

    def answer_to(self, messages: list) -> str:
        last = str((messages or [{}])[-1].get("content", "")) if messages else ""
        return next((answer for key, answer in self.answers.items() if key in last), self.answer)


class FakeOpenAI(ThreadedServer):
    """The API on a free 127.0.0.1 port, served by uvicorn in a background thread. `chat_requests` holds the
    bodies of the chat requests received; the models' switches can be changed while it runs."""

    name = "fake-openai"

    def __init__(self, models: Mapping[str, FakeChatModel] | None = None) -> None:
        super().__init__()
        self.models = dict(models or {"fake-vllm": FakeChatModel()})
        self.chat_requests: list[dict] = []
        self.streams: list[StreamRecord] = []  # one per chat stream, in order
        self.models_body: bytes | None = None  # when set, GET /v1/models answers these bytes (200, JSON type)
        self.waiting = 0.0  # vllm:num_requests_waiting on GET /metrics
        self.metrics_status = 200

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/tokenize", self._tokenize, methods=["POST"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )

    async def _models(self, request: Request) -> Response:
        if self.models_body is not None:
            return Response(self.models_body, media_type="application/json")
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "vllm", "root": name, "max_model_len": m.max_model_len}
            for name, m in self.models.items()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def _metrics(self, request: Request) -> Response:
        if self.metrics_status != 200:
            return Response("no metrics here", status_code=self.metrics_status)
        page = ("# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
                "# TYPE vllm:num_requests_waiting gauge\n"
                f'vllm:num_requests_waiting{{engine="0",model_name="{next(iter(self.models))}"}} {float(self.waiting)}\n'
                'vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 99.0\n')
        return Response(page, media_type="text/plain; version=0.0.4")

    async def _tokenize(self, request: Request) -> Response:
        body = await request.json()
        model = self.models.get(body.get("model") or next(iter(self.models)))
        if model is None:
            return _error(404, "NotFoundError", f"The model `{body.get('model')}` does not exist.")
        words = str(body.get("prompt", "")).split()
        return JSONResponse({"count": len(words), "tokens": list(range(len(words))), "max_model_len": model.max_model_len})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.chat_requests.append(body)
        name = body.get("model")
        model = self.models.get(name)
        if model is None:
            return _error(404, "NotFoundError", f"The model `{name}` does not exist.")
        if model.chat_status is not None:
            return _error(model.chat_status, "InternalServerError", "the engine failed")
        if not body.get("stream"):
            return _error(400, "BadRequestError", "this fake only streams")
        answer = model.answer_to(body.get("messages") or [])
        words = answer.split(" ")
        if body.get("max_tokens") is not None:
            words = words[: int(body["max_tokens"])]
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return _data({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": name, "choices": [choice]})

        async def events() -> AsyncIterator[bytes]:
            await asyncio.sleep(model.first_token_delay_s)
            yield chunk({"role": "assistant", "content": ""})
            if model.unterminated_event_bytes:
                async for piece in unterminated(b'data: {"choices": [{"delta": {"content": "', model.unterminated_event_bytes):
                    yield piece
            if model.endless:
                n = 0
                while True:
                    await asyncio.sleep(model.token_delay_s or ENDLESS_TICK_S)
                    yield chunk({"content": f" more{n}"})
                    n += 1
            for i, word in enumerate(words):
                if model.break_after_tokens == i:
                    raise DeliberateCut(f"cut after {i} tokens")
                if model.error_after_tokens == i:
                    yield _data({"error": {"message": "the engine failed mid-answer", "type": "InternalServerError", "code": 500}})
                    yield b"data: [DONE]\n\n"
                    return
                if i:
                    await asyncio.sleep(model.token_delay_s)
                yield chunk({"content": word if i == 0 else " " + word})
            yield chunk({}, "stop" if len(words) == len(answer.split(" ")) else "length")
            if include_usage:
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words), "total_tokens": prompt_tokens + len(words)}
                yield _data({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": name, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"

        record = StreamRecord(request.url.path)
        self.streams.append(record)
        return StreamingResponse(tracked(events(), record), media_type="text/event-stream")


def _data(obj: dict) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}}, status_code=status)
