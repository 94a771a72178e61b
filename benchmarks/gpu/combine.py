"""Combine one GPU run (benchmarks/gpu/bench.sh) into the committed result: JSON, markdown and two plots.

Per concurrency level, side by side: the appliance's streaming /ask measured by `cli.bench ask`; **replay**,
the exact chat requests /ask sent (recorded by `cli.bench record`) sent straight to vLLM by `cli.bench replay`
with the same client, levels and answer length: the baseline of the ratio (`ratio_vs_replay`), since both
sides send the engine the same prompts (prefix-cache hits included); raw vLLM measured by `vllm bench serve`
(random prompts of the RAG prompt's size, no prefix reuse: the second reference, `ratio`); and vLLM's chat
endpoint measured by `cli.bench raw` (the load generator's own cost). `overload`: cli.bench soak's overload
phase against a backend with ASK_MAX_IN_FLIGHT=64 (bench.sh), when it ran.

    python benchmarks/gpu/combine.py --raw-dir DIR --prompt-tokens N --output-tokens M --out-dir OUT
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
from importlib.metadata import version
from pathlib import Path

MODEL = "Llama-3.1-8B shape (benchmarks: ../shared/gpu/llama-3.1-8b-shape), bf16, --load-format dummy"


def device_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def device_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100'."""
    found = re.search(r"\b([A-Z]\d{2,4}[A-Z]?)\b", name)
    return found.group(1).lower() if found else "gpu"


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _run(path: Path) -> dict:
    """The first run of a cli.bench report, or {} when that tool did not run."""
    return json.loads(path.read_text())["runs"][0] if path.exists() else {}


def replay_fields(ask: dict, replay: dict) -> dict:
    """The fair comparison: /ask against the replay of its own prompts (same client, level and answer length)."""
    return {
        "replay_req_s": replay.get("req_s"),
        "ask_req_s": ask["req_s"],
        "ratio_vs_replay": ratio(ask["req_s"], replay.get("req_s")),
        "replay_tok_s": replay.get("output_tok_s"),
        "tok_ratio_vs_replay": ratio(ask["output_tok_s"], replay.get("output_tok_s")),
        "replay_ttft_p50_ms": replay.get("ttft_p50_ms"),
        "ask_ttft_p50_ms": ask["ttft_p50_ms"],
        "ttft_overhead_vs_replay_p50_ms": round(ask["ttft_p50_ms"] - replay["ttft_p50_ms"], 1)
        if ask["ttft_p50_ms"] is not None and replay.get("ttft_p50_ms") is not None else None,
        "replay_ttft_p99_ms": replay.get("ttft_p99_ms"),
        "replay_tpot_p50_ms": replay.get("tpot_p50_ms"),
        "replay_errors": replay.get("errors"),
        "replay_prompt_tokens_mean": replay.get("prompt_tokens_mean"),
        "ask_prompt_tokens_mean": ask.get("prompt_tokens_mean"),
    }


STAGES = ("admission", "retrieval_wait", "query_embed", "search", "retrieval", "ttft", "generation")
_STAGE_LINE = re.compile(r'^rag_stage_duration_seconds_(sum|count)\{stage="([a-z_]+)"\} ([0-9.e+-]+)$', re.M)


_LAG_LINE = re.compile(r'^rag_event_loop_lag_seconds_(sum|count) ([0-9.e+-]+)$', re.M)


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _stage_totals(path: Path) -> dict[tuple[str, str], float]:
    """(stage, "sum" | "count") -> value; the event loop's lag probe (not a stage: how late the loop ran a 0.1 s
    probe) as the pseudo-stage "event_loop_lag"."""
    text = _read(path)
    totals = {(stage, kind): float(value) for kind, stage, value in _STAGE_LINE.findall(text)}
    totals.update({("event_loop_lag", kind): float(value) for kind, value in _LAG_LINE.findall(text)})
    return totals


def stage_means_ms(raw_dir: Path, c: int, tag: str = "") -> dict[str, float]:
    """Mean ms per answer of each stage during one /ask level (and the event loop's mean lag per probe): the
    difference of the backend's sums and counts scraped before and after it (bench.sh), warm-up included."""
    before = _stage_totals(raw_dir / f"metrics{tag}-c{c}-before.txt")
    after = _stage_totals(raw_dir / f"metrics{tag}-c{c}-after.txt")
    means = {}
    for stage in (*STAGES, "event_loop_lag"):
        count = after.get((stage, "count"), 0.0) - before.get((stage, "count"), 0.0)
        if count > 0:
            means[stage] = round((after[(stage, "sum")] - before.get((stage, "sum"), 0.0)) / count * 1000, 1)
    return means


def level_row(raw_dir: Path, c: int, tag: str = "") -> dict:
    raw = json.loads((raw_dir / f"vllm-c{c}.json").read_text())
    ask = json.loads((raw_dir / f"ask{tag}-c{c}.json").read_text())["runs"][0]
    chat = _run(raw_dir / f"chat-c{c}.json")
    replay = _run(raw_dir / f"replay-c{c}.json")
    raw_req_s, raw_tok_s = raw["request_throughput"], raw["output_throughput"]
    return {
        "concurrency": c,
        "requests": ask["requests"],
        **replay_fields(ask, replay),
        "raw_req_s": round(raw_req_s, 3),
        "ask_req_s": ask["req_s"],
        "ratio": ratio(ask["req_s"], raw_req_s),
        "raw_tok_s": round(raw_tok_s, 1),
        "ask_tok_s": ask["output_tok_s"],
        "tok_ratio": ratio(ask["output_tok_s"], raw_tok_s),
        "raw_ttft_p50_ms": round(raw["p50_ttft_ms"], 1),
        "ask_ttft_p50_ms": ask["ttft_p50_ms"],
        "ttft_overhead_p50_ms": round(ask["ttft_p50_ms"] - raw["p50_ttft_ms"], 1) if ask["ttft_p50_ms"] is not None else None,
        "raw_ttft_p99_ms": round(raw["p99_ttft_ms"], 1),
        "ask_ttft_p99_ms": ask["ttft_p99_ms"],
        "raw_tpot_p50_ms": round(raw["p50_tpot_ms"], 2),
        "ask_tpot_p50_ms": ask["tpot_p50_ms"],
        "raw_e2e_p50_ms": round(raw["p50_e2el_ms"], 1),
        "ask_e2e_p50_ms": ask["e2e_p50_ms"],
        "raw_errors": raw.get("failed", 0),
        "ask_errors": ask["errors"],
        "ask_error_types": ask["error_types"],
        "ask_answers_without_llm": ask.get("answers_without_llm", 0),
        "ask_token_source": ask["token_source"],
        # The same streaming client as /ask, straight to vLLM's chat endpoint.
        "chat_req_s": chat.get("req_s"),
        "chat_tok_s": chat.get("output_tok_s"),
        "chat_ttft_p50_ms": chat.get("ttft_p50_ms"),
        "ask_vs_chat_ratio": ratio(ask["req_s"], chat.get("req_s")),
        "raw_mean_output_tokens": round(raw["total_output_tokens"] / max(raw["completed"], 1), 1),
        "ask_stage_mean_ms": stage_means_ms(raw_dir, c, tag),
    }


def overload_section(raw_dir: Path) -> dict | None:
    """The soak's overload phase (bench.sh's `overload` tool), with its settings; None when it did not run."""
    path = raw_dir / "overload" / "soak.json"
    if not path.exists():
        return None
    soak = json.loads(path.read_text())
    o, run = soak.get("overload") or {}, soak["runs"][0]
    return {
        "backend": "ASK_MAX_IN_FLIGHT=64 ASK_QUEUE_SIZE=16 ASK_QUEUE_TIMEOUT_S=30",
        "offered_c": o.get("offered_c"),
        "accepted": o.get("accepted"),
        "accepted_req_s": o.get("accepted_req_s"),
        "accepted_ttft_p50_ms": o.get("accepted_ttft_p50_ms"),
        "accepted_ttft_p99_ms": o.get("accepted_ttft_p99_ms"),
        "unloaded_c": run["concurrency"],
        "unloaded_ttft_p99_ms": run["ttft_p99_ms"],
        "accepted_ttft_p99_vs_unloaded": o.get("ttft_p99_vs_baseline"),
        "shed": o.get("shed"),
        "shed_p50_ms": o.get("shed_p50_ms"),
        "shed_p99_ms": o.get("shed_p99_ms"),
        "queue_timeouts": o.get("queue_timeouts"),
        "other_errors": o.get("other_errors"),
    }


def markdown(result: dict) -> str:
    lines = [
        f"# GPU run: {result['device']}, vLLM {result['vllm_version']}, {result['date']}",
        "",
        f"Model: {result['model']}. RAG prompt {result['prompt_tokens']} tokens (top_k 5 over docs/), answers "
        f"{result['output_tokens']} tokens. raw = `vllm bench serve` (same prompt/answer sizes, --ignore-eos); "
        "ask = the appliance's streaming POST /ask (`cli.bench ask`); chat = `cli.bench raw` straight to vLLM.",
        "",
        "| c | raw req/s | ask req/s | ratio | raw tok/s | ask tok/s | TTFT p50 raw / ask ms | overhead ms | TTFT p99 raw / ask ms | TPOT p50 raw / ask ms | chat req/s | ask errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['concurrency']} | {r['raw_req_s']} | {r['ask_req_s']} | **{r['ratio']}** | {r['raw_tok_s']} | {r['ask_tok_s']} | "
            f"{r['raw_ttft_p50_ms']} / {r['ask_ttft_p50_ms']} | {r['ttft_overhead_p50_ms']} | {r['raw_ttft_p99_ms']} / {r['ask_ttft_p99_ms']} | "
            f"{r['raw_tpot_p50_ms']} / {r['ask_tpot_p50_ms']} | {r['chat_req_s']} | {r['ask_errors']} |"
        )
    if any(r.get("replay_req_s") is not None for r in result["runs"]):
        lines += [
            "",
            "Against the replay of /ask's own prompts (`cli.bench replay`: same prompts, sampling, client, levels):",
            "",
            "| c | replay req/s | ask req/s | **ratio_vs_replay** | TTFT p50 replay / ask ms | overhead ms | prompt tokens replay / ask |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in result["runs"]:
            lines.append(
                f"| {r['concurrency']} | {r['replay_req_s']} | {r['ask_req_s']} | **{r['ratio_vs_replay']}** | "
                f"{r['replay_ttft_p50_ms']} / {r['ask_ttft_p50_ms']} | {r['ttft_overhead_vs_replay_p50_ms']} | "
                f"{r['replay_prompt_tokens_mean']} / {r['ask_prompt_tokens_mean']} |"
            )
    if any(r.get("ask_stage_mean_ms") for r in result["runs"]):
        lines += [
            "",
            "Where /ask's time goes (ms per answer, mean, from the backend's `rag_stage_duration_seconds` scraped "
            "before and after each level; query_embed includes the wait for the next batched pass):",
            "",
            "| c | " + " | ".join(STAGES) + " | event loop lag |",
            "|---:|" + "---:|" * (len(STAGES) + 1),
        ]
        for r in result["runs"]:
            means = r.get("ask_stage_mean_ms") or {}
            lines.append(f"| {r['concurrency']} | " + " | ".join(str(means.get(st, "")) for st in (*STAGES, "event_loop_lag")) + " |")
    o = result.get("overload")
    if o:
        lines += [
            "",
            f"Overload ({o['backend']}): {o['offered_c']} streams offered; {o['accepted']} accepted, TTFT p99 "
            f"{o['accepted_ttft_p99_ms']} ms ({o['accepted_ttft_p99_vs_unloaded']}x c={o['unloaded_c']}'s {o['unloaded_ttft_p99_ms']} ms); "
            f"{o['shed']} shed in p99 {o['shed_p99_ms']} ms; queue timeouts {o['queue_timeouts']}, other errors {o['other_errors']}.",
        ]
    return "\n".join(lines) + "\n"


def plots(result: dict, out_dir: Path, stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [r["concurrency"] for r in result["runs"]]
    for metric, label, keys in (
        ("throughput", "output tokens/s", ("raw_tok_s", "replay_tok_s", "ask_tok_s")),
        ("ttft", "TTFT p50, ms", ("raw_ttft_p50_ms", "replay_ttft_p50_ms", "ask_ttft_p50_ms")),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, name in zip(keys, ("vllm bench serve (random prompts)", "replay of /ask's prompts", "/ask")):
            if any(r.get(key) is None for r in result["runs"]):
                continue
            ax.plot(levels, [r[key] for r in result["runs"]], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency")
        ax.set_ylabel(label)
        ax.set_title(f"{result['device']}: {label}")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / f"{stem}-{metric}.png", dpi=110)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", type=Path, required=True)
    parser.add_argument("--tag", default="", help="which /ask run (bench.sh's TAG), e.g. -before")
    parser.add_argument("--prompt-tokens", type=int, required=True)
    parser.add_argument("--output-tokens", type=int, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--device", default=None, help="default: nvidia-smi's GPU name (to combine a run elsewhere)")
    parser.add_argument("--vllm-version", default=None, help="default: the installed vllm's")
    parser.add_argument("--date", default=None, help="default: today")
    args = parser.parse_args()
    levels = sorted(int(p.stem.split("-c")[1]) for p in args.raw_dir.glob("vllm-c*.json"))
    device = args.device or device_name()
    date = args.date or dt.date.today().isoformat()
    result = {
        "device": device,
        "vllm_version": args.vllm_version or version("vllm"),
        "model": MODEL,
        "date": date,
        "prompt_tokens": args.prompt_tokens,
        "output_tokens": args.output_tokens,
        "commands": [
            "bash benchmarks/gpu/setup.sh",
            f"LEVELS='{' '.join(map(str, levels))}' OUTPUT_TOKENS={args.output_tokens} TAG='{args.tag}' bash benchmarks/gpu/bench.sh",
            "(replay: cli.bench record + one pass of cli.bench ask at c=1, then cli.bench replay per level; see bench.sh)",
        ],
        "runs": [level_row(args.raw_dir, c, args.tag) for c in levels if (args.raw_dir / f"ask{args.tag}-c{c}.json").exists()],
        "overload": overload_section(args.raw_dir),
    }
    stem = f"gpu-{device_slug(device)}-{date}{args.tag}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out_dir / f"{stem}.md").write_text(markdown(result))
    plots(result, args.out_dir, stem)
    print(markdown(result))


if __name__ == "__main__":
    main()
