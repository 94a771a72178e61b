"""The soak's concurrent-ingest check: several clients upload the same files to one space at once.

The space must then list each path exactly once, with the chunk count a single ingest of that file gives, and
the store must hold exactly those chunks. A 429 (the per-space ingest limit) is waited out, as a client should.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from backend.errors import AppError, BackendUnreachable, Forbidden, Unauthorized
from cli import loadgen
from cli.client import AsyncBackendClient
from cli.loadgen.failures import reply_type
from cli.loadgen.targets import Target, UsageError

UPLOAD_TIMEOUT_S = 600.0
RETRY_AFTER_CAP_S = 5.0  # the longest a 429's Retry-After is waited at once
INGEST_SUFFIXES = {".md", ".markdown", ".txt", ".pdf", ".html", ".htm", ".docx"}


def ingest_files(paths: list[Path]) -> list[tuple[str, bytes]]:
    """(path in the space, bytes) of the files named and of the indexable files under the folders named."""
    files: dict[str, bytes] = {}
    for given in paths:
        if given.is_dir():
            found = [(p.relative_to(given).as_posix(), p) for p in sorted(given.rglob("*")) if p.is_file() and p.suffix.lower() in INGEST_SUFFIXES]
        elif given.is_file():
            found = [(given.name, given)]
        else:
            raise UsageError(f"--ingest: no file or folder {given}")
        for name, path in found:
            if name in files:
                raise UsageError(f"--ingest: two files would have the path {name!r} in the space")
            files[name] = path.read_bytes()
    if not files:
        raise UsageError("--ingest: no indexable file found")
    return sorted(files.items())


class IngestFailed(RuntimeError):
    """The scratch spaces could not be listed or cleared: the check cannot run."""


async def _listing(backend: AsyncBackendClient, target: Target, space: str) -> list[dict]:
    try:
        return await backend.documents(space)
    except (Unauthorized, Forbidden) as exc:
        raise loadgen.auth_rejected(target, exc.status_code, exc.message) from None
    except AppError as exc:
        raise IngestFailed(f"GET /documents?space_id={space}: HTTP {exc.status_code} {exc.message[:200]}") from exc


async def _clear(backend: AsyncBackendClient, target: Target, space: str) -> None:
    for doc in await _listing(backend, target, space):
        try:
            await backend.delete_document(doc["doc_id"])
        except AppError as exc:
            if exc.status_code != 404:  # already gone: cleared all the same
                raise IngestFailed(f"DELETE /documents/{doc['doc_id']}: HTTP {exc.status_code}") from exc


async def _store_points(backend: AsyncBackendClient) -> int | None:
    try:
        points = (await backend.health()).json()["components"]["store"].get("points")
    except (AppError, ValueError, KeyError, TypeError):
        return None
    return points if isinstance(points, int) else None


async def _upload(
    backend: AsyncBackendClient, target: Target, space: str, path: str, data: bytes, throttled: Counter | None = None
) -> tuple[str, dict]:
    """("<status> <ingest status or error type>", body) of one `POST /documents`. A 429 (the space already has
    INGEST_MAX_PER_SPACE uploads in flight) is retried after its Retry-After, as a well-behaved client does, until
    UPLOAD_TIMEOUT_S; each such wait is counted in `throttled`."""
    deadline = time.monotonic() + UPLOAD_TIMEOUT_S
    while True:
        try:
            status, body = await backend.upload(space, path, data, timeout=UPLOAD_TIMEOUT_S)
            return f"{status} {body.get('status') or 'unknown'}", body
        except (Unauthorized, Forbidden) as exc:
            raise loadgen.auth_rejected(target, exc.status_code, exc.message) from None
        except BackendUnreachable as exc:
            return loadgen.error_type_of(exc), {}
        except AppError as exc:
            if exc.status_code != 429 or time.monotonic() >= deadline:
                return f"{exc.status_code} {reply_type(exc) or 'unknown'}", {}
            if throttled is not None:
                throttled["429"] += 1
            await asyncio.sleep(min(_retry_after(exc), RETRY_AFTER_CAP_S))
        except ValueError:  # a success whose body is not JSON
            return "bad_response", {}


def _retry_after(exc: AppError) -> float:
    try:
        return max(float((exc.headers or {}).get("Retry-After", "1")), 0.1)
    except ValueError:
        return 1.0


async def check_concurrent_ingest(backend: AsyncBackendClient, target: Target, files: list[tuple[str, bytes]], clients: int, space: str) -> dict:
    """Single ingest of `files` into `<space>-single` (the reference chunk counts), then `clients` clients upload
    them all at once into `space`; the listing and the store's point count are checked against the reference.

    Both spaces are the check's scratch: their documents are deleted before and after."""
    single = f"{space}-single"
    for s in (space, single):
        await _clear(backend, target, s)
    expected: dict[str, int] = {}
    errors: Counter = Counter()
    for path, data in files:
        status, body = await _upload(backend, target, single, path, data)
        if status.startswith("201"):
            expected[path] = int(body["chunks"])
        else:
            errors[f"single: {status}"] += 1
    points_before = await _store_points(backend)
    throttled: Counter = Counter()

    async def one_client() -> list[str]:
        return [(await _upload(backend, target, space, path, data, throttled))[0] for path, data in files]

    started = time.perf_counter()
    statuses = Counter(s for per_client in await asyncio.gather(*(one_client() for _ in range(clients))) for s in per_client)
    wall = time.perf_counter() - started
    points_after = await _store_points(backend)
    listed = await _listing(backend, target, space)
    per_path = Counter(d["path"] for d in listed)
    chunk_mismatches = {
        d["path"]: {"listed": d["chunks"], "single_ingest": expected[d["path"]]}
        for d in listed if d["path"] in expected and d["chunks"] != expected[d["path"]]
    }
    errors.update({s: n for s, n in statuses.items() if not s.startswith(("200 ", "201 "))})
    points_added = None if points_before is None or points_after is None else points_after - points_before
    expected_points = sum(expected.values())
    report = {
        "clients": clients,
        "files": len(files),
        "space": space,
        "uploads": sum(statuses.values()),
        "wall_s": round(wall, 3),
        "statuses": dict(sorted(statuses.items())),
        "throttled_retries": throttled["429"],  # 429 ingest_busy answers waited out (INGEST_MAX_PER_SPACE)
        "errors": dict(errors),
        "listed_documents": len(listed),
        "duplicates": sum(n - 1 for n in per_path.values() if n > 1),
        "duplicate_paths": sorted(p for p, n in per_path.items() if n > 1),
        "missing_paths": sorted(set(p for p, _ in files) - set(per_path)),
        "chunk_mismatches": chunk_mismatches,
        "single_ingest_chunks": sum(expected.values()),
        "store_points_added": points_added,
        "store_points_expected": expected_points,
    }
    report["ok"] = (
        not errors and report["duplicates"] == 0 and not report["missing_paths"] and not chunk_mismatches
        and (points_added is None or points_added == expected_points)
    )
    for s in (space, single):
        await _clear(backend, target, s)
    return report


# -- the run ----------------------------------------------------------------------------------------------
