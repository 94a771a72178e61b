"""A load run's report: its JSON frame, the markdown summary, and the files `--out-dir` gets."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from cli.loadgen.plots import write_plots
from cli.loadgen.runner import requests_per_level
from cli.loadgen.targets import Target


def build_report(kind: str, targets: list[Target], args, settings: dict, rows: list[dict], started_at: str) -> dict:
    """The report's frame: kind, start, targets (without keys), the run's settings and one row per level."""
    return {
        "kind": kind,
        "started_at": started_at,
        "targets": [t.public() for t in targets],
        "settings": {
            "concurrency": args.concurrency,
            "requests_per_level": requests_per_level(args),
            "duration_s": args.duration,
            "warmup": args.warmup,
            **settings,
        },
        "runs": rows,
    }


def now() -> str:
    """UTC, to the second (a report's `started_at`)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


TITLES = {
    "ask": "`POST /ask` load (streaming)",
    "ab": "A/B: `POST /ask` on two backends",
    "raw": "Raw `POST /v1/chat/completions` load (streaming)",
    "replay": "Replay: the prompts /ask sent, straight to the engine (streaming)",
}


def _pair(a, b) -> str:
    return f"{'-' if a is None else a} / {'-' if b is None else b}"


def markdown(report: dict) -> str:
    """The report as markdown: targets, settings, one row per target and level, errors, ratios, agreement."""
    lines = [f"## {TITLES[report['kind']]}", "", f"Started {report['started_at']}."]
    for t in report["targets"]:
        lines.append(f"- **{t['name']}**: {t['url']} (engine {t['engine'] or '?'}, model {t['model'] or '?'})")
    lines.append(f"- settings: {', '.join(f'{k}={v}' for k, v in report['settings'].items() if v is not None)}")
    lines += [
        "",
        "| target | concurrency | requests | errors | req/s | output tok/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms | e2e p50 / p99 ms | tokens from |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['target']} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['req_s']} | {r['output_tok_s']} | "
            f"{_pair(r['ttft_p50_ms'], r['ttft_p99_ms'])} | {_pair(r['tpot_p50_ms'], r['tpot_p99_ms'])} | "
            f"{_pair(r['e2e_p50_ms'], r['e2e_p99_ms'])} | {r['token_source'] or '-'} |"
        )
    without_llm = [r for r in report["runs"] if r["answers_without_llm"]]
    if without_llm:
        lines += ["", "Answered without the LLM (nothing relevant found in the space; fast, so they flatter the figures):"]
        lines += [f"- {r['target']} c={r['concurrency']}: {r['answers_without_llm']} of {r['requests']}" for r in without_llm]
    failed = [r for r in report["runs"] if r["errors"]]
    if failed:
        lines += ["", "Errors by type:"]
        lines += [f"- {r['target']} c={r['concurrency']}: " + ", ".join(f"{k} x{v}" for k, v in r["error_types"].items()) for r in failed]
    if "ratios" in report:
        lines += ["", f"Ratios ({report['ratios']['of']}):", "", "| concurrency | req/s | output tok/s |", "|---:|---:|---:|"]
        lines += [f"| {x['concurrency']} | {x['req_s']} | {x['output_tok_s']} |" for x in report["ratios"]["levels"]]
    if "agreement" in report:
        a = report["agreement"]
        lines += [
            "",
            f"Answer agreement at concurrency {a['concurrency']} over {a['questions_compared']} questions answered by both: "
            f"cited sources Jaccard {a['cited_sources_jaccard']}, sources given to the model Jaccard {a['sources_jaccard']}, "
            f"answer text similarity {a['answer_similarity']}.",
        ]
    return "\n".join(lines) + "\n"


def publish(report: dict, out_dir: Path | None) -> None:
    """Print the summary; with `out_dir`, write `<kind>.md`, `<kind>.json` and the plots there."""
    text = markdown(report)
    print("\n" + text)
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        kind = report["kind"]
        (out_dir / f"{kind}.md").write_text(text, encoding="utf-8")
        (out_dir / f"{kind}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        written = [out_dir / f"{kind}.md", out_dir / f"{kind}.json", *write_plots(report, out_dir)]
        print("written: " + ", ".join(str(p) for p in written))
