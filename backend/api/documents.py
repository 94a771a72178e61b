"""/documents: list, upload (multipart), get and delete documents."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse

from backend.api.deps import GrantDep, MetricsDep, ServicesDep
from backend.api.schemas import ERROR_RESPONSES, DeleteOut, DocumentList, DocumentOut, IngestOut
from backend.errors import AppError, FileTooLarge, InvalidRequest, UnsupportedFileType
from backend.retrieval.documents import validate_space

router = APIRouter(tags=["documents"])


@router.get("/documents", response_model=DocumentList, responses=ERROR_RESPONSES)
def list_documents(
    services: ServicesDep, grant: GrantDep, space_id: str = Query(..., description="The space to list.")
) -> dict:
    """Every document of a space: doc_id, path, chunks, content hash."""
    grant.require(validate_space(space_id))
    return {"space_id": space_id, "documents": [asdict(d) for d in services.index.list(space_id)]}


@router.get("/documents/{doc_id}", response_model=DocumentOut, responses=ERROR_RESPONSES)
def get_document(services: ServicesDep, grant: GrantDep, doc_id: str) -> dict:
    """One document's metadata."""
    info = services.index.get(doc_id)
    grant.require(info.space_id)
    return asdict(info)


@router.post(
    "/documents", response_model=IngestOut, status_code=201,
    responses={**ERROR_RESPONSES, 200: {"model": IngestOut, "description": "The same content was already indexed."}},
)
def upload_document(
    services: ServicesDep,
    grant: GrantDep,
    metrics: MetricsDep,
    file: UploadFile = File(..., description="The document (PDF, Markdown, text, HTML, DOCX)."),
    space_id: str = Form(..., description="The space to index it into."),
    path: str | None = Form(None, description="Logical path (its identity in the space); default: the file name."),
):
    """Index one file. 201 when added or replaced, 200 when the same content was already indexed."""
    grant.require(validate_space(space_id))
    name = path or file.filename
    if not name:
        raise InvalidRequest("the upload has no file name; send one or the form field 'path'")
    limit = services.settings.max_upload_bytes
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"{name}: larger than MAX_UPLOAD_MB ({services.settings.max_upload_mb:g} MB)")
    try:
        result = services.pipeline.ingest_bytes(space_id, name, data)
    except AppError as exc:
        metrics.observe_ingest("skipped" if isinstance(exc, UnsupportedFileType) else "failed", None)
        raise
    metrics.observe_ingest(result.status, result.timings)
    if result.status in ("added", "replaced"):
        services.optimizer.schedule()
    body = {**result.to_dict(), "space_id": space_id}
    body = {k: body[k] for k in IngestOut.model_fields}
    return JSONResponse(body, status_code=201 if result.status != "unchanged" else 200)


@router.delete("/documents/{doc_id}", response_model=DeleteOut, responses=ERROR_RESPONSES)
def delete_document(services: ServicesDep, grant: GrantDep, doc_id: str) -> dict:
    """Remove a document and all its chunks."""
    if grant.restricted:  # an open or '*' caller may also clear the leftovers of an interrupted commit
        grant.require(services.index.get(doc_id).space_id)
    deleted = services.index.delete(doc_id)
    services.optimizer.schedule()
    return {"doc_id": doc_id, "deleted_points": deleted}
