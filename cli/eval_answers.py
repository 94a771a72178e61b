"""`python -m cli.eval answers`: the quality of /ask's answers against golden questions with expected key facts.

    python -m cli.eval answers --golden eval/golden/answers.jsonl --dir eval/corpora/multilingual --fresh
    python -m cli.eval answers --golden eval/golden/answers-docs.jsonl --dir docs --fresh --split tune
    python -m cli.eval answers --golden my.jsonl --url http://127.0.0.1:8000 --space kb   # an indexed space

A golden line: {"id", "question", "lang", "doc_lang"?, "tags", "split": tune|test, "facts": [[alternative, ...], ...],
"answers": [{"path", "passage"?}]}. `facts` are the expected answer's key facts, each a list of accepted spellings
(case-folded substrings; a fact that starts or ends with a digit must not touch another digit, so "20" is not found
in "200"); `answers` are where the supporting passage is, as in the retrieval golden sets (cli/eval.py). A question
the documents cannot answer has neither (tag it `unanswerable`).

`--fresh` starts a backend on a throwaway DATA_DIR (with this environment's settings: LLM_BACKEND, VLLM_BASE_URL,
VLLM_MODEL, EMBED_MODEL, ...), indexes --dir through it and asks there; `--url` asks a running backend. Every question
is one non-streaming POST /ask (temperature 0). Per split, and per language and tag within it:

  correct              answerable questions whose answer holds every key fact
  correct & cited      ... and cites a source holding the supporting passage
  cites                answerable questions whose answer cites at least one source [n]
  citation precision   cited sources that hold the supporting passage (path, and passage when given), of all cited
  citation recall      answerable questions where a source holding the supporting passage was cited
  passage retrieved    ... where it was among the sources at all (what the model could have cited)
  supported            sentences the claim checker marked supported, of those that state something (supported,
                       unsupported or uncited; only when the answer carries the checker's per-sentence `citations`)
  abstained            unanswerable questions answered with "not found" (the appliance's own refusal, or the model
                       saying it could not find it); `false abstention` is the same on answerable questions
  s/answer             wall-clock seconds per answer (p50, mean)

The JSON report (every answer too) goes to --out, by default eval/results/answers-<model>-<hardware>.json.
Exit codes: 0 ran, 2 usage, 4 backend unreachable, 6 the LLM is not ready; as cli/eval.py otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from backend.errors import EXIT_LLM, EXIT_USAGE, AppError, exit_code_for
from backend.settings import load_settings
from cli.golden import Answer, normalize

DEFAULT_TOP_K = 4  # what `make demo` asks with: four chunks keep a 2-core prefill under a minute for 1.5B
DEFAULT_MAX_TOKENS = 200
ASK_TIMEOUT_S = 900.0  # one answer of the 1.5B model on 2 cores takes 1-2 minutes; a loaded machine more
# "Not found" as the system prompt asks the model to say it, in the golden sets' languages, plus the appliance's own
# refusal (NOT_FOUND_ANSWER in backend/rag.py, always English).
NOT_FOUND = re.compile(
    r"could not find|couldn't find|can't find|cannot find|unable to find|not (?:mentioned|found|provided|specified)"
    r"|no information|do(?:es)? not (?:contain|mention|provide|specify)|don't (?:contain|mention)"
    r"|nie (?:znalaz|udało się znaleźć|zawiera|ma informacji|podano|wspomina)|brak informacji"
    r"|не (?:удалось найти|смог найти|нашёл|нашел|нашла|содерж|упомина|указан)|нет (?:информации|сведений|данных)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class GoldenAnswer:
    id: str
    question: str
    lang: str | None
    tags: tuple[str, ...]
    split: str
    facts: tuple[tuple[str, ...], ...]
    answers: tuple[Answer, ...]

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


def load(path: Path) -> list[GoldenAnswer]:
    """Parse and check an answer golden set; ValueError names the line that is wrong."""
    rows, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            facts = tuple(tuple([f] if isinstance(f, str) else f) for f in raw["facts"])
            answers = tuple(Answer(a["path"], a.get("passage")) for a in raw["answers"])
            q = GoldenAnswer(str(raw["id"]), raw["question"], raw.get("lang"), tuple(raw.get("tags", ())),
                             str(raw.get("split") or "tune"), facts, answers)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not an answer-golden line ({exc})") from exc
        if bool(facts) != bool(answers) or not q.question.strip() or any(not f or not all(f) for f in facts):
            raise ValueError(f"{path}:{n}: needs a question, and facts and answers both (answerable) or neither")
        if q.id in seen:
            raise ValueError(f"{path}:{n}: duplicate id {q.id!r}")
        seen.add(q.id)
        rows.append(q)
    if not rows:
        raise ValueError(f"{path}: no questions")
    return rows


def has_fact(alternatives: tuple[str, ...], text: str) -> bool:
    """Whether any spelling of a fact is in `text` (normalised; digits at a fact's edge must not touch digits)."""
    norm = normalize(text)
    for alt in alternatives:
        pattern = re.escape(normalize(alt))
        if alt[:1].isdigit():
            pattern = r"(?<!\d)" + pattern
        if alt[-1:].isdigit():
            pattern += r"(?![\d])"
        if re.search(pattern, norm):
            return True
    return False


def cited_numbers(body: dict) -> list[int]:
    """The source numbers the model cited with [n] (valid ones): the answer's `cited` list, or (older backends)
    `citations.cited`, else the sources flagged `cited`. Sources the claim checker only attributed an uncited
    sentence to are not citations the model wrote."""
    if isinstance(body.get("cited"), list):
        return sorted(set(body["cited"]))
    citations = body.get("citations")
    if isinstance(citations, dict) and "cited" in citations:
        return sorted(set(citations["cited"]))
    return [s["n"] for s in body.get("sources", []) if s.get("cited")]


def judged_sentences(body: dict) -> list[dict] | None:
    """The claim checker's verdicts on sentences that state something (None: the answer carries no checker list).
    `no_claim` sentences ("Here is what I found.") are neither supported nor not."""
    checks = body.get("citations")
    if not isinstance(checks, list):
        return None
    return [c for c in checks if (c["status"] != "no_claim" if "status" in c else c.get("supported") is not None)]


def score(q: GoldenAnswer, body: dict | None, seconds: float, error: str | None = None) -> dict:
    """One question's row of the report."""
    text = (body or {}).get("answer") or ""
    sources = {s["n"]: s for s in (body or {}).get("sources", [])}
    cited = [n for n in cited_numbers(body or {}) if n in sources]

    def holds(n: int) -> bool:
        return any(a.matches(sources[n]["path"], sources[n].get("text") or "") for a in q.answers)

    judged = judged_sentences(body or {})
    # The appliance's refusal (nothing relevant retrieved, no engine asked) has no finish_reason.
    abstained = body is not None and ("finish_reason" not in body or bool(NOT_FOUND.search(text)))
    return {
        "id": q.id, "split": q.split, "lang": q.lang, "tags": list(q.tags), "answerable": q.answerable,
        "question": q.question, "answer": text, "error": error, "seconds": round(seconds, 2),
        "facts_found": [has_fact(f, text) for f in q.facts],
        "correct": q.answerable and body is not None and all(has_fact(f, text) for f in q.facts),
        "cited": cited, "cited_holding": [n for n in cited if holds(n)],
        "passage_retrieved": any(holds(n) for n in sources),
        "sentences_judged": len(judged) if judged is not None else None,
        "sentences_supported": sum(1 for c in judged if c["supported"]) if judged is not None else None,
        "abstained": abstained, "grounded": (body or {}).get("grounded"),
        "total_ms": ((body or {}).get("timings") or {}).get("total_ms"),
    }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def summary(rows: list[dict]) -> dict:
    """The metrics of a set of rows (see the module's docstring); None where nothing was there to measure."""
    ans = [r for r in rows if r["answerable"]]
    unans = [r for r in rows if not r["answerable"]]
    cited = sum(len(r["cited"]) for r in ans)
    judged = [r for r in rows if r["sentences_judged"]]
    seconds = [r["seconds"] for r in rows if r["error"] is None]
    return {
        "questions": len(rows), "answerable": len(ans), "unanswerable": len(unans),
        "correct": _share(sum(r["correct"] for r in ans), len(ans)),
        "fact_recall": _share(sum(sum(r["facts_found"]) for r in ans), sum(len(r["facts_found"]) for r in ans)),
        # Right and backed: every key fact, and a cited source that holds the passage (a bare "[1]" is neither).
        "correct_cited": _share(sum(r["correct"] and bool(r["cited_holding"]) for r in ans), len(ans)),
        "cites": _share(sum(bool(r["cited"]) for r in ans), len(ans)),
        "citation_precision": _share(sum(len(r["cited_holding"]) for r in ans), cited),
        "citation_recall": _share(sum(bool(r["cited_holding"]) for r in ans), len(ans)),
        "passage_retrieved": _share(sum(r["passage_retrieved"] for r in ans), len(ans)),
        "supported": _share(sum(r["sentences_supported"] for r in judged), sum(r["sentences_judged"] for r in judged)),
        "abstained": _share(sum(r["abstained"] for r in unans), len(unans)),
        "false_abstention": _share(sum(r["abstained"] for r in ans), len(ans)),
        "errors": sum(r["error"] is not None for r in rows),
        "seconds_p50": round(statistics.median(seconds), 2) if seconds else None,
        "seconds_mean": round(statistics.fmean(seconds), 2) if seconds else None,
    }


COLUMNS = ("correct", "correct_cited", "fact_recall", "cites", "citation_precision", "citation_recall", "passage_retrieved",
           "supported", "abstained", "false_abstention", "seconds_p50", "seconds_mean")


def groups(rows: list[dict]) -> dict[str, list[dict]]:
    """'all', then each language, then each tag: the rows of one split a table reports."""
    out = {"all": rows}
    for lang in sorted({r["lang"] for r in rows if r["lang"]}):
        out[f"lang:{lang}"] = [r for r in rows if r["lang"] == lang]
    for tag in sorted({t for r in rows for t in r["tags"]}):
        out[f"tag:{tag}"] = [r for r in rows if tag in r["tags"]]
    return out


def table(rows: list[dict]) -> str:
    """One Markdown table per split (tune first), a line per group."""
    lines = []
    for split in sorted({r["split"] for r in rows}, key=lambda s: (s != "tune", s)):
        lines += [f"\n### split: {split}\n", "| group | n | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
        for name, members in groups([r for r in rows if r["split"] == split]).items():
            s = summary(members)
            lines.append(f"| {name} | {s['questions']} | " + " | ".join("-" if s[c] is None else str(s[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def ask_all(client, questions: list[GoldenAnswer], space: str, top_k: int, max_tokens: int, progress=print) -> list[dict]:
    """Ask every question once through POST /ask and score it; an error answer is a row with `error`, not an abort
    (an LLM timeout on one question says something about the model on this machine)."""
    from cli.client import error_from_response

    rows = []
    for i, q in enumerate(questions, 1):
        body = {"q": q.question, "space_id": space, "top_k": top_k, "max_tokens": max_tokens, "temperature": 0,
                "stream": False}
        started = time.perf_counter()
        response = client.request("POST", "/ask", json=body, timeout=ASK_TIMEOUT_S)
        seconds = time.perf_counter() - started
        if response.is_success:
            row = score(q, response.json(), seconds)
        else:
            exc = error_from_response(response)
            if exit_code_for(exc) != EXIT_LLM:
                raise exc  # a usage, auth or store error would fail every question alike
            row = score(q, None, seconds, error=f"{exc.error_type}: {exc.message}")
        rows.append(row)
        mark = ("error" if row["error"] else "abstained" if row["abstained"] else "correct" if row["correct"]
                else "wrong" if q.answerable else "answered")
        progress(f"[{i}/{len(questions)}] {q.id} {mark} {seconds:.1f}s cited {row['cited']}: {row['answer'][:100]!r}")
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cli.eval answers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", type=Path, required=True, help="answer golden set (JSON lines)")
    parser.add_argument("--url", help="ask this running backend (the space must be indexed)")
    parser.add_argument("--fresh", action="store_true", help="start a backend on a throwaway DATA_DIR, index --dir")
    parser.add_argument("--dir", type=Path, help="with --fresh: the corpus folder")
    parser.add_argument("--space", help="space to ask (default: eval-<golden file name>)")
    parser.add_argument("--split", help="only the questions of this split (tune, test)")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--hardware", default=f"cpu{os.cpu_count()}", help="the report name's last part (default cpuN)")
    parser.add_argument("--out", type=Path, help="JSON report (default eval/results/answers-<model>-<hardware>.json)")
    parser.add_argument("--env-file", default=None, help="settings file (default: .env if present)")
    args = parser.parse_args(argv)
    if bool(args.url) == bool(args.fresh):
        parser.error("give either --url or --fresh")
    if args.fresh and not args.dir:
        parser.error("--fresh needs --dir")
    return args


def main(argv: list[str] | None = None) -> int:
    from cli import index_cli
    from cli.client import BackendClient, auth_headers
    from cli.local_backend import BackendStartError, start_backend, stop_backend

    args = parse_args(argv)
    space = args.space or "eval-" + re.sub(r"[^A-Za-z0-9_.-]", "-", args.golden.stem)
    try:
        questions = load(args.golden)
        if args.split:
            questions = [q for q in questions if q.split == args.split]
            if not questions:
                raise ValueError(f"{args.golden}: no questions in split {args.split!r}")
        settings = load_settings(args.env_file)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    tmp = Path(tempfile.mkdtemp(prefix="rag-eval-answers-")) if args.fresh else None
    backend = None
    try:
        url = args.url
        if tmp is not None:
            backend, url = start_backend({"DATA_DIR": str(tmp), "LOG_LEVEL": "warning"})
            code = index_cli.main(["--dir", str(args.dir), "--space", space, "--api", url, "--quiet"])
            if code:
                return code
        with BackendClient(url, auth_headers(settings)) as client:
            llm = client.health().get("components", {}).get("llm", {})
            if llm.get("status") != "ok":
                print(f"error: the backend's LLM is not ready: {llm}", file=sys.stderr)
                return EXIT_LLM
            started = time.perf_counter()
            rows = ask_all(client, questions, space, args.top_k, args.max_tokens,
                           progress=lambda line: print(line, file=sys.stderr, flush=True))
            wall = time.perf_counter() - started
    except BackendStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exit_code_for(exc)
    finally:
        if backend is not None:
            stop_backend(backend)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    model = str(llm.get("model") or "unknown")
    print(f"## {args.golden.name}: {len(questions)} questions, {llm.get('engine')} {model}, top_k {args.top_k}, "
          f"max_tokens {args.max_tokens}, {wall:.0f} s")
    print(table(rows))
    splits = sorted({r["split"] for r in rows})
    report = {
        "golden": str(args.golden), "engine": llm.get("engine"), "model": model, "hardware": args.hardware,
        "load_avg": [round(x, 2) for x in os.getloadavg()], "top_k": args.top_k, "max_tokens": args.max_tokens,
        "embed_model": settings.embed_model, "wall_s": round(wall, 1), "split": args.split,
        "overall": summary(rows),
        "by_split": {s: {name: summary(members) for name, members in groups([r for r in rows if r["split"] == s]).items()}
                     for s in splits},
        "questions": rows,
    }
    out = args.out or Path("eval/results") / f"answers-{re.sub(r'[^A-Za-z0-9_.-]', '-', model)}-{args.hardware}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"\nreport: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
