"""The tensor-parallel report's limits (benchmarks/gpu/tp_combine.py): parameter counts against the published
Llama-3.1 sizes, the bandwidth/compute bounds, and reading `vllm bench serve` result files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("tp_combine", ROOT / "benchmarks/gpu/tp_combine.py")
tp_combine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tp_combine)


def shape(size: str, vocab: int | None = None) -> dict:
    cfg = json.loads(tp_combine.SHAPES[size].read_text())
    return {**cfg, "vocab_size": vocab} if vocab else cfg


@pytest.mark.parametrize(("size", "published"), [("8b", 8_030_261_248), ("70b", 70_553_706_496)])
def test_parameter_count_matches_the_published_model_with_llama_vocabulary(size, published):
    # The shapes use a 49,152-token tokenizer; with Llama 3.1's own 128,256 the count is Meta's exactly.
    assert tp_combine.params(shape(size, vocab=128_256)) == published


def test_fp8_halves_the_linear_layers_only():
    cfg = shape("70b")
    linear, other = tp_combine.param_counts(cfg)
    assert tp_combine.weight_bytes(cfg, None) == 2 * (linear + other)
    assert tp_combine.weight_bytes(cfg, "fp8") == linear + 2 * other


def test_tensor_parallel_doubles_both_bounds_and_single_stream_is_bandwidth_bound():
    cfg = shape("70b")
    one, two = tp_combine.limits(cfg, 1, 1), tp_combine.limits(cfg, 2, 1)
    assert two["memory_bound_tok_s"] == pytest.approx(2 * one["memory_bound_tok_s"], abs=0.2)
    assert two["compute_bound_tok_s"] == pytest.approx(2 * one["compute_bound_tok_s"], abs=0.2)
    assert one["bound_by"] == "memory bandwidth"
    # 138.5 GB of bf16 weights (plus one sequence's KV cache) read per token at 2 x 4.8 TB/s.
    assert two["bound_tok_s"] == pytest.approx(69.1, abs=0.1)


def test_prefill_compute_can_be_the_bound_at_high_concurrency():
    limit = tp_combine.limits(shape("70b"), 1, 64, "fp8")
    assert limit["bound_by"].startswith("compute")
    assert limit["bound_tok_s"] == limit["compute_bound_tok_s"] < limit["memory_bound_tok_s"]


def test_run_record_reads_a_bench_result_and_its_server_log(tmp_path):
    result = {"completed": 12, "failed": 0, "output_throughput": 34.05, "request_throughput": 0.133,
              "median_ttft_ms": 120.0, "p99_ttft_ms": 150.0, "median_tpot_ms": 29.0, "p99_tpot_ms": 29.5}
    (tmp_path / "llama-70b-tp2-c1.json").write_text(json.dumps(result))
    (tmp_path / "llama-70b-tp2-startup.json").write_text('{"startup_s": 300}')
    (tmp_path / "llama-70b-tp2-server.log").write_text("INFO GPU KV cache size: 191,680 tokens\n")
    (tmp_path / "unrelated-c1.json").write_text("{}")
    record = tp_combine.run_record(tmp_path / "llama-70b-tp2-c1.json")
    assert (record["tensor_parallel"], record["concurrency"], record["quantization"]) == (2, 1, None)
    assert record["fraction_of_bound"] == pytest.approx(0.5, abs=0.01)
    assert (record["server_startup_s"], record["kv_cache_tokens"]) == (300, 191_680)
    assert tp_combine.run_record(tmp_path / "unrelated-c1.json") is None
