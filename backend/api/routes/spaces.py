"""/spaces: the spaces a key can see, with their documents and their language mix.

The languages are those of the chunks (detected per chunk by the BM25 analysis: ru, pl, en, latin for
other Latin-script languages; `unknown` for chunks indexed before languages were recorded). They are
what the retriever uses to decide when cross-language search is worth its cost (CROSS_LANGUAGE=auto), and
what an operator reads to decide whether to turn it on at all (docs/retrieval.md).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from backend.api.deps import GrantDep, RuntimeDep
from backend.api.schemas import ERROR_RESPONSES
from backend.domain import validate_space
from backend.errors import SpaceNotFound
from backend.retrieval.languages import cross_use
from backend.runtime import Runtime

router = APIRouter(tags=["spaces"])


class SpaceOut(BaseModel):
    space_id: str
    documents: int
    chunks: int
    languages: dict[str, int] = Field(description="Chunks per language (ru, pl, en, latin, unknown), most first.")
    cross_language: str = Field(
        description="When queries of this space use the cross-language model: 'every question' (several languages), "
        "'questions not in <lang>' (one language), or 'off' (CROSS_LANGUAGE=never, no CROSS_LANGUAGE_MODEL, or a "
        "store made without its vectors)."
    )


class SpaceList(BaseModel):
    spaces: list[SpaceOut]


def _space(runtime: Runtime, space_id: str, chunks: int) -> dict:
    mix = runtime.index.language_mix(space_id)
    return {
        "space_id": space_id, "documents": runtime.index.document_count(space_id), "chunks": chunks,
        "languages": mix, "cross_language": _cross_use(runtime, mix),
    }


def _cross_use(runtime: Runtime, mix: dict[str, int]) -> str:
    retriever = runtime.retriever
    return "off" if retriever.cross is None else cross_use(retriever.config.cross_language, mix)


@router.get("/spaces", response_model=SpaceList, responses=ERROR_RESPONSES)
def list_spaces(runtime: RuntimeDep, grant: GrantDep) -> dict:
    """Every space with documents that the API key covers: documents, chunks and languages."""
    counts = runtime.index.spaces()
    visible = [s for s in counts if grant.covers(s)]
    return {"spaces": [_space(runtime, s, counts[s]) for s in visible]}


@router.get("/spaces/{space_id}", response_model=SpaceOut, responses=ERROR_RESPONSES)
def get_space(runtime: RuntimeDep, grant: GrantDep, space_id: str) -> dict:
    """One space: documents, chunks and languages; 404 space_not_found when it has no documents."""
    grant.require(validate_space(space_id))
    chunks = runtime.index.count(space_id)
    if chunks == 0:
        raise SpaceNotFound(f"space {space_id!r} has no documents; index some with cli.index_cli or POST /documents")
    return _space(runtime, space_id, chunks)
