"""vLLM's own `vllm serve` parser, run in its venv (.venv-vllm) over argument lists: how the deployment
checks learn what vLLM would make of the flags that compose and Kubernetes pass it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VLLM_VENV_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
PARSER_SCRIPT = ROOT / "tests" / "deploy" / "vllm_serve_args.py"

# knob -> (vllm serve's parsed attribute, how the env value reads after parsing)
FLAGS = {
    "VLLM_MODEL": ("model", str),
    "VLLM_GPU_MEMORY_UTILIZATION": ("gpu_memory_utilization", float),
    "VLLM_MAX_MODEL_LEN": ("max_model_len", int),
    "VLLM_TENSOR_PARALLEL_SIZE": ("tensor_parallel_size", int),
    "VLLM_PIPELINE_PARALLEL_SIZE": ("pipeline_parallel_size", int),
    "VLLM_MAX_NUM_SEQS": ("max_num_seqs", int),
    "VLLM_QUANTIZATION": ("quantization", lambda v: v or None),
    "VLLM_DTYPE": ("dtype", str),
    "VLLM_SERVED_MODEL_NAME": ("served_model_name", lambda v: [v] if v else None),
}


def ensure_vllm_python() -> Path:
    """vLLM's venv, built by scripts/vllm_cpu/setup.sh (idempotent; ~5 min on a fresh machine)."""
    if not VLLM_VENV_PYTHON.exists():
        done = subprocess.run(["bash", str(ROOT / "scripts" / "vllm_cpu" / "setup.sh")], capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, f"vLLM venv setup failed:\n{done.stderr[-3000:]}"
    return VLLM_VENV_PYTHON


def parse_with_vllm(vllm_python, argument_lists: list[list[str]]) -> dict:
    """{"results": [per list, {"args": ...} or {"error": ...}], "env_names": [...]} (see vllm_serve_args.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    done = subprocess.run(
        [str(vllm_python), str(PARSER_SCRIPT)], input=json.dumps(argument_lists), capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)
