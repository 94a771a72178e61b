"""`record`: a pass-through proxy between a backend and its engine that writes down every chat request it relays.

    python -m cli.bench record --upstream http://127.0.0.1:8001 --listen 127.0.0.1:8010 --out prompts.jsonl
    VLLM_BASE_URL=http://127.0.0.1:8010/v1 python -m backend ...     # a backend pointed at the proxy
    python -m cli.bench ask --url ... --concurrency 1 --requests 20 --warmup 0   # one pass over the questions

Every request is relayed as it came (method, path, query, headers, body) and its reply streamed back as it
comes, so the backend cannot tell the proxy from the engine. Each `POST .../chat/completions` body is also
appended to `--out` as one JSON line, `{"path", "body"}`, in the order the proxy received them: the exact
messages and sampling parameters the backend sent, which `replay` then sends straight to the engine.

Why a proxy rather than a hook in the backend: it records the bytes on the wire, whatever version of the
answering code produced them, and needs nothing in the answering path (no debug setting, no test-only code in
rag.py). The price is a second pass: the measured /ask runs against a backend that talks to the engine
directly, since the proxy's own relaying would be measured too (one Python event loop relaying every token).
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cli.loadgen.targets import UsageError

# Hop-by-hop headers, and those httpx or the server set again for the relayed message.
DROPPED_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
                   "proxy-connection", "te", "trailer"}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class RecordingProxy:
    """Relays everything to `upstream` (the engine's root URL, without /v1) and appends chat bodies to `out`."""

    def __init__(self, upstream: str, out: Path, timeout_s: float = 600.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.out = out
        self.recorded = 0
        self._lock = threading.Lock()
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10.0),
                                       limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    def app(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await self._http.aclose()

        return Starlette(routes=[Route("/{path:path}", self._relay, methods=METHODS)], lifespan=lifespan)

    def _record(self, path: str, body: bytes) -> None:
        try:
            parsed = json.loads(body)
        except ValueError:
            return  # not JSON: the engine will say so; nothing to replay
        with self._lock, self.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"path": path, "body": parsed}, ensure_ascii=False) + "\n")
            self.recorded += 1

    async def _relay(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        if request.method == "POST" and path.endswith("/chat/completions"):
            self._record(path, body)
        url = self.upstream + path + (f"?{request.url.query}" if request.url.query else "")
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in DROPPED_HEADERS]
        upstream = self._http.build_request(request.method, url, headers=headers, content=body)
        try:
            reply = await self._http.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            return Response(json.dumps({"error": {"type": "proxy_error", "message": f"{type(exc).__name__}: {exc}"}}),
                            status_code=502, media_type="application/json")
        reply_headers = {k: v for k, v in reply.headers.items() if k.lower() not in DROPPED_HEADERS}
        return StreamingResponse(reply.aiter_raw(), status_code=reply.status_code, headers=reply_headers,
                                 background=BackgroundTask(reply.aclose))


def parse_listen(spec: str) -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--listen is HOST:PORT, not {spec!r}")
    return host or "127.0.0.1", int(port)


def run_record(args) -> dict:
    """Serve the proxy until SIGINT/SIGTERM (uvicorn's handlers); the report says how many chat requests were written where."""
    import uvicorn

    host, port = parse_listen(args.listen)
    if not args.upstream.startswith(("http://", "https://")):
        raise UsageError("--upstream is the engine's root URL, e.g. http://127.0.0.1:8001")
    if args.out.exists() and not args.append:
        args.out.unlink()  # a fresh recording, unless asked to add to one
    args.out.parent.mkdir(parents=True, exist_ok=True)
    proxy = RecordingProxy(args.upstream.removesuffix("/v1"), args.out)
    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises the signal once it stopped, which would end this process before its report
            handlers = {s: signal.signal(s, lambda *_: setattr(self, "should_exit", True)) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in handlers.items():
                    signal.signal(s, handler)

    server = Server(uvicorn.Config(proxy.app(), host=host, port=port, log_level="warning", access_log=False, lifespan="on"))
    print(f"recording chat requests relayed from http://{host}:{port} to {proxy.upstream} into {args.out}", flush=True)
    server.run()
    print(f"recorded {proxy.recorded} chat requests into {args.out}", flush=True)
    return {"kind": "record", "upstream": proxy.upstream, "listen": f"{host}:{port}", "out": str(args.out),
            "recorded": proxy.recorded}


def load_prompts(path: Path) -> list[dict]:
    """The chat bodies of a recording, in order; UsageError when there is none."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read the prompts file: {exc}") from exc
    bodies = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)["body"]
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise TypeError("no messages")
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}:{n}: not a recorded chat request ({exc})") from exc
        bodies.append(body)
    if not bodies:
        raise UsageError(f"{path} holds no recorded chat request")
    return bodies
