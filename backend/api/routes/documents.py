"""/documents: list, upload (multipart), get and delete documents.

One file is indexed while the request waits (201/200 with its outcome). Several `file` parts, or `async=true`,
make an ingestion job instead (202 at once; backend.ingest.jobs): what can be checked up front (space, key,
names, sizes, free disk) is still answered with the usual 4xx, the files' own outcomes come with the job.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse

from backend.api.deps import GrantDep, MetricsDep, RuntimeDep
from backend.api.schemas import ERROR_RESPONSES, DeleteOut, DocumentList, DocumentOut, IngestOut, JobAccepted
from backend.auth import Grant
from backend.disk_space import ensure_free_space
from backend.domain import DocumentInfo, normalize_doc_path, validate_space
from backend.errors import AppError, DocumentNotFound, FileTooLarge, IngestBusy, InvalidRequest, UnsupportedFileType
from backend.ingest.jobs import MAX_JOB_FILES
from backend.runtime import Runtime

router = APIRouter(tags=["documents"])


@router.get("/documents", response_model=DocumentList, responses=ERROR_RESPONSES)
def list_documents(
    runtime: RuntimeDep, grant: GrantDep, space_id: str = Query(..., description="The space to list.")
) -> dict:
    """Every document of a space: doc_id, path, chunks, content hash."""
    grant.require(validate_space(space_id))
    return {"space_id": space_id, "documents": [asdict(d) for d in runtime.index.list(space_id)]}


def _document_for(runtime: Runtime, grant: Grant, doc_id: str) -> DocumentInfo:
    """The document, if the key covers its space; otherwise exactly the error of a missing one.

    Ids derive from (space, path): a 403 for another space's document would confirm its file names.
    """
    info = runtime.index.get(doc_id)
    if not grant.covers(info.space_id):
        raise DocumentNotFound(f"no document with id {doc_id!r}")  # the message of DocumentIndex.get
    return info


@router.get("/documents/{doc_id}", response_model=DocumentOut, responses=ERROR_RESPONSES)
def get_document(runtime: RuntimeDep, grant: GrantDep, doc_id: str) -> dict:
    """One document's metadata; 404 document_not_found also for a document of a space the key does not cover."""
    return asdict(_document_for(runtime, grant, doc_id))


@router.post(
    "/documents", response_model=IngestOut, status_code=201,
    responses={
        **ERROR_RESPONSES,
        200: {"model": IngestOut, "description": "The same content was already indexed."},
        202: {"model": JobAccepted, "description": "Several files, or async=true: an ingestion job was queued."},
    },
)
def upload_document(
    runtime: RuntimeDep,
    grant: GrantDep,
    metrics: MetricsDep,
    file: list[UploadFile] = File(..., description="The document(s) (PDF, Markdown, text, HTML, DOCX); several make a job."),
    space_id: str = Form(..., description="The space to index into."),
    path: list[str] | None = Form(
        None, description="Logical path (identity in the space) per file, in the order of the files; default: the file names."
    ),
    run_async: bool = Form(False, alias="async", description="Queue a job (202) even for one file."),
):
    """Index one file (201 added or replaced, 200 unchanged), or queue a job for several files or `async=true`
    (202 with the job's id and URLs; follow it with GET /jobs/{id} or its events)."""
    grant.require(validate_space(space_id))
    if path is not None and len(path) != len(file):
        raise InvalidRequest(f"{len(path)} 'path' fields for {len(file)} files: send one per file, in order, or none")
    if len(file) > 1 or run_async:
        return _queue_job(runtime, space_id, file, path)
    upload = file[0]
    name = (path[0] if path else None) or upload.filename
    if not name:
        raise InvalidRequest("the upload has no file name; send one or the form field 'path'")
    limit = runtime.settings.max_upload_bytes
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"{name}: larger than MAX_UPLOAD_MB ({runtime.settings.max_upload_mb:g} MB)")
    try:
        # A slot of the space's INGEST_MAX_PER_SPACE (429 ingest_busy when none is free); jobs take none.
        with runtime.pipeline.in_flight.hold(space_id, runtime.settings.ingest_max_per_space):
            result = runtime.pipeline.ingest_bytes(space_id, name, data)  # a write schedules optimisation
    except IngestBusy:
        raise
    except AppError as exc:
        metrics.observe_ingest("skipped" if isinstance(exc, UnsupportedFileType) else "failed", None)
        raise
    metrics.observe_ingest(result.status, result.timings)
    body = {**result.to_dict(), "space_id": space_id}
    body = {k: body[k] for k in IngestOut.model_fields}
    return JSONResponse(body, status_code=201 if result.status != "unchanged" else 200)


@router.delete("/documents/{doc_id}", response_model=DeleteOut, responses=ERROR_RESPONSES)
def delete_document(runtime: RuntimeDep, grant: GrantDep, doc_id: str) -> dict:
    """Remove a document and all its chunks; 404 document_not_found (as for a missing one) for a document of a
    space the key does not cover."""
    if grant.restricted:  # an open or '*' caller may also clear the leftovers of an interrupted commit
        _document_for(runtime, grant, doc_id)
    deleted = runtime.pipeline.delete(doc_id)  # a write: schedules optimisation
    return {"doc_id": doc_id, "deleted_points": deleted}


def _size(upload: UploadFile) -> int:
    if upload.size is not None:
        return upload.size
    upload.file.seek(0, 2)
    size = upload.file.tell()
    upload.file.seek(0)
    return size


def _queue_job(runtime: Runtime, space_id: str, files: list[UploadFile], paths: list[str] | None):
    """Check what can be checked up front, spool the files into a job folder, answer 202."""
    settings = runtime.settings
    if len(files) > MAX_JOB_FILES:
        raise InvalidRequest(f"{len(files)} files in one request; at most {MAX_JOB_FILES} (send several requests)")
    names, seen, total = [], set(), 0
    limit = settings.max_upload_bytes
    for n, upload in enumerate(files):
        raw = (paths[n] if paths else None) or upload.filename
        if not raw:
            raise InvalidRequest(f"file {n + 1} has no file name; send one or a 'path' field per file")
        name = normalize_doc_path(raw)
        if name in seen:
            raise InvalidRequest(f"{name}: sent twice in one request")
        seen.add(name)
        size = _size(upload)
        if size > limit:
            raise FileTooLarge(f"{name}: larger than MAX_UPLOAD_MB ({settings.max_upload_mb:g} MB)")
        total += size
        names.append(name)
    if total > limit:
        raise FileTooLarge(f"the files together are larger than MAX_UPLOAD_MB ({settings.max_upload_mb:g} MB); send fewer per request")
    # The spool shares DATA_DIR's disk with the embedded store, which must never find it full.
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_free_space(settings.data_dir, total, settings.min_free_disk_bytes, "queue the uploads")
    for upload in files:
        upload.file.seek(0)
    job = runtime.jobs.create(space_id, [(name, upload.file) for name, upload in zip(names, files)])
    url = f"/jobs/{job.job_id}"
    body = {
        "job_id": job.job_id, "status": "queued", "space_id": space_id, "total": len(files),
        "url": url, "events_url": f"{url}/events",
    }
    return JSONResponse(body, status_code=202, headers={"Location": url, "Cache-Control": "no-store"})
