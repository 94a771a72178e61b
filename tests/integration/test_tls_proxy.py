"""The compose profile `tls`'s proxy run for real: nginx with the very template and .envsh the profile mounts
(found through `docker compose config`), rendered as the image's entrypoint renders them, with a self-signed
certificate, in front of a real backend process (real store and embedder; a streaming engine stand-in).

- HTTPS /health answers through the proxy, with HSTS, and the certificate served is the mounted one;
- plain HTTP is redirected to HTTPS (308: method and body kept), except the proxy's own health path;
- an /ask answer stream arrives incrementally: its first token long before its end (no buffering);
- uploads: a small one is indexed; one just over MAX_UPLOAD_MB (within the multipart allowance) is refused by
  the backend, one far over it by the proxy: both a JSON 413 in the backend's error shape.

The nginx is Debian's 1.22 (`make test` unpacks it into .tools/nginx), the image runs 1.28. What 1.22 lacks is
translated, nothing else: `http2 on;` becomes the older `listen ... http2`, the DNS-only `resolver` and
`resolve` are dropped and the `backend` service name is replaced by the backend's address (as
tests/integration/test_balancer.py does); container paths become temp paths; Debian's binary ships without
mime.types (nginx-common), so a small one is written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from cli.local_backend import free_port, start_backend, stop_backend
from tests.support.compose import ROOT, stack_render
from tests.support.openai_server import FakeChatModel, FakeOpenAI
from tests.support.tools import find_tool

pytestmark = pytest.mark.integration

MODEL = "fake-vllm"
TOKEN_DELAY_S = 0.15
ANSWER = "Backups run nightly at 02:00 to the NAS in rack B and are kept for thirty days [1]."
MAX_UPLOAD_MB = 1
TEMPLATE_TARGET = "/etc/nginx/templates/nginx.conf.template"
ENVSH_TARGET = "/docker-entrypoint.d/15-tls-env.envsh"


def nginx_binary() -> str:
    return find_tool([ROOT / ".tools/nginx/usr/sbin/nginx", shutil.which("nginx")],
                     "nginx not found: `make test` unpacks Debian's into .tools/nginx (apt-get download nginx)")


def nginx_version(binary: str) -> tuple[int, ...]:
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    return tuple(int(p) for p in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", done.stderr).groups())


def mounted_files() -> tuple[Path, Path, dict]:
    """The template and the .envsh that the `tls` profile mounts into the proxy, and the proxy's environment."""
    proxy = stack_render("vllm", {"COMPOSE_PROFILES": "vllm,tls"})["services"]["tls-proxy"]
    sources = {v["target"]: Path(v["source"]) for v in proxy["volumes"]}
    return sources[TEMPLATE_TARGET], sources[ENVSH_TARGET], proxy["environment"]


def render_template(template: Path, envsh: Path, environ: dict[str, str]) -> str:
    """What the image's entrypoint does: source the .envsh (it must be executable), then envsubst with only the
    names that match NGINX_ENVSUBST_FILTER (^TLS_) and are defined."""
    assert os.access(envsh, os.X_OK), f"{envsh}: the entrypoint ignores an .envsh that is not executable"
    assert environ["NGINX_ENVSUBST_FILTER"] == "^TLS_"
    done = subprocess.run(["sh", "-c", '. "$0" && env -0', str(envsh)], env={"PATH": os.environ["PATH"], **environ},
                          capture_output=True, text=True, timeout=10, check=True)
    values = dict(item.split("=", 1) for item in done.stdout.split("\0") if "=" in item)
    defined = {k: v for k, v in values.items() if re.match(environ["NGINX_ENVSUBST_FILTER"], k)}
    text = template.read_text()
    names = set(re.findall(r"\$\{(\w+)\}", text))
    assert names <= set(defined), f"the template uses names nothing defines: {names - set(defined)}"
    return re.sub(r"\$\{(TLS_\w+)\}", lambda m: defined[m.group(1)], text)


def local_config(rendered: str, *, backend: str, https_port: int, http_port: int, certs: Path, workdir: Path,
                 version: tuple[int, ...]) -> str:
    config = rendered
    config = re.sub(r"^[ \t]*resolver[ \t][^;\n]*;[ \t]*\n", "", config, flags=re.M)
    config, n = re.subn(r"server backend:8000 resolve;", f"server {backend};", config)
    assert n == 1, "the upstream names the backend service once"
    config = config.replace("listen 8443 ", f"listen 127.0.0.1:{https_port} ").replace("listen 8080 ", f"listen 127.0.0.1:{http_port} ")
    if version < (1, 25, 1):
        config, n = re.subn(r"(listen \S+ ssl) (default_server;)\n\s*http2 on;", r"\1 http2 \2", config)
        assert n == 1
    config = config.replace("/tmp/", f"{workdir}/")  # first: the paths put in below are under /tmp too
    (workdir / "mime.types").write_text("types {\n    text/html html;\n    application/json json;\n}\n")
    config = config.replace("/etc/nginx/mime.types", str(workdir / "mime.types"))
    config = config.replace("/etc/nginx/certs/", f"{certs}/").replace("/var/www/acme", str(workdir / "acme"))
    directives = re.sub(r"#.*", "", config)
    assert "/etc/nginx" not in directives and "backend:" not in directives
    if os.geteuid() == 0:  # workers would run as nobody, who cannot enter pytest's 0700 temp dirs
        config = "user root;\n" + config
    return config


def self_signed(certs: Path) -> None:
    certs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(certs / "tls.key"), "-out", str(certs / "tls.crt")],
        check=True, capture_output=True, timeout=60,
    )


@pytest.fixture(scope="module")
def engine():
    with FakeOpenAI({MODEL: FakeChatModel(answer=ANSWER, token_delay_s=TOKEN_DELAY_S)}) as fake:
        yield fake


@pytest.fixture(scope="module")
def backend(engine, tmp_path_factory, model_cache):
    env = {
        "DATA_DIR": str(tmp_path_factory.mktemp("tls-data")),
        "MODEL_CACHE_DIR": str(model_cache),
        "QDRANT_URL": "",
        "LLM_BACKEND": "vllm",
        "VLLM_BASE_URL": f"{engine.url}/v1",
        "VLLM_MODEL": MODEL,
        "ASK_MIN_SCORE": "-1",
        "MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
        "API_KEYS": "",
        "LOG_LEVEL": "warning",
    }
    proc, url = start_backend(env)
    try:
        yield url
    finally:
        stop_backend(proc)


class Proxy:
    def __init__(self, https_port: int, http_port: int, certs: Path) -> None:
        self.https = f"https://127.0.0.1:{https_port}"
        self.http = f"http://127.0.0.1:{http_port}"
        self.https_port, self.certs = https_port, certs
        self.client = httpx.Client(base_url=self.https, verify=ssl.create_default_context(cafile=str(certs / "tls.crt")), timeout=30)


@pytest.fixture(scope="module")
def proxy(backend, tmp_path_factory):
    binary = nginx_binary()
    workdir = tmp_path_factory.mktemp("tls-proxy")
    certs = workdir / "certs"
    self_signed(certs)
    https_port, http_port = free_port(), free_port()
    template, envsh, environment = mounted_files()
    # The compose stack's values, with this test's limit and port (MAX_UPLOAD_MB and HTTPS_PORT come from the
    # env file in the stack, as they do for the backend).
    environ = {**environment, "MAX_UPLOAD_MB": str(MAX_UPLOAD_MB), "HTTPS_PORT": str(https_port)}
    rendered = render_template(template, envsh, environ)
    config = workdir / "nginx.conf"
    config.write_text(local_config(rendered, backend=backend.removeprefix("http://"), https_port=https_port,
                                   http_port=http_port, certs=certs, workdir=workdir, version=nginx_version(binary)))
    cmd = [binary, "-p", str(workdir), "-c", str(config), "-e", "stderr", "-g", "daemon off;"]
    checked = subprocess.run([*cmd[:-2], "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, f"nginx -t:\n{checked.stderr}\n{config.read_text()}"
    log = workdir / "nginx.log"
    with log.open("w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/proxy-health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"nginx did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    proxy = Proxy(https_port, http_port, certs)
    try:
        yield proxy
    finally:
        proxy.client.close()
        stop_backend(process, timeout_s=10)


@pytest.fixture(scope="module")
def indexed(proxy):
    """A document in space `ops`, uploaded through the proxy (a small upload passes)."""
    text = b"Backups run nightly at 02:00 to the NAS in rack B and are kept for thirty days.\n"
    r = proxy.client.post("/documents", data={"space_id": "ops"}, files={"file": ("backups.txt", text, "text/plain")})
    assert r.status_code in (200, 201), r.text
    return r.json()


def test_https_health_through_the_proxy_with_hsts(proxy):
    r = proxy.client.get("/health")
    assert r.status_code == 200 and r.json()["status"] in ("ok", "degraded")
    assert r.headers["strict-transport-security"].startswith("max-age=")
    assert r.headers.get("x-request-id"), "the backend's own headers pass through"


def test_the_certificate_served_is_the_mounted_one(proxy):
    with socket.create_connection(("127.0.0.1", proxy.https_port), timeout=10) as raw:
        context = ssl.create_default_context(cafile=str(proxy.certs / "tls.crt"))
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            served = tls.getpeercert(binary_form=True)
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    mounted = ssl.PEM_cert_to_DER_cert((proxy.certs / "tls.crt").read_text())
    assert served == mounted
    # A client that does not trust it is refused: no silent downgrade.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{proxy.https}/health", timeout=10)


def test_plain_http_is_redirected_to_https(proxy):
    for method in ("GET", "POST"):
        r = httpx.request(method, f"{proxy.http}/ask?x=1", timeout=10)
        assert r.status_code == 308, r.text
        assert r.headers["location"] == f"https://127.0.0.1:{proxy.https_port}/ask?x=1"
    # Only the proxy's own health path answers on plain HTTP, and it says nothing of the backend.
    r = httpx.get(f"{proxy.http}/proxy-health", timeout=10)
    assert r.status_code == 200 and r.text == "ok\n"
    assert httpx.get(f"{proxy.http}/health", timeout=10).status_code == 308


def test_an_answer_stream_arrives_token_by_token(proxy, indexed):
    started = time.monotonic()
    arrivals: list[tuple[float, str]] = []
    body = {"q": "When do backups run?", "space_id": "ops", "top_k": 3, "stream": True}
    with proxy.client.stream("POST", "/ask", json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                arrivals.append((time.monotonic() - started, event or "message"))
    tokens = [t for t, e in arrivals if e == "token"]
    assert arrivals[-1][1] == "done" and len(tokens) >= 10
    end = arrivals[-1][0]
    # The engine spaces its ~17 tokens TOKEN_DELAY_S apart: buffered, they would all arrive at the end.
    assert end - tokens[0] >= 0.6 * TOKEN_DELAY_S * (len(tokens) - 1), (tokens[0], end)
    assert len({round(t, 2) for t in tokens}) > len(tokens) // 2, "tokens arrived in a few bursts"


def upload(proxy: Proxy, size: int) -> httpx.Response:
    return proxy.client.post("/documents", data={"space_id": "ops"}, files={"file": ("big.txt", b"a" * size, "text/plain")})


def test_an_upload_just_over_the_limit_gets_the_backends_json_413(proxy):
    # Over MAX_UPLOAD_MB but within the proxy's limit (it adds the same 64 KiB multipart allowance as the
    # backend): the backend checks the file and answers.
    r = upload(proxy, MAX_UPLOAD_MB * 2**20 + 1024)
    assert r.status_code == 413, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["type"] == "file_too_large"
    assert r.headers.get("x-request-id"), "answered by the backend"


def test_an_upload_far_over_the_limit_gets_the_proxys_json_413(proxy):
    r = upload(proxy, 3 * MAX_UPLOAD_MB * 2**20)
    assert r.status_code == 413, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = json.loads(r.text)["error"]
    assert error["type"] == "file_too_large" and f"({MAX_UPLOAD_MB} MB)" in error["message"]
    assert "x-request-id" not in r.headers, "refused by the proxy, before the backend"
