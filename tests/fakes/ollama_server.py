"""A small HTTP server that speaks Ollama's documented API, for testing the Ollama client.

The real Ollama daemon cannot run on the CI machines. This server implements what the appliance uses,
following https://github.com/ollama/ollama/blob/main/docs/api.md: `GET /api/version`, `GET /api/tags`,
`POST /api/show` (404 `{"error": "model 'x' not found"}` for an unknown model), `POST /api/chat` with NDJSON
streaming (`application/x-ndjson`, one JSON object per line, the last with `"done": true`, `done_reason`,
`prompt_eval_count`, `eval_count`). Behaviours for failure tests are switches on the instance.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from datetime import datetime, timezone

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


class FakeOllama:
    """Serves `models` (name -> context length). Switches: `break_after` (close the connection after N
    chunks), `error_after` (send an `{"error"}` line after N chunks), `first_chunk_delay_s`, `fail_status`."""

    def __init__(self, models: dict[str, int] | None = None):
        self.models = models or {"llama3.1:8b": 131072}
        self.requests: list[tuple[str, dict]] = []
        self.break_after: int | None = None
        self.error_after: int | None = None
        self.first_chunk_delay_s = 0.0
        self.fail_status: int | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[
            Route("/api/version", self._version, methods=["GET"]),
            Route("/api/tags", self._tags, methods=["GET"]),
            Route("/api/show", self._show, methods=["POST"]),
            Route("/api/chat", self._chat, methods=["POST"]),
        ])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> "FakeOllama":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake Ollama did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def chat_requests(self) -> list[dict]:
        return [body for path, body in self.requests if path == "/api/chat"]

    @staticmethod
    def _now() -> str:
        return datetime.now(timezone.utc).isoformat()

    async def _version(self, request: Request):
        return JSONResponse({"version": "0.12.0"})

    async def _tags(self, request: Request):
        return JSONResponse({"models": [
            {"name": m, "model": m, "modified_at": self._now(), "size": 4_920_000_000, "digest": "sha256:" + "0" * 64,
             "details": {"format": "gguf", "family": "llama", "parameter_size": "8.0B", "quantization_level": "Q4_K_M"}}
            for m in self.models
        ]})

    async def _show(self, request: Request):
        body = await request.json()
        self.requests.append(("/api/show", body))
        name = body.get("model") or body.get("name")
        if name not in self.models:
            return JSONResponse({"error": f"model '{name}' not found"}, status_code=404)
        return JSONResponse({
            "modelfile": f"FROM {name}", "parameters": "stop \"<|eot_id|>\"", "template": "{{ .Prompt }}",
            "details": {"format": "gguf", "family": "llama", "parameter_size": "8.0B", "quantization_level": "Q4_K_M"},
            "model_info": {"general.architecture": "llama", "llama.context_length": self.models[name], "llama.embedding_length": 4096},
            "capabilities": ["completion"], "modified_at": self._now(),
        })

    async def _chat(self, request: Request):
        body = await request.json()
        self.requests.append(("/api/chat", body))
        if self.fail_status:
            return JSONResponse({"error": "llama runner process has terminated"}, status_code=self.fail_status)
        name = body.get("model")
        if name not in self.models:
            return JSONResponse({"error": f"model '{name}' not found, try pulling it first"}, status_code=404)
        question = body["messages"][-1]["content"].split("Question:")[-1].strip()
        words = f"You asked: {question} The answer is in the sources [1].".split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]

        def line(obj: dict) -> bytes:
            return (json.dumps(obj) + "\n").encode()

        async def stream():
            if self.first_chunk_delay_s:
                await asyncio.sleep(self.first_chunk_delay_s)
            for i, piece in enumerate(pieces):
                if self.break_after is not None and i == self.break_after:
                    raise ConnectionResetError("fake Ollama drops the connection")  # uvicorn cuts the chunked body
                if self.error_after is not None and i == self.error_after:
                    yield line({"error": "an error was encountered while running the model"})
                    return
                yield line({"model": name, "created_at": self._now(), "message": {"role": "assistant", "content": piece}, "done": False})
            yield line({
                "model": name, "created_at": self._now(), "message": {"role": "assistant", "content": ""}, "done": True,
                "done_reason": "stop", "total_duration": 1_000_000, "load_duration": 1000, "prompt_eval_count": 42,
                "prompt_eval_duration": 1000, "eval_count": len(pieces), "eval_duration": 1000,
            })

        if not body.get("stream", True):
            return JSONResponse({"model": name, "created_at": self._now(), "message": {"role": "assistant", "content": "".join(pieces)},
                                 "done": True, "done_reason": "stop", "prompt_eval_count": 42, "eval_count": len(pieces)})
        return StreamingResponse(stream(), media_type="application/x-ndjson")
