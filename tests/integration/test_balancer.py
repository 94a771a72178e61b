"""The vLLM balancers' nginx configs (compose/lb/nginx.conf for the compose replicas overlay, the k8s router's
k8s/base/router/nginx.conf) run by a real nginx in front of two engine stand-ins, through the appliance's own
vLLM client: what docs/scaling.md promises of them.

- new requests go to the replica with the fewest open requests (`least_conn`; a long answer stream counts);
- answer streams pass token by token (no buffering);
- a replica that refuses connections is skipped and the request served by the other one;
- a request that reached a replica and failed there is never sent to the other one (an answer is not
  generated twice): the client gets the error;
- `/lb-health` answers without any replica.

The nginx is Debian's 1.22 (`make test` unpacks it into .tools/nginx; nothing is installed or started as a
service). The images run nginx 1.28, whose `resolver` inside `upstream` and `server ... resolve` (open-source
nginx 1.27.3+) 1.22 does not know: those lines, which only re-read DNS, are dropped here and the replicas'
names replaced by the stand-ins' addresses. Everything else in the configs runs as shipped.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from backend.errors import LLMBadResponse
from backend.llm.base import TokenDelta
from backend.llm.vllm import VllmClient
from cli.local_backend import free_port, stop_backend
from tests.support.openai_server import FakeChatModel, FakeOpenAI
from tests.support.tools import find_tool

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {"compose": ROOT / "compose/lb/nginx.conf", "k8s-router": ROOT / "k8s/base/router/nginx.conf"}
MODEL = "fake-vllm"
SERVER_LINE = re.compile(r"^([ \t]*)server[ \t]+\S+:8001[ \t]+resolve[ \t]+([^;\n]*);[ \t]*\n", re.M)


def nginx_binary() -> str:
    return find_tool([ROOT / ".tools/nginx/usr/sbin/nginx", shutil.which("nginx")],
                     "nginx not found: `make test` unpacks Debian's into .tools/nginx (apt-get download nginx)")


def local_config(shipped: str, replicas: list[str], port: int, workdir: Path) -> str:
    """The shipped config with the replicas at the stand-ins' addresses, nginx's files under workdir, and
    the DNS-only lines that nginx 1.22 does not parse left out."""
    lines = SERVER_LINE.findall(shipped)
    assert lines and len({params for _, params in lines}) == 1, "every replica line carries the same max_fails/fail_timeout"
    indent, params = lines[0]
    servers = "".join(f"{indent}server {address} {params};\n" for address in replicas)
    config = SERVER_LINE.sub("\0", shipped).replace("\0", servers, 1).replace("\0", "")
    config = re.sub(r"^[ \t]*resolver[ \t][^;\n]*;[ \t]*\n", "", config, flags=re.M)
    assert not re.search(r"\bresolver?\b", re.sub(r"#.*", "", config)), config
    assert config.count("server 127.0.0.1:") == len(replicas)
    config = config.replace("listen 8001;", f"listen 127.0.0.1:{port};")
    config = config.replace("/tmp/", f"{workdir}/")
    if os.geteuid() == 0:  # workers would run as nobody, who cannot enter pytest's 0700 temp dirs
        config = "user root;\n" + config
    return config


class Balancer:
    """nginx with one of the shipped configs in front of the given stand-ins, on its own port."""

    def __init__(self, shipped: Path, replicas: list[FakeOpenAI], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "nginx.conf"
        addresses = [r.url.removeprefix("http://") for r in replicas]
        self.config.write_text(local_config(shipped.read_text(), addresses, self.port, workdir))
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Balancer":
        cmd = [nginx_binary(), "-p", str(self.workdir), "-c", str(self.config), "-e", "stderr", "-g", "daemon off;"]
        checked = subprocess.run([*cmd[:-2], "-t"], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, f"nginx -t:\n{checked.stderr}\n{self.config.read_text()}"
        # Its log goes to a file, not a pipe: a pipe nobody reads fills up and blocks nginx.
        log = self.workdir / "nginx.log"
        with log.open("w") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"{self.url}/lb-health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)

    def __exit__(self, *exc_info) -> None:
        if self.process and self.process.poll() is None:
            stop_backend(self.process, timeout_s=10)  # SIGTERM, SIGKILL if it hangs


@pytest.fixture(params=sorted(CONFIGS))
def shipped(request) -> Path:
    return CONFIGS[request.param]


class CrashingReplica:
    """A replica that takes a request and dies on it: reads the request, closes the connection, no answer."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"POST "):
                    self.requests += 1

    def stop(self) -> None:
        self._sock.close()


def replica(answer: str, **behaviour) -> FakeOpenAI:
    return FakeOpenAI({MODEL: FakeChatModel(answer=answer, **behaviour)}).start()


async def answer(client: VllmClient, question: str = "q") -> tuple[str, list[float]]:
    """The streamed text through the appliance's vLLM client, and the arrival time of each piece."""
    text, times = [], []
    async for event in client.stream_chat([{"role": "user", "content": question}], max_tokens=64, temperature=0.0):
        if isinstance(event, TokenDelta) and event.text:
            text.append(event.text)
            times.append(time.monotonic())
    return "".join(text), times


def raw_chat(url: str) -> tuple[int, str]:
    """One streamed chat request straight through the balancer (no client-side retries): status and body."""
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "q"}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    return response.status_code, response.text


def test_lb_health_answers_without_any_replica(shipped, tmp_path):
    a, b = replica("a"), replica("b")
    a.stop()  # both ports now refuse connections
    b.stop()
    with Balancer(shipped, [a, b], tmp_path / "nginx") as lb:
        health = httpx.get(f"{lb.url}/lb-health", timeout=5)
        assert (health.status_code, health.text) == (200, "ok\n")
        assert raw_chat(lb.url)[0] == 502


def test_new_requests_go_to_the_replica_with_fewer_open_streams_and_tokens_are_not_buffered(shipped, tmp_path):
    slow_words = " ".join(f"slow{i}" for i in range(12))
    a = replica(slow_words, token_delay_s=0.25)
    b = replica(slow_words, token_delay_s=0.25)
    try:
        with Balancer(shipped, [a, b], tmp_path / "nginx") as lb:
            async def scenario():
                client = VllmClient(f"{lb.url}/v1", MODEL, timeout_s=30)
                long = asyncio.create_task(answer(client, "long"))
                while len(a.chat_requests) + len(b.chat_requests) < 1:
                    await asyncio.sleep(0.01)
                busy, idle = (a, b) if a.chat_requests else (b, a)
                # Short requests one after another while the long stream holds one replica: all go to the other.
                for _ in range(4):
                    idle.models[MODEL].token_delay_s = 0.0
                    await answer(client, "short")
                result = await long
                await client.aclose()
                return busy, idle, result

            busy, idle, (text, times) = asyncio.run(scenario())
            assert [r["messages"][-1]["content"] for r in busy.chat_requests] == ["long"]
            assert [r["messages"][-1]["content"] for r in idle.chat_requests] == ["short"] * 4
            assert text == slow_words
            # Unbuffered: the first token arrived about 11 token delays before the last one.
            assert times[-1] - times[0] > 2.0
    finally:
        a.stop()
        b.stop()


def test_a_replica_that_refuses_connections_is_skipped(shipped, tmp_path):
    a, b = replica("from a"), replica("from b")
    try:
        with Balancer(shipped, [a, b], tmp_path / "nginx") as lb:
            b.stop()  # replica b goes away after the balancer started
            # Raw requests, so that no client-side retry can hide a failed one: nginx itself must move it.
            results = [raw_chat(lb.url) for _ in range(6)]
            assert [status for status, _ in results] == [200] * 6
            assert all('"content": "from"' in text and "[DONE]" in text for _, text in results)
            assert len(a.chat_requests) == 6
    finally:
        a.stop()
        b.stop()


def test_a_request_that_failed_on_a_replica_is_not_sent_to_the_other(shipped, tmp_path):
    words = " ".join(f"w{i}" for i in range(8))
    a, b = replica(words, break_after_tokens=3), replica(words, break_after_tokens=3)
    try:
        with Balancer(shipped, [a, b], tmp_path / "nginx") as lb:
            async def ask_once():
                client = VllmClient(f"{lb.url}/v1", MODEL, timeout_s=30)
                try:
                    await answer(client)
                finally:
                    await client.aclose()

            with pytest.raises(LLMBadResponse):
                asyncio.run(ask_once())
            # The engine generated once: the cut stream reached the client as an error, and no second replica
            # started the same answer behind its back.
            assert len(a.chat_requests) + len(b.chat_requests) == 1
    finally:
        a.stop()
        b.stop()


def test_a_replica_that_dies_on_a_request_is_not_sent_the_same_request_again(shipped, tmp_path):
    """nginx moves a request to the next replica only if it could not be sent (proxy_next_upstream error
    timeout, and POST is not idempotent): one the engine received and died on comes back as 502, never as a
    second generation elsewhere. After max_fails the dead replica is left out for fail_timeout."""
    crashing, healthy = CrashingReplica(), replica("from the healthy one")
    try:
        with Balancer(shipped, [crashing, healthy], tmp_path / "nginx") as lb:
            statuses = [raw_chat(lb.url)[0] for _ in range(6)]
        assert crashing.requests >= 1, "least_conn/round robin sends the dead replica some requests"
        assert statuses.count(502) == crashing.requests
        assert statuses.count(200) == len(healthy.chat_requests) == 6 - crashing.requests
    finally:
        crashing.stop()
        healthy.stop()
