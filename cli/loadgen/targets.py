"""What a load run is pointed at and asks: targets (name, URL, key), questions, and the errors that stop a run
before or during its load (a usage error, a target that does not answer, a refused key)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from cli.client import AsyncBackendClient, bearer

AUTH_STATUSES = (401, 403)
BACKEND_KEY_OPTION = "--api-key or BACKEND_API_KEY"

# Questions answerable from this repository's README.md and docs/*.md (index them to benchmark on them).
QUESTIONS = [
    "Which port does the backend listen on by default?",
    "How do I index a folder of documents into a space?",
    "Which file types can the appliance index?",
    "What happens when a PDF has no text layer?",
    "How is the size of a chunk measured, and what is the default chunk size?",
    "What does GET /health report, and when does it answer 503?",
    "Which status code does /ask return when the LLM engine cannot be reached?",
    "How do I switch the answering engine from vLLM to Ollama?",
    "Why does the Ollama client always send num_ctx?",
    "Where is the embedded vector store kept on disk?",
    "Can the CLI index files while the backend is running on the same data directory?",
    "How do I delete a document and all its chunks?",
    "What does ASK_MIN_SCORE do?",
    "What happens to retrieved chunks that do not fit the model's context?",
    "What happens to citations of sources that do not exist?",
    "Which embedding model is used by default, and is it downloaded at run time?",
    "What does re-running the index command on an unchanged folder do?",
    "How do I upload a single file through the API?",
    "What does the error 504 llm_timeout mean and how do I fix it?",
    "How do I use a Qdrant server instead of the embedded store?",
]


class UsageError(ValueError):
    """The command line asks for something that cannot run (bad target, empty question file, ...)."""


class TargetUnreachable(RuntimeError):
    """A target did not answer its probe at start-up: nothing would be measured."""


class AuthRejected(RuntimeError):
    """A target answered 401/403: every further request would fail the same way, so the run stops (exit 2)."""


@dataclass
class Target:
    """A server under load: its name in the report, its base URL, and what it said it serves.

    `api_key` is sent as `Authorization: Bearer`; it is never printed nor written into a report."""

    name: str
    url: str
    engine: str | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False, compare=False)

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.api_key)

    def public(self) -> dict:
        """The target as reports show it: without its key."""
        return {k: v for k, v in asdict(self).items() if k != "api_key"}

    def client(self, http: httpx.AsyncClient) -> AsyncBackendClient:
        """The target as an appliance backend, over the run's shared connection pool."""
        return AsyncBackendClient(self.url, self.headers, http=http)


def auth_rejected(target: Target, status: int, message: str, key_option: str = BACKEND_KEY_OPTION) -> AuthRejected:
    """The error that stops a run on a 401/403, with the server's own message (it never echoes the key)."""
    sent = "with an API key" if target.api_key else "without an API key"
    reason = message or ("unauthorized" if status == 401 else "forbidden")
    return AuthRejected(f"{target.name}: {target.url} refused the request sent {sent}: HTTP {status}, {reason} ({key_option})")


# -- inputs -----------------------------------------------------------------------------------------------


def parse_target(spec: str) -> Target:
    """`NAME=URL` -> Target (an argparse `type=`: its error becomes a usage error)."""
    name, sep, url = spec.partition("=")
    if not sep or not name.strip() or not url.strip().startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"a target is NAME=URL with an http(s) URL, not {spec!r}")
    return Target(name.strip(), url.strip().rstrip("/"))


def load_questions(path: Path | None) -> list[str]:
    """The built-in questions, or those of `path`: one per line, or JSON lines with a "q" key (mixing is fine)."""
    if path is None:
        return list(QUESTIONS)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read the questions file: {exc}") from exc
    questions = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                question = json.loads(line)["q"]
            except (ValueError, KeyError, TypeError) as exc:
                raise UsageError(f"{path}:{n}: a JSON line needs a \"q\" string ({exc})") from exc
            if not isinstance(question, str) or not question.strip():
                raise UsageError(f"{path}:{n}: \"q\" must be a non-empty string")
            line = question.strip()
        questions.append(line)
    if not questions:
        raise UsageError(f"{path} holds no question")
    return questions


def assign_keys(targets: list[Target], keys: list[str] | None) -> None:
    """`--api-key`: none, one for every target, or one per target in the targets' order."""
    keys = [k for k in keys or [] if k is not None]
    if len(keys) > 1 and len(keys) != len(targets):
        raise UsageError(f"--api-key takes one key for every target or one per target ({len(targets)}), not {len(keys)}")
    for n, target in enumerate(targets):
        target.api_key = (keys[n] if len(keys) > 1 else keys[0]) if keys else None


def check_load_args(args) -> None:
    """Usage checks shared by the load commands (argparse cannot express them)."""
    if any(c < 1 for c in args.concurrency):
        raise UsageError("--concurrency levels must be >= 1")
    if args.requests is not None and args.requests < 1:
        raise UsageError("--requests must be >= 1")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be > 0")
    if args.warmup < 0:
        raise UsageError("--warmup must be >= 0")
