"""Tensor-parallel runs (benchmarks/gpu/tp.sh) -> one JSON, each figure next to its physical limit.

Decoding is bound by memory bandwidth: every step reads all the weights once, plus each sequence's KV cache.
With TP=n the weights and the KV cache are split over n GPUs that read in parallel, so
    single stream  tok/s <= n * BW / (weights + KV(context))
    c streams      tok/s <= c * n * BW / (weights + c * KV(context))
with the context at its mean during decoding (input + half the output). Every output token also carries its
share of the prompt's prefill, so compute bounds it too: 2 FLOPs per parameter per token, input + output tokens,
    tok/s <= n * FLOPS / (2 * params * (input + output) / output)
The limit is the smaller of the two (dense peak FLOPS, not reached in practice). With vLLM's online FP8 the
linear layers' weights are one byte each and run on FP8 tensor cores; embeddings, lm_head, norms and the KV
cache stay bf16.

    python benchmarks/gpu/tp_combine.py --runs-dir DIR [--runs-dir DIR2 ...] --out FILE [--machine TEXT]
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import date
from pathlib import Path

BF16 = 2
# NVIDIA's H200 SXM datasheet: 4.8 TB/s HBM3e, 989 TFLOPS dense BF16, 1979 dense FP8 (twice that with sparsity).
H200_BW = 4.8e12
H200_FLOPS = {None: 989e12, "fp8": 1979e12}
INPUT, OUTPUT = 1024, 256
ROOT = Path(__file__).resolve().parents[2]
SHAPES = {"8b": ROOT / "benchmarks/gpu/shapes/llama-3.1-8b-shape/config.json",  # the shared kit's shape
          "70b": ROOT / "benchmarks/gpu/shapes/llama-3.1-70b-shape/config.json"}
RUN_FILE = re.compile(r"llama-(?P<size>\d+b)-tp(?P<tp>\d+)(?:-(?P<quant>[a-z0-9]+))?-c(?P<c>\d+)")
KV_TOKENS = re.compile(r"GPU KV cache size: ([\d,]+) tokens")


def param_counts(cfg: dict) -> tuple[int, int]:
    """(parameters in the decoder layers' linear projections, all other parameters)."""
    h, layers, inter, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    head_dim = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * head_dim, cfg["num_key_value_heads"] * head_dim
    linear = layers * (h * q + 2 * h * kv + q * h + 3 * h * inter)
    return linear, 2 * vocab * h + layers * 2 * h + h  # embeddings, untied lm_head, layer norms, final norm


def params(cfg: dict) -> int:
    return sum(param_counts(cfg))


def weight_bytes(cfg: dict, quant: str | None) -> int:
    linear, other = param_counts(cfg)
    return linear * (1 if quant == "fp8" else BF16) + other * BF16


def kv_bytes_per_token(cfg: dict) -> int:
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return cfg["num_hidden_layers"] * 2 * cfg["num_key_value_heads"] * head_dim * BF16


def limits(cfg: dict, tp: int, concurrency: int, quant: str | None = None) -> dict:
    weights = weight_bytes(cfg, quant)
    kv_seq = kv_bytes_per_token(cfg) * (INPUT + OUTPUT / 2)
    memory = concurrency * tp * H200_BW / (weights + concurrency * kv_seq)
    compute = tp * H200_FLOPS[quant] / (2 * params(cfg) * (INPUT + OUTPUT) / OUTPUT)
    return {
        "weights_gb": round(weights / 1e9, 2),
        "kv_cache_gb_per_sequence": round(kv_seq / 1e9, 3),
        "bandwidth_tb_s": tp * H200_BW / 1e12,
        "memory_bound_tok_s": round(memory, 1),
        "compute_bound_tok_s": round(compute, 1),
        "bound_tok_s": round(min(memory, compute), 1),
        "bound_by": "memory bandwidth" if memory <= compute else "compute (prefill included)",
    }


def run_record(path: Path) -> dict | None:
    match = RUN_FILE.fullmatch(path.stem)
    if not match:
        return None
    size, tp, quant, c = match["size"], int(match["tp"]), match["quant"], int(match["c"])
    name = path.stem.rpartition("-c")[0]
    result = json.loads(path.read_text())
    cfg = json.loads(SHAPES[size].read_text())
    limit = limits(cfg, tp, c, quant)
    startup, server_log = path.with_name(f"{name}-startup.json"), path.with_name(f"{name}-server.log")
    kv_tokens = KV_TOKENS.search(server_log.read_text()) if server_log.exists() else None
    dtype = "bf16" if quant is None else f"{quant} weights (vLLM online quantization), bf16 KV cache"
    return {
        "model_shape": f"Llama-3.1-{size.upper()} (dummy weights, {dtype}, vocab {cfg['vocab_size']})",
        "quantization": quant,
        "tensor_parallel": tp,
        "concurrency": c,
        "requests": result.get("completed"),
        "failed": result.get("failed", 0),
        "output_tok_s": round(result["output_throughput"], 1),
        "request_s": round(result["request_throughput"], 3),
        "ttft_ms": {"p50": round(result["median_ttft_ms"], 1), "p99": round(result["p99_ttft_ms"], 1)},
        "tpot_ms": {"p50": round(result["median_tpot_ms"], 2), "p99": round(result["p99_tpot_ms"], 2)},
        "limit": limit,
        "fraction_of_bound": round(result["output_throughput"] / limit["bound_tok_s"], 3),
        "server_startup_s": json.loads(startup.read_text())["startup_s"] if startup.exists() else None,
        "kv_cache_tokens": int(kv_tokens[1].replace(",", "")) if kv_tokens else None,
        "raw": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs-dir", type=Path, action="append", required=True, help="repeatable")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--machine", default="nvidia-h200-x2 (lent): 2x NVIDIA H200 141 GB", help="what ran it")
    args = parser.parse_args()
    paths = [p.resolve() for d in args.runs_dir for p in sorted(d.glob("llama-*-tp*-c*.json"))]
    runs = [r for r in map(run_record, paths) if r]
    gpus = sorted({line for d in args.runs_dir if (d / "gpus.csv").exists()
                   for line in (d / "gpus.csv").read_text().strip().splitlines()[1:]})
    report = {
        "date": date.today().isoformat(),
        "machine": args.machine,
        "gpus": gpus or None,
        "engine": "vLLM 0.26.0 (shared GPU kit), --load-format dummy, --max-model-len 4096, --gpu-memory-utilization 0.90",
        "workload": f"vllm bench serve, random prompts, {INPUT} tokens in / {OUTPUT} out, ignore_eos; c=1: 12 requests, c=64: 256",
        "command": "on the device: RUNS='...' setsid bash benchmarks/gpu/tp.sh; here: python benchmarks/gpu/tp_combine.py --runs-dir DIR --out FILE",
        "limits_method": __doc__.split("\n\n")[1].strip(),
        "runs": runs,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for run in runs:
        limit = run["limit"]
        print(f"{run['model_shape'][:14]} {run['quantization'] or 'bf16'} TP={run['tensor_parallel']} c={run['concurrency']}: "
              f"{run['output_tok_s']} tok/s = {run['fraction_of_bound']:.0%} of {limit['bound_tok_s']} ({limit['bound_by']}), "
              f"TPOT p50 {run['tpot_ms']['p50']} ms, TTFT p50 {run['ttft_ms']['p50']} ms")


if __name__ == "__main__":
    main()
