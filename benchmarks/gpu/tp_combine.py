"""Tensor-parallel runs (benchmarks/gpu/tp.sh) -> one JSON, each figure next to its physical limit.

The limit of decoding is memory bandwidth: every step reads all the weights once, plus each sequence's KV
cache. With TP=n the weights and the KV cache are split over n GPUs that read in parallel, so
    single stream  tok/s <= n * BW / (weights + KV(context))
    c streams      tok/s <= c * n * BW / (weights + c * KV(context))
with the context at its mean during decoding (input + half the output). Compute (2 FLOPs per parameter per
token) is far from binding at these batch sizes on H200s and is reported for reference.

    python benchmarks/gpu/tp_combine.py --runs-dir DIR --out benchmarks/results/gpu-h200x2-tp-<date>.json [--machine TEXT]
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

BF16 = 2
# NVIDIA's H200 SXM datasheet: 4.8 TB/s HBM3e, 989 TFLOPS dense BF16 (1979 with sparsity).
H200_BW = 4.8e12
H200_BF16_FLOPS = 989e12
INPUT, OUTPUT = 1024, 256
ROOT = Path(__file__).resolve().parents[2]
SHAPES = {"8b": Path("/work/shared/gpu/llama-3.1-8b-shape/config.json"),
          "70b": ROOT / "benchmarks/gpu/shapes/llama-3.1-70b-shape/config.json"}


def params(cfg: dict) -> int:
    h, layers, inter, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    head_dim = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * head_dim, cfg["num_key_value_heads"] * head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * inter + 2 * h
    return 2 * vocab * h + layers * per_layer + h  # embeddings, untied lm_head, layers, final norm


def kv_bytes_per_token(cfg: dict) -> int:
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return cfg["num_hidden_layers"] * 2 * cfg["num_key_value_heads"] * head_dim * BF16


def limits(cfg: dict, tp: int, concurrency: int) -> dict:
    weights = params(cfg) * BF16
    kv_seq = kv_bytes_per_token(cfg) * (INPUT + OUTPUT / 2)
    step_bytes = weights + concurrency * kv_seq
    return {
        "weights_gb": round(weights / 1e9, 2),
        "kv_cache_gb_per_sequence": round(kv_seq / 1e9, 3),
        "bandwidth_tb_s": tp * H200_BW / 1e12,
        "memory_bound_tok_s": round(concurrency * tp * H200_BW / step_bytes, 1),
        "compute_bound_tok_s": round(tp * H200_BF16_FLOPS / (2 * params(cfg)), 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--machine", default="nvidia-h200-x2 (lent): 2x NVIDIA H200 141 GB", help="what ran it")
    args = parser.parse_args()
    runs = []
    for path in sorted(args.runs_dir.glob("llama-*-tp*-c*.json")):
        name, _, c = path.stem.rpartition("-c")
        size, tp = name.split("-")[1], int(name.split("-tp")[1])
        result = json.loads(path.read_text())
        cfg = json.loads(SHAPES[size].read_text())
        limit = limits(cfg, tp, int(c))
        startup = args.runs_dir / f"{name}-startup.json"
        runs.append({
            "model_shape": f"Llama-3.1-{size.upper()} (dummy weights, bf16, vocab {cfg['vocab_size']})",
            "tensor_parallel": tp,
            "concurrency": int(c),
            "requests": result.get("completed"),
            "failed": result.get("failed", 0),
            "output_tok_s": round(result["output_throughput"], 1),
            "request_s": round(result["request_throughput"], 3),
            "ttft_ms": {"p50": round(result["median_ttft_ms"], 1), "p99": round(result["p99_ttft_ms"], 1)},
            "tpot_ms": {"p50": round(result["median_tpot_ms"], 2), "p99": round(result["p99_tpot_ms"], 2)},
            "limit": limit,
            "fraction_of_memory_bound": round(result["output_throughput"] / limit["memory_bound_tok_s"], 3),
            "server_startup_s": json.loads(startup.read_text())["startup_s"] if startup.exists() else None,
        })
    report = {
        "date": date.today().isoformat(),
        "machine": args.machine,
        "gpus": (args.runs_dir / "gpus.csv").read_text().strip().splitlines()[1:] if (args.runs_dir / "gpus.csv").exists() else None,
        "engine": "vLLM 0.26.0 (shared GPU kit), --load-format dummy, --max-model-len 4096, --gpu-memory-utilization 0.90",
        "workload": f"vllm bench serve, random prompts, {INPUT} tokens in / {OUTPUT} out, ignore_eos; c=1: 12 requests, c=64: 256",
        "command": "on the device: setsid bash benchmarks/gpu/tp.sh; here: python benchmarks/gpu/tp_combine.py --runs-dir DIR --out FILE",
        "limits_method": __doc__.split("\n\n")[1].strip(),
        "runs": runs,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for run in runs:
        print(f"{run['model_shape'][:14]} TP={run['tensor_parallel']} c={run['concurrency']}: {run['output_tok_s']} tok/s "
              f"({run['fraction_of_memory_bound']:.0%} of {run['limit']['memory_bound_tok_s']}), TPOT p50 {run['tpot_ms']['p50']} ms")


if __name__ == "__main__":
    main()
