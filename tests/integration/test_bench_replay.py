"""The fair baseline of the load benchmark (issue 21, item 1): `cli.bench record` relays a backend's engine
requests and writes them down; `cli.bench replay` sends exactly those to the engine with ask's loop and client.

The recorder runs as the real command (`python -m cli.bench record`, a process); the backend is the real app
over HTTP (uvicorn in a thread) with the real store and embedder, pointed at the recorder; the engine is the
fixed-latency stand-in. Only what was recorded and replayed is checked, never figures.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from cli import bench
from cli.local_backend import free_port
from tests.support.openai_server import FakeChatModel, FakeOpenAI
from tests.support.threaded_server import AppServer

ROOT = Path(__file__).resolve().parents[2]
SPACE = "ops"
MODEL = "fake-vllm"
NOTES = b"# Backups\n\nBackups run nightly at 02:00 to the NAS in rack B.\n\n# Keys\n\nAPI keys rotate every 90 days."
QUESTIONS = ["When do backups run?", "Where do backups go?", "How often do API keys rotate?"]
RUN_KEYS = {"target", "concurrency", "requests", "errors", "req_s", "ttft_p50_ms", "ttft_p99_ms", "prompt_tokens_mean", "token_source"}


@pytest.fixture(scope="module")
def engine():
    with FakeOpenAI({MODEL: FakeChatModel(answer="Backups run nightly at 02:00 [1].", token_delay_s=0.002)}) as fake:
        yield fake


def start_recorder(upstream: str, out: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.bench", "record", "--upstream", upstream, "--listen", f"127.0.0.1:{port}", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/v1/models", timeout=2)  # relayed to the engine
            return proc, url
        except httpx.HTTPError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.1)


def test_record_then_replay_sends_the_engine_what_ask_sent(settings, services, engine, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    questions = tmp_path / "questions.txt"
    questions.write_text("\n".join(QUESTIONS) + "\n")
    recorder, proxy_url = start_recorder(engine.url, prompts)
    try:
        update = {"llm_backend": "vllm", "vllm_base_url": f"{proxy_url}/v1", "vllm_model": MODEL, "ask_min_score": -1.0}
        app = create_app(settings.model_copy(update=update), services)
        with TestClient(app) as client:
            assert client.post("/documents", data={"space_id": SPACE}, files={"file": ("notes.md", NOTES)}).status_code == 201
            with AppServer(app) as server:
                sent_before = len(engine.chat_requests)
                argv = ["--json", str(tmp_path / "ask.json"), "ask", "--url", server.url, "--space", SPACE,
                        "--questions", str(questions), "--concurrency", "1", "--requests", "3", "--warmup", "0",
                        "--max-tokens", "7"]
                assert bench.main(argv) == 0
    finally:
        recorder.send_signal(signal.SIGINT)
        output = recorder.communicate(timeout=30)[0]
    assert recorder.returncode == 0, output
    assert f"recorded 3 chat requests into {prompts}" in output

    ask = json.loads((tmp_path / "ask.json").read_text())
    assert ask["runs"][0]["errors"] == 0 and ask["runs"][0]["answers_without_llm"] == 0
    sent = engine.chat_requests[sent_before:]
    lines = [json.loads(line) for line in prompts.read_text().splitlines()]
    assert [line["path"] for line in lines] == ["/v1/chat/completions"] * 3
    # Exactly what the backend sent the engine, in /ask's order: the question i is in the prompt i.
    assert [line["body"] for line in lines] == sent
    for body, question in zip(sent, QUESTIONS):
        assert body["messages"][-1]["content"].endswith(f"Question: {question}")
        assert body["max_tokens"] == 7 and body["model"] == MODEL and "temperature" in body

    replayed_from = len(engine.chat_requests)
    argv = ["--json", str(tmp_path / "replay.json"), "replay", "--url", f"{engine.url}/v1", "--prompts", str(prompts),
            "--concurrency", "1", "2", "--requests", "6", "--warmup", "0", "--out-dir", str(tmp_path / "out")]
    assert bench.main(argv) == 0
    report = json.loads((tmp_path / "replay.json").read_text())
    assert report["kind"] == "replay" and report["targets"][0]["model"] == MODEL
    assert report["settings"]["prompts"] == 3 and report["settings"]["max_tokens"] == [7]
    assert [r["concurrency"] for r in report["runs"]] == [1, 2]
    for run in report["runs"]:
        assert RUN_KEYS <= set(run) and run["errors"] == 0 and run["requests"] == 6 and run["token_source"] == "usage"
        # The engine counted the same prompts on both sides.
        assert run["prompt_tokens_mean"] == ask["runs"][0]["prompt_tokens_mean"]
    replayed = engine.chat_requests[replayed_from:]
    assert [b["messages"] for b in replayed[:6]] == [lines[i % 3]["body"]["messages"] for i in range(6)]  # c=1: in order
    assert all(b["max_tokens"] == 7 and b["stream"] and b["stream_options"] == {"include_usage": True} for b in replayed)
    assert (tmp_path / "out" / "replay.md").read_text().startswith("## Replay")


def test_replay_refuses_a_file_without_recorded_requests(tmp_path, capsys):
    empty = tmp_path / "prompts.jsonl"
    empty.write_text('{"path": "/v1/chat/completions", "body": {"model": "m"}}\n')
    with pytest.raises(SystemExit) as exited:
        bench.main(["replay", "--url", "http://127.0.0.1:9/v1", "--prompts", str(empty)])
    assert exited.value.code == 2 and "not a recorded chat request" in capsys.readouterr().err
