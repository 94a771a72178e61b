"""Any sentence-transformers model, on one of two backends (EMBED_BACKEND) that give the same vectors.

- `torch`: sentence-transformers' own `encode`.
- `onnx` (default): the model's whole sentence-transformers pipeline (transformer, pooling, dense,
  normalize) exported once with `torch.onnx` into a cache under DATA_DIR and run with onnxruntime. Same
  vectors as torch (cosine deviation ~1e-7, checked by the contract test), about 2x faster per query here and
  far steadier when other processes load the CPU. (sentence-transformers' built-in ONNX backend needs
  optimum-onnx, which pins transformers < 4.58 and so cannot be installed next to sentence-transformers 6.)

A model of the catalogue is loaded from its package (no hub download at run time); any other name is handed
to sentence-transformers as a hub id or a local folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from backend.errors import EmbedderError
from backend.retrieval.embedders.base import (
    MAX_CHARS_PER_TOKEN,
    PassLock,
    clean_text,
    embed_in_length_batches,
    unit_rows,
)
from backend.retrieval.embedders.catalogue import resolve_model_path

log = logging.getLogger(__name__)

ONNX_OPSET = 17


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

    def _run(self, texts: list[str]) -> np.ndarray:
        """One forward pass over prepared texts: (len(texts), dim) float32, L2-normalised (each backend's own)."""
        raise NotImplementedError

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
        return unit_rows(self._session.run(None, feeds)[0])
