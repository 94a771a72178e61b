"""What the retrieval, ingest and isolation benchmarks measure on: this repository's own docs, cut by the
appliance's chunker, and queries about them."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUERIES = [
    "how do I index a folder",
    "which port does the backend use",
    "what happens when a PDF is corrupt",
    "configure the embedding model",
    "delete a document from a space",
    "how are chunks sized",
    "run the tests on a fresh machine",
    "qdrant server instead of the embedded store",
    "what does the health endpoint report",
    "re-indexing an unchanged folder",
    "upload a file through the API",
    "where is the data stored on disk",
]


def corpus_texts(settings, embedder) -> list[str]:
    """Real chunks of docs/ and README, cut by the appliance's own chunker."""
    from backend.ingest.chunking import Chunker
    from backend.ingest.parsers import parse_document

    chunker = Chunker(embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap, embedder.max_tokens)
    texts = []
    for path in sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]:
        if path.exists():
            texts += [c.embed_text for c in chunker.chunk(parse_document(path.read_bytes(), path.name))]
    return texts
