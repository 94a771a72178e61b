"""Serve an ASGI app from a background thread on a free 127.0.0.1 port: the engine stand-ins' lifecycle."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import uvicorn

START_TIMEOUT_S = 10.0


class DeliberateCut(Exception):
    """Raised inside a streaming body: the server then closes the connection without ending the response."""


class _QuietDeliberateFailures(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" tracebacks for the failures a fake causes on
    purpose (a cut stream, a request abandoned at stop), so that a failing test's log shows the real ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (DeliberateCut, asyncio.CancelledError))


_QUIET = _QuietDeliberateFailures()


class ThreadedServer:
    """Subclasses give `app()` and a `name`; `start()` returns once the port accepts connections."""

    name = "fake-server"

    def __init__(self) -> None:
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def app(self):
        raise NotImplementedError

    def start(self):
        """Serve in a background thread; returns once the port accepts connections."""
        logging.getLogger("uvicorn.error").addFilter(_QUIET)  # the same object: added once however many fakes run
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))  # port 0: the OS picks a free one, and we keep the socket (no race)
        config = uvicorn.Config(self.app(), log_config=None, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    def stop(self) -> None:
        """Stop serving; requests still running (a slow model) are abandoned, not waited for."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = self._server.force_exit = True
        self._thread.join(timeout=START_TIMEOUT_S)
        self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class AppServer(ThreadedServer):
    """The appliance's own app over real HTTP (for tests about the wire: SSE, disconnects, keep-alive); its
    lifespan is run by whoever built it (a TestClient, usually)."""

    name = "rag-backend"

    def __init__(self, asgi_app) -> None:
        super().__init__()
        self.asgi_app = asgi_app

    def app(self):
        return self.asgi_app
