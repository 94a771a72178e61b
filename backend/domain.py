"""The domain's bottom layer: what a chunk and a document are, and the rules for spaces, paths and ids.

Every layer uses these (the parsers and the chunker make `Chunk`s, the index stores them, the API
validates spaces and paths with the same rules the CLI uses); they import nothing of the app but its errors.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath

from backend.errors import InvalidRequest, InvalidSpace

STAGING_PREFIX = "~staging:"
SPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_PATH_CHARS = 512


def validate_space(space_id: str) -> str:
    """Space ids are 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit."""
    # fullmatch: `$` alone would also accept one trailing newline ("team\n" is another space than "team").
    if not isinstance(space_id, str) or not SPACE_PATTERN.fullmatch(space_id):
        raise InvalidSpace(
            f"invalid space_id {space_id!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return space_id


def normalize_doc_path(path: str) -> str:
    """A document's logical path (its identity within a space and what users see), never opened as a file."""
    if not path or len(path) > MAX_PATH_CHARS or any(ord(ch) < 32 for ch in path):
        raise InvalidRequest(f"invalid document path {path[:80]!r}: 1-{MAX_PATH_CHARS} printable characters")
    if any("\ud800" <= ch <= "\udfff" for ch in path):
        # A lone surrogate (a file name that is not UTF-8, read with surrogateescape) cannot be stored or hashed.
        raise InvalidRequest(f"invalid document path {path[:80]!r}: not valid UTF-8; rename the file")
    parts = [p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("/", ".", "")]
    if not parts or ".." in parts:
        raise InvalidRequest(f"invalid document path {path!r}: no '..' and not empty")
    return "/".join(parts)


def make_doc_id(space_id: str, path: str) -> str:
    return hashlib.sha256(f"{space_id}\x1f{path}".encode()).hexdigest()[:16]


def make_point_id(space_id: str, path: str, version: str, chunk_index: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{space_id}\x1f{path}\x1f{version}\x1f{chunk_index}"))


@dataclass(frozen=True)
class DocumentInfo:
    """One indexed document, as listed by GET /documents."""

    doc_id: str
    space_id: str
    path: str
    chunks: int
    hash: str
    size_bytes: int
    indexed_at: str


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, sized for the embedder."""

    chunk_index: int
    text: str
    page: int | None
    heading: str | None
    token_count: int

    @property
    def embed_text(self) -> str:
        """The text that is embedded: the heading (its context) followed by the chunk."""
        return f"{self.heading}\n\n{self.text}" if self.heading else self.text
