"""The CLIs' one client for a running backend's HTTP API, and their one Server-Sent Events decoder.

    BackendClient       sync (httpx.Client): cli.index_cli, cli.ask, cli.eval --url
    AsyncBackendClient  async (httpx.AsyncClient): the load generator (cli.loadgen) and the soak run
    SseDecoder          bytes of any text/event-stream body -> SseEvent(event, data); linear in the bytes
                        whatever the chunking (backend.llm.wire.SseEvents splits), each event bounded

Both clients build requests the same way (base URL + path, `Authorization: Bearer` from BACKEND_API_KEY) and
translate failures the same way: a reply with an error status becomes the AppError of its `error.type`
(`backend.errors.from_reply`: status, type and message as the backend raised them), and a request that got no
reply becomes BackendUnreachable (`raise ... from` the httpx error, which stays readable as `__cause__`).
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import AsyncIterable, AsyncIterator, Iterable, Iterator, NamedTuple

import httpx

from backend.errors import AppError, BackendUnreachable, from_reply
from backend.llm.wire import SseEvents
from backend.settings import Settings

# Uploads of large batches take a while on slow links: allow minutes, but fail fast when nobody listens.
CONNECT_TIMEOUT_S = 5.0
UPLOAD_TIMEOUT_S = 900.0
# Longest silence while an answer streams (retrieval, the prompt and the first token included).
ANSWER_TIMEOUT_S = 600.0
# A job's event stream sends a keepalive every 15 s: silence for this long means the connection is gone.
EVENTS_READ_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.5
# The largest Server-Sent Event accepted from the backend: a job's final event lists every file of the job
# (a few hundred bytes each), so this is thousands of files; past it the stream is dropped (ReplyTooLarge).
MAX_SSE_EVENT_BYTES = 16 << 20
# Headers of an error reply that the error keeps (AppError.headers).
REPLY_HEADERS = ("Retry-After", "WWW-Authenticate")


class UploadCut(Exception):
    """The connection broke while the request was being sent (a backend refusing a body over its MAX_UPLOAD_MB
    answers 413 and closes before reading it, which the sender may only see as a broken connection)."""


def bearer(api_key: str | None) -> dict[str, str]:
    """`Authorization: Bearer KEY`, or no header without a key."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def auth_headers(settings: Settings | None) -> dict[str, str]:
    """The auth header for the CLI's BACKEND_API_KEY (none when unset)."""
    return bearer(settings.backend_api_key.get_secret_value() if settings and settings.backend_api_key else "")


def discover_backend_url(settings: Settings) -> str | None:
    """BACKEND_URL if set, else the URL a backend registered in DATA_DIR/backend.json."""
    if settings.backend_url:
        return settings.backend_url
    try:
        return json.loads(settings.backend_registration_file.read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None


# -- Server-Sent Events -----------------------------------------------------------------------------------


class SseEvent(NamedTuple):
    """One Server-Sent Event: its `event` name ("message" when it has none) and its `data` lines joined by
    newlines, left undecoded (a load generator reads thousands of token events it never needs to parse)."""

    event: str
    data: str

    def json(self):
        """The data as JSON (json's ValueError when it is not)."""
        return json.loads(self.data)


class SseDecoder:
    """Incremental decoder of a text/event-stream body: `feed(bytes)` returns the events those bytes complete.

    Comments (`: keepalive`) and events without data are skipped; `data:` values lose one leading space and
    join with newlines; CRLF, CR and LF all end lines. An event larger than `max_bytes`, complete or not,
    raises ReplyTooLarge (a ValueError) having read about `max_bytes` and no more. An event left unfinished
    when the body ends is dropped, as the specification says."""

    def __init__(self, max_bytes: int = MAX_SSE_EVENT_BYTES) -> None:
        self._splitter = SseEvents(max_bytes)

    def feed(self, chunk: bytes) -> list[SseEvent]:
        events = []
        for block in self._splitter.feed(chunk):
            event, data = "message", []
            for line in block.decode("utf-8", "replace").split("\n"):
                if not line or line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
            if data:
                events.append(SseEvent(event, "\n".join(data)))
        return events


def decode_sse(chunks: Iterable[bytes], max_bytes: int = MAX_SSE_EVENT_BYTES) -> Iterator[SseEvent]:
    """The events of a body given as byte chunks, as they complete."""
    decoder = SseDecoder(max_bytes)
    for chunk in chunks:
        yield from decoder.feed(chunk)


async def adecode_sse(chunks: AsyncIterable[bytes], max_bytes: int = MAX_SSE_EVENT_BYTES) -> AsyncIterator[SseEvent]:
    """`decode_sse` over an async body."""
    decoder = SseDecoder(max_bytes)
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event


def parse_sse(chunks: Iterable[bytes], max_bytes: int = MAX_SSE_EVENT_BYTES) -> Iterator[tuple[str, object]]:
    """(event, JSON data) pairs of a body given as byte chunks; data that is not JSON raises json's ValueError."""
    for event in decode_sse(chunks, max_bytes):
        yield event.event, event.json()


def iter_sse(response: httpx.Response) -> Iterator[tuple[str, object]]:
    """(event, JSON data) pairs of a streamed text/event-stream response."""
    return parse_sse(response.iter_bytes())


def aiter_sse(response: httpx.Response, max_bytes: int = MAX_SSE_EVENT_BYTES) -> AsyncIterator[SseEvent]:
    """The events of a streamed async response (any server: the backend, an OpenAI-compatible engine)."""
    return adecode_sse(response.aiter_bytes(), max_bytes)


# -- requests and errors, shared by both clients ----------------------------------------------------------


def error_from_response(response: httpx.Response) -> AppError:
    """The AppError for a reply with an error status (its body already read): the class of its `error.type`,
    with the reply's status, type, message and REPLY_HEADERS. A body without the appliance's error object (a
    proxy's page, an engine's error) gives AppError of type `http_<status>`."""
    error = _json(response).get("error")
    error = error if isinstance(error, dict) else {}
    message = error.get("message") or response.text[:300]
    exc = from_reply(response.status_code, error.get("type"), str(message))
    # The reply's own headers, not the class's defaults: a client waits as long as this server said.
    exc.headers = {name: response.headers[name] for name in REPLY_HEADERS if name in response.headers} or None
    return exc


def _json(response: httpx.Response) -> dict:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _search_params(q: str, space_id: str, top_k: int, mode: str) -> dict:
    params: dict = {"q": q, "space_id": space_id, "top_k": top_k}
    if mode == "rerank":  # the CLI's name for hybrid search with the cross-encoder on top
        return params | {"mode": "hybrid", "rerank": "true"}
    return params | {"mode": mode}


def ask_body(question: str, space_id: str, top_k: int = 5, max_tokens: int | None = None) -> dict:
    """The body of a streaming `POST /ask`."""
    body = {"q": question, "space_id": space_id, "top_k": top_k, "stream": True}
    return body | ({"max_tokens": max_tokens} if max_tokens else {})


class _Endpoint:
    """What both clients share: the base URL, the headers every request carries, and the translation of an
    httpx failure (no reply) into BackendUnreachable."""

    def __init__(self, base_url: str, headers: dict[str, str] | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})

    def url(self, path: str) -> str:
        # Absolute URLs: one pool (the load generator's) may serve clients of several backends.
        return f"{self.base_url}{path}"

    def unreachable(self, exc: httpx.HTTPError, doing: str = "") -> BackendUnreachable:
        where = f"no backend answers at {self.base_url}" if not doing else f"lost the backend at {self.base_url} {doing}"
        return BackendUnreachable(f"{where}: {exc}")


class BackendClient(_Endpoint):
    """A running backend's API, synchronously: health, search, ask (streamed), spaces, documents, jobs (submitted
    as uploads) and their events. Each method returns the reply's JSON or raises an AppError (see the module);
    `http` is a pool to use instead of the client's own (which `close` then leaves open)."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, http: httpx.Client | None = None) -> None:
        super().__init__(base_url, headers)
        self._own = http is None
        self._http = http or httpx.Client(timeout=httpx.Timeout(UPLOAD_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    def __enter__(self) -> BackendClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self._http.close()

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One request, whatever its status; BackendUnreachable when no reply came."""
        try:
            return self._http.request(method, self.url(path), headers=self.headers, **kwargs)
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from exc

    def _ok(self, response: httpx.Response) -> httpx.Response:
        if not response.is_success:
            raise error_from_response(response)
        return response

    def health(self) -> dict:
        """GET /health: the components' status (its body, whatever the status code: it describes a failure too)."""
        return self.request("GET", "/health").json()

    def search(self, q: str, space_id: str, top_k: int, mode: str) -> list[dict]:
        """GET /search's results; `mode` "rerank" is hybrid search reranked."""
        return self._ok(self.request("GET", "/search", params=_search_params(q, space_id, top_k, mode))).json()["results"]

    def spaces(self) -> list[dict]:
        """GET /spaces: the spaces the key covers."""
        return self._ok(self.request("GET", "/spaces")).json()["spaces"]

    def documents(self, space_id: str) -> list[dict]:
        """GET /documents of a space."""
        return self._ok(self.request("GET", "/documents", params={"space_id": space_id})).json()["documents"]

    def ask(self, question: str, space_id: str, top_k: int = 5, max_tokens: int | None = None) -> Iterator[SseEvent]:
        """A streaming `POST /ask`: its events (`token`, then `done` or `error`) as they arrive. An error status
        raises its AppError before any event; a connection lost mid-answer raises BackendUnreachable."""
        timeout = httpx.Timeout(ANSWER_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        try:
            body = ask_body(question, space_id, top_k, max_tokens)
            with self._http.stream("POST", self.url("/ask"), json=body, headers=self.headers, timeout=timeout) as response:
                if response.status_code != 200:
                    response.read()
                    raise error_from_response(response)
                yield from decode_sse(response.iter_bytes())
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from exc

    def submit_job(self, space_id: str, files: list[tuple[str, Path]]) -> dict:
        """POST the files as one ingestion job (202); returns its {job_id, url, events_url, ...}. UploadCut when
        the connection broke while sending."""
        try:
            with ExitStack() as stack:
                parts = [
                    ("file", (Path(rel).name, stack.enter_context(open(path, "rb")), "application/octet-stream"))
                    for rel, path in files
                ]
                response = self._http.post(
                    self.url("/documents"), data={"space_id": space_id, "path": [rel for rel, _ in files], "async": "true"},
                    files=parts, headers=self.headers,
                )
        except httpx.ConnectError as exc:
            raise self.unreachable(exc) from exc
        except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError) as exc:
            raise UploadCut(str(exc)) from exc
        except httpx.HTTPError as exc:
            raise self.unreachable(exc, "during an upload") from exc
        if response.status_code != 202:
            raise error_from_response(response)
        return response.json()

    def job(self, job_id: str) -> dict:
        """GET /jobs/{id}: status, counts and every file's outcome."""
        try:
            response = self._http.get(self.url(f"/jobs/{job_id}"), headers=self.headers)
        except httpx.HTTPError as exc:
            raise self.unreachable(exc, f"while following job {job_id}") from exc
        return self._ok(response).json()

    def job_events(self, job_id: str) -> Iterator[tuple[str, dict]]:
        """GET /jobs/{id}/events: `progress` per finished file, then `done`; httpx errors and ValueError (an
        event that is not JSON, or too large) pass through to the caller."""
        timeout = httpx.Timeout(EVENTS_READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        with self._http.stream("GET", self.url(f"/jobs/{job_id}/events"), headers=self.headers, timeout=timeout) as response:
            if response.status_code != 200:
                response.read()
                raise error_from_response(response)
            for event in decode_sse(response.iter_bytes()):
                yield event.event, event.json()
                if event.event == "done":
                    return

    def follow_job(self, job_id: str) -> Iterator[tuple[str, dict]]:
        """The job's events: `progress` ({..., "file"}) per finished file, then `done` (the full job). Read from
        its event stream; if that breaks, by polling GET /jobs/{id} (each poll a `progress` with the full job)."""
        try:
            for event, data in self.job_events(job_id):
                yield event, data
                if event == "done":
                    return
        except (httpx.HTTPError, ValueError):
            pass  # the stream broke (or sent an event that is not JSON, or too large): the job goes on; poll it
        while True:
            body = self.job(job_id)
            if body["status"] not in ("queued", "running"):
                yield "done", body
                return
            yield "progress", body
            time.sleep(POLL_INTERVAL_S)


class AsyncBackendClient(_Endpoint):
    """A running backend's API for asyncio code. `http` shares one connection pool between clients of several
    backends (the load generator sizes it to the requests in flight); without it the client has its own."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, http: httpx.AsyncClient | None = None) -> None:
        super().__init__(base_url, headers)
        self._own = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(UPLOAD_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One request, whatever its status; BackendUnreachable when no reply came."""
        try:
            return await self._http.request(method, self.url(path), headers=self.headers, **kwargs)
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from exc

    async def _ok(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = await self.request(method, path, **kwargs)
        if not response.is_success:
            raise error_from_response(response)
        return response

    async def health(self, timeout: float | None = None) -> httpx.Response:
        """GET /health, whatever its status (a prober reads the status and the body, which may be anything)."""
        return await self.request("GET", "/health", **({"timeout": timeout} if timeout else {}))

    async def search(self, q: str, space_id: str, top_k: int, mode: str) -> list[dict]:
        """GET /search's results."""
        return (await self._ok("GET", "/search", params=_search_params(q, space_id, top_k, mode))).json()["results"]

    async def spaces(self) -> list[dict]:
        """GET /spaces."""
        return (await self._ok("GET", "/spaces")).json()["spaces"]

    async def documents(self, space_id: str, timeout: float | None = None) -> list[dict]:
        """GET /documents of a space (with the key: a refused key raises Unauthorized or Forbidden)."""
        kwargs = {"timeout": timeout} if timeout else {}
        return (await self._ok("GET", "/documents", params={"space_id": space_id}, **kwargs)).json()["documents"]

    async def delete_document(self, doc_id: str) -> dict:
        """DELETE /documents/{id}: {doc_id, deleted_points}."""
        return (await self._ok("DELETE", f"/documents/{doc_id}")).json()

    async def upload(self, space_id: str, path: str, data: bytes, timeout: float = UPLOAD_TIMEOUT_S) -> tuple[int, dict]:
        """POST /documents with one file: (201 added or replaced / 200 unchanged, the result's JSON)."""
        response = await self._ok(
            "POST", "/documents", data={"space_id": space_id, "path": path}, files={"file": (Path(path).name, data)}, timeout=timeout
        )
        return response.status_code, response.json()

    async def metrics(self, timeout: float | None = None) -> str:
        """GET /metrics: the Prometheus text exposition."""
        return (await self._ok("GET", "/metrics", **({"timeout": timeout} if timeout else {}))).text

    @asynccontextmanager
    async def ask(self, body: dict) -> AsyncIterator[AsyncIterator[SseEvent]]:
        """A streaming `POST /ask` (`ask_body`): `async with client.ask(body) as events`. An error status raises
        its AppError on entry; a connection lost (or a timeout) mid-answer raises BackendUnreachable."""
        try:
            async with self._http.stream("POST", self.url("/ask"), json=body, headers=self.headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise error_from_response(response)
                yield self._events(response)
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from exc

    async def _events(self, response: httpx.Response) -> AsyncIterator[SseEvent]:
        try:
            async for event in aiter_sse(response):
                yield event
        except httpx.HTTPError as exc:
            raise self.unreachable(exc, "while an answer streamed") from exc
