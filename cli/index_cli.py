"""`python -m cli.index_cli --dir DIR --space SPACE`: index a folder into a space.

Writes directly into the store, except when the embedded store is held by a running backend (Qdrant
Edge is single-process): then the files are sent to that backend's POST /documents, found through
BACKEND_URL or the registration the backend leaves in DATA_DIR. Exit codes: 0 all files indexed or
unchanged (unsupported files are skipped, not failures), 1 some files failed, 2 usage, 3 store,
4 backend unreachable, 5 embedder.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from backend.errors import EXIT_FILES_FAILED, EXIT_OK, EXIT_USAGE, AppError, StoreLocked, exit_code_for
from backend.ingest.pipeline import IngestResult, iter_folder
from backend.retrieval.documents import validate_space
from backend.settings import Settings, load_settings
from cli.backend_client import BackendClient, auth_headers, discover_backend_url

STATUSES = ("added", "replaced", "unchanged", "skipped", "failed")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cli.index_cli", description="Index a folder of documents into a space.")
    parser.add_argument("--dir", required=True, type=Path, help="folder to index (recursively; hidden files skipped)")
    parser.add_argument("--space", required=True, help="space id to index into")
    parser.add_argument("--env-file", default=None, help="settings file (default: .env if present)")
    parser.add_argument("--api", default=None, help="send files to the backend at this URL instead of opening the store")
    parser.add_argument("--prune", action="store_true", help="delete documents of the space whose files are gone")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _run_direct(settings: Settings, args, files: list[Path], results: list[IngestResult], bar) -> None:
    from backend.services import build_services

    services = build_services(settings)
    try:
        items = [(f.relative_to(args.dir).as_posix(), f.read_bytes) for f in files]
        for outcome in services.pipeline.ingest_many(args.space, items):
            _record(outcome.result, results, bar)
        if args.prune:
            present = {p for p, _ in items}
            for doc in services.index.list(args.space):
                if doc.path not in present:
                    services.index.delete(doc.doc_id)
                    results.append(IngestResult(doc.path, "pruned", doc.doc_id))
        if any(r.status in ("added", "replaced", "pruned") for r in results):
            bar.set_description("building index")
            services.store.optimize()
    finally:
        services.close()


def _run_remote(url: str, args, files: list[Path], results: list[IngestResult], bar, settings: Settings) -> None:
    client = BackendClient(url, auth_headers(settings))
    try:
        client.check()
        for f in files:
            _record(client.upload(args.space, f.relative_to(args.dir).as_posix(), f), results, bar)
        if args.prune:
            tqdm.write("--prune is not available through a running backend; run it with the backend stopped")
    finally:
        client.close()


def _record(result: IngestResult, results: list[IngestResult], bar) -> None:
    results.append(result)
    if result.status in ("failed", "skipped"):
        tqdm.write(f"{result.status}: {result.message}", file=sys.stderr)
    bar.update(1)
    bar.set_postfix_str(result.path[-40:])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        settings = load_settings(args.env_file)
        validate_space(args.space)
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:  # pydantic's ValidationError: a bad setting
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.dir.is_dir():
        print(f"error: {args.dir} is not a folder", file=sys.stderr)
        return EXIT_USAGE

    files = iter_folder(args.dir)
    results: list[IngestResult] = []
    started = time.perf_counter()
    mode = "direct"
    bar = tqdm(total=len(files), unit="file", disable=args.quiet, desc=f"indexing into {args.space!r}")
    try:
        if args.api:
            mode = f"via {args.api}"
            _run_remote(args.api, args, files, results, bar, settings)
        else:
            try:
                _run_direct(settings, args, files, results, bar)
            except StoreLocked:
                url = discover_backend_url(settings)
                if url is None:
                    raise
                mode = f"via the running backend at {url}"
                tqdm.write(f"the embedded store is held by a running backend; sending files to {url}", file=sys.stderr)
                _run_remote(url, args, files, results, bar, settings)
    except AppError as exc:
        bar.close()
        print(f"error: {exc.message}", file=sys.stderr)
        return exit_code_for(exc)
    finally:
        bar.close()

    counts = Counter(r.status for r in results)
    chunks = sum(r.chunks for r in results if r.status in ("added", "replaced"))
    seconds = time.perf_counter() - started
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES)
    if counts.get("pruned"):
        summary += f", {counts['pruned']} pruned"
    print(f"{len(files)} files ({mode}): {summary}; {chunks} chunks written in {seconds:.1f} s")
    return EXIT_FILES_FAILED if counts.get("failed") else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
