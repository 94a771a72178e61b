"""`python -m cli.ask "question" --space SPACE`: ask a running backend; the answer streams, then its sources.

Exit codes (backend.errors): 0 answered, 2 usage, 4 backend unreachable (EXIT_UNREACHABLE), 6 the backend
answered an error (LLM down, ...) or the answer broke off (EXIT_LLM).
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from backend.errors import EXIT_LLM, EXIT_OK, EXIT_UNREACHABLE, AppError, BackendUnreachable
from backend.settings import load_settings
from cli.client import BackendClient, auth_headers, discover_backend_url

DEFAULT_URL = "http://127.0.0.1:8000"


def print_sources(final: dict, out) -> None:
    sources = final.get("sources") or []
    if not sources:
        return
    print("\nSources:", file=out)
    for s in sources:
        where = s["path"] + (f" p.{s['page']}" if s.get("page") else "") + (f" § {s['heading']}" if s.get("heading") else "")
        mark = "*" if s.get("cited") else " "
        print(f" {mark}[{s['n']}] {where}  (score {s['score']:.2f})", file=out)
        print(textwrap.indent(textwrap.shorten(s["text"], 160, placeholder=" …"), "       "), file=out)
    t = final.get("timings", {})
    ttft = f"{t['ttft_ms']:.0f} ms" if t.get("ttft_ms") is not None else "-"
    print(
        f"\n{final.get('engine')} / {final.get('model')}: retrieval {t.get('retrieval_ms', 0):.0f} ms, first token {ttft}, "
        f"total {t.get('total_ms', 0):.0f} ms" + ("  (* = cited)" if any(s.get("cited") for s in sources) else ""),
        file=out,
    )
    dropped = (final.get("context") or {}).get("dropped") or []
    if dropped:
        print(f"{len(dropped)} retrieved chunk(s) did not fit the model's context and were left out.", file=out)
    citations = final.get("citations")
    old_shape = citations if isinstance(citations, dict) else {}  # backends before the claim check
    invalid = final.get("invalid_citations") or old_shape.get("invalid") or []
    if invalid:
        print(f"Removed citations to sources that do not exist: {invalid}", file=out)
    judged = [c for c in citations if c.get("status") != "no_claim"] if isinstance(citations, list) else []
    if judged:
        supported = sum(c.get("status") == "supported" for c in judged)
        print(f"Claim check: {supported} of {len(judged)} sentence(s) supported by the sources.", file=out)
        for c in judged:
            if c.get("status") != "supported":
                print(f"  {'dropped, ' if c.get('dropped') else ''}{c.get('status')}: {c.get('sentence')}", file=out)
    if final.get("grounded") is False and final.get("sources"):
        print("Not grounded: the claim check found no sentence of this answer supported by its sources.", file=out)


def ask(
    url: str, question: str, space: str, top_k: int, max_tokens: int | None, out=sys.stdout, headers: dict | None = None
) -> int:
    """Stream the answer to `out`, then its sources; returns the exit code."""
    with BackendClient(url, headers) as client:
        try:
            for event in client.ask(question, space, top_k, max_tokens):
                data = event.json()
                if event.event == "token":
                    print(data["text"], end="", flush=True, file=out)
                elif event.event == "done":
                    print(file=out)
                    print_sources(data, out)
                elif event.event == "error":
                    err = data["error"]
                    print(f"\nerror: the answer broke off: {err['type']}: {err['message']}", file=sys.stderr)
                    return EXIT_LLM
        except BackendUnreachable as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except AppError as exc:  # the backend answered an error status instead of an answer
            print(f"error {exc.status_code} {exc.error_type}: {exc.message}", file=sys.stderr)
            return EXIT_LLM
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.ask", description="Ask a question over a space of a running backend.")
    parser.add_argument("question")
    parser.add_argument("--space", required=True)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--api", default=None, help="backend URL (default: BACKEND_URL, the registered backend, or :8000)")
    parser.add_argument("--env-file", default=None)
    args = parser.parse_args(argv)
    settings = load_settings(args.env_file)
    url = args.api or discover_backend_url(settings) or DEFAULT_URL
    return ask(url.rstrip("/"), args.question, args.space, args.top_k, args.max_tokens, headers=auth_headers(settings))


if __name__ == "__main__":
    sys.exit(main())
