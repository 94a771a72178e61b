"""A small HTTP server speaking Ollama's API, for testing the Ollama client without the Ollama daemon.

The real daemon is not run in CI (no binary, no model downloads), so this server reproduces the parts of
Ollama's documented API the client uses, with the field names the official `ollama` SDK parses:

- `GET /` ("Ollama is running"), `GET /api/version`, `GET /api/tags`;
- `POST /api/show`: `details`, `model_info` (with `<family>.context_length`), `capabilities`; 404
  `{"error": "model 'x' not found"}` for a model that is not served;
- `POST /api/chat`: NDJSON streaming (`application/x-ndjson`, one JSON object per line, a final
  `done: true` object with `done_reason`, `prompt_eval_count`, `eval_count` and durations) or one JSON
  object with `"stream": false`. Like Ollama, an error before any content is a JSON error status and an
  error after some content is an `{"error": ...}` line, then the end of the stream.

Behaviours are chosen per model (`FakeModel`), so one server can host a healthy model, a model whose stream
breaks, a slow one, and so on. Every request is recorded in `FakeOllama.requests` (method, path, JSON body),
every chat stream in `FakeOllama.streams` (bytes sent, when the server saw it closed). For the hardening
tests: a stream that never ends (`endless`), one line of N bytes that never ends (`unterminated_line_bytes`),
and `/api/show` answering raw bytes (`FakeOllama.show_body`: not JSON, `null`, ...).

    with FakeOllama({"llama3.1:8b": 131072, "flaky": FakeModel(break_after_tokens=2)}) as fake:
        client = OllamaClient(fake.url, "llama3.1:8b", ...)
        ...
        assert fake.chat_requests()[0]["options"]["num_ctx"] == 8192
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.misbehaviour import ENDLESS_TICK_S, StreamRecord, tracked, unterminated
from tests.support.threaded_server import DeliberateCut, ThreadedServer

FAKE_VERSION = "0.6.5"
NDJSON = "application/x-ndjson"
# Ollama's default context when a request sends no num_ctx (2048 up to 0.5; later versions 4096 or more,
# depending on the GPU's memory). The fake truncates prompts to it silently, as Ollama does.
DEFAULT_NUM_CTX = 2048
# How the fake counts tokens: a word is a token, and each message costs a few for the chat template.
TEMPLATE_TOKENS_PER_MESSAGE = 4
ANSWER_QUESTION_WORDS = 6  # words of the question echoed in the default answer
MODIFIED_AT = "2025-01-01T00:00:00Z"


@dataclass
class FakeModel:
    """A served model and how it misbehaves (every switch off by default)."""

    context_length: int | None = 131072  # model_info["<family>.context_length"]; None: the key is absent
    family: str = "llama"
    capabilities: tuple[str, ...] = ("completion", "tools")
    answer: str | None = None  # None: "You asked: <first words of the last user message>. Answer [1]."
    break_after_tokens: int | None = None  # cut the connection (no final chunk) after N content chunks
    error_after_tokens: int | None = None  # send {"error": error_text} after N chunks (0: a 500 status instead)
    error_text: str = "llama runner process has terminated: exit status 2"
    end_without_done: bool = False  # end the stream cleanly after the content, with no `done: true` chunk
    chat_status: int | None = None  # answer every /api/chat with this error status and {"error": error_text}
    first_chunk_delay_s: float = 0.0  # before the response starts (Ollama loading the model, evaluating the prompt)
    token_delay_s: float = 0.0  # between chunks
    cut_first_requests: int = 0  # the first N chat requests get their connection cut before any chunk
    endless: bool = False  # after the answer's chunks, more chunks forever (never `done`)
    unterminated_line_bytes: int = 0  # after the first chunk, one line of N bytes that never ends


@dataclass
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    body: Any = None  # the parsed JSON body, or None
    at: float = field(default_factory=time.monotonic)




class FakeOllama(ThreadedServer):
    """Ollama's HTTP API on a free 127.0.0.1 port, served by uvicorn in a background thread.

    `models`: name -> context length, or name -> `FakeModel`. Names without a tag get ":latest", as in
    Ollama. The switches can be changed while the server runs (`fake.models["x"].chat_status = 500`)."""

    name = "fake-ollama"

    def __init__(self, models: Mapping[str, int | None | FakeModel] | None = None, *, version: str = FAKE_VERSION) -> None:
        super().__init__()
        models = {"llama3.1:8b": FakeModel()} if models is None else models
        self.models: dict[str, FakeModel] = {
            canonical_name(name): spec if isinstance(spec, FakeModel) else FakeModel(context_length=spec)
            for name, spec in models.items()
        }
        self.version = version
        self.requests: list[RecordedRequest] = []
        self.streams: list[StreamRecord] = []  # one per streamed chat reply, in order
        self.show_body: bytes | None = None  # when set, POST /api/show answers these bytes (200, JSON type)
        self._chat_counts: Counter[str] = Counter()

    # -- lifecycle ---------------------------------------------------------------------------------------

    # -- what the tests look at ----------------------------------------------------------------------------

    def bodies(self, path: str) -> list[Any]:
        """The JSON bodies received on `path` ("/api/chat", "/api/show", ...), in order."""
        return [r.body for r in self.requests if r.path == path]

    def chat_requests(self) -> list[dict]:
        """The bodies of the /api/chat requests received (model, messages, options, keep_alive, stream)."""
        return self.bodies("/api/chat")

    def show_requests(self) -> list[dict]:
        """The bodies of the /api/show requests received."""
        return self.bodies("/api/show")

    # -- the API -----------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self._root, methods=["GET", "HEAD"]),
                Route("/api/version", self._version, methods=["GET"]),
                Route("/api/tags", self._tags, methods=["GET"]),
                Route("/api/show", self._show, methods=["POST"]),
                Route("/api/chat", self._chat, methods=["POST"]),
            ]
        )

    async def _record(self, request: Request) -> Any:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.requests.append(RecordedRequest(request.method, request.url.path, body))
        return body

    async def _root(self, request: Request) -> Response:
        await self._record(request)
        return PlainTextResponse("Ollama is running")

    async def _version(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({"version": self.version})

    async def _tags(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse(
            {
                "models": [
                    {
                        "name": name,
                        "model": name,
                        "modified_at": MODIFIED_AT,
                        "size": 4_920_753_328,
                        "digest": _digest(name),
                        "details": _details(model),
                    }
                    for name, model in self.models.items()
                ]
            }
        )

    async def _show(self, request: Request) -> Response:
        body = await self._record(request) or {}
        if self.show_body is not None:
            return Response(self.show_body, media_type="application/json")
        name = canonical_name(body.get("model") or body.get("name") or "")  # "name": older clients
        model = self.models.get(name)
        if model is None:
            return JSONResponse({"error": f"model '{body.get('model') or body.get('name')}' not found"}, status_code=404)
        model_info: dict[str, Any] = {
            "general.architecture": model.family,
            "general.parameter_count": 8_030_261_248,
            "general.file_type": 15,
            f"{model.family}.embedding_length": 4096,
            f"{model.family}.block_count": 32,
        }
        if model.context_length is not None:
            model_info[f"{model.family}.context_length"] = model.context_length
        return JSONResponse(
            {
                "license": "FAKE LICENSE",
                "modelfile": f"# Modelfile generated by \"ollama show\"\nFROM {name}\n",
                "parameters": 'stop                           "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": _details(model),
                "model_info": model_info,
                "capabilities": list(model.capabilities),
                "modified_at": MODIFIED_AT,
            }
        )

    async def _chat(self, request: Request) -> Response:
        body = await self._record(request) or {}
        requested = body.get("model") or ""
        name = canonical_name(requested)
        model = self.models.get(name)
        if model is None:
            return JSONResponse({"error": f'model "{requested}" not found, try pulling it first'}, status_code=404)
        if "completion" not in model.capabilities:
            return JSONResponse({"error": f'"{requested}" does not support chat'}, status_code=400)
        if model.chat_status is not None:
            return JSONResponse({"error": model.error_text}, status_code=model.chat_status)
        attempt = self._chat_counts[name]
        self._chat_counts[name] += 1

        options = body.get("options") or {}
        num_ctx = int(options.get("num_ctx") or DEFAULT_NUM_CTX)
        num_predict = int(options.get("num_predict") if options.get("num_predict") is not None else -1)
        messages = body.get("messages") or []
        # Ollama truncates a prompt longer than num_ctx silently (keeping the end): only the count shows it.
        prompt_tokens = min(num_ctx, sum(len(str(m.get("content", "")).split()) + TEMPLATE_TOKENS_PER_MESSAGE for m in messages))
        tokens = _tokens(model.answer if model.answer is not None else _default_answer(messages))
        done_reason = "stop"
        if 0 <= num_predict < len(tokens):
            tokens, done_reason = tokens[:num_predict], "length"

        if model.first_chunk_delay_s:
            # Ollama writes its headers with the first chunk, so a slow model delays the whole response.
            await asyncio.sleep(model.first_chunk_delay_s)
        if model.error_after_tokens == 0:
            # An error before any content: Ollama answers it as a status, not as a line.
            return JSONResponse({"error": model.error_text}, status_code=500)

        started = time.monotonic_ns()

        def chunk(content: str, **extra) -> dict:
            return {
                "model": requested,
                "created_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
                "message": {"role": "assistant", "content": content},
                "done": False,
                **extra,
            }

        def final() -> dict:
            elapsed = max(time.monotonic_ns() - started, 1)
            return chunk(
                "",
                done=True,
                done_reason=done_reason,
                total_duration=elapsed,
                load_duration=1_000_000,
                prompt_eval_count=prompt_tokens,
                prompt_eval_duration=elapsed // 2,
                eval_count=len(tokens),
                eval_duration=elapsed // 2,
            )

        if body.get("stream", True) is False:
            whole = final()
            whole["message"]["content"] = "".join(tokens)
            return JSONResponse(whole)

        async def lines() -> AsyncIterator[bytes]:
            if attempt < model.cut_first_requests:
                raise DeliberateCut(f"cut before any chunk (request {attempt + 1})")
            for i, token in enumerate(tokens):
                if model.break_after_tokens == i:
                    raise DeliberateCut(f"cut after {i} chunks")
                if model.error_after_tokens == i:
                    yield _line({"error": model.error_text})
                    return
                if i and model.token_delay_s:
                    await asyncio.sleep(model.token_delay_s)
                yield _line(chunk(token))
                if i == 0 and model.unterminated_line_bytes:
                    async for piece in unterminated(b'{"message": {"role": "assistant", "content": "', model.unterminated_line_bytes):
                        yield piece
            n = 0
            while model.endless:
                await asyncio.sleep(model.token_delay_s or ENDLESS_TICK_S)
                yield _line(chunk(f" more{n}"))
                n += 1
            if model.break_after_tokens == len(tokens):
                raise DeliberateCut("cut before the final chunk")
            if not model.end_without_done:
                yield _line(final())

        record = StreamRecord(request.url.path)
        self.streams.append(record)
        return StreamingResponse(tracked(lines(), record), media_type=NDJSON)


def canonical_name(name: str) -> str:
    """Ollama's model names: a name without a tag means ":latest"."""
    last = name.rsplit("/", 1)[-1]
    return name if not name or ":" in last else f"{name}:latest"


def _line(obj: dict) -> bytes:
    return (json.dumps(obj) + "\n").encode()


def _tokens(text: str) -> list[str]:
    """The answer as streamed: one chunk per word, spaces leading."""
    words = text.split(" ")
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def _default_answer(messages: list[dict]) -> str:
    question = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
    words = " ".join(question.split()[:ANSWER_QUESTION_WORDS]) or "nothing"
    return f"You asked: {words}. Answer [1]."


def _details(model: FakeModel) -> dict:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": model.family,
        "families": [model.family],
        "parameter_size": "8.0B",
        "quantization_level": "Q4_K_M",
    }


def _digest(name: str) -> str:
    return (name.encode().hex() * 64)[:64]
