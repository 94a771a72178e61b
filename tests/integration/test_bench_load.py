"""The load benchmarks (`python -m cli.bench ask | ab | raw`) against real backend processes.

Two backends (`python -m backend`) serve one small indexed space: one answers with Ollama, the other with
vLLM; fixed-latency stand-ins play the engines (tests/support: Ollama's API, and vLLM's OpenAI API, which
`raw` also drives directly). Both have API keys (a '*' key on one, a key for the space on the other), so
the benchmarks send them. Only the reports' structure is checked, never figures.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from backend.errors import EXIT_AUTH, EXIT_UNREACHABLE
from cli import bench, loadgen
from cli.local_backend import free_port, start_backend, stop_backend
from tests.support.ollama_server import FakeModel, FakeOllama
from tests.support.openai_server import FakeChatModel, FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
SPACE = "docs"
OLLAMA_MODEL = "llama3.1:8b"
VLLM_MODEL = "fake-vllm"
ANSWER = "The backend serves on port 8000 by default [1]."
KEYS = {"ollama": "bench-ollama-key-0123456789", "vllm": "bench-vllm-key-0123456789"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_KEYS = {
    "target", "concurrency", "requests", "errors", "error_types", "req_s", "output_tok_s", "ttft_p50_ms", "ttft_p99_ms",
    "tpot_p50_ms", "tpot_p99_ms", "e2e_p50_ms", "e2e_p99_ms", "token_source", "prompt_tokens_mean", "answers_without_llm",
}


@pytest.fixture(scope="module")
def engines():
    """The two engines' stand-ins, a few ms per token."""
    with FakeOllama({OLLAMA_MODEL: FakeModel(answer=ANSWER, token_delay_s=0.002)}) as ollama, \
            FakeOpenAI({VLLM_MODEL: FakeChatModel(answer=ANSWER, token_delay_s=0.002)}) as openai:
        yield ollama, openai


@pytest.fixture(scope="module")
def backends(engines, tmp_path_factory, model_cache, embedder):
    """{"ollama": url, "vllm": url}: two backend processes, started side by side, each with the space indexed.

    `embedder` is requested so that the ONNX export is in `model_cache` before both processes load it."""
    ollama, openai = engines
    common = {"MODEL_CACHE_DIR": str(model_cache), "LOG_LEVEL": "warning", "ASK_MIN_SCORE": "-1"}  # every question reaches the LLM
    envs = {
        "ollama": {"LLM_BACKEND": "ollama", "OLLAMA_BASE_URL": ollama.url, "OLLAMA_MODEL": OLLAMA_MODEL},
        "vllm": {"LLM_BACKEND": "vllm", "VLLM_BASE_URL": f"{openai.url}/v1", "VLLM_MODEL": VLLM_MODEL},
    }
    keys = {"ollama": f"{KEYS['ollama']}=*", "vllm": f"{KEYS['vllm']}={SPACE}"}
    with ThreadPoolExecutor(2) as pool:
        started = {
            name: pool.submit(
                start_backend, {**common, **env, "API_KEYS": keys[name], "DATA_DIR": str(tmp_path_factory.mktemp(f"data-{name}"))}
            )
            for name, env in envs.items()
        }
        procs = {name: future.result() for name, future in started.items()}
    try:
        doc = (ROOT / "docs" / "getting-started.md").read_bytes()
        for name, (_, url) in procs.items():
            response = httpx.post(
                f"{url}/documents", data={"space_id": SPACE}, files={"file": ("getting-started.md", doc)},
                headers={"Authorization": f"Bearer {KEYS[name]}"}, timeout=120,
            )
            assert response.status_code == 201, response.text
        yield {name: url for name, (_, url) in procs.items()}
    finally:
        for proc, _ in procs.values():
            stop_backend(proc)


def load_report(path: Path) -> dict:
    report = json.loads(path.read_text())
    assert {"kind", "started_at", "targets", "runs", "settings", "machine"} <= report.keys()
    for run in report["runs"]:
        assert RUN_KEYS <= run.keys()
    return report


def assert_files(out_dir: Path, kind: str) -> None:
    assert (out_dir / f"{kind}.md").read_text().count("\n|") >= 3  # header, rule, rows
    assert json.loads((out_dir / f"{kind}.json").read_text())["kind"] == kind
    for plot in ("throughput", "ttft"):
        data = (out_dir / f"{kind}_{plot}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_ask_measures_every_level(backends, tmp_path):
    out = tmp_path / "ask.json"
    argv = ["--json", str(out), "ask", "--url", backends["ollama"], "--space", SPACE, "--api-key", KEYS["ollama"], "--concurrency", "1", "2",
            "--requests", "4", "--max-tokens", "32", "--out-dir", str(tmp_path / "out")]
    assert bench.main(argv) == 0
    report = load_report(out)
    assert report["kind"] == "ask"
    assert report["targets"] == [{"name": "backend", "url": backends["ollama"], "engine": "ollama", "model": OLLAMA_MODEL}]
    assert report["settings"]["questions"] == len(loadgen.QUESTIONS)
    assert [(r["concurrency"], r["requests"], r["errors"]) for r in report["runs"]] == [(1, 4, 0), (2, 4, 0)]
    for run in report["runs"]:
        assert run["token_source"] == "usage"  # Ollama's eval_count, passed on in the final event
        assert run["req_s"] > 0 and run["output_tok_s"] > 0
        assert run["ttft_p50_ms"] <= run["ttft_p99_ms"] and run["e2e_p50_ms"] <= run["e2e_p99_ms"]
        assert run["tpot_p50_ms"] is not None and run["answers_without_llm"] == 0
    assert_files(tmp_path / "out", "ask")


def test_ab_compares_two_backends_on_the_same_questions(backends, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"q": "Which port does the backend use?"}\n\nHow do I index a folder?\n{"q": "Where do CLI files go?"}\n')
    out_dir = tmp_path / "out"
    argv = ["ab", "--target", f"ollama={backends['ollama']}", "--target", f"vllm={backends['vllm']}", "--space", SPACE,
            "--api-key", KEYS["ollama"], KEYS["vllm"], "--questions", str(questions), "--concurrency", "1", "2", "--requests", "3", "--out-dir", str(out_dir)]
    assert bench.main(argv) == 0
    report = load_report(out_dir / "ab.json")
    assert [(t["name"], t["engine"], t["model"]) for t in report["targets"]] == [("ollama", "ollama", OLLAMA_MODEL), ("vllm", "vllm", VLLM_MODEL)]
    # targets in turn within each level
    assert [(r["concurrency"], r["target"], r["requests"], r["errors"]) for r in report["runs"]] == [
        (1, "ollama", 3, 0), (1, "vllm", 3, 0), (2, "ollama", 3, 0), (2, "vllm", 3, 0),
    ]
    assert report["ratios"]["of"] == "vllm / ollama"
    assert [x["concurrency"] for x in report["ratios"]["levels"]] == [1, 2]
    assert all(x["req_s"] > 0 and x["output_tok_s"] > 0 for x in report["ratios"]["levels"])
    agreement = report["agreement"]
    assert agreement["concurrency"] == 1 and agreement["questions_compared"] == 3
    for key in ("cited_sources_jaccard", "sources_jaccard", "answer_similarity"):
        assert 0 <= agreement[key] <= 1
    assert_files(out_dir, "ab")
    assert "Ratios (vllm / ollama)" in (out_dir / "ab.md").read_text()
    assert not any(key in (out_dir / name).read_text() for key in KEYS.values() for name in ("ab.md", "ab.json"))


def test_a_refused_key_stops_the_run_with_exit_2(backends, engines, tmp_path, capsys, monkeypatch):
    """401/403 are no load figures: the run stops before the load (exit 2), says why, never echoes the key."""
    ollama, openai = engines
    monkeypatch.delenv("BACKEND_API_KEY", raising=False)
    monkeypatch.delenv("ENV_FILE", raising=False)
    monkeypatch.chdir(tmp_path)  # no developer's .env
    sent = len(ollama.bodies("/api/chat")) + len(openai.chat_requests)
    ask = ["ask", "--space", SPACE, "--concurrency", "2", "--requests", "4"]
    for argv, expected in (
        ([*ask, "--url", backends["ollama"]], "refused the request sent without an API key: HTTP 401"),
        ([*ask, "--url", backends["ollama"], "--api-key", "wrong-key-0123456789abc"], "with an API key: HTTP 401"),
        ([*ask, "--url", backends["vllm"], "--api-key", KEYS["vllm"], "--space", "other"], "HTTP 403, this API key does not cover space 'other'"),
        # one key for both targets: the second refuses it
        (["ab", "--target", f"ollama={backends['ollama']}", f"vllm={backends['vllm']}", "--space", SPACE, "--api-key", KEYS["ollama"]],
         f"vllm: {backends['vllm']} refused the request sent with an API key: HTTP 401"),
    ):
        assert bench.main(argv) == EXIT_AUTH == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "--api-key or BACKEND_API_KEY" in err, err
        assert not any(key in err for key in KEYS.values())
    assert len(ollama.bodies("/api/chat")) + len(openai.chat_requests) == sent  # nothing reached an engine
    with pytest.raises(SystemExit) as exit_info:  # three keys for two targets
        bench.main(["ab", "--target", f"a={backends['ollama']}", f"b={backends['vllm']}", "--space", SPACE, "--api-key", "k1", "k2", "k3"])
    assert exit_info.value.code == 2

    # The default: BACKEND_API_KEY, from the environment or the env file, as the other CLIs read it.
    monkeypatch.setenv("BACKEND_API_KEY", KEYS["ollama"])
    out = tmp_path / "ask.json"
    assert bench.main(["--json", str(out), *ask, "--url", backends["ollama"], "--warmup", "0"]) == 0
    assert json.loads(out.read_text())["runs"][0]["errors"] == 0


def test_a_key_refused_in_the_middle_of_a_run_stops_every_worker(backends):
    """The probe catches a refused key first; should the backend start refusing it later (keys rotated), the
    first 401 ends the level: the other workers are cancelled, nothing is counted."""
    target = loadgen.Target("ollama", backends["ollama"], api_key="rotated-key-0123456789abc")
    body = {"q": "Which port?", "space_id": SPACE, "stream": True}

    async def run() -> None:
        async with loadgen.make_client(8, 30) as http:
            backend = target.client(http)
            await loadgen.run_level(lambda i: loadgen.ask_once(backend, target, body, i), 8, 10_000, None, "refused")

    with pytest.raises(loadgen.AuthRejected, match="HTTP 401"):
        asyncio.run(run())


def test_raw_streams_chat_completions_to_an_openai_server(engines, tmp_path):
    _, openai = engines
    sent_before = len(openai.chat_requests)
    out_dir = tmp_path / "out"
    argv = ["raw", "--url", f"{openai.url}/v1", "--concurrency", "1", "2", "--requests", "4", "--warmup", "0",
            "--prompt-tokens", "64", "--max-tokens", "5", "--ignore-eos", "--out-dir", str(out_dir)]
    assert bench.main(argv) == 0
    report = json.loads((out_dir / "raw.json").read_text())
    assert report["targets"] == [{"name": "raw", "url": f"{openai.url}/v1", "engine": "vllm", "model": VLLM_MODEL}]
    for run in report["runs"]:
        assert RUN_KEYS <= run.keys()
        assert (run["requests"], run["errors"], run["token_source"]) == (4, 0, "usage")
        assert run["output_tok_s"] > 0 and 60 <= run["prompt_tokens_mean"] <= 80  # the fake counts words
    sent = openai.chat_requests[sent_before:]
    assert len(sent) == 8
    assert all(b["stream"] and b["stream_options"] == {"include_usage": True} and b["max_tokens"] == 5 and b["ignore_eos"] for b in sent)
    assert len({b["messages"][0]["content"] for b in sent}) == 4  # requests 0-3 of each level: distinct prompts
    assert_files(out_dir, "raw")


def test_failed_requests_are_counted_not_fatal(backends, engines, tmp_path):
    ollama, openai = engines
    model = ollama.models[OLLAMA_MODEL]
    model.error_after_tokens = 2  # the answer breaks off: an SSE error event after the stream started
    openai.models[VLLM_MODEL].chat_status = 503
    try:
        ask_out, raw_out = tmp_path / "ask.json", tmp_path / "raw.json"
        assert bench.main(["--json", str(ask_out), "ask", "--url", backends["ollama"], "--space", SPACE, "--api-key", KEYS["ollama"],
                           "--concurrency", "2", "--requests", "4", "--warmup", "0"]) == 0
        assert bench.main(["--json", str(raw_out), "raw", "--url", f"{openai.url}/v1", "--concurrency", "2",
                           "--requests", "3", "--warmup", "0", "--prompt-tokens", "8", "--max-tokens", "4"]) == 0
    finally:
        model.error_after_tokens = None
        openai.models[VLLM_MODEL].chat_status = None
    (ask_run,) = load_report(ask_out)["runs"]
    assert (ask_run["requests"], ask_run["errors"], ask_run["error_types"]) == (4, 4, {"sse llm_bad_response": 4})
    assert ask_run["req_s"] == 0 and ask_run["ttft_p50_ms"] is None
    (raw_run,) = load_report(raw_out)["runs"]
    assert (raw_run["requests"], raw_run["errors"], raw_run["error_types"]) == (3, 3, {"503 InternalServerError": 3})


def test_unreachable_target_and_usage_errors(tmp_path, capsys):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert bench.main(["ask", "--url", dead, "--space", SPACE, "--requests", "1"]) == EXIT_UNREACHABLE
    assert f"no backend answers at {dead}" in capsys.readouterr().err
    assert bench.main(["raw", "--url", f"{dead}/v1", "--requests", "1"]) == EXIT_UNREACHABLE
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    for argv in (
        ["ab", "--target", f"one={dead}", "--space", SPACE],  # one target
        ["ab", "--target", "one", f"two={dead}", "--space", SPACE],  # not NAME=URL
        ["ask", "--url", dead, "--space", SPACE, "--concurrency", "0"],
        ["ask", "--url", dead, "--space", SPACE, "--questions", str(empty)],
    ):
        with pytest.raises(SystemExit) as exit_info:
            bench.main(argv)
        assert exit_info.value.code == 2, argv
