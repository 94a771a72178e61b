"""The load reports' PNG plots (matplotlib, an optional dependency: the `bench` extra)."""

from __future__ import annotations

import math
from pathlib import Path


def write_plots(report: dict, out_dir: Path) -> list[Path]:
    """`<kind>_throughput.png` (req/s and output tok/s) and `<kind>_ttft.png` (TTFT p50 and p99) against
    concurrency, one line per target. Agg canvases: no display, no pyplot global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    levels = sorted({r["concurrency"] for r in report["runs"]})
    names = [t["name"] for t in report["targets"]]

    def series(name: str, key: str) -> list[float]:
        by = {r["concurrency"]: r[key] for r in report["runs"] if r["target"] == name}
        return [math.nan if by.get(c) is None else by[c] for c in levels]  # NaN: a gap, not a zero

    def axes_for(ax, ylabel: str) -> None:
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()

    paths = []
    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, key, label in zip(fig.subplots(1, 2), ("req_s", "output_tok_s"), ("requests/s", "output tokens/s")):
        for name in names:
            ax.plot(levels, series(name, key), marker="o", label=name)
        axes_for(ax, label)
    fig.suptitle(f"{report['kind']}: throughput")
    paths.append(out_dir / f"{report['kind']}_throughput.png")
    fig.savefig(paths[-1], dpi=100)

    fig = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name in names:
        line, = ax.plot(levels, series(name, "ttft_p50_ms"), marker="o", label=f"{name} p50")
        ax.plot(levels, series(name, "ttft_p99_ms"), marker="x", linestyle="--", color=line.get_color(), label=f"{name} p99")
    axes_for(ax, "time to first token, ms")
    fig.suptitle(f"{report['kind']}: time to first token")
    paths.append(out_dir / f"{report['kind']}_ttft.png")
    fig.savefig(paths[-1], dpi=100)
    return paths
