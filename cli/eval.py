"""`python -m cli.eval`: retrieval quality of a space against a golden set, per retrieval mode.

    python -m cli.eval --golden eval/golden/docs.jsonl --dir docs --fresh
    python -m cli.eval --golden eval/golden/multilingual.jsonl --dir eval/corpora/multilingual --fresh
    python -m cli.eval --golden my.jsonl --space kb                       # a space that is already indexed
    python -m cli.eval --golden my.jsonl --space kb --url http://127.0.0.1:8000   # through a running backend
    python -m cli.eval citations --golden eval/golden/citations.jsonl   # the claim checker (cli/eval_citations.py)
    python -m cli.eval answers --golden eval/golden/answers.jsonl --dir eval/corpora/multilingual --fresh  # cli/eval_answers.py

A golden set is JSON lines: {"id", "question", "answers": [{"path", "passage"?}], "tags"?, "lang"?, "split"?}.
`split` keeps held-out questions apart (`test`: written before tuning, never tuned on; no split = `tune`):
when a set has both, every table is printed per split, and `--split` evaluates one of them only.
A retrieved chunk answers when its document path equals an answer's path and, if the answer names a
passage, the chunk's text contains it (whitespace collapsed, case folded). Metrics are per question,
at document level (a second chunk of an answer already found gains nothing), averaged:
  hit@k     an answer among the first k results
  MRR       1 / rank of the first answering result (0 if none in the first --depth)
  nDCG@k    discounted gain of the answers found, over the best possible for that many answers
Prints Markdown tables (overall and per tag) and writes everything, per question too, to --out (JSON).

`--fresh` indexes --dir into a throwaway DATA_DIR, so the numbers depend only on the files and the
settings (EMBED_MODEL, CHUNK_TOKENS, ... from the environment or --env-file), not on what else is stored.
Exit codes: 0 ran, 2 usage (bad golden set, settings, a space with no documents), 3 store, 4 backend
unreachable, 5 embedder.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from backend.errors import EXIT_USAGE, AppError, NotFound, exit_code_for
from backend.retrieval.retriever import RetrievalConfig
from backend.retrieval.stores.base import SEARCH_MODES
from backend.settings import load_settings
from cli.golden import Answer, normalize

DEFAULT_KS = (1, 3, 5, 10)
@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: tuple[Answer, ...]
    tags: tuple[str, ...] = ()
    lang: str | None = None
    doc_lang: str | None = None
    split: str = "tune"

    @property
    def pair(self) -> str | None:
        """'pl→ru': question language → answer document language, when the golden set says both."""
        return f"{self.lang}→{self.doc_lang}" if self.lang and self.doc_lang else None


def load_golden(path: Path) -> list[Question]:
    """Parse and check a golden set; ValueError names the line that is wrong."""
    questions, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            answers = tuple(Answer(a["path"], a.get("passage")) for a in row["answers"])
            q = Question(
                str(row["id"]), row["question"], answers, tuple(row.get("tags", ())), row.get("lang"), row.get("doc_lang"),
                str(row.get("split") or "tune"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a golden-set line ({exc})") from exc
        if not answers or not q.question.strip():
            raise ValueError(f"{path}:{n}: needs a question and at least one answer")
        if q.id in seen:
            raise ValueError(f"{path}:{n}: duplicate id {q.id!r}")
        seen.add(q.id)
        questions.append(q)
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


def score_ranking(answered: list[set[int]], n_answers: int, ks: tuple[int, ...]) -> dict:
    """Metrics of one ranking; `answered[r]` = indices of the answers the result at rank r+1 satisfies."""
    found: set[int] = set()
    gains = []
    first = None
    for rank, hit in enumerate(answered, 1):
        new = hit - found
        gains.append(1.0 if new else 0.0)
        found |= hit
        if hit and first is None:
            first = rank
    out = {"first_rank": first, "mrr": 1.0 / first if first else 0.0}
    for k in ks:
        dcg = sum(g / math.log2(r + 1) for r, g in enumerate(gains[:k], 1))
        ideal = sum(1 / math.log2(r + 1) for r in range(1, min(k, n_answers) + 1))
        out[f"hit@{k}"] = 1.0 if first is not None and first <= k else 0.0
        out[f"ndcg@{k}"] = dcg / ideal
    return out


Search = Callable[[str, str, int], list[dict]]  # (question, mode, depth) -> results with path and text
Subset = Callable[[dict], bool]  # which per-question rows a summary or a table covers


def _every_row(row: dict) -> bool:
    return True


def _field_is(subset: Subset, key: str, value: object) -> Subset:
    """The rows `subset` keeps whose field `key` is `value`."""
    return lambda row: subset(row) and row[key] == value


def _tagged(subset: Subset, tag: str) -> Subset:
    """The rows `subset` keeps that carry `tag`."""
    return lambda row: subset(row) and tag in row["tags"]


@dataclass
class ModeReport:
    mode: str
    per_question: list[dict] = field(default_factory=list)
    search_ms: list[float] = field(default_factory=list)

    def summary(self, ks: tuple[int, ...], subset: Callable[[dict], bool] = lambda r: True) -> dict:
        rows = [r for r in self.per_question if subset(r)]
        keys = [f"hit@{k}" for k in ks] + ["mrr", f"ndcg@{max(ks)}"]
        out = {key: round(sum(r[key] for r in rows) / len(rows), 4) if rows else None for key in keys}
        out["questions"] = len(rows)
        return out


def evaluate(search: Search, questions: list[Question], modes: list[str], ks: tuple[int, ...], depth: int) -> list[ModeReport]:
    reports = []
    for mode in modes:
        report = ModeReport(mode)
        for q in questions:
            start = time.perf_counter()
            results = search(q.question, mode, depth)
            report.search_ms.append((time.perf_counter() - start) * 1000)
            answered = [{i for i, a in enumerate(q.answers) if a.matches(r["path"], r.get("text") or "")} for r in results]
            metrics = score_ranking(answered, len(q.answers), ks)
            report.per_question.append({
                "id": q.id, "tags": list(q.tags), "pair": q.pair, "split": q.split, **metrics,
                "top": [r["path"] for r in results[:3]],
            })
        reports.append(report)
    return reports


def markdown_table(reports: list[ModeReport], ks: tuple[int, ...], subset=lambda r: True) -> str:
    keys = [f"hit@{k}" for k in ks] + ["mrr", f"ndcg@{max(ks)}"]
    lines = ["| mode | " + " | ".join(keys) + " | questions | ms/query |", "|---" * (len(keys) + 3) + "|"]
    for rep in reports:
        s = rep.summary(ks, subset)
        if not s["questions"]:
            continue
        ms = sorted(rep.search_ms)[len(rep.search_ms) // 2]
        lines.append(f"| {rep.mode} | " + " | ".join(f"{s[k]:.3f}" for k in keys) + f" | {s['questions']} | {ms:.1f} |")
    return "\n".join(lines)


def pair_table(reports: list[ModeReport], ks: tuple[int, ...], pairs: list[str], subset=lambda r: True) -> str:
    """MRR per question language → document language (how cross-language retrieval fares)."""
    lines = ["| mode | " + " | ".join(pairs) + " |", "|---" * (len(pairs) + 1) + "|"]
    for rep in reports:
        cells = [rep.summary(ks, _field_is(subset, "pair", p))["mrr"] for p in pairs]
        lines.append(f"| {rep.mode} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    return "\n".join(lines)


def print_tables(reports: list[ModeReport], ks: tuple[int, ...], tags: list[str], pairs: list[str],
                 subset: Callable[[dict], bool] = lambda r: True) -> None:
    """The overall table, one per tag and the language-pair table, over the questions `subset` keeps."""
    print(markdown_table(reports, ks, subset))
    for tag in tags:
        print(f"\n### tag: {tag}\n")
        print(markdown_table(reports, ks, _tagged(subset, tag)))
    if len(pairs) > 1:
        print("\n### MRR by question language → document language\n")
        print(pair_table(reports, ks, pairs, subset))


REPORTED_SETTINGS = (
    "chunk_tokens", "chunk_overlap", "fusion", "hybrid_dense_weight", "hybrid_sparse_weight", "rrf_k",
    "hybrid_candidates", "bm25_language", "rerank_model", "cross_language_model", "cross_language", "cross_weight",
    "cross_sparse_weight",
)


def _retrieval_line(settings) -> str:
    return f"cross_language_model={settings.cross_language_model or '-'} cross_language={settings.cross_language}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cli.eval", description="Retrieval quality against a golden set.")
    parser.add_argument("--golden", required=True, type=Path, help="golden set (JSON lines)")
    parser.add_argument("--space", default=None, help="space to evaluate (default: eval-<golden file name>)")
    parser.add_argument("--dir", type=Path, default=None, help="index this folder into the space first")
    parser.add_argument("--fresh", action="store_true", help="index --dir into a throwaway DATA_DIR (needs --dir)")
    parser.add_argument("--url", default=None, help="evaluate through a running backend's /search instead")
    parser.add_argument(
        "--modes", nargs="+", default=None,
        help=f"of {', '.join(SEARCH_MODES)}, rerank, fusion variants hybrid:dbsf, hybrid:rrf:K:DENSE_W:SPARSE_W, "
        "and +cross / -cross to force cross-language search on or off (dense+cross, hybrid-cross:dbsf; its weights: "
        "hybrid+cross:CROSS_W:SPARSE_W) "
        "(default: dense sparse hybrid, and rerank when RERANK_MODEL is set)",
    )
    parser.add_argument("--split", default=None, help="evaluate only the questions of this split (tune, test)")
    parser.add_argument("--k", nargs="+", type=int, default=list(DEFAULT_KS), help="cut-offs (default 1 3 5 10)")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default eval/results/<golden>.json)")
    parser.add_argument("--env-file", default=None, help="settings file (default: .env if present)")
    args = parser.parse_args(argv)
    if args.fresh and not args.dir:
        parser.error("--fresh needs --dir")
    if args.url and (args.fresh or args.dir):
        parser.error("--url evaluates an indexed space: index it with cli.index_cli first")
    return args


def _index(services, space: str, root: Path) -> dict:
    from backend.ingest.pipeline import iter_folder

    files = iter_folder(root)
    items = [(f.relative_to(root).as_posix(), f.read_bytes) for f in files]
    statuses: dict[str, int] = defaultdict(int)
    for outcome in services.pipeline.ingest_many(space, items):
        statuses[outcome.result.status] += 1
    services.store.optimize()
    return dict(statuses)


CROSS_SUFFIXES = {"+cross": "always", "-cross": "never"}


def split_mode(spec: str) -> tuple[str, str | None, str | None]:
    """'hybrid+cross:rrf:60:1:1' -> ('hybrid', 'always', 'rrf:60:1:1'): base mode, CROSS_LANGUAGE override, fusion."""
    head, _, fusion = spec.partition(":")
    for suffix, policy in CROSS_SUFFIXES.items():
        if head.endswith(suffix):
            return head[: -len(suffix)], policy, fusion or None
    return head, None, fusion or None


def mode_config(config, spec: str):
    """The retrieval config for a mode spec: `hybrid:dbsf`, `hybrid:rrf:K:DENSE_W:SPARSE_W` (a sweep), and
    `+cross` / `-cross` after the mode to force cross-language search on or off (`dense+cross`), with its
    weights as `hybrid+cross:CROSS_W:SPARSE_W`."""
    base, cross, fusion = split_mode(spec)
    if base not in SEARCH_MODES and base != "rerank":
        raise ValueError(f"bad mode {spec!r}")
    if cross:
        config = replace(config, cross_language=cross)
    if fusion is None:
        return config
    parts = fusion.split(":")
    try:
        if parts == ["dbsf"]:
            return replace(config, fusion="dbsf")
        if len(parts) == 4 and parts[0] == "rrf":
            return replace(config, fusion="rrf", rrf_k=int(parts[1]), dense_weight=float(parts[2]), sparse_weight=float(parts[3]))
        if len(parts) == 2 and cross == "always":
            return replace(config, cross_weight=float(parts[0]), cross_sparse_weight=float(parts[1]))
    except ValueError:
        pass
    raise ValueError(f"bad mode {spec!r}: use hybrid:dbsf, hybrid:rrf:K:DENSE_WEIGHT:SPARSE_WEIGHT or "
                     "hybrid+cross:CROSS_WEIGHT:SPARSE_WEIGHT")


fusion_variant = mode_config  # the name this function had before cross-language modes


def _local_search(services, space: str) -> Search:
    retriever = services.retriever
    default = retriever.config

    def search(q: str, mode: str, depth: int) -> list[dict]:
        base = split_mode(mode)[0]
        rerank = base == "rerank"
        retriever.config = mode_config(default, mode)
        try:
            return retriever.search(q, space, depth, "hybrid" if rerank else base, rerank).results
        finally:
            retriever.config = default

    return search


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["citations"]:  # the claim checker against hand labels: cli/eval_citations.py
        from cli.eval_citations import main as citations_main
        return citations_main(argv[1:])
    if argv[:1] == ["answers"]:  # /ask's answers against expected facts: cli/eval_answers.py
        from cli.eval_answers import main as answers_main
        return answers_main(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    ks = tuple(sorted(set(args.k)))
    depth = max(ks)
    space = args.space or "eval-" + re.sub(r"[^A-Za-z0-9_.-]", "-", args.golden.stem)
    tmp = Path(tempfile.mkdtemp(prefix="rag-eval-")) if args.fresh else None
    try:
        questions = load_golden(args.golden)
        if args.split:
            questions = [q for q in questions if q.split == args.split]
            if not questions:
                raise ValueError(f"{args.golden}: no questions in split {args.split!r}")
        settings = load_settings(args.env_file, **({"data_dir": tmp} if tmp else {}))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    modes = args.modes or list(SEARCH_MODES) + (["rerank"] if settings.rerank_model else [])
    unknown = set()
    for m in modes:
        try:
            if m not in SEARCH_MODES and m != "rerank" and args.url:
                raise ValueError(f"{m}: fusion and cross-language variants need the store (not --url)")
            mode_config(RetrievalConfig(), m)
        except ValueError as exc:
            unknown.add(str(exc))
    if unknown:
        print(f"error: unknown mode(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return EXIT_USAGE
    services = client = None
    try:
        if args.url:
            from cli.client import BackendClient, auth_headers

            client = BackendClient(args.url, auth_headers(settings))
            search = lambda q, mode, k: client.search(q, space, k, mode)  # noqa: E731
            indexed = None
            model = client.health().get("embedder", {}).get("model")
        else:
            from backend.runtime import build_runtime

            services = build_runtime(settings)
            indexed = _index(services, space, args.dir) if args.dir else None
            search = _local_search(services, space)
            model = services.embedder.name + (f" + cross {services.index.cross_model}" if services.index.cross else "")
        reports = evaluate(search, questions, modes, ks, depth)
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, NotFound) else exit_code_for(exc)
    finally:
        if services is not None:
            services.close()
        if client is not None:
            client.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    tags = sorted({t for q in questions for t in q.tags})
    pairs = sorted({q.pair for q in questions if q.pair}, key=lambda p: (p.split("→")[0] != p.split("→")[1], p))
    splits = sorted({q.split for q in questions}, key=lambda s: (s != "tune", s))
    print(f"## {args.golden.name}: {len(questions)} questions, space {space!r}, model {model}")
    print(f"chunk_tokens={settings.chunk_tokens} overlap={settings.chunk_overlap} fusion={settings.fusion} "
          f"weights=({settings.hybrid_dense_weight}, {settings.hybrid_sparse_weight}) rrf_k={settings.rrf_k} "
          f"bm25_language={settings.bm25_language} {_retrieval_line(settings)}\n")
    if len(splits) == 1:
        print_tables(reports, ks, tags, pairs)
    else:
        # Held-out questions are never averaged in with the ones the settings were tuned on.
        for split in splits:
            n = sum(q.split == split for q in questions)
            print(f"\n## split: {split} ({n} questions)\n")
            print_tables(reports, ks, tags, pairs, _field_is(_every_row, "split", split))
    out = args.out or Path("eval/results") / f"{args.golden.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def summaries(r: ModeReport, subset=lambda row: True) -> dict:
        return {
            "overall": r.summary(ks, subset),
            "by_tag": {t: r.summary(ks, _tagged(subset, t)) for t in tags},
            "by_language_pair": {p: r.summary(ks, _field_is(subset, "pair", p)) for p in pairs},
        }

    out.write_text(json.dumps({
        "golden": str(args.golden), "space": space, "embed_model": model, "indexed": indexed, "split": args.split,
        "settings": {k: str(getattr(settings, k)) for k in REPORTED_SETTINGS if hasattr(settings, k)},
        "modes": {
            r.mode: {
                **summaries(r),
                "by_split": {s: summaries(r, _field_is(_every_row, "split", s)) for s in splits},
                "median_search_ms": round(sorted(r.search_ms)[len(r.search_ms) // 2], 2),
                "questions": r.per_question,
            }
            for r in reports
        },
    }, indent=1, ensure_ascii=False))
    print(f"\nreport: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
